-- 06 Domain events: the tenancy RPCs append their events to the outbox in the same transaction;
-- events are append-only; consumers claim, complete and fail them; old processed events are
-- purged. Only service_role reaches the outbox.
--
-- Cast: alice creates Acme and invites bob (who joins, changes role, leaves) and carol (who joins
-- and is removed). The outbox mechanics run in January 2000 (T0 = 2000-01-01 00:00 UTC), driven
-- through p_now, so rows other sessions left in the outbox never get in the way.
begin;
select plan(51);

select tests.create_user('alice@events.test');
select tests.create_user('bob@events.test');
select tests.create_user('carol@events.test');

-- ---------------------------------------------------------------------------------------------
-- The tenancy RPCs append events
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('alice@events.test');
select public.create_organization('Acme', 'acme-events-test') as acme_id \gset
select public.invite_member(:'acme_id', 'bob@events.test', 'admin') as bob_invitation \gset

select tests.authenticate_as('bob@events.test');
select public.accept_invitation(:'bob_invitation'::jsonb ->> 'token');

select tests.authenticate_as('alice@events.test');
select public.update_member_role(:'acme_id', tests.get_user_id('bob@events.test'), 'member');
select public.update_member_role(:'acme_id', tests.get_user_id('bob@events.test'), 'member');
select public.invite_member(:'acme_id', 'carol@events.test', 'member') ->> 'token' as carol_token \gset

select tests.authenticate_as('carol@events.test');
select public.accept_invitation(:'carol_token');

select tests.authenticate_as('alice@events.test');
select public.remove_member(:'acme_id', tests.get_user_id('carol@events.test'));

select tests.authenticate_as('carol@events.test');
select throws_ok(format($$ select public.invite_member(%L, 'mallory@events.test', 'owner') $$, :'acme_id'),
  '42501', 'not_authorized', 'carol, removed, can no longer invite (a refused call)');

select tests.authenticate_as('bob@events.test');
select public.leave_organization(:'acme_id');

select tests.reset_role();
select results_eq(format($$
  select type, actor_id from private.domain_events where organization_id = %L order by id
$$, :'acme_id'), $$ values
  ('organization.created', tests.get_user_id('alice@events.test')),
  ('member.invited', tests.get_user_id('alice@events.test')),
  ('member.joined', tests.get_user_id('bob@events.test')),
  ('member.role_changed', tests.get_user_id('alice@events.test')),
  ('member.invited', tests.get_user_id('alice@events.test')),
  ('member.joined', tests.get_user_id('carol@events.test')),
  ('member.removed', tests.get_user_id('alice@events.test')),
  ('member.left', tests.get_user_id('bob@events.test'))
$$, 'each tenancy change appended one event, in order, for Acme, with the acting user; '
    'setting an unchanged role and the refused call appended nothing');

select is((select payload from private.domain_events where organization_id = :'acme_id' and type = 'organization.created'),
  jsonb_build_object('organization_id', :'acme_id', 'name', 'Acme', 'slug', 'acme-events-test',
                     'created_by', tests.get_user_id('alice@events.test')),
  'organization.created carries the organization''s id, name, slug and creator');

select is((select payload from private.domain_events where organization_id = :'acme_id' and type = 'member.invited' order by id limit 1),
  :'bob_invitation'::jsonb || jsonb_build_object('invited_by', tests.get_user_id('alice@events.test')),
  'member.invited carries what the inviter got back, the token included (for the email), and who invited');

select is((select payload from private.domain_events where organization_id = :'acme_id' and type = 'member.joined' order by id limit 1),
  jsonb_build_object('user_id', tests.get_user_id('bob@events.test'), 'role', 'admin',
                     'invitation_id', :'bob_invitation'::jsonb ->> 'invitation_id'),
  'member.joined carries the new member, the role and the invitation used');

select is((select payload from private.domain_events where organization_id = :'acme_id' and type = 'member.role_changed'),
  jsonb_build_object('user_id', tests.get_user_id('bob@events.test'), 'old_role', 'admin', 'new_role', 'member',
                     'changed_by', tests.get_user_id('alice@events.test')),
  'member.role_changed carries the member, the old and new roles and who changed them');

select is((select payload from private.domain_events where organization_id = :'acme_id' and type = 'member.removed'),
  jsonb_build_object('user_id', tests.get_user_id('carol@events.test'), 'role', 'member',
                     'removed_by', tests.get_user_id('alice@events.test')),
  'member.removed carries the removed member, their role and who removed them');

select is((select payload from private.domain_events where organization_id = :'acme_id' and type = 'member.left'),
  jsonb_build_object('user_id', tests.get_user_id('bob@events.test'), 'role', 'member'),
  'member.left carries the member who left and their role');

select is_empty(format($$
  select 1 from private.domain_events
  where organization_id = %L and (processed_at is not null or claimed_at is not null or attempts <> 0 or available_at <> created_at)
$$, :'acme_id'), 'new events are pending: available at once, never claimed, never processed');

-- ---------------------------------------------------------------------------------------------
-- Append-only, even for the superuser and service_role
-- ---------------------------------------------------------------------------------------------
select id as created_event from private.domain_events where organization_id = :'acme_id' and type = 'organization.created' \gset

select throws_ok(format($$ update private.domain_events set payload = '{"name": "Forged"}' where id = %s $$, :'created_event'),
  '42501', 'append_only', 'the superuser cannot rewrite an event''s payload');
select throws_ok(format($$ update private.domain_events set type = 'organization.deleted' where id = %s $$, :'created_event'),
  '42501', 'append_only', 'nor its type');
select throws_ok(format($$ update private.domain_events set organization_id = gen_random_uuid() where id = %s $$, :'created_event'),
  '42501', 'append_only', 'nor its organization');
select throws_ok(format($$ update private.domain_events set actor_id = null where id = %s $$, :'created_event'),
  '42501', 'append_only', 'nor its actor');
select throws_ok(format($$ update private.domain_events set created_at = created_at - interval '1 day' where id = %s $$, :'created_event'),
  '42501', 'append_only', 'nor when it happened');
select throws_ok(format($$ delete from private.domain_events where id = %s $$, :'created_event'),
  '42501', 'append_only', 'the superuser cannot delete an event');
select lives_ok(format($$
  update private.domain_events set attempts = 3, last_error = 'boom', available_at = now() + interval '1 hour',
    claimed_at = now(), claimed_by = 'someone' where id = %s
$$, :'created_event'), 'the delivery columns can change');

select tests.authenticate_as_service_role();
select throws_ok(format($$ update private.domain_events set payload = '{}' where id = %s $$, :'created_event'),
  '42501', 'append_only', 'service_role cannot rewrite an event either');
select throws_ok(format($$ delete from private.domain_events where id = %s $$, :'created_event'),
  '42501', 'append_only', 'service_role cannot delete an event outside the purge');
select isnt_empty(format($$ select 1 from private.domain_events where id = %s $$, :'created_event'),
  'service_role reads the outbox');

-- ---------------------------------------------------------------------------------------------
-- Appending directly (service_role)
-- ---------------------------------------------------------------------------------------------
select private.append_domain_event(null, 'test.first', '{"n": 1}') as e1 \gset
select private.append_domain_event(null, 'test.second', '{"n": 2}') as e2 \gset
select private.append_domain_event(null, 'test.third', '{"n": 3}') as e3 \gset
select private.append_domain_event(:'acme_id', 'test.empty', null) as e4 \gset

select results_eq(format($$ select organization_id, type, payload, actor_id from private.domain_events where id = %s $$, :'e1'),
  $$ values (null::uuid, 'test.first', '{"n": 1}'::jsonb, null::uuid) $$,
  'append_domain_event stores the event; service_role has no user, so no actor');
select is((select payload from private.domain_events where id = :'e4'), '{}'::jsonb,
  'a null payload is stored as an empty object');
select ok(:'e1'::bigint < :'e2'::bigint and :'e2'::bigint < :'e3'::bigint, 'ids grow in the order events are appended');
select throws_ok($$ select private.append_domain_event(null, 'Not A Type', '{}') $$,
  '23514', 'new row for relation "domain_events" violates check constraint "domain_events_type_check"',
  'an event type must be dotted lower-case words');
select throws_ok($$ select private.append_domain_event(null, 'undotted', '{}') $$,
  '23514', 'new row for relation "domain_events" violates check constraint "domain_events_type_check"',
  'an event type needs at least one dot');
select throws_ok($$ select private.append_domain_event(null, 'test.array', '[1, 2]') $$,
  '23514', 'new row for relation "domain_events" violates check constraint "domain_events_payload_check"',
  'a payload must be a JSON object');

-- Place the three test events in January 2000 (delivery columns, so allowed).
select tests.reset_role();
update private.domain_events set available_at = '2000-01-01 00:00+00' where id = :'e1';
update private.domain_events set available_at = '2000-01-01 00:01+00' where id = :'e2';
update private.domain_events set available_at = '2000-01-01 00:10+00' where id = :'e3';

-- ---------------------------------------------------------------------------------------------
-- Claiming, completing, failing (service_role)
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as_service_role();

select results_eq($$ select id from private.claim_domain_events('mailer', 10, interval '5 minutes', '2000-01-01 00:02+00') $$,
  array[:'e1'::bigint, :'e2'::bigint],
  'at T0+2m the mailer claims the two events already available, oldest first (the third is due at T0+10m)');
select results_eq(format($$ select claimed_by, claimed_at, attempts from private.domain_events where id in (%s, %s) $$, :'e1', :'e2'),
  $$ values ('mailer', '2000-01-01 00:02+00'::timestamptz, 1), ('mailer', '2000-01-01 00:02+00'::timestamptz, 1) $$,
  'both are marked claimed by the mailer at T0+2m, first attempt');

select is_empty($$ select 1 from private.claim_domain_events('mailer', 10, interval '5 minutes', '2000-01-01 00:03+00') $$,
  'at T0+3m nothing is claimable: the two are leased, the third not yet due');
select is_empty($$ select 1 from private.claim_domain_events('webhooks', 10, interval '5 minutes', '2000-01-01 00:07+00') $$,
  'at exactly the end of the lease (T0+7m) the claim still holds');

select results_eq($$ select id, attempts, claimed_by from private.claim_domain_events('mailer-2', 1, interval '5 minutes', '2000-01-01 00:08+00') $$,
  format($$ values (%s::bigint, 2, 'mailer-2') $$, :'e1'),
  'at T0+8m the lease has run out: another consumer takes over, one event at a time with p_limit 1, oldest first');

select lives_ok(format($$ select private.complete_domain_event(%s, '2000-01-01 00:09+00') $$, :'e1'),
  'the consumer completes the first event');
select lives_ok(format($$ select private.fail_domain_event(%s, 'smtp down', interval '10 minutes', '2000-01-01 00:09+00') $$, :'e2'),
  'a consumer reports that the second event failed');

select results_eq(format($$ select processed_at, last_error from private.domain_events where id = %s $$, :'e1'),
  $$ values ('2000-01-01 00:09+00'::timestamptz, null::text) $$,
  'the completed event is processed at T0+9m');
select results_eq(format($$ select claimed_at, claimed_by, last_error, available_at, processed_at from private.domain_events where id = %s $$, :'e2'),
  $$ values (null::timestamptz, null::text, 'smtp down', '2000-01-01 00:19+00'::timestamptz, null::timestamptz) $$,
  'the failed event is released, keeps the error, and is due again after the back-off (T0+19m)');

select results_eq($$ select id from private.claim_domain_events('mailer', 10, interval '5 minutes', '2000-01-01 00:15+00') $$,
  array[:'e3'::bigint],
  'at T0+15m only the third event is claimable: the first is processed, the second backing off');
select results_eq($$ select id, attempts from private.claim_domain_events('mailer', 10, interval '5 minutes', '2000-01-01 00:19+00') $$,
  format($$ values (%s::bigint, 2) $$, :'e2'),
  'at T0+19m the failed event is claimed again, its second attempt (the third is still leased)');

select lives_ok(format($$ select private.complete_domain_event(%s, '2000-01-01 00:30+00') $$, :'e1'),
  'completing an event twice is harmless');
select lives_ok(format($$ select private.fail_domain_event(%s, 'late failure', interval '1 minute', '2000-01-01 00:30+00') $$, :'e1'),
  'failing a processed event is harmless');
select results_eq(format($$ select processed_at, last_error, claimed_by from private.domain_events where id = %s $$, :'e1'),
  $$ values ('2000-01-01 00:09+00'::timestamptz, null::text, 'mailer-2') $$,
  'a processed event is no longer touched by complete or fail');

select private.fail_domain_event(:'e3', repeat('x', 5000), interval '1 minute', '2000-01-01 00:16+00');
select is((select char_length(last_error) from private.domain_events where id = :'e3'), 2000,
  'a failure message is cut to 2000 characters');

-- ---------------------------------------------------------------------------------------------
-- Purging (service_role)
-- ---------------------------------------------------------------------------------------------
select is(private.purge_domain_events(interval '30 days', '2000-01-31 00:09+00'), 0::bigint,
  'an event processed exactly 30 days ago is kept');
select is(private.purge_domain_events(interval '30 days', '2000-02-01 00:00+00'), 1::bigint,
  'a day later the purge deletes the one event processed more than 30 days ago');
select results_eq(format($$ select id from private.domain_events where id in (%s, %s, %s) order by id $$, :'e1', :'e2', :'e3'),
  array[:'e2'::bigint, :'e3'::bigint],
  'the pending events remain, however old');
select throws_ok(format($$ delete from private.domain_events where id = %s $$, :'e2'),
  '42501', 'append_only', 'after a purge, direct deletes are refused again');

-- ---------------------------------------------------------------------------------------------
-- Who may use the outbox
-- ---------------------------------------------------------------------------------------------
select tests.reset_role();
select is_empty($$
  select f from (values
    ('private.append_domain_event(uuid, text, jsonb)'),
    ('private.claim_domain_events(text, integer, interval, timestamptz)'),
    ('private.complete_domain_event(bigint, timestamptz)'),
    ('private.fail_domain_event(bigint, text, interval, timestamptz)'),
    ('private.purge_domain_events(interval, timestamptz)')) as t (f)
  where has_function_privilege('authenticated', f::regprocedure, 'execute')
     or has_function_privilege('anon', f::regprocedure, 'execute')
$$, 'neither authenticated nor anon may execute any outbox function');
select is_empty($$
  select f from (values
    ('private.append_domain_event(uuid, text, jsonb)'),
    ('private.claim_domain_events(text, integer, interval, timestamptz)'),
    ('private.complete_domain_event(bigint, timestamptz)'),
    ('private.fail_domain_event(bigint, text, interval, timestamptz)'),
    ('private.purge_domain_events(interval, timestamptz)')) as t (f)
  where not has_function_privilege('service_role', f::regprocedure, 'execute')
$$, 'service_role may execute every outbox function');

select tests.authenticate_as('alice@events.test');
select throws_ok($$ select * from private.domain_events $$, '42501', 'permission denied for table domain_events',
  'alice cannot read the outbox (it holds invitation tokens)');
select throws_ok($$ select private.append_domain_event(null, 'test.forged', '{}') $$,
  '42501', 'permission denied for function append_domain_event', 'alice cannot append an event');
select throws_ok($$ select * from private.claim_domain_events('alice') $$,
  '42501', 'permission denied for function claim_domain_events', 'alice cannot claim events');
select throws_ok($$ select private.purge_domain_events(interval '0 days') $$,
  '42501', 'permission denied for function purge_domain_events', 'alice cannot purge events');

select tests.clear_authentication();
select throws_ok($$ select * from private.domain_events $$, '42501', 'permission denied for schema private',
  'anon cannot reach the outbox');

select tests.reset_role();
select * from finish();
rollback;
