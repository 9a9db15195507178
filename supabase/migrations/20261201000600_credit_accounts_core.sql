-- =============================================================================================
-- Credit accounts: a postpaid line of credit per organization, its transactions and its rules
-- =============================================================================================

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

-- Besides its prepaid pools an organization can have a credit account: a credit limit against
-- which overage and purchases on account are charged, settled by a statement each period
-- (20261201000620). Every movement is a row of credit_account_transactions: charges, payments,
-- adjustments, refunds and fees move amount_owed; limit and status changes are recorded there
-- too, with their reason. Charges take the account's row lock, so racing charges are serialised
-- and never pass the limit together; an idempotency key makes a retried charge charge once.

insert into private.error_codes (code, class, meaning) values
  ('credit_account_not_found', 'not_found', 'The organization has no credit account.'),
  ('credit_account_exists', 'conflict', 'The organization has a credit account already.'),
  ('credit_account_not_active', 'rule', 'The credit account is suspended, defaulted or closed: no charges on account.'),
  ('credit_limit_exceeded', 'rule', 'The charge would take the amount owed past the credit limit.'),
  ('invalid_status_transition', 'rule', 'A credit account cannot move from its status to that one.'),
  ('invalid_transaction', 'invalid_input', 'A transaction needs a type, a positive amount in minor units, and a description of at most 500 characters.'),
  ('invalid_credit_terms', 'invalid_input', 'A credit limit is 0 to 100000000 minor units, a statement day 1 to 28, payment terms 0 to 90 days.'),
  ('reason_required', 'invalid_input', 'Changes by hand need a reason (1 to 500 characters).');

create type public.credit_account_status as enum ('active', 'suspended', 'defaulted', 'closed');
comment on type public.credit_account_status is
  'active; suspended (overdue past the grace period: no charges on account); defaulted (long overdue); closed (for good).';

create type public.credit_transaction_type as enum ('charge', 'payment', 'adjustment', 'refund', 'fee', 'limit_change', 'status_change');
comment on type public.credit_transaction_type is
  'charge and fee raise what is owed; payment and refund lower it; adjustment either way; limit_change and status_change move no money and record why.';

create type public.credit_transaction_status as enum ('pending', 'completed', 'failed', 'cancelled');
comment on type public.credit_transaction_status is 'pending (a payment under way), completed, failed, cancelled.';

insert into private.settings (key, value, description) values
  ('credit_reminder_days', '3', 'How many days before a statement''s due date its billing members are reminded.'),
  ('credit_suspend_after', '"7 days"', 'How long past its due date an unpaid statement suspends the credit account.'),
  ('credit_default_after', '"30 days"', 'How long past its due date an unpaid statement defaults the credit account.'),
  ('credit_limit_rules', '{"raise_after_on_time": 3, "raise_percent": 25, "raise_max": 1000000, "lower_percent_when_late": 25}',
   'Automatic limit changes: raised by raise_percent (to at most raise_max) after raise_after_on_time statements paid on time in a row; lowered by lower_percent_when_late after a late payment; frozen (0) on default.');

-- ---------------------------------------------------------------------------------------------
-- Accounts
-- ---------------------------------------------------------------------------------------------
create table public.credit_accounts (
  organization_id uuid primary key references public.organizations (id) on delete cascade,
  currency text not null default 'eur' check (currency ~ '^[a-z]{3}$'),
  credit_limit bigint not null check (credit_limit between 0 and 100000000),
  amount_owed bigint not null default 0,
  available_credit bigint generated always as (greatest(credit_limit - amount_owed, 0)) stored,
  statement_day integer not null default 1 check (statement_day between 1 and 28),
  payment_terms_days integer not null default 14 check (payment_terms_days between 0 and 90),
  status public.credit_account_status not null default 'active',
  stripe_payment_method_id text check (stripe_payment_method_id ~ '^pm_[A-Za-z0-9_]{1,64}$'),
  billing_email text check (char_length(billing_email) <= 320),
  billing_name text check (char_length(billing_name) <= 200),
  on_time_streak integer not null default 0 check (on_time_streak >= 0),
  last_statement_at timestamptz,
  opened_by uuid references auth.users (id) on delete set null,
  opened_at timestamptz not null default now(),
  status_changed_at timestamptz not null default now(),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table public.credit_accounts is 'A postpaid line of credit: overage and purchases on account are charged to it, statements settle it.';
comment on column public.credit_accounts.organization_id is 'The organization (one account each; an organization that owes cannot be deleted).';
comment on column public.credit_accounts.currency is 'The currency everything on the account is in.';
comment on column public.credit_accounts.credit_limit is 'The most the organization may owe, in minor units.';
comment on column public.credit_accounts.amount_owed is 'What it owes now, in minor units (negative: in credit).';
comment on column public.credit_accounts.available_credit is 'What may still be charged: credit_limit - amount_owed, at least 0.';
comment on column public.credit_accounts.statement_day is 'The day of the month a statement closes (1 to 28).';
comment on column public.credit_accounts.payment_terms_days is 'Days from a statement to its due date.';
comment on column public.credit_accounts.status is 'active, suspended, defaulted or closed (transitions enforced).';
comment on column public.credit_accounts.stripe_payment_method_id is 'The saved card statements are charged to; without one, statements are sent with their due date.';
comment on column public.credit_accounts.billing_email is 'Who statements go to.';
comment on column public.credit_accounts.billing_name is 'The name on statements.';
comment on column public.credit_accounts.on_time_streak is 'Statements paid on time in a row (the limit rules read it).';
comment on column public.credit_accounts.last_statement_at is 'The end of the last statement''s period.';
comment on column public.credit_accounts.opened_by is 'The operator who opened it (null: a plan''s rule).';
comment on column public.credit_accounts.opened_at is 'When it was opened.';
comment on column public.credit_accounts.status_changed_at is 'When its status last changed.';
comment on column public.credit_accounts.created_at is 'When the row was made.';
comment on column public.credit_accounts.updated_at is 'When it last changed.';
grant select on public.credit_accounts to authenticated;
grant select, insert, update, delete on public.credit_accounts to service_role;
alter table public.credit_accounts enable row level security;
create policy "Owners and billing members read their credit account"
on public.credit_accounts for select to authenticated
using (organization_id in (select private.organization_ids_with_role('{owner,billing}')));

-- An organization that owes (or is owed) on account cannot be deleted: settle it first.
create function private.guard_organization_credit_account()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_owed bigint := (select amount_owed from public.credit_accounts where organization_id = old.id);
begin
  if coalesce(v_owed, 0) <> 0 then
    perform private.raise('unsettled_balance', format('The organization owes %s on its credit account: settle it before deleting it.', v_owed));
  end if;
  return old;
end
$$;
comment on function private.guard_organization_credit_account() is 'Trigger: refuses to delete an organization whose credit account is not settled.';

create trigger organizations_guard_credit_account
before delete on public.organizations
for each row execute function private.guard_organization_credit_account();

create trigger credit_accounts_set_updated_at
before update on public.credit_accounts
for each row execute function private.set_updated_at();

-- The allowed status transitions, whoever changes the row.
create function private.guard_credit_account_status()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if new.status is distinct from old.status then
    if not (old.status, new.status) in (
      ('active', 'suspended'), ('active', 'closed'),
      ('suspended', 'active'), ('suspended', 'defaulted'), ('suspended', 'closed'),
      ('defaulted', 'active'), ('defaulted', 'closed')) then
      perform private.raise('invalid_status_transition', format('A credit account cannot go from %s to %s.', old.status, new.status));
    end if;
    new.status_changed_at := now();
  end if;
  return new;
end
$$;
comment on function private.guard_credit_account_status() is 'Trigger: only the allowed transitions of a credit account''s status.';

create trigger credit_accounts_guard_status
before update of status on public.credit_accounts
for each row execute function private.guard_credit_account_status();

-- ---------------------------------------------------------------------------------------------
-- Transactions
-- ---------------------------------------------------------------------------------------------
create table public.credit_account_transactions (
  id uuid primary key default gen_random_uuid(),
  organization_id uuid not null references public.credit_accounts (organization_id) on delete cascade,
  type public.credit_transaction_type not null,
  status public.credit_transaction_status not null default 'completed',
  amount bigint not null check (amount between -100000000 and 100000000),
  currency text not null check (currency ~ '^[a-z]{3}$'),
  description text not null check (char_length(description) between 1 and 500),
  source_type text not null check (source_type in ('overage', 'pack', 'purchase', 'operator', 'statement', 'rule', 'system')),
  source_id text check (char_length(source_id) <= 200),
  idempotency_key text check (char_length(idempotency_key) between 1 and 255),
  statement_id uuid,
  metadata jsonb not null default '{}'::jsonb check (jsonb_typeof(metadata) = 'object'),
  created_by uuid references auth.users (id) on delete set null,
  created_at timestamptz not null default now(),
  completed_at timestamptz,
  unique (organization_id, idempotency_key),
  check ((type in ('limit_change', 'status_change')) = (amount = 0)),
  check (type not in ('charge', 'fee') or amount > 0),
  check (type not in ('payment', 'refund') or amount < 0)
);
comment on table public.credit_account_transactions is
  'Every movement on a credit account (amount > 0 raises what is owed, < 0 lowers it) and every change of its limit or status, with its reason.';
comment on column public.credit_account_transactions.id is 'The transaction.';
comment on column public.credit_account_transactions.organization_id is 'The account.';
comment on column public.credit_account_transactions.type is 'charge, payment, adjustment, refund, fee, limit_change or status_change.';
comment on column public.credit_account_transactions.status is 'pending, completed, failed or cancelled; only completed ones count.';
comment on column public.credit_account_transactions.amount is 'In minor units: positive raises what is owed (charges, fees), negative lowers it (payments, refunds); 0 for limit and status changes.';
comment on column public.credit_account_transactions.currency is 'The account''s currency.';
comment on column public.credit_account_transactions.description is 'What it is for (or why a limit or status changed).';
comment on column public.credit_account_transactions.source_type is 'Where it came from: overage, pack, purchase, operator, statement, rule, system.';
comment on column public.credit_account_transactions.source_id is 'The source''s id (the overage entry, the pack checkout, the Stripe invoice, ...).';
comment on column public.credit_account_transactions.idempotency_key is 'The caller''s key: the same key never makes a second transaction.';
comment on column public.credit_account_transactions.statement_id is 'The statement that billed it.';
comment on column public.credit_account_transactions.metadata is 'Details (the limit before and after, the statuses, ...).';
comment on column public.credit_account_transactions.created_by is 'Who made it (null: the system).';
comment on column public.credit_account_transactions.created_at is 'When.';
comment on column public.credit_account_transactions.completed_at is 'When it completed.';
grant select on public.credit_account_transactions to authenticated;
grant select on public.credit_account_transactions to service_role;
alter table public.credit_account_transactions enable row level security;
create policy "Owners and billing members read credit transactions"
on public.credit_account_transactions for select to authenticated
using (organization_id in (select private.organization_ids_with_role('{owner,billing}')));
create index credit_account_transactions_history_idx on public.credit_account_transactions (organization_id, created_at desc, id desc);
create index credit_account_transactions_unbilled_idx on public.credit_account_transactions (organization_id, created_at)
  where statement_id is null and status = 'completed' and type in ('charge', 'fee', 'adjustment', 'refund');
create index credit_account_transactions_created_by_idx on public.credit_account_transactions (created_by);
create index credit_account_transactions_statement_id_idx on public.credit_account_transactions (statement_id);

-- Money records: never changed or deleted, only their status and statement set by the system.
create function private.guard_credit_transaction()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if tg_op = 'DELETE' then
    -- Only with their account, which goes only with a settled organization's deletion.
    if exists (select 1 from public.credit_accounts where organization_id = old.organization_id) then
      perform private.raise('append_only', 'Credit account transactions are never deleted.');
    end if;
    return old;
  end if;
  if (new.organization_id, new.type, new.amount, new.currency, new.description, new.source_type, new.source_id, new.idempotency_key, new.created_at)
     is distinct from (old.organization_id, old.type, old.amount, old.currency, old.description, old.source_type, old.source_id, old.idempotency_key, old.created_at) then
    perform private.raise('append_only', 'A credit account transaction changes only its status and statement.');
  end if;
  return new;
end
$$;
comment on function private.guard_credit_transaction() is 'Trigger: transactions are append-only but for status, completion and statement.';

create trigger credit_account_transactions_guard
before update or delete on public.credit_account_transactions
for each row execute function private.guard_credit_transaction();

-- ---------------------------------------------------------------------------------------------
-- The engine: every transaction goes through here
-- ---------------------------------------------------------------------------------------------
-- Locks the account (racing charges wait for each other), returns it.
create function private.lock_credit_account(p_organization_id uuid)
returns public.credit_accounts
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_account public.credit_accounts;
begin
  select * into v_account from public.credit_accounts where organization_id = p_organization_id for update;
  if v_account.organization_id is null then
    perform private.raise('credit_account_not_found', 'The organization has no credit account.');
  end if;
  return v_account;
end
$$;
comment on function private.lock_credit_account(uuid) is 'Locks and returns an organization''s credit account (credit_account_not_found).';

-- Records a transaction that moves money. Charges and fees need an active account and room under
-- the limit; the same idempotency key returns the first transaction (and refuses other arguments).
create function private.post_credit_transaction(
  p_organization_id uuid, p_type public.credit_transaction_type, p_amount bigint, p_description text,
  p_source_type text, p_source_id text default null, p_idempotency_key text default null,
  p_metadata jsonb default '{}'::jsonb, p_now timestamptz default now(), p_status public.credit_transaction_status default 'completed'
)
returns public.credit_account_transactions
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_account public.credit_accounts := private.lock_credit_account(p_organization_id);
  v_txn public.credit_account_transactions;
  v_signed bigint;
begin
  if p_type is null or p_type in ('limit_change', 'status_change') or p_amount is null or p_amount <= 0
     or p_description is null or char_length(btrim(p_description)) not between 1 and 500 then
    perform private.raise('invalid_transaction', 'A transaction needs a type, a positive amount in minor units, and a description of at most 500 characters.');
  end if;
  -- Past the limit is the answer for any charge too large, before the amount's own bound.
  if p_type in ('charge', 'fee') and p_status = 'completed' and v_account.amount_owed + p_amount > v_account.credit_limit then
    perform private.raise('credit_limit_exceeded', format('%s would take the amount owed to %s, past the limit of %s.',
      p_amount, v_account.amount_owed + p_amount, v_account.credit_limit));
  end if;
  if p_amount > 100000000 then
    perform private.raise('invalid_transaction', 'An amount is at most 100000000 minor units.');
  end if;
  if p_idempotency_key is not null then
    perform private.check_idempotency_key(p_idempotency_key);
    select * into v_txn from public.credit_account_transactions
    where organization_id = p_organization_id and idempotency_key = p_idempotency_key;
    if v_txn.id is not null then
      if v_txn.type <> p_type or abs(v_txn.amount) <> p_amount then
        perform private.raise('idempotency_key_reused', 'The idempotency key was used for another transaction.');
      end if;
      return v_txn;
    end if;
  end if;
  -- Payments and refunds lower what is owed; charges and fees raise it; adjustments raise it
  -- (an operator lowers it with a refund).
  v_signed := case when p_type in ('payment', 'refund') then -p_amount else p_amount end;
  if p_type in ('charge', 'fee') and p_status = 'completed' and v_account.status <> 'active' then
    perform private.raise('credit_account_not_active', format('The credit account is %s: no charges on account.', v_account.status));
  end if;
  perform private.check_metadata(p_metadata);
  insert into public.credit_account_transactions (organization_id, type, status, amount, currency, description, source_type,
    source_id, idempotency_key, metadata, created_by, created_at, completed_at)
  values (p_organization_id, p_type, p_status, v_signed, v_account.currency, btrim(p_description), p_source_type, p_source_id,
    p_idempotency_key, coalesce(p_metadata, '{}'::jsonb), auth.uid(), p_now, case when p_status = 'completed' then p_now end)
  returning * into v_txn;
  if p_status = 'completed' then
    update public.credit_accounts set amount_owed = amount_owed + v_signed where organization_id = p_organization_id;
  end if;
  return v_txn;
end
$$;
comment on function private.post_credit_transaction(uuid, public.credit_transaction_type, bigint, text, text, text, text, jsonb, timestamptz, public.credit_transaction_status) is
  'Records a money transaction on a credit account under its lock: charges within the limit of an active account, once per idempotency key.';

-- Records a limit or status change with its reason (no money moves).
create function private.record_credit_change(
  p_organization_id uuid, p_type public.credit_transaction_type, p_reason text, p_source_type text,
  p_metadata jsonb, p_now timestamptz
)
returns void
language sql
security definer
set search_path = ''
as $$
  insert into public.credit_account_transactions (organization_id, type, amount, currency, description, source_type,
    metadata, created_by, created_at, completed_at)
  select p_organization_id, p_type, 0, a.currency, p_reason, p_source_type, p_metadata, auth.uid(), p_now, p_now
  from public.credit_accounts a where a.organization_id = p_organization_id
$$;
comment on function private.record_credit_change(uuid, public.credit_transaction_type, text, text, jsonb, timestamptz) is
  'Records a limit or status change of a credit account in its history, with the reason.';

create function private.set_credit_limit_internal(p_organization_id uuid, p_limit bigint, p_reason text, p_source_type text, p_now timestamptz)
returns public.credit_accounts
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_before public.credit_accounts := private.lock_credit_account(p_organization_id);
  v_after public.credit_accounts;
begin
  if p_limit is null or p_limit not between 0 and 100000000 then
    perform private.raise('invalid_credit_terms', 'A credit limit is 0 to 100000000 minor units.');
  end if;
  if p_limit = v_before.credit_limit then
    return v_before;
  end if;
  update public.credit_accounts set credit_limit = p_limit where organization_id = p_organization_id returning * into v_after;
  perform private.record_credit_change(p_organization_id, 'limit_change', p_reason, p_source_type,
    jsonb_build_object('from', v_before.credit_limit, 'to', p_limit), p_now);
  perform private.append_domain_event(p_organization_id, 'credit_account.limit_changed',
    jsonb_build_object('from', v_before.credit_limit, 'to', p_limit, 'reason', p_reason));
  return v_after;
end
$$;
comment on function private.set_credit_limit_internal(uuid, bigint, text, text, timestamptz) is 'Changes a credit limit with its history entry and event.';

create function private.set_credit_status_internal(p_organization_id uuid, p_status public.credit_account_status, p_reason text,
  p_source_type text, p_now timestamptz)
returns public.credit_accounts
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_before public.credit_accounts := private.lock_credit_account(p_organization_id);
  v_after public.credit_accounts;
begin
  if v_before.status = p_status then
    return v_before;
  end if;
  update public.credit_accounts set status = p_status where organization_id = p_organization_id returning * into v_after;
  perform private.record_credit_change(p_organization_id, 'status_change', p_reason, p_source_type,
    jsonb_build_object('from', v_before.status, 'to', p_status), p_now);
  perform private.append_domain_event(p_organization_id, 'credit_account.' || p_status::text,
    jsonb_build_object('from', v_before.status, 'reason', p_reason));
  return v_after;
end
$$;
comment on function private.set_credit_status_internal(uuid, public.credit_account_status, text, text, timestamptz) is
  'Changes a credit account''s status (the trigger enforces the transitions) with its history entry and event.';

create function private.check_reason(p_reason text)
returns text
language plpgsql
immutable
set search_path = ''
as $$
begin
  if p_reason is null or char_length(btrim(p_reason)) not between 1 and 500 then
    perform private.raise('reason_required', 'Changes by hand need a reason (1 to 500 characters).');
  end if;
  return btrim(p_reason);
end
$$;
comment on function private.check_reason(text) is 'The trimmed reason of a change by hand, or reason_required.';

-- ---------------------------------------------------------------------------------------------
-- RPCs
-- ---------------------------------------------------------------------------------------------
-- Operators (and the service role) open accounts, set limits and statuses by hand.
create function private.open_credit_account(
  p_organization_id uuid, p_credit_limit bigint, p_reason text, p_currency text, p_statement_day integer, p_payment_terms_days integer
)
returns public.credit_accounts
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_account public.credit_accounts;
  v_reason text := private.check_reason(p_reason);
begin
  perform private.require_operator();
  perform private.require_organization(p_organization_id);
  if p_credit_limit is null or p_credit_limit not between 0 and 100000000 or p_statement_day is null or p_statement_day not between 1 and 28
     or p_payment_terms_days is null or p_payment_terms_days not between 0 and 90 or p_currency !~ '^[a-z]{3}$' then
    perform private.raise('invalid_credit_terms', 'A credit limit is 0 to 100000000 minor units, a statement day 1 to 28, payment terms 0 to 90 days.');
  end if;
  insert into public.credit_accounts (organization_id, currency, credit_limit, statement_day, payment_terms_days, opened_by)
  values (p_organization_id, p_currency, p_credit_limit, p_statement_day, p_payment_terms_days, auth.uid())
  on conflict (organization_id) do nothing
  returning * into v_account;
  if v_account.organization_id is null then
    perform private.raise('credit_account_exists', 'The organization has a credit account already.');
  end if;
  perform private.record_credit_change(p_organization_id, 'limit_change', v_reason, 'operator',
    jsonb_build_object('from', 0, 'to', p_credit_limit, 'opened', true), now());
  perform private.append_domain_event(p_organization_id, 'credit_account.opened',
    jsonb_build_object('credit_limit', p_credit_limit, 'currency', p_currency, 'reason', v_reason));
  return v_account;
end
$$;
comment on function private.open_credit_account(uuid, bigint, text, text, integer, integer) is 'The body of open_credit_account.';
grant execute on function private.open_credit_account(uuid, bigint, text, text, integer, integer) to authenticated, service_role;

create function public.open_credit_account(
  p_organization_id uuid, p_credit_limit bigint, p_reason text, p_currency text default 'eur',
  p_statement_day integer default 1, p_payment_terms_days integer default 14
)
returns public.credit_accounts
language sql
security invoker
set search_path = ''
as $$
  select private.open_credit_account(p_organization_id, p_credit_limit, p_reason, p_currency, p_statement_day, p_payment_terms_days)
$$;
comment on function public.open_credit_account(uuid, bigint, text, text, integer, integer) is
  'Opens a credit account for an organization (service role, platform admins), with its limit in minor units and the reason.';
grant execute on function public.open_credit_account(uuid, bigint, text, text, integer, integer) to authenticated, service_role;

create function private.set_credit_limit(p_organization_id uuid, p_credit_limit bigint, p_reason text)
returns public.credit_accounts
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_reason text := private.check_reason(p_reason);
begin
  perform private.require_operator();
  return private.set_credit_limit_internal(p_organization_id, p_credit_limit, v_reason, 'operator', now());
end
$$;
comment on function private.set_credit_limit(uuid, bigint, text) is 'The body of set_credit_limit.';
grant execute on function private.set_credit_limit(uuid, bigint, text) to authenticated, service_role;

create function public.set_credit_limit(p_organization_id uuid, p_credit_limit bigint, p_reason text)
returns public.credit_accounts
language sql
security invoker
set search_path = ''
as $$
  select private.set_credit_limit(p_organization_id, p_credit_limit, p_reason)
$$;
comment on function public.set_credit_limit(uuid, bigint, text) is 'Changes a credit limit by hand (service role, platform admins), with the reason.';
grant execute on function public.set_credit_limit(uuid, bigint, text) to authenticated, service_role;

create function private.set_credit_account_status(p_organization_id uuid, p_status public.credit_account_status, p_reason text)
returns public.credit_accounts
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_reason text := private.check_reason(p_reason);
begin
  perform private.require_operator();
  return private.set_credit_status_internal(p_organization_id, p_status, v_reason, 'operator', now());
end
$$;
comment on function private.set_credit_account_status(uuid, public.credit_account_status, text) is 'The body of set_credit_account_status.';
grant execute on function private.set_credit_account_status(uuid, public.credit_account_status, text) to authenticated, service_role;

create function public.set_credit_account_status(p_organization_id uuid, p_status public.credit_account_status, p_reason text)
returns public.credit_accounts
language sql
security invoker
set search_path = ''
as $$
  select private.set_credit_account_status(p_organization_id, p_status, p_reason)
$$;
comment on function public.set_credit_account_status(uuid, public.credit_account_status, text) is
  'Changes a credit account''s status by hand (service role, platform admins), with the reason; only allowed transitions.';
grant execute on function public.set_credit_account_status(uuid, public.credit_account_status, text) to authenticated, service_role;

-- Owners and billing members change the account's settings: its payment method and billing contact.
create function private.update_credit_account_settings(p_organization_id uuid, p_payment_method text, p_billing_email text, p_billing_name text)
returns public.credit_accounts
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_account public.credit_accounts;
begin
  perform private.authorize(p_organization_id, '{owner,billing}');
  perform private.lock_credit_account(p_organization_id);
  if p_payment_method is not null and not exists (
       select 1 from public.payment_methods where organization_id = p_organization_id and stripe_payment_method_id = p_payment_method) then
    perform private.raise('invalid_input', 'The payment method is not one of the organization''s saved ones.');
  end if;
  if p_billing_email is not null and not private.is_email(p_billing_email) then
    perform private.raise('invalid_email', 'Not an email address (at most 320 characters).');
  end if;
  if p_billing_name is not null and char_length(btrim(p_billing_name)) not between 1 and 200 then
    perform private.raise('invalid_name', 'A name must be 1 to 200 characters.');
  end if;
  update public.credit_accounts set
    stripe_payment_method_id = coalesce(p_payment_method, stripe_payment_method_id),
    billing_email = coalesce(lower(btrim(p_billing_email)), billing_email),
    billing_name = coalesce(btrim(p_billing_name), billing_name)
  where organization_id = p_organization_id
  returning * into v_account;
  return v_account;
end
$$;
comment on function private.update_credit_account_settings(uuid, text, text, text) is 'The body of update_credit_account_settings.';
grant execute on function private.update_credit_account_settings(uuid, text, text, text) to authenticated, service_role;

create function public.update_credit_account_settings(
  p_organization_id uuid, p_payment_method text default null, p_billing_email text default null, p_billing_name text default null
)
returns public.credit_accounts
language sql
security invoker
set search_path = ''
as $$
  select private.update_credit_account_settings(p_organization_id, p_payment_method, p_billing_email, p_billing_name)
$$;
comment on function public.update_credit_account_settings(uuid, text, text, text) is
  'Sets the credit account''s payment method (one of the saved ones) and billing contact (owners, billing members); null keeps a field.';
grant execute on function public.update_credit_account_settings(uuid, text, text, text) to authenticated, service_role;

-- Other backends (and operators) post transactions: purchases on account, fees, adjustments, refunds.
create function private.post_credit_account_transaction(
  p_organization_id uuid, p_type public.credit_transaction_type, p_amount bigint, p_description text,
  p_idempotency_key text, p_source_type text, p_source_id text, p_metadata jsonb
)
returns public.credit_account_transactions
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform private.require_operator();
  if p_idempotency_key is null then
    perform private.raise('invalid_idempotency_key', 'Every transaction needs an idempotency key.');
  end if;
  if p_source_type is null or p_source_type not in ('purchase', 'pack', 'operator') then
    perform private.raise('invalid_transaction', 'A posted transaction''s source is purchase, pack or operator.');
  end if;
  return private.post_credit_transaction(p_organization_id, p_type, p_amount, p_description, p_source_type, p_source_id,
    p_idempotency_key, p_metadata);
end
$$;
comment on function private.post_credit_account_transaction(uuid, public.credit_transaction_type, bigint, text, text, text, text, jsonb) is
  'The body of post_credit_account_transaction.';
grant execute on function private.post_credit_account_transaction(uuid, public.credit_transaction_type, bigint, text, text, text, text, jsonb) to authenticated, service_role;

create function public.post_credit_account_transaction(
  p_organization_id uuid, p_type public.credit_transaction_type, p_amount bigint, p_description text,
  p_idempotency_key text, p_source_type text default 'purchase', p_source_id text default null, p_metadata jsonb default '{}'::jsonb
)
returns public.credit_account_transactions
language sql
security invoker
set search_path = ''
as $$
  select private.post_credit_account_transaction(p_organization_id, p_type, p_amount, p_description, p_idempotency_key,
    p_source_type, p_source_id, p_metadata)
$$;
comment on function public.post_credit_account_transaction(uuid, public.credit_transaction_type, bigint, text, text, text, text, jsonb) is
  'Posts a charge, fee, adjustment or refund (positive p_amount, minor units) to a credit account (service role, platform admins), once per idempotency key. Errors: credit_limit_exceeded, credit_account_not_active, idempotency_key_reused.';
grant execute on function public.post_credit_account_transaction(uuid, public.credit_transaction_type, bigint, text, text, text, text, jsonb) to authenticated, service_role;

-- The history, filtered, newest first, a page at a time (keyset: pass the last row's created_at and id).
create function public.list_credit_account_transactions(
  p_organization_id uuid,
  p_types public.credit_transaction_type[] default null,
  p_statuses public.credit_transaction_status[] default null,
  p_from timestamptz default null,
  p_to timestamptz default null,
  p_source_type text default null,
  p_after_created_at timestamptz default null,
  p_after_id uuid default null,
  p_limit integer default 50
)
returns setof public.credit_account_transactions
language plpgsql
stable
security invoker
set search_path = ''
as $$
begin
  perform private.authorize(p_organization_id, '{owner,billing}');
  if p_limit is null or p_limit not between 1 and 200 or ((p_after_created_at is null) <> (p_after_id is null)) then
    perform private.raise('invalid_input', 'p_limit is 1 to 200; p_after_created_at and p_after_id go together.');
  end if;
  return query
    select t.* from public.credit_account_transactions t
    where t.organization_id = p_organization_id
      and (p_types is null or t.type = any (p_types))
      and (p_statuses is null or t.status = any (p_statuses))
      and (p_from is null or t.created_at >= p_from)
      and (p_to is null or t.created_at < p_to)
      and (p_source_type is null or t.source_type = p_source_type)
      and (p_after_created_at is null or (t.created_at, t.id) < (p_after_created_at, p_after_id))
    order by t.created_at desc, t.id desc
    limit p_limit;
end
$$;
comment on function public.list_credit_account_transactions(uuid, public.credit_transaction_type[], public.credit_transaction_status[], timestamptz, timestamptz, text, timestamptz, uuid, integer) is
  'A credit account''s history (owners, billing members), newest first, filtered by type, status, date range and source; the next page starts after the last row''s created_at and id.';
grant execute on function public.list_credit_account_transactions(uuid, public.credit_transaction_type[], public.credit_transaction_status[], timestamptz, timestamptz, text, timestamptz, uuid, integer) to authenticated, service_role;

-- ---------------------------------------------------------------------------------------------
-- A plan's rule: organizations on it get a credit account of its limit
-- ---------------------------------------------------------------------------------------------
alter table public.credit_plans
  add column credit_account_limit bigint check (credit_account_limit between 0 and 100000000);
comment on column public.credit_plans.credit_account_limit is
  'When set, an organization that moves onto the plan gets a credit account with this limit (minor units, eur), unless it has one.';

create function private.open_credit_account_by_plan()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_limit bigint := (select credit_account_limit from public.credit_plans where key = new.plan_key);
begin
  if v_limit is not null and (tg_op = 'INSERT' or new.plan_key is distinct from old.plan_key) then
    insert into public.credit_accounts (organization_id, credit_limit) values (new.organization_id, v_limit)
    on conflict (organization_id) do nothing;
    if found then
      perform private.record_credit_change(new.organization_id, 'limit_change', format('Opened by the %s plan''s rule', new.plan_key), 'rule',
        jsonb_build_object('from', 0, 'to', v_limit, 'opened', true, 'plan', new.plan_key), now());
      perform private.append_domain_event(new.organization_id, 'credit_account.opened',
        jsonb_build_object('credit_limit', v_limit, 'currency', 'eur', 'reason', 'plan ' || new.plan_key));
    end if;
  end if;
  return null;
end
$$;
comment on function private.open_credit_account_by_plan() is 'Trigger: opens a credit account when an organization moves onto a plan with credit_account_limit.';

create trigger organization_plans_open_credit_account
after insert or update of plan_key on public.organization_plans
for each row execute function private.open_credit_account_by_plan();
