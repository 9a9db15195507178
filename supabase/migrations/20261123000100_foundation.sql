-- =============================================================================================
-- Foundation: privileges, the private schema, shared trigger helpers
-- =============================================================================================

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
    raise exception 'private.setting: no setting %', p_key;
  end if;
  return v_value;
end
$$;
comment on function private.setting(text) is 'The value of a setting; raises when it does not exist.';
grant execute on function private.setting(text) to service_role;

-- ---------------------------------------------------------------------------------------------
-- Rate limits: fixed-window counters per (bucket, subject), for actions that reach the outside
-- world (mail) or cost us something. The counting happens in the caller's transaction, so a
-- refused or failed call counts nothing.
-- ---------------------------------------------------------------------------------------------
create table private.rate_limit_counters (
  bucket text not null,
  subject text not null,
  window_start timestamptz not null,
  hits integer not null check (hits > 0),
  primary key (bucket, subject, window_start)
);
comment on table private.rate_limit_counters is 'Hits per rate-limit bucket, subject and time window; old windows are purged hourly.';
comment on column private.rate_limit_counters.bucket is 'What is limited, e.g. invitation_email.';
comment on column private.rate_limit_counters.subject is 'Who or what is limited within the bucket, e.g. an organization and an email.';
comment on column private.rate_limit_counters.window_start is 'Start of the fixed window counted.';
comment on column private.rate_limit_counters.hits is 'Hits in the window so far.';
alter table private.rate_limit_counters enable row level security;
create index rate_limit_counters_window_start_idx on private.rate_limit_counters (window_start);

create function private.hit_rate_limit(
  p_bucket text, p_subject text, p_limit integer, p_window interval, p_now timestamptz default now()
)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_window_start timestamptz := date_bin(p_window, p_now, timestamptz '2000-01-01 00:00:00+00');
  v_hits integer;
begin
  insert into private.rate_limit_counters (bucket, subject, window_start, hits)
  values (p_bucket, p_subject, v_window_start, 1)
  on conflict (bucket, subject, window_start) do update set hits = private.rate_limit_counters.hits + 1
  returning hits into v_hits;
  if v_hits > p_limit then
    raise exception using errcode = 'PT429', message = 'rate_limited',
      detail = format('Too many requests: at most %s per %s. Try again after %s.', p_limit, p_window, v_window_start + p_window);
  end if;
end
$$;
comment on function private.hit_rate_limit(text, text, integer, interval, timestamptz) is
  'Counts one hit for (bucket, subject) in the current window; raises rate_limited (HTTP 429) beyond p_limit.';
grant execute on function private.hit_rate_limit(text, text, integer, interval, timestamptz) to service_role;

create function private.purge_rate_limit_counters(p_now timestamptz default now())
returns bigint
language sql
security definer
set search_path = ''
as $$
  with gone as (delete from private.rate_limit_counters where window_start < p_now - interval '1 day' returning 1)
  select count(*) from gone
$$;
comment on function private.purge_rate_limit_counters(timestamptz) is 'Deletes rate-limit windows older than a day (pg_cron, hourly).';
grant execute on function private.purge_rate_limit_counters(timestamptz) to service_role;

select cron.schedule('rate-limits-purge', '23 * * * *', 'select private.purge_rate_limit_counters()');
