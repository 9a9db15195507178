-- =============================================================================================
-- Jobs: a kind of job that commits after every step
-- =============================================================================================
-- A sql job runs in one transaction: every lock it takes is held until it ends. A steps job's
-- SQL function does one small unit of work per call (say, one organization) and returns how many
-- it did; pg_cron calls it again and again, committing after each, until it returns 0 (see
-- private.cron_command in the next chapter). Its own value: the enum's new label can only be
-- used once this migration has committed.
-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

alter type private.job_kind add value if not exists 'steps' after 'http';
comment on type private.job_kind is
  'sql: pg_cron runs a SQL function in one transaction; steps: pg_cron calls a SQL function until it returns 0, committing after each call; http: an edge function is called on the schedule.';
