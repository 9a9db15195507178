-- =============================================================================================
-- Credits: striped pools, for organizations that consume one pool from many clients at once
-- =============================================================================================
-- Every consumption of a pool updates its one credit_balances row, so one organization's calls
-- take turns on that row: an AI agent fleet of one organization cannot go faster than one
-- row's commits. A striped pool (set_credit_stripes, service role: 2 to 64 stripes) spreads
-- part of its balance over rows of credit_balance_stripes, and a consumption pays from any
-- stripe no other call is paying from.
--
-- How it stays exact:
-- - The shared row (credit_balances) keeps the rest. Its available is what is not in stripes;
--   the pool's balance is available plus its stripes' remaining (get_credit_balances,
--   credit_balances_overview, credit_grant_balances and verify_credit_ledger add them).
-- - A stripe is refilled only under the shared row's lock, with a slice of the head grant (at
--   most 1/(2 x stripes) of what the shared row can spare), so every stripe holds credits of
--   the head grant. The head changes only on the general path, and open_credit_pools first
--   gathers every stripe back into its grant and the shared row (waiting for calls paying from
--   one). So the draw order is kept to the grant: no credit of a later grant is spent while an
--   earlier one has credits, striped or not. Grants, refunds, reservations, expiry, plan
--   periods, billing standing and thresholds all go through open_credit_pools.
-- - While a stripe holds credits, the shared row keeps a floor of max(low threshold, 1) that
--   only the general path spends (after gathering). So the pool's balance can fall below its
--   threshold, or to zero, only there: low and depleted events are exact, and a refusal is
--   only ever given with every stripe gathered, when the pool's whole balance is short.
-- - Two-pool actions and set-based batches on a striped pool take the general and the
--   item-by-item paths (the latter still through the stripes).
--
-- Restriping (set_credit_stripes) gathers the stripes and keeps the rows of stripes past the new
-- count, empty: credit_balances.stripes alone says which stripes are in use, and a pool with
-- stripes = 1 is not striped whatever rows it has. Deleting them would wait for a call that
-- holds such a row (see below) while it waits for the pool's row, which set_credit_stripes holds.
--
-- Time-ordered transaction ids: consume_credits and the set path of consume_credits_batch now
-- make their ids in the layout of a version 7 UUID (the transaction's time in milliseconds,
-- then 74 random bits), so that the ledger's credit_ledger_transaction_id_idx grows at its
-- right edge instead of taking each insert to a random leaf page (and, after a checkpoint, a
-- full-page image with it). Measured with a 1.5 million row ledger, 8 clients for 5 s right
-- after a checkpoint: 0.28 full-page images and 2,146 bytes of WAL per call with random ids,
-- 0.05 and 866 with time-ordered ones. The ids stay unique and opaque to callers.
--
-- Locks: a call paying from a stripe takes the stripe's advisory lock (a try: a stripe another
-- call has is passed over), then its row by updating it, and holds no other lock unless it goes
-- on to the shared row. Only gathers change a stripe without its advisory lock; a call whose
-- update met a stripe a gather had just drained keeps that row locked (an UPDATE locks the
-- newest version before its re-check fails), but the row then holds nothing, and no gather
-- waits for an empty stripe. Refills and gathers take the shared row, then stripes. So a gather
-- (shared row, then every stripe with credits) waits only for calls that are paying and about
-- to commit.
-- A transaction that pays from a stripe in one statement and needs the shared row in a later
-- one (two calls in one transaction) can still wait in a cycle with a gather; Postgres then
-- aborts one of them. consume_credits_batch locks the shared rows first.

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

insert into private.error_codes (code, class, meaning) values
  ('invalid_stripes', 'invalid_input', 'A pool has 1 to 64 stripes (1: not striped).');

-- No check constraint of its own: every update of the hot balance row evaluates each one
-- (credit_balances_never_negative is one for that reason); set_credit_stripes checks the range.
alter table public.credit_balances add column stripes integer not null default 1;
comment on column public.credit_balances.stripes is
  'How many stripes the pool''s balance is spread over (1: none). Changed only by set_credit_stripes; while striped, available excludes what the stripes hold.';

create table public.credit_balance_stripes (
  organization_id uuid not null references public.organizations (id) on delete cascade,
  pool_key text not null,
  stripe integer not null,
  -- Always the pool's head grant while remaining > 0 (see the top of this migration).
  grant_id uuid,
  remaining bigint not null default 0,
  -- The grant's expiry, copied so that the hot path reads one row.
  expires_at timestamptz not null default '-infinity',
  primary key (organization_id, pool_key, stripe),
  foreign key (organization_id, pool_key) references public.credit_balances (organization_id, pool_key) on delete cascade,
  constraint credit_balance_stripes_valid check (stripe between 1 and 64 and remaining >= 0)
);
comment on table public.credit_balance_stripes is
  'Parts of a striped pool''s balance that concurrent calls pay from without taking turns on the pool''s credit_balances row (set_credit_stripes). Only stripes 1 to credit_balances.stripes are in use; rows past it stay empty.';
comment on column public.credit_balance_stripes.organization_id is 'The organization.';
comment on column public.credit_balance_stripes.pool_key is 'The pool.';
comment on column public.credit_balance_stripes.stripe is 'The stripe''s number, 1 to the pool''s stripes.';
comment on column public.credit_balance_stripes.grant_id is 'The grant its credits belong to: the pool''s head grant.';
comment on column public.credit_balance_stripes.remaining is 'Credits in this stripe, part of the pool''s balance.';
comment on column public.credit_balance_stripes.expires_at is 'The expiry of its grant.';

grant select on public.credit_balance_stripes to authenticated, service_role;
alter table public.credit_balance_stripes enable row level security;
create policy "Members can read their organization's balance stripes"
on public.credit_balance_stripes for select to authenticated
using (organization_id in (select private.member_organization_ids()));

insert into private.non_personal_columns (table_name, column_name, reason) values
  ('public.credit_balance_stripes', 'pool_key', 'Catalogue key.');
insert into private.audit_exempt_tables (table_name, reason) values
  ('public.credit_balance_stripes', 'Credits hot path (updated by every consume of a striped pool); every movement is a credit_ledger entry.');

-- ---------------------------------------------------------------------------------------------
-- Paying from a striped pool's shared row
-- ---------------------------------------------------------------------------------------------
create function private.draw_from_striped_pool(
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
comment on function private.draw_from_striped_pool(uuid, text, bigint, timestamptz) is
  'A striped pool whose stripes could not pay: refills a free stripe from the head grant and pays from it, or pays from the shared row above its floor. Null grant_id: the general path decides.';

-- ---------------------------------------------------------------------------------------------
-- Striping a pool
-- ---------------------------------------------------------------------------------------------
create function private.set_credit_stripes(p_organization_id uuid, p_pool text, p_stripes integer)
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
comment on function private.set_credit_stripes(uuid, text, integer) is 'The body of set_credit_stripes.';
grant execute on function private.set_credit_stripes(uuid, text, integer) to service_role;

create function public.set_credit_stripes(p_organization_id uuid, p_pool text, p_stripes integer)
returns jsonb
language sql
security invoker
set search_path = ''
as $$
  select private.set_credit_stripes(p_organization_id, p_pool, p_stripes)
$$;
comment on function public.set_credit_stripes(uuid, text, integer) is
  'Spreads a pool''s balance over 2 to 64 stripes so that many concurrent calls of one organization do not take turns on one row (service role); 1 undoes it. Draw order, refusals and low-balance events stay exact.';
grant execute on function public.set_credit_stripes(uuid, text, integer) to service_role;

-- ---------------------------------------------------------------------------------------------
-- The paths that debit a pool
-- ---------------------------------------------------------------------------------------------
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

create or replace function private.consume_credits_multi_pool(
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
    select b.head_remaining >= n.cost and b.next_expiry_at > p_now and b.stripes = 1 as covered
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

-- ---------------------------------------------------------------------------------------------
-- Gathering the stripes before any general-path change
-- ---------------------------------------------------------------------------------------------
create or replace function private.open_credit_pools(p_organization_id uuid, p_pools text[], p_now timestamptz)
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
  -- Gather the stripes of striped pools: what they hold is the head grant's (the head changes
  -- only here and in close_credit_pools, after this), so it goes back to that grant and to the
  -- shared row, whose available is then the pool's whole balance again. Waits for the calls
  -- paying from a stripe; no stripe is refilled meanwhile (that takes the shared row's lock).
  with gathered as (
    select s.pool_key, s.stripe, s.grant_id, s.remaining from public.credit_balance_stripes s
    where s.organization_id = p_organization_id and s.pool_key = any (v_pools) and s.remaining > 0
    order by s.pool_key, s.stripe
    for update
  ), emptied as (
    update public.credit_balance_stripes s set remaining = 0
    from gathered g
    where s.organization_id = p_organization_id and s.pool_key = g.pool_key and s.stripe = g.stripe
  ), regranted as (
    update public.credit_grants g set remaining = g.remaining + x.amount
    from (select grant_id, sum(remaining) as amount from gathered group by grant_id) x
    where g.id = x.grant_id
  )
  update public.credit_balances b set available = b.available + x.amount
  from (select pool_key, sum(remaining) as amount from gathered group by pool_key) x
  where b.organization_id = p_organization_id and b.pool_key = x.pool_key;
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

-- ---------------------------------------------------------------------------------------------
-- What reads a pool's balance adds its stripes
-- ---------------------------------------------------------------------------------------------
create or replace function private.verify_credit_ledger(p_organization_id uuid)
returns table (pool_key text, available bigint, ledger_sum bigint, grants_remaining bigint, reserved bigint, holds_sum bigint, ok boolean)
language sql
stable
security definer
set search_path = ''
as $$
  select c.pool_key, c.available, c.ledger_sum, c.grants_remaining, c.reserved, c.holds_sum,
         (c.available = c.ledger_sum and c.available = c.grants_remaining and c.reserved = c.holds_sum
          and c.stripes_off_head = 0) as ok
  from (
    select b.pool_key,
      b.available + coalesce(st.remaining, 0) as available,
      coalesce((select sum(amount) from public.credit_ledger l where l.organization_id = b.organization_id and l.pool_key = b.pool_key), 0)::bigint as ledger_sum,
      coalesce((select sum(case when g.id = b.head_grant_id then b.head_remaining else g.remaining end)
                from public.credit_grants g where g.organization_id = b.organization_id and g.pool_key = b.pool_key), 0)::bigint
        + coalesce(st.remaining, 0) as grants_remaining,
      b.reserved,
      coalesce((select sum(h.amount) from public.credit_reservations r, jsonb_to_recordset(r.holds) as h (pool text, grant_id uuid, amount bigint)
                where r.organization_id = b.organization_id and r.status = 'active' and h.pool = b.pool_key), 0)::bigint as holds_sum,
      -- Stripes holding credits of another grant than the head would break the draw order.
      coalesce(st.off_head, 0) as stripes_off_head
    from public.credit_balances b
    left join lateral (
      select sum(s.remaining)::bigint as remaining,
             count(*) filter (where s.remaining > 0 and s.grant_id is distinct from b.head_grant_id) as off_head
      from public.credit_balance_stripes s
      where s.organization_id = b.organization_id and s.pool_key = b.pool_key
    ) st on true
    where b.organization_id = p_organization_id
  ) c
  order by c.pool_key
$$;

create or replace function private.credit_balances_at(p_organization_id uuid, p_now timestamptz)
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
           case when g.id = b.head_grant_id then b.head_remaining else g.remaining end
           + coalesce((select sum(s.remaining) from public.credit_balance_stripes s
                       where s.organization_id = g.organization_id and s.pool_key = g.pool_key and s.grant_id = g.id), 0) as remaining
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

create or replace view public.credit_balances_overview
with (security_invoker = true)
as
select o.id as organization_id, o.name as organization_name, o.slug as organization_slug,
       op.plan_key, op.period_end, b.pool_key,
       b.available + coalesce((select sum(s.remaining) from public.credit_balance_stripes s
                               where s.organization_id = b.organization_id and s.pool_key = b.pool_key), 0)::bigint as available,
       b.reserved, b.low_threshold, b.next_expiry_at
from public.credit_balances b
join public.organizations o on o.id = b.organization_id
left join public.organization_plans op on op.organization_id = b.organization_id;

create or replace view public.credit_grant_balances
with (security_invoker = true)
as
select g.id, g.organization_id, g.pool_key, g.kind, g.amount,
       case when g.id = b.head_grant_id then b.head_remaining else g.remaining end
       + coalesce((select sum(s.remaining) from public.credit_balance_stripes s
                   where s.organization_id = g.organization_id and s.pool_key = g.pool_key and s.grant_id = g.id), 0)::bigint as remaining,
       g.priority, g.expires_at, g.expired_at, g.source, g.created_at,
       g.id = b.head_grant_id as is_head
from public.credit_grants g
left join public.credit_balances b on b.organization_id = g.organization_id and b.pool_key = g.pool_key;
comment on view public.credit_grant_balances is
  'Studio: grants with their live remaining credits (the head grant''s count lives in credit_balances and, for a striped pool, its stripes).';

-- ---------------------------------------------------------------------------------------------
-- Changes that would move the floor or the expiry under the stripes
-- ---------------------------------------------------------------------------------------------
-- A raised threshold with credits in stripes would leave the shared row below its floor:
-- the change goes through open_credit_pools (which gathers them) like every other change.
create or replace function private.set_credit_low_threshold(p_organization_id uuid, p_pool text, p_threshold bigint)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_now timestamptz := now();
  v_pools text[];
begin
  perform private.authorize(p_organization_id, '{owner,admin}');
  if p_threshold is not null and (p_threshold < 0 or p_threshold > 1000000000) then
    perform private.raise('invalid_threshold', 'A threshold is from 0 to 1000000000, or null for the default.');
  end if;
  if not exists (select 1 from public.credit_balances b where b.organization_id = p_organization_id and b.pool_key = p_pool) then
    perform private.raise('pool_not_found', format('No credit pool %L.', p_pool));
  end if;
  v_pools := private.open_credit_pools(p_organization_id, array[p_pool], v_now);
  update public.credit_balances b
  set low_threshold_override = p_threshold,
      low_threshold = coalesce(p_threshold, private.default_low_threshold(
        (select op.plan_key from public.organization_plans op where op.organization_id = b.organization_id), b.pool_key))
  where b.organization_id = p_organization_id and b.pool_key = p_pool;
  perform private.close_credit_pools(p_organization_id, v_pools, v_now);
end
$$;

-- An expiry moved earlier by hand (Studio) reaches the stripes holding the grant too.
create or replace function private.track_grant_expiry()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if new.expires_at < old.expires_at and new.remaining > 0 then
    update public.credit_balances
    set next_expiry_at = least(next_expiry_at, new.expires_at)
    where organization_id = new.organization_id and pool_key = new.pool_key and next_expiry_at > new.expires_at;
  end if;
  if new.expires_at < old.expires_at then
    update public.credit_balance_stripes
    set expires_at = new.expires_at
    where organization_id = new.organization_id and pool_key = new.pool_key and grant_id = new.id
      and expires_at > new.expires_at;
  end if;
  return null;
end
$$;

comment on function private.consume_credits_multi_pool(uuid, text, integer, jsonb, text, uuid, uuid, text[], bigint[], timestamptz) is
  'consume_credits_rpc for several unstriped pools whose head grants cover the cost; null when the general path must decide.';
comment on function private.consume_credits_set(uuid, jsonb) is
  'A batch of plain consumptions the unstriped pools'' head grants cover, in one update per pool and one ledger insert; null for any other batch.';
