-- =============================================================================================
-- Credit accounts: overage, charged to the credit line
-- =============================================================================================

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

-- Where a plan allows overage on a pool and the organization has an active credit account,
-- consumption beyond the balance goes through: what is available is drawn, the rest is an
-- overage entry (credit_overages) priced at the plan's overage price and charged to the account
-- in the same transaction (source overage, keyed by the entry: charged exactly once). The credit
-- line is the overage cap: a charge past the available credit refuses the whole consumption.
-- Without an active account there is no overage. This replaces the plan's per-period
-- overage_cap, which is dropped.

insert into private.error_codes (code, class, meaning) values
  ('overage_needs_credit_account', 'rule', 'Usage beyond the balance needs an active credit account (the plan allows overage, the organization has no line of credit).');

alter table public.credit_plan_allocations
  add column overage_price_millis bigint not null default 0 check (overage_price_millis between 0 and 100000000);
comment on column public.credit_plan_allocations.overage_price_millis is
  'The price of one credit beyond the balance, in thousandths of a minor unit of the credit account''s currency (2000 = 2 cents); charged to the credit account.';
update public.credit_plan_allocations set overage_price_millis = case pool_key
  when 'ai' then 2000 when 'whatsapp' then 5000 when 'email' then 100 when 'sms' then 8000 else 0 end
where plan_key = 'premium';

-- The credit line caps overage now: the plan's cap goes (npm run gen regenerates the clients).
-- squawk-ignore ban-drop-column
alter table public.credit_plan_allocations drop column overage_cap;
delete from private.error_codes where code = 'overage_cap_exceeded';
comment on column public.credit_plan_allocations.allows_overage is
  'Whether usage beyond the balance is charged to the organization''s credit account (priced at overage_price_millis) instead of refused; needs an active credit account, whose available credit caps it.';

alter table public.credit_overages add column credit_transaction_id uuid;
alter table public.credit_overages add constraint credit_overages_credit_transaction_id_fkey
  foreign key (credit_transaction_id) references public.credit_account_transactions (id) on delete set null not valid;
-- NOT VALID skips only the rows already there, whose column is new and empty; every new row is checked.
comment on column public.credit_overages.credit_transaction_id is 'The credit account charge that billed it.';
-- squawk-ignore require-concurrent-index-creation
create index credit_overages_credit_transaction_id_idx on public.credit_overages (credit_transaction_id);

-- The overage price per credit of a pool for the organization, when usage beyond its balance may
-- be charged: its plan allows overage there and its credit account is active. Null otherwise.
create function private.overage_price(p_organization_id uuid, p_pool text)
returns bigint
language sql
stable
security definer
set search_path = ''
as $$
  select a.overage_price_millis
  from public.organization_plans op
  join public.credit_plan_allocations a on a.plan_key = op.plan_key and a.pool_key = p_pool and a.allows_overage
  join public.credit_accounts ca on ca.organization_id = op.organization_id and ca.status = 'active'
  where op.organization_id = p_organization_id
$$;
comment on function private.overage_price(uuid, text) is
  'The price (thousandths of a minor unit) of a credit beyond the balance, when the plan allows overage and the credit account is active; else null.';

-- Records an overage entry and charges it to the credit account, once (keyed by the entry). A
-- charge past the available credit raises credit_limit_exceeded, which rolls the usage back.
create function private.charge_overage(
  p_organization_id uuid, p_pool text, p_credits bigint, p_transaction_id uuid, p_reservation_id uuid, p_now timestamptz
)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_price bigint := private.overage_price(p_organization_id, p_pool);
  v_overage bigint;
  v_amount bigint;
  v_charge public.credit_account_transactions;
begin
  if v_price is null then
    perform private.raise('overage_needs_credit_account', format('%s %s credits beyond the balance need an active credit account.', p_credits, p_pool));
  end if;
  insert into public.credit_overages (organization_id, pool_key, amount, transaction_id, reservation_id, created_at, billed_at)
  values (p_organization_id, p_pool, p_credits, p_transaction_id, p_reservation_id, p_now, p_now)
  returning id into v_overage;
  -- Rounded up to the minor unit: a fraction of a cent is a cent.
  v_amount := (p_credits * v_price + 999) / 1000;
  if v_amount > 0 then
    v_charge := private.post_credit_transaction(p_organization_id, 'charge', v_amount,
      format('%s %s credits beyond the balance', p_credits, (select name from public.credit_pools where key = p_pool)),
      'overage', v_overage::text, 'overage:' || v_overage::text,
      jsonb_build_object('pool', p_pool, 'credits', p_credits, 'transaction_id', p_transaction_id, 'price_millis', v_price), p_now);
    update public.credit_overages set credit_transaction_id = v_charge.id where id = v_overage;
  end if;
end
$$;
comment on function private.charge_overage(uuid, text, bigint, uuid, uuid, timestamptz) is
  'Records an overage entry and charges it to the credit account once; raises overage_needs_credit_account or credit_limit_exceeded.';

-- ---------------------------------------------------------------------------------------------
-- consume_credits_rpc: the general path takes overage where it may
-- ---------------------------------------------------------------------------------------------
create or replace function private.consume_credits_general(
  p_organization_id uuid, p_action_type text, p_quantity integer, p_metadata jsonb,
  p_role text, p_actor uuid, p_tx uuid, p_pools text[], p_costs bigint[], p_now timestamptz
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_open text[];
  v_available bigint;
  v_shortfall bigint;
  v_draws jsonb;
  v_result jsonb;
  v_consumed jsonb := '{}'::jsonb;
  v_remaining jsonb := '{}'::jsonb;
  v_overage jsonb := '{}'::jsonb;
  v_drawn bigint[] := '{}';
begin
  perform private.authorize(p_organization_id);
  perform private.require_organization(p_organization_id);
  v_open := private.open_credit_pools(p_organization_id, p_pools, p_now);
  for i in 1 .. cardinality(p_pools) loop
    v_available := private.pool_available(p_organization_id, p_pools[i], p_now);
    v_shortfall := greatest(p_costs[i] - v_available, 0);
    -- Beyond the balance: refused, unless the plan allows overage there and a credit account is active.
    if v_shortfall > 0 and private.overage_price(p_organization_id, p_pools[i]) is null then
      v_result := private.insufficient_credits(p_pools[i], p_costs[i], v_available);
      exit;
    end if;
    v_drawn := v_drawn || (p_costs[i] - v_shortfall);
    v_remaining := v_remaining || jsonb_build_object(p_pools[i], v_available - (p_costs[i] - v_shortfall));
    v_consumed := v_consumed || jsonb_build_object(p_pools[i], p_costs[i]);
    if v_shortfall > 0 then
      v_overage := v_overage || jsonb_build_object(p_pools[i], v_shortfall);
    end if;
  end loop;

  if v_result is null and p_quantity = 0 then
    -- A dry run: would one unit succeed, and what would remain (and go on account).
    v_result := jsonb_build_object('success', true, 'dry_run', true, 'would_consume', v_consumed, 'remaining', v_remaining)
      || case when v_overage = '{}'::jsonb then '{}'::jsonb else jsonb_build_object('overage', v_overage) end;
  elsif v_result is null then
    for i in 1 .. cardinality(p_pools) loop
      if v_drawn[i] > 0 then
        v_draws := private.draw_from_grants(p_organization_id, p_pools[i], v_drawn[i], p_now);
        insert into public.credit_ledger (transaction_id, organization_id, pool_key, kind, amount, grant_id, action_key,
                                          quantity, actor_id, actor_role, metadata, created_at)
        select p_tx, p_organization_id, d.pool, 'consumption', -d.amount, d.grant_id, p_action_type,
               p_quantity, p_actor, p_role, p_metadata, p_now
        from jsonb_to_recordset(v_draws) as d (pool text, grant_id uuid, amount bigint);
      end if;
      if v_overage ? p_pools[i] then
        perform private.charge_overage(p_organization_id, p_pools[i], (v_overage ->> p_pools[i])::bigint, p_tx, null, p_now);
      end if;
    end loop;
    v_result := jsonb_build_object('success', true, 'transaction_id', p_tx, 'consumed', v_consumed, 'remaining', v_remaining)
      || case when v_overage = '{}'::jsonb then '{}'::jsonb else jsonb_build_object('overage', v_overage) end;
  elsif p_quantity = 0 then
    v_result := v_result || '{"dry_run": true}'::jsonb;
  end if;
  perform private.close_credit_pools(p_organization_id, v_open, p_now);
  return v_result;
end
$$;
comment on function private.consume_credits_general(uuid, text, integer, jsonb, text, uuid, uuid, text[], bigint[], timestamptz) is
  'consume_credits_rpc through the general path: sweeps, draws over several grants, dry runs, insufficient credits, overage on account.';

-- ---------------------------------------------------------------------------------------------
-- commit_reservation: beyond the hold and the balance, overage on account
-- ---------------------------------------------------------------------------------------------
create or replace function private.commit_reservation(p_reservation_id uuid, p_amounts jsonb)
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
  v_allows boolean;
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
      -- from what is available (as a direct consumption would), and the rest is overage charged
      -- to the credit account, within its available credit.
      select a.allows_overage into v_allows
      from public.organization_plans op
      join public.credit_plan_allocations a on a.plan_key = op.plan_key and a.pool_key = v_pool.pool
      where op.organization_id = v_reservation.organization_id;
      if not coalesce(v_allows, false) then
        perform private.raise('exceeds_reservation', format('%s %s credits used but %s held; the plan allows no overage.', v_pool.amount, v_pool.pool, v_held));
      end if;
      v_available := private.pool_available(v_reservation.organization_id, v_pool.pool, v_now);
      if least(v_available, v_excess) > 0 then
        v_draws := private.draw_from_grants(v_reservation.organization_id, v_pool.pool, least(v_available, v_excess), v_now);
        insert into public.credit_ledger (transaction_id, organization_id, pool_key, kind, amount, grant_id, action_key,
                                          reservation_id, actor_id, actor_role, metadata, created_at)
        select v_tx, v_reservation.organization_id, d.pool, 'consumption', -d.amount, d.grant_id, v_reservation.action_key,
               v_reservation.id, auth.uid(), v_role, v_reservation.metadata, v_now
        from jsonb_to_recordset(v_draws) as d (pool text, grant_id uuid, amount bigint);
      end if;
      if v_excess > v_available then
        perform private.charge_overage(v_reservation.organization_id, v_pool.pool, v_excess - v_available, v_tx, v_reservation.id, v_now);
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
comment on function public.commit_reservation(uuid, jsonb) is
  'Charges what a reservation actually used (per-pool amounts; all held when omitted) and frees the rest. More than held is refused (exceeds_reservation) unless the plan allows overage: then the excess is drawn from available credits and the rest charged to the credit account as overage, within its available credit. Errors: reservation_not_found, reservation_not_active, invalid_amounts, exceeds_reservation, overage_needs_credit_account, credit_limit_exceeded.';
