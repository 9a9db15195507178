-- 18 consume_credits_batch and get_credit_usage. A batch runs each item as consume_credits_rpc
-- would and answers the results in order; an invalid item answers {success: false, error: code}
-- without affecting the others. get_credit_usage sums consumption and refunds per UTC day and
-- pool, for members only.
--
-- Cast: alice owns Acme, bob is a member of Acme; erin owns Evil Corp.
begin;
select plan(29);

select tests.create_user('alice@batch.test');
select tests.create_user('bob@batch.test');
select tests.create_user('erin@batch.test');

select tests.authenticate_as('alice@batch.test');
select public.create_organization('Acme', 'acme-batch-test') as acme_id \gset
select tests.authenticate_as('erin@batch.test');
select public.create_organization('Evil Corp', 'evil-batch-test') as evil_id \gset
select tests.reset_role();
insert into public.organization_members (organization_id, user_id, role)
values (:'acme_id', tests.get_user_id('bob@batch.test'), 'member');

-- ---------------------------------------------------------------------------------------------
-- consume_credits_batch
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('bob@batch.test');
select public.consume_credits_batch(:'acme_id', $$[
  {"action_type": "ai_chat"},
  {"action_type": "form_generation", "quantity": 2},
  {"action_type": "teleport"},
  {"action_type": "ai_chat", "quantity": -1},
  {"action_type": "ai_chat", "quantity": "lots"},
  "not an object",
  {"action_type": "sms_send", "quantity": 1000},
  {"action_type": "ai_chat", "idempotency_key": "b-1", "metadata": {"message": "m-1"}},
  {"action_type": "ai_chat", "idempotency_key": "b-1", "metadata": {"message": "m-1"}},
  {"action_type": "ai_chat", "idempotency_key": "b-1", "quantity": 2},
  {"action_type": "ai_chat", "metadata": [1]},
  {"action_type": "ai_chat", "quantity": 0},
  {"action_type": "sms_send", "quantity": 99999999999},
  {"quantity": 1}
]$$) as batch \gset

select is(jsonb_array_length(:'batch'::jsonb), 14, 'bob''s batch of 14 items answers 14 results');
select results_eq(format($$ select n::int, r - 'transaction_id' from jsonb_array_elements(%L::jsonb) with ordinality as t (r, n) order by n $$, :'batch'),
  $$ values
    (1, '{"success": true, "consumed": {"ai": 1}, "remaining": {"ai": 199}}'::jsonb),
    (2, '{"success": true, "consumed": {"ai": 10}, "remaining": {"ai": 189}}'::jsonb),
    (3, '{"success": false, "error": "unknown_action"}'::jsonb),
    (4, '{"success": false, "error": "invalid_quantity"}'::jsonb),
    (5, '{"success": false, "error": "invalid_quantity"}'::jsonb),
    (6, '{"success": false, "error": "invalid_items"}'::jsonb),
    (7, '{"success": false, "error": "insufficient_credits", "message": "Insufficient SMS credits", "pool": "sms", "required": 1000, "available": 50}'::jsonb),
    (8, '{"success": true, "consumed": {"ai": 1}, "remaining": {"ai": 188}}'::jsonb),
    (9, '{"success": true, "consumed": {"ai": 1}, "remaining": {"ai": 188}, "idempotent_replay": true}'::jsonb),
    (10, '{"success": false, "error": "idempotency_key_reused"}'::jsonb),
    (11, '{"success": false, "error": "invalid_metadata"}'::jsonb),
    (12, '{"success": true, "dry_run": true, "would_consume": {"ai": 1}, "remaining": {"ai": 187}}'::jsonb),
    (13, '{"success": false, "error": "invalid_quantity"}'::jsonb),
    (14, '{"success": false, "error": "unknown_action"}'::jsonb)
  $$,
  'each item gets its own result, in order: successes, the insufficient result, a replay, a dry run, '
  'and {success: false, error: code} for each invalid item');
select is(:'batch'::jsonb -> 8 ->> 'transaction_id', :'batch'::jsonb -> 7 ->> 'transaction_id',
  'the replayed item carries the first item''s transaction id');
select is(public.get_credit_balances(:'acme_id') -> 'ai', '{"available": 188, "reserved": 0, "total": 200}'::jsonb,
  'only the three successful items were charged: 12 ai');
select tests.reset_role();
select is((select count(*)::int from public.credit_ledger where organization_id = :'acme_id' and kind = 'consumption'), 3,
  'the ledger has exactly their three consumptions');
select results_eq(format($$ select pool_key, ok from private.verify_credit_ledger(%L) $$, :'acme_id'),
  $$ values ('ai', true), ('email', true), ('sms', true), ('whatsapp', true) $$,
  'and Acme reconciles: the failed items left nothing behind');

select tests.authenticate_as('bob@batch.test');
select is((select count(*)::int from jsonb_array_elements(public.consume_credits_batch(:'acme_id',
    (select jsonb_agg('{"action_type": "email_send"}'::jsonb) from generate_series(1, 100)))) r where (r ->> 'success')::boolean), 100,
  'a batch of 100 items (the most allowed) runs every item');
select is(public.get_credit_balances(:'acme_id') -> 'email' -> 'available', '900'::jsonb, 'charging 100 emails');

select throws_ok(format($$ select public.consume_credits_batch(%L, (select jsonb_agg('{"action_type": "email_send"}'::jsonb) from generate_series(1, 101))) $$, :'acme_id'),
  '22023', 'invalid_items', 'a batch of 101 items is refused with invalid_items');
select throws_ok(format($$ select public.consume_credits_batch(%L, '[]') $$, :'acme_id'),
  '22023', 'invalid_items', 'an empty batch is refused');
select throws_ok(format($$ select public.consume_credits_batch(%L, '{"action_type": "ai_chat"}') $$, :'acme_id'),
  '22023', 'invalid_items', 'a batch that is an object, not an array, is refused');
select throws_ok(format($$ select public.consume_credits_batch(%L, null) $$, :'acme_id'),
  '22023', 'invalid_items', 'a missing batch is refused');
select is(public.get_credit_balances(:'acme_id') -> 'email' -> 'available', '900'::jsonb, 'the refused batches charged nothing');

select tests.authenticate_as('erin@batch.test');
select throws_ok(format($$ select public.consume_credits_batch(%L, '[{"action_type": "ai_chat"}]') $$, :'acme_id'),
  '42501', 'not_authorized', 'erin cannot run a batch on Acme''s credits');
select tests.clear_authentication();
select throws_ok(format($$ select public.consume_credits_batch(%L, '[{"action_type": "ai_chat"}]') $$, :'acme_id'),
  '42501', 'permission denied for function consume_credits_batch', 'anon cannot execute consume_credits_batch');

-- ---------------------------------------------------------------------------------------------
-- get_credit_usage
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('bob@batch.test');
select public.commit_reservation((public.reserve_credits(:'acme_id', p_amounts => '{"sms": 5}') ->> 'reservation_id')::uuid, '{"sms": 3}');
select tests.authenticate_as_service_role();
select public.refund_credits((:'batch'::jsonb -> 1 ->> 'transaction_id')::uuid, '{"ai": 4}', 'partial failure');
select public.grant_credits(:'acme_id', 'whatsapp', 10);

select (now() at time zone 'UTC')::date as today,
       ((now() at time zone 'UTC')::date)::timestamp at time zone 'UTC' as day_start \gset

select tests.authenticate_as('bob@batch.test');
select results_eq(format($$ select day, pool_key, consumed, refunded from public.get_credit_usage(%L, %L, %L::timestamptz + interval '1 day') $$,
    :'acme_id', :'day_start', :'day_start'),
  format($$ values (%1$L::date, 'ai', 12::bigint, 4::bigint), (%1$L::date, 'email', 100::bigint, 0::bigint), (%1$L::date, 'sms', 3::bigint, 0::bigint) $$, :'today'),
  'bob reads today''s usage per pool: 12 ai consumed and 4 refunded, 100 email, 3 sms from a committed reservation; '
  'grants, holds and dry runs are not usage');
select is_empty(format($$ select * from public.get_credit_usage(%L, %L::timestamptz + interval '1 day', %L::timestamptz + interval '2 days') $$, :'acme_id', :'day_start', :'day_start'),
  'tomorrow has no usage');
select is_empty(format($$ select * from public.get_credit_usage(%L, %L::timestamptz - interval '1 day', %L) $$, :'acme_id', :'day_start', :'day_start'),
  'the range ends before p_to: yesterday up to midnight has no usage');
select results_eq(format($$ select pool_key, consumed from public.get_credit_usage(%L, now() - interval '366 days' + interval '1 second', now() + interval '1 second') $$, :'acme_id'),
  $$ values ('ai', 12::bigint), ('email', 100::bigint), ('sms', 3::bigint) $$,
  'a range of 366 days is allowed');

select throws_ok(format($$ select * from public.get_credit_usage(%L, now(), now()) $$, :'acme_id'),
  '22023', 'invalid_range', 'an empty range is refused with invalid_range');
select throws_ok(format($$ select * from public.get_credit_usage(%L, now(), now() - interval '1 day') $$, :'acme_id'),
  '22023', 'invalid_range', 'a range ending before it starts is refused');
select throws_ok(format($$ select * from public.get_credit_usage(%L, now() - interval '367 days', now()) $$, :'acme_id'),
  '22023', 'invalid_range', 'a range over 366 days is refused');
select throws_ok(format($$ select * from public.get_credit_usage(%L, null, now()) $$, :'acme_id'),
  '22023', 'invalid_range', 'a range without a start is refused');
select throws_ok(format($$ select * from public.get_credit_usage(%L, now(), null) $$, :'acme_id'),
  '22023', 'invalid_range', 'a range without an end is refused');

select tests.authenticate_as('erin@batch.test');
select throws_ok(format($$ select * from public.get_credit_usage(%L, now() - interval '1 day', now() + interval '1 day') $$, :'acme_id'),
  '42501', 'not_authorized', 'erin cannot read Acme''s usage');
select is_empty(format($$ select * from public.get_credit_usage(%L, now() - interval '1 day', now() + interval '1 day') $$, :'evil_id'),
  'erin reads Evil Corp''s usage: none');
select tests.clear_authentication();
select throws_ok(format($$ select * from public.get_credit_usage(%L, now() - interval '1 day', now() + interval '1 day') $$, :'acme_id'),
  '42501', 'permission denied for function get_credit_usage', 'anon cannot read usage');
select tests.authenticate_as_service_role();
select is((select sum(consumed)::int from public.get_credit_usage(:'acme_id', now() - interval '1 day', now() + interval '1 day')), 115,
  'the service role reads any organization''s usage');

select tests.reset_role();
select results_eq(format($$ select pool_key, ok from private.verify_credit_ledger(%L) $$, :'acme_id'),
  $$ values ('ai', true), ('email', true), ('sms', true), ('whatsapp', true) $$,
  'Acme reconciles in the end');

select * from finish();
rollback;
