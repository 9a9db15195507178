-- 02 Sending given messages now: claim_emails with p_ids claims exactly those, however many
-- other messages are due before them (the Send Email Hook's mail is not kept waiting).
begin;
select plan(3);

-- Park what other sessions left, then queue 30 older messages and one awaited one.
update private.email_messages set next_attempt_at = 'infinity' where status in ('queued', 'sending');
select private.enqueue_email('welcome', format('older-%s@send-now.test', i), '{}', format('send-now:older:%s', i))
from generate_series(1, 30) i;
update private.email_messages set next_attempt_at = '2000-01-01' where recipient like 'older-%@send-now.test';
select private.enqueue_email('auth_magic_link', 'awaited@send-now.test', '{"magicLinkUrl": "https://x.test/m", "code": "123456"}', 'send-now:awaited') as awaited \gset

select tests.authenticate_as_service_role();
select set_eq(format($$ select recipient from private.claim_emails(5, interval '2 minutes', now(), array[%L]::uuid[]) $$, :'awaited'),
  $$ values ('awaited@send-now.test') $$, 'with p_ids only those are claimed, ahead of 30 older due messages');
select tests.reset_role();
select is((select status::text from private.email_messages where id = :'awaited'), 'sending', 'it is now being sent');
select is((select count(*)::int from private.email_messages where recipient like 'older-%@send-now.test' and status = 'queued'), 30,
  'the others wait for the dispatcher');

select * from finish();
rollback;
