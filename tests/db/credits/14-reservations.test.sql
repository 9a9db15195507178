-- 14 Reservations: reserve_credits holds credits (an action's cost or per-pool amounts) so nobody
-- else can spend them; commit_reservation charges what was used and frees the rest;
-- release_reservation frees all; a reservation ends once. Past its expiry a hold counts as
-- available again and private.expire_credits releases it. Usage beyond the hold is drawn from
-- the available credits; beyond those it is refused on plans without overage and recorded as
-- overage on premium.
--
-- Cast: alice owns Acme, Gamma and Delta, bob is a member of Acme; erin owns Evil Corp; paula owns
-- Premium Co, which billing (the service role) moves to premium.
begin;
select plan(91);

select tests.create_user('alice@reservations.test');
select tests.create_user('bob@reservations.test');
select tests.create_user('erin@reservations.test');
select tests.create_user('paula@reservations.test');

select tests.authenticate_as('alice@reservations.test');
select public.create_organization('Acme', 'acme-reservations-test') as acme_id \gset
select public.create_organization('Gamma', 'gamma-reservations-test') as gamma_id \gset
select public.create_organization('Delta', 'delta-reservations-test') as delta_id \gset
select tests.authenticate_as('erin@reservations.test');
select public.create_organization('Evil Corp', 'evil-reservations-test') as evil_id \gset
select tests.authenticate_as('paula@reservations.test');
select public.create_organization('Premium Co', 'premium-reservations-test') as premium_id \gset
select tests.reset_role();
insert into public.organization_members (organization_id, user_id, role)
values (:'acme_id', tests.get_user_id('bob@reservations.test'), 'member');

-- ---------------------------------------------------------------------------------------------
-- Reserving holds credits
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('bob@reservations.test');
select public.reserve_credits(:'acme_id', p_amounts => '{"ai": 20}', p_metadata => '{"stream": "s-1"}') as res1 \gset
select is(:'res1'::jsonb - 'reservation_id' - 'expires_at', '{"success": true, "status": "active", "held": {"ai": 20}}'::jsonb,
  'bob reserves 20 ai for a streamed reply: the reservation is active and holds 20 ai');
select is((:'res1'::jsonb ->> 'expires_at')::timestamptz, now() + interval '15 minutes', 'it lasts 15 minutes by default');
select res1 ->> 'reservation_id' as res1_id from (select :'res1'::jsonb as res1) x \gset

select is(public.get_credit_balances(:'acme_id') -> 'ai', '{"available": 180, "reserved": 20, "total": 200}'::jsonb,
  'Acme''s ai pool shows 180 available and 20 reserved');
select results_eq(format($$ select status::text, action_key, amounts, created_by, actor_role, metadata from public.credit_reservations where id = %L $$, :'res1_id'),
  format($$ values ('active', null::text, '{"ai": 20}'::jsonb, %L::uuid, 'authenticated', '{"stream": "s-1"}'::jsonb) $$, tests.get_user_id('bob@reservations.test')),
  'bob reads the reservation: active, 20 ai, made by him, with his metadata');
select tests.reset_role();
select results_eq(format($$ select kind::text, amount, pool_key, actor_id from public.credit_ledger where reservation_id = %L $$, :'res1_id'),
  format($$ values ('hold', -20::bigint, 'ai', %L::uuid) $$, tests.get_user_id('bob@reservations.test')),
  'the ledger records a hold of -20 ai for the reservation, by bob');
select results_eq(format($$ select pool_key, ok from private.verify_credit_ledger(%L) $$, :'acme_id'),
  $$ values ('ai', true), ('email', true), ('sms', true), ('whatsapp', true) $$,
  'balances, ledger, grants and holds reconcile while the credits are held');

select tests.authenticate_as('alice@reservations.test');
select is(public.consume_credits_rpc(:'acme_id', 'ai_chat', 181),
  '{"success": false, "error": "insufficient_credits", "message": "Insufficient AI credits", "pool": "ai", "required": 181, "available": 180}'::jsonb,
  'alice cannot spend the held credits: 181 ai_chat is refused with 180 available');

-- ---------------------------------------------------------------------------------------------
-- Committing charges what was used and frees the rest
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('bob@reservations.test');
select public.commit_reservation(:'res1_id', '{"ai": 7}') as commit1 \gset
select is(:'commit1'::jsonb - 'transaction_id',
  jsonb_build_object('success', true, 'reservation_id', :'res1_id', 'consumed', '{"ai": 7}'::jsonb, 'released', '{"ai": 13}'::jsonb, 'overage', '{}'::jsonb),
  'bob commits 7 ai: 7 consumed, 13 released, no overage');
select is(public.get_credit_balances(:'acme_id') -> 'ai', '{"available": 193, "reserved": 0, "total": 200}'::jsonb,
  'Acme has 193 ai available and nothing reserved');
select results_eq(format($$ select status::text, charged, settled_at = now() from public.credit_reservations where id = %L $$, :'res1_id'),
  $$ values ('committed', '{"ai": 7}'::jsonb, true) $$, 'the reservation is committed, charged 7 ai, settled now');
select tests.reset_role();
select set_eq(format($$ select kind::text, amount from public.credit_ledger where reservation_id = %L $$, :'res1_id'),
  $$ values ('hold', -20::bigint), ('release', 20::bigint), ('consumption', -7::bigint) $$,
  'the ledger shows the hold, its release and the consumption of 7');
select is((select transaction_id::text from public.credit_ledger where reservation_id = :'res1_id' and kind = 'consumption'),
  :'commit1'::jsonb ->> 'transaction_id', 'the consumption carries the transaction id commit answered');

select tests.authenticate_as('bob@reservations.test');
select throws_ok(format($$ select public.commit_reservation(%L, '{"ai": 1}') $$, :'res1_id'),
  'PT409', 'reservation_not_active', 'a committed reservation cannot be committed again');
select throws_ok(format($$ select public.release_reservation(%L) $$, :'res1_id'),
  'PT409', 'reservation_not_active', 'nor released');
select throws_ok(format($$ select public.commit_reservation(%L) $$, gen_random_uuid()),
  'PT404', 'reservation_not_found', 'committing an unknown reservation is refused with reservation_not_found');
select throws_ok(format($$ select public.release_reservation(%L) $$, gen_random_uuid()),
  'PT404', 'reservation_not_found', 'releasing one too');

-- ---------------------------------------------------------------------------------------------
-- Releasing frees everything
-- ---------------------------------------------------------------------------------------------
select public.reserve_credits(:'acme_id', 'form_generation', p_quantity => 2, p_ttl => interval '1 hour') as res2 \gset
select is(:'res2'::jsonb - 'reservation_id' - 'expires_at', '{"success": true, "status": "active", "held": {"ai": 10}}'::jsonb,
  'bob reserves for 2 form generations: 10 ai held');
select is((:'res2'::jsonb ->> 'expires_at')::timestamptz, now() + interval '1 hour', 'for the hour he asked for');
select is((select action_key from public.credit_reservations where id = (:'res2'::jsonb ->> 'reservation_id')::uuid), 'form_generation',
  'the reservation remembers the action');
select is(public.release_reservation((:'res2'::jsonb ->> 'reservation_id')::uuid),
  jsonb_build_object('success', true, 'reservation_id', :'res2'::jsonb ->> 'reservation_id', 'released', '{"ai": 10}'::jsonb),
  'bob releases it: all 10 ai are freed');
select is(public.get_credit_balances(:'acme_id') -> 'ai', '{"available": 193, "reserved": 0, "total": 200}'::jsonb,
  'Acme is back to 193 available, nothing reserved');
select is((select status::text from public.credit_reservations where id = (:'res2'::jsonb ->> 'reservation_id')::uuid), 'released',
  'the reservation is released');
select throws_ok(format($$ select public.release_reservation(%L) $$, :'res2'::jsonb ->> 'reservation_id'),
  'PT409', 'reservation_not_active', 'a released reservation cannot be released again');
select throws_ok(format($$ select public.commit_reservation(%L) $$, :'res2'::jsonb ->> 'reservation_id'),
  'PT409', 'reservation_not_active', 'nor committed');

-- ---------------------------------------------------------------------------------------------
-- Multi-pool reservations; committing without amounts charges all that is held
-- ---------------------------------------------------------------------------------------------
select public.reserve_credits(:'acme_id', p_amounts => '{"ai": 4, "email": 10}') ->> 'reservation_id' as res3_id \gset
select is(public.get_credit_balances(:'acme_id') -> 'email', '{"available": 990, "reserved": 10, "total": 1000}'::jsonb,
  'bob holds 4 ai and 10 email in one reservation');

select tests.authenticate_as('erin@reservations.test');
select throws_ok(format($$ select public.commit_reservation(%L) $$, :'res3_id'),
  '42501', 'not_authorized', 'erin, a stranger to Acme, cannot commit its reservation');
select throws_ok(format($$ select public.release_reservation(%L) $$, :'res3_id'),
  '42501', 'not_authorized', 'nor release it');
select throws_ok(format($$ select public.reserve_credits(%L, p_amounts => '{"ai": 1}') $$, :'acme_id'),
  '42501', 'not_authorized', 'nor reserve Acme''s credits');
select tests.clear_authentication();
select throws_ok(format($$ select public.reserve_credits(%L, p_amounts => '{"ai": 1}') $$, :'acme_id'),
  '42501', 'permission denied for function reserve_credits', 'anon cannot reserve');
select throws_ok(format($$ select public.commit_reservation(%L) $$, :'res3_id'),
  '42501', 'permission denied for function commit_reservation', 'anon cannot commit');
select throws_ok(format($$ select public.release_reservation(%L) $$, :'res3_id'),
  '42501', 'permission denied for function release_reservation', 'anon cannot release');

select tests.authenticate_as('bob@reservations.test');
select throws_ok(format($$ select public.commit_reservation(%L, '{"whatsapp": 1}') $$, :'res3_id'),
  '22023', 'invalid_amounts', 'committing a pool the reservation does not hold is refused');
select throws_ok(format($$ select public.commit_reservation(%L, '{"ai": -1}') $$, :'res3_id'),
  '22023', 'invalid_amounts', 'committing a negative amount is refused');
select throws_ok(format($$ select public.commit_reservation(%L, '[4]') $$, :'res3_id'),
  '22023', 'invalid_amounts', 'committing amounts that are not an object is refused');
select is(public.commit_reservation(:'res3_id') - 'transaction_id' - 'reservation_id',
  '{"success": true, "consumed": {"ai": 4, "email": 10}, "released": {"ai": 0, "email": 0}, "overage": {}}'::jsonb,
  'committing without amounts charges everything held in both pools');
select is(public.get_credit_balances(:'acme_id') - 'sms' - 'whatsapp',
  '{"ai": {"available": 189, "reserved": 0, "total": 200}, "email": {"available": 990, "reserved": 0, "total": 1000}}'::jsonb,
  'Acme has 189 ai and 990 email left, nothing reserved');

select public.reserve_credits(:'acme_id', p_amounts => '{"ai": 5}') ->> 'reservation_id' as res4_id \gset
select is(public.commit_reservation(:'res4_id', '{"ai": 0}') -> 'released', '{"ai": 5}'::jsonb,
  'committing 0 (the work produced nothing) frees all of it');

-- ---------------------------------------------------------------------------------------------
-- Using more than held on starter (no overage)
-- ---------------------------------------------------------------------------------------------
select public.reserve_credits(:'acme_id', p_amounts => '{"ai": 20}') ->> 'reservation_id' as res5_id \gset
select throws_ok(format($$ select public.commit_reservation(%L, '{"ai": 190}') $$, :'res5_id'),
  'P0001', 'exceeds_reservation', 'committing 190 ai on 20 held, with only 169 more available, is refused on starter');
select results_eq(format($$ select status::text, charged from public.credit_reservations where id = %L $$, :'res5_id'),
  $$ values ('active', null::jsonb) $$, 'the reservation is still active and uncharged');
select is(public.get_credit_balances(:'acme_id') -> 'ai', '{"available": 169, "reserved": 20, "total": 200}'::jsonb,
  'and the balance is unchanged');
select public.release_reservation(:'res5_id');


-- ---------------------------------------------------------------------------------------------
-- Idempotent reservations
-- ---------------------------------------------------------------------------------------------
select public.reserve_credits(:'acme_id', p_amounts => '{"ai": 3}', p_idempotency_key => 'stream-1') as res7 \gset
select is(public.reserve_credits(:'acme_id', p_amounts => '{"ai": 3}', p_idempotency_key => 'stream-1'),
  :'res7'::jsonb || '{"idempotent_replay": true}',
  'reserving again with key stream-1 returns the same reservation, marked idempotent_replay');
select throws_ok(format($$ select public.reserve_credits(%L, p_amounts => '{"ai": 4}', p_idempotency_key => 'stream-1') $$, :'acme_id'),
  'PT409', 'idempotency_key_reused', 'the same key with other amounts is refused with idempotency_key_reused');
select throws_ok(format($$ select public.reserve_credits(%L, 'automation_run', p_idempotency_key => 'stream-1') $$, :'acme_id'),
  'PT409', 'idempotency_key_reused', 'and with an action instead of amounts too');
select is((select count(*)::int from public.credit_reservations where organization_id = :'acme_id' and idempotency_key = 'stream-1'), 1,
  'only one reservation exists for the key');
select is(public.get_credit_balances(:'acme_id') -> 'ai' -> 'reserved', '3'::jsonb, 'and only 3 ai are held');
select public.release_reservation((:'res7'::jsonb ->> 'reservation_id')::uuid);
select is(public.reserve_credits(:'acme_id', p_amounts => '{"ai": 3}', p_idempotency_key => 'stream-1') ->> 'status', 'released',
  'after its release, a retry with the key still answers that reservation, now released');

select tests.authenticate_as('erin@reservations.test');
select is(public.reserve_credits(:'evil_id', p_amounts => '{"ai": 3}', p_idempotency_key => 'stream-1') ->> 'reservation_id' <> :'res7'::jsonb ->> 'reservation_id',
  true, 'the same key in Evil Corp makes a reservation of its own');

-- ---------------------------------------------------------------------------------------------
-- Invalid reservations
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('bob@reservations.test');
select throws_ok(format($$ select public.reserve_credits(%L, p_amounts => '{"ai": 1}', p_ttl => interval '0 seconds') $$, :'acme_id'),
  '22023', 'invalid_ttl', 'a reservation lasting no time is refused with invalid_ttl');
select throws_ok(format($$ select public.reserve_credits(%L, p_amounts => '{"ai": 1}', p_ttl => interval '25 hours') $$, :'acme_id'),
  '22023', 'invalid_ttl', 'one lasting over 24 hours too');
select throws_ok(format($$ select public.reserve_credits(%L, p_amounts => '{"ai": 1}', p_ttl => null) $$, :'acme_id'),
  '22023', 'invalid_ttl', 'and one without a duration');
select throws_ok(format($$ select public.reserve_credits(%L, p_amounts => '{"ai": 1}', p_idempotency_key => 'a b') $$, :'acme_id'),
  '22023', 'invalid_idempotency_key', 'a malformed idempotency key is refused');
select throws_ok(format($$ select public.reserve_credits(%L, p_amounts => '{"ai": 1}', p_metadata => '[]') $$, :'acme_id'),
  '22023', 'invalid_metadata', 'metadata that is not an object is refused');
select throws_ok(format($$ select public.reserve_credits(%L) $$, :'acme_id'),
  '22023', 'invalid_amounts', 'a reservation of nothing (neither action nor amounts) is refused');
select throws_ok(format($$ select public.reserve_credits(%L, 'ai_chat', '{"ai": 1}') $$, :'acme_id'),
  '22023', 'invalid_amounts', 'a reservation giving both an action and amounts is refused');
select throws_ok(format($$ select public.reserve_credits(%L, p_amounts => '{}') $$, :'acme_id'),
  '22023', 'invalid_amounts', 'empty amounts are refused');
select throws_ok(format($$ select public.reserve_credits(%L, p_amounts => '{"ai": 0}') $$, :'acme_id'),
  '22023', 'invalid_amounts', 'holding 0 is refused');
select throws_ok(format($$ select public.reserve_credits(%L, p_amounts => '{"ai": 1.5}') $$, :'acme_id'),
  '22023', 'invalid_amounts', 'holding a fraction is refused');
select throws_ok(format($$ select public.reserve_credits(%L, p_amounts => '{"ai": "5"}') $$, :'acme_id'),
  '22023', 'invalid_amounts', 'an amount given as a string is refused');
select throws_ok(format($$ select public.reserve_credits(%L, p_amounts => '{"voice": 1}') $$, :'acme_id'),
  'PT404', 'pool_not_found', 'holding credits of an unknown pool is refused with pool_not_found');
select throws_ok(format($$ select public.reserve_credits(%L, 'teleport') $$, :'acme_id'),
  'PT404', 'unknown_action', 'reserving for an unknown action is refused with unknown_action');
select throws_ok(format($$ select public.reserve_credits(%L, 'ai_chat', p_quantity => 0) $$, :'acme_id'),
  '22023', 'invalid_quantity', 'reserving for 0 units of an action is refused with invalid_quantity');

select is(public.reserve_credits(:'acme_id', p_amounts => '{"ai": 10000}'),
  '{"success": false, "error": "insufficient_credits", "message": "Insufficient AI credits", "pool": "ai", "required": 10000, "available": 189}'::jsonb,
  'reserving more than is available answers the insufficient result');
select is(public.get_credit_balances(:'acme_id') -> 'ai', '{"available": 189, "reserved": 0, "total": 200}'::jsonb,
  'and holds nothing');
select tests.reset_role();
select is((select count(*)::int from public.credit_reservations where organization_id = :'acme_id'), 6,
  'none of the refused reservations was recorded (Acme has the 6 made above)');
select results_eq(format($$ select pool_key, ok from private.verify_credit_ledger(%L) $$, :'acme_id'),
  $$ values ('ai', true), ('email', true), ('sms', true), ('whatsapp', true) $$,
  'Acme reconciles after all these reservations');

-- ---------------------------------------------------------------------------------------------
-- An insufficient multi-pool reservation holds nothing in any pool
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('alice@reservations.test');
select is(public.reserve_credits(:'gamma_id', p_amounts => '{"ai": 5, "whatsapp": 1000}'),
  '{"success": false, "error": "insufficient_credits", "message": "Insufficient WhatsApp credits", "pool": "whatsapp", "required": 1000, "available": 150}'::jsonb,
  'alice reserves 5 ai and 1000 whatsapp in Gamma: refused on whatsapp');
select is(public.get_credit_balances(:'gamma_id') -> 'ai', '{"available": 200, "reserved": 0, "total": 200}'::jsonb,
  'Gamma''s ai pool is untouched: all 200 available, nothing held');
select tests.reset_role();
select results_eq(format($$ select pool_key, ok from private.verify_credit_ledger(%L) $$, :'gamma_id'),
  $$ values ('ai', true), ('email', true), ('sms', true), ('whatsapp', true) $$,
  'Gamma''s balances, ledger and grants still reconcile');

-- ---------------------------------------------------------------------------------------------
-- Using more than held on starter (no overage): refused, even with credits available
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('alice@reservations.test');
select public.reserve_credits(:'delta_id', p_amounts => '{"ai": 20}') ->> 'reservation_id' as res6_id \gset
select throws_ok(format($$ select public.commit_reservation(%L, '{"ai": 25}') $$, :'res6_id'),
  'P0001', 'exceeds_reservation',
  'in Delta, on starter, committing 25 ai on 20 held is refused although 180 are available');
select is(public.get_credit_balances(:'delta_id') -> 'ai', '{"available": 180, "reserved": 20, "total": 200}'::jsonb,
  'the refused commit changed nothing: 20 still held, 180 available');
select is((public.commit_reservation(:'res6_id', '{"ai": 20}') -> 'consumed'), '{"ai": 20}'::jsonb,
  'committing what was held works');
select tests.reset_role();
select is((select -sum(amount) from public.credit_ledger where reservation_id = :'res6_id' and kind = 'consumption'), 20::numeric,
  'the ledger charges the reservation 20 ai in all');
select is_empty(format($$ select 1 from public.credit_overages where organization_id = %L $$, :'delta_id'),
  'and nothing is recorded as overage');
select results_eq(format($$ select pool_key, ok from private.verify_credit_ledger(%L) $$, :'delta_id'),
  $$ values ('ai', true), ('email', true), ('sms', true), ('whatsapp', true) $$,
  'Delta reconciles');

-- ---------------------------------------------------------------------------------------------
-- Expired holds
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('bob@reservations.test');
select public.reserve_credits(:'acme_id', p_amounts => '{"ai": 30}', p_ttl => interval '1 minute') ->> 'reservation_id' as res8_id \gset
select is(public.get_credit_balances(:'acme_id') -> 'ai', '{"available": 159, "reserved": 30, "total": 200}'::jsonb,
  'bob holds 30 ai for a minute');

-- The minute passes.
select tests.reset_role();
update public.credit_reservations set expires_at = now() - interval '1 second' where id = :'res8_id';

select tests.authenticate_as('bob@reservations.test');
select is(public.get_credit_balances(:'acme_id') -> 'ai', '{"available": 189, "reserved": 0, "total": 200}'::jsonb,
  'once it has expired, the 30 ai count as available again, before any sweep');
select throws_ok(format($$ select public.commit_reservation(%L, '{"ai": 5}') $$, :'res8_id'),
  'PT409', 'reservation_not_active', 'an expired reservation can no longer be committed');
select tests.reset_role();
select results_eq(format($$ select status::text, reserved from public.credit_reservations r, public.credit_balances b
  where r.id = %L and b.organization_id = r.organization_id and b.pool_key = 'ai' $$, :'res8_id'),
  $$ values ('active', 30::bigint) $$, 'until the sweep, the row still says active and the balance row 30 reserved');

select ok(private.expire_credits(now()) >= 1, 'the expiry job settles at least one organization');
select results_eq(format($$ select status::text, settled_at = now() from public.credit_reservations where id = %L $$, :'res8_id'),
  $$ values ('expired', true) $$, 'it marked the reservation expired');
select set_eq(format($$ select kind::text, amount, actor_role from public.credit_ledger where reservation_id = %L $$, :'res8_id'),
  format($$ values ('hold', -30::bigint, 'authenticated'), ('release', 30::bigint, 'system') $$),
  'and gave the hold back with a release entry made by the system');
select results_eq(format($$ select available, reserved from public.credit_balances where organization_id = %L and pool_key = 'ai' $$, :'acme_id'),
  $$ values (189::bigint, 0::bigint) $$, 'the balance row has the 30 ai available again, nothing reserved');
select results_eq(format($$ select pool_key, ok from private.verify_credit_ledger(%L) $$, :'acme_id'),
  $$ values ('ai', true), ('email', true), ('sms', true), ('whatsapp', true) $$,
  'Acme reconciles after the expiry');

-- ---------------------------------------------------------------------------------------------
-- Overage on premium
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as_service_role();
select public.change_plan(:'premium_id', 'premium');
-- Overage goes on a credit account: Premium Co has one with room for 1000.00.
select public.open_credit_account(:'premium_id', 100000, 'overage for the reservations test');

select tests.authenticate_as('paula@reservations.test');
select public.reserve_credits(:'premium_id', p_amounts => '{"ai": 20}') ->> 'reservation_id' as res9_id \gset
select is(public.commit_reservation(:'res9_id', '{"ai": 30}') - 'transaction_id' - 'reservation_id',
  '{"success": true, "consumed": {"ai": 30}, "released": {"ai": 0}, "overage": {}}'::jsonb,
  'on premium, paula commits 30 ai on 20 held: the 10 more come from what is available, no overage');
select is(public.get_credit_balances(:'premium_id') -> 'ai', '{"available": 1470, "reserved": 0, "total": 1500}'::jsonb,
  'Premium Co has 1470 ai left');

select public.reserve_credits(:'premium_id', p_amounts => '{"ai": 20}') ->> 'reservation_id' as res10_id \gset
select public.commit_reservation(:'res10_id', '{"ai": 1600}') as commit10 \gset
select is(:'commit10'::jsonb - 'transaction_id' - 'reservation_id',
  '{"success": true, "consumed": {"ai": 1600}, "released": {"ai": 0}, "overage": {"ai": 130}}'::jsonb,
  'committing 1600 ai on 20 held with 1450 more available charges them all and answers 130 as overage');
select is(public.get_credit_balances(:'premium_id') -> 'ai', '{"available": 0, "reserved": 0, "total": 1500}'::jsonb,
  'the ai pool is empty, never below zero');
select results_eq(format($$ select pool_key, amount, transaction_id::text, reservation_id, billed_at is not null from public.credit_overages where organization_id = %L $$, :'premium_id'),
  format($$ values ('ai', 130::bigint, %L, %L::uuid, true) $$, :'commit10'::jsonb ->> 'transaction_id', :'res10_id'),
  'paula, the owner, reads one overage of 130 ai for that commit, charged to the account');
select is((select amount_owed from public.credit_accounts where organization_id = :'premium_id'), 260::bigint,
  'at premium''s 2 cents an ai credit, the account owes 2.60');
select tests.reset_role();
select is((select -sum(amount) from public.credit_ledger where reservation_id = :'res10_id' and kind = 'consumption'), 1470::numeric,
  'the ledger charges only the 1470 credits that existed; the 130 beyond are overage');
select results_eq(format($$ select pool_key, ok from private.verify_credit_ledger(%L) $$, :'premium_id'),
  $$ values ('ai', true), ('email', true), ('sms', true), ('whatsapp', true) $$,
  'Premium Co reconciles after the overage');

select * from finish();
rollback;
