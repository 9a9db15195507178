-- =============================================================================================
-- Credits: a batch in one subtransaction
-- =============================================================================================
-- consume_credits_batch ran each of its up to 100 items in a subtransaction of its own, so that a
-- bad item fails alone. Measured (npm run bench:credits, batch of 100): fewer credits per second
-- than single calls on one organization's pool, because a transaction with more than 64
-- subtransactions overflows its snapshot's subtransaction cache. Now the items run in one
-- subtransaction, and only a batch with an item that raises is run again item by item. The body
-- is that of 20261201000900_credits_key_lock_order.sql with this first attempt added.

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

create or replace function public.consume_credits_batch(p_organization_id uuid, p_items jsonb)
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
  -- The items' keys locked in key order before the pools (consume_credits takes the same lock
  -- for one key): two batches with the same keys in opposite orders take turns instead of
  -- deadlocking.
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('credit_key:' || p_organization_id::text || ':' || k.key, 0))
  from (select distinct i ->> 'idempotency_key' as key from jsonb_array_elements(p_items) i
        where jsonb_typeof(i) = 'object' and i ->> 'idempotency_key' ~ '^[A-Za-z0-9_.:-]{1,255}$') k
  order by k.key collate "C";
  perform private.lock_pools_of_actions(p_organization_id,
    array(select distinct i ->> 'action_type' from jsonb_array_elements(p_items) i where jsonb_typeof(i) = 'object'));
  -- First every item in one subtransaction: only when one of them raises is that attempt rolled
  -- back and the batch run again below, item by item, each in its own subtransaction so that a
  -- bad item fails alone. The results are the same either way. (A subtransaction per item cost
  -- more than the items: past 64 in one transaction they overflow its snapshot's cache, and
  -- every session's visibility checks then read pg_subtrans.)
  begin
    for v_item in select value from jsonb_array_elements(p_items) loop
      if jsonb_typeof(v_item) <> 'object' then
        perform private.raise('invalid_items', 'Each item is an object.');
      end if;
      v_results := v_results || jsonb_build_array(private.consume_credits(
        p_organization_id,
        v_item ->> 'action_type',
        coalesce((v_item ->> 'quantity')::integer, 1),
        v_item ->> 'idempotency_key',
        coalesce(v_item -> 'metadata', '{}'::jsonb)));
    end loop;
    return v_results;
  exception
    when sqlstate '22023' or sqlstate 'PT404' or sqlstate 'PT409' or sqlstate 'P0001'
      or sqlstate '22P02' or sqlstate '22003' then
      v_results := '[]'::jsonb;
  end;
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
