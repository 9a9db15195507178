-- 15 Refunds and plans. refund_credits (service role and platform admins) gives back all or part
-- of a consumption, never more than it consumed, as a refund grant with a refund ledger entry.
-- change_plan (service role only) expires what is left of the old allocation, grants the new one
-- and moves the thresholds, leaving purchases alone. private.renew_credit_periods grants each
-- new period's allocation exactly once.
--
-- Cast: alice owns Acme, bob is a member, ada is a platform admin; carol owns Beta and Gamma,
-- which change plans; dave owns Delta and Epsilon, whose periods renew.
begin;
select plan(58);

select tests.create_user('alice@refunds.test');
select tests.create_user('bob@refunds.test');
select tests.create_user('ada@refunds.test', '{"platform_admin": true}');
select tests.create_user('carol@refunds.test');
select tests.create_user('dave@refunds.test');

select tests.authenticate_as('alice@refunds.test');
select public.create_organization('Acme', 'acme-refunds-test') as acme_id \gset
select tests.authenticate_as('carol@refunds.test');
select public.create_organization('Beta', 'beta-refunds-test') as beta_id \gset
select public.create_organization('Gamma', 'gamma-refunds-test') as gamma_id \gset
select tests.authenticate_as('dave@refunds.test');
select public.create_organization('Delta', 'delta-refunds-test') as delta_id \gset
select public.create_organization('Epsilon', 'epsilon-refunds-test') as epsilon_id \gset
select tests.reset_role();
insert into public.organization_members (organization_id, user_id, role)
values (:'acme_id', tests.get_user_id('bob@refunds.test'), 'member');
insert into public.credit_actions (key, name) values ('ai_whatsapp_reply', 'AI WhatsApp reply');
insert into public.credit_action_costs (action_key, pool_key, amount) values ('ai_whatsapp_reply', 'ai', 1), ('ai_whatsapp_reply', 'whatsapp', 1);
select period_end as acme_period_end from public.organization_plans where organization_id = :'acme_id' \gset

-- ---------------------------------------------------------------------------------------------
-- Refunds: who may refund
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('bob@refunds.test');
select public.consume_credits_rpc(:'acme_id', 'form_generation', 4) ->> 'transaction_id' as tx1 \gset

select throws_ok(format($$ select public.refund_credits(%L) $$, :'tx1'), '42501', 'not_authorized',
  'bob cannot refund his own consumption');
select tests.authenticate_as('alice@refunds.test');
select throws_ok(format($$ select public.refund_credits(%L) $$, :'tx1'), '42501', 'not_authorized',
  'alice, Acme''s owner, cannot refund either');
select tests.clear_authentication();
select throws_ok(format($$ select public.refund_credits(%L) $$, :'tx1'), '42501', 'permission denied for function refund_credits',
  'anon cannot execute refund_credits');

-- ---------------------------------------------------------------------------------------------
-- Partial refunds, never more than consumed
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as_service_role();
select public.refund_credits(:'tx1', '{"ai": 5}', 'model error') as refund1 \gset
select is(:'refund1'::jsonb - 'transaction_id',
  jsonb_build_object('success', true, 'refund_of', :'tx1', 'refunded', '{"ai": 5}'::jsonb),
  'the service role refunds 5 of the 20 ai bob consumed');
select is(public.get_credit_balances(:'acme_id') -> 'ai', '{"available": 185, "reserved": 0, "total": 200}'::jsonb,
  'Acme has 185 ai available again; a refund gives back what was spent, it does not add to the total granted');

select tests.reset_role();
select results_eq(format($$
  select g.kind::text, g.amount, g.source, g.metadata, g.expires_at = %L::timestamptz, l.kind::text, l.amount, l.refund_of::text, l.transaction_id::text, l.actor_role
  from public.credit_ledger l join public.credit_grants g on g.id = l.grant_id where l.refund_of = %L
$$, :'acme_period_end', :'tx1'), format($$
  values ('refund', 5::bigint, %L, '{"reason": "model error"}'::jsonb, true, 'refund', 5::bigint, %L, %L, 'service_role')
$$, 'refund:' || :'tx1', :'tx1', :'refund1'::jsonb ->> 'transaction_id'),
  'the refund is a refund grant of 5 (expiring with the credits it gives back, with the reason) and a refund entry of +5 pointing at the consumption');

select tests.authenticate_as_service_role();
select is(public.refund_credits(:'tx1', '{"ai": 15}') -> 'refunded', '{"ai": 15}'::jsonb,
  'a second partial refund gives back the other 15');
select throws_ok(format($$ select public.refund_credits(%L, '{"ai": 1}') $$, :'tx1'), 'P0001', 'refund_exceeds_consumed',
  'one more credit would exceed what was consumed across the two refunds: refused');
select is(public.refund_credits(:'tx1') -> 'refunded', '{}'::jsonb,
  'refunding the whole of it now gives back nothing: nothing is left to refund');
select is(public.get_credit_balances(:'acme_id') -> 'ai' -> 'available', '200'::jsonb,
  'Acme is back at 200 ai, never above what it had');

select tests.authenticate_as('bob@refunds.test');
select public.consume_credits_rpc(:'acme_id', 'ai_chat', 10) ->> 'transaction_id' as tx2 \gset
select tests.authenticate_as_service_role();
select throws_ok(format($$ select public.refund_credits(%L, '{"ai": 11}') $$, :'tx2'), 'P0001', 'refund_exceeds_consumed',
  'refunding 11 of a 10-credit consumption is refused');
select throws_ok(format($$ select public.refund_credits(%L, '{"whatsapp": 1}') $$, :'tx2'), 'P0001', 'refund_exceeds_consumed',
  'refunding a pool the consumption did not touch is refused');
select throws_ok(format($$ select public.refund_credits(%L, '{"ai": 0}') $$, :'tx2'), '22023', 'invalid_amounts',
  'refunding 0 is refused with invalid_amounts');
select throws_ok(format($$ select public.refund_credits(%L, '{"voice": 1}') $$, :'tx2'), 'PT404', 'pool_not_found',
  'refunding an unknown pool is refused with pool_not_found');
select throws_ok(format($$ select public.refund_credits(%L) $$, gen_random_uuid()), 'PT404', 'transaction_not_found',
  'refunding an unknown transaction is refused with transaction_not_found');
select throws_ok(format($$ select public.refund_credits(%L) $$, :'refund1'::jsonb ->> 'transaction_id'), 'PT404', 'transaction_not_found',
  'a refund is not a consumption and cannot itself be refunded');
select throws_ok(format($$ select public.refund_credits(null) $$), 'PT404', 'transaction_not_found',
  'a missing transaction is refused with transaction_not_found');
select is(public.get_credit_balances(:'acme_id') -> 'ai' -> 'available', '190'::jsonb,
  'the refused refunds gave nothing back');

select tests.authenticate_as('ada@refunds.test');
select is(public.refund_credits(:'tx2', null, 'goodwill') -> 'refunded', '{"ai": 10}'::jsonb,
  'ada, a platform admin, refunds the whole consumption');
select tests.reset_role();
select results_eq(format($$ select actor_id, actor_role from public.credit_ledger where refund_of = %L $$, :'tx2'),
  format($$ values (%L::uuid, 'authenticated') $$, tests.get_user_id('ada@refunds.test')),
  'the refund entry records ada as its actor');

-- A multi-pool consumption is refunded in every pool.
select tests.authenticate_as('bob@refunds.test');
select public.consume_credits_rpc(:'acme_id', 'ai_whatsapp_reply', 3) ->> 'transaction_id' as tx3 \gset
select tests.authenticate_as_service_role();
select is(public.refund_credits(:'tx3') -> 'refunded', '{"ai": 3, "whatsapp": 3}'::jsonb,
  'refunding a multi-pool consumption gives back both pools');

-- A refund of credits about to expire lives at least a day.
select public.grant_credits(:'acme_id', 'sms', 10, 'manual', now() + interval '1 hour', 0);
select tests.authenticate_as('bob@refunds.test');
select public.consume_credits_rpc(:'acme_id', 'sms_send', 10) ->> 'transaction_id' as tx4 \gset
select tests.authenticate_as_service_role();
select public.refund_credits(:'tx4');
select tests.reset_role();
select is((select expires_at from public.credit_grants where kind = 'refund' and source = 'refund:' || :'tx4'), now() + interval '1 day',
  'credits refunded from a grant expiring within the hour stay valid a day');

select results_eq(format($$ select pool_key, ok from private.verify_credit_ledger(%L) $$, :'acme_id'),
  $$ values ('ai', true), ('email', true), ('sms', true), ('whatsapp', true) $$,
  'Acme''s balances, ledger and grants reconcile after the refunds');

-- ---------------------------------------------------------------------------------------------
-- change_plan
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('carol@refunds.test');
select public.consume_credits_rpc(:'beta_id', 'ai_chat', 50);
select throws_ok(format($$ select public.change_plan(%L, 'premium') $$, :'beta_id'), '42501', 'permission denied for function change_plan',
  'carol, Beta''s owner, cannot change its plan herself');
select tests.authenticate_as('ada@refunds.test');
select throws_ok(format($$ select public.change_plan(%L, 'premium') $$, :'beta_id'), '42501', 'permission denied for function change_plan',
  'nor can a platform admin: billing (the service role) changes plans');
select tests.clear_authentication();
select throws_ok(format($$ select public.change_plan(%L, 'premium') $$, :'beta_id'), '42501', 'permission denied for function change_plan',
  'nor anon');

select tests.authenticate_as_service_role();
select public.grant_credits(:'beta_id', 'ai', 100, 'purchase') ->> 'grant_id' as beta_purchase \gset
select tests.reset_role();
select id as beta_old_ai from public.credit_grants where organization_id = :'beta_id' and pool_key = 'ai' and kind = 'plan_allocation' \gset

select tests.authenticate_as_service_role();
select is(public.change_plan(:'beta_id', 'premium', now()),
  jsonb_build_object('success', true, 'plan', 'premium', 'period_start', now(), 'period_end', now() + interval '1 month'),
  'the service role moves Beta to premium: a new period starts now and runs a month');
select is(public.get_credit_balances(:'beta_id'),
  '{"ai": {"available": 1600, "reserved": 0, "total": 1600}, "whatsapp": {"available": 1200, "reserved": 0, "total": 1200},
    "email": {"available": 20000, "reserved": 0, "total": 20000}, "sms": {"available": 500, "reserved": 0, "total": 500}}'::jsonb,
  'Beta now has the premium allocation, plus the 100 ai it bought; the 150 ai left of starter are gone');

select tests.reset_role();
select results_eq(format($$ select plan_key, period_start = now(), period_end = now() + interval '1 month' from public.organization_plans where organization_id = %L $$, :'beta_id'),
  $$ values ('premium', true, true) $$, 'Beta''s plan row says premium with the new period');
select results_eq(format($$ select remaining, expires_at = now(), expired_at = now() from public.credit_grants where id = %L $$, :'beta_old_ai'),
  $$ values (0::bigint, true, true) $$, 'the old ai allocation expired now');
select results_eq(format($$ select kind::text, amount, actor_role from public.credit_ledger where grant_id = %L order by id $$, :'beta_old_ai'),
  $$ values ('grant', 200::bigint, 'system'), ('consumption', -50::bigint, 'authenticated'), ('expiry', -150::bigint, 'system') $$,
  'its 150 remaining credits left with an expiry entry');
select results_eq(format($$
  select pool_key, amount, remaining, expires_at = now() + interval '1 month', source from public.credit_grants
  where organization_id = %L and kind = 'plan_allocation' and expired_at is null order by pool_key
$$, :'beta_id'), format($$ values
  ('ai', 1500::bigint, 1500::bigint, true, %1$L), ('email', 20000::bigint, 20000::bigint, true, %1$L),
  ('sms', 500::bigint, 500::bigint, true, %1$L), ('whatsapp', 1200::bigint, 1200::bigint, true, %1$L)
$$, 'plan:premium:' || to_char(now() at time zone 'UTC', 'YYYY-MM-DD')),
  'the premium allocation is granted per pool until the new period ends');
select results_eq(format($$ select remaining, expires_at = now() + interval '12 months', expired_at from public.credit_grants where id = %L $$, :'beta_purchase'),
  $$ values (100::bigint, true, null::timestamptz) $$, 'the purchase survives the change untouched');
select results_eq(format($$ select pool_key, low_threshold from public.credit_balances where organization_id = %L order by pool_key $$, :'beta_id'),
  $$ values ('ai', 150::bigint), ('email', 2000::bigint), ('sms', 50::bigint), ('whatsapp', 120::bigint) $$,
  'the low thresholds follow the new allocation: 10% of it');
select results_eq(format($$ select pool_key, ok from private.verify_credit_ledger(%L) $$, :'beta_id'),
  $$ values ('ai', true), ('email', true), ('sms', true), ('whatsapp', true) $$,
  'Beta reconciles after the change');

select tests.authenticate_as_service_role();
select public.change_plan(:'beta_id', 'starter', now());
select is(public.get_credit_balances(:'beta_id') -> 'ai', '{"available": 300, "reserved": 0, "total": 300}'::jsonb,
  'moved back to starter, Beta has 200 ai again plus its purchase: the premium allocation expired');
select tests.reset_role();
select is((select low_threshold from public.credit_balances where organization_id = :'beta_id' and pool_key = 'ai'), 20::bigint,
  'and the ai threshold is back at 20');

select tests.authenticate_as_service_role();
select throws_ok(format($$ select public.change_plan(%L, 'gold') $$, :'beta_id'), 'PT404', 'plan_not_found',
  'an unknown plan is refused with plan_not_found');
select tests.reset_role();
insert into public.credit_plans (key, name, is_active) values ('legacy', 'Legacy', false);
select tests.authenticate_as_service_role();
select throws_ok(format($$ select public.change_plan(%L, 'legacy') $$, :'beta_id'), 'PT404', 'plan_not_found',
  'an inactive plan cannot be chosen either');
select throws_ok(format($$ select public.change_plan(%L, 'premium') $$, gen_random_uuid()), 'PT404', 'organization_not_found',
  'an unknown organization is refused with organization_not_found');
select tests.reset_role();
select is((select plan_key from public.organization_plans where organization_id = :'beta_id'), 'starter',
  'the refused changes left Beta on starter');

-- Credits held when the plan changes belong to the old allocation: released later, they expire.
select tests.authenticate_as('carol@refunds.test');
select public.reserve_credits(:'gamma_id', p_amounts => '{"ai": 200}') ->> 'reservation_id' as gamma_hold \gset
select tests.authenticate_as_service_role();
select public.change_plan(:'gamma_id', 'premium', now());
select tests.authenticate_as('carol@refunds.test');
select public.release_reservation(:'gamma_hold');
select is(public.get_credit_balances(:'gamma_id') -> 'ai', '{"available": 1500, "reserved": 0, "total": 1500}'::jsonb,
  'Gamma held all 200 starter ai when it moved to premium; once released they do not come back on top of the 1500');

-- ---------------------------------------------------------------------------------------------
-- Period renewal
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('dave@refunds.test');
select public.consume_credits_rpc(:'delta_id', 'ai_chat', 30);
select tests.reset_role();
select period_end as delta_p from public.organization_plans where organization_id = :'delta_id' \gset
select id as delta_old_ai from public.credit_grants where organization_id = :'delta_id' and pool_key = 'ai' and kind = 'plan_allocation' \gset

select ok(private.renew_credit_periods(:'delta_p'::timestamptz - interval '1 minute') >= 0, 'the renewal job runs a minute before Delta''s period ends ...');
select is((select period_end from public.organization_plans where organization_id = :'delta_id'), :'delta_p'::timestamptz,
  '... and leaves Delta''s period alone');

select ok(private.renew_credit_periods(:'delta_p'::timestamptz + interval '1 minute') >= 1, 'a minute after the period ended, it renews at least one organization');
select results_eq(format($$ select plan_key, period_start, period_end from public.organization_plans where organization_id = %L $$, :'delta_id'),
  format($$ values ('starter', %L::timestamptz, %L::timestamptz + interval '1 month') $$, :'delta_p', :'delta_p'),
  'Delta''s next period starts where the last one ended and runs a month');
select results_eq(format($$
  select pool_key, amount, remaining, expires_at, source from public.credit_grants
  where organization_id = %L and kind = 'plan_allocation' and expired_at is null order by pool_key
$$, :'delta_id'), format($$ values
  ('ai', 200::bigint, 200::bigint, %1$L::timestamptz + interval '1 month', %2$L), ('email', 1000::bigint, 1000::bigint, %1$L::timestamptz + interval '1 month', %2$L),
  ('sms', 50::bigint, 50::bigint, %1$L::timestamptz + interval '1 month', %2$L), ('whatsapp', 150::bigint, 150::bigint, %1$L::timestamptz + interval '1 month', %2$L)
$$, :'delta_p', 'plan:starter:' || to_char(:'delta_p'::timestamptz at time zone 'UTC', 'YYYY-MM-DD')),
  'the new period''s starter allocation is granted, expiring at its end');
select results_eq(format($$ select remaining, expired_at from public.credit_grants where id = %L $$, :'delta_old_ai'),
  format($$ values (0::bigint, %L::timestamptz + interval '1 minute') $$, :'delta_p'),
  'the old ai allocation''s 170 left expired when the job ran');
select is((select amount from public.credit_ledger where grant_id = :'delta_old_ai' and kind = 'expiry'), -170::bigint,
  'with an expiry entry of -170');
select is((select available from public.credit_balances where organization_id = :'delta_id' and pool_key = 'ai'), 200::bigint,
  'Delta has 200 ai for the new period, not 370');

select lives_ok(format($$ select private.renew_credit_periods(%L::timestamptz + interval '1 minute') $$, :'delta_p'),
  'the job runs again at the same time');
select lives_ok(format($$ select private.renew_credit_periods(%L::timestamptz + interval '2 minutes') $$, :'delta_p'),
  'and a minute later');
select is((select count(*)::int from public.credit_grants where organization_id = :'delta_id' and kind = 'plan_allocation'), 8,
  'Delta still has exactly two allocations per pool: the new period was granted once');
select is((select period_start from public.organization_plans where organization_id = :'delta_id'), :'delta_p'::timestamptz,
  'and its period did not move again');
select results_eq(format($$ select pool_key, ok from private.verify_credit_ledger(%L) $$, :'delta_id'),
  $$ values ('ai', true), ('email', true), ('sms', true), ('whatsapp', true) $$,
  'Delta reconciles after the renewal');

-- Missed periods are not granted twice: a renewal long overdue grants the current period once.
-- (Epsilon was created with Delta, so the runs above renewed it once already.)
select period_end as epsilon_p from public.organization_plans where organization_id = :'epsilon_id' \gset
select count(*) as epsilon_allocations from public.credit_grants where organization_id = :'epsilon_id' and kind = 'plan_allocation' \gset
select ((:'epsilon_p'::timestamptz + interval '1 month') + interval '1 month') as epsilon_current \gset
select private.renew_credit_periods(:'epsilon_current'::timestamptz + interval '1 day');
select results_eq(format($$ select period_start, period_end from public.organization_plans where organization_id = %L $$, :'epsilon_id'),
  format($$ values (%L::timestamptz, %L::timestamptz + interval '1 month') $$, :'epsilon_current', :'epsilon_current'),
  'Epsilon, renewed two periods late, starts the period that is current, not a missed one');
select is((select count(*) from public.credit_grants where organization_id = :'epsilon_id' and kind = 'plan_allocation'), :'epsilon_allocations'::bigint + 4,
  'and gets one new allocation per pool, not one per missed period');
select results_eq(format($$ select pool_key, ok from private.verify_credit_ledger(%L) $$, :'epsilon_id'),
  $$ values ('ai', true), ('email', true), ('sms', true), ('whatsapp', true) $$,
  'Epsilon reconciles');

select * from finish();
rollback;
