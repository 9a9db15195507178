-- 01 Billing access: owners, admins and billing members read their organization's billing
-- account, subscriptions, invoices and payment methods; plain members, strangers and anon read
-- none; nobody but the service role writes them; the catalogue (plans' prices, credit packs) is
-- readable by signed-in users; the checks the billing functions run as the caller.
--
-- Cast: alice owns Acme, with bob (admin), carol (billing) and dave (member); erin owns Globex.
begin;
select plan(39);

select tests.create_user('alice@billing.test');
select tests.create_user('bob@billing.test');
select tests.create_user('carol@billing.test');
select tests.create_user('dave@billing.test');
select tests.create_user('erin@billing.test');
select tests.authenticate_as('alice@billing.test');
select public.create_organization('Acme', 'acme-billing-test') as acme \gset
select tests.authenticate_as('erin@billing.test');
select public.create_organization('Globex', 'globex-billing-test') as globex \gset
select tests.reset_role();
insert into public.organization_members (organization_id, user_id, role) values
  (:'acme', tests.get_user_id('bob@billing.test'), 'admin'),
  (:'acme', tests.get_user_id('carol@billing.test'), 'billing'),
  (:'acme', tests.get_user_id('dave@billing.test'), 'member');

insert into public.billing_accounts (organization_id, stripe_customer_id) values
  (:'acme', 'cus_acme_billing_test'), (:'globex', 'cus_globex_billing_test');
insert into public.subscriptions (organization_id, stripe_subscription_id, status, stripe_created, synced_at) values
  (:'acme', 'sub_acme_billing_test', 'active', now(), now()), (:'globex', 'sub_globex_billing_test', 'active', now(), now());
insert into public.invoices (organization_id, stripe_invoice_id, status, currency, stripe_created, synced_at) values
  (:'acme', 'in_acme_billing_test', 'paid', 'eur', now(), now()), (:'globex', 'in_globex_billing_test', 'open', 'eur', now(), now());
insert into public.payment_methods (organization_id, stripe_payment_method_id, type, brand, last4, synced_at) values
  (:'acme', 'pm_acme_billing_test', 'card', 'visa', '4242', now()), (:'globex', 'pm_globex_billing_test', 'card', 'visa', '1881', now());

create function pg_temp.visible(p_table text) returns bigint language plpgsql as $$
declare v bigint;
begin
  execute format('select count(*) from public.%I', p_table) into v;
  return v;
end $$;
grant execute on function pg_temp.visible(text) to public;

-- ---------------------------------------------------------------------------------------------
-- Reading, both ways
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('alice@billing.test');
select results_eq($$ select pg_temp.visible(t) from unnest('{billing_accounts,subscriptions,invoices,payment_methods}'::text[]) t $$,
  $$ values (1::bigint), (1::bigint), (1::bigint), (1::bigint) $$, 'the owner reads their organization''s billing rows, no other''s');
select tests.authenticate_as('bob@billing.test');
select results_eq($$ select pg_temp.visible(t) from unnest('{billing_accounts,subscriptions,invoices,payment_methods}'::text[]) t $$,
  $$ values (1::bigint), (1::bigint), (1::bigint), (1::bigint) $$, 'so does an admin');
select tests.authenticate_as('carol@billing.test');
select results_eq($$ select pg_temp.visible(t) from unnest('{billing_accounts,subscriptions,invoices,payment_methods}'::text[]) t $$,
  $$ values (1::bigint), (1::bigint), (1::bigint), (1::bigint) $$, 'and a billing member');
select is((select stripe_invoice_id from public.invoices), 'in_acme_billing_test', 'their own invoice');
select tests.authenticate_as('dave@billing.test');
select results_eq($$ select pg_temp.visible(t) from unnest('{billing_accounts,subscriptions,invoices,payment_methods}'::text[]) t $$,
  $$ values (0::bigint), (0::bigint), (0::bigint), (0::bigint) $$, 'a plain member sees no invoices, payment methods, subscriptions or account');
select tests.authenticate_as('erin@billing.test');
select is((select array_agg(stripe_invoice_id) from public.invoices), array['in_globex_billing_test'], 'a stranger sees only their own');
select tests.clear_authentication();
select throws_ok($$ select * from public.invoices $$, '42501', null, 'anon reads no invoices');
select throws_ok($$ select * from public.payment_methods $$, '42501', null, 'nor payment methods');
select throws_ok($$ select * from public.billing_accounts $$, '42501', null, 'nor billing accounts');
select throws_ok($$ select * from public.subscriptions $$, '42501', null, 'nor subscriptions');

-- ---------------------------------------------------------------------------------------------
-- Writing: only the service role
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('alice@billing.test');
select throws_ok(format($$ insert into public.billing_accounts (organization_id, stripe_customer_id) values (%L, 'cus_mine') $$, :'acme'),
  '42501', null, 'an owner cannot write the billing account');
select throws_ok($$ update public.billing_accounts set standing = 'good' $$, '42501', null, 'nor lift a suspension');
select throws_ok($$ update public.invoices set status = 'paid' $$, '42501', null, 'nor mark an invoice paid');
select throws_ok($$ delete from public.payment_methods $$, '42501', null, 'nor delete payment methods');
select throws_ok($$ update public.subscriptions set status = 'active' $$, '42501', null, 'nor change a subscription');
select throws_ok($$ update public.credit_packs set credits = 1000000 $$, '42501', null, 'nor change the packs');
select throws_ok($$ update public.credit_plans set stripe_price_id = 'price_cheap' $$, '42501', null, 'nor the plans'' prices');
select throws_ok($$ select * from private.stripe_events $$, '42501', null, 'nor read the Stripe events');
select throws_ok($$ select private.record_stripe_event('{"id": "evt_x", "type": "x", "created": 1, "data": {"object": {"id": "x"}}}') $$,
  '42501', null, 'nor record one');
select throws_ok($$ select private.sync_stripe_invoice('{}') $$, '42501', null, 'nor apply Stripe state');
select tests.authenticate_as_service_role();
select lives_ok(format($$ update public.billing_accounts set email = 'billing@acme.test' where organization_id = %L $$, :'acme'),
  'the service role writes the mirror');

-- ---------------------------------------------------------------------------------------------
-- The catalogue
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('dave@billing.test');
select ok((select count(*) from public.credit_packs where is_active) >= 5, 'signed-in users read the credit packs');
select is((select stripe_lookup_key from public.credit_plans where key = 'premium'), 'plan_premium_monthly', 'and the plans'' price lookup keys');
select tests.clear_authentication();
select throws_ok($$ select * from public.credit_packs $$, '42501', null, 'anon does not');

-- ---------------------------------------------------------------------------------------------
-- The checks billing-checkout, billing-portal and billing-setup-intent run as the caller
-- ---------------------------------------------------------------------------------------------
select tests.reset_role();
update public.credit_plans set stripe_price_id = 'price_test_premium' where key = 'premium';
update public.credit_packs set stripe_price_id = 'price_test_ai_1000' where key = 'ai_1000';
update public.credit_packs set stripe_price_id = null where key = 'sms_500';
delete from public.subscriptions where organization_id = :'acme';

select tests.authenticate_as('carol@billing.test');
select is(private.billing_checkout_target(:'acme', 'premium', null) ->> 'price_id', 'price_test_premium',
  'a billing member checks out a plan: its recurring price');
select is(private.billing_checkout_target(:'acme', 'premium', null) ->> 'mode', 'subscription', 'as a subscription');
select results_eq(format($$ select t ->> 'mode', t ->> 'price_id', (t ->> 'credits')::bigint, t ->> 'customer_id'
                           from private.billing_checkout_target(%L, null, 'ai_1000', 3) t $$, :'acme'),
  $$ values ('payment', 'price_test_ai_1000', 3000::bigint, 'cus_acme_billing_test') $$,
  'a pack is a one-time payment of its price, for the quantity''s credits, to the existing customer');
select throws_ok(format($$ select private.billing_checkout_target(%L, 'starter', null) $$, :'acme'), 'P0001', 'plan_not_billable',
  'the free plan is not sold');
select throws_ok(format($$ select private.billing_checkout_target(%L, 'gold', null) $$, :'acme'), 'PT404', 'plan_not_found',
  'an unknown plan is refused');
select throws_ok(format($$ select private.billing_checkout_target(%L, null, 'sms_500') $$, :'acme'), 'P0001', 'pack_not_billable',
  'a pack without a price is refused');
select throws_ok(format($$ select private.billing_checkout_target(%L, 'premium', 'ai_1000') $$, :'acme'), '22023', 'invalid_checkout',
  'a checkout is for a plan or a pack, not both');
select throws_ok(format($$ select private.billing_checkout_target(%L, null, 'ai_1000', 101) $$, :'acme'), '22023', 'invalid_checkout',
  'and for at most 100 packs');
select tests.reset_role();
insert into public.subscriptions (organization_id, stripe_subscription_id, status, stripe_created, synced_at)
values (:'acme', 'sub_acme_billing_test_2', 'past_due', now(), now());
select tests.authenticate_as('carol@billing.test');
select throws_ok(format($$ select private.billing_checkout_target(%L, 'premium', null) $$, :'acme'), 'PT409', 'subscription_exists',
  'a second subscription is refused (the portal changes the first)');
select tests.authenticate_as('dave@billing.test');
select throws_ok(format($$ select private.billing_checkout_target(%L, null, 'ai_1000') $$, :'acme'), '42501', 'not_authorized',
  'a plain member cannot check out');
select throws_ok(format($$ select private.billing_customer_of(%L) $$, :'acme'), '42501', 'not_authorized', 'nor open the portal');
select tests.authenticate_as('erin@billing.test');
select throws_ok(format($$ select private.billing_account_of(%L) $$, :'acme'), '42501', 'not_authorized', 'nor can a stranger');
select tests.authenticate_as('bob@billing.test');
select lives_ok($$ select private.check_billing_return_url('http://127.0.0.1:3000/billing?done=1') $$, 'a return URL on a configured origin passes');
select throws_ok($$ select private.check_billing_return_url('https://evil.example/phish') $$, '22023', 'invalid_return_url',
  'any other origin is refused');
select throws_ok($$ select private.check_billing_return_url('http://127.0.0.1:3000.evil.example/') $$, '22023', 'invalid_return_url',
  'even one that starts like a configured one');

select tests.reset_role();
select * from finish();
rollback;
