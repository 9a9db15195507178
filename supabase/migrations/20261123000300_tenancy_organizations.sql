-- =============================================================================================
-- Tenancy: organizations, members with roles, platform admins, the policy helpers
-- =============================================================================================

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

-- Every tenant row belongs to an organization; members read their organizations and nothing
-- else. Writes that need rules (roles, the last owner, invitations) go through RPCs: a public
-- security-invoker function that calls a security-definer function in private, which checks the
-- caller with the helpers of the callers chapter. The rules below hold on every write path
-- (RPC, direct update, Studio) because triggers enforce them.

insert into private.error_codes (code, class, meaning) values
  ('invalid_name', 'invalid_input', 'A name must be 1 to 200 characters.'),
  ('invalid_slug', 'invalid_input', 'A slug is 1 to 63 lower-case letters, digits or inner hyphens.'),
  ('invalid_role', 'invalid_input', 'A role is owner, admin, member or billing.'),
  ('membership_immutable', 'invalid_input', 'A membership cannot move to another organization or user.'),
  ('slug_taken', 'conflict', 'Another organization has this slug.'),
  ('organization_not_found', 'not_found', 'No organization has this id.'),
  ('member_not_found', 'not_found', 'That user is not a member of this organization.'),
  ('last_owner', 'rule', 'An organization must keep at least one owner.');

create type public.organization_role as enum ('owner', 'admin', 'member', 'billing');
comment on type public.organization_role is
  'owner: everything, including billing and owners; admin: members and settings; member: the organization''s data; billing: invoices and payment methods.';

-- The slug rule, once: the table's check and create_organization both ask it.
create function private.is_slug(p_slug text)
returns boolean
language sql
immutable
set search_path = ''
as $$
  select p_slug ~ '^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$'
$$;
comment on function private.is_slug(text) is 'Whether a text is a valid organization slug: 1 to 63 lower-case letters, digits or inner hyphens.';
grant execute on function private.is_slug(text) to authenticated, service_role;

-- ---------------------------------------------------------------------------------------------
-- Organizations
-- ---------------------------------------------------------------------------------------------
create table public.organizations (
  id uuid primary key default gen_random_uuid(),
  name text not null check (char_length(btrim(name)) between 1 and 200),
  slug text not null unique check (private.is_slug(slug)),
  created_by uuid references auth.users (id) on delete set null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table public.organizations is 'Tenants. Every tenant row in the database belongs to one organization.';
comment on column public.organizations.id is 'The organization''s id.';
comment on column public.organizations.name is 'Display name (1 to 200 characters).';
comment on column public.organizations.slug is 'Unique, lower-case, url-safe handle: letters, digits and inner hyphens, at most 63 characters.';
comment on column public.organizations.created_by is 'The user who created the organization.';
comment on column public.organizations.created_at is 'When the organization was created.';
comment on column public.organizations.updated_at is 'When the organization last changed.';

-- Members read, owners and admins rename, owners delete (RLS below); creating one is an RPC.
-- Backends (operators) may do all of it; the triggers below keep the rules on every path.
grant select, update (name, slug), delete on public.organizations to authenticated;
grant select, insert, update, delete on public.organizations to service_role;
alter table public.organizations enable row level security;

create index organizations_created_by_idx on public.organizations (created_by);

create trigger organizations_set_updated_at
before update on public.organizations
for each row execute function private.set_updated_at();

-- The same slug and name rules on every write path (RPC, direct update, Studio): trimmed, and
-- the slug lower-cased, before the check constraints look at them.
create function private.normalize_organization()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.name := btrim(new.name);
  new.slug := lower(btrim(new.slug));
  return new;
end
$$;
comment on function private.normalize_organization() is 'Trigger: trims the name and lower-cases the slug of an organization.';

create trigger organizations_normalize
before insert or update of name, slug on public.organizations
for each row execute function private.normalize_organization();


-- ---------------------------------------------------------------------------------------------
-- Members
-- ---------------------------------------------------------------------------------------------
create table public.organization_members (
  organization_id uuid not null references public.organizations (id) on delete cascade,
  user_id uuid not null references auth.users (id) on delete cascade,
  role public.organization_role not null default 'member',
  invited_by uuid references auth.users (id) on delete set null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (organization_id, user_id)
);
comment on table public.organization_members is 'Who belongs to which organization, with which role. Changed through the member RPCs; an organization always keeps an owner.';
comment on column public.organization_members.organization_id is 'The organization.';
comment on column public.organization_members.user_id is 'The member (auth.users.id).';
comment on column public.organization_members.role is 'owner, admin, member or billing.';
comment on column public.organization_members.invited_by is 'Who invited the member, if they joined by invitation.';
comment on column public.organization_members.created_at is 'When the member joined.';
comment on column public.organization_members.updated_at is 'When the membership last changed (role).';

-- Members read their teammates; every change is an RPC. Operators may change memberships
-- directly; the last-owner trigger below still applies.
grant select on public.organization_members to authenticated;
grant select, insert, update, delete on public.organization_members to service_role;
alter table public.organization_members enable row level security;

create index organization_members_user_id_idx on public.organization_members (user_id);
create index organization_members_invited_by_idx on public.organization_members (invited_by);

create trigger organization_members_set_updated_at
before update on public.organization_members
for each row execute function private.set_updated_at();

-- The last owner can neither leave nor be demoted nor removed. Enforced here, under the RPCs,
-- so no write path can break it. Locking the organization row serialises concurrent changes of
-- its owners: two owners demoting each other at once cannot both succeed.
create function private.keep_an_owner()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  -- A membership is (organization, user): moving it elsewhere is a remove and an add.
  if tg_op = 'UPDATE' and (new.organization_id <> old.organization_id or new.user_id <> old.user_id) then
    perform private.raise('membership_immutable', 'A membership cannot move to another organization or user: remove it and add a new one.');
  end if;
  if old.role <> 'owner' or (tg_op = 'UPDATE' and new.role = 'owner') then
    return null;
  end if;
  -- Deleting the organization itself cascades here; nothing to keep then.
  perform 1 from public.organizations where id = old.organization_id for update;
  if not found then
    return null;
  end if;
  if not exists (
    select 1 from public.organization_members
    where organization_id = old.organization_id and role = 'owner'
  ) then
    perform private.raise('last_owner', 'An organization must keep at least one owner: make someone else owner first.');
  end if;
  return null;
end
$$;
comment on function private.keep_an_owner() is 'Trigger: refuses any change that would leave an organization without an owner.';

create trigger organization_members_keep_an_owner
after update or delete on public.organization_members
for each row execute function private.keep_an_owner();


-- ---------------------------------------------------------------------------------------------
-- Tombstones of deleted organizations
-- ---------------------------------------------------------------------------------------------
-- Deleting an organization leaves a tombstone and an organization.deleted event. The records the
-- law makes us keep (the credit ledger, overage and, later, invoices) stay behind, detached from
-- personal data, until the tombstone's retention ends and a job removes them; each area that
-- keeps such records refuses the deletion while something is unsettled.
create table private.deleted_organizations (
  organization_id uuid primary key,
  deleted_at timestamptz not null,
  records_retained_until timestamptz not null,
  records_purged_at timestamptz
);
comment on table private.deleted_organizations is 'Tombstones of deleted organizations: how long their money records are kept.';
comment on column private.deleted_organizations.organization_id is 'The deleted organization''s id (no foreign key: it is gone).';
comment on column private.deleted_organizations.deleted_at is 'When it was deleted.';
comment on column private.deleted_organizations.records_retained_until is 'Its retained records are removed after this time (setting deleted_organization_records_retention).';
comment on column private.deleted_organizations.records_purged_at is 'When the retained records were removed.';
alter table private.deleted_organizations enable row level security;
grant select on private.deleted_organizations to service_role;
create index deleted_organizations_retained_until_idx on private.deleted_organizations (records_retained_until)
  where records_purged_at is null;

insert into private.settings (key, value, description) values
  ('deleted_organization_records_retention', '"10 years"',
   'How long the money records of a deleted organization (ledger, overage, invoices) are kept.');

create function private.record_organization_deletion()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  insert into private.deleted_organizations (organization_id, deleted_at, records_retained_until)
  values (old.id, now(), now() + (private.setting('deleted_organization_records_retention') #>> '{}')::interval);
  perform private.append_domain_event(old.id, 'organization.deleted',
    jsonb_build_object('organization_id', old.id, 'name', old.name, 'slug', old.slug, 'deleted_by', auth.uid()));
  return null;
end
$$;
comment on function private.record_organization_deletion() is 'Trigger: writes the tombstone and the organization.deleted event of a deleted organization.';

create trigger organizations_record_deletion
after delete on public.organizations
for each row execute function private.record_organization_deletion();

-- ---------------------------------------------------------------------------------------------
-- Platform admins: operators of the whole platform (not of one organization). A user is one
-- through `app_metadata.platform_admin = true` in their JWT (settable only with the service
-- role key) or a row here, which only service_role writes.
-- ---------------------------------------------------------------------------------------------
create table private.platform_admins (
  user_id uuid primary key references auth.users (id) on delete cascade,
  note text,
  created_at timestamptz not null default now()
);
comment on table private.platform_admins is 'Operators with platform-wide rights. Written only by service_role.';
comment on column private.platform_admins.user_id is 'The operator (auth.users.id).';
comment on column private.platform_admins.note is 'Why this user is an operator.';
comment on column private.platform_admins.created_at is 'When the user became an operator.';
alter table private.platform_admins enable row level security;
grant select, insert, update, delete on private.platform_admins to service_role;

-- ---------------------------------------------------------------------------------------------
-- Helpers for policies and RPCs. Security definer so they read membership without recursing
-- through organization_members' own policies; policies call them as
-- `organization_id in (select private.member_organization_ids())` so they run once per statement.
-- ---------------------------------------------------------------------------------------------
create function private.member_organization_ids()
returns setof uuid
language sql
stable
security definer
set search_path = ''
as $$
  select organization_id from public.organization_members where user_id = (select auth.uid())
$$;
comment on function private.member_organization_ids() is 'The organizations the current user belongs to.';
grant execute on function private.member_organization_ids() to authenticated, service_role;

create function private.organization_ids_with_role(p_roles public.organization_role[])
returns setof uuid
language sql
stable
security definer
set search_path = ''
as $$
  select organization_id from public.organization_members
  where user_id = (select auth.uid()) and role = any (p_roles)
$$;
comment on function private.organization_ids_with_role(public.organization_role[]) is
  'The organizations in which the current user has one of the given roles.';
grant execute on function private.organization_ids_with_role(public.organization_role[]) to authenticated, service_role;

create function private.is_platform_admin()
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  -- Compared as JSON, so a malformed value means "no" instead of an error in every policy.
  select coalesce(auth.jwt() -> 'app_metadata' -> 'platform_admin' = 'true'::jsonb, false)
      or exists (select 1 from private.platform_admins where user_id = (select auth.uid()))
$$;
comment on function private.is_platform_admin() is
  'Whether the caller is a platform operator: app_metadata.platform_admin in the JWT, or a row in private.platform_admins.';
grant execute on function private.is_platform_admin() to authenticated, service_role;

-- ---------------------------------------------------------------------------------------------
-- Row-level security: one policy per command, to authenticated; anon has no grants at all
-- ---------------------------------------------------------------------------------------------
create policy "Members can read their organizations"
on public.organizations for select to authenticated
using (id in (select private.member_organization_ids()));

create policy "Owners and admins can update their organization"
on public.organizations for update to authenticated
using (id in (select private.organization_ids_with_role('{owner,admin}')))
with check (id in (select private.organization_ids_with_role('{owner,admin}')));

create policy "Owners can delete their organization"
on public.organizations for delete to authenticated
using (id in (select private.organization_ids_with_role('{owner}')));

create policy "Members can read their organizations' members"
on public.organization_members for select to authenticated
using (organization_id in (select private.member_organization_ids()));
