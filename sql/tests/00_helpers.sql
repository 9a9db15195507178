-- pgTAP helpers for tests/db/*.test.sql: create users and act as them, as anon or as service_role.
-- Installed by the test runner (scripts/test.mjs) into the local database only, never by a migration.
-- Each test file runs in a transaction that it rolls back, so users made here leave no trace.
create extension if not exists pgtap with schema extensions;

create schema if not exists tests;
grant usage on schema tests to anon, authenticated, service_role;

-- Creates a user (as GoTrue would: a row in auth.users, whose trigger creates the profile)
-- and returns its id. app_metadata lands in raw_app_meta_data, as GoTrue stores it.
create or replace function tests.create_user(
  p_email text,
  p_app_metadata jsonb default '{}'::jsonb,
  p_user_metadata jsonb default '{}'::jsonb
)
returns uuid
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_id uuid := gen_random_uuid();
begin
  insert into auth.users (id, email, raw_app_meta_data, raw_user_meta_data)
  values (v_id, lower(p_email), '{"provider": "email", "providers": ["email"]}'::jsonb || p_app_metadata, p_user_metadata);
  return v_id;
end
$$;

create or replace function tests.get_user_id(p_email text)
returns uuid
language sql
stable
security definer
set search_path = ''
as $$
  select id from auth.users where email = lower(p_email)
$$;

-- The JWT claims GoTrue would issue for a user (role, aal and app_metadata included).
create or replace function tests.user_claims(p_email text)
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_user auth.users;
begin
  select * into v_user from auth.users where email = lower(p_email);
  if v_user.id is null then
    raise exception 'tests: no user with email %', p_email;
  end if;
  return jsonb_build_object(
    'sub', v_user.id, 'email', v_user.email, 'role', 'authenticated', 'aud', 'authenticated', 'aal', 'aal1',
    'app_metadata', coalesce(v_user.raw_app_meta_data, '{}'::jsonb),
    'user_metadata', coalesce(v_user.raw_user_meta_data, '{}'::jsonb));
end
$$;

-- Acts as a signed-in user for the rest of the transaction: the role PostgREST would switch to
-- and the claims it would set, so RLS sees exactly what it sees through the API. (Not security
-- definer: a role cannot be switched inside one.)
create or replace function tests.authenticate_as(p_email text)
returns void
language plpgsql
set search_path = ''
as $$
begin
  perform set_config('request.jwt.claims', tests.user_claims(p_email)::text, true);
  perform set_config('role', 'authenticated', true);
end
$$;

create or replace function tests.authenticate_as_service_role()
returns void
language plpgsql
set search_path = ''
as $$
begin
  perform set_config('request.jwt.claims', '{"role": "service_role"}', true);
  perform set_config('role', 'service_role', true);
end
$$;

-- Acts as an anonymous caller (the anon key, no user).
create or replace function tests.clear_authentication()
returns void
language plpgsql
set search_path = ''
as $$
begin
  perform set_config('request.jwt.claims', '{"role": "anon"}', true);
  perform set_config('role', 'anon', true);
end
$$;

-- Back to the test's own superuser role (to arrange data or inspect what RLS hides).
create or replace function tests.reset_role()
returns void
language plpgsql
set search_path = ''
as $$
begin
  perform set_config('request.jwt.claims', '', true);
  perform set_config('role', 'none', true);
end
$$;

grant execute on all functions in schema tests to anon, authenticated, service_role;
