-- =============================================================================================
-- Tenancy: profiles, organizations, members with roles, invitations, platform admins
-- =============================================================================================

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

-- Every tenant row belongs to an organization; members read their organizations and nothing
-- else. Writes that need rules (roles, the last owner, invitations) go through RPCs: a public
-- security-invoker function that calls a security-definer function in private, which checks the
-- caller itself.
--
-- Error codes: the message is the stable machine code, the SQLSTATE picks the HTTP status
-- PostgREST answers with:
--   28000 not_authenticated (no signed-in user)             -> 403
--   42501 not_authorized (the caller's role is not enough)  -> 403
--   PT404 *_not_found                                       -> 404 (PostgREST answers PTxyz with status xyz)
--   22023 invalid_* (bad input)                             -> 400
--   23505 slug_taken, already_member                        -> 409
--   P0001 last_owner, invitation_* (a business rule)        -> 400

create type public.organization_role as enum ('owner', 'admin', 'member', 'billing');
comment on type public.organization_role is
  'owner: everything, including billing and owners; admin: members and settings; member: the organization''s data; billing: invoices and payment methods.';

-- ---------------------------------------------------------------------------------------------
-- Profiles: one per auth.users row, kept in sync by trigger.
-- ---------------------------------------------------------------------------------------------
create table public.profiles (
  id uuid primary key references auth.users (id) on delete cascade,
  email text,
  full_name text check (full_name is null or char_length(full_name) <= 200),
  avatar_url text check (avatar_url is null or char_length(avatar_url) <= 2000),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table public.profiles is 'Public face of a user: one row per auth.users row, created and kept in sync by trigger.';
comment on column public.profiles.id is 'The user''s id (auth.users.id).';
comment on column public.profiles.email is 'The user''s email, copied from auth.users on every change.';
comment on column public.profiles.full_name is 'Display name; from the sign-up metadata (full_name or name), editable by the user.';
comment on column public.profiles.avatar_url is 'Avatar image URL; from the sign-up metadata (avatar_url or picture), editable by the user.';
comment on column public.profiles.created_at is 'When the profile was created.';
comment on column public.profiles.updated_at is 'When the profile last changed.';

-- Grants (RLS below decides the rows): users read profiles and edit their own name and avatar;
-- the trigger on auth.users creates them. Backends read and correct them.
grant select, update (full_name, avatar_url) on public.profiles to authenticated;
grant select, update on public.profiles to service_role;

create trigger profiles_set_updated_at
before update on public.profiles
for each row execute function private.set_updated_at();

create function private.sync_profile_from_auth_user()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if tg_op = 'INSERT' then
    insert into public.profiles (id, email, full_name, avatar_url)
    values (
      new.id,
      new.email,
      coalesce(new.raw_user_meta_data ->> 'full_name', new.raw_user_meta_data ->> 'name'),
      coalesce(new.raw_user_meta_data ->> 'avatar_url', new.raw_user_meta_data ->> 'picture')
    )
    on conflict (id) do update set email = excluded.email;
  else
    update public.profiles p
    set email = new.email,
        -- A name or avatar is copied only when that metadata key itself changed, so what the
        -- user edited in their profile survives unrelated auth updates (sign-ins, a locale).
        full_name = case
          when coalesce(new.raw_user_meta_data ->> 'full_name', new.raw_user_meta_data ->> 'name')
               is distinct from coalesce(old.raw_user_meta_data ->> 'full_name', old.raw_user_meta_data ->> 'name')
          then coalesce(new.raw_user_meta_data ->> 'full_name', new.raw_user_meta_data ->> 'name', p.full_name)
          else p.full_name end,
        avatar_url = case
          when coalesce(new.raw_user_meta_data ->> 'avatar_url', new.raw_user_meta_data ->> 'picture')
               is distinct from coalesce(old.raw_user_meta_data ->> 'avatar_url', old.raw_user_meta_data ->> 'picture')
          then coalesce(new.raw_user_meta_data ->> 'avatar_url', new.raw_user_meta_data ->> 'picture', p.avatar_url)
          else p.avatar_url end
    where p.id = new.id
      and (new.email is distinct from old.email or new.raw_user_meta_data is distinct from old.raw_user_meta_data);
  end if;
  return new;
end
$$;
comment on function private.sync_profile_from_auth_user() is 'Trigger on auth.users: creates the profile and keeps email, name and avatar in sync.';

create trigger on_auth_user_created
after insert on auth.users
for each row execute function private.sync_profile_from_auth_user();

create trigger on_auth_user_updated
after update of email, raw_user_meta_data on auth.users
for each row execute function private.sync_profile_from_auth_user();

-- ---------------------------------------------------------------------------------------------
-- Organizations and members
-- ---------------------------------------------------------------------------------------------
create table public.organizations (
  id uuid primary key default gen_random_uuid(),
  name text not null check (char_length(btrim(name)) between 1 and 200),
  slug text not null unique
    check (slug ~ '^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$'),
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
   'How long the money records of a deleted organization (ledger, overage, invoices) are kept.'),
  ('invitations_per_email_per_hour', '3', 'Invitations (and re-sends) an organization may send one address per hour.'),
  ('invitations_per_inviter_per_hour', '50', 'Invitations one user may send per hour, across organizations.');

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
    raise exception using errcode = '22023', message = 'membership_immutable',
      detail = 'A membership cannot move to another organization or user: remove it and add a new one.';
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
    raise exception using errcode = 'P0001', message = 'last_owner',
      detail = 'An organization must keep at least one owner: make someone else owner first.';
  end if;
  return null;
end
$$;
comment on function private.keep_an_owner() is 'Trigger: refuses any change that would leave an organization without an owner.';

create trigger organization_members_keep_an_owner
after update or delete on public.organization_members
for each row execute function private.keep_an_owner();

-- Deleting a user who is the only owner of an organization: the rule above refuses it too, one
-- organization at a time, from inside the cascade. This says up front which organizations block
-- it and what to do, to the operator deleting the user (Studio, the Auth admin API).
create function private.guard_user_deletion()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_blocking text;
begin
  select string_agg(format('%s (%s)', o.slug, o.id), ', ' order by o.slug) into v_blocking
  from public.organization_members m
  join public.organizations o on o.id = m.organization_id
  where m.user_id = old.id and m.role = 'owner'
    and not exists (
      select 1 from public.organization_members x
      where x.organization_id = m.organization_id and x.role = 'owner' and x.user_id <> old.id);
  if v_blocking is not null then
    raise exception using errcode = 'P0001', message = 'last_owner',
      detail = format('The user is the only owner of %s: make another member owner of each (update_member_role) or delete them first.', v_blocking);
  end if;
  return old;
end
$$;
comment on function private.guard_user_deletion() is 'Trigger on auth.users: refuses to delete the only owner of an organization, naming the organizations.';

create trigger on_auth_user_deleting
before delete on auth.users
for each row execute function private.guard_user_deletion();

-- ---------------------------------------------------------------------------------------------
-- Invitations
-- ---------------------------------------------------------------------------------------------
create table public.organization_invitations (
  id uuid primary key default gen_random_uuid(),
  organization_id uuid not null references public.organizations (id) on delete cascade,
  email text not null check (email = lower(email) and email ~ '^[^@\s]+@[^@\s]+\.[^@\s]+$' and char_length(email) <= 320),
  role public.organization_role not null default 'member',
  token_hash text not null unique check (token_hash ~ '^[0-9a-f]{64}$'),
  invited_by uuid references auth.users (id) on delete set null,
  expires_at timestamptz not null,
  accepted_at timestamptz,
  accepted_by uuid references auth.users (id) on delete set null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table public.organization_invitations is 'Invitations to join an organization. The token is sent to the invitee and stored here only as a SHA-256 hash.';
comment on column public.organization_invitations.id is 'The invitation''s id.';
comment on column public.organization_invitations.organization_id is 'The organization the invitee joins.';
comment on column public.organization_invitations.email is 'The invitee''s email, lower-case; only a user with this email can accept.';
comment on column public.organization_invitations.role is 'The role the invitee gets on accepting.';
comment on column public.organization_invitations.token_hash is 'Hex SHA-256 of the invitation token; the token itself is never stored.';
comment on column public.organization_invitations.invited_by is 'Who sent the invitation.';
comment on column public.organization_invitations.expires_at is 'After this time the invitation can no longer be accepted.';
comment on column public.organization_invitations.accepted_at is 'When the invitation was accepted; null while pending.';
comment on column public.organization_invitations.accepted_by is 'The user who accepted it.';
comment on column public.organization_invitations.created_at is 'When the invitation was first sent.';
comment on column public.organization_invitations.updated_at is 'When it was last re-sent or accepted.';

-- Owners and admins read and revoke (delete) invitations; sending and accepting are RPCs, since
-- only they make and check the token.
grant select, delete on public.organization_invitations to authenticated;
grant select, delete on public.organization_invitations to service_role;

-- One pending invitation per (organization, email); inviting again re-sends it.
create unique index organization_invitations_one_pending_idx
  on public.organization_invitations (organization_id, email) where accepted_at is null;
create index organization_invitations_organization_id_idx on public.organization_invitations (organization_id, created_at desc);
create index organization_invitations_invited_by_idx on public.organization_invitations (invited_by);
create index organization_invitations_accepted_by_idx on public.organization_invitations (accepted_by);

create trigger organization_invitations_set_updated_at
before update on public.organization_invitations
for each row execute function private.set_updated_at();

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

create function private.has_organization_role(p_organization_id uuid, p_roles public.organization_role[])
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select exists (
    select 1 from public.organization_members
    where organization_id = p_organization_id and user_id = (select auth.uid()) and role = any (p_roles)
  )
$$;
comment on function private.has_organization_role(uuid, public.organization_role[]) is
  'Whether the current user has one of the given roles in the organization.';
grant execute on function private.has_organization_role(uuid, public.organization_role[]) to authenticated, service_role;

create function private.co_member_user_ids()
returns setof uuid
language sql
stable
security definer
set search_path = ''
as $$
  select distinct m.user_id
  from public.organization_members m
  where m.organization_id in (
    select organization_id from public.organization_members where user_id = (select auth.uid())
  )
$$;
comment on function private.co_member_user_ids() is 'Users who share at least one organization with the current user (including the user).';
grant execute on function private.co_member_user_ids() to authenticated, service_role;

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
-- Row-level security. One policy per command, to authenticated; anon has no grants at all.
-- ---------------------------------------------------------------------------------------------
alter table public.profiles enable row level security;
alter table public.organizations enable row level security;
alter table public.organization_members enable row level security;
alter table public.organization_invitations enable row level security;

-- The grants are next to each table above: nothing to anon, to authenticated only what these
-- policies then filter.

create policy "Users can read their own profile and their teammates'"
on public.profiles for select to authenticated
using (id = (select auth.uid()) or id in (select private.co_member_user_ids()));

create policy "Users can update their own profile"
on public.profiles for update to authenticated
using (id = (select auth.uid()))
with check (id = (select auth.uid()));

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

create policy "Owners and admins can read their organization's invitations"
on public.organization_invitations for select to authenticated
using (organization_id in (select private.organization_ids_with_role('{owner,admin}')));

create policy "Owners and admins can revoke pending invitations"
on public.organization_invitations for delete to authenticated
using (accepted_at is null and organization_id in (select private.organization_ids_with_role('{owner,admin}')));

-- =============================================================================================
-- RPCs
-- =============================================================================================

-- Internal: the signed-in user's id, or not_authenticated.
create function private.require_user()
returns uuid
language plpgsql
stable
set search_path = ''
as $$
declare
  v_user_id uuid := auth.uid();
begin
  if v_user_id is null then
    raise exception using errcode = '28000', message = 'not_authenticated', detail = 'Sign in to call this function.';
  end if;
  return v_user_id;
end
$$;
comment on function private.require_user() is 'The current user''s id; raises not_authenticated when there is none.';

-- Internal: the caller's role in an organization, or not_authorized when not a member.
create function private.require_membership(p_organization_id uuid, p_user_id uuid)
returns public.organization_role
language plpgsql
stable
set search_path = ''
as $$
declare
  v_role public.organization_role;
begin
  select role into v_role from public.organization_members
  where organization_id = p_organization_id and user_id = p_user_id;
  if v_role is null then
    -- The same answer whether the organization exists or not: no probing other tenants' ids.
    raise exception using errcode = '42501', message = 'not_authorized', detail = 'You are not a member of this organization.';
  end if;
  return v_role;
end
$$;
comment on function private.require_membership(uuid, uuid) is 'The user''s role in the organization; raises not_authorized when not a member.';

create function private.parse_organization_role(p_role text)
returns public.organization_role
language plpgsql
immutable
set search_path = ''
as $$
begin
  if p_role is null or p_role not in ('owner', 'admin', 'member', 'billing') then
    raise exception using errcode = '22023', message = 'invalid_role',
      detail = format('Role must be one of owner, admin, member, billing (got %L).', p_role);
  end if;
  return p_role::public.organization_role;
end
$$;
comment on function private.parse_organization_role(text) is 'Validates a role name; raises invalid_role.';

-- ---------------------------------------------------------------------------------------------
-- create_organization
-- ---------------------------------------------------------------------------------------------
create function private.create_organization(p_name text, p_slug text)
returns uuid
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_user_id uuid := private.require_user();
  v_name text := btrim(p_name);
  v_slug text := lower(btrim(p_slug));
  v_organization_id uuid;
begin
  if v_name is null or char_length(v_name) not between 1 and 200 then
    raise exception using errcode = '22023', message = 'invalid_name', detail = 'Name must be 1 to 200 characters.';
  end if;
  if v_slug is null or v_slug !~ '^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$' then
    raise exception using errcode = '22023', message = 'invalid_slug',
      detail = 'Slug must be 1 to 63 lower-case letters, digits or inner hyphens.';
  end if;

  insert into public.organizations (name, slug, created_by)
  values (v_name, v_slug, v_user_id)
  on conflict (slug) do nothing
  returning id into v_organization_id;
  if v_organization_id is null then
    raise exception using errcode = '23505', message = 'slug_taken', detail = format('The slug %L is taken.', v_slug);
  end if;

  insert into public.organization_members (organization_id, user_id, role)
  values (v_organization_id, v_user_id, 'owner');

  perform private.append_domain_event(v_organization_id, 'organization.created',
    jsonb_build_object('organization_id', v_organization_id, 'name', v_name, 'slug', v_slug, 'created_by', v_user_id));
  return v_organization_id;
end
$$;
comment on function private.create_organization(text, text) is 'Creates an organization with the current user as its owner.';
grant execute on function private.create_organization(text, text) to authenticated;

create function public.create_organization(p_name text, p_slug text)
returns uuid
language sql
security invoker
set search_path = ''
as $$
  select private.create_organization(p_name, p_slug)
$$;
comment on function public.create_organization(text, text) is
  'Creates an organization and makes the caller its owner. Errors: not_authenticated, invalid_name, invalid_slug, slug_taken.';
grant execute on function public.create_organization(text, text) to authenticated;

-- ---------------------------------------------------------------------------------------------
-- invite_member
-- ---------------------------------------------------------------------------------------------
create function private.invite_member(
  p_organization_id uuid,
  p_email text,
  p_role text default 'member',
  p_expires_in interval default interval '7 days'
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_user_id uuid := private.require_user();
  v_caller_role public.organization_role := private.require_membership(p_organization_id, v_user_id);
  v_role public.organization_role := private.parse_organization_role(p_role);
  v_email text := lower(btrim(p_email));
  v_token text := encode(extensions.gen_random_bytes(32), 'hex');
  v_expires_at timestamptz;
  v_invitation_id uuid;
begin
  if v_caller_role not in ('owner', 'admin') then
    raise exception using errcode = '42501', message = 'not_authorized', detail = 'Only owners and admins can invite members.';
  end if;
  if v_role = 'owner' and v_caller_role <> 'owner' then
    raise exception using errcode = '42501', message = 'not_authorized', detail = 'Only owners can invite owners.';
  end if;
  if v_email is null or v_email !~ '^[^@\s]+@[^@\s]+\.[^@\s]+$' or char_length(v_email) > 320 then
    raise exception using errcode = '22023', message = 'invalid_email', detail = format('%L is not an email address.', p_email);
  end if;
  if p_expires_in is null or p_expires_in < interval '1 minute' or p_expires_in > interval '30 days' then
    raise exception using errcode = '22023', message = 'invalid_expiry', detail = 'An invitation expires after 1 minute to 30 days.';
  end if;
  if exists (
    select 1 from public.organization_members m join public.profiles p on p.id = m.user_id
    where m.organization_id = p_organization_id and lower(p.email) = v_email
  ) then
    raise exception using errcode = '23505', message = 'already_member', detail = format('%s is already a member.', v_email);
  end if;

  -- Every invitation becomes a mail: throttled per address and per inviter, so nobody can
  -- mail-bomb an address with an organization name of their choosing.
  perform private.hit_rate_limit('invitation_email', p_organization_id::text || ':' || v_email,
    (private.setting('invitations_per_email_per_hour') #>> '{}')::integer, interval '1 hour');
  perform private.hit_rate_limit('invitation_inviter', v_user_id::text,
    (private.setting('invitations_per_inviter_per_hour') #>> '{}')::integer, interval '1 hour');

  v_expires_at := now() + p_expires_in;
  -- Inviting the same email again re-sends the pending invitation with a fresh token.
  insert into public.organization_invitations (organization_id, email, role, token_hash, invited_by, expires_at)
  values (p_organization_id, v_email, v_role, encode(sha256(convert_to(v_token, 'UTF8')), 'hex'), v_user_id, v_expires_at)
  on conflict (organization_id, email) where accepted_at is null do update
    set role = excluded.role, token_hash = excluded.token_hash, invited_by = excluded.invited_by, expires_at = excluded.expires_at
  returning id into v_invitation_id;

  -- The token travels in the event for the email that delivers it; the outbox is private.
  perform private.append_domain_event(p_organization_id, 'member.invited',
    jsonb_build_object('invitation_id', v_invitation_id, 'email', v_email, 'role', v_role,
                       'token', v_token, 'expires_at', v_expires_at, 'invited_by', v_user_id));

  return jsonb_build_object('invitation_id', v_invitation_id, 'email', v_email, 'role', v_role,
                            'token', v_token, 'expires_at', v_expires_at);
end
$$;
comment on function private.invite_member(uuid, text, text, interval) is
  'Creates (or re-sends) an invitation; returns its id and the one-time token.';
grant execute on function private.invite_member(uuid, text, text, interval) to authenticated;

create function public.invite_member(p_organization_id uuid, p_email text, p_role text default 'member')
returns jsonb
language sql
security invoker
set search_path = ''
as $$
  select private.invite_member(p_organization_id, p_email, p_role)
$$;
comment on function public.invite_member(uuid, text, text) is
  'Invites an email to the organization (owners and admins; only owners invite owners). Returns {invitation_id, email, role, token, expires_at}; the token is shown once. Sends are limited per address and per inviter each hour. Errors: not_authenticated, not_authorized, invalid_role, invalid_email, already_member, rate_limited.';
grant execute on function public.invite_member(uuid, text, text) to authenticated;

-- ---------------------------------------------------------------------------------------------
-- accept_invitation
-- ---------------------------------------------------------------------------------------------
-- No p_now here: authenticated may execute this function, and a caller-chosen clock would
-- let an expired invitation through. Tests move expires_at instead.
create function private.accept_invitation(p_token text)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_user_id uuid := private.require_user();
  v_email text;
  v_invitation public.organization_invitations;
  v_role public.organization_role;
begin
  if p_token is null or p_token !~ '^[0-9a-f]{64}$' then
    raise exception using errcode = 'PT404', message = 'invitation_not_found', detail = 'No invitation matches this token.';
  end if;
  select * into v_invitation from public.organization_invitations
  where token_hash = encode(sha256(convert_to(p_token, 'UTF8')), 'hex')
  for update;
  if not found then
    raise exception using errcode = 'PT404', message = 'invitation_not_found', detail = 'No invitation matches this token.';
  end if;
  if v_invitation.accepted_at is not null then
    raise exception using errcode = 'P0001', message = 'invitation_already_accepted', detail = 'This invitation has been used.';
  end if;
  if v_invitation.expires_at <= now() then
    raise exception using errcode = 'P0001', message = 'invitation_expired', detail = 'This invitation has expired: ask for a new one.';
  end if;
  select lower(email) into v_email from auth.users where id = v_user_id;
  if v_email is distinct from v_invitation.email then
    raise exception using errcode = '42501', message = 'invitation_email_mismatch',
      detail = 'This invitation was sent to another email address.';
  end if;

  insert into public.organization_members (organization_id, user_id, role, invited_by)
  values (v_invitation.organization_id, v_user_id, v_invitation.role, v_invitation.invited_by)
  on conflict (organization_id, user_id) do nothing;
  if found then
    perform private.append_domain_event(v_invitation.organization_id, 'member.joined',
      jsonb_build_object('user_id', v_user_id, 'role', v_invitation.role, 'invitation_id', v_invitation.id));
  end if;
  -- Already a member (joined another way): the invitation is used up, the role stays as it is.
  select role into v_role from public.organization_members
  where organization_id = v_invitation.organization_id and user_id = v_user_id;

  update public.organization_invitations set accepted_at = now(), accepted_by = v_user_id where id = v_invitation.id;
  return jsonb_build_object('organization_id', v_invitation.organization_id, 'role', v_role);
end
$$;
comment on function private.accept_invitation(text) is 'Accepts an invitation for the current user.';
grant execute on function private.accept_invitation(text) to authenticated;

create function public.accept_invitation(p_token text)
returns jsonb
language sql
security invoker
set search_path = ''
as $$
  select private.accept_invitation(p_token)
$$;
comment on function public.accept_invitation(text) is
  'Joins the organization of an invitation sent to the caller''s email. Returns {organization_id, role}. Errors: not_authenticated, invitation_not_found, invitation_already_accepted, invitation_expired, invitation_email_mismatch.';
grant execute on function public.accept_invitation(text) to authenticated;

-- ---------------------------------------------------------------------------------------------
-- update_member_role, remove_member, leave_organization
-- ---------------------------------------------------------------------------------------------
-- Who may change whom: owners change anyone; admins change admins, members and billing but
-- neither touch owners nor make anyone owner.
create function private.update_member_role(p_organization_id uuid, p_user_id uuid, p_role text)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_caller_id uuid := private.require_user();
  v_caller_role public.organization_role := private.require_membership(p_organization_id, v_caller_id);
  v_new_role public.organization_role := private.parse_organization_role(p_role);
  v_old_role public.organization_role;
begin
  if v_caller_role not in ('owner', 'admin') then
    raise exception using errcode = '42501', message = 'not_authorized', detail = 'Only owners and admins can change roles.';
  end if;
  select role into v_old_role from public.organization_members
  where organization_id = p_organization_id and user_id = p_user_id
  for update;
  if v_old_role is null then
    raise exception using errcode = 'PT404', message = 'member_not_found', detail = 'That user is not a member of this organization.';
  end if;
  if v_caller_role <> 'owner' and ('owner' in (v_old_role, v_new_role)) then
    raise exception using errcode = '42501', message = 'not_authorized', detail = 'Only owners can grant or take away the owner role.';
  end if;
  if v_old_role = v_new_role then
    return;
  end if;
  update public.organization_members set role = v_new_role
  where organization_id = p_organization_id and user_id = p_user_id;
  perform private.append_domain_event(p_organization_id, 'member.role_changed',
    jsonb_build_object('user_id', p_user_id, 'old_role', v_old_role, 'new_role', v_new_role, 'changed_by', v_caller_id));
end
$$;
comment on function private.update_member_role(uuid, uuid, text) is 'Changes a member''s role under the rules of the public function.';
grant execute on function private.update_member_role(uuid, uuid, text) to authenticated;

create function public.update_member_role(p_organization_id uuid, p_user_id uuid, p_role text)
returns void
language sql
security invoker
set search_path = ''
as $$
  select private.update_member_role(p_organization_id, p_user_id, p_role)
$$;
comment on function public.update_member_role(uuid, uuid, text) is
  'Changes a member''s role. Owners change anyone; admins cannot touch owners or grant owner. Errors: not_authenticated, not_authorized, invalid_role, member_not_found, last_owner.';
grant execute on function public.update_member_role(uuid, uuid, text) to authenticated;

create function private.remove_member(p_organization_id uuid, p_user_id uuid)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_caller_id uuid := private.require_user();
  v_caller_role public.organization_role := private.require_membership(p_organization_id, v_caller_id);
  v_role public.organization_role;
begin
  if v_caller_role not in ('owner', 'admin') then
    raise exception using errcode = '42501', message = 'not_authorized', detail = 'Only owners and admins can remove members.';
  end if;
  select role into v_role from public.organization_members
  where organization_id = p_organization_id and user_id = p_user_id
  for update;
  if v_role is null then
    raise exception using errcode = 'PT404', message = 'member_not_found', detail = 'That user is not a member of this organization.';
  end if;
  if v_role = 'owner' and v_caller_role <> 'owner' then
    raise exception using errcode = '42501', message = 'not_authorized', detail = 'Only owners can remove owners.';
  end if;
  delete from public.organization_members where organization_id = p_organization_id and user_id = p_user_id;
  -- The row lock above makes a concurrent leave wait for us; should the member be gone anyway,
  -- nothing was removed and nothing is announced.
  if not found then
    raise exception using errcode = 'PT404', message = 'member_not_found', detail = 'That user is not a member of this organization.';
  end if;
  perform private.append_domain_event(p_organization_id, 'member.removed',
    jsonb_build_object('user_id', p_user_id, 'role', v_role, 'removed_by', v_caller_id));
end
$$;
comment on function private.remove_member(uuid, uuid) is 'Removes a member under the rules of the public function.';
grant execute on function private.remove_member(uuid, uuid) to authenticated;

create function public.remove_member(p_organization_id uuid, p_user_id uuid)
returns void
language sql
security invoker
set search_path = ''
as $$
  select private.remove_member(p_organization_id, p_user_id)
$$;
comment on function public.remove_member(uuid, uuid) is
  'Removes a member (owners and admins; only owners remove owners; never the last owner). Errors: not_authenticated, not_authorized, member_not_found, last_owner.';
grant execute on function public.remove_member(uuid, uuid) to authenticated;

create function private.leave_organization(p_organization_id uuid)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_user_id uuid := private.require_user();
  v_role public.organization_role := private.require_membership(p_organization_id, v_user_id);
begin
  delete from public.organization_members where organization_id = p_organization_id and user_id = v_user_id;
  -- Removed by someone else meanwhile (the delete waited for their commit and found nothing):
  -- that removal wrote its event; this call writes nothing.
  if not found then
    raise exception using errcode = '42501', message = 'not_authorized', detail = 'You are not a member of this organization.';
  end if;
  perform private.append_domain_event(p_organization_id, 'member.left',
    jsonb_build_object('user_id', v_user_id, 'role', v_role));
end
$$;
comment on function private.leave_organization(uuid) is 'Removes the current user from an organization.';
grant execute on function private.leave_organization(uuid) to authenticated;

create function public.leave_organization(p_organization_id uuid)
returns void
language sql
security invoker
set search_path = ''
as $$
  select private.leave_organization(p_organization_id)
$$;
comment on function public.leave_organization(uuid) is
  'The caller leaves the organization (the last owner cannot). Errors: not_authenticated, not_authorized, last_owner.';
grant execute on function public.leave_organization(uuid) to authenticated;
