-- =============================================================================================
-- Credits: reservations (hold, commit, release)
-- =============================================================================================

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

insert into private.error_codes (code, class, meaning) values
  ('invalid_ttl', 'invalid_input', 'A reservation lasts 1 second to 24 hours.'),
  ('reservation_not_found', 'not_found', 'No reservation has this id.'),
  ('reservation_not_active', 'conflict', 'The reservation was committed, released or expired already.'),
  ('exceeds_reservation', 'rule', 'More was used than held, and the plan allows no overage.'),
  ('overage_cap_exceeded', 'rule', 'The commit would take the pool''s overage past the plan''s cap for the period.');

create function private.reserve_credits(
  p_organization_id uuid,
  p_action_type text,
  p_amounts jsonb,
  p_quantity integer,
  p_ttl interval,
  p_idempotency_key text,
  p_metadata jsonb
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_now timestamptz := now();
  v_role text := private.authorize(p_organization_id);
  v_amounts jsonb;
  v_existing public.credit_reservations;
  v_open text[];
  v_need record;
  v_available bigint;
  v_holds jsonb := '[]'::jsonb;
  v_id uuid := gen_random_uuid();
  v_tx uuid := gen_random_uuid();
  v_result jsonb;
begin
  if p_ttl is null or p_ttl < interval '1 second' or p_ttl > interval '24 hours' then
    perform private.raise('invalid_ttl', 'A reservation lasts 1 second to 24 hours.');
  end if;
  perform private.check_idempotency_key(p_idempotency_key);
  perform private.check_metadata(p_metadata);
  if (p_action_type is null) = (p_amounts is null) then
    perform private.raise('invalid_amounts', 'Give either an action or per-pool amounts.');
  end if;
  if p_action_type is not null then
    if p_quantity is null or p_quantity < 1 or p_quantity > 1000000 then
      perform private.raise('invalid_quantity', 'p_quantity must be from 1 to 1000000.');
    end if;
    select jsonb_object_agg(c.pool_key, c.amount) into v_amounts from private.action_costs(p_action_type, p_quantity) c;
  else
    select jsonb_object_agg(pool_key, amount) into v_amounts from private.parse_pool_amounts(p_amounts);
  end if;
  perform private.require_organization(p_organization_id);

  v_open := private.open_credit_pools(p_organization_id, array(select jsonb_object_keys(v_amounts)), v_now);
  -- Looked up under the pool locks, so a concurrent retry with the same key waits for the
  -- first reserve to commit and then finds its reservation.
  if p_idempotency_key is not null then
    select * into v_existing from public.credit_reservations
    where organization_id = p_organization_id and idempotency_key = p_idempotency_key;
    if found then
      if v_existing.amounts <> v_amounts or v_existing.action_key is distinct from p_action_type then
        perform private.raise('idempotency_key_reused', 'This idempotency key was used for another reservation.');
      end if;
      perform private.close_credit_pools(p_organization_id, v_open, v_now);
      return jsonb_build_object('success', true, 'reservation_id', v_existing.id, 'status', v_existing.status,
        'held', v_existing.amounts, 'expires_at', v_existing.expires_at, 'idempotent_replay', true);
    end if;
  end if;
  -- Every pool is checked before any is drawn from: all or nothing.
  for v_need in select key as pool, value::bigint as amount from jsonb_each_text(v_amounts) order by key loop
    v_available := private.pool_available(p_organization_id, v_need.pool, v_now);
    if v_available < v_need.amount then
      v_result := private.insufficient_credits(v_need.pool, v_need.amount, v_available);
      perform private.close_credit_pools(p_organization_id, v_open, v_now);
      return v_result;
    end if;
  end loop;
  for v_need in select key as pool, value::bigint as amount from jsonb_each_text(v_amounts) order by key loop
    v_holds := v_holds || private.draw_from_grants(p_organization_id, v_need.pool, v_need.amount, v_now);
  end loop;

  insert into public.credit_reservations (id, organization_id, action_key, amounts, holds, idempotency_key, expires_at,
                                          created_by, actor_role, metadata, created_at)
  values (v_id, p_organization_id, p_action_type, v_amounts, v_holds, p_idempotency_key, v_now + p_ttl,
          auth.uid(), v_role, coalesce(p_metadata, '{}'::jsonb), v_now);
  insert into public.credit_ledger (transaction_id, organization_id, pool_key, kind, amount, grant_id, action_key, quantity,
                                    reservation_id, actor_id, actor_role, metadata, created_at)
  select v_tx, p_organization_id, h.pool, 'hold', -h.amount, h.grant_id, p_action_type, p_quantity, v_id, auth.uid(), v_role,
         coalesce(p_metadata, '{}'::jsonb), v_now
  from jsonb_to_recordset(v_holds) as h (pool text, grant_id uuid, amount bigint);
  perform private.close_credit_pools(p_organization_id, v_open, v_now);

  return jsonb_build_object('success', true, 'reservation_id', v_id, 'status', 'active', 'held', v_amounts, 'expires_at', v_now + p_ttl);
end
$$;
comment on function private.reserve_credits(uuid, text, jsonb, integer, interval, text, jsonb) is 'The body of reserve_credits.';
grant execute on function private.reserve_credits(uuid, text, jsonb, integer, interval, text, jsonb) to authenticated, service_role;

create function public.reserve_credits(
  p_organization_id uuid,
  p_action_type text default null,
  p_amounts jsonb default null,
  p_quantity integer default 1,
  p_ttl interval default interval '15 minutes',
  p_idempotency_key text default null,
  p_metadata jsonb default '{}'::jsonb
)
returns jsonb
language sql
security invoker
set search_path = ''
as $$
  select private.reserve_credits(p_organization_id, p_action_type, p_amounts, p_quantity, p_ttl, p_idempotency_key, p_metadata)
$$;
comment on function public.reserve_credits(uuid, text, jsonb, integer, interval, text, jsonb) is
  'Holds credits (an action''s cost, or per-pool amounts like {"ai": 20}) for p_ttl so nobody else can spend them. Returns {success, reservation_id, held, expires_at} or the insufficient_credits result. A retry with the same key returns the same reservation.';
grant execute on function public.reserve_credits(uuid, text, jsonb, integer, interval, text, jsonb) to authenticated, service_role;

-- Opens the pools of a reservation and locks it; raises unless it is still active. Returns the
-- pools opened.
create function private.lock_active_reservation(p_reservation_id uuid, p_now timestamptz)
returns text[]
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_org uuid;
  v_amounts jsonb;
  v_pools text[];
  v_status public.credit_reservation_status;
begin
  select organization_id, amounts into v_org, v_amounts from public.credit_reservations where id = p_reservation_id;
  if v_org is null then
    perform private.raise('reservation_not_found', 'No reservation has this id.');
  end if;
  perform private.authorize(v_org);
  -- Pools first, then the reservation row: the order open_credit_pools uses.
  v_pools := private.open_credit_pools(v_org, array(select jsonb_object_keys(v_amounts)), p_now);
  select status into v_status from public.credit_reservations where id = p_reservation_id for update;
  if v_status <> 'active' then
    perform private.raise('reservation_not_active', format('The reservation is %s.', v_status));
  end if;
  return v_pools;
end
$$;
comment on function private.lock_active_reservation(uuid, timestamptz) is 'Locks an active reservation and its pools for commit or release.';

create function private.commit_reservation(p_reservation_id uuid, p_amounts jsonb)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_now timestamptz := now();
  v_reservation public.credit_reservations;
  v_pools text[];
  v_role text := private.caller_role();
  v_tx uuid := gen_random_uuid();
  v_actual jsonb;
  v_pool record;
  v_held bigint;
  v_left bigint;
  v_hold record;
  v_take bigint;
  v_excess bigint;
  v_available bigint;
  v_draws jsonb;
  v_overage jsonb := '{}'::jsonb;
  v_terms record;
begin
  v_pools := private.lock_active_reservation(p_reservation_id, v_now);
  select * into v_reservation from public.credit_reservations where id = p_reservation_id;
  if p_amounts is null then
    v_actual := v_reservation.amounts;
  else
    select jsonb_object_agg(pool_key, amount) into v_actual from private.parse_pool_amounts(p_amounts, true);
    if exists (select 1 from jsonb_object_keys(v_actual) k where not v_reservation.amounts ? k) then
      perform private.raise('invalid_amounts', 'Commit only pools the reservation holds.');
    end if;
  end if;

  -- Give every hold back, then charge what was used from the same grants: a grant that
  -- expired during the hold still pays for work done while it was held.
  perform private.release_holds(v_reservation.id, 'committed', v_now);
  for v_pool in select key as pool, value::bigint as amount from jsonb_each_text(v_actual) order by key loop
    v_held := coalesce((v_reservation.amounts ->> v_pool.pool)::bigint, 0);
    v_left := least(v_pool.amount, v_held);
    for v_hold in
      select h.grant_id, h.amount from jsonb_to_recordset(v_reservation.holds) as h (pool text, grant_id uuid, amount bigint)
      where h.pool = v_pool.pool
    loop
      exit when v_left = 0;
      v_take := least(v_left, v_hold.amount);
      update public.credit_grants set remaining = remaining - v_take where id = v_hold.grant_id;
      insert into public.credit_ledger (transaction_id, organization_id, pool_key, kind, amount, grant_id, action_key,
                                        reservation_id, actor_id, actor_role, metadata, created_at)
      values (v_tx, v_reservation.organization_id, v_pool.pool, 'consumption', -v_take, v_hold.grant_id, v_reservation.action_key,
              v_reservation.id, auth.uid(), v_role, v_reservation.metadata, v_now);
      v_left := v_left - v_take;
    end loop;

    v_excess := v_pool.amount - v_held;
    if v_excess > 0 then
      -- Used more than held: refused unless the plan allows overage; then the excess comes
      -- from what is available (as a direct consumption would), and what is not is recorded as
      -- overage for billing, up to the plan's cap per pool and period.
      select a.allows_overage, a.overage_cap, op.period_start into v_terms
      from public.organization_plans op
      join public.credit_plan_allocations a on a.plan_key = op.plan_key and a.pool_key = v_pool.pool
      where op.organization_id = v_reservation.organization_id;
      if not coalesce(v_terms.allows_overage, false) then
        perform private.raise('exceeds_reservation', format('%s %s credits used but %s held; the plan allows no overage.', v_pool.amount, v_pool.pool, v_held));
      end if;
      v_available := private.pool_available(v_reservation.organization_id, v_pool.pool, v_now);
      if v_excess > v_available and v_excess - v_available + coalesce((
           select sum(o.amount) from public.credit_overages o
           where o.organization_id = v_reservation.organization_id and o.pool_key = v_pool.pool
             and o.created_at >= v_terms.period_start), 0) > v_terms.overage_cap then
        perform private.raise('overage_cap_exceeded', format('This would take %s overage past the plan''s cap of %s per period.', v_pool.pool, v_terms.overage_cap));
      end if;
      if least(v_available, v_excess) > 0 then
        v_draws := private.draw_from_grants(v_reservation.organization_id, v_pool.pool, least(v_available, v_excess), v_now);
        insert into public.credit_ledger (transaction_id, organization_id, pool_key, kind, amount, grant_id, action_key,
                                          reservation_id, actor_id, actor_role, metadata, created_at)
        select v_tx, v_reservation.organization_id, d.pool, 'consumption', -d.amount, d.grant_id, v_reservation.action_key,
               v_reservation.id, auth.uid(), v_role, v_reservation.metadata, v_now
        from jsonb_to_recordset(v_draws) as d (pool text, grant_id uuid, amount bigint);
      end if;
      if v_excess > v_available then
        insert into public.credit_overages (organization_id, pool_key, amount, transaction_id, reservation_id, created_at)
        values (v_reservation.organization_id, v_pool.pool, v_excess - v_available, v_tx, v_reservation.id, v_now);
        v_overage := v_overage || jsonb_build_object(v_pool.pool, v_excess - v_available);
      end if;
    end if;
  end loop;

  update public.credit_reservations set charged = v_actual where id = v_reservation.id;
  perform private.close_credit_pools(v_reservation.organization_id, v_pools, v_now);
  return jsonb_build_object('success', true, 'reservation_id', v_reservation.id, 'transaction_id', v_tx,
    'consumed', v_actual, 'released', (
      select coalesce(jsonb_object_agg(k, greatest((v_reservation.amounts ->> k)::bigint - coalesce((v_actual ->> k)::bigint, 0), 0)), '{}'::jsonb)
      from jsonb_object_keys(v_reservation.amounts) k),
    'overage', v_overage);
end
$$;
comment on function private.commit_reservation(uuid, jsonb) is 'The body of commit_reservation.';
grant execute on function private.commit_reservation(uuid, jsonb) to authenticated, service_role;

create function public.commit_reservation(p_reservation_id uuid, p_amounts jsonb default null)
returns jsonb
language sql
security invoker
set search_path = ''
as $$
  select private.commit_reservation(p_reservation_id, p_amounts)
$$;
comment on function public.commit_reservation(uuid, jsonb) is
  'Charges what a reservation actually used (per-pool amounts; all held when omitted) and frees the rest. More than held is refused (exceeds_reservation) unless the plan allows overage: then the excess is drawn from available credits and the rest recorded in credit_overages, up to the plan''s overage_cap per period. Errors: reservation_not_found, reservation_not_active, invalid_amounts, exceeds_reservation, overage_cap_exceeded.';
grant execute on function public.commit_reservation(uuid, jsonb) to authenticated, service_role;

create function private.release_reservation(p_reservation_id uuid)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_now timestamptz := now();
  v_reservation public.credit_reservations;
  v_pools text[];
  v_released jsonb;
begin
  v_pools := private.lock_active_reservation(p_reservation_id, v_now);
  select * into v_reservation from public.credit_reservations where id = p_reservation_id;
  v_released := private.release_holds(v_reservation.id, 'released', v_now);
  perform private.close_credit_pools(v_reservation.organization_id, v_pools, v_now);
  return jsonb_build_object('success', true, 'reservation_id', v_reservation.id, 'released', v_released);
end
$$;
comment on function private.release_reservation(uuid) is 'The body of release_reservation.';
grant execute on function private.release_reservation(uuid) to authenticated, service_role;

create function public.release_reservation(p_reservation_id uuid)
returns jsonb
language sql
security invoker
set search_path = ''
as $$
  select private.release_reservation(p_reservation_id)
$$;
comment on function public.release_reservation(uuid) is 'Frees all credits a reservation holds. Errors: reservation_not_found, reservation_not_active.';
grant execute on function public.release_reservation(uuid) to authenticated, service_role;

