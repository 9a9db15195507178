-- =============================================================================================
-- Credits: restriping a pool without deleting stripe rows
-- =============================================================================================
-- set_credit_stripes deleted the rows of stripes past the new count. A call that found a
-- stripe drained by a gather keeps that row locked (an UPDATE that meets a row changed since
-- its snapshot locks it before its re-check fails) while it goes on to wait for the pool's
-- row; set_credit_stripes holds the pool's row and its delete waited for that call: a
-- deadlock, seen when tests/credits/striping.test.ts restripes a pool under racing consumers.
-- (Gathers never wait for such a row: it holds nothing by then.) Now the rows stay, empty,
-- and credit_balances.stripes alone says which stripes are in use: consume_credits and
-- private.draw_from_striped_pool take only stripes up to it, and a pool with stripes = 1 is
-- not striped whatever rows it has. The bodies are those of 20261201000990 (consume_credits)
-- and 20261201000980 otherwise.

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

create or replace function private.consume_credits(
  p_organization_id uuid,
  p_action_type text,
  p_quantity integer,
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
  -- private.caller_role(), inlined: calling a function with its own search_path costs this hot
  -- function a fifth of its throughput (the path is re-resolved after every switch).
  v_role text := case
    when current_setting('role', true) in ('anon', 'authenticated', 'service_role') then current_setting('role', true)
    else coalesce(nullif(auth.role(), ''), 'service_role')
  end;
  v_actor uuid := auth.uid();
  v_metadata jsonb := coalesce(p_metadata, '{}'::jsonb);
  v_pools text[];
  v_costs bigint[];
  v_hash text;
  v_result jsonb;
  -- Time-ordered, laid out as a version 7 UUID (the transaction's time in milliseconds, then
  -- random bits): the ledger's transaction_id index then grows at its right edge instead of
  -- taking each insert to a random page (and, after a checkpoint, a full-page image with it).
  v_tx_bytes bytea := overlay(uuid_send(gen_random_uuid())
                        placing substring(int8send((date_part('epoch', v_now) * 1000)::bigint) from 3) from 1 for 6);
  v_tx uuid := encode(set_byte(v_tx_bytes, 6, (get_byte(v_tx_bytes, 6) & 15) | 112), 'hex')::uuid;
  v_after bigint;
  v_threshold bigint;
  v_pool text;
  v_cost bigint;
  v_count integer;
  v_grant uuid;
  v_stripe integer;
  v_striped boolean;
begin
  -- Validate the input before touching anything. The metadata and key rules are those of
  -- private.check_metadata and private.check_idempotency_key, inlined.
  if p_organization_id is null then
    perform private.raise('invalid_organization', 'p_organization_id is required.');
  end if;
  if p_quantity is null or p_quantity < 0 or p_quantity > 1000000 then
    perform private.raise('invalid_quantity', 'p_quantity must be a whole number from 0 to 1000000.');
  end if;
  if jsonb_typeof(v_metadata) <> 'object' or octet_length(v_metadata::text) > 8192 then
    perform private.raise('invalid_metadata', 'p_metadata must be a JSON object of at most 8 KB.');
  end if;
  if p_idempotency_key is not null and p_idempotency_key !~ '^[A-Za-z0-9_.:-]{1,255}$' then
    perform private.raise('invalid_idempotency_key', 'An idempotency key is 1 to 255 letters, digits, and _ . : - characters.');
  end if;

  -- A retry with the same key gets the first call's result and is charged nothing. The insert
  -- makes a concurrent retry wait for the first call's commit, then see its key. A stored
  -- result is only shown to a caller allowed to charge the organization (the rule of
  -- private.authorize, inlined); a key inserted by anyone else goes away with the error that
  -- follows.
  if p_idempotency_key is not null then
    -- The key's lock first, the same lock consume_credits_batch takes for all its keys in key
    -- order before any pool: whoever holds a key's row holds its lock, so calls take keys
    -- before pools and keys in one order.
    perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('credit_key:' || p_organization_id::text || ':' || p_idempotency_key, 0));
    v_hash := md5(concat_ws('|', p_action_type, p_quantity, v_metadata::text));
    insert into private.credit_idempotency_keys (organization_id, key, request_hash)
    values (p_organization_id, p_idempotency_key, v_hash)
    on conflict do nothing;
    if not found then
      select k.result into v_result from private.credit_idempotency_keys k
      where k.organization_id = p_organization_id and k.key = p_idempotency_key and k.request_hash = v_hash
        and (v_role = 'service_role' or (v_role = 'authenticated' and exists (
              select 1 from public.organization_members m
              where m.organization_id = p_organization_id and m.user_id = v_actor)));
      if v_result is null then
        perform private.authorize(p_organization_id);
        perform private.raise('idempotency_key_reused', 'This idempotency key was used with different arguments.');
      end if;
      return v_result || '{"idempotent_replay": true}'::jsonb;
    end if;
  end if;

  -- The hot path. A plain update by key keeps the re-check cheap when it waited for a concurrent
  -- writer of the same row. When anything is not so, nothing is debited and a slower path below
  -- says why.
  if p_quantity > 0 then
    select count(*), min(c.pool_key), min(c.amount) * p_quantity into v_count, v_pool, v_cost
    from public.credit_action_costs c
    where c.action_key = p_action_type
      and exists (select 1 from public.credit_actions a where a.key = p_action_type and a.is_enabled);
    if v_count = 1 and (v_role = 'service_role' or (v_role = 'authenticated' and exists (
              select 1 from public.organization_members m
              where m.organization_id = p_organization_id and m.user_id = v_actor))) then
      with debit as (
        update public.credit_balances b
        set available = b.available - v_cost, head_remaining = b.head_remaining - v_cost
        where b.organization_id = p_organization_id and b.pool_key = v_pool
          and b.head_remaining >= v_cost and b.next_expiry_at > v_now and b.stripes = 1
        returning b.available, b.head_grant_id, b.low_threshold
      ), entry as (
        insert into public.credit_ledger (transaction_id, organization_id, pool_key, kind, amount, grant_id, action_key,
                                          quantity, actor_id, actor_role, metadata, created_at)
        select v_tx, p_organization_id, v_pool, 'consumption', -v_cost, debit.head_grant_id, p_action_type,
               p_quantity, v_actor, v_role, v_metadata, v_now
        from debit
      )
      select debit.available, debit.low_threshold into v_after, v_threshold from debit;
      if found then
        if v_after < v_threshold or v_after = 0 then
          perform private.notify_credit_crossing(p_organization_id, v_pool, v_after + v_cost, v_after, v_threshold);
        end if;
        v_result := jsonb_build_object('success', true, 'transaction_id', v_tx,
          'consumed', jsonb_build_object(v_pool, v_cost), 'remaining', jsonb_build_object(v_pool, v_after));
      else
        -- A striped pool (the update above skips its shared row without waiting for it) pays
        -- from one of its stripes: the first that can, in an order of this session's own (a
        -- hash of stripe and backend pid, so that concurrent sessions start on different
        -- stripes), passing over those another call is paying from. A stripe is taken with a
        -- try of its advisory lock, in a statement of its own, and then updated: a row lock
        -- (FOR UPDATE SKIP LOCKED, or an update meeting a row changed since its snapshot) is
        -- kept even when the row then fails the re-check (drained meanwhile), and this call
        -- would hold it while it waits for the shared row, which a gather holds while it waits
        -- for that stripe.
        select (select o.stripe from (
                  select c.stripe from public.credit_balance_stripes c
                  where c.organization_id = p_organization_id and c.pool_key = v_pool and c.stripe <= b.stripes
                    and c.remaining >= v_cost and c.expires_at > v_now
                  order by pg_catalog.hashint4(c.stripe + pg_catalog.pg_backend_pid())
                  offset 0  -- sorted first, then tried one by one
                ) o
                where pg_catalog.pg_try_advisory_xact_lock(
                  pg_catalog.hashtext('credit_stripe:' || p_organization_id::text || ':' || v_pool), o.stripe)
                limit 1),
               b.stripes > 1
        from public.credit_balances b
        -- Any grant of the pool past its expiry: no row, and the general path sweeps it first.
        where b.organization_id = p_organization_id and b.pool_key = v_pool and b.next_expiry_at > v_now
        into v_stripe, v_striped;
        if v_stripe is not null then
          -- v_after: the pool's total as this statement saw it, less the cost.
          with debit as (
            update public.credit_balance_stripes s
            set remaining = s.remaining - v_cost
            where s.organization_id = p_organization_id and s.pool_key = v_pool and s.stripe = v_stripe
              and s.remaining >= v_cost and s.expires_at > v_now
            returning s.grant_id
          ), entry as (
            insert into public.credit_ledger (transaction_id, organization_id, pool_key, kind, amount, grant_id, action_key,
                                              quantity, actor_id, actor_role, metadata, created_at)
            select v_tx, p_organization_id, v_pool, 'consumption', -v_cost, debit.grant_id, p_action_type,
                   p_quantity, v_actor, v_role, v_metadata, v_now
            from debit
          )
          select (select debit.grant_id from debit),
                 (select b.available from public.credit_balances b where b.organization_id = p_organization_id and b.pool_key = v_pool)
                 + (select sum(s.remaining) from public.credit_balance_stripes s
                    where s.organization_id = p_organization_id and s.pool_key = v_pool)::bigint - v_cost
          into v_grant, v_after;
        end if;
        if v_grant is null and v_striped then
          -- No stripe could pay: the shared row refills one, or pays itself (null: the general path decides).
          select d.grant_id, d.remaining into v_grant, v_after
          from private.draw_from_striped_pool(p_organization_id, v_pool, v_cost, v_now) d;
          if v_grant is not null then
            insert into public.credit_ledger (transaction_id, organization_id, pool_key, kind, amount, grant_id, action_key,
                                              quantity, actor_id, actor_role, metadata, created_at)
            values (v_tx, p_organization_id, v_pool, 'consumption', -v_cost, v_grant, p_action_type,
                    p_quantity, v_actor, v_role, v_metadata, v_now);
          end if;
        end if;
        -- No low or depleted event here: while a stripe holds credits the shared row keeps its
        -- floor (see draw_from_striped_pool), so the pool cannot cross its threshold this way.
        if v_grant is not null then
          v_result := jsonb_build_object('success', true, 'transaction_id', v_tx,
            'consumed', jsonb_build_object(v_pool, v_cost), 'remaining', jsonb_build_object(v_pool, v_after));
        end if;
      end if;
    end if;
  end if;

  if v_result is null then
    select array_agg(c.pool_key order by c.pool_key), array_agg(c.amount order by c.pool_key)
    into v_pools, v_costs
    from private.action_costs(p_action_type, greatest(p_quantity, 1)) c;
    if p_quantity > 0 and cardinality(v_pools) > 1 then
      v_result := private.consume_credits_multi_pool(p_organization_id, p_action_type, p_quantity, v_metadata,
        v_role, v_actor, v_tx, v_pools, v_costs, v_now);
    end if;
    if v_result is null then
      v_result := private.consume_credits_general(p_organization_id, p_action_type, p_quantity, v_metadata,
        v_role, v_actor, v_tx, v_pools, v_costs, v_now);
    end if;
  end if;

  if p_idempotency_key is not null then
    update private.credit_idempotency_keys set result = v_result
    where organization_id = p_organization_id and key = p_idempotency_key;
  end if;
  return v_result;
end
$$;

create or replace function private.draw_from_striped_pool(
  p_organization_id uuid, p_pool text, p_cost bigint, p_now timestamptz,
  out grant_id uuid, out remaining bigint
)
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_balance public.credit_balances;
  v_stripe public.credit_balance_stripes;
  v_number integer;
  v_floor bigint;
  v_available bigint;
  v_head bigint;
  v_slice bigint;
begin
  select * into v_balance from public.credit_balances b
  where b.organization_id = p_organization_id and b.pool_key = p_pool
  for update;
  if v_balance.stripes is null or v_balance.stripes = 1 or v_balance.head_grant_id is null
     or v_balance.next_expiry_at <= p_now then
    return;
  end if;
  -- What the shared row keeps while any stripe holds credits (see the top of the migration).
  v_floor := greatest(v_balance.low_threshold, 1);

  -- A stripe no other call is paying from (its advisory lock, as consume_credits takes it):
  -- the fullest one, read again once it is ours.
  select s.stripe into v_number from (
    select c.stripe from public.credit_balance_stripes c
    where c.organization_id = p_organization_id and c.pool_key = p_pool and c.stripe <= v_balance.stripes
    order by c.remaining desc, c.stripe
    offset 0
  ) s
  where pg_catalog.pg_try_advisory_xact_lock(
    pg_catalog.hashtext('credit_stripe:' || p_organization_id::text || ':' || p_pool), s.stripe)
  limit 1;
  if v_number is not null then
    select * into v_stripe from public.credit_balance_stripes s
    where s.organization_id = p_organization_id and s.pool_key = p_pool and s.stripe = v_number
    for update;
  end if;
  if v_stripe.stripe is not null and v_stripe.remaining >= p_cost and v_stripe.expires_at > p_now then
    -- Freed (or refilled) since the caller looked.
    update public.credit_balance_stripes s set remaining = s.remaining - p_cost
    where s.organization_id = p_organization_id and s.pool_key = p_pool and s.stripe = v_stripe.stripe;
    grant_id := v_stripe.grant_id;
  elsif v_stripe.stripe is not null and (v_stripe.remaining = 0 or v_stripe.grant_id = v_balance.head_grant_id) then
    -- Refill it: what is left in it (less than the cost) goes back to the head grant, and it
    -- gets a slice of the head grant, small enough that the shared row keeps most of it.
    v_available := v_balance.available + v_stripe.remaining;
    v_head := v_balance.head_remaining + v_stripe.remaining;
    v_slice := least(v_head, v_available - v_floor) / (2 * v_balance.stripes);
    if v_slice >= p_cost then
      update public.credit_balances b
      set available = v_available - v_slice, head_remaining = v_head - v_slice
      where b.organization_id = p_organization_id and b.pool_key = p_pool;
      update public.credit_balance_stripes s
      set grant_id = v_balance.head_grant_id, remaining = v_slice - p_cost,
          expires_at = (select g.expires_at from public.credit_grants g where g.id = v_balance.head_grant_id)
      where s.organization_id = p_organization_id and s.pool_key = p_pool and s.stripe = v_stripe.stripe;
      grant_id := v_balance.head_grant_id;
    end if;
  end if;

  -- Every stripe busy, or the slices too small: the shared row pays if it keeps its floor.
  if grant_id is null and v_balance.head_remaining >= p_cost and v_balance.available - p_cost >= v_floor then
    update public.credit_balances b
    set available = b.available - p_cost, head_remaining = b.head_remaining - p_cost
    where b.organization_id = p_organization_id and b.pool_key = p_pool;
    grant_id := v_balance.head_grant_id;
  end if;

  if grant_id is not null then
    select b.available + coalesce((select sum(s.remaining) from public.credit_balance_stripes s
                                   where s.organization_id = p_organization_id and s.pool_key = p_pool), 0)::bigint
    into remaining
    from public.credit_balances b
    where b.organization_id = p_organization_id and b.pool_key = p_pool;
  end if;
end
$$;

create or replace function private.set_credit_stripes(p_organization_id uuid, p_pool text, p_stripes integer)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_now timestamptz := now();
  v_pools text[];
begin
  perform private.require_service_role('Only the service role stripes credit pools.');
  if p_stripes is null or p_stripes < 1 or p_stripes > 64 then
    perform private.raise('invalid_stripes', 'A pool has 1 to 64 stripes (1: not striped).');
  end if;
  perform private.require_organization(p_organization_id);
  if not exists (select 1 from public.credit_pools p where p.key = p_pool) then
    perform private.raise('pool_not_found', format('No credit pool %L.', p_pool));
  end if;
  -- Gathers the current stripes (the pool's balance is all in the shared row after it). Rows
  -- of stripes past the new count stay, empty and unused (no call pays from or refills a
  -- stripe past credit_balances.stripes): deleting them would wait for calls that hold such a
  -- row while they wait for the pool's row, which this holds.
  v_pools := private.open_credit_pools(p_organization_id, array[p_pool], v_now);
  insert into public.credit_balance_stripes (organization_id, pool_key, stripe)
  select p_organization_id, p_pool, n from generate_series(1, p_stripes) as n
  where p_stripes > 1
  on conflict do nothing;
  update public.credit_balances b set stripes = p_stripes
  where b.organization_id = p_organization_id and b.pool_key = p_pool;
  perform private.close_credit_pools(p_organization_id, v_pools, v_now);
  return jsonb_build_object('pool', p_pool, 'stripes', p_stripes);
end
$$;

comment on table public.credit_balance_stripes is
  'Parts of a striped pool''s balance that concurrent calls pay from without taking turns on the pool''s credit_balances row (set_credit_stripes). Only stripes 1 to credit_balances.stripes are in use; rows past it stay empty.';
