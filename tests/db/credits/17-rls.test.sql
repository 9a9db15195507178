-- 17 Credits under row-level security: members read their organization's plan, grants,
-- balances, ledger and reservations, never another's; overage is for owners, admins and billing;
-- nobody signed in writes any of it directly (all writes go through the RPCs); the catalogue is
-- readable by every signed-in user and written by none; anon reads nothing; idempotency keys stay
-- private; the Studio views show only the caller's organizations.
--
-- Cast: in Acme alice is owner, bob member, carol admin, dave billing; erin owns Evil Corp;
-- frank belongs to nothing. Both organizations are on premium and have run into overage.
begin;
select plan(82);

select tests.create_user('alice@rls-credits.test');
select tests.create_user('bob@rls-credits.test');
select tests.create_user('carol@rls-credits.test');
select tests.create_user('dave@rls-credits.test');
select tests.create_user('erin@rls-credits.test');
select tests.create_user('frank@rls-credits.test');

select tests.authenticate_as('alice@rls-credits.test');
select public.create_organization('Acme', 'acme-rls-credits-test') as acme_id \gset
select tests.authenticate_as('erin@rls-credits.test');
select public.create_organization('Evil Corp', 'evil-rls-credits-test') as evil_id \gset
select tests.reset_role();
insert into public.organization_members (organization_id, user_id, role) values
  (:'acme_id', tests.get_user_id('bob@rls-credits.test'), 'member'),
  (:'acme_id', tests.get_user_id('carol@rls-credits.test'), 'admin'),
  (:'acme_id', tests.get_user_id('dave@rls-credits.test'), 'billing');

-- Every credit table gets rows in both organizations.
select tests.authenticate_as_service_role();
select public.change_plan(:'acme_id', 'premium');
select public.change_plan(:'evil_id', 'premium');
select public.open_credit_account(:'acme_id', 100000, 'overage for the RLS test');
select public.open_credit_account(:'evil_id', 100000, 'overage for the RLS test');
select tests.authenticate_as('bob@rls-credits.test');
select public.consume_credits_rpc(:'acme_id', 'ai_chat', 1, 'acme-key');
select public.commit_reservation((public.reserve_credits(:'acme_id', p_amounts => '{"ai": 1}') ->> 'reservation_id')::uuid, '{"ai": 1600}');
select public.reserve_credits(:'acme_id', p_amounts => '{"email": 5}');
select tests.authenticate_as('erin@rls-credits.test');
select public.consume_credits_rpc(:'evil_id', 'ai_chat', 1, 'evil-key');
select public.commit_reservation((public.reserve_credits(:'evil_id', p_amounts => '{"sms": 1}') ->> 'reservation_id')::uuid, '{"sms": 600}');

-- ---------------------------------------------------------------------------------------------
-- Members read their own organization's credits only
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('bob@rls-credits.test');
select set_eq('select distinct organization_id from public.organization_plans', format('values (%L::uuid)', :'acme_id'),
  'bob reads Acme''s plan and no other organization''s');
select set_eq('select distinct organization_id from public.credit_grants', format('values (%L::uuid)', :'acme_id'),
  'bob reads Acme''s grants only');
select set_eq('select distinct organization_id from public.credit_balances', format('values (%L::uuid)', :'acme_id'),
  'bob reads Acme''s balances only');
select set_eq('select distinct organization_id from public.credit_ledger', format('values (%L::uuid)', :'acme_id'),
  'bob reads Acme''s ledger only');
select set_eq('select distinct organization_id from public.credit_reservations', format('values (%L::uuid)', :'acme_id'),
  'bob reads Acme''s reservations only');
select is_empty('select 1 from public.credit_overages',
  'bob, a member, reads no overage, not even Acme''s');
select set_eq('select distinct organization_id from public.credit_balances_overview', format('values (%L::uuid)', :'acme_id'),
  'the credit_balances_overview view shows bob Acme only');
select set_eq('select distinct organization_id from public.credit_grant_balances', format('values (%L::uuid)', :'acme_id'),
  'the credit_grant_balances view shows bob Acme''s grants only');
select results_eq(format($$ select plan_key, available, reserved from public.credit_balances_overview where organization_id = %L and pool_key = 'email' $$, :'acme_id'),
  $$ values ('premium', 19995::bigint, 5::bigint) $$, 'the overview shows Acme''s plan and its email held by bob''s reservation');

select tests.authenticate_as('alice@rls-credits.test');
select results_eq('select organization_id, pool_key, amount from public.credit_overages',
  format($$ values (%L::uuid, 'ai', 101::bigint) $$, :'acme_id'), 'alice, the owner, reads Acme''s overage');
select tests.authenticate_as('carol@rls-credits.test');
select results_eq('select organization_id, pool_key, amount from public.credit_overages',
  format($$ values (%L::uuid, 'ai', 101::bigint) $$, :'acme_id'), 'carol, an admin, reads it');
select tests.authenticate_as('dave@rls-credits.test');
select results_eq('select organization_id, pool_key, amount from public.credit_overages',
  format($$ values (%L::uuid, 'ai', 101::bigint) $$, :'acme_id'), 'dave, billing, reads it');
select set_eq('select distinct organization_id from public.credit_ledger', format('values (%L::uuid)', :'acme_id'),
  'dave reads Acme''s ledger like any member');

select tests.authenticate_as('erin@rls-credits.test');
select set_eq($$
  select organization_id from public.organization_plans union select organization_id from public.credit_grants
  union select organization_id from public.credit_balances union select organization_id from public.credit_ledger
  union select organization_id from public.credit_reservations union select organization_id from public.credit_overages
  union select organization_id from public.credit_balances_overview union select organization_id from public.credit_grant_balances
$$, format('values (%L::uuid)', :'evil_id'), 'erin reads Evil Corp''s credits, overage included, and nothing of Acme''s');
select results_eq('select pool_key, amount from public.credit_overages', $$ values ('sms', 100::bigint) $$,
  'erin''s overage is Evil Corp''s 100 sms');

select tests.authenticate_as('frank@rls-credits.test');
select is_empty($$
  select organization_id from public.organization_plans union select organization_id from public.credit_grants
  union select organization_id from public.credit_balances union select organization_id from public.credit_ledger
  union select organization_id from public.credit_reservations union select organization_id from public.credit_overages
  union select organization_id from public.credit_balances_overview union select organization_id from public.credit_grant_balances
$$, 'frank, in no organization, reads no credits at all');

select tests.authenticate_as_service_role();
select ok((select count(distinct organization_id) from public.credit_ledger where organization_id in (:'acme_id', :'evil_id')) = 2,
  'the service role reads every organization''s ledger');

-- ---------------------------------------------------------------------------------------------
-- Nobody signed in writes credits directly
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('alice@rls-credits.test');
select throws_ok(format($$ insert into public.organization_plans (organization_id, plan_key, period_start, period_end) values (%L, 'premium', now(), now() + interval '1 year') $$, :'acme_id'),
  '42501', 'permission denied for table organization_plans', 'alice, the owner, cannot insert a plan row');
select throws_ok(format($$ update public.organization_plans set period_end = now() + interval '10 years' where organization_id = %L $$, :'acme_id'),
  '42501', 'permission denied for table organization_plans', 'nor stretch Acme''s period');
select throws_ok(format($$ delete from public.organization_plans where organization_id = %L $$, :'acme_id'),
  '42501', 'permission denied for table organization_plans', 'nor delete Acme''s plan');
select throws_ok(format($$ insert into public.credit_grants (organization_id, pool_key, kind, amount, remaining) values (%L, 'ai', 'manual', 1000000, 1000000) $$, :'acme_id'),
  '42501', 'permission denied for table credit_grants', 'nor grant herself credits by inserting a grant');
select throws_ok(format($$ update public.credit_grants set remaining = amount where organization_id = %L $$, :'acme_id'),
  '42501', 'permission denied for table credit_grants', 'nor refill a grant');
select throws_ok(format($$ delete from public.credit_grants where organization_id = %L $$, :'acme_id'),
  '42501', 'permission denied for table credit_grants', 'nor delete grants');
select throws_ok(format($$ insert into public.credit_balances (organization_id, pool_key, available) values (%L, 'ai', 1000000) $$, :'acme_id'),
  '42501', 'permission denied for table credit_balances', 'nor insert a balance');
select throws_ok(format($$ update public.credit_balances set available = 1000000 where organization_id = %L $$, :'acme_id'),
  '42501', 'permission denied for table credit_balances', 'nor raise a balance');
select throws_ok(format($$ delete from public.credit_balances where organization_id = %L $$, :'acme_id'),
  '42501', 'permission denied for table credit_balances', 'nor delete a balance');
select throws_ok(format($$ insert into public.credit_ledger (transaction_id, organization_id, pool_key, kind, amount) values (gen_random_uuid(), %L, 'ai', 'grant', 1000) $$, :'acme_id'),
  '42501', 'permission denied for table credit_ledger', 'nor write the ledger');
select throws_ok(format($$ update public.credit_ledger set amount = 0 where organization_id = %L $$, :'acme_id'),
  '42501', 'permission denied for table credit_ledger', 'nor rewrite it');
select throws_ok(format($$ delete from public.credit_ledger where organization_id = %L $$, :'acme_id'),
  '42501', 'permission denied for table credit_ledger', 'nor delete from it');
select throws_ok(format($$ insert into public.credit_reservations (organization_id, amounts, holds, expires_at) values (%L, '{"ai": 1}', '[]', now() + interval '1 hour') $$, :'acme_id'),
  '42501', 'permission denied for table credit_reservations', 'nor insert a reservation');
select throws_ok(format($$ update public.credit_reservations set status = 'released' where organization_id = %L $$, :'acme_id'),
  '42501', 'permission denied for table credit_reservations', 'nor end one by hand');
select throws_ok(format($$ delete from public.credit_reservations where organization_id = %L $$, :'acme_id'),
  '42501', 'permission denied for table credit_reservations', 'nor delete one');
select throws_ok(format($$ insert into public.credit_overages (organization_id, pool_key, amount, transaction_id) values (%L, 'ai', 1, gen_random_uuid()) $$, :'acme_id'),
  '42501', 'permission denied for table credit_overages', 'nor insert overage');
select throws_ok(format($$ update public.credit_overages set billed_at = now() where organization_id = %L $$, :'acme_id'),
  '42501', 'permission denied for table credit_overages', 'nor mark Acme''s overage billed');
select throws_ok(format($$ delete from public.credit_overages where organization_id = %L $$, :'acme_id'),
  '42501', 'permission denied for table credit_overages', 'nor delete it');

select tests.authenticate_as('bob@rls-credits.test');
select throws_ok(format($$ update public.credit_balances set available = 1000000 where organization_id = %L $$, :'acme_id'),
  '42501', 'permission denied for table credit_balances', 'bob, a member, cannot raise a balance either');
select throws_ok(format($$ insert into public.credit_grants (organization_id, pool_key, kind, amount, remaining) values (%L, 'ai', 'manual', 10, 10) $$, :'acme_id'),
  '42501', 'permission denied for table credit_grants', 'nor insert a grant');
select throws_ok(format($$ update public.credit_balances_overview set available = 1000000 where organization_id = %L $$, :'acme_id'),
  '55000', 'cannot update view "credit_balances_overview"', 'nor write through the overview view');
select throws_ok(format($$ delete from public.credit_grant_balances where organization_id = %L $$, :'acme_id'),
  '55000', 'cannot delete from view "credit_grant_balances"', 'nor through the grant balances view');

-- ---------------------------------------------------------------------------------------------
-- The catalogue: readable by every signed-in user, written by none
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('frank@rls-credits.test');
select set_eq($$ select key from public.credit_pools where key in ('ai', 'whatsapp', 'email', 'sms') $$, $$ values ('ai'), ('whatsapp'), ('email'), ('sms') $$,
  'frank, signed in without an organization, reads the pools');
select set_eq($$ select key from public.credit_plans where key in ('starter', 'premium') $$, $$ values ('starter'), ('premium') $$,
  'the plans');
select is((select count(*)::int from public.credit_plan_allocations where plan_key in ('starter', 'premium')), 8, 'the plan allocations');
select is((select count(*)::int from public.credit_actions where key in ('ai_chat', 'ai_assistant', 'form_generation', 'automation_run', 'whatsapp_message', 'email_send', 'bulk_email', 'sms_send')), 8,
  'the actions');
select is((select amount from public.credit_action_costs where action_key = 'form_generation' and pool_key = 'ai'), 5::bigint,
  'and the action costs');

select tests.authenticate_as('alice@rls-credits.test');
select throws_ok($$ insert into public.credit_pools (key, name) values ('free', 'Free') $$,
  '42501', 'permission denied for table credit_pools', 'alice cannot add a pool');
select throws_ok($$ update public.credit_pools set purchase_validity = interval '100 years' $$,
  '42501', 'permission denied for table credit_pools', 'nor change one');
select throws_ok($$ delete from public.credit_pools where key = 'sms' $$,
  '42501', 'permission denied for table credit_pools', 'nor delete one');
select throws_ok($$ insert into public.credit_plans (key, name) values ('free', 'Free') $$,
  '42501', 'permission denied for table credit_plans', 'nor add a plan');
select throws_ok($$ update public.credit_plans set period = interval '10 years' $$,
  '42501', 'permission denied for table credit_plans', 'nor change one');
select throws_ok($$ delete from public.credit_plans where key = 'starter' $$,
  '42501', 'permission denied for table credit_plans', 'nor delete one');
select throws_ok($$ insert into public.credit_plan_allocations (plan_key, pool_key, amount) values ('starter', 'ai', 1) $$,
  '42501', 'permission denied for table credit_plan_allocations', 'nor add an allocation');
select throws_ok($$ update public.credit_plan_allocations set amount = 1000000 $$,
  '42501', 'permission denied for table credit_plan_allocations', 'nor raise the allocations');
select throws_ok($$ delete from public.credit_plan_allocations $$,
  '42501', 'permission denied for table credit_plan_allocations', 'nor delete them');
select throws_ok($$ insert into public.credit_actions (key, name) values ('free_lunch', 'Free lunch') $$,
  '42501', 'permission denied for table credit_actions', 'nor add an action');
select throws_ok($$ update public.credit_actions set is_enabled = false $$,
  '42501', 'permission denied for table credit_actions', 'nor disable the actions');
select throws_ok($$ delete from public.credit_actions where key = 'ai_chat' $$,
  '42501', 'permission denied for table credit_actions', 'nor delete one');
select throws_ok($$ insert into public.credit_action_costs (action_key, pool_key, amount) values ('ai_chat', 'sms', 1) $$,
  '42501', 'permission denied for table credit_action_costs', 'nor add a cost');
select throws_ok($$ update public.credit_action_costs set amount = 1 $$,
  '42501', 'permission denied for table credit_action_costs', 'nor cheapen the actions');
select throws_ok($$ delete from public.credit_action_costs where action_key = 'form_generation' $$,
  '42501', 'permission denied for table credit_action_costs', 'nor make one free by deleting its cost');

-- ---------------------------------------------------------------------------------------------
-- Idempotency keys stay private
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('bob@rls-credits.test');
select throws_ok('select * from private.credit_idempotency_keys', '42501', 'permission denied for table credit_idempotency_keys',
  'bob cannot read the idempotency keys, not even Acme''s');
select throws_ok($$ delete from private.credit_idempotency_keys $$, '42501', 'permission denied for table credit_idempotency_keys',
  'nor delete them');
select tests.reset_role();
select isnt_empty(format($$ select 1 from private.credit_idempotency_keys where organization_id = %L and key = 'acme-key' $$, :'acme_id'),
  '(Acme''s key is there)');

-- ---------------------------------------------------------------------------------------------
-- Anon reads nothing
-- ---------------------------------------------------------------------------------------------
select tests.clear_authentication();
select throws_ok('select * from public.organization_plans', '42501', 'permission denied for table organization_plans', 'anon cannot read plans of organizations');
select throws_ok('select * from public.credit_grants', '42501', 'permission denied for table credit_grants', 'anon cannot read grants');
select throws_ok('select * from public.credit_balances', '42501', 'permission denied for table credit_balances', 'anon cannot read balances');
select throws_ok('select * from public.credit_ledger', '42501', 'permission denied for table credit_ledger', 'anon cannot read the ledger');
select throws_ok('select * from public.credit_reservations', '42501', 'permission denied for table credit_reservations', 'anon cannot read reservations');
select throws_ok('select * from public.credit_overages', '42501', 'permission denied for table credit_overages', 'anon cannot read overage');
select throws_ok('select * from public.credit_pools', '42501', 'permission denied for table credit_pools', 'anon cannot read the pools');
select throws_ok('select * from public.credit_plans', '42501', 'permission denied for table credit_plans', 'anon cannot read the plans');
select throws_ok('select * from public.credit_plan_allocations', '42501', 'permission denied for table credit_plan_allocations', 'anon cannot read the allocations');
select throws_ok('select * from public.credit_actions', '42501', 'permission denied for table credit_actions', 'anon cannot read the actions');
select throws_ok('select * from public.credit_action_costs', '42501', 'permission denied for table credit_action_costs', 'anon cannot read the action costs');
select throws_ok('select * from public.credit_balances_overview', '42501', 'permission denied for view credit_balances_overview', 'anon cannot read the overview view');
select throws_ok('select * from public.credit_grant_balances', '42501', 'permission denied for view credit_grant_balances', 'anon cannot read the grant balances view');
select throws_ok('select * from private.credit_idempotency_keys', '42501', 'permission denied for schema private', 'anon cannot reach the idempotency keys');
select throws_ok(format($$ insert into public.credit_grants (organization_id, pool_key, kind, amount, remaining) values (%L, 'ai', 'manual', 10, 10) $$, :'acme_id'),
  '42501', 'permission denied for table credit_grants', 'anon cannot insert a grant');
select throws_ok(format($$ update public.credit_balances set available = 1000000 where organization_id = %L $$, :'acme_id'),
  '42501', 'permission denied for table credit_balances', 'anon cannot raise a balance');

-- ---------------------------------------------------------------------------------------------
-- Policies and privileges as declared
-- ---------------------------------------------------------------------------------------------
select tests.reset_role();
select is_empty($$
  select c.relname from pg_class c
  where c.oid in ('public.organization_plans'::regclass, 'public.credit_grants'::regclass, 'public.credit_balances'::regclass,
                  'public.credit_ledger'::regclass, 'public.credit_reservations'::regclass, 'public.credit_overages'::regclass,
                  'public.credit_pools'::regclass, 'public.credit_plans'::regclass, 'public.credit_plan_allocations'::regclass,
                  'public.credit_actions'::regclass, 'public.credit_action_costs'::regclass, 'private.credit_idempotency_keys'::regclass)
    and not c.relrowsecurity
$$, 'row-level security is enabled on every credit table');
select is_empty($$
  select tablename, cmd from pg_policies
  where schemaname = 'public' and (tablename like 'credit%' or tablename = 'organization_plans') and cmd <> 'SELECT'
$$, 'every credit policy is a select policy: no policy lets a signed-in user write');
select is_empty($$
  select table_name, privilege_type from information_schema.role_table_grants
  where grantee = 'authenticated' and table_schema = 'public' and privilege_type <> 'SELECT'
    and table_name in ('organization_plans', 'credit_grants', 'credit_balances', 'credit_ledger', 'credit_reservations', 'credit_overages',
                       'credit_pools', 'credit_plans', 'credit_plan_allocations', 'credit_actions', 'credit_action_costs')
$$, 'authenticated holds no privilege but select on any credit table');
select is_empty($$
  select table_name, privilege_type from information_schema.role_table_grants
  where grantee = 'anon' and table_schema in ('public', 'private')
    and (table_name like 'credit%' or table_name = 'organization_plans')
$$, 'anon holds no privilege on any credit table or view');

select * from finish();
rollback;
