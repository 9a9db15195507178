-- =============================================================================================
-- Credits: time-ordered transaction ids for consumptions
-- =============================================================================================
-- Every consumption's ledger row goes into credit_ledger_transaction_id_idx. With random
-- (version 4) ids each insert lands on a random leaf page of that index, and the first change
-- of a page after a checkpoint writes the whole page to the WAL: measured with a 1.5 million
-- row ledger, 8 clients for 5 s right after a checkpoint, 0.28 full-page images and 2,146 bytes
-- of WAL per call. With ids that start with the time (the layout of a version 7 UUID) the index
-- grows at its right edge: 0.05 full-page images and 866 bytes per call. consume_credits (single
-- calls, and every path it hands its id to) and the set path of consume_credits_batch make their
-- ids so now; the bodies are those of 20261201000980_credits_striped_pools.sql otherwise. The
-- ids stay unique (74 random bits each, as before 122) and opaque to callers.

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
                  where c.organization_id = p_organization_id and c.pool_key = v_pool
                    and c.remaining >= v_cost and c.expires_at > v_now
                    -- Any grant of the pool past its expiry: the general path sweeps it first.
                    and (select b.next_expiry_at from public.credit_balances b
                         where b.organization_id = p_organization_id and b.pool_key = v_pool) > v_now
                  order by pg_catalog.hashint4(c.stripe + pg_catalog.pg_backend_pid())
                  offset 0  -- sorted first, then tried one by one
                ) o
                where pg_catalog.pg_try_advisory_xact_lock(
                  pg_catalog.hashtext('credit_stripe:' || p_organization_id::text || ':' || v_pool), o.stripe)
                limit 1),
               exists (select 1 from public.credit_balance_stripes c
                       where c.organization_id = p_organization_id and c.pool_key = v_pool)
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

create or replace function private.consume_credits_set(p_organization_id uuid, p_items jsonb)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_now timestamptz := now();
  -- private.caller_role() and private.authorize's membership rule, inlined as consume_credits does.
  v_role text := case
    when current_setting('role', true) in ('anon', 'authenticated', 'service_role') then current_setting('role', true)
    else coalesce(nullif(auth.role(), ''), 'service_role')
  end;
  v_actor uuid := auth.uid();
  v_item jsonb;
  v_quantity integer;
  v_metadata jsonb;
  v_count integer;
  v_pool text;
  v_cost bigint;
  v_pools text[] := '{}';
  v_costs bigint[] := '{}';
  v_quantities integer[] := '{}';
  v_metadatas jsonb[] := '{}';
  v_txs uuid[] := '{}';
  v_ms bytea := substring(int8send((date_part('epoch', v_now) * 1000)::bigint) from 3);
  v_tx_bytes bytea;
  v_catalog jsonb := '{}';
  v_available jsonb := '{}';
  v_heads jsonb := '{}';
  v_thresholds jsonb := '{}';
  v_row record;
  v_results jsonb := '[]'::jsonb;
begin
  if not (v_role = 'service_role' or (v_role = 'authenticated' and exists (
            select 1 from public.organization_members m where m.organization_id = p_organization_id and m.user_id = v_actor))) then
    return null;
  end if;
  for v_item in select value from jsonb_array_elements(p_items) loop
    if jsonb_typeof(v_item) <> 'object' or jsonb_typeof(v_item -> 'action_type') is distinct from 'string'
       or coalesce(jsonb_typeof(v_item -> 'idempotency_key'), 'null') <> 'null' then
      return null;
    end if;
    if coalesce(jsonb_typeof(v_item -> 'quantity'), 'null') = 'null' then
      v_quantity := 1;
    elsif jsonb_typeof(v_item -> 'quantity') = 'number' and (v_item ->> 'quantity') ~ '^[1-9][0-9]{0,6}$'
          and (v_item ->> 'quantity')::integer <= 1000000 then
      v_quantity := (v_item ->> 'quantity')::integer;
    else
      return null;
    end if;
    v_metadata := coalesce(v_item -> 'metadata', '{}'::jsonb);  -- a JSON null is invalid_metadata: not this path
    if jsonb_typeof(v_metadata) <> 'object' or octet_length(v_metadata::text) > 8192 then
      return null;
    end if;
    -- The catalogue once per action of the batch.
    if not v_catalog ? (v_item ->> 'action_type') then
      select count(*), min(c.pool_key), min(c.amount) into v_count, v_pool, v_cost
      from public.credit_action_costs c
      where c.action_key = v_item ->> 'action_type'
        and exists (select 1 from public.credit_actions a where a.key = c.action_key and a.is_enabled);
      if v_count <> 1 then
        return null;
      end if;
      v_catalog := v_catalog || jsonb_build_object(v_item ->> 'action_type', jsonb_build_array(v_pool, v_cost));
    end if;
    v_pool := v_catalog -> (v_item ->> 'action_type') ->> 0;
    v_cost := (v_catalog -> (v_item ->> 'action_type') ->> 1)::bigint * v_quantity;
    v_pools := v_pools || v_pool;
    v_costs := v_costs || v_cost;
    v_quantities := v_quantities || v_quantity;
    v_metadatas := v_metadatas || v_metadata;
    -- Time-ordered transaction ids, as consume_credits makes them.
    v_tx_bytes := overlay(uuid_send(gen_random_uuid()) placing v_ms from 1 for 6);
    v_txs := v_txs || encode(set_byte(v_tx_bytes, 6, (get_byte(v_tx_bytes, 6) & 15) | 112), 'hex')::uuid;
  end loop;

  -- Every pool's head grant must cover the pool's whole share (the rows are locked already:
  -- lock_pools_of_actions), as the hot path requires of each call, and no pool is striped
  -- (its items go one by one, through its stripes).
  for v_row in
    select b.pool_key, b.available, b.head_grant_id, b.low_threshold,
           b.head_remaining >= t.total and b.next_expiry_at > v_now and b.stripes = 1 as covered, t.total
    from (select p.pool, sum(p.cost) as total from unnest(v_pools, v_costs) as p (pool, cost) group by p.pool) t
    left join public.credit_balances b on b.organization_id = p_organization_id and b.pool_key = t.pool
  loop
    if v_row.pool_key is null or not v_row.covered then
      return null;
    end if;
    v_available := v_available || jsonb_build_object(v_row.pool_key, v_row.available);
    v_heads := v_heads || jsonb_build_object(v_row.pool_key, v_row.head_grant_id);
    v_thresholds := v_thresholds || jsonb_build_object(v_row.pool_key, v_row.low_threshold);
  end loop;

  update public.credit_balances b
  set available = b.available - t.total, head_remaining = b.head_remaining - t.total
  from (select p.pool, sum(p.cost) as total from unnest(v_pools, v_costs) as p (pool, cost) group by p.pool) t
  where b.organization_id = p_organization_id and b.pool_key = t.pool;

  insert into public.credit_ledger (transaction_id, organization_id, pool_key, kind, amount, grant_id, action_key,
                                    quantity, actor_id, actor_role, metadata, created_at)
  select i.tx, p_organization_id, i.pool, 'consumption', -i.cost, (v_heads ->> i.pool)::uuid, p_items -> (i.n::integer - 1) ->> 'action_type',
         i.quantity, v_actor, v_role, i.metadata, v_now
  from unnest(v_txs, v_pools, v_costs, v_quantities, v_metadatas) with ordinality as i (tx, pool, cost, quantity, metadata, n)
  order by i.n;

  -- The results, and the low and depleted events, item after item as single calls would give
  -- them: each item's remaining balance is its pool's balance before the batch less the running
  -- sum of the pool's costs up to it. One aggregate, not an array grown item by item.
  select jsonb_agg(jsonb_build_object('success', true, 'transaction_id', r.tx, 'consumed', jsonb_build_object(r.pool, r.cost),
                                      'remaining', jsonb_build_object(r.pool, r.after)) order by r.n)
  into v_results
  from (select i.n, i.tx, i.pool, i.cost,
               (v_available ->> i.pool)::bigint - (sum(i.cost) over (partition by i.pool order by i.n))::bigint as after
        from unnest(v_txs, v_pools, v_costs) with ordinality as i (tx, pool, cost, n)) r;
  for v_row in
    select r.pool, r.after + r.cost as before, r.after, (v_thresholds ->> r.pool)::bigint as threshold
    from (select i.n, i.pool, i.cost,
                 (v_available ->> i.pool)::bigint - (sum(i.cost) over (partition by i.pool order by i.n))::bigint as after
          from unnest(v_pools, v_costs) with ordinality as i (pool, cost, n)) r
    where r.after < (v_thresholds ->> r.pool)::bigint or r.after = 0
    order by r.n
  loop
    perform private.notify_credit_crossing(p_organization_id, v_row.pool, v_row.before, v_row.after, v_row.threshold);
  end loop;
  return v_results;
end
$$;
