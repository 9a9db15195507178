-- 19 Credits hardening (the security review of issue 6): an organization with unbilled overage
-- cannot be deleted; a deleted organization's ledger and overage stay, detached from personal
-- data, until their retention ends; overage is capped by the credit line; metadata is at
-- most 8 KB wherever it is accepted, with the same boundary on consume's inlined check.
--
-- Cast: paula owns Premium Co (premium) where bob is a plain member.
begin;
select plan(30);

select tests.create_user('paula@credits-hardening.test');
select tests.create_user('bob@credits-hardening.test');
select tests.authenticate_as('paula@credits-hardening.test');
select public.create_organization('Premium Co', 'premium-credits-hardening-test') as org_id \gset
select tests.reset_role();
insert into public.organization_members (organization_id, user_id, role)
values (:'org_id', tests.get_user_id('bob@credits-hardening.test'), 'member');
select tests.authenticate_as_service_role();
select public.change_plan(:'org_id', 'premium');
select tests.reset_role();

-- ---------------------------------------------------------------------------------------------
-- Overage is capped by the credit line
-- ---------------------------------------------------------------------------------------------
select is((select allows_overage from public.credit_plan_allocations where plan_key = 'starter' and pool_key = 'ai'), false,
  'starter allows no overage');

-- Without a credit account there is no overage at all.
select tests.authenticate_as('bob@credits-hardening.test');
select (public.reserve_credits(:'org_id', 'ai_chat') ->> 'reservation_id') as huge_id \gset
select throws_ok(format($$ select public.commit_reservation(%L, '{"ai": 1501}') $$, :'huge_id'),
  'P0001', 'overage_needs_credit_account', 'premium without a credit account: no overage');

-- With a line of 30.00 (1500 ai credits at 2 cents), the exploit: a plain member turns a
-- 1-credit hold into a huge overage.
select tests.authenticate_as_service_role();
select public.open_credit_account(:'org_id', 3000, 'hardening test: a line of 30.00');
select tests.authenticate_as('bob@credits-hardening.test');
select throws_ok(format($$ select public.commit_reservation(%L, '{"ai": 999999500}') $$, :'huge_id'),
  'P0001', 'credit_limit_exceeded', 'committing 999,999,500 ai on a 1-credit hold is refused');
select is((select status::text from public.credit_reservations where id = :'huge_id'), 'active', 'the reservation is still active');
select is((select count(*)::int from public.credit_overages where organization_id = :'org_id'), 0, 'no overage was recorded');
select is((public.get_credit_balances(:'org_id') -> 'ai' ->> 'available')::int, 1499, 'and the balance is as before');

-- Up to the line it goes through: the 1 held + the 1499 available + 1500 overage = 30.00.
select is((public.commit_reservation(:'huge_id', '{"ai": 3000}') -> 'overage'), '{"ai": 1500}'::jsonb,
  'a commit that lands exactly on the credit line records 1500 overage');
select tests.authenticate_as_service_role();
select public.grant_credits(:'org_id', 'ai', 10);
select tests.authenticate_as('bob@credits-hardening.test');
select (public.reserve_credits(:'org_id', 'ai_chat') ->> 'reservation_id') as second_id \gset
select throws_ok(format($$ select public.commit_reservation(%L, '{"ai": 11}') $$, :'second_id'),
  'P0001', 'credit_limit_exceeded', 'one more overage credit past the line is refused');
select lives_ok(format($$ select public.commit_reservation(%L, '{"ai": 10}') $$, :'second_id'),
  'using only what is held and available still works');

-- A higher line makes room again.
select tests.authenticate_as_service_role();
select public.set_credit_limit(:'org_id', 5000, 'hardening test: a higher line');
select public.grant_credits(:'org_id', 'ai', 1);
select tests.authenticate_as('bob@credits-hardening.test');
select (public.reserve_credits(:'org_id', 'ai_chat') ->> 'reservation_id') as third_id \gset
select is((public.commit_reservation(:'third_id', '{"ai": 100}') -> 'overage'), '{"ai": 99}'::jsonb,
  'with 20.00 more of credit, overage goes through again (1 held, 99 beyond)');
select tests.reset_role();

-- ---------------------------------------------------------------------------------------------
-- Deleting an organization with money records
-- ---------------------------------------------------------------------------------------------
select tests.reset_role();
select throws_ok(format($$ delete from public.organizations where id = %L $$, :'org_id'),
  'P0001', 'unsettled_balance', 'an organization that owes on its credit account cannot be deleted (nor purged)');
select is((select count(*)::int from public.organizations where id = :'org_id'), 1, 'it is still there');
select cmp_ok((select count(*)::int from public.credit_ledger where organization_id = :'org_id' and actor_id is not null), '>', 0,
  'its ledger names who consumed');

select private.post_credit_transaction(:'org_id', 'payment', amount_owed, 'Settled before deletion', 'operator')
from public.credit_accounts where organization_id = :'org_id';
select lives_ok(format($$ delete from public.organizations where id = %L $$, :'org_id'), 'once settled, it can be deleted');
select tests.reset_role();
select is((select count(*)::int from public.credit_overages where organization_id = :'org_id'), 2, 'its overage records stay');
select cmp_ok((select count(*)::int from public.credit_ledger where organization_id = :'org_id'), '>', 10, 'its ledger stays');
select is_empty(format($$ select 1 from public.credit_ledger where organization_id = %L and (actor_id is not null or metadata <> '{}') $$, :'org_id'),
  'detached from personal data: no actor, no caller metadata');
select is_empty(format($$ select 1 from public.credit_grants where organization_id = %1$L
                          union all select 1 from public.credit_balances where organization_id = %1$L
                          union all select 1 from public.credit_reservations where organization_id = %1$L $$, :'org_id'),
  'the live state (grants, balances, reservations) is gone');
select throws_ok(format($$ update public.credit_ledger set metadata = '{}' where organization_id = %L $$, :'org_id'),
  '42501', 'append_only', 'the detached ledger is still append-only');

-- (Other suites leave tombstones too; the assertions look at this organization only.)
select private.purge_deleted_organization_records(now() + interval '9 years', 100000);
select ok((select records_purged_at is null from private.deleted_organizations where organization_id = :'org_id')
          and exists (select 1 from public.credit_ledger where organization_id = :'org_id'),
  'within the retention the job purges nothing');
select cmp_ok(private.purge_deleted_organization_records(now() + interval '10 years' + interval '1 day', 100000), '>=', 1,
  'after it the job purges tombstoned records');
select is((select count(*)::int from public.credit_ledger where organization_id = :'org_id')
        + (select count(*)::int from public.credit_overages where organization_id = :'org_id'), 0,
  'the organization''s ledger and overage are gone');
select ok((select records_purged_at is not null from private.deleted_organizations where organization_id = :'org_id'),
  'and the tombstone says when');
select is(private.purge_deleted_organization_records(now() + interval '11 years', 100000), 0, 'a second run has nothing to do');

-- ---------------------------------------------------------------------------------------------
-- Metadata: one 8 KB rule
-- ---------------------------------------------------------------------------------------------
select tests.create_user('mia@credits-hardening.test');
select tests.authenticate_as('mia@credits-hardening.test');
select public.create_organization('Meta', 'meta-credits-hardening-test') as meta_id \gset
-- {"x": "aaa..."} is the string's length plus 9 bytes.
select throws_ok(format($$ select public.reserve_credits(%L, 'ai_chat', p_metadata => jsonb_build_object('x', repeat('a', 9000))) $$, :'meta_id'),
  '22023', 'invalid_metadata', 'reserve_credits refuses metadata over 8 KB');
select lives_ok(format($$ select public.consume_credits_rpc(%L, 'ai_chat', 1, null, jsonb_build_object('x', repeat('a', 8183))) $$, :'meta_id'),
  'consume accepts metadata of exactly 8192 bytes');
select throws_ok(format($$ select public.consume_credits_rpc(%L, 'ai_chat', 1, null, jsonb_build_object('x', repeat('a', 8184))) $$, :'meta_id'),
  '22023', 'invalid_metadata', 'and refuses 8193');
select tests.reset_role();
select is(private.check_metadata(jsonb_build_object('x', repeat('a', 8183))) ->> 'x', repeat('a', 8183),
  'private.check_metadata, the rule consume inlines, draws the line at the same byte');
select throws_ok($$ select private.check_metadata(jsonb_build_object('x', repeat('a', 8184))) $$, '22023', 'invalid_metadata',
  'one byte more is refused there too');
select tests.authenticate_as_service_role();
select throws_ok(format($$ select public.grant_credits(%L, 'ai', 5, p_metadata => jsonb_build_object('x', repeat('a', 9000))) $$, :'meta_id'),
  '22023', 'invalid_metadata', 'grant_credits refuses metadata over 8 KB');
select tests.reset_role();

select * from finish();
rollback;
