-- 01 Schema: the tables exist, every table is under row-level security, the private schema stays
-- private, and each role can reach exactly what the architecture says.
begin;
select plan(52);

-- ---------------------------------------------------------------------------------------------
-- Tables and types
-- ---------------------------------------------------------------------------------------------
select has_table('public', 'profiles', 'public.profiles exists');
select has_table('public', 'organizations', 'public.organizations exists');
select has_table('public', 'organization_members', 'public.organization_members exists');
select has_table('public', 'organization_invitations', 'public.organization_invitations exists');
select has_table('private', 'domain_events', 'private.domain_events (the outbox) exists');
select has_table('private', 'platform_admins', 'private.platform_admins exists');

select enum_has_labels('public', 'organization_role', array['owner', 'admin', 'member', 'billing'],
  'organization roles are owner, admin, member and billing, in that order');

-- ---------------------------------------------------------------------------------------------
-- Row-level security everywhere
-- ---------------------------------------------------------------------------------------------
select is_empty($$
  select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
  where n.nspname = 'public' and c.relkind in ('r', 'p') and not c.relrowsecurity
$$, 'every table in public has row-level security enabled');

select is_empty($$
  select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
  where n.nspname = 'private' and c.relkind in ('r', 'p') and not c.relrowsecurity
$$, 'every table in private has row-level security enabled too');

select is_empty($$
  select tablename, policyname, roles from pg_policies
  where schemaname = 'public' and roles <> '{authenticated}'
$$, 'every policy in public applies to authenticated only');

-- Tenant tables: organization_id is required, references organizations and leads an index.
select is_empty($$
  select c.relname from pg_attribute a
  join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace
  where n.nspname = 'public' and c.relkind in ('r', 'p') and a.attname = 'organization_id'
    and not a.attnotnull
    -- The audit log records actions of no organization too (its partitions are in private).
    and c.relname <> 'audit_log'
    -- Consent records are a person's: given to an organization (its CRM contacts) or, without one, to us.
    and c.relname <> 'consent_records'
    -- A data-subject request is filed by a user about themselves (no organization) or by an organization.
    and c.relname <> 'data_subject_requests'
$$, 'every organization_id column in public is not null (the audit log, consent records and users'' own requests aside)');

select is_empty($$
  select c.relname from pg_attribute a
  join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace
  where n.nspname = 'public' and c.relkind in ('r', 'p') and a.attname = 'organization_id'
    and not exists (
      select 1 from pg_constraint k
      where k.conrelid = c.oid and k.contype = 'f' and k.confrelid = 'public.organizations'::regclass
        and k.conkey = array[a.attnum])
    -- Money records outlive their organization (see private.deleted_organizations): the credit
    -- ledger and overage have no foreign key to it. A credit account's transactions and
    -- statements reference their account, which references the organization.
    and c.relname not in ('credit_ledger', 'credit_overages')
    -- The audit log outlives the rows it records (and their organizations): no foreign key.
    and c.relname <> 'audit_log'
    -- A purge operation is the tombstone of its organization: it outlives it.
    and c.relname <> 'purge_operations'
    and not (c.relname in ('credit_account_transactions', 'credit_statements') and exists (
      select 1 from pg_constraint k where k.conrelid = c.oid and k.contype = 'f'
        and k.confrelid = 'public.credit_accounts'::regclass and k.conkey = array[a.attnum]))
$$, 'every organization_id column in public references organizations (money records aside)');

select is_empty($$
  select c.relname from pg_attribute a
  join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace
  where n.nspname = 'public' and c.relkind in ('r', 'p') and a.attname = 'organization_id'
    and not exists (select 1 from pg_index i where i.indrelid = c.oid and i.indkey[0] = a.attnum)
$$, 'every organization_id column in public is the first column of an index');

-- Studio shows comments to admins.
select is_empty($$
  select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
  where n.nspname = 'public' and c.relkind in ('r', 'p') and obj_description(c.oid, 'pg_class') is null
$$, 'every table in public has a comment');

select is_empty($$
  select p.oid::regprocedure from pg_proc p join pg_namespace n on n.oid = p.pronamespace
  where n.nspname in ('public', 'private') and obj_description(p.oid, 'pg_proc') is null
$$, 'every function in public and private has a comment');

select is_empty($$
  select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
  where n.nspname = 'public' and c.relkind in ('v', 'm') and obj_description(c.oid, 'pg_class') is null
$$, 'every view in public has a comment');

select is_empty($$
  select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
  where n.nspname = 'private' and c.relkind in ('r', 'p') and obj_description(c.oid, 'pg_class') is null
$$, 'every table in private has a comment too (operators read them in Studio)');

select is_empty($$
  select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace, aclexplode(c.relacl) a
  where n.nspname in ('public', 'private') and a.grantee = 0
$$, 'no table or view in public or private grants anything to PUBLIC: grants name their roles');

select is_empty($$
  select c.relname || '.' || a.attname from pg_attribute a
  join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace
  where n.nspname = 'public' and c.relkind in ('r', 'p') and a.attnum > 0 and not a.attisdropped
    and col_description(c.oid, a.attnum) is null
$$, 'every column of every table in public has a comment');

-- ---------------------------------------------------------------------------------------------
-- The private schema
-- ---------------------------------------------------------------------------------------------
select ok(not has_schema_privilege('anon', 'private', 'usage'), 'anon cannot use the private schema');
select ok(not has_schema_privilege('public', 'private', 'usage'), 'PUBLIC cannot use the private schema');
select ok(has_schema_privilege('authenticated', 'private', 'usage'),
  'authenticated can use the private schema (to reach the helpers granted to it)');
select ok(not has_schema_privilege('authenticated', 'private', 'create'), 'authenticated cannot create objects in private');

select is_empty($$
  select c.relname, r.rolname from pg_class c join pg_namespace n on n.oid = c.relnamespace
  cross join (values ('anon'), ('authenticated')) as r (rolname)
  where n.nspname = 'private' and c.relkind in ('r', 'p', 'v', 'm')
    and (has_table_privilege(r.rolname, c.oid, 'select, insert, update, delete, truncate, references, trigger')
         or has_any_column_privilege(r.rolname, c.oid, 'select, insert, update, references'))
$$, 'no private table is granted to anon or authenticated');

select is_empty($$
  select c.relname, r.rolname from pg_class c join pg_namespace n on n.oid = c.relnamespace
  cross join (values ('anon'), ('authenticated')) as r (rolname)
  where n.nspname = 'private' and c.relkind = 'S'
    and has_sequence_privilege(r.rolname, c.oid, 'usage, select, update')
$$, 'no private sequence is granted to anon or authenticated');

-- ---------------------------------------------------------------------------------------------
-- Table grants in public: anon has none; authenticated reads, and writes only what policies allow
-- ---------------------------------------------------------------------------------------------
select is_empty($$
  select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
  where n.nspname = 'public' and c.relkind in ('r', 'p', 'v', 'm')
    and (has_table_privilege('anon', c.oid, 'select, insert, update, delete, truncate, references, trigger')
         or has_any_column_privilege('anon', c.oid, 'select, insert, update, references'))
$$, 'anon has no privilege on any table in public');

select table_privs_are('public', 'profiles', 'authenticated', array['SELECT'],
  'authenticated may only select profiles at table level (updates are per column)');
select table_privs_are('public', 'organizations', 'authenticated', array['SELECT'],
  'authenticated may only select organizations at table level (updates are per column; owners delete through request_organization_purge)');
select table_privs_are('public', 'organization_members', 'authenticated', array['SELECT'],
  'authenticated may only select organization_members (changes go through RPCs)');
select table_privs_are('public', 'organization_invitations', 'authenticated', array['SELECT', 'DELETE'],
  'authenticated may select and delete (revoke) invitations (creating and accepting go through RPCs)');

select set_eq($$
  select c.relname || '.' || a.attname from pg_attribute a
  join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace
  where n.nspname = 'public' and c.relkind = 'r' and a.attnum > 0 and not a.attisdropped
    and has_column_privilege('authenticated', c.oid, a.attnum, 'update')
$$, array['profiles.full_name', 'profiles.avatar_url', 'organizations.name', 'organizations.slug', 'email_preferences.subscribed'],
  'the only columns authenticated may update are profiles.full_name/avatar_url, organizations.name/slug and their mail preferences');

select is_empty($$
  select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
  where n.nspname = 'public' and c.relkind in ('r', 'p')
    and has_any_column_privilege('authenticated', c.oid, 'insert')
    and c.relname <> 'email_preferences'
$$, 'authenticated cannot insert into any table in public but their own mail preferences (RLS: their rows only)');

-- The service role (backends, operators) reads everything; it writes directly only where a
-- trigger keeps the rules (tenancy) or the catalogue; credit state changes only through RPCs.
select table_privs_are('public', 'profiles', 'service_role', array['SELECT', 'UPDATE'], 'service_role reads and corrects profiles');
select table_privs_are('public', 'organizations', 'service_role', array['SELECT', 'INSERT', 'UPDATE', 'DELETE'],
  'service_role manages organizations');
select table_privs_are('public', 'organization_members', 'service_role', array['SELECT', 'INSERT', 'UPDATE', 'DELETE'],
  'service_role manages memberships');
select table_privs_are('public', 'organization_invitations', 'service_role', array['SELECT', 'DELETE'],
  'service_role reads and revokes invitations (sending makes a token: an RPC)');
select is_empty($$
  select t from unnest(array['credit_pools', 'credit_plans', 'credit_plan_allocations', 'credit_actions', 'credit_action_costs']) t
  where not has_table_privilege('service_role', 'public.' || t, 'select, insert, update, delete')
     or has_table_privilege('service_role', 'public.' || t, 'truncate, references, trigger')
$$, 'service_role writes the credit catalogue, and nothing beyond the row commands');
select is_empty($$
  select t from unnest(array['organization_plans', 'credit_grants', 'credit_balances', 'credit_ledger', 'credit_reservations',
                             'credit_overages', 'credit_balances_overview', 'credit_grant_balances']) t
  where not has_table_privilege('service_role', 'public.' || t, 'select')
     or has_table_privilege('service_role', 'public.' || t, 'insert, update, delete, truncate, references, trigger')
$$, 'service_role only reads credit state: the ledger stays append-only and balances follow the ledger');

-- Nothing is granted by default: what hosted projects do since 2026-10-30, and what the first
-- migration makes sure of on older ones.
select is_empty($$
  select d.defaclobjtype, a.grantee::regrole from pg_default_acl d, aclexplode(d.defaclacl) a
  where d.defaclnamespace in ('public'::regnamespace, 'private'::regnamespace)
    and a.grantee in ('anon'::regrole, 'authenticated'::regrole, 'service_role'::regrole)
$$, 'no default privilege in public or private grants anything to the API roles');
select is_empty($$
  select c.relname, r from pg_class c join pg_namespace n on n.oid = c.relnamespace
  cross join unnest(array['anon', 'authenticated']) r
  where n.nspname = 'public' and c.relkind = 'S' and has_sequence_privilege(r, c.oid, 'usage, select, update')
$$, 'no sequence in public is granted to anon or authenticated (identity columns need none)');

-- The platform stand-in grants the API roles what hosted grants and no more.
select is_empty($$
  select c.relname, r from pg_class c join pg_namespace n on n.oid = c.relnamespace
  cross join unnest(array['anon', 'authenticated', 'service_role']) r
  where n.nspname = 'storage' and c.relkind = 'r' and has_table_privilege(r, c.oid, 'truncate, references, trigger')
$$, 'no API role may truncate storage tables or hang references or triggers on them');
select ok(not has_table_privilege('authenticated', 'storage.buckets', 'insert, update, delete'),
  'signed-in users cannot create or change buckets directly');
select is_empty($$
  select c.relname, r from pg_class c join pg_namespace n on n.oid = c.relnamespace
  cross join unnest(array['anon', 'authenticated', 'service_role', 'public']) r
  where n.nspname = 'cron' and c.relkind in ('r', 'S')
    and (has_table_privilege(r, c.oid, 'select, insert, update, delete, truncate') )
$$, 'the API roles and PUBLIC hold nothing on pg_cron''s tables');

-- ---------------------------------------------------------------------------------------------
-- Functions: public ones are security invoker and closed to anon; private ones are granted one
-- by one, so a function nobody granted is callable by nobody.
-- ---------------------------------------------------------------------------------------------
select is_empty($$
  select p.oid::regprocedure from pg_proc p join pg_namespace n on n.oid = p.pronamespace
  where n.nspname = 'public' and p.prosecdef
$$, 'every function in public is security invoker');

select is_empty($$
  select p.oid::regprocedure from pg_proc p join pg_namespace n on n.oid = p.pronamespace
  where n.nspname = 'private' and p.prosecdef
    and not coalesce(p.proconfig @> array['search_path=""'], false)
$$, 'every security-definer function in private pins search_path to the empty string');

select set_eq($$
  select p.oid::regprocedure::text from pg_proc p join pg_namespace n on n.oid = p.pronamespace
  where n.nspname = 'public' and has_function_privilege('anon', p.oid, 'execute')
$$, array['check_request()'],
  'anon can execute no function in public but PostgREST''s pre-request check, which PostgREST runs for every request');

select is_empty($$
  select p.oid::regprocedure from pg_proc p join pg_namespace n on n.oid = p.pronamespace
  where n.nspname in ('public', 'private')
    and (p.proacl is null  -- no ACL means the built-in default: execute for PUBLIC
         or exists (select 1 from aclexplode(p.proacl) a where a.grantee = 0 and a.privilege_type = 'EXECUTE'))
$$, 'no function in public or private is executable by PUBLIC (execute is granted per function)');

select set_eq($$
  select p.proname::text from pg_proc p join pg_namespace n on n.oid = p.pronamespace
  where n.nspname = 'public' and has_function_privilege('authenticated', p.oid, 'execute')
$$, array['create_organization', 'invite_member', 'accept_invitation', 'update_member_role', 'remove_member',
          'leave_organization',
          'consume_credits_rpc', 'consume_credits_batch', 'reserve_credits', 'commit_reservation', 'release_reservation',
          'grant_credits', 'refund_credits', 'set_credit_low_threshold', 'get_credit_balances', 'get_credit_usage',
          'file_store_for', 'get_file_usage',
          'open_credit_account', 'set_credit_limit', 'set_credit_account_status', 'update_credit_account_settings',
          'post_credit_account_transaction', 'list_credit_account_transactions',
          'record_consent', 'get_consents',
          'file_data_subject_request', 'advance_data_subject_request',
          'request_organization_purge', 'acknowledge_organization_purge', 'cancel_organization_purge',
          'force_organization_purge',
          -- PostgREST's pre-request check, run for every request
          'check_request'],
  'authenticated can execute exactly the tenancy, credits, files, credit account, consent, request and purge RPCs in public (not change_plan)');

select set_eq($$
  select p.proname::text from pg_proc p join pg_namespace n on n.oid = p.pronamespace
  where n.nspname = 'private' and has_function_privilege('authenticated', p.oid, 'execute')
$$, array['member_organization_ids', 'organization_ids_with_role', 'co_member_user_ids',
          'is_platform_admin', 'create_organization', 'invite_member', 'accept_invitation', 'update_member_role',
          'remove_member', 'leave_organization',
          -- the caller checks security-invoker RPCs use, the error helper, the rules table checks call
          'caller_role', 'require_member', 'authorize', 'raise', 'permitted', 'is_slug', 'is_email',
          'consume_credits', 'reserve_credits', 'commit_reservation',
          'release_reservation', 'grant_credits', 'refund_credits', 'set_credit_low_threshold', 'credit_balances_at',
          'lock_pools_of_actions', 'consume_credits_set',
          -- the files routing and the checks files-upload, files-move and files-delete run as the caller
          'file_store_for', 'file_usage', 'begin_file_upload', 'manageable_file', 'begin_file_move',
          -- the session check behind public.check_request
          'check_session',
          -- the checks the billing functions run as the caller
          'require_billing_manager', 'check_billing_return_url', 'billing_account_of', 'billing_checkout_target',
          'billing_customer_of',
          -- the credit account RPCs' bodies
          'open_credit_account', 'set_credit_limit', 'set_credit_account_status', 'update_credit_account_settings',
          'post_credit_account_transaction',
          -- the consent, data-subject request and purge RPCs' bodies
          'record_consent', 'get_consents', 'file_data_subject_request', 'advance_data_subject_request',
          'request_organization_purge', 'acknowledge_organization_purge', 'cancel_organization_purge',
          'force_organization_purge'],
  'authenticated can execute exactly the policy helpers, caller checks, rules and RPC internals in private, nothing else');

select is_empty($$
  select p.oid::regprocedure from pg_proc p join pg_namespace n on n.oid = p.pronamespace
  where n.nspname = 'private' and p.proname like '%domain_event%' and p.prorettype <> 'trigger'::regtype
    and (has_function_privilege('anon', p.oid, 'execute') or has_function_privilege('authenticated', p.oid, 'execute'))
$$, 'neither anon nor authenticated can execute the outbox functions');

-- ---------------------------------------------------------------------------------------------
-- What that means in practice
-- ---------------------------------------------------------------------------------------------
select tests.create_user('alice@schema.test');
select tests.authenticate_as('alice@schema.test');
select throws_ok($$ select * from private.domain_events $$, '42501', 'permission denied for table domain_events',
  'a signed-in user cannot read the outbox');

select tests.clear_authentication();
select throws_ok($$ select * from private.domain_events $$, '42501', 'permission denied for schema private',
  'anon cannot even name the private schema');

select tests.reset_role();
select * from finish();
rollback;
