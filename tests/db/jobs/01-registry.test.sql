-- 01 The job registry: every scheduled job is a row of private.jobs, and pg_cron follows it
-- (registered, rescheduled, disabled, removed); a SQL job's run is recorded, a failure recorded as
-- such, and a run that finds the previous one still holding the job's lock is a recorded skip; an
-- HTTP job's run (recorded by its function) is leased; old runs are purged. Only the service role
-- reaches the registry, and it may pause or reschedule a job but not change what it runs.
begin;
select plan(32);

select set_eq($$ select name from private.jobs $$,
  array['credits-expire', 'credits-renew-periods', 'credits-purge-idempotency-keys', 'deleted-organizations-purge-records',
        'rate-limits-purge', 'outbox-purge', 'job-runs-purge', 'email-dispatch', 'emails-purge', 'files-cleanup',
        'billing-dunning', 'billing-invoice-pdfs', 'stripe-events-purge',
        'credit-statements-close', 'credit-statements-bill', 'credit-accounts-dunning',
        'audit-partitions', 'gdpr-exports', 'gdpr-deadlines', 'lifecycle-inactivity', 'lifecycle-purge'],
  'the registry lists every job: credits, retention, rate limits, the outbox, job runs, email, files, billing, credit accounts, the audit log, GDPR, the lifecycle');
select is_empty($$
  select j.name from private.jobs j where j.kind = 'sql' and j.enabled
    and not exists (select 1 from cron.job c where c.jobname = j.name and c.schedule = j.schedule
                    and c.command = format('select private.run_job(%L)', j.name))
$$, 'every enabled SQL job is scheduled in pg_cron as run_job, on its schedule');
select is_empty($$ select jobname from cron.job where jobname not in (select name from private.jobs) $$,
  'pg_cron has no job the registry does not list');
select is_empty($$ select 1 from cron.job where jobname = 'email-dispatch' $$,
  'without pg_net (the local stand-in) an HTTP job is not in pg_cron: the local stack calls it');
select is(private.cron_command((select j from private.jobs j where name = 'email-dispatch')), null,
  'and cron_command says so');

-- Registering, rescheduling, disabling, removing: pg_cron follows.
create function pg_temp.count_to(p_limit integer) returns bigint language sql as $$ select p_limit::bigint $$;
create function pg_temp.explode() returns bigint language plpgsql as $$ begin raise exception 'boom'; end $$;
select private.register_job('test-count', '*/10 * * * *', 'sql', 'pg_temp.count_to(3)', 'Counts to three (test).');
select results_eq($$ select schedule, command from cron.job where jobname = 'test-count' $$,
  $$ values ('*/10 * * * *'::text, 'select private.run_job(''test-count'')'::text) $$, 'a registered job is in pg_cron');
update private.jobs set schedule = '5 4 * * *' where name = 'test-count';
select is((select schedule from cron.job where jobname = 'test-count'), '5 4 * * *', 'rescheduling it in the registry reschedules pg_cron');
update private.jobs set enabled = false where name = 'test-count';
select is_empty($$ select 1 from cron.job where jobname = 'test-count' $$, 'disabling it unschedules it');
update private.jobs set enabled = true where name = 'test-count';
select isnt_empty($$ select 1 from cron.job where jobname = 'test-count' $$, 'enabling it schedules it again');

-- Running a SQL job.
select private.run_job('test-count', '2000-01-01 00:00+00');
select results_eq($$ select outcome::text, rows_affected, error from private.job_runs where job_name = 'test-count' $$,
  $$ values ('succeeded', 3::bigint, null::text) $$, 'a run is recorded with what the job reported doing');
select results_eq($$ select last_outcome::text, last_started_at from private.jobs where name = 'test-count' $$,
  $$ values ('succeeded', '2000-01-01 00:00+00'::timestamptz) $$, 'and the registry shows the last run');

select private.register_job('test-explode', '* * * * *', 'sql', 'pg_temp.explode()', 'Always fails (test).');
select lives_ok($$ select private.run_job('test-explode') $$, 'a failing job does not fail its caller (nor the other jobs)');
select results_eq($$ select outcome::text, error from private.job_runs where job_name = 'test-explode' $$,
  $$ values ('failed', 'boom') $$, 'its run is recorded as failed, with the error');
select is((select last_error from private.jobs where name = 'test-explode'), 'boom', 'the registry shows the error');

-- A run that finds the previous one still holding the job's lock skips: that needs two sessions,
-- see tests/jobs/registry.test.ts.

-- HTTP jobs record their runs through start_job_run / finish_job_run, leased.
select private.register_job('test-http', '* * * * *', 'http', 'email-dispatch', 'An HTTP job (test).');
select ok(private.start_job_run('test-http', '2000-01-01 00:00+00') is not null, 'an HTTP job''s run starts');
select is(private.start_job_run('test-http', '2000-01-01 00:05+00'), null, 'a second start within the lease (10 minutes) is skipped');
select ok(private.start_job_run('test-http', '2000-01-01 00:11+00') is not null, 'after the lease a new run may start (the old one died)');
select private.finish_job_run((select max(id) from private.job_runs where job_name = 'test-http'), 7, null, '2000-01-01 00:12+00');
select results_eq($$ select running_since, last_outcome::text from private.jobs where name = 'test-http' $$,
  $$ values (null::timestamptz, 'succeeded') $$, 'finishing frees the lease and records the outcome');
select is((select count(*)::int from private.job_runs where job_name = 'test-http' and outcome = 'skipped'), 1, 'the skip was recorded');
select is((select error from private.job_runs where job_name = 'test-http' order by id limit 1), 'the run never finished (its lease ran out)',
  'and the run that died is recorded as failed when the next one starts');
update private.jobs set enabled = false where name = 'test-http';
select is(private.start_job_run('test-http', '2000-01-02 00:00+00'), null, 'a disabled HTTP job does not start');

-- Steps jobs: pg_cron runs a DO block that commits after every step (that needs its own session:
-- tests/credits/concurrency.test.ts runs credits-expire's); here, the steps themselves.
create temporary table steps_left (n integer);
insert into steps_left values (3);
create function pg_temp.one_step() returns bigint language sql as $$ update steps_left set n = n - 1 where n > 0 returning 2::bigint $$;
select private.register_job('test-steps', '* * * * *', 'steps', 'pg_temp.one_step()', 'Three steps of two (test).');
select matches((select command from cron.job where jobname = 'test-steps'),
  '^do \$job\$ declare v_run bigint := private.start_job_run\(''test-steps''\); begin if v_run is not null then while private.run_job_step\(v_run\) loop commit; end loop; end if; end \$job\$$',
  'pg_cron runs a steps job as a DO block that commits after each step');
select private.start_job_run('test-steps') as steps_run \gset
select results_eq(format($$ select private.run_job_step(%s) from generate_series(1, 5) $$, :steps_run),
  $$ values (true), (true), (true), (false), (false) $$, 'each step goes on while the function did something; then the run is over');
select results_eq(format($$ select outcome::text, rows_affected, error from private.job_runs where id = %s $$, :steps_run),
  $$ values ('succeeded', 6::bigint, null::text) $$, 'the run adds up what its steps did');
select ok((select running_since is null from private.jobs where name = 'test-steps'), 'and frees the lease');
update private.jobs set command = 'pg_temp.explode()' where name = 'test-steps';
select private.start_job_run('test-steps') as steps_run \gset
select is(private.run_job_step(:steps_run), false, 'a failing step ends the run');
select results_eq(format($$ select outcome::text, error from private.job_runs where id = %s $$, :steps_run),
  $$ values ('failed', 'boom') $$, 'recorded as failed, with the error');
select results_eq($$ select kind::text, command from private.jobs where name = 'credits-expire' $$,
  $$ values ('steps', 'private.expire_credits_step()') $$, 'credits-expire settles one organization per step');

-- Retention.
select cmp_ok(private.purge_job_runs(now() + interval '31 days'), '>=', 5::bigint, 'runs older than 30 days are purged');
select is((select count(*)::int from private.job_runs where job_name like 'test-%'), 0, 'the test runs are gone');

-- Who may touch the registry.
select tests.authenticate_as_service_role();
select lives_ok($$ update private.jobs set enabled = false where name = 'test-count' $$, 'the service role may pause a job');
select throws_ok($$ update private.jobs set command = 'private.anything()' where name = 'test-count' $$, '42501', null,
  'but not change what it runs (that runs as the database owner)');
select tests.reset_role();

select * from finish();
rollback;
