-- 12 Idempotency of consume_credits_rpc: a retry with the same key and arguments answers the
-- first result (marked idempotent_replay) and charges nothing, even when the first result was
-- insufficient_credits; the same key with other arguments is refused; keys belong to one
-- organization; keys are kept at least 24 hours (purged after 7 days).
--
-- Cast: alice owns Acme, bob is a member of Acme; erin owns Evil Corp.
begin;
select plan(28);

select tests.create_user('alice@idempotency.test');
select tests.create_user('bob@idempotency.test');
select tests.create_user('erin@idempotency.test');

select tests.authenticate_as('alice@idempotency.test');
select public.create_organization('Acme', 'acme-idempotency-test') as acme_id \gset
select tests.authenticate_as('erin@idempotency.test');
select public.create_organization('Evil Corp', 'evil-idempotency-test') as evil_id \gset
select tests.reset_role();
insert into public.organization_members (organization_id, user_id, role)
values (:'acme_id', tests.get_user_id('bob@idempotency.test'), 'member');

-- ---------------------------------------------------------------------------------------------
-- A retry answers the first result and charges nothing
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('alice@idempotency.test');
select public.consume_credits_rpc(:'acme_id', 'form_generation', 2, 'msg-1', '{"conversation": "c-7"}') as first \gset
select is(:'first'::jsonb - 'transaction_id', '{"success": true, "consumed": {"ai": 10}, "remaining": {"ai": 190}}'::jsonb,
  'alice consumes 2 form generations with key msg-1');

select is(public.consume_credits_rpc(:'acme_id', 'form_generation', 2, 'msg-1', '{"conversation": "c-7"}'),
  :'first'::jsonb || '{"idempotent_replay": true}',
  'the retry with the same key and arguments answers the first result, same transaction id, marked idempotent_replay');
select is(public.consume_credits_rpc(:'acme_id', 'form_generation', 2, 'msg-1', '{"conversation": "c-7"}'),
  :'first'::jsonb || '{"idempotent_replay": true}',
  'and so does a third try');

select tests.authenticate_as('bob@idempotency.test');
select is(public.consume_credits_rpc(:'acme_id', 'form_generation', 2, 'msg-1', '{"conversation": "c-7"}'),
  :'first'::jsonb || '{"idempotent_replay": true}',
  'bob, another member of Acme, retrying with the same key gets the same answer: keys belong to the organization');
select tests.authenticate_as_service_role();
select is(public.consume_credits_rpc(:'acme_id', 'form_generation', 2, 'msg-1', '{"conversation": "c-7"}'),
  :'first'::jsonb || '{"idempotent_replay": true}',
  'and so does the service role');

select tests.authenticate_as('alice@idempotency.test');
select is(public.get_credit_balances(:'acme_id') -> 'ai' -> 'available', '190'::jsonb,
  'the retries charged nothing: 190 ai left');
select tests.reset_role();
select is((select count(*)::int from public.credit_ledger where organization_id = :'acme_id' and kind = 'consumption'), 1,
  'the ledger holds a single consumption');

-- ---------------------------------------------------------------------------------------------
-- The same key with other arguments is refused
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('alice@idempotency.test');
select throws_ok(format($$ select public.consume_credits_rpc(%L, 'form_generation', 3, 'msg-1', '{"conversation": "c-7"}') $$, :'acme_id'),
  'PT409', 'idempotency_key_reused', 'msg-1 with another quantity is refused with idempotency_key_reused');
select throws_ok(format($$ select public.consume_credits_rpc(%L, 'ai_chat', 2, 'msg-1', '{"conversation": "c-7"}') $$, :'acme_id'),
  'PT409', 'idempotency_key_reused', 'msg-1 with another action is refused');
select throws_ok(format($$ select public.consume_credits_rpc(%L, 'form_generation', 2, 'msg-1', '{"conversation": "c-8"}') $$, :'acme_id'),
  'PT409', 'idempotency_key_reused', 'msg-1 with other metadata is refused');
select throws_ok(format($$ select public.consume_credits_rpc(%L, 'form_generation', 2, 'msg-1') $$, :'acme_id'),
  'PT409', 'idempotency_key_reused', 'msg-1 without the metadata is refused');
select is(public.get_credit_balances(:'acme_id') -> 'ai' -> 'available', '190'::jsonb,
  'the refused reuses charged nothing');

-- ---------------------------------------------------------------------------------------------
-- An insufficient first result is replayed too
-- ---------------------------------------------------------------------------------------------
select public.consume_credits_rpc(:'acme_id', 'ai_chat', 500, 'big-1') as big \gset
select is(:'big'::jsonb,
  '{"success": false, "error": "insufficient_credits", "message": "Insufficient AI credits", "pool": "ai", "required": 500, "available": 190}'::jsonb,
  'alice asks for 500 ai_chat with key big-1 and is refused: insufficient');

select tests.authenticate_as_service_role();
select public.grant_credits(:'acme_id', 'ai', 1000);

select tests.authenticate_as('alice@idempotency.test');
select is(public.consume_credits_rpc(:'acme_id', 'ai_chat', 500, 'big-1'), :'big'::jsonb || '{"idempotent_replay": true}',
  'after 1000 ai are granted, retrying big-1 still answers the first, insufficient result');
select is(public.get_credit_balances(:'acme_id') -> 'ai' -> 'available', '1190'::jsonb,
  'and charges nothing');
select is(public.consume_credits_rpc(:'acme_id', 'ai_chat', 500, 'big-2') - 'transaction_id',
  '{"success": true, "consumed": {"ai": 500}, "remaining": {"ai": 690}}'::jsonb,
  'a new key for the same request succeeds');

-- Dry runs are remembered like any other answer.
select public.consume_credits_rpc(:'acme_id', 'ai_chat', 0, 'dry-1') as dry \gset
select is(public.consume_credits_rpc(:'acme_id', 'ai_chat', 0, 'dry-1'), :'dry'::jsonb || '{"idempotent_replay": true}',
  'a dry run with a key is replayed the same way');

-- A call that raised leaves its key unused.
select tests.authenticate_as_service_role();
select throws_ok(format($$ select public.consume_credits_rpc(%L, 'ai_chat', 1, 'acme-retry') $$, gen_random_uuid()),
  'PT404', 'organization_not_found', 'a call that fails with an error ...');
select tests.reset_role();
select is_empty($$ select 1 from private.credit_idempotency_keys where key = 'acme-retry' $$,
  '... does not keep its key');

-- ---------------------------------------------------------------------------------------------
-- Keys belong to one organization
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('erin@idempotency.test');
select public.consume_credits_rpc(:'evil_id', 'form_generation', 2, 'msg-1', '{"conversation": "c-7"}') as evil_first \gset
select is(:'evil_first'::jsonb - 'transaction_id', '{"success": true, "consumed": {"ai": 10}, "remaining": {"ai": 190}}'::jsonb,
  'erin uses key msg-1 in Evil Corp: it is a new key there and Evil Corp is charged');
select isnt(:'evil_first'::jsonb ->> 'transaction_id', :'first'::jsonb ->> 'transaction_id',
  'with its own transaction, not Acme''s');

-- ---------------------------------------------------------------------------------------------
-- Keys are kept at least 24 hours
-- ---------------------------------------------------------------------------------------------
select tests.reset_role();
select results_eq(format($$
  select key, request_hash is not null, result - 'idempotent_replay' from private.credit_idempotency_keys
  where organization_id = %L and key = 'msg-1'
$$, :'acme_id'), format($$ values ('msg-1', true, %L::jsonb) $$, :'first'),
  'the key is stored for Acme with a hash of the request and the first result');

select private.purge_credit_idempotency_keys(now() + interval '1 day');
select isnt_empty(format($$ select 1 from private.credit_idempotency_keys where organization_id = %L and key = 'msg-1' $$, :'acme_id'),
  'a purge a day later keeps the key');
select private.purge_credit_idempotency_keys(now() + interval '6 days 23 hours');
select isnt_empty(format($$ select 1 from private.credit_idempotency_keys where organization_id = %L and key = 'msg-1' $$, :'acme_id'),
  'a purge just under 7 days later still keeps it');

select tests.authenticate_as('alice@idempotency.test');
select is(public.consume_credits_rpc(:'acme_id', 'form_generation', 2, 'msg-1', '{"conversation": "c-7"}'),
  :'first'::jsonb || '{"idempotent_replay": true}',
  'so a retry then is still answered from it');

select tests.reset_role();
select ok(private.purge_credit_idempotency_keys(now() + interval '8 days') >= 5,
  'a purge 8 days later removes the keys (Acme''s four and Evil Corp''s one among them)');
select is_empty(format($$ select 1 from private.credit_idempotency_keys where organization_id in (%L, %L) $$, :'acme_id', :'evil_id'),
  'none of Acme''s or Evil Corp''s keys is left');

select results_eq(format($$ select pool_key, ok from private.verify_credit_ledger(%L) $$, :'acme_id'),
  $$ values ('ai', true), ('email', true), ('sms', true), ('whatsapp', true) $$,
  'Acme''s balances, ledger and grants reconcile');

select * from finish();
rollback;
