-- =============================================================================================
-- Billing: the mirror of what Stripe says (customers, subscriptions, invoices, payment methods),
-- the events Stripe sent, and what credits came of them
-- =============================================================================================

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

-- Only the billing functions write these tables (the webhook with the state it fetched from
-- Stripe, the checkout functions with the customer they created); owners, admins and billing
-- members read their organization's rows, plain members none.

create type public.billing_standing as enum ('good', 'past_due', 'suspended');
comment on type public.billing_standing is
  'good; past_due (a payment failed; consumption goes on for billing_grace_period); suspended (only purchased credits can be consumed until an invoice is paid).';

create type public.subscription_status as enum
  ('incomplete', 'incomplete_expired', 'trialing', 'active', 'past_due', 'canceled', 'unpaid', 'paused');
comment on type public.subscription_status is 'A Stripe subscription''s status, as Stripe names it.';

create type public.invoice_status as enum ('draft', 'open', 'paid', 'uncollectible', 'void');
comment on type public.invoice_status is 'A Stripe invoice''s status, as Stripe names it.';

-- ---------------------------------------------------------------------------------------------
-- Billing accounts: the organization's Stripe customer and its standing
-- ---------------------------------------------------------------------------------------------
create table public.billing_accounts (
  organization_id uuid primary key references public.organizations (id) on delete cascade,
  stripe_customer_id text not null unique check (stripe_customer_id ~ '^cus_[A-Za-z0-9_]{1,64}$'),
  email text check (char_length(email) <= 320),
  default_payment_method_id text check (char_length(default_payment_method_id) <= 100),
  standing public.billing_standing not null default 'good',
  past_due_since timestamptz,
  suspended_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  check ((standing = 'good') = (past_due_since is null)),
  check ((standing = 'suspended') = (suspended_at is not null))
);
comment on table public.billing_accounts is 'One Stripe customer per organization, created on first need, and the organization''s standing (dunning).';
comment on column public.billing_accounts.organization_id is 'The organization.';
comment on column public.billing_accounts.stripe_customer_id is 'Its Stripe customer.';
comment on column public.billing_accounts.email is 'The customer''s billing email, as Stripe has it.';
comment on column public.billing_accounts.default_payment_method_id is 'The customer''s default payment method in Stripe (invoice_settings.default_payment_method).';
comment on column public.billing_accounts.standing is 'good, past_due or suspended.';
comment on column public.billing_accounts.past_due_since is 'When the payment that put it past due failed.';
comment on column public.billing_accounts.suspended_at is 'When its consumption was suspended.';
comment on column public.billing_accounts.created_at is 'When the customer was created.';
comment on column public.billing_accounts.updated_at is 'When this row last changed.';
grant select on public.billing_accounts to authenticated;
grant select, insert, update, delete on public.billing_accounts to service_role;
alter table public.billing_accounts enable row level security;
create policy "Billing managers read their organization's billing account"
on public.billing_accounts for select to authenticated
using (organization_id in (select private.organization_ids_with_role('{owner,admin,billing}')));
create index billing_accounts_standing_idx on public.billing_accounts (standing, past_due_since) where standing <> 'good';

create trigger billing_accounts_set_updated_at
before update on public.billing_accounts
for each row execute function private.set_updated_at();

-- ---------------------------------------------------------------------------------------------
-- Subscriptions
-- ---------------------------------------------------------------------------------------------
create table public.subscriptions (
  id uuid primary key default gen_random_uuid(),
  organization_id uuid not null references public.organizations (id) on delete cascade,
  stripe_subscription_id text not null unique check (stripe_subscription_id ~ '^sub_[A-Za-z0-9_]{1,64}$'),
  stripe_price_id text,
  plan_key text references public.credit_plans (key) on update cascade,
  status public.subscription_status not null,
  current_period_start timestamptz,
  current_period_end timestamptz,
  cancel_at_period_end boolean not null default false,
  canceled_at timestamptz,
  ended_at timestamptz,
  stripe_created timestamptz not null,
  synced_at timestamptz not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table public.subscriptions is 'The organization''s Stripe subscriptions, as Stripe last said; a live one decides its plan.';
comment on column public.subscriptions.id is 'The row.';
comment on column public.subscriptions.organization_id is 'The organization.';
comment on column public.subscriptions.stripe_subscription_id is 'The Stripe subscription.';
comment on column public.subscriptions.stripe_price_id is 'The price subscribed to.';
comment on column public.subscriptions.plan_key is 'The plan of that price; null when the price is no plan''s.';
comment on column public.subscriptions.status is 'Stripe''s status.';
comment on column public.subscriptions.current_period_start is 'Start of the period paid (or being paid) for.';
comment on column public.subscriptions.current_period_end is 'Its end.';
comment on column public.subscriptions.cancel_at_period_end is 'Whether it ends at the end of the period.';
comment on column public.subscriptions.canceled_at is 'When it was canceled.';
comment on column public.subscriptions.ended_at is 'When it ended.';
comment on column public.subscriptions.stripe_created is 'When Stripe created it.';
comment on column public.subscriptions.synced_at is 'When its state was last fetched from Stripe.';
comment on column public.subscriptions.created_at is 'When the mirror first saw it.';
comment on column public.subscriptions.updated_at is 'When the mirror last changed.';
grant select on public.subscriptions to authenticated;
grant select, insert, update, delete on public.subscriptions to service_role;
alter table public.subscriptions enable row level security;
create policy "Billing managers read their organization's subscriptions"
on public.subscriptions for select to authenticated
using (organization_id in (select private.organization_ids_with_role('{owner,admin,billing}')));
create index subscriptions_organization_id_idx on public.subscriptions (organization_id, stripe_created desc);
create index subscriptions_plan_key_idx on public.subscriptions (plan_key);

create trigger subscriptions_set_updated_at
before update on public.subscriptions
for each row execute function private.set_updated_at();

-- ---------------------------------------------------------------------------------------------
-- Invoices
-- ---------------------------------------------------------------------------------------------
create table public.invoices (
  id uuid primary key default gen_random_uuid(),
  organization_id uuid not null references public.organizations (id) on delete cascade,
  stripe_invoice_id text not null unique check (stripe_invoice_id ~ '^in_[A-Za-z0-9_]{1,64}$'),
  stripe_subscription_id text,
  number text check (char_length(number) <= 100),
  status public.invoice_status not null,
  billing_reason text check (char_length(billing_reason) <= 100),
  currency text not null check (currency ~ '^[a-z]{3}$'),
  subtotal bigint not null default 0,
  tax bigint,
  total bigint not null default 0,
  amount_due bigint not null default 0,
  amount_paid bigint not null default 0,
  amount_remaining bigint not null default 0,
  period_start timestamptz,
  period_end timestamptz,
  hosted_invoice_url text check (char_length(hosted_invoice_url) <= 2000),
  invoice_pdf_url text check (char_length(invoice_pdf_url) <= 2000),
  pdf_file_id uuid references public.files (id) on delete set null,
  pdf_copy_attempts integer not null default 0 check (pdf_copy_attempts >= 0),
  attempt_count integer not null default 0,
  next_payment_attempt timestamptz,
  paid_at timestamptz,
  stripe_created timestamptz not null,
  synced_at timestamptz not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table public.invoices is 'The organization''s Stripe invoices, as Stripe last said; a paid one''s PDF is kept in the private store.';
comment on column public.invoices.id is 'The row.';
comment on column public.invoices.organization_id is 'The organization.';
comment on column public.invoices.stripe_invoice_id is 'The Stripe invoice.';
comment on column public.invoices.stripe_subscription_id is 'The subscription it bills, if any.';
comment on column public.invoices.number is 'Its number.';
comment on column public.invoices.status is 'Stripe''s status.';
comment on column public.invoices.billing_reason is 'Why it was made (subscription_create, subscription_cycle, manual, ...).';
comment on column public.invoices.currency is 'Its currency.';
comment on column public.invoices.subtotal is 'Before tax and discounts, in minor units.';
comment on column public.invoices.tax is 'Tax, in minor units, when computed.';
comment on column public.invoices.total is 'The total, in minor units.';
comment on column public.invoices.amount_due is 'What is due, in minor units.';
comment on column public.invoices.amount_paid is 'What was paid.';
comment on column public.invoices.amount_remaining is 'What is left to pay.';
comment on column public.invoices.period_start is 'Start of the period it bills (its subscription line''s).';
comment on column public.invoices.period_end is 'End of that period.';
comment on column public.invoices.hosted_invoice_url is 'Stripe''s page for it.';
comment on column public.invoices.invoice_pdf_url is 'Stripe''s PDF of it.';
comment on column public.invoices.pdf_file_id is 'The PDF''s copy in the private store (context invoice), once a job fetched it.';
comment on column public.invoices.pdf_copy_attempts is 'How often copying the PDF failed (the job gives up after 8, fresh invoices go first).';
comment on column public.invoices.attempt_count is 'How many payment attempts were made.';
comment on column public.invoices.next_payment_attempt is 'When Stripe tries again.';
comment on column public.invoices.paid_at is 'When it was paid.';
comment on column public.invoices.stripe_created is 'When Stripe created it.';
comment on column public.invoices.synced_at is 'When its state was last fetched from Stripe.';
comment on column public.invoices.created_at is 'When the mirror first saw it.';
comment on column public.invoices.updated_at is 'When the mirror last changed.';
grant select on public.invoices to authenticated;
grant select, insert, update, delete on public.invoices to service_role;
alter table public.invoices enable row level security;
create policy "Billing managers read their organization's invoices"
on public.invoices for select to authenticated
using (organization_id in (select private.organization_ids_with_role('{owner,admin,billing}')));
create index invoices_organization_id_idx on public.invoices (organization_id, stripe_created desc);
create index invoices_pdf_pending_idx on public.invoices (pdf_copy_attempts, stripe_created) where status = 'paid' and pdf_file_id is null;
create index invoices_pdf_file_id_idx on public.invoices (pdf_file_id);

create trigger invoices_set_updated_at
before update on public.invoices
for each row execute function private.set_updated_at();

-- ---------------------------------------------------------------------------------------------
-- Payment methods
-- ---------------------------------------------------------------------------------------------
create table public.payment_methods (
  id uuid primary key default gen_random_uuid(),
  organization_id uuid not null references public.organizations (id) on delete cascade,
  stripe_payment_method_id text not null unique check (stripe_payment_method_id ~ '^pm_[A-Za-z0-9_]{1,64}$'),
  type text not null check (char_length(type) <= 50),
  brand text check (char_length(brand) <= 50),
  last4 text check (last4 ~ '^[0-9]{4}$'),
  exp_month integer check (exp_month between 1 and 12),
  exp_year integer check (exp_year between 2000 and 2200),
  is_default boolean not null default false,
  synced_at timestamptz not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table public.payment_methods is 'The organization''s saved payment methods, as Stripe last said (never a full card number: brand, last four, expiry).';
comment on column public.payment_methods.id is 'The row.';
comment on column public.payment_methods.organization_id is 'The organization.';
comment on column public.payment_methods.stripe_payment_method_id is 'The Stripe payment method.';
comment on column public.payment_methods.type is 'card, sepa_debit, ...';
comment on column public.payment_methods.brand is 'The card''s brand.';
comment on column public.payment_methods.last4 is 'Its last four digits.';
comment on column public.payment_methods.exp_month is 'Expiry month.';
comment on column public.payment_methods.exp_year is 'Expiry year.';
comment on column public.payment_methods.is_default is 'Whether it is the customer''s default.';
comment on column public.payment_methods.synced_at is 'When it was last fetched from Stripe.';
comment on column public.payment_methods.created_at is 'When the mirror first saw it.';
comment on column public.payment_methods.updated_at is 'When the mirror last changed.';
grant select on public.payment_methods to authenticated;
grant select, insert, update, delete on public.payment_methods to service_role;
alter table public.payment_methods enable row level security;
create policy "Billing managers read their organization's payment methods"
on public.payment_methods for select to authenticated
using (organization_id in (select private.organization_ids_with_role('{owner,admin,billing}')));
create index payment_methods_organization_id_idx on public.payment_methods (organization_id);

create trigger payment_methods_set_updated_at
before update on public.payment_methods
for each row execute function private.set_updated_at();

-- ---------------------------------------------------------------------------------------------
-- What came of the money: pack purchases and the plan allocations paid invoices granted
-- ---------------------------------------------------------------------------------------------
create table private.credit_pack_purchases (
  checkout_session_id text primary key check (checkout_session_id ~ '^cs_[A-Za-z0-9_]{1,100}$'),
  organization_id uuid not null references public.organizations (id) on delete cascade,
  pack_key text not null references public.credit_packs (key) on update cascade,
  pool_key text not null,
  credits bigint not null check (credits > 0),
  quantity integer not null check (quantity between 1 and 100),
  amount_paid bigint not null check (amount_paid >= 0),
  currency text not null,
  payment_intent_id text unique,
  grant_id uuid not null references public.credit_grants (id),
  refunded_amount bigint not null default 0 check (refunded_amount >= 0),
  credits_revoked bigint not null default 0 check (credits_revoked between 0 and credits),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table private.credit_pack_purchases is 'One row per paid pack checkout (its session id makes the grant happen once); refunds take back unused credits.';
comment on column private.credit_pack_purchases.checkout_session_id is 'The Checkout session that paid.';
comment on column private.credit_pack_purchases.organization_id is 'The organization.';
comment on column private.credit_pack_purchases.pack_key is 'The pack bought.';
comment on column private.credit_pack_purchases.pool_key is 'The pool credited.';
comment on column private.credit_pack_purchases.credits is 'The credits granted (pack credits times quantity).';
comment on column private.credit_pack_purchases.quantity is 'How many packs.';
comment on column private.credit_pack_purchases.amount_paid is 'What was paid, in minor units.';
comment on column private.credit_pack_purchases.currency is 'In what currency.';
comment on column private.credit_pack_purchases.payment_intent_id is 'The payment (refunds name its charge).';
comment on column private.credit_pack_purchases.grant_id is 'The purchase grant.';
comment on column private.credit_pack_purchases.refunded_amount is 'How much of the payment was refunded.';
comment on column private.credit_pack_purchases.credits_revoked is 'How many credits refunds took back.';
comment on column private.credit_pack_purchases.created_at is 'When the credits were granted.';
comment on column private.credit_pack_purchases.updated_at is 'When a refund last changed it.';
alter table private.credit_pack_purchases enable row level security;
grant select on private.credit_pack_purchases to service_role;
create index credit_pack_purchases_organization_id_idx on private.credit_pack_purchases (organization_id);
create index credit_pack_purchases_grant_id_idx on private.credit_pack_purchases (grant_id);
create index credit_pack_purchases_pack_key_idx on private.credit_pack_purchases (pack_key);

create table private.billing_invoice_grants (
  stripe_invoice_id text primary key,
  organization_id uuid not null references public.organizations (id) on delete cascade,
  plan_key text not null,
  period_start timestamptz not null,
  period_end timestamptz not null,
  granted_at timestamptz not null default now()
);
comment on table private.billing_invoice_grants is 'The paid invoices that granted a plan period''s allocation: each once.';
comment on column private.billing_invoice_grants.stripe_invoice_id is 'The invoice.';
comment on column private.billing_invoice_grants.organization_id is 'The organization.';
comment on column private.billing_invoice_grants.plan_key is 'The plan whose allocation it granted.';
comment on column private.billing_invoice_grants.period_start is 'The period''s start.';
comment on column private.billing_invoice_grants.period_end is 'Its end.';
comment on column private.billing_invoice_grants.granted_at is 'When.';
alter table private.billing_invoice_grants enable row level security;
grant select on private.billing_invoice_grants to service_role;
create index billing_invoice_grants_organization_id_idx on private.billing_invoice_grants (organization_id);

-- ---------------------------------------------------------------------------------------------
-- Stripe's events, each stored once
-- ---------------------------------------------------------------------------------------------
create table private.stripe_events (
  id text primary key check (id ~ '^evt_[A-Za-z0-9_]{1,100}$'),
  type text not null check (char_length(type) <= 100),
  object_id text check (char_length(object_id) <= 100),
  api_version text,
  livemode boolean not null default false,
  stripe_created timestamptz not null,
  payload jsonb not null,
  outcome text not null default 'pending' check (outcome in ('pending', 'processed', 'ignored', 'failed')),
  attempts integer not null default 0,
  last_error text check (char_length(last_error) <= 2000),
  received_at timestamptz not null default now(),
  processed_at timestamptz
);
comment on table private.stripe_events is 'Every Stripe event the webhook verified, once by its id: what it was, and how handling it went.';
comment on column private.stripe_events.id is 'The event.';
comment on column private.stripe_events.type is 'Its type (invoice.paid, ...).';
comment on column private.stripe_events.object_id is 'The id of the object it is about.';
comment on column private.stripe_events.api_version is 'The API version it was rendered in.';
comment on column private.stripe_events.livemode is 'Live or test mode.';
comment on column private.stripe_events.stripe_created is 'When Stripe made it.';
comment on column private.stripe_events.payload is 'The event as received.';
comment on column private.stripe_events.outcome is 'pending, processed, ignored (a type or object we do not handle) or failed (retried by Stripe).';
comment on column private.stripe_events.attempts is 'How many deliveries were handled.';
comment on column private.stripe_events.last_error is 'The last failure.';
comment on column private.stripe_events.received_at is 'When it first arrived.';
comment on column private.stripe_events.processed_at is 'When it was handled.';
alter table private.stripe_events enable row level security;
grant select on private.stripe_events to service_role;
create index stripe_events_object_id_idx on private.stripe_events (object_id);
create index stripe_events_received_at_idx on private.stripe_events (received_at);
create index stripe_events_unhandled_idx on private.stripe_events (received_at) where outcome in ('pending', 'failed');

insert into private.settings (key, value, description) values
  ('stripe_event_retention', '"90 days"', 'How long handled Stripe events are kept.');
