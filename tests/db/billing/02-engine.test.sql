-- 02 Applying what Stripe says: the event store (once, retries, replays), subscriptions (plan
-- switched, no allocation), paid invoices (the period's allocation once, also before the
-- subscription's own event, a renewal once more), failed payments (past due, mail to the owners
-- and billing members), dunning through time (suspended: only purchased credits spend; paying
-- restores), packs (once per session), refunds (unused credits back, never below zero), payment
-- methods and the default, the renew job leaving subscribed organizations to Stripe.
--
-- Cast: alice owns Acme (customer cus_acme_engine), with carol (billing) and dave (member).
-- Objects are what Stripe's API answers, cut to the fields the engine reads.
begin;
select plan(47);

select tests.create_user('alice@engine.test');
select tests.create_user('carol@engine.test');
select tests.create_user('dave@engine.test');
select tests.authenticate_as('alice@engine.test');
select public.create_organization('Acme', 'acme-engine-test') as acme \gset
select tests.reset_role();
insert into public.organization_members (organization_id, user_id, role) values
  (:'acme', tests.get_user_id('carol@engine.test'), 'billing'),
  (:'acme', tests.get_user_id('dave@engine.test'), 'member');
insert into public.billing_accounts (organization_id, stripe_customer_id) values (:'acme', 'cus_acme_engine');
update public.credit_plans set stripe_price_id = 'price_engine_premium' where key = 'premium';
update public.credit_packs set stripe_price_id = 'price_engine_ai_1000' where key = 'ai_1000';

create function pg_temp.ai_available() returns bigint language sql as $$
  select available from public.credit_balances b join public.organizations o on o.id = b.organization_id
  where o.slug = 'acme-engine-test' and b.pool_key = 'ai'
$$;
create function pg_temp.subscription(p_status text, p_start bigint, p_end bigint) returns jsonb language sql as $$
  select jsonb_build_object('id', 'sub_engine', 'object', 'subscription', 'customer', 'cus_acme_engine', 'status', p_status,
    'created', 1798761600, 'cancel_at_period_end', false,
    'items', jsonb_build_object('data', jsonb_build_array(jsonb_build_object('price', jsonb_build_object('id', 'price_engine_premium'),
      'current_period_start', p_start, 'current_period_end', p_end))))
$$;
create function pg_temp.invoice(p_id text, p_status text, p_start bigint, p_end bigint, p_reason text default 'subscription_cycle') returns jsonb language sql as $$
  select jsonb_build_object('id', p_id, 'object', 'invoice', 'customer', 'cus_acme_engine', 'status', p_status, 'number', 'ACME-' || p_id,
    'billing_reason', p_reason, 'currency', 'eur', 'subtotal', 4900, 'total', 4900, 'amount_due', 4900,
    'amount_paid', case when p_status = 'paid' then 4900 else 0 end, 'amount_remaining', case when p_status = 'paid' then 0 else 4900 end,
    'created', p_start, 'attempt_count', 1, 'hosted_invoice_url', 'https://invoice.stripe.test/' || p_id,
    'invoice_pdf', 'https://invoice.stripe.test/' || p_id || '/pdf',
    'parent', jsonb_build_object('subscription_details', jsonb_build_object('subscription', 'sub_engine')),
    'lines', jsonb_build_object('data', jsonb_build_array(jsonb_build_object(
      'pricing', jsonb_build_object('price_details', jsonb_build_object('price', 'price_engine_premium')),
      'period', jsonb_build_object('start', p_start, 'end', p_end)))))
$$;
grant execute on all functions in schema pg_temp to public;
-- 2027-01-01, 2027-02-01, 2027-03-01 as Stripe timestamps
\set jan 1798761600
\set feb 1801440000
\set mar 1803859200

-- ---------------------------------------------------------------------------------------------
-- The event store
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as_service_role();
select is(private.record_stripe_event('{"id": "evt_engine_1", "type": "invoice.paid", "created": 1798761600, "data": {"object": {"id": "in_engine_1"}}}'),
  'new', 'an event is stored the first time');
select is(private.record_stripe_event('{"id": "evt_engine_1", "type": "invoice.paid", "created": 1798761600, "data": {"object": {"id": "in_engine_1"}}}'),
  'pending', 'delivered again before it was handled: a retry, handled again');
select ok(private.claim_stripe_event('evt_engine_1'), 'it is claimed for handling');
select private.finish_stripe_event('evt_engine_1', 'processed');
select is(private.record_stripe_event('{"id": "evt_engine_1", "type": "invoice.paid", "created": 1798761600, "data": {"object": {"id": "in_engine_1"}}}'),
  'done', 'once handled, a replay is acknowledged and ignored');
select ok(not private.claim_stripe_event('evt_engine_1'), 'and never claimed again');
select results_eq($$ select object_id, attempts, outcome from private.stripe_events where id = 'evt_engine_1' $$,
  $$ values ('in_engine_1', 1, 'processed') $$, 'stored once, with its object and attempts');

-- ---------------------------------------------------------------------------------------------
-- Subscribing: the paid invoice arrives before the subscription's own event
-- ---------------------------------------------------------------------------------------------
select is(pg_temp.ai_available(), 200::bigint, 'Acme starts on starter: 200 ai credits');
select is(private.sync_stripe_invoice(pg_temp.invoice('in_engine_1', 'paid', :jan, :feb, 'subscription_create')), 'processed',
  'the first invoice is paid');
select is(pg_temp.ai_available(), 1500::bigint, 'the premium allocation replaces the starter one: 1500 ai credits');
select results_eq(format($$ select plan_key, period_start, period_end from public.organization_plans where organization_id = %L $$, :'acme'),
  $$ values ('premium', '2027-01-01 00:00+00'::timestamptz, '2027-02-01 00:00+00'::timestamptz) $$, 'on premium for Stripe''s period');
select private.sync_stripe_invoice(pg_temp.invoice('in_engine_1', 'paid', :jan, :feb, 'subscription_create'));
select is(pg_temp.ai_available(), 1500::bigint, 'the same invoice again grants nothing');
select is(private.sync_stripe_subscription(pg_temp.subscription('active', :jan, :feb)), 'processed', 'then the subscription''s event');
select is(pg_temp.ai_available(), 1500::bigint, 'which grants nothing either: 1500 once');
select results_eq($$ select status::text, plan_key, current_period_end from public.subscriptions where stripe_subscription_id = 'sub_engine' $$,
  $$ values ('active', 'premium', '2027-02-01 00:00+00'::timestamptz) $$, 'the subscription is mirrored with its plan');
select is((select count(*)::int from public.invoices where stripe_invoice_id = 'in_engine_1' and status = 'paid' and amount_paid = 4900), 1,
  'the invoice is mirrored');

-- ---------------------------------------------------------------------------------------------
-- Renewal, and an old subscription state arriving late
-- ---------------------------------------------------------------------------------------------
select private.sync_stripe_subscription(pg_temp.subscription('active', :feb, :mar));
select is(pg_temp.ai_available(), 1500::bigint, 'the new period''s subscription event grants nothing');
select private.sync_stripe_invoice(pg_temp.invoice('in_engine_2', 'paid', :feb, :mar));
select results_eq(format($$ select pg_temp.ai_available(), (select period_start from public.organization_plans where organization_id = %L) $$, :'acme'),
  $$ values (1500::bigint, '2027-02-01 00:00+00'::timestamptz) $$, 'the renewal invoice grants the next period once, fresh');
select private.sync_stripe_invoice(pg_temp.invoice('in_engine_2', 'paid', :feb, :mar));
select is((select count(*)::int from private.billing_invoice_grants where organization_id = :'acme'), 2, 'two invoices, two allocations');
select is((select count(*)::int from public.credit_ledger where organization_id = :'acme' and kind = 'grant' and pool_key = 'ai'
           and metadata ->> 'plan' = 'premium'), 2, 'two premium grants in the ledger, never more');
select is((select count(*)::int from private.renew_credit_periods('2027-06-01')), 1, 'the renew job runs');
select is((select plan_key from public.organization_plans where organization_id = :'acme'), 'premium', 'and leaves a subscribed organization to Stripe');
select is((select period_start from public.organization_plans where organization_id = :'acme'), '2027-02-01 00:00+00'::timestamptz,
  'its period unchanged');

-- ---------------------------------------------------------------------------------------------
-- A failed payment, dunning through time, suspension, restoration
-- ---------------------------------------------------------------------------------------------
select private.sync_stripe_invoice(pg_temp.invoice('in_engine_3', 'open', :mar, :mar + 2419200), true, '2027-03-01 10:00+00');
select results_eq(format($$ select standing::text, past_due_since from public.billing_accounts where organization_id = %L $$, :'acme'),
  $$ values ('past_due', '2027-03-01 10:00+00'::timestamptz) $$, 'a failed payment puts the organization past due');
select is((select count(*)::int from private.domain_events where organization_id = :'acme' and type = 'billing.payment_failed'), 1,
  'with a billing.payment_failed event');
select private.sync_stripe_invoice(pg_temp.invoice('in_engine_3', 'open', :mar, :mar + 2419200), true, '2027-03-02 10:00+00');
select is((select past_due_since from public.billing_accounts where organization_id = :'acme'), '2027-03-01 10:00+00'::timestamptz,
  'a second failed attempt keeps the first date');
select is((select count(*)::int from private.domain_events where organization_id = :'acme' and type = 'billing.payment_failed'), 1,
  'and mails nobody twice');
select set_eq(format($$ select recipient from private.email_messages m
                       where m.template = 'payment_failed' and m.organization_id = %L $$, :'acme'),
  $$ values ('alice@engine.test'), ('carol@engine.test') $$, 'the email consumer mails the owner and the billing member, not the plain member')
  from (select private.email_from_events(100, now())) consumed;

-- 1000 purchased ai credits, then the grace period runs out.
select is(private.apply_pack_checkout(jsonb_build_object('id', 'cs_engine_pack', 'object', 'checkout.session', 'mode', 'payment',
  'customer', 'cus_acme_engine', 'payment_status', 'paid', 'payment_intent', 'pi_engine_pack', 'amount_total', 1900, 'currency', 'eur',
  'metadata', jsonb_build_object('organization_id', :'acme', 'pack_key', 'ai_1000', 'quantity', '1'))), 'processed', 'a pack is bought');
select is(pg_temp.ai_available(), 2500::bigint, 'its 1000 credits add to the 1500');
select is(private.apply_pack_checkout(jsonb_build_object('id', 'cs_engine_pack', 'object', 'checkout.session', 'mode', 'payment',
  'customer', 'cus_acme_engine', 'payment_status', 'paid', 'payment_intent', 'pi_engine_pack', 'amount_total', 1900, 'currency', 'eur',
  'metadata', jsonb_build_object('organization_id', :'acme', 'pack_key', 'ai_1000', 'quantity', '1'))), 'processed', 'the same session again');
select is(pg_temp.ai_available(), 2500::bigint, 'grants nothing');

select is(private.advance_dunning('2027-03-05 10:00+00'), 0, 'within the grace period nothing happens');
select is(private.advance_dunning('2027-03-08 10:01+00'), 1, 'after seven days the organization is suspended');
select is((select standing::text from public.billing_accounts where organization_id = :'acme'), 'suspended', 'suspended');
select is(pg_temp.ai_available(), 1000::bigint, 'only the purchased credits can be spent');
select tests.authenticate_as('dave@engine.test');
select is((public.consume_credits_rpc(:'acme', 'ai_chat', 999) ->> 'success')::boolean, true, 'a member spends purchased credits');
select results_eq(format($$ select r ->> 'error', (r ->> 'available')::bigint from public.consume_credits_rpc(%L, 'ai_chat', 2) r $$, :'acme'),
  $$ values ('insufficient_credits', 1::bigint) $$, 'but not the plan''s');
select tests.authenticate_as_service_role();
select private.sync_stripe_invoice(pg_temp.invoice('in_engine_3', 'paid', :mar, :mar + 2419200), false, '2027-03-09 10:00+00');
select is((select standing::text from public.billing_accounts where organization_id = :'acme'), 'good', 'paying restores good standing');
select is(pg_temp.ai_available(), 1501::bigint, 'with the paid period''s allocation and the last purchased credit');
select is((select array_agg(type order by id) from private.domain_events where organization_id = :'acme' and type like 'billing.%'
           and type in ('billing.payment_failed', 'billing.suspended', 'billing.restored')),
  array['billing.payment_failed', 'billing.suspended', 'billing.restored'], 'every step is an event');

-- ---------------------------------------------------------------------------------------------
-- Refunds take back what is unused, never below zero
-- ---------------------------------------------------------------------------------------------
select private.apply_charge_refund('{"id": "ch_engine", "object": "charge", "payment_intent": "pi_engine_pack", "amount": 1900, "amount_refunded": 1900}');
select results_eq($$ select credits_revoked, refunded_amount from private.credit_pack_purchases where checkout_session_id = 'cs_engine_pack' $$,
  $$ values (1::bigint, 1900::bigint) $$, 'a full refund of a pack that is all but spent takes back the one credit left');
select is(pg_temp.ai_available(), 1500::bigint, 'leaving the plan''s credits alone');
select private.apply_charge_refund('{"id": "ch_engine", "object": "charge", "payment_intent": "pi_engine_pack", "amount": 1900, "amount_refunded": 1900}');
select is((select credits_revoked from private.credit_pack_purchases where checkout_session_id = 'cs_engine_pack'), 1::bigint,
  'the same refund again takes nothing more');

-- ---------------------------------------------------------------------------------------------
-- Cancellation, payment methods, the customer
-- ---------------------------------------------------------------------------------------------
select private.sync_stripe_subscription(pg_temp.subscription('canceled', :mar, :mar + 2419200));
select is((select plan_key from public.organization_plans where organization_id = :'acme'), 'starter', 'a canceled subscription puts it back on starter');
select private.sync_stripe_payment_method('{"id": "pm_engine", "customer": "cus_acme_engine", "type": "card", "card": {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2030}}');
select private.sync_stripe_customer('{"id": "cus_acme_engine", "email": "billing@acme.test", "invoice_settings": {"default_payment_method": "pm_engine"}}');
select results_eq($$ select brand, last4, exp_year::int, is_default from public.payment_methods where stripe_payment_method_id = 'pm_engine' $$,
  $$ values ('visa', '4242', 2030, true) $$, 'an attached card is mirrored, and the customer''s default marked');
select private.sync_stripe_payment_method('{"id": "pm_engine", "customer": null, "type": "card", "card": {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2030}}');
select is((select count(*)::int from public.payment_methods where stripe_payment_method_id = 'pm_engine'), 0, 'a detached one is forgotten');
select is(private.sync_stripe_subscription(jsonb_set(pg_temp.subscription('active', :jan, :feb), '{customer}', '"cus_not_ours"')), 'ignored',
  'an object of a customer that is not ours is ignored');

select tests.reset_role();
select * from finish();
rollback;
