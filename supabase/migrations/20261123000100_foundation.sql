-- =============================================================================================
-- Foundation: privileges, the private schema, settings, and the helpers every area shares
-- =============================================================================================
-- Every chapter (one migration file per topic) is laid out in the same order: types; tables with
-- their comments, grants and row-level security next to each; guards and triggers; the private
-- engine; public RPCs; jobs.

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

-- Harden first. Every table, view and function is granted explicitly, right under its
-- definition, to exactly the roles that need it, so a reader sees who may do what. Hosted
-- projects stopped granting new objects in public to the API roles on 2026-10-30; projects
-- created before that kept the old defaults until then, so the defaults are revoked here too and
-- these migrations behave the same on either.

-- Postgres itself lets PUBLIC execute every new function; that default is global, so it is
-- revoked globally (a per-schema revoke cannot remove it).
alter default privileges revoke execute on functions from public;
alter default privileges in schema public revoke all on tables from anon, authenticated, service_role;
alter default privileges in schema public revoke all on sequences from anon, authenticated, service_role;
alter default privileges in schema public revoke all on functions from anon, authenticated, service_role;

-- ---------------------------------------------------------------------------------------------
-- private: helpers, trigger functions, security-definer internals. Never exposed by PostgREST.
-- `authenticated` has usage only so policies and public RPCs can call the helpers granted to it.
-- ---------------------------------------------------------------------------------------------
create schema if not exists private;
comment on schema private is
  'Internals: helpers, trigger functions, security-definer functions and tables no client reads directly. Never exposed through the API.';

revoke all on schema private from public;
grant usage on schema private to authenticated, service_role;

alter default privileges in schema private revoke all on functions from anon, authenticated, service_role;
alter default privileges in schema private revoke all on tables from anon, authenticated, service_role;
alter default privileges in schema private revoke all on sequences from anon, authenticated, service_role;

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

-- pg_cron runs the jobs of every area. It is enabled on the local stack already; on a hosted
-- project this enables it (the way Supabase's docs do) so later migrations can schedule jobs.
create extension if not exists pg_cron with schema pg_catalog;

-- ---------------------------------------------------------------------------------------------
-- Settings: the knobs an operator may turn (limits, retention periods), one row each, seeded by
-- the migration that introduces them and changed in Studio or SQL. Typed by the reader.
-- ---------------------------------------------------------------------------------------------
create table private.settings (
  key text primary key check (key ~ '^[a-z][a-z0-9_]*$'),
  value jsonb not null,
  description text not null,
  updated_at timestamptz not null default now()
);
comment on table private.settings is 'Operator-tunable limits and retention periods; each row is seeded by the migration that uses it.';
comment on column private.settings.key is 'The setting''s name.';
comment on column private.settings.value is 'Its value as JSON (a number, or an interval as a string like "10 years").';
comment on column private.settings.description is 'What it controls.';
comment on column private.settings.updated_at is 'When it last changed.';
alter table private.settings enable row level security;
grant select, update on private.settings to service_role;

create trigger settings_set_updated_at
before update on private.settings
for each row execute function private.set_updated_at();

create function private.setting(p_key text)
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_value jsonb;
begin
  select value into v_value from private.settings where key = p_key;
  if v_value is null then
    -- A migration reads a setting it did not seed: a bug, not the caller's fault.
    raise exception 'private.setting: no setting %', p_key using errcode = 'XX000';
  end if;
  return v_value;
end
$$;
comment on function private.setting(text) is 'The value of a setting; raises when it does not exist.';
grant execute on function private.setting(text) to service_role;

-- ---------------------------------------------------------------------------------------------
-- Permits: a guard trigger that refuses a change (an append-only table, a money record) lets it
-- through when the one function allowed to make it says so for the rest of its transaction.
-- Any session can set such a setting, so a permit only matters where the API roles have no
-- privilege on the table to begin with; it keeps the owner's own mistakes out, not attackers.
-- ---------------------------------------------------------------------------------------------
create function private.permit(p_operation text, p_on boolean default true)
returns void
language sql
set search_path = ''
as $$
  select set_config('private.permit_' || p_operation, case when p_on then 'on' else '' end, true)
$$;
comment on function private.permit(text, boolean) is
  'Allows (or, with false, disallows again) a guarded operation such as purge or detach for the rest of the transaction.';

create function private.permitted(p_operation text)
returns boolean
language sql
stable
set search_path = ''
as $$
  select coalesce(current_setting('private.permit_' || p_operation, true), '') = 'on'
$$;
comment on function private.permitted(text) is 'Whether private.permit allowed this operation in the current transaction.';
-- Guard triggers run as whoever wrote the row.
grant execute on function private.permitted(text) to authenticated, service_role;
