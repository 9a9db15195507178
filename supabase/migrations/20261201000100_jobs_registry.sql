-- =============================================================================================
-- Jobs: one registry of every scheduled job, in sync with pg_cron, and a record of every run
-- =============================================================================================

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

-- A job is a row of private.jobs: name, schedule (cron syntax), what it does, and its kind:
--   sql   pg_cron runs `select private.run_job('<name>')`, which runs the job's SQL function,
--         records the run, and skips when the previous run still holds the job's lock;
--   http  an edge function (email dispatch now; webhooks, exports later). On hosted Supabase
--         pg_cron calls it through pg_net with the service key from Supabase Vault; those
--         schedules exist only where pg_net does. The local stack has no pg_net: its gateway
--         calls the same functions on the same schedules (LOCAL_JOB_SCHEDULER). The function
--         records its own run (private.start_job_run / finish_job_run), the same either way.
-- A trigger keeps pg_cron in step with the registry, whoever edits it (a migration, Studio).
-- A failing job fails alone: each pg_cron job runs in its own session and transaction.

create type private.job_kind as enum ('sql', 'http');
comment on type private.job_kind is 'sql: pg_cron runs a SQL function; http: an edge function is called on the schedule.';

create type private.job_outcome as enum ('running', 'succeeded', 'failed', 'skipped');
comment on type private.job_outcome is 'How a run ended; skipped: the previous run of the job was still going.';

insert into private.settings (key, value, description) values
  ('job_run_retention', '"30 days"', 'How long the record of a job run is kept.'),
  ('http_job_lease', '"10 minutes"', 'How long an HTTP job''s run may take before another run may start anyway.');

-- ---------------------------------------------------------------------------------------------
-- The registry and its runs
-- ---------------------------------------------------------------------------------------------
create table private.jobs (
  name text primary key check (name ~ '^[a-z][a-z0-9-]{0,62}$'),
  description text not null,
  schedule text not null check (schedule ~ '^\S+ \S+ \S+ \S+ \S+$'),
  kind private.job_kind not null,
  command text not null,
  enabled boolean not null default true,
  running_since timestamptz,
  last_started_at timestamptz,
  last_finished_at timestamptz,
  last_outcome private.job_outcome,
  last_error text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  check ((kind = 'http') = (command ~ '^[a-z][a-z0-9-]*$'))
);
comment on table private.jobs is 'Every scheduled job: what it does, when, its last run. pg_cron follows this table (trigger).';
comment on column private.jobs.name is 'The job''s name, also its pg_cron job name.';
comment on column private.jobs.description is 'What the job does.';
comment on column private.jobs.schedule is 'When it runs, in cron syntax (UTC).';
comment on column private.jobs.kind is 'sql or http.';
comment on column private.jobs.command is 'sql: the SQL expression it evaluates (a function call returning a count); http: the edge function''s name.';
comment on column private.jobs.enabled is 'A disabled job is not scheduled.';
comment on column private.jobs.running_since is 'An HTTP job''s run in progress (its lease); null when none.';
comment on column private.jobs.last_started_at is 'When its last run started.';
comment on column private.jobs.last_finished_at is 'When its last run finished.';
comment on column private.jobs.last_outcome is 'How its last run ended.';
comment on column private.jobs.last_error is 'The last run''s error, if it failed.';
comment on column private.jobs.created_at is 'When the job was registered.';
comment on column private.jobs.updated_at is 'When it last changed.';
alter table private.jobs enable row level security;
-- Operators pause and reschedule jobs; what a job runs is a migration's business (it runs as the
-- database owner).
grant select, update (enabled, schedule) on private.jobs to service_role;

create trigger jobs_set_updated_at
before update on private.jobs
for each row execute function private.set_updated_at();

create table private.job_runs (
  id bigint generated always as identity primary key,
  job_name text not null references private.jobs (name) on delete cascade,
  started_at timestamptz not null,
  finished_at timestamptz,
  outcome private.job_outcome not null default 'running',
  rows_affected bigint,
  error text check (char_length(error) <= 2000)
);
comment on table private.job_runs is 'One row per run of a job: when, how it ended, how many rows it touched, its error.';
comment on column private.job_runs.id is 'The run.';
comment on column private.job_runs.job_name is 'The job.';
comment on column private.job_runs.started_at is 'When it started.';
comment on column private.job_runs.finished_at is 'When it finished; null while running.';
comment on column private.job_runs.outcome is 'running, succeeded, failed or skipped.';
comment on column private.job_runs.rows_affected is 'What the job reported doing (organizations settled, mails sent, ...).';
comment on column private.job_runs.error is 'The error of a failed run.';
alter table private.job_runs enable row level security;
grant select on private.job_runs to service_role;
create index job_runs_job_name_started_at_idx on private.job_runs (job_name, started_at desc);
create index job_runs_started_at_idx on private.job_runs (started_at);

-- ---------------------------------------------------------------------------------------------
-- Keeping pg_cron in step
-- ---------------------------------------------------------------------------------------------
-- What pg_cron runs for a job, or null when it schedules nothing (a disabled job; an HTTP job
-- where pg_net is missing, as on the local stack).
create function private.cron_command(p_job private.jobs)
returns text
language sql
stable
security definer
set search_path = ''
as $$
  select case
    when not p_job.enabled then null
    when p_job.kind = 'sql' then format('select private.run_job(%L)', p_job.name)
    when exists (select 1 from pg_catalog.pg_extension where extname = 'pg_net')
      then format('select private.invoke_http_job(%L)', p_job.name)
  end
$$;
comment on function private.cron_command(private.jobs) is 'The command pg_cron runs for a job; null when nothing is scheduled.';

create function private.sync_job_schedule()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_command text;
begin
  if tg_op in ('UPDATE', 'DELETE') and exists (select 1 from cron.job where jobname = old.name) then
    perform cron.unschedule(old.name);
  end if;
  if tg_op in ('INSERT', 'UPDATE') then
    v_command := private.cron_command(new);
    if v_command is not null then
      perform cron.schedule(new.name, new.schedule, v_command);
    end if;
  end if;
  return null;
end
$$;
comment on function private.sync_job_schedule() is 'Trigger: schedules, reschedules or unschedules a job''s pg_cron entry as its registry row changes.';

create trigger jobs_sync_schedule
after insert or delete or update of schedule, enabled, kind, command on private.jobs
for each row execute function private.sync_job_schedule();

-- ---------------------------------------------------------------------------------------------
-- Registering and running
-- ---------------------------------------------------------------------------------------------
create function private.register_job(
  p_name text, p_schedule text, p_kind private.job_kind, p_command text, p_description text
)
returns void
language sql
security definer
set search_path = ''
as $$
  insert into private.jobs (name, schedule, kind, command, description)
  values (p_name, p_schedule, p_kind, p_command, p_description)
  on conflict (name) do update
    set schedule = excluded.schedule, kind = excluded.kind, command = excluded.command, description = excluded.description
$$;
comment on function private.register_job(text, text, private.job_kind, text, text) is 'Adds a job to the registry (or updates it); pg_cron follows.';

-- A SQL job's run, as pg_cron starts it. Its lock makes a run that finds the previous one still
-- going a recorded skip instead of a second run on top of it.
create function private.run_job(p_name text, p_now timestamptz default clock_timestamp())
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_job private.jobs;
  v_run bigint;
  v_rows bigint;
  v_outcome private.job_outcome := 'succeeded';
  v_error text;
begin
  select * into v_job from private.jobs where name = p_name and kind = 'sql';
  if not found or not v_job.enabled then
    return;
  end if;
  if not pg_try_advisory_xact_lock(hashtextextended('job:' || p_name, 0)) then
    insert into private.job_runs (job_name, started_at, finished_at, outcome) values (p_name, p_now, p_now, 'skipped');
    return;
  end if;
  insert into private.job_runs (job_name, started_at) values (p_name, p_now) returning id into v_run;
  begin
    execute format('select (%s)::bigint', v_job.command) into v_rows;
  exception when others then
    v_outcome := 'failed';
    v_error := left(sqlerrm, 2000);
  end;
  update private.job_runs set finished_at = clock_timestamp(), outcome = v_outcome, rows_affected = v_rows, error = v_error
  where id = v_run;
  update private.jobs set last_started_at = p_now, last_finished_at = clock_timestamp(), last_outcome = v_outcome, last_error = v_error
  where name = p_name;
end
$$;
comment on function private.run_job(text, timestamptz) is 'Runs a SQL job and records the run (skipped when the previous run still holds the job''s lock).';
grant execute on function private.run_job(text, timestamptz) to service_role;

-- An HTTP job's run, as the edge function records it: start returns the run's id, or null when
-- the previous run still holds the lease (the caller then does nothing).
create function private.start_job_run(p_name text, p_now timestamptz default now())
returns bigint
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_run bigint;
begin
  update private.jobs set running_since = p_now, last_started_at = p_now
  where name = p_name and kind = 'http' and enabled
    and (running_since is null or running_since < p_now - (private.setting('http_job_lease') #>> '{}')::interval);
  if not found then
    if exists (select 1 from private.jobs where name = p_name and kind = 'http') then
      insert into private.job_runs (job_name, started_at, finished_at, outcome) values (p_name, p_now, p_now, 'skipped');
    end if;
    return null;
  end if;
  -- A run whose lease ran out never finished (its function died): say so.
  update private.job_runs set outcome = 'failed', finished_at = p_now, error = 'the run never finished (its lease ran out)'
  where job_name = p_name and outcome = 'running';
  insert into private.job_runs (job_name, started_at) values (p_name, p_now) returning id into v_run;
  return v_run;
end
$$;
comment on function private.start_job_run(text, timestamptz) is 'Starts an HTTP job''s run; null (and a skipped run) when one is still going or the job is disabled.';
grant execute on function private.start_job_run(text, timestamptz) to service_role;

create function private.finish_job_run(p_run bigint, p_rows bigint default null, p_error text default null, p_now timestamptz default now())
returns void
language sql
security definer
set search_path = ''
as $$
  with run as (
    update private.job_runs
    set finished_at = p_now, outcome = case when p_error is null then 'succeeded' else 'failed' end::private.job_outcome,
        rows_affected = p_rows, error = left(p_error, 2000)
    where id = p_run and outcome = 'running'
    returning job_name, outcome, error
  )
  update private.jobs j
  set running_since = null, last_finished_at = p_now, last_outcome = run.outcome, last_error = run.error
  from run where j.name = run.job_name
$$;
comment on function private.finish_job_run(bigint, bigint, text, timestamptz) is 'Ends an HTTP job''s run: succeeded, or failed with p_error; frees its lease.';
grant execute on function private.finish_job_run(bigint, bigint, text, timestamptz) to service_role;

-- On hosted Supabase (pg_net present), pg_cron calls an HTTP job through pg_net with the project
-- URL and the service role key stored in Supabase Vault (secrets 'project_url' and
-- 'service_role_key'; the README says how to create them). Never run locally.
create function private.invoke_http_job(p_name text)
returns bigint
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_function text;
  v_request bigint;
begin
  select command into v_function from private.jobs where name = p_name and kind = 'http' and enabled;
  if v_function is null then
    return null;
  end if;
  execute $sql$
    select net.http_post(
      url := (select decrypted_secret from vault.decrypted_secrets where name = 'project_url') || '/functions/v1/' || $1,
      headers := jsonb_build_object('content-type', 'application/json', 'authorization',
        'Bearer ' || (select decrypted_secret from vault.decrypted_secrets where name = 'service_role_key')),
      body := jsonb_build_object('job', $2),
      timeout_milliseconds := 60000)
  $sql$ into v_request using v_function, p_name;
  return v_request;
end
$$;
comment on function private.invoke_http_job(text) is 'pg_cron''s call of an HTTP job on hosted Supabase: pg_net POSTs to the edge function with the service key from Vault.';

-- On hosted projects pg_net is available (enabling it needs no superuser there); the local
-- stand-in has none, and the registry then schedules HTTP jobs nowhere.
do $$
begin
  if exists (select 1 from pg_catalog.pg_available_extensions where name = 'pg_net') then
    create extension if not exists pg_net;
  end if;
end
$$;

-- ---------------------------------------------------------------------------------------------
-- Retention of the runs themselves
-- ---------------------------------------------------------------------------------------------
create function private.purge_job_runs(p_now timestamptz default now())
returns bigint
language sql
security definer
set search_path = ''
as $$
  with gone as (
    delete from private.job_runs
    where started_at < p_now - (private.setting('job_run_retention') #>> '{}')::interval and outcome <> 'running'
    returning 1)
  select count(*) from gone
$$;
comment on function private.purge_job_runs(timestamptz) is 'Deletes job runs older than job_run_retention.';
grant execute on function private.purge_job_runs(timestamptz) to service_role;

-- ---------------------------------------------------------------------------------------------
-- The jobs so far, taken over from the plain pg_cron schedules of the earlier chapters
-- ---------------------------------------------------------------------------------------------
select cron.unschedule(jobname) from cron.job
where jobname in ('credits-expire', 'credits-renew-periods', 'credits-purge-idempotency-keys',
                  'deleted-organizations-purge-records', 'rate-limits-purge', 'outbox-purge');

select private.register_job('credits-expire', '* * * * *', 'sql', 'private.expire_credits()',
  'Removes expired credits and releases expired reservations.');
select private.register_job('credits-renew-periods', '*/5 * * * *', 'sql', 'private.renew_credit_periods()',
  'Starts the next billing period of organizations whose period ended (a new allocation).');
select private.register_job('credits-purge-idempotency-keys', '17 * * * *', 'sql', 'private.purge_credit_idempotency_keys()',
  'Deletes consume_credits_rpc idempotency keys older than 7 days.');
select private.register_job('deleted-organizations-purge-records', '41 3 * * *', 'sql', 'private.purge_deleted_organization_records()',
  'Deletes the money records of deleted organizations whose retention ended.');
select private.register_job('rate-limits-purge', '23 * * * *', 'sql', 'private.purge_rate_limit_counters()',
  'Deletes rate-limit windows older than a day.');
select private.register_job('outbox-purge', '37 4 * * *', 'sql', 'private.purge_domain_events()',
  'Deletes domain events every consumer is done with, after their retention.');
select private.register_job('job-runs-purge', '53 4 * * *', 'sql', 'private.purge_job_runs()',
  'Deletes job runs older than job_run_retention.');
