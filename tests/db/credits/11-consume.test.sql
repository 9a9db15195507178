-- 11 consume_credits_rpc: the contract. A success answers {success, transaction_id, consumed,
-- remaining}; running short answers the insufficient_credits result and charges nothing (never
-- below zero, never clamped); a multi-pool action is all or nothing; quantity 0 is a dry run;
-- bad input raises with a stable code and changes nothing; the ledger records who called.
-- get_credit_balances answers the contract shape to members only.
--
-- Cast: alice owns Acme, bob is a member of Acme; erin owns Evil Corp and is a stranger to Acme.
-- The service role adds the multi-pool action ai_whatsapp_reply (1 ai + 1 whatsapp).
begin;
select plan(53);

select tests.create_user('alice@consume.test');
select tests.create_user('bob@consume.test');
select tests.create_user('erin@consume.test');

select tests.authenticate_as('alice@consume.test');
select public.create_organization('Acme', 'acme-consume-test') as acme_id \gset
select tests.authenticate_as('erin@consume.test');
select public.create_organization('Evil Corp', 'evil-consume-test') as evil_id \gset

select tests.reset_role();
insert into public.organization_members (organization_id, user_id, role)
values (:'acme_id', tests.get_user_id('bob@consume.test'), 'member');
insert into public.credit_actions (key, name) values ('ai_whatsapp_reply', 'AI WhatsApp reply');
insert into public.credit_action_costs (action_key, pool_key, amount) values ('ai_whatsapp_reply', 'ai', 1), ('ai_whatsapp_reply', 'whatsapp', 1);

-- ---------------------------------------------------------------------------------------------
-- Success
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('bob@consume.test');
select public.consume_credits_rpc(:'acme_id', 'ai_chat') as first \gset

select is(:'first'::jsonb - 'transaction_id', '{"success": true, "consumed": {"ai": 1}, "remaining": {"ai": 199}}'::jsonb,
  'bob, a member, consumes one ai_chat: success, 1 ai consumed, 199 remaining');
select ok((:'first'::jsonb ->> 'transaction_id') ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$',
  'the answer carries a transaction id (a uuid)');

select tests.reset_role();
select results_eq(format($$
  select pool_key, kind::text, amount, action_key, quantity, actor_id, actor_role, metadata
  from public.credit_ledger where transaction_id = %L
$$, :'first'::jsonb ->> 'transaction_id'), format($$
  values ('ai', 'consumption', -1::bigint, 'ai_chat', 1, %L::uuid, 'authenticated', '{}'::jsonb)
$$, tests.get_user_id('bob@consume.test')),
  'the ledger records the consumption under that transaction id, with bob as actor and authenticated as his role');

select tests.authenticate_as('bob@consume.test');
select public.consume_credits_rpc(:'acme_id', 'form_generation', 3, null, '{"form_id": "f-42"}') as forms \gset
select is(:'forms'::jsonb - 'transaction_id', '{"success": true, "consumed": {"ai": 15}, "remaining": {"ai": 184}}'::jsonb,
  'three form generations cost 15 ai');
select tests.reset_role();
select is((select metadata from public.credit_ledger where transaction_id = (:'forms'::jsonb ->> 'transaction_id')::uuid),
  '{"form_id": "f-42"}'::jsonb, 'the caller''s metadata is kept in the ledger');

select tests.authenticate_as_service_role();
select public.consume_credits_rpc(:'acme_id', 'email_send', 1, null, '{"message_id": "m-1"}') as by_service \gset
select is(:'by_service'::jsonb - 'transaction_id', '{"success": true, "consumed": {"email": 1}, "remaining": {"email": 999}}'::jsonb,
  'the service role consumes for Acme too');
select tests.reset_role();
select results_eq(format($$ select actor_id, actor_role from public.credit_ledger where transaction_id = %L $$, :'by_service'::jsonb ->> 'transaction_id'),
  $$ values (null::uuid, 'service_role') $$,
  'the ledger records the service role as the caller, with no user');

-- ---------------------------------------------------------------------------------------------
-- Insufficient: a result, not an error; never below zero, never clamped
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('bob@consume.test');
select is(public.consume_credits_rpc(:'acme_id', 'ai_chat', 1000),
  '{"success": false, "error": "insufficient_credits", "message": "Insufficient AI credits", "pool": "ai", "required": 1000, "available": 184}'::jsonb,
  '1000 ai_chat with 184 ai left answers insufficient_credits with the pool, what was required and what is available');
select is(public.consume_credits_rpc(:'acme_id', 'form_generation', 37),
  '{"success": false, "error": "insufficient_credits", "message": "Insufficient AI credits", "pool": "ai", "required": 185, "available": 184}'::jsonb,
  'one credit short is still refused, not clamped to what is left');
select is(public.get_credit_balances(:'acme_id') -> 'ai', '{"available": 184, "reserved": 0, "total": 200}'::jsonb,
  'the refused calls charged nothing');
select is(public.consume_credits_rpc(:'acme_id', 'ai_chat', 184) - 'transaction_id',
  '{"success": true, "consumed": {"ai": 184}, "remaining": {"ai": 0}}'::jsonb,
  'exactly what is left can be consumed, down to zero');
select is(public.consume_credits_rpc(:'acme_id', 'ai_chat'),
  '{"success": false, "error": "insufficient_credits", "message": "Insufficient AI credits", "pool": "ai", "required": 1, "available": 0}'::jsonb,
  'at zero, even one more credit is refused');
select is(public.get_credit_balances(:'acme_id') -> 'ai', '{"available": 0, "reserved": 0, "total": 200}'::jsonb,
  'the balance stays at zero, never below');
select is(public.consume_credits_rpc(:'acme_id', 'whatsapp_message', 151),
  '{"success": false, "error": "insufficient_credits", "message": "Insufficient WhatsApp credits", "pool": "whatsapp", "required": 151, "available": 150}'::jsonb,
  'the message names the pool that is short (WhatsApp)');
select is(public.consume_credits_rpc(:'acme_id', 'sms_send', 1000000) ->> 'error', 'insufficient_credits',
  'the largest quantity (1000000) is valid input, answered as insufficient');
select tests.reset_role();
select results_eq(format($$ select pool_key, ok from private.verify_credit_ledger(%L) $$, :'acme_id'),
  $$ values ('ai', true), ('email', true), ('sms', true), ('whatsapp', true) $$,
  'after these consumptions and refusals Acme''s balances, ledger and grants reconcile');

-- ---------------------------------------------------------------------------------------------
-- Multi-pool actions are all or nothing
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('bob@consume.test');
select is(public.consume_credits_rpc(:'acme_id', 'ai_whatsapp_reply'),
  '{"success": false, "error": "insufficient_credits", "message": "Insufficient AI credits", "pool": "ai", "required": 1, "available": 0}'::jsonb,
  'ai_whatsapp_reply with no ai left is refused on the ai pool');
select is(public.get_credit_balances(:'acme_id') -> 'whatsapp' -> 'available', '150'::jsonb,
  'and nothing was taken from whatsapp');

select tests.authenticate_as_service_role();
select public.grant_credits(:'acme_id', 'ai', 10);
select tests.authenticate_as('bob@consume.test');
select public.consume_credits_rpc(:'acme_id', 'whatsapp_message', 148);
select is(public.consume_credits_rpc(:'acme_id', 'ai_whatsapp_reply', 2) - 'transaction_id',
  '{"success": true, "consumed": {"ai": 2, "whatsapp": 2}, "remaining": {"ai": 8, "whatsapp": 0}}'::jsonb,
  'with 10 ai granted and 2 whatsapp left, two replies take 2 from each pool');
select is(public.consume_credits_rpc(:'acme_id', 'ai_whatsapp_reply'),
  '{"success": false, "error": "insufficient_credits", "message": "Insufficient WhatsApp credits", "pool": "whatsapp", "required": 1, "available": 0}'::jsonb,
  'with whatsapp empty, the next reply is refused on the whatsapp pool');
select is(public.get_credit_balances(:'acme_id') -> 'ai' -> 'available', '8'::jsonb,
  'and nothing was taken from ai');
select tests.reset_role();
select results_eq(format($$ select pool_key, ok from private.verify_credit_ledger(%L) $$, :'acme_id'),
  $$ values ('ai', true), ('email', true), ('sms', true), ('whatsapp', true) $$,
  'after the multi-pool calls Acme still reconciles');

-- ---------------------------------------------------------------------------------------------
-- Quantity 0 is a dry run
-- ---------------------------------------------------------------------------------------------
select tests.reset_role();
select count(*) as ledger_before from public.credit_ledger where organization_id = :'acme_id' \gset

select tests.authenticate_as('bob@consume.test');
select is(public.consume_credits_rpc(:'acme_id', 'form_generation', 0),
  '{"success": true, "dry_run": true, "would_consume": {"ai": 5}, "remaining": {"ai": 3}}'::jsonb,
  'a dry run answers what one unit would consume and what would remain');
select is(public.consume_credits_rpc(:'acme_id', 'bulk_email', 0),
  '{"success": true, "dry_run": true, "would_consume": {"email": 10}, "remaining": {"email": 989}}'::jsonb,
  'on another pool too');
select is(public.consume_credits_rpc(:'acme_id', 'ai_whatsapp_reply', 0),
  '{"success": false, "error": "insufficient_credits", "message": "Insufficient WhatsApp credits", "pool": "whatsapp", "required": 1, "available": 0, "dry_run": true}'::jsonb,
  'a dry run that would fail answers the insufficient result, marked dry_run');
select is(public.get_credit_balances(:'acme_id') - 'voice',
  '{"ai": {"available": 8, "reserved": 0, "total": 210}, "whatsapp": {"available": 0, "reserved": 0, "total": 150},
    "email": {"available": 999, "reserved": 0, "total": 1000}, "sms": {"available": 50, "reserved": 0, "total": 50}}'::jsonb,
  'dry runs charge nothing');
select tests.reset_role();
select is((select count(*) from public.credit_ledger where organization_id = :'acme_id'), :'ledger_before'::bigint,
  'and write nothing to the ledger');

-- ---------------------------------------------------------------------------------------------
-- Bad input raises with a stable code and changes nothing
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('bob@consume.test');
select throws_ok(format($$ select public.consume_credits_rpc(%L, 'email_send', -1) $$, :'acme_id'),
  '22023', 'invalid_quantity', 'a negative quantity is refused with invalid_quantity');
select throws_ok(format($$ select public.consume_credits_rpc(%L, 'email_send', 1000001) $$, :'acme_id'),
  '22023', 'invalid_quantity', 'a quantity over 1000000 is refused with invalid_quantity');
select throws_ok(format($$ select public.consume_credits_rpc(%L, 'email_send', null) $$, :'acme_id'),
  '22023', 'invalid_quantity', 'a null quantity is refused with invalid_quantity');
select throws_ok(format($$ select public.consume_credits_rpc(%L, 'email_send', 1, null, '[1, 2]') $$, :'acme_id'),
  '22023', 'invalid_metadata', 'metadata that is an array is refused with invalid_metadata');
select throws_ok(format($$ select public.consume_credits_rpc(%L, 'email_send', 1, null, '"text"') $$, :'acme_id'),
  '22023', 'invalid_metadata', 'metadata that is a string is refused with invalid_metadata');
select throws_ok(format($$ select public.consume_credits_rpc(%L, 'email_send', 1, null, 'null'::jsonb) $$, :'acme_id'),
  '22023', 'invalid_metadata', 'metadata that is JSON null is refused with invalid_metadata');
select throws_ok(format($$ select public.consume_credits_rpc(%L, 'email_send', 1, 'has spaces') $$, :'acme_id'),
  '22023', 'invalid_idempotency_key', 'an idempotency key with spaces is refused with invalid_idempotency_key');
select throws_ok(format($$ select public.consume_credits_rpc(%L, 'email_send', 1, %L) $$, :'acme_id', repeat('k', 256)),
  '22023', 'invalid_idempotency_key', 'an idempotency key longer than 255 characters is refused');
select throws_ok(format($$ select public.consume_credits_rpc(%L, 'email_send', 1, '') $$, :'acme_id'),
  '22023', 'invalid_idempotency_key', 'an empty idempotency key is refused');
select is(public.consume_credits_rpc(:'acme_id', 'email_send', 1, repeat('k', 255)) - 'transaction_id',
  '{"success": true, "consumed": {"email": 1}, "remaining": {"email": 998}}'::jsonb,
  'a key of exactly 255 allowed characters is accepted');
select throws_ok(format($$ select public.consume_credits_rpc(%L, 'email_send') $$, :'evil_id'),
  '42501', 'not_authorized', 'bob cannot consume Evil Corp''s credits: he is not a member');
select throws_ok($$ select public.consume_credits_rpc(null, 'email_send') $$,
  '22023', 'invalid_organization', 'a missing organization is refused with invalid_organization');

select tests.authenticate_as('erin@consume.test');
select throws_ok(format($$ select public.consume_credits_rpc(%L, 'email_send') $$, :'acme_id'),
  '42501', 'not_authorized', 'erin, owner of another organization, cannot consume Acme''s credits');
select throws_ok(format($$ select public.consume_credits_rpc(%L, 'email_send') $$, gen_random_uuid()),
  '42501', 'not_authorized', 'a signed-in user naming an unknown organization is simply not authorized');

select tests.authenticate_as_service_role();
select throws_ok(format($$ select public.consume_credits_rpc(%L, 'email_send') $$, gen_random_uuid()),
  'PT404', 'organization_not_found', 'the service role naming an unknown organization gets organization_not_found');
select throws_ok(format($$ select public.consume_credits_rpc(%L, 'email_send', 1, 'svc-1') $$, gen_random_uuid()),
  'PT404', 'organization_not_found', 'also with an idempotency key');

select tests.clear_authentication();
select throws_ok(format($$ select public.consume_credits_rpc(%L, 'email_send') $$, :'acme_id'),
  '42501', 'permission denied for function consume_credits_rpc', 'anon cannot execute consume_credits_rpc');

select tests.authenticate_as('alice@consume.test');
select is(public.get_credit_balances(:'acme_id') -> 'email', '{"available": 998, "reserved": 0, "total": 1000}'::jsonb,
  'none of the refused calls charged anything');
select tests.reset_role();
select is((select count(*) from public.credit_ledger where organization_id = :'acme_id'), :'ledger_before'::bigint + 1,
  'and the ledger holds only the one accepted call since');

-- ---------------------------------------------------------------------------------------------
-- get_credit_balances
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('alice@consume.test');
select is((select array_agg(k order by k) from jsonb_object_keys(public.get_credit_balances(:'acme_id')) k),
  array['ai', 'email', 'sms', 'whatsapp'], 'get_credit_balances answers one key per pool');
select is_empty(format($$
  select p.key from jsonb_each(public.get_credit_balances(%L)) p
  where (select array_agg(k order by k) from jsonb_object_keys(p.value) k) <> array['available', 'reserved', 'total']
$$, :'acme_id'), 'each pool has exactly available, reserved and total');

select tests.authenticate_as('erin@consume.test');
select throws_ok(format($$ select public.get_credit_balances(%L) $$, :'acme_id'),
  '42501', 'not_authorized', 'erin cannot read Acme''s balances');
select tests.clear_authentication();
select throws_ok(format($$ select public.get_credit_balances(%L) $$, :'acme_id'),
  '42501', 'permission denied for function get_credit_balances', 'anon cannot read balances');
select tests.authenticate_as_service_role();
select is(public.get_credit_balances(:'acme_id') -> 'sms', '{"available": 50, "reserved": 0, "total": 50}'::jsonb,
  'the service role reads any organization''s balances');

select tests.reset_role();
select results_eq(format($$ select pool_key, ok from private.verify_credit_ledger(%L) $$, :'acme_id'),
  $$ values ('ai', true), ('email', true), ('sms', true), ('whatsapp', true) $$,
  'in the end Acme''s balances, ledger and grants reconcile in every pool');
select results_eq(format($$ select pool_key, available from public.credit_balances where organization_id = %L order by pool_key $$, :'evil_id'),
  $$ values ('ai', 200::bigint), ('email', 1000::bigint), ('sms', 50::bigint), ('whatsapp', 150::bigint) $$,
  'Evil Corp was never charged');

select * from finish();
rollback;
