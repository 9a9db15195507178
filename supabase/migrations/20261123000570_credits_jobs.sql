-- =============================================================================================
-- Credits: jobs (expiry, period renewal, key and record retention)
-- =============================================================================================

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

create function private.expire_credits(p_now timestamptz default now(), p_limit integer default 500)
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
    perform private.close_credit_pools(v_org,
      private.open_credit_pools(v_org, array(select pool_key from public.credit_balances where organization_id = v_org and next_expiry_at <= p_now), p_now),
      p_now);
    v_count := v_count + 1;
  end loop;
  return v_count;
end
$$;
comment on function private.expire_credits(timestamptz, integer) is
  'Removes expired credits and releases expired reservations (pg_cron, every minute); returns how many organizations it settled.';
grant execute on function private.expire_credits(timestamptz, integer) to service_role;

create function private.renew_credit_periods(p_now timestamptz default now(), p_limit integer default 500)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_plan record;
  v_start timestamptz;
  v_count integer := 0;
begin
  for v_plan in
    select op.organization_id, op.plan_key, op.period_end, p.period
    from public.organization_plans op join public.credit_plans p on p.key = op.plan_key
    where op.period_end <= p_now
    order by op.period_end
    limit p_limit
    for update of op skip locked
  loop
    -- The new period starts where the last one ended (missed periods are not granted twice).
    v_start := v_plan.period_end;
    while v_start + v_plan.period <= p_now loop
      v_start := v_start + v_plan.period;
    end loop;
    perform private.start_plan_period(v_plan.organization_id, v_plan.plan_key, v_start, p_now);
    v_count := v_count + 1;
  end loop;
  return v_count;
end
$$;
comment on function private.renew_credit_periods(timestamptz, integer) is
  'Starts the next billing period of organizations whose period ended (pg_cron, every 5 minutes); returns how many it renewed.';
grant execute on function private.renew_credit_periods(timestamptz, integer) to service_role;

create function private.purge_credit_idempotency_keys(p_now timestamptz default now())
returns bigint
language sql
security definer
set search_path = ''
as $$
  with gone as (delete from private.credit_idempotency_keys where created_at < p_now - interval '7 days' returning 1)
  select count(*) from gone
$$;
comment on function private.purge_credit_idempotency_keys(timestamptz) is 'Deletes idempotency keys older than 7 days (pg_cron, hourly).';
grant execute on function private.purge_credit_idempotency_keys(timestamptz) to service_role;

-- The money records of deleted organizations leave when their tombstone's retention ends.
create function private.purge_deleted_organization_records(p_now timestamptz default now(), p_limit integer default 100)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_org uuid;
  v_count integer := 0;
begin
  perform private.permit('purge');
  for v_org in
    select organization_id from private.deleted_organizations
    where records_purged_at is null and records_retained_until <= p_now
    order by records_retained_until
    limit p_limit
    for update skip locked
  loop
    delete from public.credit_ledger where organization_id = v_org;
    delete from public.credit_overages where organization_id = v_org;
    update private.deleted_organizations set records_purged_at = p_now where organization_id = v_org;
    v_count := v_count + 1;
  end loop;
  perform private.permit('purge', false);
  return v_count;
end
$$;
comment on function private.purge_deleted_organization_records(timestamptz, integer) is
  'Deletes the ledger and overage of organizations deleted longer ago than their retention (pg_cron, daily); returns how many it purged.';
grant execute on function private.purge_deleted_organization_records(timestamptz, integer) to service_role;

select cron.schedule('credits-expire', '* * * * *', 'select private.expire_credits()');
select cron.schedule('credits-renew-periods', '*/5 * * * *', 'select private.renew_credit_periods()');
select cron.schedule('credits-purge-idempotency-keys', '17 * * * *', 'select private.purge_credit_idempotency_keys()');
select cron.schedule('deleted-organizations-purge-records', '41 3 * * *', 'select private.purge_deleted_organization_records()');

