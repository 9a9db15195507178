-- =============================================================================================
-- Billing: what can be bought (plans' and credit packs' Stripe prices) and the billing settings
-- =============================================================================================

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

-- Stripe is the source of truth for money; the database mirrors what Stripe says (the next
-- chapter) and credits follow from it (the one after). A plan is bought as a subscription to its
-- recurring price, a credit pack as a one-time payment of its price. Prices live in Stripe, per
-- account: each row names its price by a lookup key, and `npm run stripe:prices` creates the
-- missing prices in the account the key belongs to and writes their ids here (the local seed sets
-- the ids of the local fake's prices).

insert into private.error_codes (code, class, meaning) values
  ('pack_not_found', 'not_found', 'No active credit pack has this key.'),
  ('plan_not_billable', 'rule', 'This plan is not sold through Stripe (it is free, inactive or has no price yet).'),
  ('pack_not_billable', 'rule', 'This credit pack has no Stripe price yet.'),
  ('invalid_return_url', 'invalid_input', 'Success, cancel and return URLs must be on one of the billing_return_origins.'),
  ('subscription_exists', 'conflict', 'The organization has a subscription already: change it in the customer portal.'),
  ('no_billing_account', 'not_found', 'The organization has no Stripe customer yet: check out or save a card first.'),
  ('invalid_checkout', 'invalid_input', 'A checkout is for one plan or one credit pack (quantity 1 to 100).');

insert into private.error_codes (code, class, meaning, raised_by) values
  ('stripe_unavailable', 'unavailable', 'Stripe did not answer or failed; try again later.', 'functions');

insert into private.settings (key, value, description) values
  ('billing_return_origins', '["http://127.0.0.1:3000", "http://localhost:3000"]',
   'The origins Checkout and the customer portal may send the customer back to (success, cancel and return URLs).'),
  ('billing_grace_period', '"7 days"', 'How long an organization stays past due before its consumption is suspended (all but purchased credits).'),
  ('billing_automatic_tax', 'false', 'Whether Checkout computes tax with Stripe Tax (needs Stripe Tax set up in the account).');

-- ---------------------------------------------------------------------------------------------
-- Plans: their recurring price
-- ---------------------------------------------------------------------------------------------
alter table public.credit_plans
  add column stripe_lookup_key text check (stripe_lookup_key ~ '^[a-z0-9_]{1,64}$'),
  add column stripe_price_id text check (stripe_price_id ~ '^price_[A-Za-z0-9_]{1,64}$'),
  add column price_amount bigint check (price_amount between 0 and 100000000),
  add column price_currency text check (price_currency ~ '^[a-z]{3}$');
-- A handful of rows: the unique indexes build at once, in the migration's transaction (CONCURRENTLY
-- cannot run in one).
-- squawk-ignore require-concurrent-index-creation
create unique index credit_plans_stripe_lookup_key_key on public.credit_plans (stripe_lookup_key);
-- squawk-ignore require-concurrent-index-creation
create unique index credit_plans_stripe_price_id_key on public.credit_plans (stripe_price_id);
comment on column public.credit_plans.stripe_lookup_key is 'The lookup key of the plan''s recurring Stripe price (npm run stripe:prices finds or creates it).';
comment on column public.credit_plans.stripe_price_id is 'The plan''s recurring Stripe price in this project''s account; null until set up. Subscriptions to it put an organization on the plan.';
comment on column public.credit_plans.price_amount is 'Its price per period, in minor units of price_currency (what npm run stripe:prices creates).';
comment on column public.credit_plans.price_currency is 'The price''s currency (ISO 4217, lower case).';

update public.credit_plans set stripe_lookup_key = 'plan_premium_monthly', price_amount = 4900, price_currency = 'eur'
where key = 'premium';

-- ---------------------------------------------------------------------------------------------
-- Credit packs: credits bought outright
-- ---------------------------------------------------------------------------------------------
create table public.credit_packs (
  key text primary key check (key ~ '^[a-z][a-z0-9_]{0,31}$'),
  name text not null check (char_length(name) between 1 and 100),
  pool_key text not null references public.credit_pools (key) on update cascade,
  credits bigint not null check (credits between 1 and 1000000000),
  price_amount bigint not null check (price_amount between 1 and 100000000),
  price_currency text not null check (price_currency ~ '^[a-z]{3}$'),
  stripe_lookup_key text not null unique check (stripe_lookup_key ~ '^[a-z0-9_]{1,64}$'),
  stripe_price_id text unique check (stripe_price_id ~ '^price_[A-Za-z0-9_]{1,64}$'),
  is_active boolean not null default true,
  sort_order integer not null default 0,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table public.credit_packs is 'Credits an organization buys outright, once: a Stripe one-time price per pack. Purchased credits are drawn last and survive a suspension.';
comment on column public.credit_packs.key is 'Stable identifier (ai_1000, ...).';
comment on column public.credit_packs.name is 'Display name.';
comment on column public.credit_packs.pool_key is 'The pool the credits go to.';
comment on column public.credit_packs.credits is 'How many credits one pack adds.';
comment on column public.credit_packs.price_amount is 'Its price, in minor units of price_currency.';
comment on column public.credit_packs.price_currency is 'The price''s currency (ISO 4217, lower case).';
comment on column public.credit_packs.stripe_lookup_key is 'The lookup key of its one-time Stripe price.';
comment on column public.credit_packs.stripe_price_id is 'Its one-time Stripe price in this project''s account; null until set up.';
comment on column public.credit_packs.is_active is 'Inactive packs are not sold.';
comment on column public.credit_packs.sort_order is 'Display order.';
comment on column public.credit_packs.created_at is 'When the pack was added.';
comment on column public.credit_packs.updated_at is 'When it last changed.';
grant select on public.credit_packs to authenticated;
grant select, insert, update, delete on public.credit_packs to service_role;
alter table public.credit_packs enable row level security;
create policy "Signed-in users can read the credit packs"
on public.credit_packs for select to authenticated using (true);
create index credit_packs_pool_key_idx on public.credit_packs (pool_key);

create trigger credit_packs_set_updated_at
before update on public.credit_packs
for each row execute function private.set_updated_at();

insert into public.credit_packs (key, name, pool_key, credits, price_amount, price_currency, stripe_lookup_key, sort_order) values
  ('ai_1000', '1,000 AI credits', 'ai', 1000, 1900, 'eur', 'pack_ai_1000', 10),
  ('ai_5000', '5,000 AI credits', 'ai', 5000, 7900, 'eur', 'pack_ai_5000', 20),
  ('whatsapp_500', '500 WhatsApp credits', 'whatsapp', 500, 2500, 'eur', 'pack_whatsapp_500', 30),
  ('email_10000', '10,000 email credits', 'email', 10000, 1500, 'eur', 'pack_email_10000', 40),
  ('sms_500', '500 SMS credits', 'sms', 500, 3000, 'eur', 'pack_sms_500', 50);

-- ---------------------------------------------------------------------------------------------
-- Who manages billing, and where a customer may be sent back to
-- ---------------------------------------------------------------------------------------------
-- Owners, admins and billing members manage an organization's billing; plain members do not.
-- The service role passes (billing backends).
create function private.require_billing_manager(p_organization_id uuid)
returns text
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
  return private.authorize(p_organization_id, '{owner,admin,billing}');
end
$$;
comment on function private.require_billing_manager(uuid) is 'Raises not_authorized unless the caller is the service role or an owner, admin or billing member.';
grant execute on function private.require_billing_manager(uuid) to authenticated, service_role;

-- A URL Checkout or the portal may redirect to: http(s), on one of billing_return_origins.
create function private.check_billing_return_url(p_url text)
returns void
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_origin text := substring(p_url from '^(https?://[^/?#]+)(?:[/?#]|$)');
begin
  if p_url is null or char_length(p_url) > 2000 or v_origin is null
     or not exists (select 1 from jsonb_array_elements_text(private.setting('billing_return_origins')) as o (origin)
                    where lower(o.origin) = lower(v_origin)) then
    perform private.raise('invalid_return_url', format('%s is not on one of the billing_return_origins.', left(coalesce(p_url, 'null'), 200)));
  end if;
end
$$;
comment on function private.check_billing_return_url(text) is 'Raises invalid_return_url unless the URL is on one of the billing_return_origins.';
grant execute on function private.check_billing_return_url(text) to authenticated, service_role;
