-- =============================================================================================
-- Billing: applying what Stripe says (the webhook's SQL), credits that follow, dunning
-- =============================================================================================

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

-- The stripe-webhook function verifies an event, stores it once (record_stripe_event), then in
-- one transaction locks the event and the Stripe object it is about, fetches that object's
-- current state from Stripe and applies it here. So the state is always Stripe's newest
-- whatever order events arrive in, and a replay changes nothing:
--   subscriptions   mirrored; a live one puts the organization on its plan (the allocation comes
--                   with the paid invoice), an ended one back on starter;
--   invoices        mirrored; paid: the period's plan allocation granted once per invoice
--                   (billing_invoice_grants), the organization back in good standing; failed:
--                   past due, billing members mailed, and after billing_grace_period suspended;
--   pack checkouts  the pack's credits granted once per session (credit_pack_purchases);
--   refunds         the pack's unused credits taken back, never below zero;
--   payment methods and the customer's default mirrored.
-- A suspended organization consumes only purchased credits: the draw order and the available
-- count skip every other grant while billing_accounts.standing is suspended.

-- ---------------------------------------------------------------------------------------------
-- Reading Stripe objects (the pinned API version, with the older places as a fallback)
-- ---------------------------------------------------------------------------------------------
create function private.stripe_time(p_epoch text)
returns timestamptz
language sql
immutable
set search_path = ''
as $$
  select case when p_epoch is null or p_epoch = '' then null else to_timestamp(p_epoch::bigint) end
$$;
comment on function private.stripe_time(text) is 'A Stripe timestamp (seconds since the epoch, as text) as timestamptz.';

-- The id of an expandable field: the string itself, or the expanded object's id.
create function private.stripe_id(p_field jsonb)
returns text
language sql
immutable
set search_path = ''
as $$
  select case jsonb_typeof(p_field) when 'string' then p_field #>> '{}' when 'object' then p_field ->> 'id' end
$$;
comment on function private.stripe_id(jsonb) is 'The id of a Stripe expandable field (an id or an expanded object).';

-- The subscription an invoice bills (parent.subscription_details since 2025, top-level before).
create function private.stripe_invoice_subscription(p_invoice jsonb)
returns text
language sql
immutable
set search_path = ''
as $$
  select coalesce(private.stripe_id(p_invoice #> '{parent,subscription_details,subscription}'),
                  private.stripe_id(p_invoice -> 'subscription'))
$$;
comment on function private.stripe_invoice_subscription(jsonb) is 'The subscription a Stripe invoice bills, or null.';

-- An invoice's first line with a price: its price id and period.
create function private.stripe_invoice_price_line(p_invoice jsonb)
returns table (price_id text, period_start timestamptz, period_end timestamptz)
language sql
immutable
set search_path = ''
as $$
  select coalesce(private.stripe_id(l -> 'pricing' -> 'price_details' -> 'price'), private.stripe_id(l -> 'price')),
         private.stripe_time(l #>> '{period,start}'), private.stripe_time(l #>> '{period,end}')
  from jsonb_array_elements(coalesce(p_invoice #> '{lines,data}', '[]')) as l
  where coalesce(private.stripe_id(l -> 'pricing' -> 'price_details' -> 'price'), private.stripe_id(l -> 'price')) is not null
  limit 1
$$;
comment on function private.stripe_invoice_price_line(jsonb) is 'The first priced line of a Stripe invoice: price and period.';

-- ---------------------------------------------------------------------------------------------
-- Customers and what the checkout functions ask before they call Stripe
-- ---------------------------------------------------------------------------------------------
-- Records the organization's customer. Two racing first checkouts create one customer (Stripe's
-- idempotency key) and both land here: the first row wins, both get its id.
create function private.record_billing_customer(p_organization_id uuid, p_customer_id text, p_email text default null)
returns text
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_customer text;
begin
  perform private.require_service_role('Only the billing functions record customers.');
  insert into public.billing_accounts (organization_id, stripe_customer_id, email)
  values (p_organization_id, p_customer_id, p_email)
  on conflict (organization_id) do nothing;
  select stripe_customer_id into v_customer from public.billing_accounts where organization_id = p_organization_id;
  return v_customer;
end
$$;
comment on function private.record_billing_customer(uuid, text, text) is 'Stores an organization''s Stripe customer (the first one wins); returns the stored id.';
grant execute on function private.record_billing_customer(uuid, text, text) to service_role;

-- The organization's name and its customer (null before the first checkout), for a caller who
-- manages its billing. Run as the caller by billing-setup-intent; billing-checkout's target too.
create function private.billing_account_of(p_organization_id uuid)
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
  perform private.require_billing_manager(p_organization_id);
  perform private.require_organization(p_organization_id);
  return jsonb_build_object(
    'organization_name', (select name from public.organizations where id = p_organization_id),
    'customer_id', (select stripe_customer_id from public.billing_accounts where organization_id = p_organization_id),
    'automatic_tax', coalesce((private.setting('billing_automatic_tax') #>> '{}')::boolean, false));
end
$$;
comment on function private.billing_account_of(uuid) is 'The organization''s name and Stripe customer (or null), for a caller who manages its billing.';
grant execute on function private.billing_account_of(uuid) to authenticated, service_role;

-- What a checkout is for, for a caller who manages the organization's billing: the price, the
-- mode, the customer if there is one. Run as the caller by billing-checkout.
create function private.billing_checkout_target(p_organization_id uuid, p_plan text, p_pack text, p_quantity integer default 1)
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_plan public.credit_plans;
  v_pack public.credit_packs;
  v_base jsonb;
begin
  v_base := private.billing_account_of(p_organization_id);
  if (p_plan is null) = (p_pack is null) or p_quantity is null or p_quantity not between 1 and 100
     or (p_plan is not null and p_quantity <> 1) then
    perform private.raise('invalid_checkout', 'A checkout is for one plan, or for 1 to 100 of one credit pack.');
  end if;
  if p_plan is not null then
    select * into v_plan from public.credit_plans where key = p_plan;
    if v_plan.key is null then
      perform private.raise('plan_not_found', format('No plan %L.', p_plan));
    end if;
    if not v_plan.is_active or v_plan.is_free or v_plan.stripe_price_id is null then
      perform private.raise('plan_not_billable', format('The %s plan is not sold through Stripe.', p_plan));
    end if;
    if exists (select 1 from public.subscriptions where organization_id = p_organization_id
               and status in ('active', 'trialing', 'past_due', 'unpaid', 'incomplete', 'paused')) then
      perform private.raise('subscription_exists', 'The organization has a subscription already: change it in the customer portal.');
    end if;
    return v_base || jsonb_build_object('mode', 'subscription', 'price_id', v_plan.stripe_price_id, 'plan_key', v_plan.key, 'quantity', 1);
  end if;
  select * into v_pack from public.credit_packs where key = p_pack and is_active;
  if v_pack.key is null then
    perform private.raise('pack_not_found', format('No credit pack %L.', p_pack));
  end if;
  if v_pack.stripe_price_id is null then
    perform private.raise('pack_not_billable', format('The %s pack has no Stripe price yet.', p_pack));
  end if;
  return v_base || jsonb_build_object('mode', 'payment', 'price_id', v_pack.stripe_price_id, 'pack_key', v_pack.key,
                                      'quantity', p_quantity, 'credits', v_pack.credits * p_quantity);
end
$$;
comment on function private.billing_checkout_target(uuid, text, text, integer) is
  'For billing-checkout: checks the caller manages billing and the plan or pack is for sale; returns price, mode and customer.';
grant execute on function private.billing_checkout_target(uuid, text, text, integer) to authenticated, service_role;

-- The organization's customer, for the portal: billing managers only, and only once there is one.
create function private.billing_customer_of(p_organization_id uuid)
returns text
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_customer text;
begin
  perform private.require_billing_manager(p_organization_id);
  select stripe_customer_id into v_customer from public.billing_accounts where organization_id = p_organization_id;
  if v_customer is null then
    perform private.raise('no_billing_account', 'The organization has no Stripe customer yet: check out or save a card first.');
  end if;
  return v_customer;
end
$$;
comment on function private.billing_customer_of(uuid) is 'The organization''s Stripe customer, for a caller who manages its billing.';
grant execute on function private.billing_customer_of(uuid) to authenticated, service_role;

create function private.organization_of_customer(p_customer_id text)
returns uuid
language sql
stable
security definer
set search_path = ''
as $$
  select organization_id from public.billing_accounts where stripe_customer_id = p_customer_id
$$;
comment on function private.organization_of_customer(text) is 'The organization a Stripe customer belongs to, or null when it is not ours.';

-- ---------------------------------------------------------------------------------------------
-- The event store
-- ---------------------------------------------------------------------------------------------
-- Stores a verified event once. Returns new (first delivery), pending (delivered before, not
-- handled yet: a retry) or done (handled before: a replay, acknowledged and ignored).
create function private.record_stripe_event(p_event jsonb)
returns text
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_outcome text;
begin
  perform private.require_service_role('Only stripe-webhook records Stripe events.');
  insert into private.stripe_events (id, type, object_id, api_version, livemode, stripe_created, payload)
  values (p_event ->> 'id', p_event ->> 'type', p_event #>> '{data,object,id}', p_event ->> 'api_version',
          coalesce((p_event ->> 'livemode')::boolean, false), private.stripe_time(p_event ->> 'created'), p_event)
  on conflict (id) do nothing;
  if found then
    return 'new';
  end if;
  select outcome into v_outcome from private.stripe_events where id = p_event ->> 'id';
  return case when v_outcome in ('processed', 'ignored') then 'done' else 'pending' end;
end
$$;
comment on function private.record_stripe_event(jsonb) is 'Stores a verified Stripe event once; new, pending (a retry) or done (a replay).';
grant execute on function private.record_stripe_event(jsonb) to service_role;

-- Starts handling an event: locks it (two deliveries of one event handle it once) and the object
-- it is about (two events of one object apply one after the other, each with Stripe's state as
-- fetched after the lock). False when it was handled meanwhile.
create function private.claim_stripe_event(p_event_id text)
returns boolean
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_event private.stripe_events;
begin
  perform private.require_service_role('Only stripe-webhook handles Stripe events.');
  select * into v_event from private.stripe_events where id = p_event_id for update;
  if v_event.id is null or v_event.outcome in ('processed', 'ignored') then
    return false;
  end if;
  if v_event.object_id is not null then
    perform pg_advisory_xact_lock(hashtextextended('stripe:' || v_event.object_id, 0));
  end if;
  return true;
end
$$;
comment on function private.claim_stripe_event(text) is 'Locks a Stripe event and its object for handling; false when it was handled already.';
grant execute on function private.claim_stripe_event(text) to service_role;

create function private.finish_stripe_event(p_event_id text, p_outcome text, p_error text default null)
returns void
language sql
security definer
set search_path = ''
as $$
  update private.stripe_events
  set outcome = p_outcome, last_error = left(p_error, 2000), attempts = attempts + 1,
      processed_at = case when p_outcome in ('processed', 'ignored') then now() end
  where id = p_event_id
$$;
comment on function private.finish_stripe_event(text, text, text) is 'Records how a delivery''s handling ended (processed, ignored, or failed: Stripe retries it) and counts the attempt.';
grant execute on function private.finish_stripe_event(text, text, text) to service_role;

create function private.purge_stripe_events(p_now timestamptz default now())
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_count integer;
begin
  delete from private.stripe_events
  where outcome in ('processed', 'ignored')
    and received_at < p_now - (private.setting('stripe_event_retention') #>> '{}')::interval;
  get diagnostics v_count = row_count;
  return v_count;
end
$$;
comment on function private.purge_stripe_events(timestamptz) is 'Deletes handled Stripe events older than stripe_event_retention.';
grant execute on function private.purge_stripe_events(timestamptz) to service_role;

-- ---------------------------------------------------------------------------------------------
-- Plans follow subscriptions; allocations follow paid invoices
-- ---------------------------------------------------------------------------------------------
-- start_plan_period learns the period's end: Stripe's, not start + plan.period, for periods
-- Stripe bills (a proration invoice pays from mid-period to the subscription's period end).
drop function private.start_plan_period(uuid, text, timestamptz, timestamptz, boolean);
create function private.start_plan_period(
  p_organization_id uuid, p_plan_key text, p_period_start timestamptz, p_now timestamptz,
  p_grant_allocation boolean default true, p_period_end timestamptz default null
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
  v_period_end := coalesce(p_period_end, p_period_start + v_plan.period);

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
  set low_threshold = coalesce(b.low_threshold_override, private.default_low_threshold(p_plan_key, b.pool_key))
  where b.organization_id = p_organization_id;

  perform private.close_credit_pools(p_organization_id, v_pools, p_now);
end
$$;
comment on function private.start_plan_period(uuid, text, timestamptz, timestamptz, boolean, timestamptz) is
  'Starts a billing period on a plan: expires the old allocation, grants the new one (unless p_grant_allocation is false) until p_period_end (default: start + the plan''s period), resets thresholds.';

-- Organizations a Stripe subscription bills renew when their invoice is paid, not on the clock.
create or replace function private.renew_credit_periods(p_now timestamptz default now(), p_limit integer default 500)
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
      and not exists (select 1 from public.subscriptions s where s.organization_id = op.organization_id
                      and s.status in ('active', 'trialing', 'past_due', 'unpaid', 'incomplete', 'paused'))
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
  'Starts the next billing period of organizations whose period ended and that no live Stripe subscription bills (pg_cron, every 5 minutes); returns how many it renewed.';

-- Mirrors a subscription as fetched from Stripe. A live one (active, trialing, past due) puts the
-- organization on its plan, without an allocation: that comes with the paid invoice. One that
-- ended puts it back on starter, unless another live subscription bills it.
create function private.sync_stripe_subscription(p_subscription jsonb, p_now timestamptz default now())
returns text
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_org uuid := private.organization_of_customer(private.stripe_id(p_subscription -> 'customer'));
  v_item jsonb := p_subscription #> '{items,data,0}';
  v_price text := private.stripe_id(v_item -> 'price');
  v_plan text := (select key from public.credit_plans where stripe_price_id = v_price);
  v_status public.subscription_status := (p_subscription ->> 'status')::public.subscription_status;
  v_start timestamptz := coalesce(private.stripe_time(v_item ->> 'current_period_start'), private.stripe_time(p_subscription ->> 'current_period_start'));
  v_end timestamptz := coalesce(private.stripe_time(v_item ->> 'current_period_end'), private.stripe_time(p_subscription ->> 'current_period_end'));
  v_current text;
  v_before public.subscriptions;
begin
  perform private.require_service_role('Only stripe-webhook applies Stripe state.');
  if v_org is null then
    return 'ignored';
  end if;
  select * into v_before from public.subscriptions where stripe_subscription_id = p_subscription ->> 'id';
  insert into public.subscriptions (organization_id, stripe_subscription_id, stripe_price_id, plan_key, status,
    current_period_start, current_period_end, cancel_at_period_end, canceled_at, ended_at, stripe_created, synced_at)
  values (v_org, p_subscription ->> 'id', v_price, v_plan, v_status, v_start, v_end,
    coalesce((p_subscription ->> 'cancel_at_period_end')::boolean, false), private.stripe_time(p_subscription ->> 'canceled_at'),
    private.stripe_time(p_subscription ->> 'ended_at'), private.stripe_time(p_subscription ->> 'created'), p_now)
  on conflict (stripe_subscription_id) do update set
    stripe_price_id = excluded.stripe_price_id, plan_key = excluded.plan_key, status = excluded.status,
    current_period_start = excluded.current_period_start, current_period_end = excluded.current_period_end,
    cancel_at_period_end = excluded.cancel_at_period_end, canceled_at = excluded.canceled_at,
    ended_at = excluded.ended_at, synced_at = excluded.synced_at;

  select plan_key into v_current from public.organization_plans where organization_id = v_org for update;
  if v_status in ('active', 'trialing', 'past_due') and v_plan is not null and v_current is distinct from v_plan then
    perform private.start_plan_period(v_org, v_plan, coalesce(v_start, p_now), p_now, false, v_end);
    perform private.append_domain_event(v_org, 'billing.plan_changed',
      jsonb_build_object('from', v_current, 'to', v_plan, 'subscription', p_subscription ->> 'id'));
  elsif v_status in ('canceled', 'unpaid', 'incomplete_expired') and v_current is distinct from 'starter'
        and v_current = v_plan
        and not exists (select 1 from public.subscriptions s where s.organization_id = v_org
                        and s.stripe_subscription_id <> p_subscription ->> 'id' and s.status in ('active', 'trialing', 'past_due')) then
    perform private.start_plan_period(v_org, 'starter', p_now, p_now, true);
    perform private.append_domain_event(v_org, 'billing.plan_changed',
      jsonb_build_object('from', v_current, 'to', 'starter', 'subscription', p_subscription ->> 'id'));
  end if;
  if v_before.status is distinct from v_status then
    perform private.append_domain_event(v_org, 'billing.subscription_' || v_status::text,
      jsonb_build_object('subscription', p_subscription ->> 'id', 'from', v_before.status, 'plan', v_plan));
  end if;
  return 'processed';
end
$$;
comment on function private.sync_stripe_subscription(jsonb, timestamptz) is
  'Mirrors a Stripe subscription; a live one puts the organization on its plan, an ended one back on starter.';
grant execute on function private.sync_stripe_subscription(jsonb, timestamptz) to service_role;

-- The organization's standing changes: past due (a payment failed), suspended (the grace period
-- passed), good (an invoice was paid). Suspending and restoring recompute every pool, so the
-- balances show what may be spent. Each change is an event.
create function private.set_billing_standing(p_organization_id uuid, p_standing public.billing_standing, p_detail jsonb, p_now timestamptz)
returns boolean
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_before public.billing_accounts;
  v_pools text[];
begin
  select * into v_before from public.billing_accounts where organization_id = p_organization_id for update;
  if v_before.organization_id is null or v_before.standing = p_standing then
    return false;
  end if;
  update public.billing_accounts set
    standing = p_standing,
    past_due_since = case p_standing when 'good' then null else coalesce(v_before.past_due_since, p_now) end,
    suspended_at = case p_standing when 'suspended' then p_now end
  where organization_id = p_organization_id;
  if p_standing = 'suspended' or v_before.standing = 'suspended' then
    select array_agg(key order by key) into v_pools from public.credit_pools;
    perform private.close_credit_pools(p_organization_id, private.open_credit_pools(p_organization_id, v_pools, p_now), p_now);
  end if;
  perform private.append_domain_event(p_organization_id,
    case p_standing when 'good' then 'billing.restored' when 'past_due' then 'billing.payment_failed' else 'billing.suspended' end,
    coalesce(p_detail, '{}'::jsonb) || jsonb_build_object('from', v_before.standing, 'to', p_standing));
  return true;
end
$$;
comment on function private.set_billing_standing(uuid, public.billing_standing, jsonb, timestamptz) is
  'Moves an organization''s billing standing (good, past_due, suspended) with its event; suspending and restoring recompute its pools.';

-- Mirrors an invoice as fetched from Stripe. Paid: the plan period it pays is granted once (keyed
-- by the invoice; an older period's invoice arriving late changes nothing) and, once no failed
-- invoice is open, the organization is back in good standing. A failed payment
-- (p_payment_failed) of an invoice still open puts a good organization past due.
create function private.sync_stripe_invoice(p_invoice jsonb, p_payment_failed boolean default false, p_now timestamptz default now())
returns text
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_org uuid := private.organization_of_customer(private.stripe_id(p_invoice -> 'customer'));
  v_subscription text := private.stripe_invoice_subscription(p_invoice);
  v_line record;
  v_plan text;
  v_status public.invoice_status := (p_invoice ->> 'status')::public.invoice_status;
  v_period_end timestamptz;
  v_superseded boolean;
begin
  perform private.require_service_role('Only stripe-webhook applies Stripe state.');
  if v_org is null then
    return 'ignored';
  end if;
  select * into v_line from private.stripe_invoice_price_line(p_invoice);
  insert into public.invoices (organization_id, stripe_invoice_id, stripe_subscription_id, number, status, billing_reason,
    currency, subtotal, tax, total, amount_due, amount_paid, amount_remaining, period_start, period_end,
    hosted_invoice_url, invoice_pdf_url, attempt_count, next_payment_attempt, paid_at, stripe_created, synced_at)
  values (v_org, p_invoice ->> 'id', v_subscription, p_invoice ->> 'number', v_status, p_invoice ->> 'billing_reason',
    lower(p_invoice ->> 'currency'), coalesce((p_invoice ->> 'subtotal')::bigint, 0),
    coalesce((p_invoice ->> 'tax')::bigint, (select sum((t ->> 'amount')::bigint) from jsonb_array_elements(p_invoice -> 'total_taxes') t)),
    coalesce((p_invoice ->> 'total')::bigint, 0), coalesce((p_invoice ->> 'amount_due')::bigint, 0),
    coalesce((p_invoice ->> 'amount_paid')::bigint, 0), coalesce((p_invoice ->> 'amount_remaining')::bigint, 0),
    v_line.period_start, v_line.period_end, p_invoice ->> 'hosted_invoice_url', p_invoice ->> 'invoice_pdf',
    coalesce((p_invoice ->> 'attempt_count')::integer, 0), private.stripe_time(p_invoice ->> 'next_payment_attempt'),
    private.stripe_time(p_invoice #>> '{status_transitions,paid_at}'), private.stripe_time(p_invoice ->> 'created'), p_now)
  on conflict (stripe_invoice_id) do update set
    number = excluded.number, status = excluded.status, billing_reason = excluded.billing_reason,
    subtotal = excluded.subtotal, tax = excluded.tax, total = excluded.total, amount_due = excluded.amount_due,
    amount_paid = excluded.amount_paid, amount_remaining = excluded.amount_remaining,
    period_start = excluded.period_start, period_end = excluded.period_end,
    hosted_invoice_url = excluded.hosted_invoice_url, invoice_pdf_url = excluded.invoice_pdf_url,
    attempt_count = excluded.attempt_count, next_payment_attempt = excluded.next_payment_attempt,
    paid_at = excluded.paid_at, synced_at = excluded.synced_at;

  if v_status = 'paid' then
    v_plan := (select key from public.credit_plans where stripe_price_id = v_line.price_id);
    if v_subscription is not null and v_plan is not null and v_line.period_start is not null then
      -- A proration pays to the subscription's period end; a full period to the line's end.
      v_period_end := greatest(v_line.period_end, (select current_period_end from public.subscriptions where stripe_subscription_id = v_subscription));
      -- An invoice of an older period arriving after a newer one's is recorded, not applied: its
      -- period is over, and applying it would expire the current allocation.
      v_superseded := exists (select 1 from private.billing_invoice_grants g
                              where g.organization_id = v_org and g.period_start > v_line.period_start);
      insert into private.billing_invoice_grants (stripe_invoice_id, organization_id, plan_key, period_start, period_end)
      values (p_invoice ->> 'id', v_org, v_plan, v_line.period_start, coalesce(v_period_end, v_line.period_end))
      on conflict (stripe_invoice_id) do nothing;
      if found and not v_superseded then
        perform private.start_plan_period(v_org, v_plan, v_line.period_start, p_now, true, coalesce(v_period_end, v_line.period_end));
        perform private.append_domain_event(v_org, 'billing.allocation_granted',
          jsonb_build_object('invoice', p_invoice ->> 'id', 'plan', v_plan, 'period_start', v_line.period_start, 'period_end', coalesce(v_period_end, v_line.period_end)));
      end if;
    end if;
    -- Good standing again once no invoice whose payment failed is still open (an older paid
    -- invoice arriving late does not lift a newer failure).
    if not exists (select 1 from public.invoices i where i.organization_id = v_org and i.status = 'open' and i.attempt_count > 0) then
      perform private.set_billing_standing(v_org, 'good', jsonb_build_object('invoice', p_invoice ->> 'id'), p_now);
    end if;
  elsif p_payment_failed and v_status = 'open' then
    if (select standing from public.billing_accounts where organization_id = v_org) = 'good' then
      perform private.set_billing_standing(v_org, 'past_due', jsonb_build_object(
        'invoice', p_invoice ->> 'id', 'number', p_invoice ->> 'number', 'amount', coalesce((p_invoice ->> 'amount_due')::bigint, 0),
        'currency', lower(p_invoice ->> 'currency'), 'hosted_invoice_url', p_invoice ->> 'hosted_invoice_url',
        'next_payment_attempt', private.stripe_time(p_invoice ->> 'next_payment_attempt')), p_now);
    end if;
  end if;
  return 'processed';
end
$$;
comment on function private.sync_stripe_invoice(jsonb, boolean, timestamptz) is
  'Mirrors a Stripe invoice; paid: its plan period granted once and good standing; a failed payment: past due.';
grant execute on function private.sync_stripe_invoice(jsonb, boolean, timestamptz) to service_role;

-- After billing_grace_period past due, an organization is suspended (pg_cron: billing-dunning).
create function private.advance_dunning(p_now timestamptz default now())
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_account record;
  v_count integer := 0;
begin
  for v_account in
    select a.organization_id, a.past_due_since from public.billing_accounts a
    where a.standing = 'past_due'
      and a.past_due_since <= p_now - (private.setting('billing_grace_period') #>> '{}')::interval
    order by a.past_due_since
    for update skip locked
  loop
    if private.set_billing_standing(v_account.organization_id, 'suspended', jsonb_build_object(
         'past_due_since', v_account.past_due_since,
         'invoice', (select to_jsonb(i) - 'organization_id' from public.invoices i
                     where i.organization_id = v_account.organization_id and i.status = 'open'
                     order by i.stripe_created desc limit 1)), p_now) then
      v_count := v_count + 1;
    end if;
  end loop;
  return v_count;
end
$$;
comment on function private.advance_dunning(timestamptz) is 'Suspends organizations past due longer than billing_grace_period; returns how many.';
grant execute on function private.advance_dunning(timestamptz) to service_role;

-- A suspended organization consumes purchased credits only: the one draw order and the one
-- available count skip every other grant while it is suspended.
create or replace function private.grants_in_draw_order(p_organization_id uuid, p_pool text, p_now timestamptz)
returns table (id uuid, remaining bigint, expires_at timestamptz)
language sql
stable
security definer
set search_path = ''
as $$
  select g.id, g.remaining, g.expires_at from public.credit_grants g
  where g.organization_id = p_organization_id and g.pool_key = p_pool and g.remaining > 0 and g.expires_at > p_now
    and (g.kind = 'purchase' or not exists (select 1 from public.billing_accounts a
                                            where a.organization_id = p_organization_id and a.standing = 'suspended'))
  order by g.priority, g.expires_at, (g.kind = 'purchase'), g.created_at, g.id
$$;
comment on function private.grants_in_draw_order(uuid, text, timestamptz) is
  'The spendable grants of a pool in draw order: priority, soonest expiry, granted before purchased, oldest; only purchased ones while the organization is suspended.';

create or replace function private.pool_available(p_organization_id uuid, p_pool text, p_now timestamptz)
returns bigint
language sql
stable
security definer
set search_path = ''
as $$
  select coalesce(sum(g.remaining), 0)::bigint from public.credit_grants g
  where g.organization_id = p_organization_id and g.pool_key = p_pool and g.remaining > 0 and g.expires_at > p_now
    and (g.kind = 'purchase' or not exists (select 1 from public.billing_accounts a
                                            where a.organization_id = p_organization_id and a.standing = 'suspended'))
$$;
comment on function private.pool_available(uuid, text, timestamptz) is
  'Spendable credits of an open pool (grant rows are exact while it is open); only purchased ones while the organization is suspended.';

-- ---------------------------------------------------------------------------------------------
-- Credit packs and refunds
-- ---------------------------------------------------------------------------------------------
-- A paid pack checkout: its credits, once per session, as a purchase (drawn last, kept through
-- a suspension, valid for the pool's purchase_validity).
create function private.apply_pack_checkout(p_session jsonb, p_now timestamptz default now())
returns text
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_org uuid := private.organization_of_customer(private.stripe_id(p_session -> 'customer'));
  v_pack public.credit_packs;
  v_quantity integer := coalesce(nullif(p_session #>> '{metadata,quantity}', '')::integer, 1);
  v_grant uuid;
begin
  perform private.require_service_role('Only stripe-webhook applies Stripe state.');
  select * into v_pack from public.credit_packs where key = p_session #>> '{metadata,pack_key}';
  if v_org is null or v_pack.key is null or p_session ->> 'payment_status' <> 'paid'
     or v_org::text is distinct from p_session #>> '{metadata,organization_id}' then
    return 'ignored';
  end if;
  if exists (select 1 from private.credit_pack_purchases where checkout_session_id = p_session ->> 'id') then
    return 'processed';
  end if;
  v_grant := private.add_credit_grant(v_org, v_pack.pool_key, 'purchase', v_pack.credits * v_quantity,
    p_now + (select purchase_validity from public.credit_pools where key = v_pack.pool_key), 100,
    'stripe:' || (p_session ->> 'id'), jsonb_build_object('pack', v_pack.key, 'quantity', v_quantity, 'checkout_session', p_session ->> 'id'),
    p_now);
  insert into private.credit_pack_purchases (checkout_session_id, organization_id, pack_key, pool_key, credits, quantity,
    amount_paid, currency, payment_intent_id, grant_id)
  values (p_session ->> 'id', v_org, v_pack.key, v_pack.pool_key, v_pack.credits * v_quantity, v_quantity,
    coalesce((p_session ->> 'amount_total')::bigint, 0), lower(coalesce(p_session ->> 'currency', v_pack.price_currency)),
    private.stripe_id(p_session -> 'payment_intent'), v_grant);
  perform private.append_domain_event(v_org, 'billing.pack_purchased', jsonb_build_object(
    'pack', v_pack.key, 'pool', v_pack.pool_key, 'credits', v_pack.credits * v_quantity, 'checkout_session', p_session ->> 'id'));
  return 'processed';
end
$$;
comment on function private.apply_pack_checkout(jsonb, timestamptz) is 'Grants a paid pack checkout''s credits once (keyed by its session).';
grant execute on function private.apply_pack_checkout(jsonb, timestamptz) to service_role;

-- A refunded charge of a pack: the share of the pack's credits the refund pays back is taken
-- from what is left of its grant, never more than is left (spent credits stay spent).
create function private.apply_charge_refund(p_charge jsonb, p_now timestamptz default now())
returns text
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_purchase private.credit_pack_purchases;
  v_amount bigint := coalesce((p_charge ->> 'amount')::bigint, 0);
  v_refunded bigint := coalesce((p_charge ->> 'amount_refunded')::bigint, 0);
  v_due bigint;
  v_take bigint;
  v_pools text[];
  v_left bigint;
begin
  perform private.require_service_role('Only stripe-webhook applies Stripe state.');
  select * into v_purchase from private.credit_pack_purchases
  where payment_intent_id = private.stripe_id(p_charge -> 'payment_intent') for update;
  if v_purchase.checkout_session_id is null or v_amount <= 0 then
    return 'ignored';
  end if;
  if v_refunded <= v_purchase.refunded_amount then
    return 'processed';
  end if;
  -- What the refunds so far pay back, in credits, less what was taken back before.
  v_due := least(v_purchase.credits, (v_purchase.credits * least(v_refunded, v_amount)) / v_amount) - v_purchase.credits_revoked;
  v_pools := private.open_credit_pools(v_purchase.organization_id, array[v_purchase.pool_key], p_now);
  select remaining into v_left from public.credit_grants where id = v_purchase.grant_id for update;
  v_take := greatest(0, least(v_due, coalesce(v_left, 0)));
  if v_take > 0 then
    update public.credit_grants set remaining = remaining - v_take where id = v_purchase.grant_id;
    insert into public.credit_ledger (transaction_id, organization_id, pool_key, kind, amount, grant_id, actor_role, metadata, created_at)
    values (gen_random_uuid(), v_purchase.organization_id, v_purchase.pool_key, 'adjustment', -v_take, v_purchase.grant_id, 'system',
            jsonb_build_object('reason', 'refund', 'charge', p_charge ->> 'id', 'refunded', v_refunded, 'checkout_session', v_purchase.checkout_session_id),
            p_now);
  end if;
  perform private.close_credit_pools(v_purchase.organization_id, v_pools, p_now);
  update private.credit_pack_purchases
  set refunded_amount = v_refunded, credits_revoked = credits_revoked + v_take
  where checkout_session_id = v_purchase.checkout_session_id;
  perform private.append_domain_event(v_purchase.organization_id, 'billing.pack_refunded', jsonb_build_object(
    'pack', v_purchase.pack_key, 'pool', v_purchase.pool_key, 'credits_revoked', v_take, 'refunded', v_refunded,
    'checkout_session', v_purchase.checkout_session_id));
  return 'processed';
end
$$;
comment on function private.apply_charge_refund(jsonb, timestamptz) is 'Takes back the unused share of a refunded pack''s credits, never below zero.';
grant execute on function private.apply_charge_refund(jsonb, timestamptz) to service_role;

-- ---------------------------------------------------------------------------------------------
-- Customers and payment methods
-- ---------------------------------------------------------------------------------------------
create function private.sync_stripe_customer(p_customer jsonb, p_now timestamptz default now())
returns text
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_org uuid := private.organization_of_customer(p_customer ->> 'id');
  v_default text := private.stripe_id(p_customer #> '{invoice_settings,default_payment_method}');
begin
  perform private.require_service_role('Only stripe-webhook applies Stripe state.');
  if v_org is null then
    return 'ignored';
  end if;
  update public.billing_accounts set email = p_customer ->> 'email', default_payment_method_id = v_default
  where organization_id = v_org;
  update public.payment_methods set is_default = (stripe_payment_method_id is not distinct from v_default), synced_at = p_now
  where organization_id = v_org and is_default <> (stripe_payment_method_id is not distinct from v_default);
  return 'processed';
end
$$;
comment on function private.sync_stripe_customer(jsonb, timestamptz) is 'Mirrors a Stripe customer''s email and default payment method.';
grant execute on function private.sync_stripe_customer(jsonb, timestamptz) to service_role;

-- A payment method as fetched from Stripe: attached to one of our customers, mirrored; detached
-- (no customer), forgotten.
create function private.sync_stripe_payment_method(p_method jsonb, p_now timestamptz default now())
returns text
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_org uuid := private.organization_of_customer(private.stripe_id(p_method -> 'customer'));
begin
  perform private.require_service_role('Only stripe-webhook applies Stripe state.');
  if v_org is null then
    delete from public.payment_methods where stripe_payment_method_id = p_method ->> 'id';
    return case when found then 'processed' else 'ignored' end;
  end if;
  insert into public.payment_methods (organization_id, stripe_payment_method_id, type, brand, last4, exp_month, exp_year, is_default, synced_at)
  values (v_org, p_method ->> 'id', coalesce(p_method ->> 'type', 'card'), p_method #>> '{card,brand}', p_method #>> '{card,last4}',
          (p_method #>> '{card,exp_month}')::integer, (p_method #>> '{card,exp_year}')::integer,
          coalesce((select default_payment_method_id from public.billing_accounts where organization_id = v_org) = p_method ->> 'id', false), p_now)
  on conflict (stripe_payment_method_id) do update set
    organization_id = excluded.organization_id, type = excluded.type, brand = excluded.brand, last4 = excluded.last4,
    exp_month = excluded.exp_month, exp_year = excluded.exp_year, is_default = excluded.is_default, synced_at = excluded.synced_at;
  return 'processed';
end
$$;
comment on function private.sync_stripe_payment_method(jsonb, timestamptz) is 'Mirrors a Stripe payment method (brand, last four, expiry, default), or forgets a detached one.';
grant execute on function private.sync_stripe_payment_method(jsonb, timestamptz) to service_role;

-- ---------------------------------------------------------------------------------------------
-- Invoice PDFs into the private store
-- ---------------------------------------------------------------------------------------------
-- The service role (billing-invoice-pdfs) stores files too: begin_file_upload takes it as an owner.
create or replace function private.begin_file_upload(
  p_organization_id uuid, p_context text, p_file_name text, p_content_type text, p_size_bytes bigint,
  p_published boolean default false, p_owner_table text default null, p_owner_id uuid default null
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_role public.organization_role;
  v_context public.file_contexts;
  v_store text;
  v_name text := btrim(p_file_name);
  v_id uuid := gen_random_uuid();
  v_object text;
begin
  if private.caller_role() = 'service_role' then
    perform private.require_organization(p_organization_id);
    v_role := 'owner';
  else
    v_role := private.require_member(p_organization_id);
  end if;
  select * into v_context from public.file_contexts where key = p_context;
  if not found then
    perform private.raise('invalid_context', format('No file context %L.', p_context));
  end if;
  if v_name is null or char_length(v_name) not between 1 and 255 or v_name ~ '[/\\\x00-\x1f]' or v_name in ('.', '..') then
    perform private.raise('invalid_file_name', 'A file name is 1 to 255 characters, without slashes or control characters.');
  end if;
  if p_content_type is null or not (lower(p_content_type) = any (v_context.allowed_mime_types)) then
    perform private.raise('file_type_not_allowed', format('%s files are %s only.', p_context, array_to_string(v_context.allowed_mime_types, ', ')));
  end if;
  if p_size_bytes is not null and (p_size_bytes < 0 or p_size_bytes > v_context.max_bytes) then
    perform private.raise('file_too_large', format('%s files are at most %s bytes.', p_context, v_context.max_bytes));
  end if;
  if p_published and not v_context.publishable then
    perform private.raise('not_publishable', format('%s files are never public.', p_context));
  end if;
  v_store := private.file_store_for(p_context, p_published);
  -- Publishing is for owners and admins, as the public bucket's policies say.
  if v_store = 'public' and v_role not in ('owner', 'admin') then
    perform private.raise('not_authorized', 'Only owners and admins publish files.');
  end if;
  -- The object's name keeps only characters every Storage key accepts (the record keeps the
  -- name as given, for downloads): 'Résumé 2026.pdf' is stored as 'R_sum_2026.pdf'.
  v_object := format('%s/%s/%s/%s', p_organization_id, p_context, v_id,
    left(regexp_replace(v_name, '[^A-Za-z0-9._-]+', '_', 'g'), 100));
  insert into public.files (id, organization_id, context, store, object_name, file_name, content_type, size_bytes,
                            owner_table, owner_id, uploaded_by)
  values (v_id, p_organization_id, p_context, v_store, v_object, v_name, lower(p_content_type), p_size_bytes,
          p_owner_table, p_owner_id, auth.uid());
  return jsonb_build_object('file_id', v_id, 'store', v_store, 'object_name', v_object);
end
$$;
grant execute on function private.begin_file_upload(uuid, text, text, text, bigint, boolean, text, uuid) to authenticated, service_role;

create function private.invoices_missing_pdf(p_limit integer default 20)
returns table (invoice_id uuid, organization_id uuid, number text, invoice_pdf_url text)
language sql
stable
security definer
set search_path = ''
as $$
  -- Invoices whose copy failed before go after the others, so they never starve them.
  select id, organization_id, coalesce(number, stripe_invoice_id), invoice_pdf_url from public.invoices
  where status = 'paid' and pdf_file_id is null and invoice_pdf_url is not null and pdf_copy_attempts < 8
  order by pdf_copy_attempts, stripe_created
  limit p_limit
$$;
comment on function private.invoices_missing_pdf(integer) is 'Paid invoices whose PDF is not in the private store yet (billing-invoice-pdfs), fresh ones first.';
grant execute on function private.invoices_missing_pdf(integer) to service_role;

create function private.record_invoice_pdf_failure(p_invoice_id uuid)
returns void
language sql
security definer
set search_path = ''
as $$
  update public.invoices set pdf_copy_attempts = pdf_copy_attempts + 1 where id = p_invoice_id
$$;
comment on function private.record_invoice_pdf_failure(uuid) is 'Counts a failed copy of an invoice''s PDF (billing-invoice-pdfs).';
grant execute on function private.record_invoice_pdf_failure(uuid) to service_role;

create function private.attach_invoice_pdf(p_invoice_id uuid, p_file_id uuid)
returns void
language sql
security definer
set search_path = ''
as $$
  update public.invoices set pdf_file_id = p_file_id where id = p_invoice_id and pdf_file_id is null
$$;
comment on function private.attach_invoice_pdf(uuid, uuid) is 'Links an invoice to its PDF''s copy in the private store.';
grant execute on function private.attach_invoice_pdf(uuid, uuid) to service_role;

-- ---------------------------------------------------------------------------------------------
-- Mail: payment failed and suspended, to the organization's owners and billing members
-- ---------------------------------------------------------------------------------------------
select private.register_outbox_consumer('email', 'Turns domain events into mail (private.email_from_events).',
  array['member.invited', 'credits.low', 'credits.depleted', 'billing.payment_failed', 'billing.suspended']);

create or replace function private.enqueue_event_email(p_event private.domain_events)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_organization text := (select name from public.organizations where id = p_event.organization_id);
  v_pool text := p_event.payload ->> 'pool';
  v_pool_name text := coalesce((select name from public.credit_pools where key = v_pool), v_pool);
  v_invoice jsonb := p_event.payload -> 'invoice';
  v_recipient text;
  v_count integer := 0;
begin
  if p_event.type = 'member.invited' then
    perform private.enqueue_email('organization_invitation', p_event.payload ->> 'email',
      jsonb_build_object(
        'organizationName', v_organization,
        'inviterName', (select coalesce(p.full_name, p.email) from public.profiles p where p.id = (p_event.payload ->> 'invited_by')::uuid),
        'role', p_event.payload ->> 'role',
        'acceptUrl', private.site_url() || '/invitations/accept?token=' || (p_event.payload ->> 'token'),
        'expiresAt', p_event.payload ->> 'expires_at'),
      format('event:%s:%s', p_event.event_id, lower(p_event.payload ->> 'email')), p_event.organization_id);
    return 1;
  end if;
  if v_organization is null then
    return 0;
  end if;
  if p_event.type in ('billing.payment_failed', 'billing.suspended') then
    -- Money mail: to the owners and billing members.
    for v_recipient in select email from private.member_emails(p_event.organization_id, '{owner,billing}') loop
      if p_event.type = 'billing.payment_failed' then
        perform private.enqueue_email('payment_failed', v_recipient, jsonb_build_object(
          'organizationName', v_organization,
          'amount', coalesce((p_event.payload ->> 'amount')::bigint, 0),
          'currency', coalesce(p_event.payload ->> 'currency', 'eur'),
          'invoiceNumber', coalesce(p_event.payload ->> 'number', p_event.payload ->> 'invoice'),
          'updatePaymentUrl', coalesce(p_event.payload ->> 'hosted_invoice_url', private.site_url() || '/billing'),
          'nextAttemptAt', p_event.payload ->> 'next_payment_attempt'),
          format('event:%s:%s', p_event.event_id, v_recipient), p_event.organization_id);
      else
        perform private.enqueue_email('account_overdue', v_recipient, jsonb_build_object(
          'organizationName', v_organization,
          'amount', coalesce((v_invoice ->> 'amount_remaining')::bigint, 0),
          'currency', coalesce(v_invoice ->> 'currency', 'eur'),
          'dueDate', coalesce(v_invoice ->> 'stripe_created', p_event.payload ->> 'past_due_since'),
          'daysOverdue', greatest(1, extract(day from (p_event.created_at - (p_event.payload ->> 'past_due_since')::timestamptz))::integer),
          'suspendAt', null,
          'payUrl', coalesce(v_invoice ->> 'hosted_invoice_url', private.site_url() || '/billing')),
          format('event:%s:%s', p_event.event_id, v_recipient), p_event.organization_id);
      end if;
      v_count := v_count + 1;
    end loop;
    return v_count;
  end if;
  -- credits.low and credits.depleted: to the organization's owners, admins and billing members.
  for v_recipient in select email from private.member_emails(p_event.organization_id, '{owner,admin,billing}') loop
    perform private.enqueue_email(
      case p_event.type when 'credits.low' then 'low_credits' else 'credits_depleted' end,
      v_recipient,
      jsonb_strip_nulls(jsonb_build_object(
        'organizationName', v_organization, 'pool', v_pool, 'poolName', v_pool_name,
        'available', case when p_event.type = 'credits.low' then (p_event.payload ->> 'available')::bigint end,
        'threshold', case when p_event.type = 'credits.low' then (p_event.payload ->> 'threshold')::bigint end,
        'topUpUrl', private.site_url() || '/billing')),
      format('event:%s:%s', p_event.event_id, v_recipient), p_event.organization_id);
    v_count := v_count + 1;
  end loop;
  return v_count;
end
$$;

-- ---------------------------------------------------------------------------------------------
-- Jobs
-- ---------------------------------------------------------------------------------------------
select private.register_job('billing-dunning', '*/15 * * * *', 'sql', 'private.advance_dunning()',
  'Suspends organizations past due longer than billing_grace_period.');
select private.register_job('billing-invoice-pdfs', '*/10 * * * *', 'http', 'billing-invoice-pdfs',
  'Copies paid invoices'' PDFs from Stripe into the private store (context invoice).');
select private.register_job('stripe-events-purge', '23 4 * * *', 'sql', 'private.purge_stripe_events()',
  'Deletes handled Stripe events older than stripe_event_retention.');
