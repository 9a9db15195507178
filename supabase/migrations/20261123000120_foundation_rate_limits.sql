-- =============================================================================================
-- Foundation: rate limits
-- =============================================================================================

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

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
    perform private.raise('rate_limited', format('Too many requests: at most %s per %s. Try again after %s.', p_limit, p_window, v_window_start + p_window));
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
