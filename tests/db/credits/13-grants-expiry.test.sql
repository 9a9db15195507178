-- 13 Grants, draw order, expiry and the ledger. Credits enter only as grants, made by the service
-- role or a platform admin; purchases expire after the pool's purchase_validity. Consumption
-- draws by priority, then soonest expiry, then granted before purchased, then oldest, and the
-- ledger names every grant drawn from. Expired credits are never counted or consumed, and
-- private.expire_credits sweeps them. The ledger is append-only and leaves with its organization.
--
-- Cast: alice owns Acme, bob is a member of Acme; ada is a platform admin (app_metadata);
-- carol owns Beta, where credits expire.
begin;
select plan(60);

select tests.create_user('alice@grants.test');
select tests.create_user('bob@grants.test');
select tests.create_user('ada@grants.test', '{"platform_admin": true}');
select tests.create_user('carol@grants.test');

select tests.authenticate_as('alice@grants.test');
select public.create_organization('Acme', 'acme-grants-test') as acme_id \gset
select tests.authenticate_as('carol@grants.test');
select public.create_organization('Beta', 'beta-grants-test') as beta_id \gset
select tests.reset_role();
insert into public.organization_members (organization_id, user_id, role)
values (:'acme_id', tests.get_user_id('bob@grants.test'), 'member');
select period_end as acme_period_end from public.organization_plans where organization_id = :'acme_id' \gset
select id as acme_allocation from public.credit_grants where organization_id = :'acme_id' and pool_key = 'ai' and kind = 'plan_allocation' \gset

-- ---------------------------------------------------------------------------------------------
-- Who may grant
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('alice@grants.test');
select throws_ok(format($$ select public.grant_credits(%L, 'ai', 100) $$, :'acme_id'),
  '42501', 'not_authorized', 'alice, Acme''s owner, cannot grant herself credits');
select tests.authenticate_as('bob@grants.test');
select throws_ok(format($$ select public.grant_credits(%L, 'ai', 100) $$, :'acme_id'),
  '42501', 'not_authorized', 'bob, a member, cannot either');
select tests.clear_authentication();
select throws_ok(format($$ select public.grant_credits(%L, 'ai', 100) $$, :'acme_id'),
  '42501', 'permission denied for function grant_credits', 'anon cannot execute grant_credits');

select tests.authenticate_as('ada@grants.test');
select public.grant_credits(:'acme_id', 'sms', 25, 'manual', null, 100, 'support ticket 12', '{"ticket": 12}') as by_ada \gset
select is(:'by_ada'::jsonb - 'grant_id' - 'transaction_id',
  '{"success": true, "pool": "sms", "amount": 25, "expires_at": "infinity"}'::jsonb,
  'ada, a platform admin, grants 25 sms; a manual grant never expires unless told');
select tests.reset_role();
select results_eq(format($$
  select kind::text, amount, remaining, priority, source, granted_by, metadata from public.credit_grants where id = %L
$$, :'by_ada'::jsonb ->> 'grant_id'), format($$
  values ('manual', 25::bigint, 25::bigint, 100, 'support ticket 12', %L::uuid, '{"ticket": 12}'::jsonb)
$$, tests.get_user_id('ada@grants.test')),
  'the grant records its kind, amount, priority, source, metadata and ada as the granter');
select results_eq(format($$
  select transaction_id, kind::text, amount, grant_id, actor_id, actor_role from public.credit_ledger where grant_id = %L
$$, :'by_ada'::jsonb ->> 'grant_id'), format($$
  values (%L::uuid, 'grant', 25::bigint, %L::uuid, %L::uuid, 'authenticated')
$$, :'by_ada'::jsonb ->> 'transaction_id', :'by_ada'::jsonb ->> 'grant_id', tests.get_user_id('ada@grants.test')),
  'its ledger entry is a grant of +25 under the returned transaction id, made by ada');

select tests.authenticate_as_service_role();
select public.grant_credits(:'acme_id', 'whatsapp', 100, 'purchase') as purchase \gset
select is(((:'purchase'::jsonb ->> 'expires_at')::timestamptz), now() + interval '12 months',
  'the service role grants a purchase of 100 whatsapp, which expires 12 months from now by default');
select public.grant_credits(:'acme_id', 'whatsapp', 5, 'purchase', now() + interval '3 days') as short_purchase \gset
select is(((:'short_purchase'::jsonb ->> 'expires_at')::timestamptz), now() + interval '3 days',
  'a purchase given its own expiry keeps it');
select public.grant_credits(:'acme_id', 'whatsapp', 7, 'promotion', now() + interval '10 days') as promo \gset
select is(((:'promo'::jsonb ->> 'expires_at')::timestamptz), now() + interval '10 days', 'a promotion expires when told');
select tests.reset_role();
select results_eq(format($$ select actor_id, actor_role from public.credit_ledger where grant_id = %L $$, :'purchase'::jsonb ->> 'grant_id'),
  $$ values (null::uuid, 'service_role') $$, 'the service role''s grant is recorded as the service role''s, with no user');

select tests.authenticate_as('alice@grants.test');
select is(public.get_credit_balances(:'acme_id') -> 'whatsapp', '{"available": 262, "reserved": 0, "total": 262}'::jsonb,
  'Acme''s whatsapp pool holds the allocation and the three grants');

-- ---------------------------------------------------------------------------------------------
-- Invalid grants
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as_service_role();
select throws_ok(format($$ select public.grant_credits(%L, 'ai', 0) $$, :'acme_id'), '22023', 'invalid_amount', 'a grant of 0 is refused');
select throws_ok(format($$ select public.grant_credits(%L, 'ai', -5) $$, :'acme_id'), '22023', 'invalid_amount', 'a negative grant is refused');
select throws_ok(format($$ select public.grant_credits(%L, 'ai', null) $$, :'acme_id'), '22023', 'invalid_amount', 'a grant without an amount is refused');
select throws_ok(format($$ select public.grant_credits(%L, 'ai', 1000000001) $$, :'acme_id'), '22023', 'invalid_amount', 'a grant over 1000000000 is refused');
select throws_ok(format($$ select public.grant_credits(%L, 'ai', 10, 'gift') $$, :'acme_id'), '22023', 'invalid_kind', 'an unknown kind is refused');
select throws_ok(format($$ select public.grant_credits(%L, 'ai', 10, 'plan_allocation') $$, :'acme_id'), '22023', 'invalid_kind',
  'plan allocations cannot be granted by hand (they come from plans)');
select throws_ok(format($$ select public.grant_credits(%L, 'ai', 10, 'refund') $$, :'acme_id'), '22023', 'invalid_kind',
  'nor refunds (they come from refund_credits)');
select throws_ok(format($$ select public.grant_credits(%L, 'ai', 10, null) $$, :'acme_id'), '22023', 'invalid_kind', 'a missing kind is refused');
select throws_ok(format($$ select public.grant_credits(%L, 'ai', 10, 'manual', now() - interval '1 second') $$, :'acme_id'),
  '22023', 'invalid_expiry', 'an expiry in the past is refused');
select throws_ok(format($$ select public.grant_credits(%L, 'ai', 10, 'manual', now()) $$, :'acme_id'),
  '22023', 'invalid_expiry', 'an expiry of right now is refused');
select throws_ok(format($$ select public.grant_credits(%L, 'ai', 10, 'manual', null, -1) $$, :'acme_id'),
  '22023', 'invalid_priority', 'a negative priority is refused');
select throws_ok(format($$ select public.grant_credits(%L, 'ai', 10, 'manual', null, 1001) $$, :'acme_id'),
  '22023', 'invalid_priority', 'a priority over 1000 is refused');
select throws_ok(format($$ select public.grant_credits(%L, 'ai', 10, 'manual', null, null) $$, :'acme_id'),
  '22023', 'invalid_priority', 'a missing priority is refused');
select throws_ok(format($$ select public.grant_credits(%L, 'ai', 10, 'manual', null, 100, null, '[]') $$, :'acme_id'),
  '22023', 'invalid_metadata', 'metadata that is not an object is refused');
select throws_ok(format($$ select public.grant_credits(%L, 'voice', 10) $$, :'acme_id'),
  'PT404', 'pool_not_found', 'a grant to an unknown pool is refused with pool_not_found');
select throws_ok(format($$ select public.grant_credits(%L, 'ai', 10) $$, gen_random_uuid()),
  'PT404', 'organization_not_found', 'a grant to an unknown organization is refused with organization_not_found');
select tests.reset_role();
select is((select count(*)::int from public.credit_grants where organization_id = :'acme_id'), 8,
  'none of the invalid grants left a grant behind (4 allocations, ada''s and the service role''s 3)');

-- ---------------------------------------------------------------------------------------------
-- Draw order: priority, soonest expiry, granted before purchased, oldest
-- ---------------------------------------------------------------------------------------------
-- Acme's ai pool gets, besides its allocation (200, priority 100, expiring at the period end):
--   promo     10, priority 50, never expires             -> first (lower priority wins)
--   soon      10, priority 100, expires in 1 day          -> second (soonest expiry)
--   older     10, priority 100, expires in 2 days, made an hour ago -> third (oldest of a tie)
--   newer     10, priority 100, expires in 2 days          -> fourth
--   allocation 200                                         -> fifth
--   bought    10, purchase, expires at the period end, made a day ago -> last: granted before
--             purchased, even though it is older than the allocation
select tests.authenticate_as_service_role();
select public.grant_credits(:'acme_id', 'ai', 10, 'purchase', :'acme_period_end') ->> 'grant_id' as bought \gset
select public.grant_credits(:'acme_id', 'ai', 10, 'manual', now() + interval '2 days') ->> 'grant_id' as newer \gset
select public.grant_credits(:'acme_id', 'ai', 10, 'manual', now() + interval '2 days') ->> 'grant_id' as older \gset
select public.grant_credits(:'acme_id', 'ai', 10, 'manual', now() + interval '1 day') ->> 'grant_id' as soon \gset
select public.grant_credits(:'acme_id', 'ai', 10, 'promotion', null, 50) ->> 'grant_id' as promo \gset
select tests.reset_role();
update public.credit_grants set created_at = now() - interval '1 hour' where id = :'older';
update public.credit_grants set created_at = now() - interval '1 day' where id = :'bought';

select tests.authenticate_as('bob@grants.test');
select public.consume_credits_rpc(:'acme_id', 'form_generation', 2) ->> 'transaction_id' as draw1 \gset
select public.consume_credits_rpc(:'acme_id', 'ai_chat', 15) ->> 'transaction_id' as draw2 \gset

select tests.reset_role();
select set_eq(format($$ select grant_id, amount from public.credit_ledger where transaction_id = %L $$, :'draw1'),
  format($$ values (%L::uuid, -10::bigint) $$, :'promo'),
  'the first 10 come from the priority-50 promotion, though it never expires');
select set_eq(format($$ select grant_id, amount from public.credit_ledger where transaction_id = %L $$, :'draw2'),
  format($$ values (%L::uuid, -10::bigint), (%L::uuid, -5::bigint) $$, :'soon', :'older'),
  'the next 15 span two grants: all of the one expiring soonest, then 5 from the older of the two expiring in 2 days');

select tests.authenticate_as('bob@grants.test');
select results_eq(format($$ select id, remaining, is_head from public.credit_grant_balances where organization_id = %L and pool_key = 'ai' order by remaining, expires_at $$, :'acme_id'),
  format($$ values (%L::uuid, 0::bigint, false), (%L::uuid, 0::bigint, false), (%L::uuid, 5::bigint, true),
                   (%L::uuid, 10::bigint, false), (%L::uuid, 10::bigint, false), (%L::uuid, 200::bigint, false) $$,
         :'soon', :'promo', :'older', :'newer', :'bought', :'acme_allocation'),
  'credit_grant_balances shows each grant''s live remaining, the partly drawn older grant as the head');

select public.consume_credits_rpc(:'acme_id', 'ai_chat', 10) ->> 'transaction_id' as draw3 \gset
select public.consume_credits_rpc(:'acme_id', 'ai_chat', 205) ->> 'transaction_id' as draw4 \gset
select public.consume_credits_rpc(:'acme_id', 'ai_chat', 10) ->> 'transaction_id' as draw5 \gset
select is(public.consume_credits_rpc(:'acme_id', 'ai_chat') ->> 'error', 'insufficient_credits', 'after 250 credits the pool is empty');

select tests.reset_role();
select set_eq(format($$ select grant_id, amount from public.credit_ledger where transaction_id = %L $$, :'draw3'),
  format($$ values (%L::uuid, -5::bigint), (%L::uuid, -5::bigint) $$, :'older', :'newer'),
  'then the rest of the older grant and half of the newer one');
select set_eq(format($$ select grant_id, amount from public.credit_ledger where transaction_id = %L $$, :'draw4'),
  format($$ values (%L::uuid, -5::bigint), (%L::uuid, -200::bigint) $$, :'newer', :'acme_allocation'),
  'then the rest of the newer grant and the whole allocation');
select set_eq(format($$ select grant_id, amount from public.credit_ledger where transaction_id = %L $$, :'draw5'),
  format($$ values (%L::uuid, -10::bigint) $$, :'bought'),
  'and the purchase last, though it expires with the allocation and is older');
select results_eq(format($$ select pool_key, ok from private.verify_credit_ledger(%L) $$, :'acme_id'),
  $$ values ('ai', true), ('email', true), ('sms', true), ('whatsapp', true) $$,
  'Acme''s balances, ledger and grants reconcile');

-- ---------------------------------------------------------------------------------------------
-- Expired credits are never counted nor consumed, and the sweep removes them
-- ---------------------------------------------------------------------------------------------
-- Beta's ai pool has a 30-credit grant drawn first (priority 10) that expires in a day; its
-- whatsapp pool a 40-credit one expiring in a day.
select tests.authenticate_as_service_role();
select public.grant_credits(:'beta_id', 'ai', 30, 'manual', now() + interval '1 day', 10) ->> 'grant_id' as beta_ai_grant \gset
select public.grant_credits(:'beta_id', 'whatsapp', 40, 'manual', now() + interval '1 day', 10) ->> 'grant_id' as beta_whatsapp_grant \gset
select tests.reset_role();
select id as beta_allocation from public.credit_grants where organization_id = :'beta_id' and pool_key = 'ai' and kind = 'plan_allocation' \gset

-- Time passes beyond the ai grant's expiry: its expires_at (and the pool's cached next expiry,
-- which always follows it) fall behind now().
update public.credit_grants set expires_at = now() - interval '1 minute' where id = :'beta_ai_grant';
update public.credit_balances set next_expiry_at = now() - interval '1 minute' where organization_id = :'beta_id' and pool_key = 'ai';

select tests.authenticate_as('carol@grants.test');
select is(public.get_credit_balances(:'beta_id') -> 'ai', '{"available": 200, "reserved": 0, "total": 200}'::jsonb,
  'the expired 30 credits no longer count in get_credit_balances ...');
select tests.reset_role();
select is((select available from public.credit_balances where organization_id = :'beta_id' and pool_key = 'ai'), 230::bigint,
  '... even before any sweep removed them from the balance row');

select tests.authenticate_as('carol@grants.test');
select public.consume_credits_rpc(:'beta_id', 'ai_chat') as beta_chat \gset
select is(:'beta_chat'::jsonb - 'transaction_id', '{"success": true, "consumed": {"ai": 1}, "remaining": {"ai": 199}}'::jsonb,
  'carol consumes one ai_chat: 199 remain');
select tests.reset_role();
select results_eq(format($$ select grant_id from public.credit_ledger where transaction_id = %L $$, :'beta_chat'::jsonb ->> 'transaction_id'),
  format($$ values (%L::uuid) $$, :'beta_allocation'),
  'it was drawn from the allocation, never from the expired grant that comes first in draw order');
select results_eq(format($$ select kind::text, amount, actor_role from public.credit_ledger where grant_id = %L order by id $$, :'beta_ai_grant'),
  $$ values ('grant', 30::bigint, 'service_role'), ('expiry', -30::bigint, 'system') $$,
  'and the same call swept the expired grant with an expiry entry of -30 made by the system');

select tests.authenticate_as('carol@grants.test');
select is(public.get_credit_balances(:'beta_id') -> 'whatsapp', '{"available": 190, "reserved": 0, "total": 190}'::jsonb,
  'until tomorrow the whatsapp grant counts');

select tests.reset_role();
select ok(private.expire_credits(now() + interval '2 days') >= 1,
  'the expiry job run two days from now settles at least one organization');
select results_eq(format($$ select kind::text, amount, actor_role, created_at = now() + interval '2 days' from public.credit_ledger where grant_id = %L order by id $$, :'beta_whatsapp_grant'),
  $$ values ('grant', 40::bigint, 'service_role', false), ('expiry', -40::bigint, 'system', true) $$,
  'it swept the whatsapp grant with an expiry entry of -40, dated at the job''s time');
select results_eq(format($$ select remaining, expired_at = now() + interval '2 days' from public.credit_grants where id = %L $$, :'beta_whatsapp_grant'),
  $$ values (0::bigint, true) $$, 'the grant has nothing left and says when it expired');
select is((select available from public.credit_balances where organization_id = :'beta_id' and pool_key = 'whatsapp'), 150::bigint,
  'Beta''s whatsapp balance dropped from 190 to 150');
select lives_ok($$ select private.expire_credits(now() + interval '2 days') $$, 'the job can run again at the same time');
select is((select count(*)::int from public.credit_ledger where organization_id = :'beta_id' and kind = 'expiry'), 2,
  'and adds no second expiry entry to Beta''s ledger');
select results_eq(format($$ select pool_key, ok from private.verify_credit_ledger(%L) $$, :'beta_id'),
  $$ values ('ai', true), ('email', true), ('sms', true), ('whatsapp', true) $$,
  'Beta''s balances, ledger and grants reconcile after the expiries');

-- The whole allocation expires: nothing is left to spend.
update public.credit_grants set expires_at = now() - interval '1 minute' where organization_id = :'beta_id' and pool_key = 'sms';
update public.credit_balances set next_expiry_at = now() - interval '1 minute' where organization_id = :'beta_id' and pool_key = 'sms';
select tests.authenticate_as('carol@grants.test');
select is(public.get_credit_balances(:'beta_id') -> 'sms', '{"available": 0, "reserved": 0, "total": 0}'::jsonb,
  'when Beta''s sms allocation has expired, get_credit_balances shows nothing');
select is(public.consume_credits_rpc(:'beta_id', 'sms_send'),
  '{"success": false, "error": "insufficient_credits", "message": "Insufficient SMS credits", "pool": "sms", "required": 1, "available": 0}'::jsonb,
  'and an sms is refused: expired credits are never consumed');

-- ---------------------------------------------------------------------------------------------
-- The ledger is append-only
-- ---------------------------------------------------------------------------------------------
select tests.reset_role();
select min(id) as beta_entry from public.credit_ledger where organization_id = :'beta_id' \gset
select throws_ok(format($$ update public.credit_ledger set amount = 1000 where id = %s $$, :'beta_entry'),
  '42501', 'append_only', 'the superuser cannot rewrite a ledger entry');
select throws_ok(format($$ update public.credit_ledger set metadata = '{}' where id = %s $$, :'beta_entry'),
  '42501', 'append_only', 'not even its metadata');
select throws_ok(format($$ delete from public.credit_ledger where id = %s $$, :'beta_entry'),
  '42501', 'append_only', 'the superuser cannot delete a ledger entry');
select tests.authenticate_as_service_role();
select throws_ok(format($$ update public.credit_ledger set amount = 1000 where id = %s $$, :'beta_entry'),
  '42501', 'permission denied for table credit_ledger', 'the service role cannot rewrite one');
select throws_ok(format($$ delete from public.credit_ledger where organization_id = %L $$, :'beta_id'),
  '42501', 'permission denied for table credit_ledger', 'nor delete Beta''s ledger');

-- Deleting the organization keeps its ledger (a money record), detached from who caused each
-- movement and from caller metadata; its idempotency keys go.
select tests.authenticate_as('carol@grants.test');
select public.consume_credits_rpc(:'beta_id', 'email_send', 1, 'beta-key', '{"message": "carol@grants.test"}');
select tests.reset_role();
select isnt_empty(format($$ select 1 from public.credit_ledger where organization_id = %L and actor_id is not null $$, :'beta_id'),
  'Beta has ledger entries with actors');
delete from public.organizations where id = :'beta_id';
select is_empty(format($$ select 1 from public.credit_ledger where organization_id = %L and (actor_id is not null or metadata <> '{}') $$, :'beta_id'),
  'deleting Beta keeps its ledger with no actor and no metadata left');
select is_empty(format($$ select 1 from private.credit_idempotency_keys where organization_id = %L $$, :'beta_id'),
  'and its idempotency keys');
select is_empty(format($$
  select 1 from public.credit_grants where organization_id = %1$L
  union all select 1 from public.credit_balances where organization_id = %1$L
  union all select 1 from public.organization_plans where organization_id = %1$L
$$, :'beta_id'), 'and its grants, balances and plan');

select * from finish();
rollback;
