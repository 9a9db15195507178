-- =============================================================================================
-- Credits: plans per organization, grants, balances, the ledger, reservations, consumption
-- =============================================================================================

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

-- How it fits together
-- --------------------
-- * Credits enter a pool only as GRANTS (plan allocation, purchase, manual, refund, promotion),
--   each with an expiry. Consumption draws from grants in a stated order: priority (lower
--   first), then soonest expiry, then granted before purchased, then oldest.
-- * CREDIT_BALANCES has one row per (organization, pool): the credits available now, those held
--   by reservations, and a cache of the HEAD grant (the next one to draw from) with its
--   remaining credits. Every change of a pool takes this row's lock first, so it serialises
--   all writers of the pool; multi-pool writers lock rows in pool-key order (never deadlock).
-- * The LEDGER records every movement, one row per pool and grant, with the signed change of
--   the pool's available credits. sum(ledger.amount) = balances.available, always;
--   private.verify_credit_ledger proves it.
-- * The hot path (one unit-pool action the head grant covers, nothing expired) is one SQL
--   statement: a conditional update of the balance row and the ledger insert. Everything else
--   (several grants, expiry, reservations, grants, refunds) takes the general path:
--   private.open_credit_pools (lock, write the head back to its grant, release expired holds)
--   ... work on grant rows ... private.close_credit_pools (expire grants, recompute the
--   balance and the head, emit low/depleted events).
--
-- Errors: bad input raises with a stable code (22023 invalid_*, PT404 *_not_found,
-- 42501 not_authorized, PT409 idempotency_key_reused / reservation_not_active); running out of
-- credits is a result, not an error: {"success": false, "error": "insufficient_credits", ...}.

create type public.credit_grant_kind as enum ('plan_allocation', 'promotion', 'manual', 'refund', 'purchase');
comment on type public.credit_grant_kind is 'How credits entered a pool. Purchased credits are drawn after granted ones.';

create type public.credit_entry_kind as enum ('grant', 'consumption', 'refund', 'expiry', 'hold', 'release', 'adjustment');
comment on type public.credit_entry_kind is
  'Ledger movements: grant (+), consumption (-), refund (+), expiry (-), hold (- while reserved), release (+ a hold given back), adjustment (either sign).';

create type public.credit_reservation_status as enum ('active', 'committed', 'released', 'expired');
comment on type public.credit_reservation_status is 'A reservation holds credits while active; it ends committed, released or expired.';

-- Purchased credits expire after this long unless the grant says otherwise.
alter table public.credit_pools add column purchase_validity interval not null default interval '12 months'
  check (purchase_validity >= interval '1 day');
comment on column public.credit_pools.purchase_validity is 'How long purchased credits of this pool stay valid (12 months by default).';

-- ---------------------------------------------------------------------------------------------
-- Which plan an organization is on, and its current billing period
-- ---------------------------------------------------------------------------------------------
create table public.organization_plans (
  organization_id uuid primary key references public.organizations (id) on delete cascade,
  plan_key text not null references public.credit_plans (key) on update cascade,
  period_start timestamptz not null,
  period_end timestamptz not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  check (period_end > period_start)
);
comment on table public.organization_plans is 'The plan each organization is on and its current billing period. Changed by change_plan (billing) and renewed by a pg_cron job.';
comment on column public.organization_plans.organization_id is 'The organization.';
comment on column public.organization_plans.plan_key is 'Its plan.';
comment on column public.organization_plans.period_start is 'Start of the current billing period.';
comment on column public.organization_plans.period_end is 'End of the current period: the allocation expires and a new one is granted.';
comment on column public.organization_plans.created_at is 'When the organization got a plan.';
comment on column public.organization_plans.updated_at is 'When the plan or period last changed.';

-- Credit state is read by members (RLS below) and by backends; every write is one of the
-- functions below, which keep balances, grants and the ledger in agreement.
grant select on public.organization_plans to authenticated, service_role;

create index organization_plans_plan_key_idx on public.organization_plans (plan_key);
create index organization_plans_period_end_idx on public.organization_plans (period_end);

create trigger organization_plans_set_updated_at
before update on public.organization_plans
for each row execute function private.set_updated_at();

-- ---------------------------------------------------------------------------------------------
-- Grants
-- ---------------------------------------------------------------------------------------------
create table public.credit_grants (
  id uuid primary key default gen_random_uuid(),
  organization_id uuid not null references public.organizations (id) on delete cascade,
  pool_key text not null references public.credit_pools (key) on update cascade,
  kind public.credit_grant_kind not null,
  amount bigint not null check (amount > 0),
  remaining bigint not null check (remaining >= 0 and remaining <= amount),
  priority integer not null default 100,
  expires_at timestamptz not null default 'infinity',
  expired_at timestamptz,
  source text check (source is null or char_length(source) <= 200),
  granted_by uuid references auth.users (id) on delete set null,
  metadata jsonb not null default '{}'::jsonb check (jsonb_typeof(metadata) = 'object'),
  created_at timestamptz not null default now()
);
comment on table public.credit_grants is
  'Credits that entered a pool. Consumption draws from them by priority, soonest expiry, granted before purchased, oldest. The live remaining of the head grant is in credit_balances (see credit_grant_balances).';
comment on column public.credit_grants.id is 'The grant''s id.';
comment on column public.credit_grants.organization_id is 'The organization.';
comment on column public.credit_grants.pool_key is 'The pool the credits belong to.';
comment on column public.credit_grants.kind is 'plan_allocation, promotion, manual, refund or purchase.';
comment on column public.credit_grants.amount is 'Credits granted.';
comment on column public.credit_grants.remaining is 'Credits left, except for the pool''s head grant whose live count is credit_balances.head_remaining.';
comment on column public.credit_grants.priority is 'Draw order: lower first (100 by default).';
comment on column public.credit_grants.expires_at is 'When the remaining credits expire (infinity: never).';
comment on column public.credit_grants.expired_at is 'When the remaining credits were removed as expired.';
comment on column public.credit_grants.source is 'Where the grant came from: a plan period, a payment id, a reason.';
comment on column public.credit_grants.granted_by is 'The user who granted it (admins), if any.';
comment on column public.credit_grants.metadata is 'Free-form details.';
comment on column public.credit_grants.created_at is 'When the grant was made.';

grant select on public.credit_grants to authenticated, service_role;

create index credit_grants_draw_order_idx
  on public.credit_grants (organization_id, pool_key, priority, expires_at, (kind = 'purchase'), created_at, id);
create index credit_grants_granted_by_idx on public.credit_grants (granted_by);
create index credit_grants_pool_key_idx on public.credit_grants (pool_key);

-- ---------------------------------------------------------------------------------------------
-- Balances: one row per (organization, pool), the lock every writer of the pool takes
-- ---------------------------------------------------------------------------------------------
create table public.credit_balances (
  organization_id uuid not null references public.organizations (id) on delete cascade,
  pool_key text not null references public.credit_pools (key) on update cascade,
  available bigint not null default 0,
  reserved bigint not null default 0,
  -- The head grant cache: the hot path draws from it without touching the grant row.
  head_grant_id uuid,
  head_remaining bigint not null default 0,
  next_expiry_at timestamptz not null default 'infinity',
  low_threshold bigint not null default 0,
  low_threshold_override bigint,
  primary key (organization_id, pool_key),
  -- One constraint, not five: every update of this hot row evaluates them all, and each is
  -- prepared anew per statement.
  constraint credit_balances_never_negative check (
    available >= 0 and reserved >= 0 and head_remaining >= 0 and head_remaining <= available
    and low_threshold >= 0 and (low_threshold_override is null or low_threshold_override >= 0))
);
comment on table public.credit_balances is 'Credits each organization can spend now, per pool. Every change of a pool locks its row first.';
comment on column public.credit_balances.organization_id is 'The organization.';
comment on column public.credit_balances.pool_key is 'The pool.';
comment on column public.credit_balances.available is 'Credits that can be spent now (held credits excluded). Equals the sum of the ledger.';
comment on column public.credit_balances.reserved is 'Credits held by active reservations.';
comment on column public.credit_balances.head_grant_id is 'The grant the next consumption draws from.';
comment on column public.credit_balances.head_remaining is 'Live remaining credits of the head grant.';
comment on column public.credit_balances.next_expiry_at is 'Soonest expiry among grants with credits left; past it, the next write sweeps expired credits first.';
comment on column public.credit_balances.low_threshold is 'Falling below this appends one credits.low event (10% of the plan allocation unless overridden).';
comment on column public.credit_balances.low_threshold_override is 'An organization''s own low-balance threshold for this pool, if set.';

grant select on public.credit_balances to authenticated, service_role;

create index credit_balances_pool_key_idx on public.credit_balances (pool_key);

-- An expiry moved earlier by hand (Studio) must reach the hot path's next_expiry_at at once.
create function private.track_grant_expiry()
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
  return null;
end
$$;
comment on function private.track_grant_expiry() is 'Trigger: an earlier expiry of a grant lowers its pool''s next_expiry_at.';

create trigger credit_grants_track_expiry
after update of expires_at on public.credit_grants
for each row execute function private.track_grant_expiry();
create index credit_balances_next_expiry_at_idx on public.credit_balances (next_expiry_at) where next_expiry_at <> 'infinity';

-- ---------------------------------------------------------------------------------------------
-- The ledger (append-only)
-- ---------------------------------------------------------------------------------------------
-- No foreign keys on purpose: an insert's key check would take a share lock on the
-- organization row for every consumption, and entries are history that outlives grants.
-- When an organization is deleted its entries go with it (trigger below).
create table public.credit_ledger (
  id bigint generated always as identity primary key,
  transaction_id uuid not null,
  organization_id uuid not null,
  pool_key text not null,
  kind public.credit_entry_kind not null,
  amount bigint not null,
  grant_id uuid,
  action_key text,
  quantity integer,
  reservation_id uuid,
  refund_of uuid,
  actor_id uuid,
  actor_role text,
  metadata jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now()
);
comment on table public.credit_ledger is
  'Append-only record of every credit movement, one row per pool and grant. sum(amount) per pool equals credit_balances.available (private.verify_credit_ledger).';
comment on column public.credit_ledger.id is 'Position in the ledger.';
comment on column public.credit_ledger.transaction_id is 'Groups the rows of one operation (returned as transaction_id by consume_credits_rpc).';
comment on column public.credit_ledger.organization_id is 'The organization.';
comment on column public.credit_ledger.pool_key is 'The pool.';
comment on column public.credit_ledger.kind is 'grant, consumption, refund, expiry, hold, release or adjustment.';
comment on column public.credit_ledger.amount is 'Signed change of the pool''s available credits.';
comment on column public.credit_ledger.grant_id is 'The grant drawn from or fed.';
comment on column public.credit_ledger.action_key is 'The metered action, for consumptions and holds.';
comment on column public.credit_ledger.quantity is 'How many units of the action.';
comment on column public.credit_ledger.reservation_id is 'The reservation, for holds, releases and committed consumptions.';
comment on column public.credit_ledger.refund_of is 'The transaction a refund gives back.';
comment on column public.credit_ledger.actor_id is 'The user who caused the movement, if any.';
comment on column public.credit_ledger.actor_role is 'The caller''s role: authenticated, service_role, system (jobs).';
comment on column public.credit_ledger.metadata is 'Caller-supplied details (e.g. a message id).';
comment on column public.credit_ledger.created_at is 'When the movement happened.';

-- Append-only for everyone: TRUNCATE skips row triggers and the purge flag is a setting any
-- session can set, so no API role may write the ledger at all; only the owner's functions do.
grant select on public.credit_ledger to authenticated, service_role;

create index credit_ledger_organization_id_created_at_idx on public.credit_ledger (organization_id, created_at);
create index credit_ledger_transaction_id_idx on public.credit_ledger (transaction_id);
create index credit_ledger_refund_of_idx on public.credit_ledger (refund_of) where refund_of is not null;

-- The only changes the owner's functions may make: clearing who caused a movement and its
-- caller-supplied metadata (detaching personal data), and deleting rows whose retention ended.
-- Each says so with a transaction-local setting; API roles cannot write the ledger at all.
create function private.guard_credit_ledger()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if tg_op = 'DELETE' and coalesce(current_setting('private.allow_purge', true), '') = 'on' then
    return old;
  end if;
  if tg_op = 'UPDATE' and coalesce(current_setting('private.allow_detach', true), '') = 'on'
     and new.actor_id is null and new.metadata = '{}'::jsonb
     and to_jsonb(new) - 'actor_id' - 'metadata' = to_jsonb(old) - 'actor_id' - 'metadata' then
    return new;
  end if;
  raise exception using errcode = '42501', message = 'append_only',
    detail = 'The credit ledger is append-only: record a correcting movement instead.';
end
$$;
comment on function private.guard_credit_ledger() is 'Trigger: the ledger is append-only; personal fields are cleared and rows removed only by the retention machinery.';

create trigger credit_ledger_append_only
before update or delete on public.credit_ledger
for each row execute function private.guard_credit_ledger();

-- ---------------------------------------------------------------------------------------------
-- Reservations, overage, idempotency keys
-- ---------------------------------------------------------------------------------------------
create table public.credit_reservations (
  id uuid primary key default gen_random_uuid(),
  organization_id uuid not null references public.organizations (id) on delete cascade,
  status public.credit_reservation_status not null default 'active',
  action_key text,
  amounts jsonb not null check (jsonb_typeof(amounts) = 'object'),
  holds jsonb not null check (jsonb_typeof(holds) = 'array'),
  charged jsonb,
  idempotency_key text,
  expires_at timestamptz not null,
  created_by uuid references auth.users (id) on delete set null,
  actor_role text,
  metadata jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now(),
  settled_at timestamptz
);
comment on table public.credit_reservations is 'Credits held for work whose cost is known only at the end (a streamed AI reply).';
comment on column public.credit_reservations.id is 'The reservation''s id.';
comment on column public.credit_reservations.organization_id is 'The organization.';
comment on column public.credit_reservations.status is 'active, committed, released or expired.';
comment on column public.credit_reservations.action_key is 'The action the credits are held for, if given.';
comment on column public.credit_reservations.amounts is 'Credits held per pool, e.g. {"ai": 20}.';
comment on column public.credit_reservations.holds is 'Which grants the held credits came from: [{"pool", "grant_id", "amount"}].';
comment on column public.credit_reservations.charged is 'Credits charged per pool on commit.';
comment on column public.credit_reservations.idempotency_key is 'A retry of reserve_credits with this key returns this reservation.';
comment on column public.credit_reservations.expires_at is 'An active reservation past this time is released by itself.';
comment on column public.credit_reservations.created_by is 'The user who reserved.';
comment on column public.credit_reservations.actor_role is 'The caller''s role.';
comment on column public.credit_reservations.metadata is 'Caller-supplied details.';
comment on column public.credit_reservations.created_at is 'When the credits were reserved.';
comment on column public.credit_reservations.settled_at is 'When the reservation was committed, released or expired.';

grant select on public.credit_reservations to authenticated, service_role;

create unique index credit_reservations_idempotency_key_idx
  on public.credit_reservations (organization_id, idempotency_key) where idempotency_key is not null;
create index credit_reservations_active_idx on public.credit_reservations (organization_id, expires_at) where status = 'active';
create index credit_reservations_expires_at_idx on public.credit_reservations (expires_at) where status = 'active';
create index credit_reservations_created_by_idx on public.credit_reservations (created_by);

-- No foreign key to organizations: overage is a money record, kept after the organization is
-- deleted (see private.deleted_organizations), and an organization with unbilled overage cannot
-- be deleted at all.
create table public.credit_overages (
  id bigint generated always as identity primary key,
  organization_id uuid not null,
  pool_key text not null references public.credit_pools (key) on update cascade,
  amount bigint not null check (amount > 0),
  transaction_id uuid not null,
  reservation_id uuid,
  created_at timestamptz not null default now(),
  billed_at timestamptz
);
comment on table public.credit_overages is 'Usage beyond the held and available credits on plans that allow overage; billing charges it later.';
comment on column public.credit_overages.id is 'The overage record.';
comment on column public.credit_overages.organization_id is 'The organization.';
comment on column public.credit_overages.pool_key is 'The pool.';
comment on column public.credit_overages.amount is 'Credits used beyond what the organization had.';
comment on column public.credit_overages.transaction_id is 'The ledger transaction of the usage.';
comment on column public.credit_overages.reservation_id is 'The reservation that was committed.';
comment on column public.credit_overages.created_at is 'When it happened.';
comment on column public.credit_overages.billed_at is 'When billing charged it; null while unbilled.';

grant select on public.credit_overages to authenticated, service_role;

create index credit_overages_organization_id_idx on public.credit_overages (organization_id, created_at);
create index credit_overages_pool_key_idx on public.credit_overages (pool_key);

-- Idempotency keys of consume_credits_rpc: the first call's result, replayed to retries.
-- Private (only the RPC reads it); no foreign key for the same reason as the ledger.
create table private.credit_idempotency_keys (
  organization_id uuid not null,
  key text not null,
  request_hash text not null,
  result jsonb,
  created_at timestamptz not null default now(),
  primary key (organization_id, key)
);
comment on table private.credit_idempotency_keys is 'consume_credits_rpc idempotency keys with the first call''s result; kept 7 days (at least 24 hours are promised).';
alter table private.credit_idempotency_keys enable row level security;
create index credit_idempotency_keys_created_at_idx on private.credit_idempotency_keys (created_at);

-- An organization with unbilled overage cannot be deleted: billing must charge it first.
create function private.guard_organization_credit_deletion()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_unbilled bigint;
begin
  select count(*) into v_unbilled from public.credit_overages where organization_id = old.id and billed_at is null;
  if v_unbilled > 0 then
    raise exception using errcode = 'P0001', message = 'unsettled_balance',
      detail = format('The organization has %s unbilled overage records: settle them before deleting it.', v_unbilled);
  end if;
  return old;
end
$$;
comment on function private.guard_organization_credit_deletion() is 'Trigger: refuses to delete an organization with unbilled overage.';

create trigger organizations_guard_credit_deletion
before delete on public.organizations
for each row execute function private.guard_organization_credit_deletion();

-- A deleted organization's ledger and overage stay for the tombstone's retention, detached from
-- the people who caused them; its idempotency keys go.
create function private.detach_organization_credit_history()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform set_config('private.allow_detach', 'on', true);
  update public.credit_ledger set actor_id = null, metadata = '{}'::jsonb
  where organization_id = old.id and (actor_id is not null or metadata <> '{}'::jsonb);
  perform set_config('private.allow_detach', '', true);
  delete from private.credit_idempotency_keys where organization_id = old.id;
  return null;
end
$$;
comment on function private.detach_organization_credit_history() is
  'Trigger: clears the personal fields of a deleted organization''s ledger and deletes its idempotency keys.';

create trigger organizations_detach_credit_history
after delete on public.organizations
for each row execute function private.detach_organization_credit_history();

-- =============================================================================================
-- The engine (private, security definer)
-- =============================================================================================

-- Who is calling, for authorization and the ledger. PostgREST (and the edge functions) switch
-- to the caller's role and set its JWT claims; that switched role wins over the claims, so a
-- session that became `authenticated` is never trusted more, whatever its claims say. A direct
-- database connection that switched to no API role (another backend, a job) is trusted like
-- the service role, since only holders of database credentials can open one.
create function private.credit_caller_role()
returns text
language sql
stable
set search_path = ''
as $$
  select case
    when current_setting('role', true) in ('anon', 'authenticated', 'service_role') then current_setting('role', true)
    else coalesce(nullif(auth.role(), ''), 'service_role')
  end
$$;
comment on function private.credit_caller_role() is 'The caller''s role from the JWT, or service_role for direct database connections.';
grant execute on function private.credit_caller_role() to authenticated, service_role;

-- Members of the organization and the service role may consume; nobody else.
create function private.authorize_credit_caller(p_organization_id uuid)
returns text
language plpgsql
stable
set search_path = ''
as $$
declare
  v_role text := private.credit_caller_role();
begin
  if p_organization_id is null then
    raise exception using errcode = '22023', message = 'invalid_organization', detail = 'p_organization_id is required.';
  end if;
  if v_role = 'service_role' then
    return v_role;
  end if;
  if v_role = 'authenticated' and exists (
    select 1 from public.organization_members
    where organization_id = p_organization_id and user_id = (select auth.uid())
  ) then
    return v_role;
  end if;
  raise exception using errcode = '42501', message = 'not_authorized', detail = 'You are not a member of this organization.';
end
$$;
comment on function private.authorize_credit_caller(uuid) is 'Raises not_authorized unless the caller is a member of the organization or the service role; returns the role.';
-- The read RPCs are security invoker and call it themselves.
grant execute on function private.authorize_credit_caller(uuid) to authenticated, service_role;

-- Platform operators and the service role administer credits (grants, refunds).
create function private.authorize_credit_admin()
returns text
language plpgsql
stable
set search_path = ''
as $$
declare
  v_role text := private.credit_caller_role();
begin
  if v_role = 'service_role' or (v_role = 'authenticated' and private.is_platform_admin()) then
    return v_role;
  end if;
  raise exception using errcode = '42501', message = 'not_authorized', detail = 'Only the service role and platform admins can do this.';
end
$$;
comment on function private.authorize_credit_admin() is 'Raises not_authorized unless the caller is the service role or a platform admin.';

create function private.require_organization(p_organization_id uuid)
returns void
language plpgsql
stable
set search_path = ''
as $$
begin
  if not exists (select 1 from public.organizations where id = p_organization_id) then
    raise exception using errcode = 'PT404', message = 'organization_not_found', detail = 'No organization has this id.';
  end if;
end
$$;
comment on function private.require_organization(uuid) is 'Raises organization_not_found for an unknown organization.';

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
    raise exception using errcode = '22023', message = 'invalid_amounts', detail = 'Amounts must be an object of pool keys to whole numbers, e.g. {"ai": 5}.';
  end if;
  for v_key, v_value in select * from jsonb_each(p_amounts) loop
    if not exists (select 1 from public.credit_pools where key = v_key) then
      raise exception using errcode = 'PT404', message = 'pool_not_found', detail = format('No credit pool %L.', v_key);
    end if;
    if jsonb_typeof(v_value) <> 'number' or v_value::numeric <> trunc(v_value::numeric)
       or v_value::numeric < (case when p_allow_zero then 0 else 1 end) or v_value::numeric > 1000000000 then
      raise exception using errcode = '22023', message = 'invalid_amounts',
        detail = format('The amount for %s must be a whole number from %s to 1000000000.', v_key, case when p_allow_zero then 0 else 1 end);
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
    raise exception using errcode = '22023', message = 'invalid_metadata', detail = 'p_metadata must be a JSON object of at most 8 KB.';
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
      raise exception using errcode = '22023', message = 'action_disabled', detail = format('The action %L is disabled.', p_action_type);
    end if;
    raise exception using errcode = 'PT404', message = 'unknown_action', detail = format('No action %L.', p_action_type);
  end if;
end
$$;
comment on function private.action_costs(text, integer) is 'The per-pool cost of an action; raises unknown_action or action_disabled.';

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
         v_reservation.id, auth.uid(), case when p_status = 'expired' then 'system' else private.credit_caller_role() end, p_now
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
    select id, remaining, expires_at from public.credit_grants
    where organization_id = p_organization_id and pool_key = p_pool and remaining > 0 and expires_at > p_now
    order by priority, expires_at, (kind = 'purchase'), created_at, id
  loop
    exit when v_need = 0;
    v_take := least(v_grant.remaining, v_need);
    update public.credit_grants set remaining = remaining - v_take where id = v_grant.id;
    v_draws := v_draws || jsonb_build_object('pool', p_pool, 'grant_id', v_grant.id, 'amount', v_take, 'expires_at', v_grant.expires_at);
    v_need := v_need - v_take;
  end loop;
  if v_need > 0 then
    -- Callers check the balance first; reaching this is a bug, and it aborts the transaction.
    raise exception 'draw_from_grants: % credits short in pool % of %', v_need, p_pool, p_organization_id;
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
    select id, remaining into v_head from public.credit_grants
    where organization_id = p_organization_id and pool_key = v_pool and remaining > 0 and expires_at > p_now
    order by priority, expires_at, (kind = 'purchase'), created_at, id
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
          private.credit_caller_role(), coalesce(p_metadata, '{}'::jsonb), p_now);
  perform private.close_credit_pools(p_organization_id, v_pools, p_now);
  return v_grant_id;
end
$$;
comment on function private.add_credit_grant(uuid, text, public.credit_grant_kind, bigint, timestamptz, integer, text, jsonb, timestamptz, public.credit_entry_kind, uuid, uuid) is
  'Puts credits into a pool as a grant, with its ledger entry.';

-- Starts a billing period: the old plan allocation expires now, the new one is granted until
-- the period's end, and the low thresholds follow the new allocation.
create function private.start_plan_period(
  p_organization_id uuid, p_plan_key text, p_period_start timestamptz, p_now timestamptz,
  p_grant_allocation boolean default true
)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_plan public.credit_plans;
  v_period_end timestamptz;
  v_pools text[];
  v_allocation record;
begin
  select * into v_plan from public.credit_plans where key = p_plan_key;
  v_period_end := p_period_start + v_plan.period;

  insert into public.organization_plans (organization_id, plan_key, period_start, period_end)
  values (p_organization_id, p_plan_key, p_period_start, v_period_end)
  on conflict (organization_id) do update
    set plan_key = excluded.plan_key, period_start = excluded.period_start, period_end = excluded.period_end;

  select array_agg(key order by key) into v_pools from public.credit_pools;
  v_pools := private.open_credit_pools(p_organization_id, v_pools, p_now);

  -- The previous allocation ends now, including credits a reservation holds (a commit still
  -- charges them; a release lets them expire). Purchases and other grants stay.
  update public.credit_grants set expires_at = p_now
  where organization_id = p_organization_id and kind = 'plan_allocation' and expires_at > p_now;

  for v_allocation in
    select pool_key, amount from public.credit_plan_allocations
    where plan_key = p_plan_key and amount > 0 and p_grant_allocation
    order by pool_key
  loop
    with g as (
      insert into public.credit_grants (organization_id, pool_key, kind, amount, remaining, expires_at, source, created_at)
      values (p_organization_id, v_allocation.pool_key, 'plan_allocation', v_allocation.amount, v_allocation.amount, v_period_end,
              format('plan:%s:%s', p_plan_key, to_char(p_period_start at time zone 'UTC', 'YYYY-MM-DD')), p_now)
      returning id
    )
    insert into public.credit_ledger (transaction_id, organization_id, pool_key, kind, amount, grant_id, actor_role, metadata, created_at)
    select gen_random_uuid(), p_organization_id, v_allocation.pool_key, 'grant', v_allocation.amount, g.id, 'system',
           jsonb_build_object('plan', p_plan_key, 'period_start', p_period_start, 'period_end', v_period_end), p_now
    from g;
  end loop;

  update public.credit_balances b
  set low_threshold = coalesce(b.low_threshold_override,
        (select a.amount / 10 from public.credit_plan_allocations a where a.plan_key = p_plan_key and a.pool_key = b.pool_key), 0)
  where b.organization_id = p_organization_id;

  perform private.close_credit_pools(p_organization_id, v_pools, p_now);
end
$$;
comment on function private.start_plan_period(uuid, text, timestamptz, timestamptz, boolean) is
  'Starts a billing period on a plan: expires the old allocation, grants the new one (unless p_grant_allocation is false), resets thresholds.';

-- Free credits are bounded per user: a user may own only so many organizations on a free plan
-- (setting free_organizations_per_user), and a slug gets the free first allocation once ever,
-- so deleting and re-creating an organization does not grant it again. Organizations the
-- service role creates (operators, provisioning backends) are not limited.
insert into private.settings (key, value, description) values
  ('free_organizations_per_user', '3', 'How many organizations on a free plan one user may own; creating one more is refused (free_organization_limit).');

create table private.free_allocations (
  slug text primary key,
  organization_id uuid not null,
  user_id uuid references auth.users (id) on delete set null,
  granted_at timestamptz not null default now()
);
comment on table private.free_allocations is 'Slugs whose organization got the free first allocation; kept after the organization is deleted.';
comment on column private.free_allocations.slug is 'The organization''s slug when it was created.';
comment on column private.free_allocations.organization_id is 'The organization that got the allocation (no foreign key: it may be gone).';
comment on column private.free_allocations.user_id is 'Who created it.';
comment on column private.free_allocations.granted_at is 'When.';
alter table private.free_allocations enable row level security;
grant select on private.free_allocations to service_role;
create index free_allocations_user_id_idx on private.free_allocations (user_id);

create function private.limit_free_organizations()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_owned integer;
  v_limit integer := (private.setting('free_organizations_per_user') #>> '{}')::integer;
begin
  if new.created_by is null or private.credit_caller_role() = 'service_role' then
    return new;
  end if;
  -- One creation at a time per user, so two racing creations cannot both pass the count.
  perform pg_advisory_xact_lock(hashtextextended('free_organizations:' || new.created_by::text, 0));
  select count(*) into v_owned
  from public.organization_members m
  join public.organization_plans op on op.organization_id = m.organization_id
  join public.credit_plans p on p.key = op.plan_key
  where m.user_id = new.created_by and m.role = 'owner' and p.is_free;
  if v_owned >= v_limit then
    raise exception using errcode = 'P0001', message = 'free_organization_limit',
      detail = format('You own %s organizations on a free plan, the most allowed: upgrade or delete one first.', v_owned);
  end if;
  return new;
end
$$;
comment on function private.limit_free_organizations() is 'Trigger: refuses a user''s organization beyond free_organizations_per_user on a free plan.';

create trigger organizations_limit_free
before insert on public.organizations
for each row execute function private.limit_free_organizations();

-- Every new organization starts on starter; its first allocation is granted unless its slug had one.
create function private.start_organization_on_starter()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  insert into private.free_allocations (slug, organization_id, user_id)
  values (new.slug, new.id, new.created_by)
  on conflict (slug) do nothing;
  perform private.start_plan_period(new.id, 'starter', now(), now(), found);
  return null;
end
$$;
comment on function private.start_organization_on_starter() is
  'Trigger: puts a new organization on the starter plan, with its first allocation unless its slug got one before.';

create trigger organizations_start_on_starter
after insert on public.organizations
for each row execute function private.start_organization_on_starter();

-- A new pool gets a balance row in every organization at once.
create function private.add_pool_balances()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  insert into public.credit_balances (organization_id, pool_key)
  select o.id, new.key from public.organizations o
  on conflict do nothing;
  return null;
end
$$;
comment on function private.add_pool_balances() is 'Trigger: creates the balance rows of a new pool.';

create trigger credit_pools_add_balances
after insert on public.credit_pools
for each row execute function private.add_pool_balances();

-- =============================================================================================
-- consume_credits_rpc
-- =============================================================================================
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
  -- private.credit_caller_role(), inlined: calling a function with its own search_path costs
  -- this hot function a fifth of its throughput (the path is re-resolved after every switch).
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
  v_open text[];
  v_consumed jsonb := '{}'::jsonb;
  v_remaining jsonb := '{}'::jsonb;
  v_draws jsonb;
  v_available bigint;
  v_debit record;
  v_pool text;
  v_cost bigint;
  i integer;
begin
  -- Validate the input before touching anything.
  if p_organization_id is null then
    raise exception using errcode = '22023', message = 'invalid_organization', detail = 'p_organization_id is required.';
  end if;
  if p_quantity is null or p_quantity < 0 or p_quantity > 1000000 then
    raise exception using errcode = '22023', message = 'invalid_quantity', detail = 'p_quantity must be a whole number from 0 to 1000000.';
  end if;
  -- The rule of private.check_metadata, inlined (a call costs this hot path dearly).
  if jsonb_typeof(v_metadata) <> 'object' or octet_length(v_metadata::text) > 8192 then
    raise exception using errcode = '22023', message = 'invalid_metadata', detail = 'p_metadata must be a JSON object of at most 8 KB.';
  end if;
  if p_idempotency_key is not null and p_idempotency_key !~ '^[A-Za-z0-9_.:-]{1,255}$' then
    raise exception using errcode = '22023', message = 'invalid_idempotency_key',
      detail = 'An idempotency key is 1 to 255 letters, digits, and _ . : - characters.';
  end if;

  -- A retry with the same key gets the first call's result and is charged nothing. The insert
  -- makes a concurrent retry wait for the first call's commit, then see its key. A stored
  -- result is only shown to a caller allowed to charge the organization (the rule of
  -- private.authorize_credit_caller, inlined as in the hot path below); a key inserted by
  -- anyone else goes away with the error that follows.
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
        perform private.authorize_credit_caller(p_organization_id);
        raise exception using errcode = 'PT409', message = 'idempotency_key_reused',
          detail = 'This idempotency key was used with different arguments.';
      end if;
      return v_result || '{"idempotent_replay": true}'::jsonb;
    end if;
  end if;

  -- Hot path: an enabled one-pool action, a caller allowed to charge this organization (the
  -- rule of private.authorize_credit_caller, inlined: each call of a function with its own
  -- search_path costs this path dearly), a head grant that covers the cost and nothing expired:
  -- one statement debits the balance row and appends the ledger entry. A plain update by key
  -- keeps the re-check cheap when it waited for a concurrent writer of the same row. When
  -- anything is not so, nothing is debited and the code below says why or takes a slower path.
  if p_quantity > 0 then
    select count(*), min(c.pool_key), min(c.amount) * p_quantity into i, v_pool, v_cost
    from public.credit_action_costs c
    where c.action_key = p_action_type
      and exists (select 1 from public.credit_actions a where a.key = p_action_type and a.is_enabled);
    if i = 1 and (v_role = 'service_role' or (v_role = 'authenticated' and exists (
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
  end if;

  -- Several pools whose head grants cover the cost: lock their rows in pool order (never a
  -- deadlock), check them all, then debit them all in one statement, so a lacking pool leaves
  -- the others untouched.
  if v_result is null and p_quantity > 0 and cardinality(v_pools) > 1 then
    select count(*) filter (where covered) into i from (
      select b.head_remaining >= n.cost and b.next_expiry_at > v_now as covered
      from public.credit_balances b join unnest(v_pools, v_costs) as n (pool_key, cost) on n.pool_key = b.pool_key
      where b.organization_id = p_organization_id
        and (v_role = 'service_role' or (v_role = 'authenticated' and exists (
              select 1 from public.organization_members m
              where m.organization_id = p_organization_id and m.user_id = v_actor)))
      order by b.pool_key
      for update of b
    ) locked;
    if i = cardinality(v_pools) then
      for v_debit in
        with debit as (
          update public.credit_balances b
          set available = b.available - n.cost, head_remaining = b.head_remaining - n.cost
          from unnest(v_pools, v_costs) as n (pool_key, cost)
          where b.organization_id = p_organization_id and b.pool_key = n.pool_key
          returning b.pool_key, b.available, b.head_grant_id, b.low_threshold, n.cost
        ), entry as (
          insert into public.credit_ledger (transaction_id, organization_id, pool_key, kind, amount, grant_id, action_key,
                                            quantity, actor_id, actor_role, metadata, created_at)
          select v_tx, p_organization_id, debit.pool_key, 'consumption', -debit.cost, debit.head_grant_id, p_action_type,
                 p_quantity, v_actor, v_role, v_metadata, v_now
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
      v_result := jsonb_build_object('success', true, 'transaction_id', v_tx, 'consumed', v_consumed, 'remaining', v_remaining);
    end if;
  end if;

  -- General path: several pools or grants, expired credits to sweep, a dry run, or a caller
  -- who may not charge this organization (refused here).
  if v_result is null then
    perform private.authorize_credit_caller(p_organization_id);
    perform private.require_organization(p_organization_id);
    v_open := private.open_credit_pools(p_organization_id, v_pools, v_now);
    for i in 1 .. cardinality(v_pools) loop
      v_available := private.pool_available(p_organization_id, v_pools[i], v_now);
      if v_available < v_costs[i] then
        v_result := private.insufficient_credits(v_pools[i], v_costs[i], v_available);
        exit;
      end if;
      v_remaining := v_remaining || jsonb_build_object(v_pools[i], v_available - v_costs[i]);
      v_consumed := v_consumed || jsonb_build_object(v_pools[i], v_costs[i]);
    end loop;

    if v_result is null and p_quantity = 0 then
      -- A dry run: would one unit succeed, and what would remain.
      v_result := jsonb_build_object('success', true, 'dry_run', true, 'would_consume', v_consumed, 'remaining', v_remaining);
    elsif v_result is null then
      for i in 1 .. cardinality(v_pools) loop
        v_draws := private.draw_from_grants(p_organization_id, v_pools[i], v_costs[i], v_now);
        insert into public.credit_ledger (transaction_id, organization_id, pool_key, kind, amount, grant_id, action_key,
                                          quantity, actor_id, actor_role, metadata, created_at)
        select v_tx, p_organization_id, d.pool, 'consumption', -d.amount, d.grant_id, p_action_type,
               p_quantity, v_actor, v_role, v_metadata, v_now
        from jsonb_to_recordset(v_draws) as d (pool text, grant_id uuid, amount bigint);
      end loop;
      v_result := jsonb_build_object('success', true, 'transaction_id', v_tx, 'consumed', v_consumed, 'remaining', v_remaining);
    elsif p_quantity = 0 then
      v_result := v_result || '{"dry_run": true}'::jsonb;
    end if;
    perform private.close_credit_pools(p_organization_id, v_open, v_now);
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
  perform private.authorize_credit_caller(p_organization_id);
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
-- alone (its own subtransaction).
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
    raise exception using errcode = '22023', message = 'invalid_items', detail = 'p_items must be an array of 1 to 100 items.';
  end if;
  perform private.lock_pools_of_actions(p_organization_id,
    array(select distinct i ->> 'action_type' from jsonb_array_elements(p_items) i where jsonb_typeof(i) = 'object'));
  for v_item in select value from jsonb_array_elements(p_items) loop
    begin
      if jsonb_typeof(v_item) <> 'object' then
        raise exception using errcode = '22023', message = 'invalid_items', detail = 'Each item is an object.';
      end if;
      v_results := v_results || jsonb_build_array(private.consume_credits(
        p_organization_id,
        v_item ->> 'action_type',
        coalesce((v_item ->> 'quantity')::integer, 1),
        v_item ->> 'idempotency_key',
        coalesce(v_item -> 'metadata', '{}'::jsonb)));
    exception
      when sqlstate '22023' or sqlstate 'PT404' or sqlstate 'PT409' or sqlstate '22P02' or sqlstate '22003' then
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

-- =============================================================================================
-- Reservations
-- =============================================================================================
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
  v_role text := private.authorize_credit_caller(p_organization_id);
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
    raise exception using errcode = '22023', message = 'invalid_ttl', detail = 'A reservation lasts 1 second to 24 hours.';
  end if;
  if p_idempotency_key is not null and p_idempotency_key !~ '^[A-Za-z0-9_.:-]{1,255}$' then
    raise exception using errcode = '22023', message = 'invalid_idempotency_key',
      detail = 'An idempotency key is 1 to 255 letters, digits, and _ . : - characters.';
  end if;
  perform private.check_metadata(p_metadata);
  if (p_action_type is null) = (p_amounts is null) then
    raise exception using errcode = '22023', message = 'invalid_amounts', detail = 'Give either an action or per-pool amounts.';
  end if;
  if p_action_type is not null then
    if p_quantity is null or p_quantity < 1 or p_quantity > 1000000 then
      raise exception using errcode = '22023', message = 'invalid_quantity', detail = 'p_quantity must be from 1 to 1000000.';
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
        raise exception using errcode = 'PT409', message = 'idempotency_key_reused',
          detail = 'This idempotency key was used for another reservation.';
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
    raise exception using errcode = 'PT404', message = 'reservation_not_found', detail = 'No reservation has this id.';
  end if;
  perform private.authorize_credit_caller(v_org);
  -- Pools first, then the reservation row: the order open_credit_pools uses.
  v_pools := private.open_credit_pools(v_org, array(select jsonb_object_keys(v_amounts)), p_now);
  select status into v_status from public.credit_reservations where id = p_reservation_id for update;
  if v_status <> 'active' then
    raise exception using errcode = 'PT409', message = 'reservation_not_active',
      detail = format('The reservation is %s.', v_status);
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
  v_role text := private.credit_caller_role();
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
      raise exception using errcode = '22023', message = 'invalid_amounts', detail = 'Commit only pools the reservation holds.';
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
        raise exception using errcode = '22023', message = 'exceeds_reservation',
          detail = format('%s %s credits used but %s held; the plan allows no overage.', v_pool.amount, v_pool.pool, v_held);
      end if;
      v_available := private.pool_available(v_reservation.organization_id, v_pool.pool, v_now);
      if v_excess > v_available and v_excess - v_available + coalesce((
           select sum(o.amount) from public.credit_overages o
           where o.organization_id = v_reservation.organization_id and o.pool_key = v_pool.pool
             and o.created_at >= v_terms.period_start), 0) > v_terms.overage_cap then
        raise exception using errcode = 'P0001', message = 'overage_cap_exceeded',
          detail = format('This would take %s overage past the plan''s cap of %s per period.', v_pool.pool, v_terms.overage_cap);
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

-- =============================================================================================
-- Grants, refunds, plans (administration)
-- =============================================================================================
create function private.grant_credits(
  p_organization_id uuid,
  p_pool text,
  p_amount bigint,
  p_kind text,
  p_expires_at timestamptz,
  p_priority integer,
  p_source text,
  p_metadata jsonb
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_now timestamptz := now();
  v_kind public.credit_grant_kind;
  v_expires_at timestamptz := p_expires_at;
  v_grant_id uuid;
  v_tx uuid := gen_random_uuid();
begin
  perform private.authorize_credit_admin();
  perform private.require_organization(p_organization_id);
  if not exists (select 1 from public.credit_pools where key = p_pool) then
    raise exception using errcode = 'PT404', message = 'pool_not_found', detail = format('No credit pool %L.', p_pool);
  end if;
  if p_amount is null or p_amount < 1 or p_amount > 1000000000 then
    raise exception using errcode = '22023', message = 'invalid_amount', detail = 'p_amount must be from 1 to 1000000000.';
  end if;
  if p_kind is null or p_kind not in ('promotion', 'manual', 'purchase') then
    raise exception using errcode = '22023', message = 'invalid_kind',
      detail = 'p_kind is manual, promotion or purchase (allocations come from plans, refunds from refund_credits).';
  end if;
  v_kind := p_kind::public.credit_grant_kind;
  if v_expires_at is null and v_kind = 'purchase' then
    select v_now + purchase_validity into v_expires_at from public.credit_pools where key = p_pool;
  end if;
  v_expires_at := coalesce(v_expires_at, 'infinity');
  if v_expires_at <= v_now then
    raise exception using errcode = '22023', message = 'invalid_expiry', detail = 'p_expires_at must be in the future.';
  end if;
  if p_priority is null or p_priority not between 0 and 1000 then
    raise exception using errcode = '22023', message = 'invalid_priority', detail = 'p_priority is from 0 (drawn first) to 1000.';
  end if;
  perform private.check_metadata(p_metadata);
  v_grant_id := private.add_credit_grant(p_organization_id, p_pool, v_kind, p_amount, v_expires_at, p_priority,
                                         p_source, p_metadata, v_now, 'grant', null, v_tx);
  return jsonb_build_object('success', true, 'grant_id', v_grant_id, 'transaction_id', v_tx, 'pool', p_pool,
                            'amount', p_amount, 'expires_at', v_expires_at);
end
$$;
comment on function private.grant_credits(uuid, text, bigint, text, timestamptz, integer, text, jsonb) is 'The body of grant_credits.';
grant execute on function private.grant_credits(uuid, text, bigint, text, timestamptz, integer, text, jsonb) to authenticated, service_role;

create function public.grant_credits(
  p_organization_id uuid,
  p_pool text,
  p_amount bigint,
  p_kind text default 'manual',
  p_expires_at timestamptz default null,
  p_priority integer default 100,
  p_source text default null,
  p_metadata jsonb default '{}'::jsonb
)
returns jsonb
language sql
security invoker
set search_path = ''
as $$
  select private.grant_credits(p_organization_id, p_pool, p_amount, p_kind, p_expires_at, p_priority, p_source, p_metadata)
$$;
comment on function public.grant_credits(uuid, text, bigint, text, timestamptz, integer, text, jsonb) is
  'Adds credits to a pool (service role and platform admins). p_kind: manual, promotion or purchase (purchases expire after the pool''s purchase_validity unless p_expires_at is given). Lower p_priority is drawn first.';
grant execute on function public.grant_credits(uuid, text, bigint, text, timestamptz, integer, text, jsonb) to authenticated, service_role;

create function private.refund_credits(p_transaction_id uuid, p_amounts jsonb, p_reason text)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_now timestamptz := now();
  v_org uuid;
  v_pools text[];
  v_open text[];
  v_refund record;
  v_tx uuid := gen_random_uuid();
  v_refunded jsonb := '{}'::jsonb;
begin
  perform private.authorize_credit_admin();
  if char_length(p_reason) > 500 then
    raise exception using errcode = '22023', message = 'invalid_reason', detail = 'A refund reason is at most 500 characters.';
  end if;
  select organization_id, array_agg(distinct pool_key order by pool_key) into v_org, v_pools
  from public.credit_ledger where transaction_id = p_transaction_id and kind = 'consumption'
  group by organization_id;
  if v_org is null then
    raise exception using errcode = 'PT404', message = 'transaction_not_found', detail = 'No consumption has this transaction id.';
  end if;
  if p_amounts is not null then
    perform private.parse_pool_amounts(p_amounts);
  end if;
  -- Locking the pools serialises refunds of the same transaction: what was refunded before is
  -- read after the lock.
  v_open := private.open_credit_pools(v_org, v_pools, v_now);
  for v_refund in
    with consumed as (
      select l.pool_key, (-sum(l.amount))::bigint as amount, max(g.expires_at) as expires_at
      from public.credit_ledger l left join public.credit_grants g on g.id = l.grant_id
      where l.transaction_id = p_transaction_id and l.kind = 'consumption'
      group by l.pool_key
    ), refunded as (
      select l.pool_key, sum(l.amount)::bigint as amount from public.credit_ledger l
      where l.refund_of = p_transaction_id and l.kind = 'refund' group by l.pool_key
    )
    select c.pool_key, c.amount - coalesce(r.amount, 0) as refundable, c.expires_at,
           case when p_amounts is null then c.amount - coalesce(r.amount, 0) else coalesce((p_amounts ->> c.pool_key)::bigint, 0) end as requested
    from consumed c left join refunded r using (pool_key)
    order by c.pool_key
  loop
    if v_refund.requested > v_refund.refundable then
      raise exception using errcode = '22023', message = 'refund_exceeds_consumed',
        detail = format('At most %s %s credits of this transaction can still be refunded.', v_refund.refundable, v_refund.pool_key);
    end if;
    if v_refund.requested > 0 then
      -- The refund lives as long as the credits it gives back would have.
      perform private.add_credit_grant(v_org, v_refund.pool_key, 'refund', v_refund.requested,
        greatest(coalesce(v_refund.expires_at, 'infinity'), v_now + interval '1 day'), 100,
        format('refund:%s', p_transaction_id), jsonb_strip_nulls(jsonb_build_object('reason', p_reason)), v_now, 'refund', p_transaction_id, v_tx);
      v_refunded := v_refunded || jsonb_build_object(v_refund.pool_key, v_refund.requested);
    end if;
  end loop;
  if p_amounts is not null and exists (select 1 from jsonb_object_keys(p_amounts) k where not (k = any (v_pools))) then
    raise exception using errcode = '22023', message = 'refund_exceeds_consumed', detail = 'The transaction consumed nothing from some of these pools.';
  end if;
  perform private.close_credit_pools(v_org, v_open, v_now);
  return jsonb_build_object('success', true, 'transaction_id', v_tx, 'refund_of', p_transaction_id, 'refunded', v_refunded);
end
$$;
comment on function private.refund_credits(uuid, jsonb, text) is 'The body of refund_credits.';
grant execute on function private.refund_credits(uuid, jsonb, text) to authenticated, service_role;

create function public.refund_credits(p_transaction_id uuid, p_amounts jsonb default null, p_reason text default null)
returns jsonb
language sql
security invoker
set search_path = ''
as $$
  select private.refund_credits(p_transaction_id, p_amounts, p_reason)
$$;
comment on function public.refund_credits(uuid, jsonb, text) is
  'Gives back a consumption (service role and platform admins): everything still refundable, or per-pool p_amounts. Never more than was consumed. Errors: transaction_not_found, refund_exceeds_consumed, invalid_amounts.';
grant execute on function public.refund_credits(uuid, jsonb, text) to authenticated, service_role;

create function private.change_plan(p_organization_id uuid, p_plan_key text, p_now timestamptz)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
begin
  if private.credit_caller_role() <> 'service_role' then
    raise exception using errcode = '42501', message = 'not_authorized', detail = 'Only the service role (billing) changes plans.';
  end if;
  perform private.require_organization(p_organization_id);
  if not exists (select 1 from public.credit_plans where key = p_plan_key and is_active) then
    raise exception using errcode = 'PT404', message = 'plan_not_found', detail = format('No active plan %L.', p_plan_key);
  end if;
  perform private.start_plan_period(p_organization_id, p_plan_key, p_now, p_now);
  return (select jsonb_build_object('success', true, 'plan', plan_key, 'period_start', period_start, 'period_end', period_end)
          from public.organization_plans where organization_id = p_organization_id);
end
$$;
comment on function private.change_plan(uuid, text, timestamptz) is 'The body of change_plan.';
grant execute on function private.change_plan(uuid, text, timestamptz) to service_role;

create function public.change_plan(p_organization_id uuid, p_plan_key text, p_now timestamptz default now())
returns jsonb
language sql
security invoker
set search_path = ''
as $$
  select private.change_plan(p_organization_id, p_plan_key, p_now)
$$;
comment on function public.change_plan(uuid, text, timestamptz) is
  'Moves an organization to a plan (service role: billing calls it): the rest of the old allocation expires, a new period starts with the new allocation.';
grant execute on function public.change_plan(uuid, text, timestamptz) to service_role;

create function private.set_credit_low_threshold(p_organization_id uuid, p_pool text, p_threshold bigint)
returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
  if not (private.credit_caller_role() = 'service_role' or private.has_organization_role(p_organization_id, '{owner,admin}')) then
    raise exception using errcode = '42501', message = 'not_authorized', detail = 'Only owners and admins set thresholds.';
  end if;
  if p_threshold is not null and (p_threshold < 0 or p_threshold > 1000000000) then
    raise exception using errcode = '22023', message = 'invalid_threshold', detail = 'A threshold is from 0 to 1000000000, or null for the default.';
  end if;
  update public.credit_balances b
  set low_threshold_override = p_threshold,
      low_threshold = coalesce(p_threshold, (
        select a.amount / 10 from public.organization_plans op
        join public.credit_plan_allocations a on a.plan_key = op.plan_key and a.pool_key = b.pool_key
        where op.organization_id = b.organization_id), 0)
  where b.organization_id = p_organization_id and b.pool_key = p_pool;
  if not found then
    raise exception using errcode = 'PT404', message = 'pool_not_found', detail = format('No credit pool %L.', p_pool);
  end if;
end
$$;
comment on function private.set_credit_low_threshold(uuid, text, bigint) is 'The body of set_credit_low_threshold.';
grant execute on function private.set_credit_low_threshold(uuid, text, bigint) to authenticated, service_role;

create function public.set_credit_low_threshold(p_organization_id uuid, p_pool text, p_threshold bigint)
returns void
language sql
security invoker
set search_path = ''
as $$
  select private.set_credit_low_threshold(p_organization_id, p_pool, p_threshold)
$$;
comment on function public.set_credit_low_threshold(uuid, text, bigint) is
  'Sets the balance below which credits.low is emitted for a pool (owners and admins); null restores 10% of the allocation.';
grant execute on function public.set_credit_low_threshold(uuid, text, bigint) to authenticated, service_role;

-- =============================================================================================
-- Reads
-- =============================================================================================
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
  perform private.authorize_credit_caller(p_organization_id);
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
  perform private.authorize_credit_caller(p_organization_id);
  if p_from is null or p_to is null or p_to <= p_from or p_to - p_from > interval '366 days' then
    raise exception using errcode = '22023', message = 'invalid_range', detail = 'p_from must be before p_to, at most 366 days apart.';
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

-- =============================================================================================
-- Jobs (pg_cron): expiry and period renewal, idempotency key retention
-- =============================================================================================
create function private.expire_credits(p_now timestamptz default now(), p_limit integer default 500)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_org uuid;
  v_count integer := 0;
begin
  for v_org in
    select organization_id from (
      select organization_id from public.credit_balances where next_expiry_at <= p_now
      union
      select organization_id from public.credit_reservations where status = 'active' and expires_at <= p_now
    ) due
    limit p_limit
  loop
    perform private.close_credit_pools(v_org,
      private.open_credit_pools(v_org, array(select pool_key from public.credit_balances where organization_id = v_org and next_expiry_at <= p_now), p_now),
      p_now);
    v_count := v_count + 1;
  end loop;
  return v_count;
end
$$;
comment on function private.expire_credits(timestamptz, integer) is
  'Removes expired credits and releases expired reservations (pg_cron, every minute); returns how many organizations it settled.';
grant execute on function private.expire_credits(timestamptz, integer) to service_role;

create function private.renew_credit_periods(p_now timestamptz default now(), p_limit integer default 500)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_plan record;
  v_start timestamptz;
  v_count integer := 0;
begin
  for v_plan in
    select op.organization_id, op.plan_key, op.period_end, p.period
    from public.organization_plans op join public.credit_plans p on p.key = op.plan_key
    where op.period_end <= p_now
    order by op.period_end
    limit p_limit
    for update of op skip locked
  loop
    -- The new period starts where the last one ended (missed periods are not granted twice).
    v_start := v_plan.period_end;
    while v_start + v_plan.period <= p_now loop
      v_start := v_start + v_plan.period;
    end loop;
    perform private.start_plan_period(v_plan.organization_id, v_plan.plan_key, v_start, p_now);
    v_count := v_count + 1;
  end loop;
  return v_count;
end
$$;
comment on function private.renew_credit_periods(timestamptz, integer) is
  'Starts the next billing period of organizations whose period ended (pg_cron, every 5 minutes); returns how many it renewed.';
grant execute on function private.renew_credit_periods(timestamptz, integer) to service_role;

create function private.purge_credit_idempotency_keys(p_now timestamptz default now())
returns bigint
language sql
security definer
set search_path = ''
as $$
  with gone as (delete from private.credit_idempotency_keys where created_at < p_now - interval '7 days' returning 1)
  select count(*) from gone
$$;
comment on function private.purge_credit_idempotency_keys(timestamptz) is 'Deletes idempotency keys older than 7 days (pg_cron, hourly).';
grant execute on function private.purge_credit_idempotency_keys(timestamptz) to service_role;

-- The money records of deleted organizations leave when their tombstone's retention ends.
create function private.purge_deleted_organization_records(p_now timestamptz default now(), p_limit integer default 100)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_org uuid;
  v_count integer := 0;
begin
  perform set_config('private.allow_purge', 'on', true);
  for v_org in
    select organization_id from private.deleted_organizations
    where records_purged_at is null and records_retained_until <= p_now
    order by records_retained_until
    limit p_limit
    for update skip locked
  loop
    delete from public.credit_ledger where organization_id = v_org;
    delete from public.credit_overages where organization_id = v_org;
    update private.deleted_organizations set records_purged_at = p_now where organization_id = v_org;
    v_count := v_count + 1;
  end loop;
  perform set_config('private.allow_purge', '', true);
  return v_count;
end
$$;
comment on function private.purge_deleted_organization_records(timestamptz, integer) is
  'Deletes the ledger and overage of organizations deleted longer ago than their retention (pg_cron, daily); returns how many it purged.';
grant execute on function private.purge_deleted_organization_records(timestamptz, integer) to service_role;

select cron.schedule('credits-expire', '* * * * *', 'select private.expire_credits()');
select cron.schedule('credits-renew-periods', '*/5 * * * *', 'select private.renew_credit_periods()');
select cron.schedule('credits-purge-idempotency-keys', '17 * * * *', 'select private.purge_credit_idempotency_keys()');
select cron.schedule('deleted-organizations-purge-records', '41 3 * * *', 'select private.purge_deleted_organization_records()');

-- =============================================================================================
-- Row-level security: members read their organization's credits; all writes go through the
-- functions above.
-- =============================================================================================
alter table public.organization_plans enable row level security;
alter table public.credit_grants enable row level security;
alter table public.credit_balances enable row level security;
alter table public.credit_ledger enable row level security;
alter table public.credit_reservations enable row level security;
alter table public.credit_overages enable row level security;


create policy "Members can read their organization's plan"
on public.organization_plans for select to authenticated
using (organization_id in (select private.member_organization_ids()));

create policy "Members can read their organization's grants"
on public.credit_grants for select to authenticated
using (organization_id in (select private.member_organization_ids()));

create policy "Members can read their organization's balances"
on public.credit_balances for select to authenticated
using (organization_id in (select private.member_organization_ids()));

create policy "Members can read their organization's ledger"
on public.credit_ledger for select to authenticated
using (organization_id in (select private.member_organization_ids()));

create policy "Members can read their organization's reservations"
on public.credit_reservations for select to authenticated
using (organization_id in (select private.member_organization_ids()));

create policy "Owners, admins and billing can read overage"
on public.credit_overages for select to authenticated
using (organization_id in (select private.organization_ids_with_role('{owner,admin,billing}')));

-- =============================================================================================
-- Studio: an organization's credits at a glance
-- =============================================================================================
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
