-- =============================================================================================
-- Credits: consume_credits_rpc and batches
-- =============================================================================================

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

-- One consumption takes the first of three paths that applies:
--   the hot path   a one-pool action whose head grant covers the cost, nothing expired: one
--                  statement debits the balance row and appends the ledger entry
--                  (private.consume_credits itself, with no nested calls);
--   multi-pool     several pools whose head grants all cover their cost: their rows locked in
--                  pool order, checked, then debited in one statement
--                  (private.consume_credits_multi_pool);
--   general        anything else: several grants, expired credits to sweep, a dry run, too few
--                  credits, or a caller who may not charge the organization
--                  (private.consume_credits_general, through open/close_credit_pools).
-- The hot and multi-pool paths inline the rule of private.authorize (a call of a function with
-- its own search_path costs them dearly); tests/db/credits/20-inlined-rules.test.sql proves the copies
-- agree with it for every role.

insert into private.error_codes (code, class, meaning) values
  ('invalid_quantity', 'invalid_input', 'p_quantity must be a whole number from 0 to 1000000.'),
  ('invalid_items', 'invalid_input', 'p_items must be an array of 1 to 100 objects.'),
  ('idempotency_key_reused', 'conflict', 'The idempotency key was used with different arguments.');

create function private.consume_credits_multi_pool(
  p_organization_id uuid, p_action_type text, p_quantity integer, p_metadata jsonb,
  p_role text, p_actor uuid, p_tx uuid, p_pools text[], p_costs bigint[], p_now timestamptz
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_covered integer;
  v_debit record;
  v_consumed jsonb := '{}'::jsonb;
  v_remaining jsonb := '{}'::jsonb;
begin
  -- Lock in pool order (never a deadlock), check every pool, then debit them all in one
  -- statement, so a lacking pool leaves the others untouched. Null: take the general path.
  select count(*) filter (where covered) into v_covered from (
    select b.head_remaining >= n.cost and b.next_expiry_at > p_now as covered
    from public.credit_balances b join unnest(p_pools, p_costs) as n (pool_key, cost) on n.pool_key = b.pool_key
    where b.organization_id = p_organization_id
      and (p_role = 'service_role' or (p_role = 'authenticated' and exists (
            select 1 from public.organization_members m
            where m.organization_id = p_organization_id and m.user_id = p_actor)))
    order by b.pool_key
    for update of b
  ) locked;
  if v_covered < cardinality(p_pools) then
    return null;
  end if;
  for v_debit in
    with debit as (
      update public.credit_balances b
      set available = b.available - n.cost, head_remaining = b.head_remaining - n.cost
      from unnest(p_pools, p_costs) as n (pool_key, cost)
      where b.organization_id = p_organization_id and b.pool_key = n.pool_key
      returning b.pool_key, b.available, b.head_grant_id, b.low_threshold, n.cost
    ), entry as (
      insert into public.credit_ledger (transaction_id, organization_id, pool_key, kind, amount, grant_id, action_key,
                                        quantity, actor_id, actor_role, metadata, created_at)
      select p_tx, p_organization_id, debit.pool_key, 'consumption', -debit.cost, debit.head_grant_id, p_action_type,
             p_quantity, p_actor, p_role, p_metadata, p_now
      from debit
    )
    select * from debit order by pool_key
  loop
    if v_debit.available < v_debit.low_threshold or v_debit.available = 0 then
      perform private.notify_credit_crossing(p_organization_id, v_debit.pool_key, v_debit.available + v_debit.cost,
                                             v_debit.available, v_debit.low_threshold);
    end if;
    v_consumed := v_consumed || jsonb_build_object(v_debit.pool_key, v_debit.cost);
    v_remaining := v_remaining || jsonb_build_object(v_debit.pool_key, v_debit.available);
  end loop;
  return jsonb_build_object('success', true, 'transaction_id', p_tx, 'consumed', v_consumed, 'remaining', v_remaining);
end
$$;
comment on function private.consume_credits_multi_pool(uuid, text, integer, jsonb, text, uuid, uuid, text[], bigint[], timestamptz) is
  'consume_credits_rpc for several pools whose head grants cover the cost; null when the general path must decide.';

create function private.consume_credits_general(
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
  v_draws jsonb;
  v_result jsonb;
  v_consumed jsonb := '{}'::jsonb;
  v_remaining jsonb := '{}'::jsonb;
begin
  perform private.authorize(p_organization_id);
  perform private.require_organization(p_organization_id);
  v_open := private.open_credit_pools(p_organization_id, p_pools, p_now);
  for i in 1 .. cardinality(p_pools) loop
    v_available := private.pool_available(p_organization_id, p_pools[i], p_now);
    if v_available < p_costs[i] then
      v_result := private.insufficient_credits(p_pools[i], p_costs[i], v_available);
      exit;
    end if;
    v_remaining := v_remaining || jsonb_build_object(p_pools[i], v_available - p_costs[i]);
    v_consumed := v_consumed || jsonb_build_object(p_pools[i], p_costs[i]);
  end loop;

  if v_result is null and p_quantity = 0 then
    -- A dry run: would one unit succeed, and what would remain.
    v_result := jsonb_build_object('success', true, 'dry_run', true, 'would_consume', v_consumed, 'remaining', v_remaining);
  elsif v_result is null then
    for i in 1 .. cardinality(p_pools) loop
      v_draws := private.draw_from_grants(p_organization_id, p_pools[i], p_costs[i], p_now);
      insert into public.credit_ledger (transaction_id, organization_id, pool_key, kind, amount, grant_id, action_key,
                                        quantity, actor_id, actor_role, metadata, created_at)
      select p_tx, p_organization_id, d.pool, 'consumption', -d.amount, d.grant_id, p_action_type,
             p_quantity, p_actor, p_role, p_metadata, p_now
      from jsonb_to_recordset(v_draws) as d (pool text, grant_id uuid, amount bigint);
    end loop;
    v_result := jsonb_build_object('success', true, 'transaction_id', p_tx, 'consumed', v_consumed, 'remaining', v_remaining);
  elsif p_quantity = 0 then
    v_result := v_result || '{"dry_run": true}'::jsonb;
  end if;
  perform private.close_credit_pools(p_organization_id, v_open, p_now);
  return v_result;
end
$$;
comment on function private.consume_credits_general(uuid, text, integer, jsonb, text, uuid, uuid, text[], bigint[], timestamptz) is
  'consume_credits_rpc through the general path: sweeps, draws over several grants, dry runs, insufficient credits.';

create function private.consume_credits(
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
  v_tx uuid := gen_random_uuid();
  v_after bigint;
  v_threshold bigint;
  v_pool text;
  v_cost bigint;
  v_count integer;
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
          and b.head_remaining >= v_cost and b.next_expiry_at > v_now
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
comment on function private.consume_credits(uuid, text, integer, text, jsonb) is 'The body of consume_credits_rpc.';
grant execute on function private.consume_credits(uuid, text, integer, text, jsonb) to authenticated, service_role;

create function public.consume_credits_rpc(
  p_organization_id uuid,
  p_action_type text,
  p_quantity integer default 1,
  p_idempotency_key text default null,
  p_metadata jsonb default '{}'::jsonb
)
returns jsonb
language plpgsql
security invoker
set search_path = ''
as $$
begin
  -- plpgsql, not sql: a SQL function that cannot be inlined is parsed and planned on every
  -- call, a cost this hot path should not pay.
  return private.consume_credits(p_organization_id, p_action_type, p_quantity, p_idempotency_key, p_metadata);
end
$$;
comment on function public.consume_credits_rpc(uuid, text, integer, text, jsonb) is
  'Charges an action to the organization''s pools, all or nothing. Returns {success, transaction_id, consumed, remaining} or {success: false, error: insufficient_credits, pool, required, available}. p_quantity 0 is a dry run of one unit. A retry with the same p_idempotency_key returns the first result and charges nothing. Errors: invalid_quantity, invalid_metadata, invalid_idempotency_key, unknown_action, action_disabled, organization_not_found, not_authorized, idempotency_key_reused.';
grant execute on function public.consume_credits_rpc(uuid, text, integer, text, jsonb) to authenticated, service_role;

-- Locks, in pool order, the balance rows of every pool the given actions draw from, so a batch
-- holds its locks in the same order as every other writer (never a deadlock).
create function private.lock_pools_of_actions(p_organization_id uuid, p_actions text[])
returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform private.authorize(p_organization_id);
  perform 1 from public.credit_balances
  where organization_id = p_organization_id
    and pool_key in (select pool_key from public.credit_action_costs where action_key = any (p_actions))
  order by pool_key
  for update;
end
$$;
comment on function private.lock_pools_of_actions(uuid, text[]) is 'Locks the pools a batch of actions will draw from, in pool order.';
grant execute on function private.lock_pools_of_actions(uuid, text[]) to authenticated, service_role;

-- Many consumptions in one call; each item has its own key and result, and a bad item fails
-- alone (its own subtransaction): the errors of the invalid input, not found, conflict and rule
-- classes become that item's result.
create function public.consume_credits_batch(p_organization_id uuid, p_items jsonb)
returns jsonb
language plpgsql
security invoker
set search_path = ''
as $$
declare
  v_item jsonb;
  v_results jsonb := '[]'::jsonb;
begin
  if p_items is null or jsonb_typeof(p_items) <> 'array' or jsonb_array_length(p_items) not between 1 and 100 then
    perform private.raise('invalid_items', 'p_items must be an array of 1 to 100 items.');
  end if;
  perform private.lock_pools_of_actions(p_organization_id,
    array(select distinct i ->> 'action_type' from jsonb_array_elements(p_items) i where jsonb_typeof(i) = 'object'));
  for v_item in select value from jsonb_array_elements(p_items) loop
    begin
      if jsonb_typeof(v_item) <> 'object' then
        perform private.raise('invalid_items', 'Each item is an object.');
      end if;
      v_results := v_results || jsonb_build_array(private.consume_credits(
        p_organization_id,
        v_item ->> 'action_type',
        coalesce((v_item ->> 'quantity')::integer, 1),
        v_item ->> 'idempotency_key',
        coalesce(v_item -> 'metadata', '{}'::jsonb)));
    exception
      when sqlstate '22023' or sqlstate 'PT404' or sqlstate 'PT409' or sqlstate 'P0001'
        or sqlstate '22P02' or sqlstate '22003' then
        v_results := v_results || jsonb_build_array(jsonb_build_object('success', false, 'error',
          case when sqlstate in ('22P02', '22003') then 'invalid_quantity' else sqlerrm end));
    end;
  end loop;
  return v_results;
end
$$;
comment on function public.consume_credits_batch(uuid, jsonb) is
  'Runs consume_credits_rpc for each item of [{action_type, quantity?, idempotency_key?, metadata?}] (1 to 100) and returns their results in order; an invalid item gets {success: false, error: code} without affecting the others.';
grant execute on function public.consume_credits_batch(uuid, jsonb) to authenticated, service_role;
