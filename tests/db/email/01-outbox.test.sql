-- 01 The email outbox: enqueuing (once per idempotency key, bad input refused), claiming due
-- messages under a lease, preferences and suppressions applied at claim time for non-required
-- mail, failures retried with backoff or failed or dead, requeueing, delivery events and the
-- suppressions they cause, unsubscribing, the email consumer turning events into mail once, the
-- cleanup. No tenant reads the outbox; users read and change only their own preferences.
--
-- Cast: alice owns Acme, which has bob (admin), carol (billing) and dave (member). Messages are
-- driven through p_now in January 2000, so mail other sessions queued never gets in the way.
begin;
select plan(47);

select tests.create_user('alice@email.test');
select tests.create_user('bob@email.test');
select tests.create_user('carol@email.test');
select tests.create_user('dave@email.test');
select tests.authenticate_as('alice@email.test');
select public.create_organization('Acme', 'acme-email-test') as acme_id \gset
select tests.reset_role();
insert into public.organization_members (organization_id, user_id, role) values
  (:'acme_id', tests.get_user_id('bob@email.test'), 'admin'),
  (:'acme_id', tests.get_user_id('carol@email.test'), 'billing'),
  (:'acme_id', tests.get_user_id('dave@email.test'), 'member');

-- Park every message other sessions left, so the claims below see only this test's.
update private.email_messages set next_attempt_at = 'infinity' where status in ('queued', 'sending');

-- ---------------------------------------------------------------------------------------------
-- Enqueuing
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as_service_role();
select private.enqueue_email('welcome', ' Dave@Email.Test ', '{"organizationName": "Acme", "userName": "Dave", "dashboardUrl": "https://app.test"}', 'test:welcome-dave', :'acme_id') as m1 \gset
select is(private.enqueue_email('welcome', 'dave@email.test', '{}', 'test:welcome-dave'), :'m1'::uuid,
  'the same idempotency key returns the same message, whatever the other arguments');
select results_eq(format($$ select recipient, user_id, status::text, organization_id from private.email_messages where id = %L $$, :'m1'),
  format($$ values ('dave@email.test', %L::uuid, 'queued', %L::uuid) $$, tests.get_user_id('dave@email.test'), :'acme_id'),
  'the recipient is trimmed and lower-cased, linked to its user, and the message queued');
select throws_ok($$ select private.enqueue_email('no_such_template', 'x@email.test', '{}', 'k1') $$, 'PT404', 'unknown_template',
  'an unknown template is refused');
select throws_ok($$ select private.enqueue_email('welcome', 'not an address', '{}', 'k2') $$, '22023', 'invalid_recipient',
  'a recipient that is no address is refused');
select throws_ok($$ select private.enqueue_email('welcome', 'x@email.test', '[1]', 'k3') $$, '22023', 'invalid_props',
  'props must be an object');
select throws_ok($$ select private.enqueue_email('welcome', 'x@email.test', jsonb_build_object('x', repeat('a', 70000)), 'k4') $$,
  '22023', 'invalid_props', 'of at most 64 KB');
select throws_ok($$ select private.enqueue_email('welcome', 'x@email.test', '{}', null) $$, '22023', 'invalid_idempotency_key',
  'every message needs an idempotency key');

-- ---------------------------------------------------------------------------------------------
-- Claiming, preferences, suppressions
-- ---------------------------------------------------------------------------------------------
select private.enqueue_email('auth_recovery', 'dave@email.test', '{"resetUrl": "https://x.test/r", "code": "123456"}', 'test:recovery-dave') as m2 \gset
select private.enqueue_email('low_credits', 'erin@elsewhere.test', '{}', 'test:low-erin') as m3 \gset
select private.enqueue_email('low_credits', 'frank@elsewhere.test', '{}', 'test:low-frank') as m4 \gset
select tests.reset_role();
update private.email_messages set next_attempt_at = '2000-01-01 00:00+00' where id in (:'m1', :'m2', :'m3', :'m4');
-- dave turned account mail off; erin's address is suppressed for all non-required mail (a complaint).
insert into public.email_preferences (user_id, category, subscribed) values (tests.get_user_id('dave@email.test'), 'account', false);
insert into private.email_suppressions (email, category, reason) values ('erin@elsewhere.test', null, 'complaint');

select tests.authenticate_as_service_role();
select set_eq($$ select id from private.claim_emails(10, interval '2 minutes', '2000-01-01 00:01+00') $$,
  array[:'m2'::uuid, :'m4'::uuid],
  'a claim takes the due messages that may go: dave''s required recovery mail and frank''s alert');
select results_eq(format($$ select status::text from private.email_messages where id in (%L, %L) order by id = %L desc $$, :'m1', :'m3', :'m1'),
  $$ values ('suppressed'), ('suppressed') $$,
  'dave''s welcome (account mail he turned off) and erin''s alert (suppressed address) are marked suppressed, not sent');
select results_eq(format($$ select status::text, attempts, claimed_until from private.email_messages where id = %L $$, :'m2'),
  $$ values ('sending', 1, '2000-01-01 00:03+00'::timestamptz) $$, 'a claimed message is sending, leased for 2 minutes, first attempt');
select is_empty($$ select 1 from private.claim_emails(10, interval '2 minutes', '2000-01-01 00:02+00') $$,
  'while leased, nobody else claims it');
select set_eq($$ select id, attempts from private.claim_emails(10, interval '2 minutes', '2000-01-01 00:03+00') $$,
  format($$ values (%L::uuid, 2), (%L::uuid, 2) $$, :'m2', :'m4'),
  'once the lease ran out (the dispatcher died), the messages are claimed again, second attempt');

-- ---------------------------------------------------------------------------------------------
-- Settling: sent, retried, failed, dead, requeued
-- ---------------------------------------------------------------------------------------------
select ok(private.mark_email_sent(:'m2', 'resend', 'prov-m2', '2000-01-01 00:04+00'), 'the dispatcher records the send');
select results_eq(format($$ select status::text, provider, provider_message_id, sent_at from private.email_messages where id = %L $$, :'m2'),
  $$ values ('sent', 'resend', 'prov-m2', '2000-01-01 00:04+00'::timestamptz) $$, 'sent, with the provider''s id');
select ok(not private.mark_email_sent(:'m2', 'resend', 'prov-other'), 'a second record of the send changes nothing');

select is(private.fail_email(:'m4', 'Resend: rate_limit_exceeded', false, interval '120 seconds', '2000-01-01 00:05+00'), 'queued'::private.email_status,
  'a temporary failure queues the message again');
select ok((select next_attempt_at >= '2000-01-01 00:07+00' from private.email_messages where id = :'m4'),
  'no sooner than the provider''s Retry-After');
select results_eq($$ select id, attempts from private.claim_emails(10, interval '2 minutes', '2000-01-01 00:08+00') $$,
  format($$ values (%L::uuid, 3) $$, :'m4'), 'and it is claimed again after it');
select private.fail_email(:'m4', 'Resend: application_error', false, null, '2000-01-01 00:09+00');
select ok((select next_attempt_at between '2000-01-01 00:11+00' and '2000-01-01 00:11:30+00' from private.email_messages where id = :'m4'),
  'without Retry-After the backoff is 30 s times 2^(attempts - 1), plus at most 25% jitter (120-150 s after a third attempt)');

select tests.reset_role();
update private.settings set value = '3' where key = 'email_max_attempts';
select tests.authenticate_as_service_role();
select id from private.claim_emails(10, interval '2 minutes', '2000-01-01 00:12+00');
select is(private.fail_email(:'m4', 'Resend: 503', false, null, '2000-01-01 00:13+00'), 'dead'::private.email_status,
  'a temporary failure once the attempts are used up (3 allowed here) makes the message dead');
select lives_ok(format($$ select private.requeue_email(%L, '2000-01-01 01:00+00') $$, :'m4'), 'an operator requeues it');
select results_eq(format($$ select status::text, attempts from private.email_messages where id = %L $$, :'m4'),
  $$ values ('queued', 0) $$, 'queued afresh');
select id from private.claim_emails(10, interval '2 minutes', '2000-01-01 01:00+00');
select is(private.fail_email(:'m4', 'Resend: validation_error: invalid from', true, null, '2000-01-01 01:01+00'), 'failed'::private.email_status,
  'a permanent failure fails the message at once, attempts left or not');
select throws_ok(format($$ select private.requeue_email(%L) $$, :'m2'), 'PT409', 'not_requeueable', 'a sent message cannot be requeued');
select throws_ok($$ select private.requeue_email(gen_random_uuid()) $$, 'PT404', 'message_not_found', 'nor one that does not exist');

-- ---------------------------------------------------------------------------------------------
-- Delivery events
-- ---------------------------------------------------------------------------------------------
select ok(private.record_email_event('prov-m2', 'delivered', true, '2000-01-01 00:06+00'), 'a delivered event for a known message is recorded');
select results_eq(format($$ select status::text, delivered_at from private.email_messages where id = %L $$, :'m2'),
  $$ values ('delivered', '2000-01-01 00:06+00'::timestamptz) $$, 'the message is delivered');
select ok(not private.record_email_event('prov-unknown', 'delivered'), 'an event for a message we do not know is ignored');
select ok(private.record_email_event('prov-m2', 'bounced', false), 'a soft bounce is recorded');
select is_empty($$ select 1 from private.email_suppressions where email = 'dave@email.test' $$, 'but suppresses nothing');
select private.record_email_event('prov-m2', 'complained');
select results_eq($$ select category, reason::text from private.email_suppressions where email = 'dave@email.test' $$,
  $$ values (null::public.email_category, 'complaint') $$, 'a complaint suppresses the address for all non-required mail');
select ok(private.receive_webhook('resend', 'msg_1'), 'a webhook delivery is received the first time');
select ok(not private.receive_webhook('resend', 'msg_1'), 'and recognised as a replay the second');

-- ---------------------------------------------------------------------------------------------
-- Unsubscribing
-- ---------------------------------------------------------------------------------------------
select private.unsubscribe_email('Bob@Email.Test', 'usage_alerts');
select results_eq($$ select subscribed from public.email_preferences where user_id = tests.get_user_id('bob@email.test') and category = 'usage_alerts' $$,
  $$ values (false) $$, 'unsubscribing a user''s address turns their preference off');
select private.unsubscribe_email('stranger@elsewhere.test', 'account');
select results_eq($$ select category::text, reason::text from private.email_suppressions where email = 'stranger@elsewhere.test' $$,
  $$ values ('account', 'unsubscribed') $$, 'an address without a user is suppressed for that category');

-- ---------------------------------------------------------------------------------------------
-- The email consumer: domain events become mail once
-- ---------------------------------------------------------------------------------------------
select tests.reset_role();
-- Only this test's events: the deliveries other sessions left wait.
update private.event_deliveries set next_attempt_at = 'infinity' where consumer = 'email' and processed_at is null;
select tests.authenticate_as('alice@email.test');
select public.invite_member(:'acme_id', 'newcomer@email.test', 'member') ->> 'token' as invite_token \gset
select tests.reset_role();
select private.append_domain_event(:'acme_id', 'credits.low', '{"pool": "ai", "available": 15, "threshold": 20}');
select is(private.email_from_events(), 4, 'one invitation and three low-credit alerts were enqueued');
select results_eq(format($$ select template, props ->> 'acceptUrl', props ->> 'organizationName' from private.email_messages
                            where recipient = 'newcomer@email.test' $$),
  format($$ values ('organization_invitation', 'http://127.0.0.1:3000/invitations/accept?token=%s', 'Acme') $$, :'invite_token'),
  'the invitation goes to the invitee with an accept link built from site_url');
select set_eq($$ select recipient from private.email_messages where template = 'low_credits' and organization_id = (select id from public.organizations where slug = 'acme-email-test') $$,
  array['alice@email.test', 'bob@email.test', 'carol@email.test'],
  'the alert goes to the owner, the admin and the billing member, not to the plain member');
select is(private.email_from_events(), 0, 'processing again enqueues nothing: each event became mail once');

-- ---------------------------------------------------------------------------------------------
-- Cleanup and access
-- ---------------------------------------------------------------------------------------------
select cmp_ok(private.purge_sent_emails(now() + interval '31 days'), '>=', 4::bigint, 'finished messages older than 30 days are purged');
select isnt_empty($$ select 1 from private.email_messages where recipient = 'newcomer@email.test' $$, 'queued ones never');

select tests.authenticate_as('dave@email.test');
select throws_ok($$ select * from private.email_messages $$, '42501', 'permission denied for table email_messages',
  'no signed-in user reads the outbox');
select is((select count(*)::int from public.email_preferences), 1, 'dave sees his own preference only');
select lives_ok($$ update public.email_preferences set subscribed = true where category = 'account' $$, 'and changes it');
select is_empty($$ update public.email_preferences set subscribed = false where user_id = tests.get_user_id('bob@email.test') returning 1 $$,
  'but cannot change bob''s');
select throws_ok(format($$ insert into public.email_preferences (user_id, category, subscribed) values (%L, 'marketing', false) $$, tests.get_user_id('bob@email.test')),
  '42501', null, 'nor add one for bob');
select tests.clear_authentication();
select throws_ok($$ select * from public.email_preferences $$, '42501', null, 'anon reads no preferences');
select tests.reset_role();

select * from finish();
rollback;
