-- 02 The outbox: the tenancy RPCs append their events to the outbox in the same transaction;
-- events are immutable; every consumer has its own delivery of each event it takes, which its
-- workers claim, complete and fail (with backoff, then dead, then requeued); old events no
-- consumer still needs are purged. Only service_role reaches the outbox.
--
-- Cast: alice creates Acme and invites bob (who joins, changes role, leaves) and carol (who joins
-- and is removed). The consumers 'mailer' and 'hooks' are registered by this test; their
-- deliveries are placed in January 2000 (T0 = 2000-01-01 00:00 UTC) and driven through p_now.
begin;
select plan(56);

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

-- ---------------------------------------------------------------------------------------------
-- Immutable, even for the superuser and service_role
-- ---------------------------------------------------------------------------------------------
select id as created_event from private.domain_events where organization_id = :'acme_id' and type = 'organization.created' \gset

select throws_ok(format($$ update private.domain_events set payload = '{"name": "Forged"}' where id = %s $$, :'created_event'),
  '42501', 'append_only', 'the superuser cannot rewrite an event''s payload');
select throws_ok(format($$ update private.domain_events set type = 'organization.deleted' where id = %s $$, :'created_event'),
  '42501', 'append_only', 'nor its type');
select throws_ok(format($$ update private.domain_events set created_at = created_at - interval '1 day' where id = %s $$, :'created_event'),
  '42501', 'append_only', 'nor when it happened');
select throws_ok(format($$ delete from private.domain_events where id = %s $$, :'created_event'),
  '42501', 'append_only', 'the superuser cannot delete an event');
select throws_ok($$ truncate private.domain_events cascade $$, '42501', 'append_only', 'nor truncate the outbox');

select tests.authenticate_as_service_role();
select throws_ok(format($$ update private.domain_events set payload = '{}' where id = %s $$, :'created_event'),
  '42501', 'permission denied for table domain_events', 'service_role cannot write events directly');
select isnt_empty(format($$ select 1 from private.domain_events where id = %s $$, :'created_event'),
  'service_role reads the outbox');

-- ---------------------------------------------------------------------------------------------
-- Appending (service_role)
-- ---------------------------------------------------------------------------------------------
select private.append_domain_event(null, 'test.before', '{"n": 0}') as e0 \gset
select private.register_outbox_consumer('mailer', 'Sends mail (test)', array['test.first', 'test.second', 'test.third']);
select private.register_outbox_consumer('hooks', 'Outbound webhooks (test)');
select private.append_domain_event(null, 'test.first', '{"n": 1}') as e1 \gset
select private.append_domain_event(null, 'test.second', '{"n": 2}') as e2 \gset
select private.append_domain_event(null, 'test.third', '{"n": 3}') as e3 \gset
select private.append_domain_event(:'acme_id', 'test.other', null) as e4 \gset

select results_eq(format($$ select organization_id, type, payload, actor_id from private.domain_events where id = %s $$, :'e1'),
  $$ values (null::uuid, 'test.first', '{"n": 1}'::jsonb, null::uuid) $$,
  'append_domain_event stores the event; service_role has no user, so no actor');
select is((select payload from private.domain_events where id = :'e4'), '{}'::jsonb,
  'a null payload is stored as an empty object');
select ok(:'e1'::bigint < :'e2'::bigint and :'e2'::bigint < :'e3'::bigint, 'ids grow in the order events are appended');
select throws_ok($$ select private.append_domain_event(null, 'Not A Type', '{}') $$,
  '23514', 'new row for relation "domain_events" violates check constraint "domain_events_type_check"',
  'an event type must be dotted lower-case words');
select throws_ok($$ select private.append_domain_event(null, 'test.array', '[1, 2]') $$,
  '23514', 'new row for relation "domain_events" violates check constraint "domain_events_payload_check"',
  'a payload must be a JSON object');

select results_eq($$ select consumer, event_id from private.event_deliveries where consumer in ('mailer', 'hooks') order by consumer, event_id $$,
  format($$ values ('hooks', %1$s::bigint), ('hooks', %2$s), ('hooks', %3$s), ('hooks', %4$s),
                   ('mailer', %1$s), ('mailer', %2$s), ('mailer', %3$s) $$, :'e1', :'e2', :'e3', :'e4'),
  'each consumer got a delivery of every later event it takes (hooks all, mailer its three types), none of the event before it registered');
select is_empty($$ select 1 from private.event_deliveries where consumer in ('mailer', 'hooks')
                   and (processed_at is not null or claimed_until is not null or attempts <> 0 or dead_at is not null) $$,
  'new deliveries are pending, never claimed');

-- Place the mailer's deliveries in January 2000 (delivery state may change).
select tests.reset_role();
update private.event_deliveries set next_attempt_at = '2000-01-01 00:00+00' where consumer = 'mailer' and event_id = :'e1';
update private.event_deliveries set next_attempt_at = '2000-01-01 00:01+00' where consumer = 'mailer' and event_id = :'e2';
update private.event_deliveries set next_attempt_at = '2000-01-01 00:10+00' where consumer = 'mailer' and event_id = :'e3';
update private.outbox_consumers set max_attempts = 3 where name = 'mailer';

-- ---------------------------------------------------------------------------------------------
-- Claiming, completing, failing (service_role)
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as_service_role();

select results_eq($$ select id, attempts from private.claim_events('mailer', 10, interval '5 minutes', '2000-01-01 00:02+00') $$,
  format($$ values (%s::bigint, 1), (%s::bigint, 1) $$, :'e1', :'e2'),
  'at T0+2m the mailer claims the two deliveries already due, oldest first, first attempt (the third is due at T0+10m)');
select results_eq($$ select type, payload from private.domain_events where id in (select event_id from private.event_deliveries where consumer = 'mailer' and claimed_until = '2000-01-01 00:07+00') order by id $$,
  $$ values ('test.first', '{"n": 1}'::jsonb), ('test.second', '{"n": 2}'::jsonb) $$,
  'both are leased until T0+7m');
select is_empty($$ select 1 from private.claim_events('mailer', 10, interval '5 minutes', '2000-01-01 00:03+00') $$,
  'at T0+3m nothing is claimable for the mailer: two leased, the third not due');
select isnt_empty($$ select 1 from private.claim_events('hooks', 10, interval '5 minutes', now()) $$,
  'the mailer''s claims do not touch the hooks consumer''s deliveries of the same events');

select results_eq($$ select id, attempts from private.claim_events('mailer', 1, interval '5 minutes', '2000-01-01 00:07+00') $$,
  format($$ values (%s::bigint, 2) $$, :'e1'),
  'at T0+7m the lease has run out: another worker takes over, one at a time with p_limit 1, oldest first');

select ok(private.complete_event('mailer', :'e1', '2000-01-01 00:09+00'), 'the worker completes the first');
select lives_ok(format($$ select private.fail_event('mailer', %s, 'smtp down', interval '10 minutes', '2000-01-01 00:09+00') $$, :'e2'),
  'a worker reports that the second failed, retry in 10 minutes (a Retry-After)');
select results_eq(format($$ select processed_at, last_error from private.event_deliveries where consumer = 'mailer' and event_id = %s $$, :'e1'),
  $$ values ('2000-01-01 00:09+00'::timestamptz, null::text) $$, 'the first is processed at T0+9m');
select results_eq(format($$ select claimed_until, last_error, next_attempt_at, processed_at from private.event_deliveries where consumer = 'mailer' and event_id = %s $$, :'e2'),
  $$ values (null::timestamptz, 'smtp down', '2000-01-01 00:19+00'::timestamptz, null::timestamptz) $$,
  'the failed one is released, keeps the error, and is due again at T0+19m');
select is((select processed_at from private.event_deliveries where consumer = 'hooks' and event_id = :'e1'), null::timestamptz,
  'the hooks consumer''s delivery of the same event is still pending');

select results_eq($$ select id from private.claim_events('mailer', 10, interval '5 minutes', '2000-01-01 00:15+00') $$,
  array[:'e3'::bigint], 'at T0+15m only the third is claimable: the first processed, the second backing off');
select ok(private.complete_event('mailer', :'e3', '2000-01-01 00:16+00'), 'and it is completed');
select results_eq($$ select id, attempts from private.claim_events('mailer', 10, interval '5 minutes', '2000-01-01 00:19+00') $$,
  format($$ values (%s::bigint, 2) $$, :'e2'), 'at T0+19m the failed one is claimed again, its second attempt');

-- Backoff without a Retry-After: 30 s times 2^(attempts - 1), plus up to 25% jitter.
select private.fail_event('mailer', :'e2', 'still down', null, '2000-01-01 00:20+00');
select ok((select next_attempt_at between '2000-01-01 00:21+00' and '2000-01-01 00:21:15+00'
           from private.event_deliveries where consumer = 'mailer' and event_id = :'e2'),
  'after a second failure it waits 60 seconds, plus at most 25%');
select results_eq($$ select id, attempts from private.claim_events('mailer', 10, interval '5 minutes', '2000-01-01 00:22+00') $$,
  format($$ values (%s::bigint, 3) $$, :'e2'), 'its third attempt');
select private.fail_event('mailer', :'e2', 'gone for good', null, '2000-01-01 00:23+00');
select results_eq(format($$ select dead_at, last_error from private.event_deliveries where consumer = 'mailer' and event_id = %s $$, :'e2'),
  $$ values ('2000-01-01 00:23+00'::timestamptz, 'gone for good') $$,
  'a failure at max_attempts (3 for this consumer) makes the delivery dead');
select is_empty($$ select 1 from private.claim_events('mailer', 10, interval '5 minutes', '2001-01-01 00:00+00') $$,
  'a dead delivery is never claimed again, even a year later');
select ok(private.requeue_event('mailer', :'e2', '2000-01-02 00:00+00'), 'an operator requeues it');
select results_eq($$ select id, attempts from private.claim_events('mailer', 10, interval '5 minutes', '2000-01-02 00:00+00') $$,
  format($$ values (%s::bigint, 1) $$, :'e2'), 'and it is claimed afresh');
select ok(not private.requeue_event('mailer', :'e1'), 'requeueing a delivery that is not dead does nothing');

select ok(not private.complete_event('mailer', :'e1', '2000-01-01 00:30+00'), 'completing a processed delivery twice is harmless');
select private.fail_event('mailer', :'e1', 'late failure', interval '1 minute', '2000-01-01 00:30+00');
select results_eq(format($$ select processed_at, last_error from private.event_deliveries where consumer = 'mailer' and event_id = %s $$, :'e1'),
  $$ values ('2000-01-01 00:09+00'::timestamptz, null::text) $$, 'a processed delivery is no longer touched by complete or fail');
select private.fail_event('mailer', :'e2', repeat('x', 5000), interval '1 minute', '2000-01-02 00:01+00');
select is((select char_length(last_error) from private.event_deliveries where consumer = 'mailer' and event_id = :'e2'), 2000,
  'a failure message is cut to 2000 characters');
select throws_ok($$ select * from private.claim_events('nobody') $$, 'PT404', 'consumer_not_found', 'an unknown consumer is refused');

-- ---------------------------------------------------------------------------------------------
-- Purging (service_role): events older than the retention that no consumer still needs
-- ---------------------------------------------------------------------------------------------
select private.complete_event('hooks', event_id) from private.event_deliveries where consumer = 'hooks' and event_id in (:'e1', :'e3');
select private.purge_domain_events(now() + interval '29 days');
select is((select count(*)::int from private.domain_events where id in (:'e0', :'e1', :'e2', :'e3', :'e4')), 5,
  'within the retention (30 days) nothing is purged');
select private.purge_domain_events(now() + interval '31 days');
select results_eq(format($$ select id from private.domain_events where id in (%s, %s, %s, %s, %s) order by id $$, :'e0', :'e1', :'e2', :'e3', :'e4'),
  array[:'e2'::bigint, :'e4'::bigint],
  'after it, the events every consumer finished with are gone (e0 had no consumer; e1 and e3 processed by both); e2 and e4 still pending stay');
select is_empty(format($$ select 1 from private.event_deliveries where event_id in (%s, %s) $$, :'e1', :'e3'),
  'their deliveries went with them');
select throws_ok(format($$ delete from private.domain_events where id = %s $$, :'e2'),
  '42501', 'permission denied for table domain_events', 'service_role still cannot delete events directly');

-- ---------------------------------------------------------------------------------------------
-- Who may use the outbox
-- ---------------------------------------------------------------------------------------------
select tests.reset_role();
select is_empty($$
  select p.oid::regprocedure from pg_proc p join pg_namespace n on n.oid = p.pronamespace
  where n.nspname = 'private' and p.prorettype <> 'trigger'::regtype
    and p.proname in ('append_domain_event', 'register_outbox_consumer', 'claim_events', 'complete_event', 'fail_event',
                      'requeue_event', 'purge_domain_events')
    and (has_function_privilege('authenticated', p.oid, 'execute') or has_function_privilege('anon', p.oid, 'execute')
         or not has_function_privilege('service_role', p.oid, 'execute'))
$$, 'the outbox functions are the service role''s alone');

select tests.authenticate_as('alice@events.test');
select throws_ok($$ select * from private.domain_events $$, '42501', 'permission denied for table domain_events',
  'alice cannot read the outbox (it holds invitation tokens)');
select throws_ok($$ select * from private.event_deliveries $$, '42501', 'permission denied for table event_deliveries',
  'nor the deliveries');
select throws_ok($$ select private.append_domain_event(null, 'test.forged', '{}') $$,
  '42501', 'permission denied for function append_domain_event', 'alice cannot append an event');
select throws_ok($$ select * from private.claim_events('hooks') $$,
  '42501', 'permission denied for function claim_events', 'alice cannot claim events');

select tests.clear_authentication();
select throws_ok($$ select * from private.domain_events $$, '42501', 'permission denied for schema private',
  'anon cannot reach the outbox');

select tests.reset_role();
select * from finish();
rollback;
