-- 16 Low-balance events: falling below a pool's low threshold (10% of the plan allocation unless
-- the organization set its own) appends one credits.low event to the outbox; reaching zero
-- appends one credits.depleted; after the pool is topped up above the threshold, the next
-- crossing appends again. Owners and admins set the threshold with set_credit_low_threshold.
--
-- Cast: in Acme alice is owner, bob member, carol admin, dave billing; erin owns Evil Corp.
begin;
select plan(32);

select tests.create_user('alice@events-credits.test');
select tests.create_user('bob@events-credits.test');
select tests.create_user('carol@events-credits.test');
select tests.create_user('dave@events-credits.test');
select tests.create_user('erin@events-credits.test');

select tests.authenticate_as('alice@events-credits.test');
select public.create_organization('Acme', 'acme-events-credits-test') as acme_id \gset
select tests.authenticate_as('erin@events-credits.test');
select public.create_organization('Evil Corp', 'evil-events-credits-test') as evil_id \gset
select tests.reset_role();
insert into public.organization_members (organization_id, user_id, role) values
  (:'acme_id', tests.get_user_id('bob@events-credits.test'), 'member'),
  (:'acme_id', tests.get_user_id('carol@events-credits.test'), 'admin'),
  (:'acme_id', tests.get_user_id('dave@events-credits.test'), 'billing');

-- ---------------------------------------------------------------------------------------------
-- One event per crossing
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('bob@events-credits.test');
select public.consume_credits_rpc(:'acme_id', 'form_generation', 36);
select tests.reset_role();
select is_empty(format($$ select 1 from private.domain_events where organization_id = %L and type like 'credits.%%' $$, :'acme_id'),
  'bob spends 180 of Acme''s 200 ai: at 20, exactly the threshold, nothing is announced');

select tests.authenticate_as('bob@events-credits.test');
select public.consume_credits_rpc(:'acme_id', 'ai_chat');
select tests.reset_role();
select results_eq(format($$ select type, payload, actor_id from private.domain_events where organization_id = %L and type like 'credits.%%' order by id $$, :'acme_id'),
  format($$ values ('credits.low', '{"pool": "ai", "available": 19, "threshold": 20}'::jsonb, %L::uuid) $$, tests.get_user_id('bob@events-credits.test')),
  'one more ai_chat takes it to 19, below the threshold: one credits.low event with the pool, what is available and the threshold, caused by bob');

select tests.authenticate_as('bob@events-credits.test');
select public.consume_credits_rpc(:'acme_id', 'ai_chat');
select public.consume_credits_rpc(:'acme_id', 'automation_run');
select tests.reset_role();
select is((select count(*)::int from private.domain_events where organization_id = :'acme_id' and type like 'credits.%'), 1,
  'spending further below the threshold (18, then 16) announces nothing more');

select tests.authenticate_as('bob@events-credits.test');
select public.consume_credits_rpc(:'acme_id', 'ai_chat', 16);
select tests.reset_role();
select results_eq(format($$ select type, payload from private.domain_events where organization_id = %L and type like 'credits.%%' order by id $$, :'acme_id'),
  $$ values ('credits.low', '{"pool": "ai", "available": 19, "threshold": 20}'::jsonb),
            ('credits.depleted', '{"pool": "ai", "available": 0}'::jsonb) $$,
  'reaching zero appends one credits.depleted event');

select tests.authenticate_as('bob@events-credits.test');
select is(public.consume_credits_rpc(:'acme_id', 'ai_chat') ->> 'error', 'insufficient_credits', 'at zero, bob is refused');
select tests.reset_role();
select is((select count(*)::int from private.domain_events where organization_id = :'acme_id' and type like 'credits.%'), 2,
  'and the refusal announces nothing');

select tests.authenticate_as_service_role();
select public.grant_credits(:'acme_id', 'ai', 50);
select tests.reset_role();
select is((select count(*)::int from private.domain_events where organization_id = :'acme_id' and type like 'credits.%'), 2,
  'a grant of 50 lifts ai above the threshold without an event');

select tests.authenticate_as('bob@events-credits.test');
select public.consume_credits_rpc(:'acme_id', 'ai_chat', 30);
select tests.reset_role();
select is((select count(*)::int from private.domain_events where organization_id = :'acme_id' and type like 'credits.%'), 2,
  'spending down to the threshold again (20) announces nothing');
select tests.authenticate_as('bob@events-credits.test');
select public.consume_credits_rpc(:'acme_id', 'ai_chat');
select tests.reset_role();
select results_eq(format($$ select type, payload from private.domain_events where organization_id = %L and type like 'credits.%%' order by id $$, :'acme_id'),
  $$ values ('credits.low', '{"pool": "ai", "available": 19, "threshold": 20}'::jsonb),
            ('credits.depleted', '{"pool": "ai", "available": 0}'::jsonb),
            ('credits.low', '{"pool": "ai", "available": 19, "threshold": 20}'::jsonb) $$,
  'crossing it again after the top-up appends a second credits.low');

select tests.authenticate_as('bob@events-credits.test');
select public.consume_credits_rpc(:'acme_id', 'sms_send', 50);
select tests.reset_role();
select results_eq(format($$ select type, payload from private.domain_events where organization_id = %L and payload ->> 'pool' = 'sms' order by id $$, :'acme_id'),
  $$ values ('credits.depleted', '{"pool": "sms", "available": 0}'::jsonb) $$,
  'spending all 50 sms at once from above the threshold announces only that the pool is depleted');

select is_empty(format($$ select 1 from private.domain_events where organization_id = %L and type like 'credits.%%' $$, :'evil_id'),
  'Evil Corp, untouched, has no credit events');

-- ---------------------------------------------------------------------------------------------
-- set_credit_low_threshold
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('bob@events-credits.test');
select throws_ok(format($$ select public.set_credit_low_threshold(%L, 'whatsapp', 100) $$, :'acme_id'),
  '42501', 'not_authorized', 'bob, a member, cannot set a threshold');
select tests.authenticate_as('dave@events-credits.test');
select throws_ok(format($$ select public.set_credit_low_threshold(%L, 'whatsapp', 100) $$, :'acme_id'),
  '42501', 'not_authorized', 'dave, billing, cannot either');
select tests.authenticate_as('erin@events-credits.test');
select throws_ok(format($$ select public.set_credit_low_threshold(%L, 'whatsapp', 100) $$, :'acme_id'),
  '42501', 'not_authorized', 'erin, a stranger, cannot either');
select tests.clear_authentication();
select throws_ok(format($$ select public.set_credit_low_threshold(%L, 'whatsapp', 100) $$, :'acme_id'),
  '42501', 'permission denied for function set_credit_low_threshold', 'anon cannot execute it');

select tests.authenticate_as('carol@events-credits.test');
select throws_ok(format($$ select public.set_credit_low_threshold(%L, 'whatsapp', -1) $$, :'acme_id'),
  '22023', 'invalid_threshold', 'a negative threshold is refused');
select throws_ok(format($$ select public.set_credit_low_threshold(%L, 'whatsapp', 1000000001) $$, :'acme_id'),
  '22023', 'invalid_threshold', 'a threshold over 1000000000 is refused');
select throws_ok(format($$ select public.set_credit_low_threshold(%L, 'voice', 10) $$, :'acme_id'),
  'PT404', 'pool_not_found', 'a threshold for an unknown pool is refused with pool_not_found');
select lives_ok(format($$ select public.set_credit_low_threshold(%L, 'whatsapp', 100) $$, :'acme_id'),
  'carol, an admin, sets Acme''s whatsapp threshold to 100');
select results_eq(format($$ select low_threshold, low_threshold_override from public.credit_balances where organization_id = %L and pool_key = 'whatsapp' $$, :'acme_id'),
  $$ values (100::bigint, 100::bigint) $$, 'the whatsapp balance now warns below 100');

select tests.authenticate_as('bob@events-credits.test');
select public.consume_credits_rpc(:'acme_id', 'whatsapp_message', 50);
select tests.reset_role();
select is_empty(format($$ select 1 from private.domain_events where organization_id = %L and payload ->> 'pool' = 'whatsapp' $$, :'acme_id'),
  'at 100 whatsapp left, nothing is announced');
select tests.authenticate_as('bob@events-credits.test');
select public.consume_credits_rpc(:'acme_id', 'whatsapp_message');
select tests.reset_role();
select results_eq(format($$ select type, payload from private.domain_events where organization_id = %L and payload ->> 'pool' = 'whatsapp' $$, :'acme_id'),
  $$ values ('credits.low', '{"pool": "whatsapp", "available": 99, "threshold": 100}'::jsonb) $$,
  'at 99 the new threshold is crossed: credits.low carries threshold 100');

select tests.authenticate_as('alice@events-credits.test');
select lives_ok(format($$ select public.set_credit_low_threshold(%L, 'whatsapp', null) $$, :'acme_id'),
  'alice, the owner, clears the whatsapp threshold');
select results_eq(format($$ select low_threshold, low_threshold_override from public.credit_balances where organization_id = %L and pool_key = 'whatsapp' $$, :'acme_id'),
  $$ values (15::bigint, null::bigint) $$, 'which restores the default: 10% of the 150 allocated');

-- A hold can cross the threshold too.
select tests.authenticate_as('bob@events-credits.test');
select public.reserve_credits(:'acme_id', p_amounts => '{"whatsapp": 90}');
select tests.reset_role();
select results_eq(format($$ select type, payload from private.domain_events where organization_id = %L and payload ->> 'pool' = 'whatsapp' order by id $$, :'acme_id'),
  $$ values ('credits.low', '{"pool": "whatsapp", "available": 99, "threshold": 100}'::jsonb),
            ('credits.low', '{"pool": "whatsapp", "available": 9, "threshold": 15}'::jsonb) $$,
  'bob holds 90 of the 99 whatsapp: 9 remain available, below 15, and credits.low is appended');

-- A threshold of 0 announces only depletion.
select tests.authenticate_as('carol@events-credits.test');
select public.set_credit_low_threshold(:'acme_id', 'email', 0);
select tests.authenticate_as('bob@events-credits.test');
select public.consume_credits_rpc(:'acme_id', 'bulk_email', 99);
select tests.reset_role();
select is_empty(format($$ select 1 from private.domain_events where organization_id = %L and payload ->> 'pool' = 'email' $$, :'acme_id'),
  'with the email threshold at 0, falling to 10 emails announces nothing');
select tests.authenticate_as('bob@events-credits.test');
select public.consume_credits_rpc(:'acme_id', 'email_send', 10);
select tests.reset_role();
select results_eq(format($$ select type from private.domain_events where organization_id = %L and payload ->> 'pool' = 'email' $$, :'acme_id'),
  $$ values ('credits.depleted') $$, 'reaching zero still appends credits.depleted');

-- ---------------------------------------------------------------------------------------------
-- Thresholds and plan changes
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('alice@events-credits.test');
select public.set_credit_low_threshold(:'acme_id', 'ai', 7);
select tests.authenticate_as_service_role();
select public.change_plan(:'acme_id', 'premium');
select tests.reset_role();
select results_eq(format($$ select pool_key, low_threshold, low_threshold_override from public.credit_balances where organization_id = %L order by pool_key $$, :'acme_id'),
  $$ values ('ai', 7::bigint, 7::bigint), ('email', 0::bigint, 0::bigint), ('sms', 50::bigint, null::bigint), ('whatsapp', 120::bigint, null::bigint) $$,
  'on premium the default thresholds follow the new allocation (sms 50, whatsapp 120); Acme''s own (ai 7, email 0) stay');
select tests.authenticate_as('alice@events-credits.test');
select public.set_credit_low_threshold(:'acme_id', 'ai', null);
select tests.reset_role();
select is((select low_threshold from public.credit_balances where organization_id = :'acme_id' and pool_key = 'ai'), 150::bigint,
  'clearing the ai threshold on premium restores 150, 10% of its allocation');
select is((select count(*)::int from private.domain_events where organization_id = :'acme_id' and type like 'credits.%'), 7,
  'the plan change, which raised every balance, announced nothing');

select tests.authenticate_as_service_role();
select lives_ok(format($$ select public.set_credit_low_threshold(%L, 'sms', 25) $$, :'acme_id'),
  'the service role can set a threshold too');

select tests.reset_role();
select results_eq(format($$ select pool_key, ok from private.verify_credit_ledger(%L) $$, :'acme_id'),
  $$ values ('ai', true), ('email', true), ('sms', true), ('whatsapp', true) $$,
  'Acme''s balances, ledger and grants reconcile');

select * from finish();
rollback;
