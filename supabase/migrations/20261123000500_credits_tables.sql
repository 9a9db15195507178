-- =============================================================================================
-- Credits: the tables (plans per organization, grants, balances, the ledger, reservations, overage)
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
-- Bad input raises a catalogued error (private.raise); running out of credits is a result, not
-- an error: {"success": false, "error": "insufficient_credits", ...}.
--
-- The chapters: tables (this one), engine, plans, consume, reservations, admin, reads, jobs.

create type public.credit_grant_kind as enum ('plan_allocation', 'promotion', 'manual', 'refund', 'purchase');
comment on type public.credit_grant_kind is 'How credits entered a pool. Purchased credits are drawn after granted ones.';

create type public.credit_entry_kind as enum ('grant', 'consumption', 'refund', 'expiry', 'hold', 'release', 'adjustment');
comment on type public.credit_entry_kind is
  'Ledger movements: grant (+), consumption (-), refund (+), expiry (-), hold (- while reserved), release (+ a hold given back), adjustment (either sign).';

create type public.credit_reservation_status as enum ('active', 'committed', 'released', 'expired');
comment on type public.credit_reservation_status is 'A reservation holds credits while active; it ends committed, released or expired.';

insert into private.error_codes (code, class, meaning) values
  ('unsettled_balance', 'rule', 'The organization owes money (unbilled overage, an open balance): settle it first.');

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
alter table public.organization_plans enable row level security;
create policy "Members can read their organization's plan"
on public.organization_plans for select to authenticated
using (organization_id in (select private.member_organization_ids()));

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
alter table public.credit_grants enable row level security;
create policy "Members can read their organization's grants"
on public.credit_grants for select to authenticated
using (organization_id in (select private.member_organization_ids()));

-- The draw order (private.grants_in_draw_order): this index serves it, so the two must agree.
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
alter table public.credit_balances enable row level security;
create policy "Members can read their organization's balances"
on public.credit_balances for select to authenticated
using (organization_id in (select private.member_organization_ids()));

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
alter table public.credit_ledger enable row level security;
create policy "Members can read their organization's ledger"
on public.credit_ledger for select to authenticated
using (organization_id in (select private.member_organization_ids()));

create index credit_ledger_organization_id_created_at_idx on public.credit_ledger (organization_id, created_at);
create index credit_ledger_transaction_id_idx on public.credit_ledger (transaction_id);
create index credit_ledger_refund_of_idx on public.credit_ledger (refund_of) where refund_of is not null;

-- The only changes the owner's functions may make: clearing who caused a movement and its
-- caller-supplied metadata (detaching personal data), and deleting rows whose retention ended.
-- Each holds a private.permit for it; API roles cannot write the ledger at all.
create function private.guard_credit_ledger()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if tg_op = 'DELETE' and private.permitted('purge') then
    return old;
  end if;
  if tg_op = 'UPDATE' and private.permitted('detach')
     and new.actor_id is null and new.metadata = '{}'::jsonb
     and to_jsonb(new) - 'actor_id' - 'metadata' = to_jsonb(old) - 'actor_id' - 'metadata' then
    return new;
  end if;
  perform private.raise('append_only', 'The credit ledger is append-only: record a correcting movement instead.');
  return null;
end
$$;
comment on function private.guard_credit_ledger() is 'Trigger: the ledger is append-only; personal fields are cleared and rows removed only by the retention machinery.';

create trigger credit_ledger_append_only
before update or delete on public.credit_ledger
for each row execute function private.guard_credit_ledger();

create trigger credit_ledger_no_truncate
before truncate on public.credit_ledger
for each statement execute function private.guard_credit_ledger();

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
alter table public.credit_reservations enable row level security;
create policy "Members can read their organization's reservations"
on public.credit_reservations for select to authenticated
using (organization_id in (select private.member_organization_ids()));

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
alter table public.credit_overages enable row level security;
create policy "Owners, admins and billing can read overage"
on public.credit_overages for select to authenticated
using (organization_id in (select private.organization_ids_with_role('{owner,admin,billing}')));

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

-- ---------------------------------------------------------------------------------------------
-- Deleting an organization
-- ---------------------------------------------------------------------------------------------
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
    perform private.raise('unsettled_balance', format('The organization has %s unbilled overage records: settle them before deleting it.', v_unbilled));
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
  perform private.permit('detach');
  update public.credit_ledger set actor_id = null, metadata = '{}'::jsonb
  where organization_id = old.id and (actor_id is not null or metadata <> '{}'::jsonb);
  perform private.permit('detach', false);
  delete from private.credit_idempotency_keys where organization_id = old.id;
  return null;
end
$$;
comment on function private.detach_organization_credit_history() is
  'Trigger: clears the personal fields of a deleted organization''s ledger and deletes its idempotency keys.';

create trigger organizations_detach_credit_history
after delete on public.organizations
for each row execute function private.detach_organization_credit_history();

