-- =============================================================================================
-- Foundation: privileges, the private schema, shared trigger helpers
-- =============================================================================================

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

-- Harden first. Supabase grants execute on every new function in public to anon and
-- authenticated; here execute is granted per function, right under its definition, so a reader
-- sees who may call what.

-- Postgres itself lets PUBLIC execute every new function; that default is global, so it is
-- revoked globally (a per-schema revoke cannot remove it). Supabase's own per-schema grants to
-- anon and authenticated are revoked for public and private below.
alter default privileges revoke execute on functions from public;
alter default privileges in schema public revoke execute on functions from anon, authenticated;

-- ---------------------------------------------------------------------------------------------
-- private: helpers, trigger functions, security-definer internals. Never exposed by PostgREST.
-- `authenticated` has usage only so policies and public RPCs can call the helpers granted to it.
-- ---------------------------------------------------------------------------------------------
create schema if not exists private;
comment on schema private is
  'Internals: helpers, trigger functions, security-definer functions and tables no client reads directly. Never exposed through the API.';

revoke all on schema private from public;
grant usage on schema private to authenticated, service_role;

alter default privileges in schema private revoke execute on functions from anon, authenticated;
alter default privileges in schema private revoke all on tables from anon, authenticated;
alter default privileges in schema private revoke all on sequences from anon, authenticated;

-- ---------------------------------------------------------------------------------------------
-- updated_at: one trigger function for every table that has the column.
-- ---------------------------------------------------------------------------------------------
create function private.set_updated_at()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.updated_at := now();
  return new;
end
$$;
comment on function private.set_updated_at() is
  'Trigger: stamps updated_at on every update. Attach with `before update ... for each row`.';
