-- =============================================================================================
-- Credits: expiry settles one organization per transaction
-- =============================================================================================
-- private.expire_credits settled up to 500 organizations in one transaction each minute: every
-- balance row it locked stayed locked until the last organization was done, and one
-- organization whose rows someone else held kept the whole job waiting. Now the credits-expire
-- job is a steps job: pg_cron runs a DO block that calls private.expire_credits_step (one
-- organization, the next due one whose rows no one holds) and commits after each, until none is
-- left. A DO block may commit where a function may not, and it is not a stored procedure, which
-- could not both commit and pin its search_path (Postgres forbids transaction control under a
-- SET clause, and the advisors require one).

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

-- ---------------------------------------------------------------------------------------------
-- The steps kind in the registry
-- ---------------------------------------------------------------------------------------------
create or replace function private.cron_command(p_job private.jobs)
returns text
language sql
stable
security definer
set search_path = ''
as $$
  select case
    when not p_job.enabled then null
    when p_job.kind = 'sql' then format('select private.run_job(%L)', p_job.name)
    when p_job.kind = 'steps' then format(
      'do $job$ declare v_run bigint := private.start_job_run(%L); begin '
      || 'if v_run is not null then while private.run_job_step(v_run) loop commit; end loop; end if; end $job$',
      p_job.name)
    when exists (select 1 from pg_catalog.pg_extension where extname = 'pg_net')
      then format('select private.invoke_http_job(%L)', p_job.name)
  end
$$;
comment on function private.cron_command(private.jobs) is 'The command pg_cron runs for a job; null when nothing is scheduled.';

-- An HTTP or steps job's run: start returns the run's id, or null when the previous run still
-- holds the lease (the caller then does nothing). As the jobs chapter made it, for both kinds.
create or replace function private.start_job_run(p_name text, p_now timestamptz default now())
returns bigint
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_run bigint;
begin
  update private.jobs set running_since = p_now, last_started_at = p_now
  where name = p_name and kind in ('http', 'steps') and enabled
    and (running_since is null or running_since < p_now - (private.setting('http_job_lease') #>> '{}')::interval);
  if not found then
    if exists (select 1 from private.jobs where name = p_name and kind in ('http', 'steps')) then
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
comment on function private.start_job_run(text, timestamptz) is
  'Starts an HTTP or steps job''s run; null (and a skipped run) when one is still going or the job is disabled.';

-- One step of a steps job's run, in the caller's transaction (the DO block commits after it):
-- runs the job's function once, adds what it did to the run, and says whether to go on. It
-- stops, finishing the run, when the function did nothing, failed (the run records the error;
-- what earlier steps committed stays), the job was paused, or the run has taken as long as the
-- lease (http_job_lease): the next run goes on from there.
create function private.run_job_step(p_run bigint)
returns boolean
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_job private.jobs;
  v_started timestamptz;
  v_total bigint;
  v_rows bigint;
begin
  select r.started_at, coalesce(r.rows_affected, 0) into v_started, v_total
  from private.job_runs r where r.id = p_run and r.outcome = 'running';
  select j.* into v_job from private.jobs j
  where j.name = (select job_name from private.job_runs where id = p_run) and j.kind = 'steps';
  if v_started is null or v_job.name is null then
    return false;
  end if;
  if not v_job.enabled or clock_timestamp() - v_started > (private.setting('http_job_lease') #>> '{}')::interval then
    perform private.finish_job_run(p_run, v_total, null, clock_timestamp());
    return false;
  end if;
  perform set_config('app.actor_kind', 'job', true);
  perform set_config('app.actor_id', '', true);
  perform set_config('app.request_id', format('job:%s:%s', v_job.name, p_run), true);
  begin
    execute format('select (%s)::bigint', v_job.command) into v_rows;
  exception when others then
    perform private.finish_job_run(p_run, v_total, left(sqlerrm, 2000), clock_timestamp());
    return false;
  end;
  if coalesce(v_rows, 0) = 0 then
    perform private.finish_job_run(p_run, v_total, null, clock_timestamp());
    return false;
  end if;
  update private.job_runs set rows_affected = v_total + v_rows where id = p_run;
  return true;
end
$$;
comment on function private.run_job_step(bigint) is
  'One step of a steps job''s run (pg_cron''s DO block commits after each); false when the run is over.';

-- ---------------------------------------------------------------------------------------------
-- Expiry, one organization at a time
-- ---------------------------------------------------------------------------------------------
-- What settling one organization means: its pools with credits due to expire, and its expired
-- reservations, opened and closed again (the engine removes and releases what is due).
create function private.settle_credit_expiry(p_organization_id uuid, p_now timestamptz)
returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform private.close_credit_pools(p_organization_id,
    private.open_credit_pools(p_organization_id,
      array(select pool_key from public.credit_balances where organization_id = p_organization_id and next_expiry_at <= p_now),
      p_now),
    p_now);
end
$$;
comment on function private.settle_credit_expiry(uuid, timestamptz) is
  'Removes an organization''s expired credits and releases its expired reservations.';

-- Still callable by hand (and by tests) for many organizations in one transaction.
create or replace function private.expire_credits(p_now timestamptz default now(), p_limit integer default 500)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_org uuid;
  v_count integer := 0;
begin
  for v_org in
    select organization_id from (
      select organization_id from public.credit_balances where next_expiry_at <= p_now
      union
      select organization_id from public.credit_reservations where status = 'active' and expires_at <= p_now
    ) due
    limit p_limit
  loop
    perform private.settle_credit_expiry(v_org, p_now);
    v_count := v_count + 1;
  end loop;
  return v_count;
end
$$;

-- One step of the credits-expire job: the next organization with something due whose rows no
-- one else holds (skip locked); one whose other rows stay held for more than two seconds is
-- passed over in this step (lock_timeout), so it delays the others by that much at most and
-- holds none of them. Returns 1 when it settled one, 0 when none is left to settle now.
create function private.expire_credits_step(p_now timestamptz default now())
returns bigint
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_org uuid;
  v_passed uuid[] := '{}';
begin
  perform set_config('lock_timeout', '2s', true);
  loop
    select b.organization_id into v_org from public.credit_balances b
    where b.next_expiry_at <= p_now and b.organization_id <> all (v_passed)
    limit 1 for update skip locked;
    if v_org is null then
      select r.organization_id into v_org from public.credit_reservations r
      where r.status = 'active' and r.expires_at <= p_now and r.organization_id <> all (v_passed)
      limit 1 for update skip locked;
    end if;
    if v_org is null then
      return 0;
    end if;
    begin
      perform private.settle_credit_expiry(v_org, p_now);
      return 1;
    exception when lock_not_available then
      v_passed := v_passed || v_org;
    end;
  end loop;
end
$$;
comment on function private.expire_credits_step(timestamptz) is
  'Settles the expiry of one organization (the credits-expire job''s step); 1, or 0 when none is due and free.';

update private.jobs set kind = 'steps', command = 'private.expire_credits_step()',
  description = 'Expires credits and reservations, one organization per transaction.'
where name = 'credits-expire';
