-- 20 The common batch in one set of statements: a batch of plain consumptions gives exactly what
-- the same items as single calls give (results, balances, ledger rows, low-balance events), and
-- any other batch goes the item-by-item way.
--
-- Cast: alice owns Acme and Acme Twin (both on the starter plan, 200 ai, thresholds alike).
begin;
select plan(9);

select tests.create_user('alice@batchset.test');
select tests.authenticate_as('alice@batchset.test');
select public.create_organization('Acme', 'acme-batchset-test') as acme \gset
select public.create_organization('Acme Twin', 'twin-batchset-test') as twin \gset
select public.set_credit_low_threshold(:'acme', 'ai', 195);
select public.set_credit_low_threshold(:'twin', 'ai', 195);
select public.create_organization('Acme Third', 'third-batchset-test') as third \gset

\set items '[{"action_type": "ai_chat"}, {"action_type": "ai_chat", "metadata": {"m": 1}}, {"action_type": "whatsapp_message"}, {"action_type": "form_generation", "quantity": 2}, {"action_type": "ai_chat", "quantity": 3}]'

select is(private.consume_credits_set(:'acme', '[{"action_type": "ai_chat", "quantity": 0}]'), null,
  'a dry run is not for the set path');
select is(private.consume_credits_set(:'acme', '[{"action_type": "ai_chat", "idempotency_key": "k"}]'), null,
  'nor an item with an idempotency key');

select isnt(private.consume_credits_set(:'third', :'items'), null, 'a batch of plain consumptions takes the set path');

-- Acme: the batch (the set path); the twin: the same items, one call each.
select public.consume_credits_batch(:'acme', :'items') as batch \gset
select jsonb_agg(public.consume_credits_rpc(:'twin', i ->> 'action_type', coalesce((i ->> 'quantity')::integer, 1), null,
                                            coalesce(i -> 'metadata', '{}'::jsonb)) order by n) as singles
from jsonb_array_elements(:'items'::jsonb) with ordinality as t (i, n) \gset

select is((select jsonb_agg(r - 'transaction_id' order by n) from jsonb_array_elements(:'batch'::jsonb) with ordinality as t (r, n)),
          (select jsonb_agg(r - 'transaction_id' order by n) from jsonb_array_elements(:'singles'::jsonb) with ordinality as t (r, n)),
  'the batch answers what the single calls answer, item by item');
select is((select count(distinct r ->> 'transaction_id')::int from jsonb_array_elements(:'batch'::jsonb) r), 5,
  'each item its own transaction');
select tests.reset_role();
select results_eq(format($$ select pool_key, available, head_remaining from public.credit_balances where organization_id = %L order by 1 $$, :'acme'),
  format($$ select pool_key, available, head_remaining from public.credit_balances where organization_id = %L order by 1 $$, :'twin'),
  'the balances agree');
select results_eq(
  format($$ select l.pool_key, l.kind::text, l.amount, l.action_key, l.quantity, l.actor_id, l.actor_role, l.metadata, g.kind::text
            from public.credit_ledger l left join public.credit_grants g on g.id = l.grant_id
            where l.organization_id = %L and l.kind = 'consumption' order by l.id $$, :'acme'),
  format($$ select l.pool_key, l.kind::text, l.amount, l.action_key, l.quantity, l.actor_id, l.actor_role, l.metadata, g.kind::text
            from public.credit_ledger l left join public.credit_grants g on g.id = l.grant_id
            where l.organization_id = %L and l.kind = 'consumption' order by l.id $$, :'twin'),
  'the ledgers agree, row by row, drawn from the same kind of grant');
select results_eq(format($$ select type, payload from private.domain_events where organization_id = %L and type like 'credits.%%' order by id $$, :'acme'),
  format($$ select type, payload from private.domain_events where organization_id = %L and type like 'credits.%%' order by id $$, :'twin'),
  'and so do the low-balance events (the batch crosses 195)');
select ok((select bool_and(v.ok) from private.verify_credit_ledger(:'acme') v), 'the ledger reconciles');

select * from finish();
rollback;
