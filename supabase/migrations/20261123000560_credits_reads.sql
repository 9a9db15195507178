-- =============================================================================================
-- Credits: reads (balances, usage, reconciliation, Studio views)
-- =============================================================================================

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

insert into private.error_codes (code, class, meaning) values
  ('invalid_range', 'invalid_input', 'p_from must be before p_to, at most 366 days apart.');

-- Exact balances at a time, without writing: expired grants are left out and the holds of
-- expired reservations count as available again, whether or not the sweep has run.
create function private.credit_balances_at(p_organization_id uuid, p_now timestamptz)
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
  perform private.authorize(p_organization_id);
  return (
  with live_grants as (
    select g.pool_key, g.id, g.kind, g.amount, g.expires_at,
           case when g.id = b.head_grant_id then b.head_remaining else g.remaining end as remaining
    from public.credit_grants g
    left join public.credit_balances b on b.organization_id = g.organization_id and b.pool_key = g.pool_key
    where g.organization_id = p_organization_id
  ), holds as (
    select h.pool, h.grant_id, h.amount, r.expires_at <= p_now as lapsed
    from public.credit_reservations r, jsonb_to_recordset(r.holds) as h (pool text, grant_id uuid, amount bigint)
    where r.organization_id = p_organization_id and r.status = 'active'
  ), per_pool as (
    select p.key,
      coalesce((select sum(remaining) from live_grants lg where lg.pool_key = p.key and lg.expires_at > p_now), 0)
      + coalesce((select sum(h.amount) from holds h join live_grants lg on lg.id = h.grant_id
                  where h.pool = p.key and h.lapsed and lg.expires_at > p_now), 0) as available,
      coalesce((select sum(h.amount) from holds h where h.pool = p.key and not h.lapsed), 0) as reserved,
      -- Refunds give back what was spent: they restore available, not the total granted.
      coalesce((select sum(amount) from live_grants lg where lg.pool_key = p.key and lg.expires_at > p_now and lg.kind <> 'refund'), 0) as total
    from public.credit_pools p
  )
  select coalesce(jsonb_object_agg(key, jsonb_build_object('available', available, 'reserved', reserved, 'total', total)), '{}'::jsonb)
  from per_pool);
end
$$;
comment on function private.credit_balances_at(uuid, timestamptz) is 'Exact balances of an organization at a time (get_credit_balances at now()).';
grant execute on function private.credit_balances_at(uuid, timestamptz) to authenticated, service_role;

create function public.get_credit_balances(p_organization_id uuid)
returns jsonb
language sql
stable
security invoker
set search_path = ''
as $$
  select private.credit_balances_at(p_organization_id, now())
$$;
comment on function public.get_credit_balances(uuid) is
  'Credits per pool: {"ai": {"available": 199, "reserved": 0, "total": 200}, ...}. total is what unexpired grants gave; expired credits and expired holds are never counted as spendable.';
grant execute on function public.get_credit_balances(uuid) to authenticated, service_role;

create function public.get_credit_usage(p_organization_id uuid, p_from timestamptz, p_to timestamptz)
returns table (day date, pool_key text, consumed bigint, refunded bigint)
language plpgsql
stable
security invoker
set search_path = ''
as $$
begin
  perform private.authorize(p_organization_id);
  if p_from is null or p_to is null or p_to <= p_from or p_to - p_from > interval '366 days' then
    perform private.raise('invalid_range', 'p_from must be before p_to, at most 366 days apart.');
  end if;
  return query
    select (l.created_at at time zone 'UTC')::date as day, l.pool_key,
           coalesce(-sum(l.amount) filter (where l.kind = 'consumption'), 0)::bigint as consumed,
           coalesce(sum(l.amount) filter (where l.kind = 'refund'), 0)::bigint as refunded
    from public.credit_ledger l
    where l.organization_id = p_organization_id and l.created_at >= p_from and l.created_at < p_to
      and l.kind in ('consumption', 'refund')
    group by 1, 2
    order by 1, 2;
end
$$;
comment on function public.get_credit_usage(uuid, timestamptz, timestamptz) is
  'Credits consumed and refunded per pool per UTC day in [p_from, p_to), for charts. Members and the service role.';
grant execute on function public.get_credit_usage(uuid, timestamptz, timestamptz) to authenticated, service_role;

-- Proves the balances match the ledger and the grants: one row per pool, ok = true when
-- available = sum(ledger) = sum(live grant remaining) and reserved = sum(active holds).
create function private.verify_credit_ledger(p_organization_id uuid)
returns table (pool_key text, available bigint, ledger_sum bigint, grants_remaining bigint, reserved bigint, holds_sum bigint, ok boolean)
language sql
stable
security definer
set search_path = ''
as $$
  select c.*, (c.available = c.ledger_sum and c.available = c.grants_remaining and c.reserved = c.holds_sum) as ok
  from (
    select b.pool_key, b.available,
      coalesce((select sum(amount) from public.credit_ledger l where l.organization_id = b.organization_id and l.pool_key = b.pool_key), 0)::bigint as ledger_sum,
      coalesce((select sum(case when g.id = b.head_grant_id then b.head_remaining else g.remaining end)
                from public.credit_grants g where g.organization_id = b.organization_id and g.pool_key = b.pool_key), 0)::bigint as grants_remaining,
      b.reserved,
      coalesce((select sum(h.amount) from public.credit_reservations r, jsonb_to_recordset(r.holds) as h (pool text, grant_id uuid, amount bigint)
                where r.organization_id = b.organization_id and r.status = 'active' and h.pool = b.pool_key), 0)::bigint as holds_sum
    from public.credit_balances b
    where b.organization_id = p_organization_id
  ) c
  order by c.pool_key
$$;
comment on function private.verify_credit_ledger(uuid) is 'Reconciles balances, ledger, grants and holds of an organization per pool.';
grant execute on function private.verify_credit_ledger(uuid) to service_role;

-- ---------------------------------------------------------------------------------------------
-- Studio: an organization's credits at a glance
-- ---------------------------------------------------------------------------------------------
create view public.credit_balances_overview
with (security_invoker = true)
as
select o.id as organization_id, o.name as organization_name, o.slug as organization_slug,
       op.plan_key, op.period_end, b.pool_key, b.available, b.reserved, b.low_threshold, b.next_expiry_at
from public.credit_balances b
join public.organizations o on o.id = b.organization_id
left join public.organization_plans op on op.organization_id = b.organization_id;
comment on view public.credit_balances_overview is 'Studio: every organization''s plan and balance per pool (as cached; get_credit_balances is exact at any time).';

create view public.credit_grant_balances
with (security_invoker = true)
as
select g.id, g.organization_id, g.pool_key, g.kind, g.amount,
       case when g.id = b.head_grant_id then b.head_remaining else g.remaining end as remaining,
       g.priority, g.expires_at, g.expired_at, g.source, g.created_at,
       g.id = b.head_grant_id as is_head
from public.credit_grants g
left join public.credit_balances b on b.organization_id = g.organization_id and b.pool_key = g.pool_key;
comment on view public.credit_grant_balances is 'Studio: grants with their live remaining credits (the head grant''s count lives in credit_balances).';

grant select on public.credit_balances_overview, public.credit_grant_balances to authenticated, service_role;
