-- 05 The lifecycle: inactivity policies, trackers through time (warned, purge scheduled, used
-- again and cancelled), purge operations (every transition allowed and refused, who may move
-- them), the preparation's export, execution in batches (interrupted and resumed, money records
-- kept), a cancelled purge deleting nothing, retention respecting legal holds.
--
-- Cast: alice owns Acme (starter) with bob (member); erin owns Globex; oscar is a platform admin.
begin;
select plan(45);

select tests.create_user('alice@lifecycle.test');
select tests.create_user('bob@lifecycle.test');
select tests.create_user('erin@lifecycle.test');
select tests.create_user('oscar@lifecycle.test', '{"platform_admin": true}');
select tests.authenticate_as('alice@lifecycle.test');
select public.create_organization('Acme', 'acme-lifecycle-test') as acme \gset
select tests.authenticate_as('erin@lifecycle.test');
select public.create_organization('Globex', 'globex-lifecycle-test') as globex \gset
select tests.reset_role();
insert into public.organization_members (organization_id, user_id, role) values (:'acme', tests.get_user_id('bob@lifecycle.test'), 'member');
-- Only Acme goes idle (Globex's purge below is an operator's request).
update public.inactivity_trackers set last_activity_at = now() + interval '100 years' where organization_id <> :'acme';
update public.inactivity_trackers set last_activity_at = '2027-01-01' where organization_id = :'acme';

-- ---------------------------------------------------------------------------------------------
-- Policies and trackers
-- ---------------------------------------------------------------------------------------------
select is((select count(*)::int from public.inactivity_trackers where organization_id = :'acme'), 1, 'a new organization is tracked');
select results_eq(format($$ select warn_after, purge_after, grace_period from private.inactivity_policy_of(%L) $$, :'acme'),
  $$ values (interval '90 days', interval '180 days', interval '30 days') $$, 'starter has the default policy');
select tests.authenticate_as('bob@lifecycle.test');
select is((select count(*)::int from public.inactivity_trackers), 0, 'a plain member does not read the tracker');
select tests.authenticate_as('alice@lifecycle.test');
select is((select count(*)::int from public.inactivity_trackers), 1, 'the owner does');
select tests.authenticate_as_service_role();

select private.check_inactivity('2027-03-01');
select is((select state from public.inactivity_trackers where organization_id = :'acme'), 'active', 'two months without activity: nothing yet');
select private.check_inactivity('2027-04-02');
select is((select state from public.inactivity_trackers where organization_id = :'acme'), 'warned', 'after 90 days: warned');
select is((select count(*)::int from private.email_messages where template = 'inactivity_warning' and organization_id = :'acme'), 1,
  'the owner is mailed (once)');
select private.check_inactivity('2027-04-03');
select is((select warnings_sent from public.inactivity_trackers where organization_id = :'acme'), 1, 'not again the next day');
select private.check_inactivity('2027-07-01');
select results_eq(format($$ select status::text, scheduled_for from public.purge_operations where organization_id = %L $$, :'acme'),
  $$ values ('scheduled', '2027-07-31 00:00+00'::timestamptz) $$, 'after 180 days a purge is scheduled, 30 days out');
select is((select count(*)::int from private.email_messages where template = 'data_purge_scheduled' and organization_id = :'acme'), 1,
  'and the owner is told');

-- Used again: the scheduled purge is cancelled.
select private.record_activity(:'acme', tests.get_user_id('bob@lifecycle.test'), 'sign_in', '2027-07-05');
select private.check_inactivity('2027-07-06');
select results_eq(format($$ select status::text, cancel_reason from public.purge_operations where organization_id = %L $$, :'acme'),
  $$ values ('cancelled', 'The organization was used again') $$, 'new activity cancels it');
select is((select state from public.inactivity_trackers where organization_id = :'acme'), 'active', 'and the tracker starts over');

-- ---------------------------------------------------------------------------------------------
-- Requests, transitions, who may
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('bob@lifecycle.test');
select throws_ok(format($$ select public.request_organization_purge(%L, 'bye') $$, :'acme'), '42501', 'not_authorized',
  'a plain member cannot ask for the purge');
select tests.authenticate_as('alice@lifecycle.test');
select throws_ok(format($$ select public.request_organization_purge(%L, '') $$, :'acme'), '22023', 'reason_required', 'a reason is needed');
select throws_ok(format($$ select public.request_organization_purge(%L, 'bye', now()) $$, :'acme'), '42501', 'not_authorized',
  'an owner cannot choose the time');
select (public.request_organization_purge(:'acme', 'We are closing down')).id as p1 \gset
select is((select status::text from public.purge_operations where id = :'p1'), 'scheduled', 'the owner''s request is scheduled after the grace period');
select throws_ok(format($$ select public.request_organization_purge(%L, 'again') $$, :'acme'), 'PT409', 'purge_in_progress', 'one at a time');
select tests.reset_role();
select throws_ok(format($$ update public.purge_operations set status = 'completed' where id = %L $$, :'p1'), 'P0001', 'invalid_purge_transition',
  'scheduled cannot complete');
select throws_ok(format($$ update public.purge_operations set status = 'executing' where id = %L $$, :'p1'), 'P0001', 'invalid_purge_transition',
  'nor execute without its export, unless forced');
select tests.authenticate_as('erin@lifecycle.test');
select throws_ok(format($$ select public.cancel_organization_purge(%L, 'not yours') $$, :'p1'), '42501', 'not_authorized',
  'a stranger cannot cancel it');
select throws_ok(format($$ select public.force_organization_purge(%L, 'now') $$, :'p1'), '42501', 'not_authorized', 'nor force it');
select tests.authenticate_as('alice@lifecycle.test');
select is((public.cancel_organization_purge(:'p1', 'Changed our minds')).status::text, 'cancelled', 'the owner cancels it');
select tests.reset_role();
select throws_ok(format($$ update public.purge_operations set status = 'scheduled' where id = %L $$, :'p1'), 'P0001', 'invalid_purge_transition',
  'a cancelled purge stays cancelled');
select is((select count(*)::int from public.organizations where id = :'acme'), 1, 'and nothing was deleted');
select cmp_ok((select count(*)::int from public.audit_log where table_name = 'public.purge_operations' and row_id = :'p1'), '>=', 3,
  'every step is in the audit log');

-- ---------------------------------------------------------------------------------------------
-- Preparation and execution in batches
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('oscar@lifecycle.test');
select (public.request_organization_purge(:'globex', 'Operator cleanup', '2027-01-01')).id as p2 \gset
select tests.authenticate_as_service_role();
select is(private.prepare_purges(), 1, 'preparation asks for the organization''s export');
select tests.reset_role();
select is((select scope from private.data_exports where id = (select export_id from public.purge_operations where id = :'p2')), 'organization',
  'an export of the whole organization');
update private.data_exports set status = 'ready' where id = (select export_id from public.purge_operations where id = :'p2');
select tests.authenticate_as_service_role();
select is(private.prepare_purges(), 1, 'once it is ready');
select is((select status::text from public.purge_operations where id = :'p2'), 'export_ready', 'the purge is export_ready');
select is(private.start_due_purges('2027-01-02'), 1, 'past its time it starts');
select tests.reset_role();
-- Money the organization leaves behind stays: a consumption in its ledger.
insert into public.credit_grants (organization_id, pool_key, kind, amount, remaining) values (:'globex', 'sms', 'manual', 5, 5);
select tests.authenticate_as_service_role();
select is((private.purge_batch(:'p2', 1) ->> 'rows')::int, 1, 'a batch deletes a few rows of one table');
select is((select status::text from public.purge_operations where id = :'p2'), 'executing', 'interrupted, it stays executing');
select ok((select count(*) from jsonb_object_keys((select progress from public.purge_operations where id = :'p2'))) >= 1, 'with its progress');
-- Resumed: batches until done.
select private.purge_batch(:'p2', 1000) from generate_series(1, 60);
select is((select count(*)::int from public.organizations where id = :'globex'), 0, 'the organization is gone');
select is((private.purge_batch(:'p2', 1000) ->> 'done')::boolean, true, 'and the purge is done');
select ok(exists (select 1 from private.deleted_organizations where organization_id = :'globex'), 'its tombstone stays');
select cmp_ok((select count(*)::int from public.credit_ledger where organization_id = :'globex'), '>', 0, 'and its money records');
select tests.reset_role();
select private.finish_purge(:'p2');
select is((select status::text from public.purge_operations where id = :'p2'), 'completed', 'completed');
select is((select count(*)::int from private.email_messages where template = 'data_purge_completed' and recipient = 'erin@lifecycle.test'), 1,
  'its former owner is told');

-- ---------------------------------------------------------------------------------------------
-- Retention respects legal holds
-- ---------------------------------------------------------------------------------------------
insert into private.legal_holds (organization_id, reason) values (:'globex', 'Litigation');
update private.deleted_organizations set records_retained_until = now() - interval '1 day' where organization_id = :'globex';
select private.purge_deleted_organization_records(now(), 100000);
select cmp_ok((select count(*)::int from public.credit_ledger where organization_id = :'globex'), '>', 0, 'a legal hold keeps the records past their retention');

-- A hold on a live organization: no purge of it runs, its mail outlives its retention.
insert into private.legal_holds (organization_id, reason) values (:'acme', 'Regulator inquiry') returning id as acme_hold \gset
select tests.authenticate_as('oscar@lifecycle.test');
select (public.request_organization_purge(:'acme', 'Operator cleanup', '2027-01-01')).id as p3 \gset
select throws_ok(format($$ select public.force_organization_purge(%L, 'now') $$, :'p3'), 'P0001', 'legal_hold',
  'a purge cannot be forced under a legal hold');
select tests.reset_role();
select private.move_purge(:'p3', 'export_ready', '{}', now());
select is(private.start_due_purges('2027-01-02'), 0, 'nor does a due one start');
update private.legal_holds set released_at = now() where id = :'acme_hold';
select is(private.start_due_purges('2027-01-02'), 1, 'released, it starts');
insert into private.legal_holds (organization_id, reason) values (:'acme', 'Second inquiry');
select ok(:'p3' <> all (array(select private.executing_purges())), 'and a hold placed while it runs stops it');
insert into private.email_messages (recipient, organization_id, template, props, idempotency_key, status, created_at)
values ('bob@lifecycle.test', :'acme', 'welcome', '{}', 'lifecycle-hold-test', 'sent', now() - interval '1 year');
select private.purge_sent_emails();
select is((select count(*)::int from private.email_messages where idempotency_key = 'lifecycle-hold-test'), 1,
  'the organization''s sent mail outlives its retention while the hold stands');

select * from finish();
rollback;
