-- 01 Credit accounts: opening (operators, with a reason), who reads (owners and billing members,
-- both ways), charges within the limit only and once per idempotency key, statuses and their
-- transitions, settings, the append-only history with filters and keyset pages, overage through
-- consume_credits_rpc and commit_reservation charged once per entry, statements closed on their
-- day, reminders, overdue, suspension and default through time, payment and the limit rules.
--
-- Cast: alice owns Acme (premium), with bob (admin), carol (billing) and dave (member); erin owns
-- Globex; oscar is a platform admin.
begin;
select plan(85);

select tests.create_user('alice@accounts.test');
select tests.create_user('bob@accounts.test');
select tests.create_user('carol@accounts.test');
select tests.create_user('dave@accounts.test');
select tests.create_user('erin@accounts.test');
select tests.create_user('oscar@accounts.test', '{"platform_admin": true}');
select tests.authenticate_as('alice@accounts.test');
select public.create_organization('Acme', 'acme-accounts-test') as acme \gset
select tests.authenticate_as('erin@accounts.test');
select public.create_organization('Globex', 'globex-accounts-test') as globex \gset
select tests.reset_role();
insert into public.organization_members (organization_id, user_id, role) values
  (:'acme', tests.get_user_id('bob@accounts.test'), 'admin'),
  (:'acme', tests.get_user_id('carol@accounts.test'), 'billing'),
  (:'acme', tests.get_user_id('dave@accounts.test'), 'member');
select tests.authenticate_as_service_role();
select public.change_plan(:'acme', 'premium');

-- Read past RLS (the test's own role), whoever is acting.
create function pg_temp.owed(p_org uuid) returns bigint language sql security definer as $$
  select amount_owed from public.credit_accounts where organization_id = p_org
$$;
grant execute on all functions in schema pg_temp to public;

-- ---------------------------------------------------------------------------------------------
-- Opening
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('alice@accounts.test');
select throws_ok(format($$ select public.open_credit_account(%L, 100000, 'I want credit') $$, :'acme'), '42501', 'not_authorized',
  'an owner cannot open a credit account');
select tests.authenticate_as('oscar@accounts.test');
select throws_ok(format($$ select public.open_credit_account(%L, 100000, '') $$, :'acme'), '22023', 'reason_required', 'opening needs a reason');
select throws_ok(format($$ select public.open_credit_account(%L, 100000, 'x', 'eur', 31) $$, :'acme'), '22023', 'invalid_credit_terms',
  'a statement day is 1 to 28');
select lives_ok(format($$ select public.open_credit_account(%L, 10000, 'Approved by finance', 'eur', 1, 14) $$, :'acme'),
  'a platform admin opens a credit account of 100.00');
select throws_ok(format($$ select public.open_credit_account(%L, 10000, 'again') $$, :'acme'), 'PT409', 'credit_account_exists', 'once');
select tests.reset_role();
select results_eq(format($$ select credit_limit, amount_owed, available_credit, status::text from public.credit_accounts where organization_id = %L $$, :'acme'),
  $$ values (10000::bigint, 0::bigint, 10000::bigint, 'active') $$, 'it starts active, owing nothing');
select results_eq(format($$ select type::text, amount, description, metadata ->> 'to' from public.credit_account_transactions where organization_id = %L $$, :'acme'),
  $$ values ('limit_change', 0::bigint, 'Approved by finance', '10000') $$, 'the opening limit is in the history, with its reason');

-- ---------------------------------------------------------------------------------------------
-- Who reads it
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('alice@accounts.test');
select is((select count(*)::int from public.credit_accounts), 1, 'the owner reads the account');
select is((select count(*)::int from public.credit_account_transactions), 1, 'and its history');
select tests.authenticate_as('carol@accounts.test');
select is((select count(*)::int from public.credit_accounts), 1, 'so does the billing member');
select tests.authenticate_as('bob@accounts.test');
select is((select count(*)::int from public.credit_accounts), 0, 'an admin does not');
select tests.authenticate_as('dave@accounts.test');
select is((select count(*)::int from public.credit_account_transactions), 0, 'nor a plain member');
select throws_ok(format($$ select * from public.list_credit_account_transactions(%L) $$, :'acme'), '42501', 'not_authorized',
  'who cannot read it cannot list it either');
select tests.authenticate_as('erin@accounts.test');
select is((select count(*)::int from public.credit_accounts), 0, 'nor a stranger');
select tests.clear_authentication();
select throws_ok($$ select * from public.credit_accounts $$, '42501', null, 'nor anon');

-- ---------------------------------------------------------------------------------------------
-- Charges: within the limit, once per key
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('alice@accounts.test');
select throws_ok(format($$ select public.post_credit_account_transaction(%L, 'charge', 100, 'mine', 'k1') $$, :'acme'), '42501', 'not_authorized',
  'members cannot charge the account themselves');
select tests.authenticate_as_service_role();
select public.post_credit_account_transaction(:'acme', 'charge', 4000, 'A purchase on account', 'purchase-1', 'purchase', 'order-1') as t1 \gset
select is(pg_temp.owed(:'acme'), 4000::bigint, 'a charge raises what is owed');
select is((public.post_credit_account_transaction(:'acme', 'charge', 4000, 'A purchase on account', 'purchase-1', 'purchase', 'order-1')).id,
  (:'t1'::public.credit_account_transactions).id, 'the same key returns the same transaction');
select is(pg_temp.owed(:'acme'), 4000::bigint, 'and charges nothing more');
select throws_ok(format($$ select public.post_credit_account_transaction(%L, 'charge', 5000, 'other', 'purchase-1') $$, :'acme'),
  'PT409', 'idempotency_key_reused', 'the same key for another amount is refused');
select throws_ok(format($$ select public.post_credit_account_transaction(%L, 'charge', 6001, 'too much', 'purchase-2') $$, :'acme'),
  'P0001', 'credit_limit_exceeded', 'a charge past the limit is refused');
select is(pg_temp.owed(:'acme'), 4000::bigint, 'and changes nothing');
select lives_ok(format($$ select public.post_credit_account_transaction(%L, 'charge', 6000, 'exactly the rest', 'purchase-3') $$, :'acme'),
  'a charge up to the limit goes through');
select is((select available_credit from public.credit_accounts where organization_id = :'acme'), 0::bigint, 'no credit is left');
select throws_ok(format($$ select public.post_credit_account_transaction(%L, 'charge', 0, 'nothing', 'purchase-4') $$, :'acme'),
  '22023', 'invalid_transaction', 'a charge is a positive amount');
select throws_ok(format($$ select public.post_credit_account_transaction(%L, 'charge', 1, 'x', null) $$, :'acme'),
  '22023', 'invalid_idempotency_key', 'every posted transaction needs an idempotency key');
select lives_ok(format($$ select public.post_credit_account_transaction(%L, 'refund', 1000, 'Goodwill', 'refund-1', 'operator') $$, :'acme'),
  'an operator refunds 10.00');
select is(pg_temp.owed(:'acme'), 9000::bigint, 'which lowers what is owed');
select throws_ok(format($$ select public.post_credit_account_transaction(%L, 'charge', 1, 'x', 'purchase-1', 'nowhere') $$, :'acme'),
  '22023', 'invalid_transaction', 'the source is purchase, pack or operator');

-- ---------------------------------------------------------------------------------------------
-- Settings, limit and status by hand
-- ---------------------------------------------------------------------------------------------
insert into public.payment_methods (organization_id, stripe_payment_method_id, type, synced_at) values (:'acme', 'pm_accounts_test', 'card', now());
select tests.authenticate_as('carol@accounts.test');
select is((public.update_credit_account_settings(:'acme', 'pm_accounts_test', 'Billing@Acme.Test', 'Acme Ltd')).billing_email, 'billing@acme.test',
  'a billing member sets the payment method and billing contact');
select throws_ok(format($$ select public.update_credit_account_settings(%L, 'pm_not_ours') $$, :'acme'), '22023', 'invalid_input',
  'only one of the organization''s saved payment methods');
select throws_ok(format($$ select public.set_credit_limit(%L, 999999, 'more please') $$, :'acme'), '42501', 'not_authorized',
  'nor may members change the limit');
select tests.authenticate_as('bob@accounts.test');
select throws_ok(format($$ select public.update_credit_account_settings(%L, null, 'x@acme.test') $$, :'acme'), '42501', 'not_authorized',
  'an admin does not change the settings');
select tests.authenticate_as('oscar@accounts.test');
select throws_ok(format($$ select public.set_credit_limit(%L, 20000, null) $$, :'acme'), '22023', 'reason_required', 'a limit change needs a reason');
select is((public.set_credit_limit(:'acme', 20000, 'Reviewed')).available_credit, 11000::bigint, 'an operator raises the limit to 200.00');
select throws_ok(format($$ select public.set_credit_account_status(%L, 'defaulted', 'jump') $$, :'acme'), 'P0001', 'invalid_status_transition',
  'active cannot default directly');
select is((public.set_credit_account_status(:'acme', 'suspended', 'Manual review')).status::text, 'suspended', 'an operator suspends it');
select tests.authenticate_as_service_role();
select throws_ok(format($$ select public.post_credit_account_transaction(%L, 'charge', 1, 'x', 'purchase-5') $$, :'acme'), 'P0001', 'credit_account_not_active',
  'a suspended account takes no charges');
select tests.authenticate_as('oscar@accounts.test');
select public.set_credit_account_status(:'acme', 'active', 'Review done');
select tests.reset_role();
select set_eq(format($$ select type::text, description from public.credit_account_transactions
                           where organization_id = %L and type in ('limit_change', 'status_change') $$, :'acme'),
  $$ values ('limit_change', 'Approved by finance'), ('limit_change', 'Reviewed'), ('status_change', 'Manual review'), ('status_change', 'Review done') $$,
  'every limit and status change is in the history with its reason');
select throws_ok(format($$ update public.credit_account_transactions set amount = 1 where organization_id = %L $$, :'acme'), '42501', 'append_only',
  'the history is append-only');
select throws_ok(format($$ delete from public.credit_account_transactions where organization_id = %L $$, :'acme'), '42501', 'append_only',
  'and never deleted');

-- ---------------------------------------------------------------------------------------------
-- The history: filters and keyset pages
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('alice@accounts.test');
select is((select count(*)::int from public.list_credit_account_transactions(:'acme', p_types => '{charge}')), 2, 'filtered by type');
select is((select count(*)::int from public.list_credit_account_transactions(:'acme', p_source_type => 'operator')), 5, 'by source');
select is((select count(*)::int from public.list_credit_account_transactions(:'acme', p_from => now() + interval '1 day')), 0, 'by date');
select is((select count(*)::int from public.list_credit_account_transactions(:'acme', p_limit => 3)), 3, 'a page of three');
select is((select count(*)::int from (
  select * from public.list_credit_account_transactions(:'acme', p_limit => 3)
  union all
  select * from public.list_credit_account_transactions(:'acme', p_after_created_at => (select created_at from public.list_credit_account_transactions(:'acme', p_limit => 3) offset 2 limit 1),
                                                         p_after_id => (select id from public.list_credit_account_transactions(:'acme', p_limit => 3) offset 2 limit 1), p_limit => 100)) pages),
  (select count(*)::int from public.credit_account_transactions where organization_id = :'acme'), 'the next page goes on where the last row was, missing none');
select throws_ok(format($$ select * from public.list_credit_account_transactions(%L, p_limit => 500) $$, :'acme'), '22023', 'invalid_input',
  'a page is at most 200');

-- ---------------------------------------------------------------------------------------------
-- Overage: beyond the balance, charged to the account once per entry
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('dave@accounts.test');
select public.consume_credits_rpc(:'acme', 'ai_chat', 1500) ->> 'success' as drained \gset
select is(:'drained'::text, 'true', 'a member drains the 1500 ai credits');
select public.consume_credits_rpc(:'acme', 'ai_chat', 100, 'overage-1') as over1 \gset
select is(:'over1'::jsonb -> 'overage', '{"ai": 100}'::jsonb, '100 more go through as overage');
select is(pg_temp.owed(:'acme'), 9200::bigint, 'charged at 2 cents each to the account: 2.00 more owed');
select is(public.consume_credits_rpc(:'acme', 'ai_chat', 100, 'overage-1') -> 'overage', '{"ai": 100}'::jsonb, 'the same consume again answers the same');
select is(pg_temp.owed(:'acme'), 9200::bigint, 'and charges nothing more');
select tests.reset_role();
select results_eq(format($$ select o.amount, t.amount, t.source_type from public.credit_overages o
                           join public.credit_account_transactions t on t.id = o.credit_transaction_id where o.organization_id = %L $$, :'acme'),
  $$ values (100::bigint, 200::bigint, 'overage') $$, 'one overage entry, one charge');
select tests.authenticate_as('dave@accounts.test');
select public.reserve_credits(:'acme', p_amounts => '{"email": 10}') ->> 'reservation_id' as res \gset
select is(public.commit_reservation(:'res', '{"email": 30000}') -> 'overage', '{"email": 10000}'::jsonb,
  'a commit beyond the hold and the balance is overage too');
select is(pg_temp.owed(:'acme'), 10200::bigint, '10000 email credits at a tenth of a cent: 10.00 more');
select throws_ok(format($$ select public.consume_credits_rpc(%L, 'ai_chat', 600000) $$, :'acme'), 'P0001', 'credit_limit_exceeded',
  'overage past the available credit is refused');
select is(pg_temp.owed(:'acme'), 10200::bigint, 'and nothing was consumed or charged');
select tests.authenticate_as('erin@accounts.test');
select is(public.consume_credits_rpc(:'globex', 'ai_chat', 1000) ->> 'error', 'insufficient_credits',
  'without a credit account there is no overage (and starter allows none)');

-- ---------------------------------------------------------------------------------------------
-- Statements, reminders, overdue, suspension, default, payment, limit rules
-- ---------------------------------------------------------------------------------------------
select tests.reset_role();
update public.credit_accounts set opened_at = '2027-01-05', statement_day = 1, payment_terms_days = 14 where organization_id = :'acme';
-- (Moving the history to January takes the append-only guard off for a moment.)
alter table public.credit_account_transactions disable trigger credit_account_transactions_guard;
update public.credit_account_transactions set created_at = '2027-01-20' where organization_id = :'acme';
alter table public.credit_account_transactions enable trigger credit_account_transactions_guard;
select tests.authenticate_as_service_role();
select is(private.close_credit_statements('2027-01-31 12:00+00'), 0, 'before the statement day nothing closes');
select is(private.close_credit_statements('2027-02-01 00:05+00'), 1, 'on the statement day the statement closes');
select is(private.close_credit_statements('2027-02-01 06:00+00'), 0, 'once');
select results_eq(format($$ select total, status::text, due_date from public.credit_statements where organization_id = %L $$, :'acme'),
  $$ values (10200::bigint, 'pending', '2027-02-15 00:00+00'::timestamptz) $$, 'with every completed charge, refund and fee, due in 14 days');
select is((select count(*)::int from private.credit_statement_lines((select id from public.credit_statements where organization_id = :'acme'))), 5,
  'its lines: each purchase, the refund, ai overage, email overage');
select id as stmt from public.credit_statements where organization_id = :'acme' \gset
select private.record_statement_invoice(:'stmt', 'in_accounts_test');
select private.record_statement_billed(:'stmt', 'send_invoice', 'https://invoice.stripe.test/in_accounts_test', '2027-02-01 01:00+00');
select is(private.advance_credit_dunning('2027-02-05 00:00+00'), 0, 'ten days before the due date: nothing');
select is(private.advance_credit_dunning('2027-02-13 00:00+00'), 1, 'three days before: a reminder');
select is(private.advance_credit_dunning('2027-02-14 00:00+00'), 0, 'only one');
select is(private.advance_credit_dunning('2027-02-16 00:00+00'), 1, 'after the due date: overdue');
select is((select status::text from public.credit_accounts where organization_id = :'acme'), 'active', 'still active within the grace period');
select is(private.advance_credit_dunning('2027-02-22 01:00+00'), 1, 'a week after the due date: suspended');
select is((select status::text from public.credit_accounts where organization_id = :'acme'), 'suspended', 'suspended');
select tests.authenticate_as('dave@accounts.test');
select is(public.consume_credits_rpc(:'acme', 'ai_chat', 1) ->> 'error', 'insufficient_credits', 'a suspended account stops overage');
select tests.authenticate_as_service_role();
select set_eq(format($$ select type from private.domain_events where organization_id = %L and type like 'credit_statement.%%' $$, :'acme'),
  $$ values ('credit_statement.closed'), ('credit_statement.billed'), ('credit_statement.reminder'), ('credit_statement.overdue') $$,
  'every step is an event');
select set_eq(format($$ select m.template || ':' || m.recipient from private.email_messages m where m.organization_id = %L
                       and m.template in ('payment_reminder', 'account_overdue') $$, :'acme'),
  $$ values ('payment_reminder:alice@accounts.test'), ('payment_reminder:carol@accounts.test'),
            ('account_overdue:alice@accounts.test'), ('account_overdue:carol@accounts.test') $$,
  'the reminder and the overdue notice go to the owner and the billing member')
  from (select private.email_from_events(100, now())) consumed;

-- Paid late: the payment is recorded once, the account active again, its limit lowered.
select tests.reset_role();
insert into public.billing_accounts (organization_id, stripe_customer_id) values (:'acme', 'cus_accounts_test');
select tests.authenticate_as_service_role();
select is(private.sync_stripe_invoice(jsonb_build_object('id', 'in_accounts_test', 'object', 'invoice', 'customer', 'cus_accounts_test',
  'status', 'paid', 'currency', 'eur', 'amount_paid', 10200, 'total', 10200, 'created', 1801440000,
  'status_transitions', jsonb_build_object('paid_at', 1803000000), 'metadata', jsonb_build_object('credit_statement_id', :'stmt'))),
  'processed', 'the statement''s invoice is paid (2027-02-18, late)');
select results_eq(format($$ select amount_owed, status::text, credit_limit from public.credit_accounts where organization_id = %L $$, :'acme'),
  $$ values (0::bigint, 'active', 15000::bigint) $$, 'nothing owed, active again, the limit lowered by 25%% for paying late');
select private.sync_stripe_invoice(jsonb_build_object('id', 'in_accounts_test', 'object', 'invoice', 'customer', 'cus_accounts_test',
  'status', 'paid', 'currency', 'eur', 'amount_paid', 10200, 'total', 10200, 'created', 1801440000,
  'status_transitions', jsonb_build_object('paid_at', 1803000000), 'metadata', jsonb_build_object('credit_statement_id', :'stmt')));
select is((select count(*)::int from public.credit_account_transactions where organization_id = :'acme' and type = 'payment'), 1,
  'the same payment again records nothing');
select set_eq(format($$ select description from public.credit_account_transactions where organization_id = %L and type in ('status_change', 'limit_change')
                           and source_type in ('system', 'rule') $$, :'acme'),
  $$ values ('A statement is unpaid 7 days after its due date'), ('The overdue statements are paid'), ('A statement was paid late: the limit falls by 25%') $$,
  'the automatic changes are in the history with their reasons');

-- Three statements paid on time raise the limit.
select tests.reset_role();
select private.apply_credit_limit_rules(:'acme', true, now()) from generate_series(1, 3);
select is((select credit_limit from public.credit_accounts where organization_id = :'acme'), 18750::bigint,
  'three on time in a row raise the limit by 25%');

-- Long unpaid: defaulted and frozen.
select tests.reset_role();
insert into public.credit_statements (organization_id, period_start, period_end, due_date, currency, total, status)
values (:'acme', '2027-02-01', '2027-03-01', '2027-03-15', 'eur', 500, 'billed');
select tests.authenticate_as_service_role();
select private.advance_credit_dunning('2027-03-23 00:00+00');
select is((select status::text from public.credit_accounts where organization_id = :'acme'), 'suspended', 'suspended a week after');
select private.advance_credit_dunning('2027-04-15 00:00+00');
select results_eq(format($$ select status::text, credit_limit from public.credit_accounts where organization_id = %L $$, :'acme'),
  $$ values ('defaulted', 0::bigint) $$, 'defaulted a month after, its limit frozen');

-- Statements are for owners and billing members too.
select tests.authenticate_as('carol@accounts.test');
select cmp_ok((select count(*)::int from public.credit_statements), '>=', 2, 'the billing member reads the statements');
select tests.authenticate_as('dave@accounts.test');
select is((select count(*)::int from public.credit_statements), 0, 'a plain member does not');
select tests.authenticate_as('erin@accounts.test');
select is((select count(*)::int from public.credit_statements), 0, 'nor a stranger');

-- A plan's rule opens an account: Globex moves to a plan that grants one.
select tests.reset_role();
update public.credit_plans set credit_account_limit = 2500 where key = 'premium';
select tests.authenticate_as_service_role();
select public.change_plan(:'globex', 'premium');
select tests.reset_role();
select results_eq(format($$ select credit_limit, status::text from public.credit_accounts where organization_id = %L $$, :'globex'),
  $$ values (2500::bigint, 'active') $$, 'moving onto premium opened Globex''s credit account with the plan''s limit');
select is((select description from public.credit_account_transactions where organization_id = :'globex'), 'Opened by the premium plan''s rule',
  'with the rule as its reason');

select tests.reset_role();
select * from finish();
rollback;
