-- =============================================================================================
-- Credits: the set path's results in one aggregate
-- =============================================================================================
-- private.consume_credits_set built its answer by appending to a JSON array item by item,
-- copying the growing array each time (quadratic in the batch), and walked the items in
-- plpgsql for the low-balance events. Now one aggregate with a running sum per pool builds the
-- results, and only the items whose balance ends below the threshold or at zero are walked.
-- The body is that of 20261201000960_credits_batch_set_based.sql otherwise.

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

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
    v_txs := v_txs || gen_random_uuid();
  end loop;

  -- Every pool's head grant must cover the pool's whole share (the rows are locked already:
  -- lock_pools_of_actions), as the hot path requires of each call.
  for v_row in
    select b.pool_key, b.available, b.head_grant_id, b.low_threshold,
           b.head_remaining >= t.total and b.next_expiry_at > v_now as covered, t.total
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
