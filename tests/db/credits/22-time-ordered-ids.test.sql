-- 22 Consumptions get time-ordered transaction ids (the layout of a version 7 UUID: the
-- transaction's time in milliseconds, then random bits), single calls and the set path of a
-- batch alike, so that the ledger's transaction_id index grows at its right edge (a later
-- transaction's ids start with a later time). They stay unique.
--
-- Cast: alice owns Acme (starter plan, 200 ai).
begin;
select plan(7);

select tests.create_user('alice@txids.test');
select tests.authenticate_as('alice@txids.test');
select public.create_organization('Acme', 'acme-txids-test') as acme \gset

-- The milliseconds an id starts with, and its version nibble.
create function pg_temp.ms_of(p_id uuid) returns bigint language sql
as $$ select ('x' || lpad(left(replace(p_id::text, '-', ''), 12), 16, '0'))::bit(64)::bigint $$;
create function pg_temp.version_of(p_id uuid) returns text language sql
as $$ select substr(replace(p_id::text, '-', ''), 13, 1) $$;

select (public.consume_credits_rpc(:'acme', 'ai_chat') ->> 'transaction_id')::uuid as single \gset
select is(pg_temp.version_of(:'single'), '7', 'a single call''s transaction id is a version 7 UUID');
select is(pg_temp.ms_of(:'single'), (date_part('epoch', now()) * 1000)::bigint,
  'and starts with the milliseconds of the call''s transaction');
select is((select count(*)::int from public.credit_ledger where transaction_id = :'single'), 1,
  'and its ledger row carries it');

select public.consume_credits_batch(:'acme', '[{"action_type": "ai_chat"}, {"action_type": "ai_chat"}, {"action_type": "automation_run"}]') as batch \gset
select ok(private.consume_credits_set(:'acme', '[{"action_type": "ai_chat"}]') is not null, 'such a batch takes the set path');
select is((select array_agg(distinct pg_temp.version_of((r ->> 'transaction_id')::uuid)) from jsonb_array_elements(:'batch'::jsonb) r),
  array['7'], 'the set path''s ids are version 7 UUIDs too');
select is((select array_agg(distinct pg_temp.ms_of((r ->> 'transaction_id')::uuid)) from jsonb_array_elements(:'batch'::jsonb) r),
  array[(date_part('epoch', now()) * 1000)::bigint], 'starting with the milliseconds of the batch''s transaction');
select is((select count(distinct r ->> 'transaction_id')::int from jsonb_array_elements(:'batch'::jsonb) r), 3,
  'each item its own id');

select * from finish();
rollback;
