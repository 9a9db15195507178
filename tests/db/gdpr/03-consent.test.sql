-- 03 Consent: the purposes and their defaults; record_consent for oneself, for an organization's
-- contacts (owners and admins only) and by the service role, with every check; who reads which
-- records (both ways); the history is append-only, only the person's identity may leave; the
-- current state in one query (get_consents, current_consents, has_consent); mail follows consent
-- (private.email_allowed), every preference write and one-click unsubscribe records it, and
-- recording consent sets the preference; each record is audited.
--
-- Cast: alice owns Acme, with bob (admin) and carol (member); dave belongs nowhere; erin owns
-- Globex. contact@crm.test and stranger@elsewhere.test are no users.
begin;
select plan(83);

select tests.create_user('alice@consent.test');
select tests.create_user('bob@consent.test');
select tests.create_user('carol@consent.test');
select tests.create_user('dave@consent.test');
select tests.create_user('erin@consent.test');
select tests.authenticate_as('alice@consent.test');
select public.create_organization('Acme', 'acme-consent-test') as acme \gset
select tests.authenticate_as('erin@consent.test');
select public.create_organization('Globex', 'globex-consent-test') as globex \gset
select tests.reset_role();
insert into public.organization_members (organization_id, user_id, role) values
  (:'acme', tests.get_user_id('bob@consent.test'), 'admin'),
  (:'acme', tests.get_user_id('carol@consent.test'), 'member');
select tests.get_user_id('alice@consent.test') as alice \gset
select tests.get_user_id('carol@consent.test') as carol \gset
select tests.get_user_id('dave@consent.test') as dave \gset

-- Read past RLS (the test's own role), whoever is acting.
create function pg_temp.records(p_user uuid, p_purpose text) returns bigint language sql security definer as $$
  select count(*) from public.consent_records where user_id = p_user and purpose = p_purpose
$$;
grant execute on all functions in schema pg_temp to public;

-- ---------------------------------------------------------------------------------------------
-- Purposes
-- ---------------------------------------------------------------------------------------------
select results_eq($$ select key, default_granted, email_category::text from public.consent_purposes order by key $$,
  $$ values ('account_email', true, 'account'), ('marketing_email', false, 'marketing'), ('product_analytics', false, null),
            ('usage_alert_email', true, 'usage_alerts') $$,
  'four purposes: marketing and analytics are opt-in, usage alerts and account mail opt-out (they mirror the mail categories)');
select tests.authenticate_as('dave@consent.test');
select is((select count(*)::int from public.consent_purposes), 4, 'signed-in users read the purposes');
select throws_ok($$ insert into public.consent_purposes (key, name, description) values ('x', 'x', 'x') $$, '42501', null,
  'but do not add any');
select tests.clear_authentication();
select throws_ok($$ select * from public.consent_purposes $$, '42501', null, 'anon reads nothing');

-- ---------------------------------------------------------------------------------------------
-- One's own consent, and the current state
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('alice@consent.test');
select results_eq($$ select purpose, granted, recorded_at, source from public.get_consents() $$,
  $$ values ('account_email', true, null::timestamptz, null::text), ('marketing_email', false, null, null),
            ('product_analytics', false, null, null), ('usage_alert_email', true, null, null) $$,
  'a user who never chose has every purpose''s default');
select public.record_consent('marketing_email', 'given', 'settings', 'privacy-2026-01') as given \gset
select results_eq(format($$ select user_id, email, organization_id, purpose, status, source, policy_version, recorded_by
                            from public.consent_records where id = (%L::public.consent_records).id $$, :'given'),
  format($$ values (%L::uuid, 'alice@consent.test', null::uuid, 'marketing_email', 'given', 'settings', 'privacy-2026-01', %L::uuid) $$, :'alice', :'alice'),
  'a user records their own consent: their id and address, the source and policy version, recorded by them');
select results_eq($$ select granted, source, policy_version from public.get_consents() where purpose = 'marketing_email' $$,
  $$ values (true, 'settings', 'privacy-2026-01') $$, 'get_consents shows it');
select lives_ok($$ select public.record_consent('marketing_email', 'revoked', 'settings') $$, 'and revokes it');
select results_eq($$ select granted, source, policy_version from public.get_consents() where purpose = 'marketing_email' $$,
  $$ values (false, 'settings', null::text) $$, 'the latest record is the current state');
select results_eq($$ select status from public.consent_records where user_id = auth.uid() and purpose = 'marketing_email' order by seq $$,
  $$ values ('given'), ('revoked') $$, 'the history keeps both');
select lives_ok($$ select public.record_consent('product_analytics', 'given', 'signup_form', 'v1') $$, 'consent to analytics');
select tests.reset_role();
select ok(private.has_consent(:'alice', null, 'product_analytics'), 'has_consent by user id');
select ok(private.has_consent(null, 'Alice@Consent.Test', 'product_analytics'), 'and by address, in any case');
select ok(not private.has_consent(:'alice', 'alice@consent.test', 'marketing_email'), 'a revoked consent is no consent');
select ok(private.has_consent(:'dave', 'dave@consent.test', 'usage_alert_email') and not private.has_consent(:'dave', null, 'marketing_email'),
  'without records, the defaults');
select ok(not private.has_consent(:'alice', null, 'no_such_purpose'), 'an unknown purpose is no consent');

-- ---------------------------------------------------------------------------------------------
-- record_consent's checks
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('carol@consent.test');
select throws_ok($$ select public.record_consent('newsletter', 'given', 'settings') $$, '22023', 'invalid_purpose', 'an unknown purpose is refused');
select throws_ok($$ select public.record_consent(null, 'given', 'settings') $$, '22023', 'invalid_purpose', 'so is none');
select throws_ok($$ select public.record_consent('marketing_email', 'maybe', 'settings') $$, '22023', 'invalid_consent', 'a consent is given or revoked');
select throws_ok($$ select public.record_consent('marketing_email', 'given', 'Sign-up Form') $$, '22023', 'invalid_consent',
  'a source is a lower-case word');
select throws_ok($$ select public.record_consent('marketing_email', 'given', null) $$, '22023', 'invalid_consent', 'and required');
select throws_ok($$ select public.record_consent('marketing_email', 'given', 'settings', repeat('v', 101)) $$, '22023', 'invalid_consent',
  'a policy version is at most 100 characters');
select throws_ok($$ select public.record_consent('marketing_email', 'given', 'import', null, null, 'contact@crm.test') $$, '22023', 'invalid_consent',
  'a contact''s consent is recorded for an organization');
select throws_ok(format($$ select public.record_consent('marketing_email', 'given', 'import', null, %L, 'contact@crm.test') $$, :'acme'),
  '42501', 'not_authorized', 'a plain member cannot record a contact''s consent');
select tests.authenticate_as('dave@consent.test');
select throws_ok(format($$ select public.record_consent('marketing_email', 'given', 'settings', null, %L) $$, :'acme'),
  '42501', 'not_authorized', 'nor consent to an organization one is no member of');
select tests.authenticate_as('erin@consent.test');
select throws_ok(format($$ select public.record_consent('marketing_email', 'given', 'import', null, %L, 'contact@crm.test') $$, :'acme'),
  '42501', 'not_authorized', 'another organization''s owner cannot record Acme''s contacts');
select tests.authenticate_as('bob@consent.test');
select throws_ok(format($$ select public.record_consent('marketing_email', 'given', 'import', null, %L, 'not an address') $$, :'acme'),
  '22023', 'invalid_email', 'a contact is an email address');
select public.record_consent('marketing_email', 'given', 'import', 'crm-2025', :'acme', ' Contact@CRM.test ') as contact \gset
select results_eq(format($$ select user_id, email, organization_id, status, recorded_by from public.consent_records where id = (%L::public.consent_records).id $$, :'contact'),
  format($$ values (null::uuid, 'contact@crm.test', %L::uuid, 'given', %L::uuid) $$, :'acme', tests.get_user_id('bob@consent.test')),
  'an admin records a contact''s consent for the organization, the address trimmed and lower-cased');
select tests.authenticate_as('alice@consent.test');
select lives_ok(format($$ select public.record_consent('marketing_email', 'revoked', 'api', null, %L, 'contact@crm.test') $$, :'acme'),
  'so does the owner (the contact revoked it)');
select tests.authenticate_as('erin@consent.test');
select lives_ok(format($$ select public.record_consent('marketing_email', 'given', 'import', null, %L, 'contact@crm.test') $$, :'globex'),
  'erin records the same address''s consent to Globex');
select tests.clear_authentication();
select throws_ok($$ select public.record_consent('marketing_email', 'given', 'signup_form') $$, '42501', null, 'anon cannot record consent');

select tests.authenticate_as_service_role();
select throws_ok($$ select public.record_consent('marketing_email', 'given', 'api') $$, '22023', 'invalid_consent',
  'the service role names the person');
select is((public.record_consent('usage_alert_email', 'given', 'api', null, null, 'Dave@Consent.Test')).user_id, :'dave'::uuid,
  'the service role records an address''s consent, linked to the user it belongs to');
select throws_ok($$ select public.record_consent('marketing_email', 'given', 'api', null, gen_random_uuid(), 'x@crm.test') $$,
  'PT404', 'organization_not_found', 'for an organization that exists');
select tests.reset_role();
select ok(not private.has_consent(null, 'contact@crm.test', 'marketing_email', :'acme'), 'the contact revoked consent to Acme');
select ok(private.has_consent(null, 'contact@crm.test', 'marketing_email', :'globex'), 'but gave it to Globex: consent is per organization');
select ok(not private.has_consent(null, 'contact@crm.test', 'marketing_email'), 'and neither is consent to the platform');

-- ---------------------------------------------------------------------------------------------
-- Who reads which records
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('alice@consent.test');
select is((select count(*)::int from public.consent_records), 5, 'the owner reads her own records (3) and Acme''s contact''s (2)');
select tests.authenticate_as('bob@consent.test');
select is((select count(*)::int from public.consent_records), 2, 'the admin reads Acme''s contact''s');
select results_eq($$ select email, granted, source from public.current_consents $$, $$ values ('contact@crm.test', false, 'api') $$,
  'current_consents: the contact''s latest choice');
select tests.authenticate_as('carol@consent.test');
select is((select count(*)::int from public.consent_records), 0, 'a plain member reads no contact''s');
select tests.authenticate_as('erin@consent.test');
select is((select count(*)::int from public.consent_records where organization_id = :'acme'), 0, 'nor does another organization''s owner');
select tests.authenticate_as('dave@consent.test');
select results_eq($$ select purpose, source from public.consent_records $$, $$ values ('usage_alert_email', 'api') $$,
  'a user reads the records about them, whoever made them');
select throws_ok(format($$ select * from public.get_consents(%L) $$, :'alice'), '42501', 'not_authorized', 'but not another user''s consent');
select tests.authenticate_as_service_role();
select is((select granted from public.get_consents(:'alice') where purpose = 'product_analytics'), true, 'the service role reads anyone''s');
select tests.clear_authentication();
select throws_ok($$ select * from public.consent_records $$, '42501', null, 'anon reads no records');

-- ---------------------------------------------------------------------------------------------
-- History is never rewritten
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as_service_role();
select throws_ok($$ update public.consent_records set status = 'given' $$, '42501', null, 'the service role cannot change a record');
select throws_ok($$ delete from public.consent_records $$, '42501', null, 'nor delete one');
select tests.authenticate_as('alice@consent.test');
select throws_ok($$ update public.consent_records set status = 'given' $$, '42501', null, 'nor can users');
select tests.reset_role();
select throws_ok(format($$ update public.consent_records set status = 'revoked' where id = (%L::public.consent_records).id $$, :'given'),
  '42501', 'append_only', 'even the owner''s code cannot change what was recorded');
select throws_ok(format($$ update public.consent_records set email = 'other@consent.test' where id = (%L::public.consent_records).id $$, :'given'),
  '42501', 'append_only', 'nor the address but to its digest');
select throws_ok(format($$ delete from public.consent_records where id = (%L::public.consent_records).id $$, :'given'),
  '42501', 'append_only', 'nor delete it');
select throws_ok($$ truncate public.consent_records $$, '42501', 'append_only', 'nor truncate the history');
select private.permit('gdpr_erasure');
select lives_ok(format($$ update public.consent_records set email = 'erased-1@erased.invalid' where id = (%L::public.consent_records).id $$, :'given'),
  'under the erasure''s permit, its scrub may rewrite the identity');
select throws_ok(format($$ update public.consent_records set status = 'revoked' where id = (%L::public.consent_records).id $$, :'given'),
  '42501', 'append_only', 'but never what was consented to');
select private.permit('gdpr_erasure', false);

-- The person's identity may leave: the address hashed, the user gone; a revocation still applies.
select lives_ok($$ update public.consent_records set email = private.personal_data_hash(email) where email = 'contact@crm.test' and organization_id = (select id from public.organizations where slug = 'acme-consent-test') $$,
  'erasure hashes a contact''s address');
select ok(not private.has_consent(null, 'contact@crm.test', 'marketing_email', :'acme'), 'and the revocation still applies to it');
delete from auth.users where id = :'dave';
select results_eq($$ select user_id, email from public.consent_records where email = 'dave@consent.test' $$,
  $$ values (null::uuid, 'dave@consent.test') $$, 'a deleted user''s records stay, detached from the account');
select tests.create_user('phoneonly@consent.test') as phoneonly \gset
insert into public.consent_records (user_id, purpose, status, source) values (:'phoneonly', 'product_analytics', 'given', 'api');
delete from auth.users where id = :'phoneonly';
select results_eq(format($$ select email from public.consent_records where purpose = 'product_analytics' and source = 'api' and user_id is null $$),
  format($$ values (%L) $$, private.personal_data_hash(:'phoneonly')), 'a record without an address keeps a digest of the user id');
delete from public.organizations where id = :'globex';
select is_empty(format($$ select 1 from public.consent_records where organization_id = %L $$, :'globex'),
  'an organization''s contacts'' records go with it');

-- ---------------------------------------------------------------------------------------------
-- Mail follows consent
-- ---------------------------------------------------------------------------------------------
select ok(private.email_allowed('alice@consent.test', :'alice', 'usage_alerts', false), 'usage alerts go by default');
select tests.authenticate_as('alice@consent.test');
select public.record_consent('usage_alert_email', 'revoked', 'settings');
select tests.reset_role();
select ok(not private.email_allowed('alice@consent.test', :'alice', 'usage_alerts', false), 'not once consent is revoked');
select ok(private.email_allowed('alice@consent.test', :'alice', 'usage_alerts', true), 'required mail goes regardless');
select results_eq(format($$ select subscribed from public.email_preferences where user_id = %L and category = 'usage_alerts' $$, :'alice'),
  $$ values (false) $$, 'recording consent sets the mail preference it governs');
select is(pg_temp.records(:'alice', 'usage_alert_email'), 1::bigint, 'without a second record from the preference');
select ok(not private.email_allowed('alice@consent.test', :'alice', 'marketing', false), 'marketing mail is opt-in');
select ok(private.email_allowed('alice@consent.test', :'alice', 'product_news', false), 'a category without a purpose follows its preference (none: subscribed)');

-- Preferences record consent.
select tests.authenticate_as('carol@consent.test');
insert into public.email_preferences (user_id, category, subscribed) values (auth.uid(), 'account', false);
select results_eq($$ select status, source, recorded_by from public.consent_records where purpose = 'account_email' $$,
  format($$ values ('revoked', 'email_preferences', %L::uuid) $$, :'carol'),
  'turning a category off in the preferences revokes its consent, recorded by the user');
update public.email_preferences set subscribed = true where category = 'account';
select results_eq($$ select granted, source from public.get_consents() where purpose = 'account_email' $$,
  $$ values (true, 'email_preferences') $$, 'turning it on gives it');
update public.email_preferences set subscribed = true where category = 'account';
insert into public.email_preferences (user_id, category, subscribed) values (auth.uid(), 'marketing', true);
insert into public.email_preferences (user_id, category, subscribed) values (auth.uid(), 'product_news', false);
select tests.reset_role();
select is(pg_temp.records(:'carol', 'account_email'), 2::bigint, 'writing the same choice again records nothing');
select ok(private.email_allowed('carol@consent.test', :'carol', 'marketing', false), 'subscribing to marketing mail consents to it');
select ok(not private.email_allowed('carol@consent.test', :'carol', 'product_news', false), 'product news follows the preference as before');
select ok(private.email_allowed('carol@consent.test', :'carol', 'account', false), 'account mail goes again');

-- One-click unsubscribe ends in a revocation.
select private.unsubscribe_email('Carol@Consent.Test', 'account');
select results_eq(format($$ select status, source from public.consent_records where user_id = %L and purpose = 'account_email' order by seq desc limit 1 $$, :'carol'),
  $$ values ('revoked', 'unsubscribe_link') $$, 'unsubscribing a user''s address revokes the consent');
select is(pg_temp.records(:'carol', 'account_email'), 3::bigint, 'once');
select results_eq(format($$ select subscribed from public.email_preferences where user_id = %L and category = 'account' $$, :'carol'),
  $$ values (false) $$, 'and turns the preference off');
select ok(not private.email_allowed('carol@consent.test', :'carol', 'account', false), 'so account mail stops');
select ok(private.email_allowed('stranger@elsewhere.test', null, 'account', false), 'an address without a user gets account mail by default');
select private.unsubscribe_email('Stranger@Elsewhere.Test', 'account');
select results_eq($$ select user_id, status, source from public.consent_records where email = 'stranger@elsewhere.test' $$,
  $$ values (null::uuid, 'revoked', 'unsubscribe_link') $$, 'unsubscribing it revokes the address''s consent');
select ok(not private.email_allowed('stranger@elsewhere.test', null, 'account', false), 'and it gets none');
insert into private.email_suppressions (email, category, reason) values (private.personal_data_hash('erased@elsewhere.test'), null, 'complaint');
select ok(not private.email_allowed('erased@elsewhere.test', null, 'usage_alerts', false), 'a suppression hashed by erasure still suppresses');

-- ---------------------------------------------------------------------------------------------
-- Audited
-- ---------------------------------------------------------------------------------------------
select results_eq(format($$ select action, table_name, organization_id, changes ->> 'purpose' from public.audit_log where row_id = (%L::public.consent_records).id::text $$, :'contact'),
  format($$ values ('consent_given', 'public.consent_records', %L::uuid, 'marketing_email') $$, :'acme'),
  'a record is audited as consent_given');
select isnt_empty(format($$ select 1 from public.audit_log where action = 'consent_revoked' and actor_id = %L $$, :'carol'),
  'a revocation as consent_revoked, by who made it');

select * from finish();
rollback;
