-- =============================================================================================
-- Tenancy: profiles, kept in sync with auth.users
-- =============================================================================================

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

-- ---------------------------------------------------------------------------------------------
-- Profiles: one per auth.users row
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
alter table public.profiles enable row level security;

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
-- Deleting a user
-- ---------------------------------------------------------------------------------------------
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
    perform private.raise('last_owner', format('The user is the only owner of %s: make another member owner of each (update_member_role) or delete them first.', v_blocking));
  end if;
  return old;
end
$$;
comment on function private.guard_user_deletion() is 'Trigger on auth.users: refuses to delete the only owner of an organization, naming the organizations.';

create trigger on_auth_user_deleting
before delete on auth.users
for each row execute function private.guard_user_deletion();

-- ---------------------------------------------------------------------------------------------
-- Row-level security
-- ---------------------------------------------------------------------------------------------
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

create policy "Users can read their own profile and their teammates'"
on public.profiles for select to authenticated
using (id = (select auth.uid()) or id in (select private.co_member_user_ids()));

create policy "Users can update their own profile"
on public.profiles for update to authenticated
using (id = (select auth.uid()))
with check (id = (select auth.uid()));
