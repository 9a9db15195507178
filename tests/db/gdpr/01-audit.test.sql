-- 01 The audit log: the generic trigger (insert, update, delete; changed fields only; never
-- secrets), the actor of every kind (user, service role, platform admin, API key, job, system)
-- and the request (IP address, user agent, request id); which tables are audited and which are
-- deliberately not; who reads it (owners and admins, both ways); append-only for everyone;
-- domain actions; pseudonymisation for erasure; monthly partitions ahead, retention and legal
-- holds.
--
-- Cast: alice owns Acme, with bob (admin), carol (billing) and dave (member); erin owns Globex;
-- oscar is a platform admin by his token, pam by private.platform_admins.
begin;
select plan(130);

select tests.create_user('alice@audit.test') as alice \gset
select tests.create_user('bob@audit.test') as bob \gset
select tests.create_user('carol@audit.test') as carol \gset
select tests.create_user('dave@audit.test') as dave \gset
select tests.create_user('erin@audit.test') as erin \gset
select tests.create_user('oscar@audit.test', '{"platform_admin": true}') as oscar \gset
select tests.create_user('pam@audit.test') as pam \gset
insert into private.platform_admins (user_id, note) values (:'pam', 'audit test');
select tests.authenticate_as('alice@audit.test');
select public.create_organization('Acme', 'acme-audit-test') as acme \gset
select tests.authenticate_as('erin@audit.test');
select public.create_organization('Globex', 'globex-audit-test') as globex \gset
select tests.reset_role();
insert into public.organization_members (organization_id, user_id, role) values
  (:'acme', :'bob', 'admin'), (:'acme', :'carol', 'billing'), (:'acme', :'dave', 'member');

-- The newest entry of a table (read past RLS, whoever is acting).
create function pg_temp.last_audit(p_table text) returns public.audit_log language sql security definer as $$
  select * from public.audit_log where table_name = p_table order by id desc limit 1
$$;
create function pg_temp.audit_count(p_table text) returns integer language sql security definer as $$
  select count(*)::int from public.audit_log where table_name = p_table
$$;
grant execute on all functions in schema pg_temp to public;

-- ---------------------------------------------------------------------------------------------
-- The table
-- ---------------------------------------------------------------------------------------------
select is((select relkind::text from pg_class where oid = 'public.audit_log'::regclass), 'p', 'public.audit_log is a partitioned table');
select is((select pg_get_partkeydef('public.audit_log'::regclass)), 'RANGE (occurred_at)', 'partitioned by range of occurred_at');
select columns_are('public', 'audit_log', array['id', 'occurred_at', 'organization_id', 'table_name', 'row_id', 'action', 'actor_id',
  'actor_kind', 'changes', 'ip_address', 'user_agent', 'request_id'], 'audit_log has the contracted columns');
select col_is_pk('public', 'audit_log', array['id', 'occurred_at'], 'its primary key is (id, occurred_at)');
select set_eq($$ select pg_get_indexdef(indexrelid) from pg_index where indrelid = 'public.audit_log'::regclass and not indisprimary $$,
  array['CREATE INDEX audit_log_organization_idx ON ONLY public.audit_log USING btree (organization_id, occurred_at DESC)',
        'CREATE INDEX audit_log_row_idx ON ONLY public.audit_log USING btree (table_name, row_id, occurred_at DESC)',
        'CREATE INDEX audit_log_actor_idx ON ONLY public.audit_log USING btree (actor_id, occurred_at DESC)'],
  'indexed on the parent for an organization''s history, a row''s history and an actor''s actions');
select is_empty($$
  select c.relname, p.indexrelid::regclass from pg_inherits i join pg_class c on c.oid = i.inhrelid
  cross join (select indexrelid from pg_index where indrelid = 'public.audit_log'::regclass) p
  where i.inhparent = 'public.audit_log'::regclass
    and not exists (select 1 from pg_inherits ii join pg_index x on x.indexrelid = ii.inhrelid
                    where ii.inhparent = p.indexrelid and x.indrelid = c.oid)
$$, 'every partition has every index of the parent');
select table_privs_are('public', 'audit_log', 'authenticated', array['SELECT'], 'authenticated may only read the audit log');
select table_privs_are('public', 'audit_log', 'service_role', array['SELECT'], 'so may the service role: nobody writes it directly');
select table_privs_are('public', 'audit_log', 'anon', array[]::text[], 'anon has nothing on it');
select is_empty($$
  select c.relname, r from pg_inherits i join pg_class c on c.oid = i.inhrelid
  cross join unnest(array['anon', 'authenticated', 'service_role']) r
  where i.inhparent = 'public.audit_log'::regclass
    and (not c.relrowsecurity or has_table_privilege(r, c.oid, 'select, insert, update, delete, truncate')
         or obj_description(c.oid, 'pg_class') is null)
$$, 'every partition is under RLS, commented, and granted to no API role (reads go through the parent''s policy)');

-- ---------------------------------------------------------------------------------------------
-- What is audited and what is deliberately not
-- ---------------------------------------------------------------------------------------------
create function pg_temp.audited_tables() returns setof text language sql as $$
  select format('%s.%s', n.nspname, c.relname) from pg_trigger t
  join pg_class c on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace
  where t.tgname = 'audit_row' and t.tgparentid = 0 and t.tgfoid = 'private.audit_row()'::regprocedure
$$;
select is_empty($$
  select format('%s.%s', n.nspname, c.relname) from pg_class c join pg_namespace n on n.oid = c.relnamespace
  where n.nspname = 'public' and c.relkind in ('r', 'p') and not c.relispartition
    and exists (select 1 from pg_attribute a where a.attrelid = c.oid and a.attname = 'organization_id' and not a.attisdropped)
  except
  (select * from pg_temp.audited_tables() union select table_name from private.audit_exempt_tables)
$$, 'every table in public with an organization_id is audited or listed as exempt (a new tenant table must choose)');
select is_empty($$ select * from pg_temp.audited_tables() intersect select table_name from private.audit_exempt_tables $$,
  'no table is both audited and exempt');
select is_empty($$ select unnest(array['public.organizations', 'public.organization_members', 'public.organization_invitations', 'public.organization_plans',
        'public.files', 'public.billing_accounts', 'public.subscriptions', 'public.invoices', 'public.payment_methods',
        'public.credit_accounts', 'public.credit_statements', 'private.legal_holds'])
  except select * from pg_temp.audited_tables() $$,
  'the tenant tables are audited: tenancy, plans, files, billing, credit accounts and statements (and legal holds)');
select is_empty($$ select unnest(array['public.audit_log', 'public.credit_balances', 'public.credit_grants', 'public.credit_ledger', 'public.credit_reservations',
        'public.credit_overages', 'public.credit_account_transactions', 'private.credit_idempotency_keys', 'private.domain_events',
        'private.email_messages'])
  except select table_name from private.audit_exempt_tables $$,
  'deliberately not: the log itself, the credits hot path and its ledger, the append-only money histories, the outbox and mail queue');
select is_empty($$ select table_name from private.audit_exempt_tables where char_length(reason) < 10 $$, 'each exemption says why');
select throws_ok($$ select private.enable_audit('public.audit_log') $$, '22023', 'invalid_input', 'the audit log itself cannot be audited');
select throws_ok(format($$ select private.enable_audit(%L) $$, 'private.' || private.audit_partition_name(date_trunc('month', now() at time zone 'UTC'))),
  '22023', 'invalid_input', 'nor one of its partitions');
select ok(not has_function_privilege('authenticated', 'private.enable_audit(regclass)', 'execute')
          and not has_function_privilege('service_role', 'private.enable_audit(regclass)', 'execute'),
  'opting a table in is a migration''s business');

-- ---------------------------------------------------------------------------------------------
-- The trigger: changed fields only, never secrets
-- ---------------------------------------------------------------------------------------------
create table public.audit_test_widgets (
  id uuid primary key default gen_random_uuid(),
  organization_id uuid not null references public.organizations (id),
  name text,
  color text,
  size integer,
  api_token text,
  password_hash text,
  webhook_secret text,
  notes text,
  plan_key text,
  tags jsonb,
  updated_at timestamptz not null default now()
);
grant select, insert, update, delete on public.audit_test_widgets to anon, authenticated, service_role;
select lives_ok($$ select private.enable_audit('public.audit_test_widgets') $$, 'a table opts in with one line');
select lives_ok($$ select private.enable_audit('public.audit_test_widgets') $$, 'and again: enabling is idempotent');
select is((select count(*)::int from pg_trigger where tgrelid = 'public.audit_test_widgets'::regclass and not tgisinternal), 1,
  'one audit trigger');

insert into public.audit_test_widgets (organization_id, name, color, api_token, password_hash, webhook_secret, plan_key)
values (:'acme', 'Sprocket', 'red', 'tok_live_abc', 'hash$xyz', 'whsec_1', 'premium') returning id as w1 \gset
select results_eq($$ select organization_id, row_id, action from pg_temp.last_audit('public.audit_test_widgets') $$,
  format($$ values (%L::uuid, %L, 'insert') $$, :'acme', :'w1'), 'an insert is recorded with the organization, the row id and the action');
select is((pg_temp.last_audit('public.audit_test_widgets')).changes - 'updated_at',
  jsonb_build_object('id', jsonb_build_object('new', :'w1'), 'organization_id', jsonb_build_object('new', :'acme'),
    'name', '{"new": "Sprocket"}'::jsonb, 'color', '{"new": "red"}'::jsonb),
  'with its fields as {"new": ...}: no nulls, no token, hash, secret or key (plan_key not yet allowed)');

update public.audit_test_widgets set name = 'Sprocket II', size = 3 where id = :'w1';
select is((pg_temp.last_audit('public.audit_test_widgets')).changes,
  '{"name": {"old": "Sprocket", "new": "Sprocket II"}, "size": {"old": null, "new": 3}}'::jsonb,
  'an update records only the changed fields as {"old", "new"} (not updated_at)');
select is((pg_temp.last_audit('public.audit_test_widgets')).action, 'update', 'as an update');

select pg_temp.audit_count('public.audit_test_widgets') as n \gset
update public.audit_test_widgets set api_token = 'tok_live_def', password_hash = 'hash$2', webhook_secret = 'whsec_2' where id = :'w1';
select is(pg_temp.audit_count('public.audit_test_widgets'), :n, 'an update of secrets only records nothing');
update public.audit_test_widgets set updated_at = now() + interval '1 minute' where id = :'w1';
select is(pg_temp.audit_count('public.audit_test_widgets'), :n, 'nor one of updated_at only');
update public.audit_test_widgets set name = name where id = :'w1';
select is(pg_temp.audit_count('public.audit_test_widgets'), :n, 'nor one that changes nothing');

insert into private.audit_excluded_columns (table_name, column_name, reason) values ('public.audit_test_widgets', 'notes', 'Test: free text kept out.');
select matches(pg_get_triggerdef((select oid from pg_trigger where tgrelid = 'public.audit_test_widgets'::regclass and tgname = 'audit_row')),
  'audit_row\(''\{id\}'', ''\{notes\}''', 'listing an excluded column refreshes the table''s trigger');
update public.audit_test_widgets set notes = 'private remark' where id = :'w1';
select is(pg_temp.audit_count('public.audit_test_widgets'), :n, 'an update of an excluded column only records nothing');
update public.audit_test_widgets set notes = 'another remark', color = 'blue' where id = :'w1';
select is((pg_temp.last_audit('public.audit_test_widgets')).changes, '{"color": {"old": "red", "new": "blue"}}'::jsonb,
  'with other changes, the excluded column stays out');

insert into private.audit_included_columns (table_name, column_name, reason) values ('public.audit_test_widgets', 'plan_key', 'Test: a catalogue key.');
update public.audit_test_widgets set plan_key = 'starter' where id = :'w1';
select is((pg_temp.last_audit('public.audit_test_widgets')).changes, '{"plan_key": {"old": "premium", "new": "starter"}}'::jsonb,
  'a column listed as included is copied although its name looks secret');

alter table public.audit_test_widgets add column session_token text;
update public.audit_test_widgets set session_token = 'sess_1', tags = '["a", {"b": 1}]' where id = :'w1';
select is((pg_temp.last_audit('public.audit_test_widgets')).changes, '{"tags": {"old": null, "new": ["a", {"b": 1}]}}'::jsonb,
  'a secret-looking column added later is kept out at once; JSON values are copied as JSON');

delete from public.audit_test_widgets where id = :'w1';
select is((pg_temp.last_audit('public.audit_test_widgets')).action, 'delete', 'a delete is recorded');
select ok((pg_temp.last_audit('public.audit_test_widgets')).changes ?& array['id', 'name', 'color', 'size', 'plan_key', 'tags']
          and (pg_temp.last_audit('public.audit_test_widgets')).changes -> 'name' = '{"old": "Sprocket II"}'::jsonb,
  'with the row''s fields as {"old": ...}');
select is_empty($$
  select a.id from public.audit_log a, jsonb_object_keys(a.changes) k
  where a.action in ('insert', 'update', 'delete') and k ~ '(^|_)(token|hash|secret|password|signature)s?($|_)'
$$, 'no row change anywhere holds a token, hash, secret, password or signature column');
select is_empty($$ select id from public.audit_log where table_name = 'public.audit_test_widgets'
                   and (changes ? 'notes' or changes::text ~ '(tok_live|hash\$|whsec_|sess_1|remark)') $$,
  'nor the excluded column, nor any of their values');

-- Row ids and organizations of the tenancy tables.
select results_eq(format($$ select row_id, organization_id from public.audit_log where table_name = 'public.organizations' and action = 'insert' and row_id = %L $$, :'acme'),
  format($$ values (%L, %L::uuid) $$, :'acme', :'acme'), 'an organization''s organization is itself');
select results_eq(format($$ select row_id, actor_id, actor_kind from public.audit_log where table_name = 'public.organization_members' and organization_id = %L and action = 'insert' and row_id like '%%' || %L $$, :'acme', :'alice'),
  format($$ values (%L, %L::uuid, 'user') $$, :'acme' || ',' || :'alice', :'alice'),
  'a table without an id column is identified by its primary key (composite: the values joined by commas), alice as the actor');
select tests.authenticate_as('alice@audit.test');
select public.invite_member(:'acme', 'newbie@audit.test', 'member');
select tests.reset_role();
select ok((pg_temp.last_audit('public.organization_invitations')).changes ? 'email'
          and not (pg_temp.last_audit('public.organization_invitations')).changes ? 'token_hash',
  'an invitation is recorded without its token hash');

-- The permit a bulk system operation uses to record itself instead of every row.
select pg_temp.audit_count('public.audit_test_widgets') as n \gset
select private.permit('audit_skip');
insert into public.audit_test_widgets (organization_id, name) values (:'acme', 'Skipped');
select is(pg_temp.audit_count('public.audit_test_widgets'), :n, 'with the audit_skip permit a system session''s changes are not recorded row by row');
select tests.authenticate_as('alice@audit.test');
insert into public.audit_test_widgets (organization_id, name) values (:'acme', 'Not skipped');
select tests.reset_role();
select is(pg_temp.audit_count('public.audit_test_widgets'), :n + 1, 'but a signed-in user''s are, permit or not');
select private.permit('audit_skip', false);

-- ---------------------------------------------------------------------------------------------
-- Actors
-- ---------------------------------------------------------------------------------------------
insert into public.audit_test_widgets (organization_id, name) values (:'acme', 'Actor') returning id as w2 \gset
-- Each touch also checks that the trigger's inlined actor and request agree with audit_context.
create table pg_temp.context_mismatches (touch text, recorded jsonb, context jsonb);
grant insert on pg_temp.context_mismatches to public;
create function pg_temp.check_context(p_touch text) returns void language plpgsql security definer as $$
declare v_recorded jsonb; v_context jsonb;
begin
  select jsonb_build_object('actor_id', actor_id, 'actor_kind', actor_kind, 'ip_address', ip_address, 'user_agent', user_agent, 'request_id', request_id)
  into v_recorded from public.audit_log where table_name = 'public.audit_test_widgets' order by id desc limit 1;
  select to_jsonb(c) into v_context from private.audit_context() c;
  if v_recorded is distinct from v_context then
    insert into pg_temp.context_mismatches values (p_touch, v_recorded, v_context);
  end if;
end $$;
create function pg_temp.touch(p_name text) returns void language plpgsql as $$
begin
  update public.audit_test_widgets set name = p_name where name is distinct from p_name and color is null and size = 42;
  if found then
    perform pg_temp.check_context(p_name);
  end if;
end $$;
update public.audit_test_widgets set size = 42 where id = :'w2';
create function pg_temp.last_actor() returns table (actor_id uuid, actor_kind text) language sql security definer as $$
  select actor_id, actor_kind from public.audit_log where table_name = 'public.audit_test_widgets' order by id desc limit 1
$$;
grant execute on all functions in schema pg_temp to public;

select tests.authenticate_as('dave@audit.test');
select pg_temp.touch('by dave');
select results_eq($$ select * from pg_temp.last_actor() $$, format($$ values (%L::uuid, 'user') $$, :'dave'), 'a signed-in user is a user, by id');
select tests.authenticate_as_service_role();
select pg_temp.touch('by the service role');
select results_eq($$ select * from pg_temp.last_actor() $$, $$ values (null::uuid, 'service_role') $$, 'the service role on its own');
select set_config('request.jwt.claims', jsonb_build_object('role', 'service_role', 'sub', :'carol')::text, true);
select pg_temp.touch('for carol');
select results_eq($$ select * from pg_temp.last_actor() $$, format($$ values (%L::uuid, 'service_role') $$, :'carol'),
  'the service role acting for a user (withServiceRoleFor) names the user');
select tests.authenticate_as('oscar@audit.test');
select pg_temp.touch('by oscar');
select results_eq($$ select * from pg_temp.last_actor() $$, format($$ values (%L::uuid, 'platform_admin') $$, :'oscar'),
  'a platform admin by app_metadata');
select tests.authenticate_as('pam@audit.test');
select pg_temp.touch('by pam');
select results_eq($$ select * from pg_temp.last_actor() $$, format($$ values (%L::uuid, 'platform_admin') $$, :'pam'),
  'a platform admin by private.platform_admins');
select tests.clear_authentication();
select pg_temp.touch('by anon');
select results_eq($$ select * from pg_temp.last_actor() $$, $$ values (null::uuid, 'user') $$, 'an anonymous caller is a user without id');
select tests.reset_role();
select pg_temp.touch('by psql');
select results_eq($$ select * from pg_temp.last_actor() $$, $$ values (null::uuid, 'system') $$, 'a direct connection is the system');
select set_config('app.actor_kind', 'job', true);
select pg_temp.touch('by a job');
select results_eq($$ select * from pg_temp.last_actor() $$, $$ values (null::uuid, 'job') $$, 'a job names itself with app.actor_kind');
select tests.authenticate_as_service_role();
select set_config('app.actor_kind', 'api_key', true), set_config('app.actor_id', '00000000-0000-4000-8000-0000000000a1', true);
select pg_temp.touch('by an api key');
select results_eq($$ select * from pg_temp.last_actor() $$, $$ values ('00000000-0000-4000-8000-0000000000a1'::uuid, 'api_key') $$,
  'the API-key path names the key with app.actor_kind and app.actor_id');
select tests.authenticate_as('dave@audit.test');
select set_config('app.actor_kind', 'job', true), set_config('app.actor_id', :'alice', true);
select pg_temp.touch('dave pretending');
select results_eq($$ select * from pg_temp.last_actor() $$, format($$ values (%L::uuid, 'user') $$, :'dave'),
  'a signed-in user cannot pass for a job or for someone else');
select tests.reset_role();
select set_config('app.actor_kind', '', true), set_config('app.actor_id', '', true);

-- Jobs: private.run_job makes what a SQL job changes the job's.
create function pg_temp.audit_test_job() returns bigint language sql as $$
  update public.audit_test_widgets set name = 'by the job' where size = 42 returning 1::bigint
$$;
grant execute on all functions in schema pg_temp to public;
select private.register_job('audit-test-job', '0 0 1 1 *', 'sql', 'pg_temp.audit_test_job()', 'Touches a widget (test).');
select private.run_job('audit-test-job');
select results_eq($$ select * from pg_temp.last_actor() $$, $$ values (null::uuid, 'job') $$, 'what a SQL job changes is the job''s');
select matches((pg_temp.last_audit('public.audit_test_widgets')).request_id, '^job:audit-test-job:[0-9]+$',
  'and its request id names the job and its run');
select is(current_setting('app.actor_kind', true), '', 'run_job puts the caller''s actor back afterwards');
select pg_temp.touch('after the job');
select results_eq($$ select * from pg_temp.last_actor() $$, $$ values (null::uuid, 'system') $$, 'so what follows is not the job''s');

-- ---------------------------------------------------------------------------------------------
-- The request: IP address, user agent, request id from PostgREST's request.headers
-- ---------------------------------------------------------------------------------------------
create function pg_temp.last_request() returns table (ip inet, ua text, request_id text) language sql security definer as $$
  select ip_address, user_agent, request_id from public.audit_log where table_name = 'public.audit_test_widgets' order by id desc limit 1
$$;
grant execute on all functions in schema pg_temp to public;
select tests.authenticate_as('alice@audit.test');
select set_config('request.headers', '{"x-forwarded-for": "203.0.113.7, 10.0.0.1", "x-real-ip": "10.0.0.1", "user-agent": "Mozilla/5.0 (audit)", "x-request-id": "req-123"}', true);
select pg_temp.touch('with headers');
select results_eq($$ select * from pg_temp.last_request() $$, $$ values ('203.0.113.7'::inet, 'Mozilla/5.0 (audit)', 'req-123') $$,
  'the first X-Forwarded-For address, the user agent and the request id');
select set_config('request.headers', '{"x-forwarded-for": "2001:db8::1"}', true);
select pg_temp.touch('over IPv6');
select results_eq($$ select * from pg_temp.last_request() $$, $$ values ('2001:db8::1'::inet, null::text, null::text) $$, 'IPv6 too');
select set_config('request.headers', '{"x-forwarded-for": "unknown, 203.0.113.9", "x-real-ip": "198.51.100.2"}', true);
select pg_temp.touch('real ip');
select results_eq($$ select * from pg_temp.last_request() $$, $$ values ('198.51.100.2'::inet, null::text, null::text) $$,
  'a first address that is none falls back to X-Real-IP');
select set_config('request.headers', jsonb_build_object('x-forwarded-for', '999.1.1.1', 'user-agent', repeat('u', 800))::text, true);
select pg_temp.touch('bad ip');
select results_eq($$ select ip, char_length(ua) from pg_temp.last_request() $$, $$ values (null::inet, 500) $$,
  'a malformed address is no address (and never an error); the user agent is cut to 500 characters');
select set_config('request.headers', '', true);
select tests.reset_role();
select is_empty($$ select * from pg_temp.context_mismatches $$,
  'for every caller above, the trigger''s inlined actor and request are what private.audit_context says');

-- ---------------------------------------------------------------------------------------------
-- Who reads it
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as_service_role();
select private.audit_action(:'acme', 'exported', 'public.credit_accounts', :'acme', '{"what": "statement"}');
select private.audit_action(:'globex', 'exported', null, null, '{}');
select tests.reset_role();
select count(*)::int as acme_rows from public.audit_log where organization_id = :'acme' \gset
select count(*)::int as both_rows from public.audit_log where organization_id in (:'acme', :'globex') \gset
select count(*)::int as acme_owner_only from public.audit_log where organization_id = :'acme' and table_name in ('public.credit_accounts', 'public.credit_statements') \gset

select tests.authenticate_as('alice@audit.test');
select is((select count(*)::int from public.audit_log where organization_id = :'acme'), :acme_rows, 'the owner reads all of her organization''s history');
select is((select count(*)::int from public.audit_log where organization_id <> :'acme' or organization_id is null), 0, 'and nothing else');
select tests.authenticate_as('bob@audit.test');
select is((select count(*)::int from public.audit_log), :acme_rows - :acme_owner_only,
  'an admin reads it too, but for the credit account and statements (owners and billing members only read those)');
select cmp_ok(:acme_owner_only, '>', 0, '(there is such a row)');
select tests.authenticate_as('carol@audit.test');
select is((select count(*)::int from public.audit_log), 0, 'a billing member reads none');
select tests.authenticate_as('dave@audit.test');
select is((select count(*)::int from public.audit_log), 0, 'nor a plain member');
select tests.authenticate_as('erin@audit.test');
select is((select count(*)::int from public.audit_log where organization_id = :'acme'), 0, 'nor a stranger (who reads her own organization''s)');
select cmp_ok((select count(*)::int from public.audit_log where organization_id = :'globex'), '>', 0, '(erin''s own history)');
select tests.clear_authentication();
select throws_ok($$ select * from public.audit_log $$, '42501', null, 'nor anon');
select tests.authenticate_as_service_role();
select is((select count(*)::int from public.audit_log where organization_id in (:'acme', :'globex')), :both_rows,
  'the service role reads everything');
select tests.reset_role();

-- ---------------------------------------------------------------------------------------------
-- Append-only for everyone
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('alice@audit.test');
select throws_ok($$ insert into public.audit_log (action, actor_kind) values ('forged', 'system') $$, '42501', null, 'a user cannot write an entry');
select throws_ok(format($$ update public.audit_log set action = 'x' where organization_id = %L $$, :'acme'), '42501', null, 'nor change one');
select throws_ok(format($$ delete from public.audit_log where organization_id = %L $$, :'acme'), '42501', null, 'nor delete one');
select tests.authenticate_as_service_role();
select throws_ok($$ insert into public.audit_log (action, actor_kind) values ('forged', 'system') $$, '42501', null, 'neither can the service role');
select throws_ok(format($$ update public.audit_log set action = 'x' where organization_id = %L $$, :'acme'), '42501', null, 'change');
select throws_ok(format($$ delete from public.audit_log where organization_id = %L $$, :'acme'), '42501', null, 'or delete');
select tests.reset_role();
select throws_ok(format($$ update public.audit_log set action = 'x' where organization_id = %L $$, :'acme'), '42501', 'append_only',
  'and the owner''s own updates are refused by the guard');
select throws_ok(format($$ delete from public.audit_log where organization_id = %L $$, :'acme'), '42501', 'append_only', 'and deletes');
select throws_ok($$ truncate public.audit_log $$, '42501', 'append_only', 'and truncation');
select private.permit('audit_pseudonymize');
select throws_ok(format($$ update public.audit_log set action = 'x' where organization_id = %L $$, :'acme'), '42501', 'append_only',
  'pseudonymisation may not change what happened, where or when');
select private.permit('audit_pseudonymize', false);

-- ---------------------------------------------------------------------------------------------
-- Domain actions
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as_service_role();
select set_config('request.headers', '{"x-real-ip": "192.0.2.44", "user-agent": "backend/1"}', true);
select private.audit_action(:'acme', 'consent_given', 'public.consents', 'c-1', '{"purpose": "marketing_email"}') as action_id \gset
select set_config('request.headers', '', true);
select tests.reset_role();
select results_eq(format($$ select organization_id, table_name, row_id, action, actor_kind, changes, ip_address, user_agent from public.audit_log where id = %s $$, :action_id),
  format($$ values (%L::uuid, 'public.consents', 'c-1', 'consent_given', 'service_role', '{"purpose": "marketing_email"}'::jsonb, '192.0.2.44'::inet, 'backend/1') $$, :'acme'),
  'audit_action records a domain action with its details, actor and request');
select lives_ok($$ select private.audit_action(null, 'purge_executed') $$, 'with no organization, table or details');
select is((select changes from public.audit_log where action = 'purge_executed' order by id desc limit 1), '{}'::jsonb, 'details default to {}');
select throws_ok($$ select private.audit_action(null, 'Not An Action') $$, '22023', 'invalid_input', 'an action is lower-case letters and underscores');
select throws_ok($$ select private.audit_action(null, 'exported', null, null, '[1]') $$, '22023', 'invalid_input', 'details are an object');
select ok(has_function_privilege('service_role', 'private.audit_action(uuid, text, text, text, jsonb)', 'execute')
          and not has_function_privilege('authenticated', 'private.audit_action(uuid, text, text, text, jsonb)', 'execute')
          and not has_function_privilege('anon', 'private.audit_action(uuid, text, text, text, jsonb)', 'execute'),
  'only the service role (and security-definer code) records domain actions');

-- ---------------------------------------------------------------------------------------------
-- Pseudonymisation for erasure
-- ---------------------------------------------------------------------------------------------
insert into public.audit_test_widgets (organization_id, name, color, tags) values
  (:'acme', 'Alice Liddell', 'alice@audit.test', jsonb_build_object('owner', :'alice', 'note', 'ask Alice Liddell', 'list', jsonb_build_array('x', 'ALICE@AUDIT.TEST')));
select tests.authenticate_as('alice@audit.test');
select set_config('request.headers', '{"x-forwarded-for": "203.0.113.50", "user-agent": "Alice''s browser"}', true);
select pg_temp.touch('Alice was here');
select set_config('request.headers', '', true);
select tests.authenticate_as('bob@audit.test');
select set_config('request.headers', '{"x-forwarded-for": "203.0.113.60", "user-agent": "Bob''s browser"}', true);
select pg_temp.touch('Bob was here');
select set_config('request.headers', '', true);
select tests.reset_role();
select count(*)::int as alice_acted from public.audit_log where actor_id = :'alice' \gset
select gen_random_uuid() as pseudonym \gset

select throws_ok(format($$ select private.pseudonymize_audit_subject(%L, %L) $$, :'alice', :'alice'), '22023', 'invalid_input',
  'the pseudonym is another id');
select cmp_ok(private.pseudonymize_audit_subject(:'alice', :'pseudonym'), '>=', :alice_acted::bigint, 'pseudonymize_audit_subject rewrites her entries');
select is((select count(*)::int from public.audit_log where actor_id = :'alice'), 0, 'no entry names her as actor');
select is((select count(*)::int from public.audit_log where actor_id = :'pseudonym'), :alice_acted, 'her entries are the pseudonym''s');
select is_empty(format($$ select id from public.audit_log where actor_id = %L and (ip_address is not null or user_agent is not null) $$, :'pseudonym'),
  'without her IP address or user agent');
select is_empty(format($$ select id from public.audit_log where row_id like '%%' || %L || '%%' or changes::text like '%%' || %L || '%%' $$, :'alice', :'alice'),
  'her id is gone from every row id and change (her membership, the organizations she created, the JSON values)');
select ok(exists (select 1 from public.audit_log where table_name = 'public.organization_members' and row_id = :'acme' || ',' || :'pseudonym'),
  'her membership''s entries are there under the pseudonym');
select results_eq(format($$ select ip_address, user_agent from public.audit_log where actor_id = %L and ip_address = '203.0.113.60' $$, :'bob'),
  $$ values ('203.0.113.60'::inet, 'Bob''s browser') $$, 'other actors'' entries keep theirs');
select throws_ok($$ update public.audit_log set changes = '{}' where id = (select max(id) from public.audit_log) $$, '42501', 'append_only',
  'the permit ends with the function');

select throws_ok($$ select private.pseudonymize_audit_values(array['a'], 'x') $$, '22023', 'invalid_input', 'a value is at least 2 characters');
select is(private.pseudonymize_audit_values(array['alice@audit.test', 'Alice Liddell', 'Al'], '[erased]'), 1::bigint,
  'pseudonymize_audit_values rewrites the entries that hold her email or name (here: the widget''s insert)');
select is_empty($$ select id from public.audit_log where changes::text ilike '%alice@audit.test%' or changes::text ilike '%alice liddell%' $$,
  'neither her email (in any case) nor her name is in any change, at any depth');
select is((select changes -> 'tags' -> 'new' from public.audit_log where table_name = 'public.audit_test_widgets' and action = 'insert' and changes -> 'name' ->> 'new' = '[erased]'),
  jsonb_build_object('owner', :'pseudonym', 'note', 'ask [erased]', 'list', jsonb_build_array('x', '[erased]')),
  'strings equal to or containing a value are rewritten, the rest of the JSON stays');
select ok(exists (select 1 from public.audit_log where changes::text like '%Alice was here%'),
  'a value under 4 characters (Al) replaces only whole strings, not words that contain it');
select ok(has_function_privilege('service_role', 'private.pseudonymize_audit_subject(uuid, uuid)', 'execute')
          and has_function_privilege('service_role', 'private.pseudonymize_audit_values(text[], text)', 'execute')
          and not has_function_privilege('authenticated', 'private.pseudonymize_audit_subject(uuid, uuid)', 'execute')
          and not has_function_privilege('authenticated', 'private.pseudonymize_audit_values(text[], text)', 'execute'),
  'pseudonymisation is the service role''s only');

-- ---------------------------------------------------------------------------------------------
-- Partitions: ahead of time, retention, legal holds
-- ---------------------------------------------------------------------------------------------
create function pg_temp.partitions() returns setof text language sql as $$
  select c.relname::text from pg_inherits i join pg_class c on c.oid = i.inhrelid where i.inhparent = 'public.audit_log'::regclass
$$;
select ok(array(select private.audit_partition_name(date_trunc('month', now() at time zone 'UTC') + make_interval(months => m)) from generate_series(0, 2) m)
          <@ array(select pg_temp.partitions()),
  'the partitions of this month and the next two exist, named audit_log_yYYYYmMM');
select private.ensure_audit_partitions();  -- whatever a new month may have needed
select is(private.ensure_audit_partitions(), 0, 'ensure_audit_partitions is idempotent');
select is((select count(*)::int from private.audit_log_default), 0, 'the default partition is empty');
select is(private.audit_partition_name('2026-03-15 10:00'), 'audit_log_y2026m03', 'the name of a month''s partition');

select is(private.ensure_audit_partitions('2020-01-15 12:00+00'), 3, 'ensure_audit_partitions makes the partitions of a month and the two after it');
select ok(array['audit_log_y2020m01', 'audit_log_y2020m02', 'audit_log_y2020m03'] <@ array(select pg_temp.partitions()),
  'there they are');
select is((select pg_get_expr(relpartbound, oid) from pg_class where relname = 'audit_log_y2020m02'),
  $$FOR VALUES FROM ('2020-02-01 00:00:00+00') TO ('2020-03-01 00:00:00+00')$$, 'bounded by the month in UTC');
select is((select relrowsecurity from pg_class where relname = 'audit_log_y2020m02'), true, 'under RLS');
select is((select relnamespace::regnamespace::text from pg_class where relname = 'audit_log_y2020m02'), 'private',
  'in private: the API, the generated types and Studio''s table list show only public.audit_log');
select is((select count(*)::int from pg_attribute a where a.attrelid = 'private.audit_log_y2020m02'::regclass and a.attnum > 0
           and col_description(a.attrelid, a.attnum) is null), 0, 'every column commented');

insert into public.audit_log (occurred_at, action, actor_kind) values ('2019-06-10 08:00+00', 'stranded', 'system') returning id as stranded \gset
select is((select count(*)::int from private.audit_log_default), 1, 'a row whose month has no partition lands in the default partition');
select is(private.ensure_audit_partitions('2020-01-15 12:00+00'), 1, 'the next run makes its month''s partition');
select is((select count(*)::int from private.audit_log_default), 0, 'and moves it out of the default partition');
select results_eq(format($$ select tableoid::regclass::text, action from public.audit_log where id = %s $$, :stranded),
  $$ values ('private.audit_log_y2019m06', 'stranded') $$, 'into its month, as it was');

insert into private.legal_holds (organization_id, reason, placed_by) values (:'acme', 'Litigation hold (test)', :'oscar') returning id as hold \gset
select is((pg_temp.last_audit('private.legal_holds')).action, 'insert', 'placing a legal hold is audited');
select is(private.drop_audit_partitions(), 0, 'while a legal hold stands, retention drops nothing');
select ok(array['audit_log_y2019m06', 'audit_log_y2020m01'] <@ array(select pg_temp.partitions()), 'old partitions stay');
update private.legal_holds set released_at = now(), released_by = :'oscar' where id = :'hold';
select is(private.drop_audit_partitions('2022-02-15 00:00+00'), 2, 'retention drops the partitions of months wholly older than audit_retention (2 years)');
select is((select array_agg(p order by p) from pg_temp.partitions() p where p ~ '^audit_log_y20(19|20)'),
  array['audit_log_y2020m02', 'audit_log_y2020m03'], 'and only those');
select set_eq($$ select row_id from public.audit_log where action = 'partition_dropped' $$, array['audit_log_y2019m06', 'audit_log_y2020m01'],
  'each drop is in the log');
select is(private.maintain_audit_partitions(), 2, 'the job makes what is missing and drops the rest past retention');
select ok(array(select private.audit_partition_name(date_trunc('month', now() at time zone 'UTC') + make_interval(months => m)) from generate_series(0, 2) m)
          <@ array(select pg_temp.partitions()),
  'the current partitions stay');
select results_eq($$ select schedule, kind::text, command from private.jobs where name = 'audit-partitions' $$,
  $$ values ('7 1 * * *', 'sql', 'private.maintain_audit_partitions()') $$, 'audit-partitions is a daily SQL job');
select is(private.setting('audit_retention'), '"2 years"'::jsonb, 'audit_retention is two years');
select throws_ok($$ select private.ensure_audit_partitions(now(), 99) $$, '22023', 'invalid_input', 'at most 24 months ahead');
select tests.authenticate_as_service_role();
select lives_ok($$ insert into private.legal_holds (reason) values ('Regulator request (test)') $$, 'the service role places holds');
select throws_ok($$ update private.legal_holds set reason = 'changed' $$, '42501', null, 'and releases them, but never rewrites one');
select throws_ok($$ delete from private.legal_holds $$, '42501', null, 'nor deletes one');
select tests.reset_role();

select * from finish();
rollback;
