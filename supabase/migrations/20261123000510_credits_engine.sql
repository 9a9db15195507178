-- =============================================================================================
-- Credits: the engine (locking pools, drawing from grants in order, the low-balance events)
-- =============================================================================================

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

-- Everything here is private and security definer; the RPCs of the later chapters call it. The
-- general path of any change to a pool: private.open_credit_pools, then work on grant rows, then
-- private.close_credit_pools (see the top of the credits tables chapter).

insert into private.error_codes (code, class, meaning) values
  ('invalid_amounts', 'invalid_input', 'Amounts are an object of pool keys to whole numbers, e.g. {"ai": 5}.'),
  ('invalid_metadata', 'invalid_input', 'Metadata is a JSON object of at most 8 KB.'),
  ('invalid_idempotency_key', 'invalid_input', 'An idempotency key is 1 to 255 letters, digits, and _ . : - characters.'),
  ('pool_not_found', 'not_found', 'No credit pool has this key.'),
  ('unknown_action', 'not_found', 'No metered action has this key.'),
  ('action_disabled', 'rule', 'The action is disabled.');

-- An idempotency key's format, once (consume_credits_rpc's hot path inlines it; a test proves
-- the two agree). Returns the key; null passes.
create function private.check_idempotency_key(p_key text)
returns text
language plpgsql
immutable
set search_path = ''
as $$
begin
  if p_key is not null and p_key !~ '^[A-Za-z0-9_.:-]{1,255}$' then
    perform private.raise('invalid_idempotency_key', 'An idempotency key is 1 to 255 letters, digits, and _ . : - characters.');
  end if;
  return p_key;
end
$$;
comment on function private.check_idempotency_key(text) is 'Validates an idempotency key (or null); raises invalid_idempotency_key.';
grant execute on function private.check_idempotency_key(text) to service_role;

-- Validates a per-pool amounts object like {"ai": 5, "whatsapp": 1}; returns it sorted as arrays.
create function private.parse_pool_amounts(p_amounts jsonb, p_allow_zero boolean default false)
returns table (pool_key text, amount bigint)
language plpgsql
stable
set search_path = ''
as $$
declare
  v_key text;
  v_value jsonb;
begin
  if p_amounts is null or jsonb_typeof(p_amounts) <> 'object' or p_amounts = '{}'::jsonb then
    perform private.raise('invalid_amounts', 'Amounts must be an object of pool keys to whole numbers, e.g. {"ai": 5}.');
  end if;
  for v_key, v_value in select * from jsonb_each(p_amounts) loop
    if not exists (select 1 from public.credit_pools where key = v_key) then
      perform private.raise('pool_not_found', format('No credit pool %L.', v_key));
    end if;
    if jsonb_typeof(v_value) <> 'number' or v_value::numeric <> trunc(v_value::numeric)
       or v_value::numeric < (case when p_allow_zero then 0 else 1 end) or v_value::numeric > 1000000000 then
      perform private.raise('invalid_amounts', format('The amount for %s must be a whole number from %s to 1000000000.', v_key, case when p_allow_zero then 0 else 1 end));
    end if;
  end loop;
  return query select e.key, e.value::bigint from jsonb_each_text(p_amounts) e order by e.key;
end
$$;
comment on function private.parse_pool_amounts(jsonb, boolean) is 'Validates {"pool": amount} and returns its rows in pool order; raises invalid_amounts or pool_not_found.';

-- Caller-supplied metadata is copied into ledger and reservation rows nobody can delete: one
-- rule for every function that accepts it. Returns it, null as {}.
create function private.check_metadata(p_metadata jsonb)
returns jsonb
language plpgsql
immutable
set search_path = ''
as $$
begin
  if p_metadata is null then
    return '{}'::jsonb;
  end if;
  if jsonb_typeof(p_metadata) <> 'object' or octet_length(p_metadata::text) > 8192 then
    perform private.raise('invalid_metadata', 'p_metadata must be a JSON object of at most 8 KB.');
  end if;
  return p_metadata;
end
$$;
comment on function private.check_metadata(jsonb) is 'Validates caller metadata: a JSON object of at most 8 KB; raises invalid_metadata.';
grant execute on function private.check_metadata(jsonb) to service_role;

-- What p_quantity units of an enabled action cost, one row per pool in pool order; raises
-- unknown_action or action_disabled. (consume_credits_rpc's hot path reads the catalogue
-- itself, to avoid the call.)
create function private.action_costs(p_action_type text, p_quantity integer)
returns table (pool_key text, amount bigint)
language plpgsql
stable
set search_path = ''
as $$
begin
  return query
    select c.pool_key, c.amount * p_quantity
    from public.credit_actions a join public.credit_action_costs c on c.action_key = a.key
    where a.key = p_action_type and a.is_enabled
    order by c.pool_key;
  if not found then
    if exists (select 1 from public.credit_actions where key = p_action_type) then
      perform private.raise('action_disabled', format('The action %L is disabled.', p_action_type));
    end if;
    perform private.raise('unknown_action', format('No action %L.', p_action_type));
  end if;
end
$$;
comment on function private.action_costs(text, integer) is 'The per-pool cost of an action; raises unknown_action or action_disabled.';

-- The draw order, once: priority (lower first), soonest expiry, granted before purchased, oldest.
-- The grants of an open pool that can be drawn from now, in that order (credit_grants_draw_order_idx
-- serves it). Callers keep the order with `with ordinality`.
create function private.grants_in_draw_order(p_organization_id uuid, p_pool text, p_now timestamptz)
returns table (id uuid, remaining bigint, expires_at timestamptz)
language sql
stable
security definer
set search_path = ''
as $$
  select g.id, g.remaining, g.expires_at from public.credit_grants g
  where g.organization_id = p_organization_id and g.pool_key = p_pool and g.remaining > 0 and g.expires_at > p_now
  order by g.priority, g.expires_at, (g.kind = 'purchase'), g.created_at, g.id
$$;
comment on function private.grants_in_draw_order(uuid, text, timestamptz) is
  'The spendable grants of a pool in draw order: priority, soonest expiry, granted before purchased, oldest.';

-- Locks the organization's balance rows of the given pools (in pool order, creating missing
-- rows), writes each head cache back to its grant, and gives back the holds of expired
-- reservations (whose pools are locked too, in the same order). Returns the pools locked.
-- After it, credit_grants.remaining is exact for these pools.
create function private.open_credit_pools(p_organization_id uuid, p_pools text[], p_now timestamptz)
returns text[]
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_pools text[];
  v_reservation record;
begin
  select coalesce(array_agg(distinct p order by p), '{}') into v_pools from (
    select unnest(p_pools) as p
    union
    select h.pool
    from public.credit_reservations r
    cross join lateral jsonb_to_recordset(r.holds) as h (pool text, grant_id uuid, amount bigint)
    where r.organization_id = p_organization_id and r.status = 'active' and r.expires_at <= p_now
  ) s;

  insert into public.credit_balances (organization_id, pool_key)
  select p_organization_id, p from unnest(v_pools) as p
  on conflict do nothing;

  perform 1 from public.credit_balances
  where organization_id = p_organization_id and pool_key = any (v_pools)
  order by pool_key
  for update;

  update public.credit_grants g
  set remaining = b.head_remaining
  from public.credit_balances b
  where b.organization_id = p_organization_id and b.pool_key = any (v_pools) and g.id = b.head_grant_id;
  update public.credit_balances
  set head_grant_id = null, head_remaining = 0
  where organization_id = p_organization_id and pool_key = any (v_pools);

  for v_reservation in
    select r.id from public.credit_reservations r
    where r.organization_id = p_organization_id and r.status = 'active' and r.expires_at <= p_now
    order by r.id
    for update
  loop
    -- Its pools may have been added after v_pools was computed; only release what is locked.
    if exists (
      select 1 from public.credit_reservations r, jsonb_to_recordset(r.holds) as h (pool text, grant_id uuid, amount bigint)
      where r.id = v_reservation.id and not (h.pool = any (v_pools))
    ) then
      continue;
    end if;
    perform private.release_holds(v_reservation.id, 'expired', p_now);
  end loop;
  return v_pools;
end
$$;
comment on function private.open_credit_pools(uuid, text[], timestamptz) is
  'Locks and prepares pools for a general-path change (see the top of the credits migration).';

-- Gives a reservation's holds back to their grants (ledger: release) and ends it.
create function private.release_holds(p_reservation_id uuid, p_status public.credit_reservation_status, p_now timestamptz)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_reservation public.credit_reservations;
  v_tx uuid := gen_random_uuid();
begin
  select * into v_reservation from public.credit_reservations where id = p_reservation_id;
  update public.credit_grants g
  set remaining = g.remaining + h.amount
  from (
    select x.grant_id, sum(x.amount) as amount
    from jsonb_to_recordset(v_reservation.holds) as x (pool text, grant_id uuid, amount bigint)
    group by x.grant_id
  ) h
  where g.id = h.grant_id;
  insert into public.credit_ledger (transaction_id, organization_id, pool_key, kind, amount, grant_id, action_key,
                                    reservation_id, actor_id, actor_role, created_at)
  select v_tx, v_reservation.organization_id, h.pool, 'release', h.amount, h.grant_id, v_reservation.action_key,
         v_reservation.id, auth.uid(), case when p_status = 'expired' then 'system' else private.caller_role() end, p_now
  from jsonb_to_recordset(v_reservation.holds) as h (pool text, grant_id uuid, amount bigint);
  update public.credit_reservations set status = p_status, settled_at = p_now where id = p_reservation_id;
  return v_reservation.amounts;
end
$$;
comment on function private.release_holds(uuid, public.credit_reservation_status, timestamptz) is
  'Returns a reservation''s held credits to their grants and ends it with the given status. Caller holds the pool locks.';

-- Draws p_amount credits of one pool from its grants in draw order. The pool must be open.
-- Returns the draws as [{"pool", "grant_id", "amount", "expires_at"}].
create function private.draw_from_grants(p_organization_id uuid, p_pool text, p_amount bigint, p_now timestamptz)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_need bigint := p_amount;
  v_take bigint;
  v_grant record;
  v_draws jsonb := '[]'::jsonb;
begin
  for v_grant in
    select g.id, g.remaining, g.expires_at
    from private.grants_in_draw_order(p_organization_id, p_pool, p_now) with ordinality as g
    order by g.ordinality
  loop
    exit when v_need = 0;
    v_take := least(v_grant.remaining, v_need);
    update public.credit_grants set remaining = remaining - v_take where id = v_grant.id;
    v_draws := v_draws || jsonb_build_object('pool', p_pool, 'grant_id', v_grant.id, 'amount', v_take, 'expires_at', v_grant.expires_at);
    v_need := v_need - v_take;
  end loop;
  if v_need > 0 then
    -- Callers check the balance first; reaching this is a bug, and it aborts the transaction.
    raise exception 'draw_from_grants: % credits short in pool % of %', v_need, p_pool, p_organization_id
      using errcode = 'XX000';
  end if;
  return v_draws;
end
$$;
comment on function private.draw_from_grants(uuid, text, bigint, timestamptz) is 'Takes credits from grants in draw order; the pool must be open and hold enough.';

-- The contract's answer when a pool lacks credits (a result, not an error).
create function private.insufficient_credits(p_pool text, p_required bigint, p_available bigint)
returns jsonb
language sql
stable
set search_path = ''
as $$
  select jsonb_build_object('success', false, 'error', 'insufficient_credits',
    'message', format('Insufficient %s credits', (select name from public.credit_pools where key = p_pool)),
    'pool', p_pool, 'required', p_required, 'available', p_available)
$$;
comment on function private.insufficient_credits(text, bigint, bigint) is 'The insufficient_credits result of consume_credits_rpc and reserve_credits.';

-- Credits an open pool can spend now.
create function private.pool_available(p_organization_id uuid, p_pool text, p_now timestamptz)
returns bigint
language sql
stable
security definer
set search_path = ''
as $$
  select coalesce(sum(remaining), 0)::bigint from public.credit_grants
  where organization_id = p_organization_id and pool_key = p_pool and remaining > 0 and expires_at > p_now
$$;
comment on function private.pool_available(uuid, text, timestamptz) is 'Spendable credits of an open pool (grant rows are exact while it is open).';

-- Sweeps expired grants, recomputes the balance rows and head caches of open pools, and
-- appends credits.low / credits.depleted when a pool crossed its threshold or hit zero.
create function private.close_credit_pools(p_organization_id uuid, p_pools text[], p_now timestamptz)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_tx uuid := gen_random_uuid();
  v_pool text;
  v_before bigint;
  v_after bigint;
  v_threshold bigint;
  v_head record;
begin
  with expired as (
    select id, pool_key, remaining from public.credit_grants
    where organization_id = p_organization_id and pool_key = any (p_pools) and remaining > 0 and expires_at <= p_now
    for update
  ), swept as (
    update public.credit_grants g set remaining = 0, expired_at = p_now
    from expired e where g.id = e.id
  )
  insert into public.credit_ledger (transaction_id, organization_id, pool_key, kind, amount, grant_id, actor_role, created_at)
  select v_tx, p_organization_id, e.pool_key, 'expiry', -e.remaining, e.id, 'system', p_now from expired e;

  foreach v_pool in array p_pools loop
    select available, low_threshold into v_before, v_threshold from public.credit_balances
    where organization_id = p_organization_id and pool_key = v_pool;
    v_after := private.pool_available(p_organization_id, v_pool, p_now);
    select g.id, g.remaining into v_head
    from private.grants_in_draw_order(p_organization_id, v_pool, p_now) with ordinality as g
    order by g.ordinality
    limit 1;

    update public.credit_balances b set
      available = v_after,
      reserved = coalesce((
        select sum(h.amount) from public.credit_reservations r, jsonb_to_recordset(r.holds) as h (pool text, grant_id uuid, amount bigint)
        where r.organization_id = p_organization_id and r.status = 'active' and h.pool = v_pool), 0),
      head_grant_id = v_head.id,
      head_remaining = coalesce(v_head.remaining, 0),
      next_expiry_at = coalesce((
        select min(expires_at) from public.credit_grants
        where organization_id = p_organization_id and pool_key = v_pool and remaining > 0), 'infinity')
    where b.organization_id = p_organization_id and b.pool_key = v_pool;

    perform private.notify_credit_crossing(p_organization_id, v_pool, v_before, v_after, v_threshold);
  end loop;
end
$$;
comment on function private.close_credit_pools(uuid, text[], timestamptz) is
  'Ends a general-path change: expires grants, recomputes balances and heads, emits low/depleted events.';

-- One event per crossing: below the low threshold, and at zero.
create function private.notify_credit_crossing(
  p_organization_id uuid, p_pool text, p_before bigint, p_after bigint, p_threshold bigint
)
returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
  if p_threshold > 0 and p_before >= p_threshold and p_after < p_threshold and p_after > 0 then
    perform private.append_domain_event(p_organization_id, 'credits.low',
      jsonb_build_object('pool', p_pool, 'available', p_after, 'threshold', p_threshold));
  end if;
  if p_before > 0 and p_after = 0 then
    perform private.append_domain_event(p_organization_id, 'credits.depleted',
      jsonb_build_object('pool', p_pool, 'available', 0));
  end if;
end
$$;
comment on function private.notify_credit_crossing(uuid, text, bigint, bigint, bigint) is
  'Appends credits.low when a pool falls below its threshold and credits.depleted when it reaches zero.';

-- Adds a grant to a pool: opens it, inserts the grant and its ledger entry, closes it.
create function private.add_credit_grant(
  p_organization_id uuid,
  p_pool text,
  p_kind public.credit_grant_kind,
  p_amount bigint,
  p_expires_at timestamptz,
  p_priority integer,
  p_source text,
  p_metadata jsonb,
  p_now timestamptz,
  p_entry_kind public.credit_entry_kind default 'grant',
  p_refund_of uuid default null,
  p_transaction_id uuid default gen_random_uuid()
)
returns uuid
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_grant_id uuid;
  v_pools text[] := private.open_credit_pools(p_organization_id, array[p_pool], p_now);
begin
  insert into public.credit_grants (organization_id, pool_key, kind, amount, remaining, priority, expires_at, source, granted_by, metadata, created_at)
  values (p_organization_id, p_pool, p_kind, p_amount, p_amount, p_priority, p_expires_at, p_source, auth.uid(), coalesce(p_metadata, '{}'::jsonb), p_now)
  returning id into v_grant_id;
  insert into public.credit_ledger (transaction_id, organization_id, pool_key, kind, amount, grant_id, refund_of, actor_id, actor_role, metadata, created_at)
  values (p_transaction_id, p_organization_id, p_pool, p_entry_kind, p_amount, v_grant_id, p_refund_of, auth.uid(),
          private.caller_role(), coalesce(p_metadata, '{}'::jsonb), p_now);
  perform private.close_credit_pools(p_organization_id, v_pools, p_now);
  return v_grant_id;
end
$$;
comment on function private.add_credit_grant(uuid, text, public.credit_grant_kind, bigint, timestamptz, integer, text, jsonb, timestamptz, public.credit_entry_kind, uuid, uuid) is
  'Puts credits into a pool as a grant, with its ledger entry.';

