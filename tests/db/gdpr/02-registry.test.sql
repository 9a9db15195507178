-- 02 The personal-data registry: every column of public and private that could hold personal
-- data (text, JSON, network and binary types, uuids naming a user) is registered as personal
-- (category, erasure strategy) or as checked and non-personal; no entry is stale; every table
-- with personal columns says how its subject is found (or why it needs not); the strategies fit
-- their columns; the records the law keeps are never deleted by erasure. A migration that adds
-- an unregistered column fails here: add its rows to private.personal_data_columns or
-- private.non_personal_columns (and a subject or indirect entry) in the same migration.
begin;
select plan(34);

-- ---------------------------------------------------------------------------------------------
-- The registry's shape
-- ---------------------------------------------------------------------------------------------
select has_table('private', 'personal_data_columns', 'private.personal_data_columns exists');
select has_table('private', 'personal_data_subjects', 'private.personal_data_subjects exists');
select has_table('private', 'non_personal_columns', 'private.non_personal_columns exists');
select enum_has_labels('private', 'erasure_strategy', array['delete_row', 'set_null', 'pseudonymize', 'hash', 'keep'],
  'erasure strategies: delete_row, set_null, pseudonymize, hash, keep');
select ok((select array['contact_email', 'name', 'phone', 'address', 'ip_address', 'user_agent', 'free_text', 'file', 'payment_detail',
                        'identifier', 'preference', 'metadata']::text[] <@ enum_range(null::private.personal_data_category)::text[]),
  'the data categories include contact_email, name, phone, address, ip_address, user_agent, free_text, file, payment_detail, identifier, preference, metadata');

-- ---------------------------------------------------------------------------------------------
-- Complete and consistent, as the migrations stand
-- ---------------------------------------------------------------------------------------------
select is_empty($$ select table_name, column_name from private.personal_data_problems() where problem = 'unregistered' $$,
  'every text, JSON, network, binary or user-uuid column in public and private is registered, as personal or as checked non-personal');
select is_empty($$ select table_name, column_name from private.personal_data_problems() where problem = 'stale' $$,
  'every registered column (and every table named) exists: no stale entries');
select is_empty($$ select table_name, column_name from private.personal_data_problems() where problem = 'both_lists' $$,
  'no column is both personal and non-personal');
select is_empty($$ select table_name from private.personal_data_problems() where problem in ('no_subject', 'subject_and_indirect') $$,
  'every table with personal columns has subject columns, or (only) an entry saying how its rows are reached instead');
select is_empty($$ select table_name, column_name from private.personal_data_problems() where problem = 'set_null_on_not_null' $$,
  'set_null only on nullable columns');
select is_empty($$ select table_name, column_name from private.personal_data_problems() where problem = 'strategy_for_type' $$,
  'pseudonymize only on uuid, text and JSON columns, hash only on text');
select is_empty($$ select table_name, column_name from private.personal_data_problems() where problem = 'deletes_retained' $$,
  'erasure deletes no row of a record the law keeps');
select is_empty($$ select problem from private.personal_data_problems()
                   where problem not in ('unregistered', 'stale', 'both_lists', 'no_subject', 'subject_and_indirect',
                                         'set_null_on_not_null', 'strategy_for_type', 'deletes_retained') $$,
  'and nothing else is wrong');

-- ---------------------------------------------------------------------------------------------
-- It catches a new unregistered column
-- ---------------------------------------------------------------------------------------------
create table public.gdpr_registry_probe (
  id uuid primary key,
  note text,
  owner_user_id uuid,
  approved_by uuid,
  reviewer uuid references auth.users (id),
  settings jsonb,
  client_ip inet,
  tags text[],
  counter integer,
  other_id uuid
);
select set_eq($$ select column_name from private.personal_data_problems() where problem = 'unregistered' and table_name = 'public.gdpr_registry_probe' $$,
  array['note', 'owner_user_id', 'approved_by', 'reviewer', 'settings', 'client_ip', 'tags'],
  'a new table''s text, JSON, inet and array columns and its user uuids (by name or foreign key) are reported; plain ids and numbers are not');

insert into private.personal_data_columns (table_name, column_name, category, strategy) values
  ('public.gdpr_registry_probe', 'note', 'free_text', 'set_null'),
  ('public.gdpr_registry_probe', 'owner_user_id', 'identifier', 'delete_row'),
  ('public.gdpr_registry_probe', 'approved_by', 'identifier', 'set_null'),
  ('public.gdpr_registry_probe', 'reviewer', 'identifier', 'set_null'),
  ('public.gdpr_registry_probe', 'client_ip', 'ip_address', 'set_null');
insert into private.non_personal_columns (table_name, column_name, reason) values
  ('public.gdpr_registry_probe', 'settings', 'Configuration.'),
  ('public.gdpr_registry_probe', 'tags', 'Catalogue keys.');
select is_empty($$ select 1 from private.personal_data_problems() where problem = 'unregistered' and table_name = 'public.gdpr_registry_probe' $$,
  'registered, it is no longer reported');
select results_eq($$ select problem from private.personal_data_problems() where table_name = 'public.gdpr_registry_probe' $$,
  $$ values ('no_subject') $$, 'but a table with personal columns needs its subject columns');
insert into private.personal_data_subjects (table_name, subject_column, subject_kind) values ('public.gdpr_registry_probe', 'owner_user_id', 'user_id');
select is_empty($$ select 1 from private.personal_data_problems() where table_name = 'public.gdpr_registry_probe' $$, 'with them, the table is complete');

alter table public.gdpr_registry_probe drop column note;
select results_eq($$ select problem, column_name from private.personal_data_problems() where table_name = 'public.gdpr_registry_probe' $$,
  $$ values ('stale', 'note') $$, 'a registered column that is dropped is reported stale');
delete from private.personal_data_columns where table_name = 'public.gdpr_registry_probe' and column_name = 'note';

alter table public.gdpr_registry_probe alter column approved_by set not null;
select results_eq($$ select problem, column_name from private.personal_data_problems() where table_name = 'public.gdpr_registry_probe' $$,
  $$ values ('set_null_on_not_null', 'approved_by') $$, 'set_null on a not-null column is reported');
alter table public.gdpr_registry_probe alter column approved_by drop not null;

insert into private.legal_retention (table_name, retention, legal_basis) values ('public.gdpr_registry_probe', '10 years', 'A test.');
select results_eq($$ select problem, column_name from private.personal_data_problems() where table_name = 'public.gdpr_registry_probe' $$,
  $$ values ('deletes_retained', 'owner_user_id') $$, 'delete_row in a table the law keeps is reported');
delete from private.legal_retention where table_name = 'public.gdpr_registry_probe';

select throws_ok($$ insert into private.personal_data_subjects (table_name, subject_column, subject_kind)
                    values ('public.gdpr_registry_probe', 'counter', 'user_id') $$, '23503', null,
  'a subject column must be a registered personal column');
select throws_ok($$ insert into private.personal_data_columns (table_name, column_name, category, strategy)
                    values ('public.gdpr_registry_probe', 'other_id', 'identifier', 'keep') $$, '23514', null,
  'keep needs its legal basis');

-- ---------------------------------------------------------------------------------------------
-- The decisions others rely on
-- ---------------------------------------------------------------------------------------------
select set_eq($$ select table_name from private.legal_retention where retention = '10 years' $$,
  array['public.invoices', 'public.credit_ledger', 'public.credit_account_transactions', 'public.credit_overages',
        'private.credit_pack_purchases', 'public.credit_statements'],
  'the money records are kept 10 years');
select is_empty($$ select 1 from private.legal_retention where legal_basis is null $$, 'each with its legal basis');
select results_eq($$ select column_name, strategy::text from private.personal_columns_of('public.credit_ledger') $$,
  $$ values ('actor_id', 'set_null'), ('metadata', 'pseudonymize') $$,
  'the ledger keeps its rows; who caused them and their metadata go (as its detach rule allows)');
select results_eq($$ select column_name, strategy::text from private.personal_columns_of('auth.users') where column_name in ('email', 'phone', 'raw_user_meta_data') $$,
  $$ values ('email', 'delete_row'), ('phone', 'delete_row'), ('raw_user_meta_data', 'delete_row') $$,
  'an Auth user''s email, phone and metadata go with the user (the Auth admin API deletes it)');
select results_eq($$ select column_name, category::text, strategy::text from private.personal_columns_of('public.profiles') $$,
  $$ values ('avatar_url', 'file', 'delete_row'), ('email', 'contact_email', 'delete_row'), ('full_name', 'name', 'delete_row'), ('id', 'identifier', 'delete_row') $$,
  'personal_columns_of lists a table''s personal columns with category and strategy');
select ok((select category::text = 'payment_detail' from private.personal_data_columns where table_name = 'public.billing_accounts' and column_name = 'stripe_customer_id'),
  'a Stripe customer id is pseudonymous payment data');
select ok((select strategy::text = 'hash' from private.personal_data_columns where table_name = 'private.email_suppressions' and column_name = 'email'),
  'a suppressed address is hashed, not deleted, so it stays suppressed');

select set_eq($$ select table_name || '.' || subject_column || ':' || subject_kind from private.subject_tables()
                 where table_name in ('auth.users', 'public.profiles', 'public.organization_members', 'public.organization_invitations',
                                      'private.email_messages', 'public.files', 'public.consent_records') $$,
  array['auth.users.id:user_id', 'auth.users.email:email', 'public.profiles.id:user_id', 'public.profiles.email:email',
        'public.organization_members.user_id:user_id', 'public.organization_invitations.email:email',
        'public.organization_invitations.accepted_by:user_id', 'private.email_messages.recipient:email',
        'private.email_messages.user_id:user_id', 'public.files.uploaded_by:user_id',
        'public.consent_records.user_id:user_id', 'public.consent_records.email:email'],
  'subject_tables says how a person''s rows are found: by user id or by email');
select is_empty($$ select s.table_name from private.subject_tables() s
                   join private.personal_data_columns c on c.table_name = s.table_name and c.column_name = s.subject_column
                   where s.subject_kind = 'email' and c.category <> 'contact_email' $$,
  'an email subject column is a contact email');

-- ---------------------------------------------------------------------------------------------
-- Who may read it
-- ---------------------------------------------------------------------------------------------
select tests.create_user('alice@registry.test');
select tests.authenticate_as('alice@registry.test');
select throws_ok($$ select * from private.personal_data_columns $$, '42501', null, 'a signed-in user cannot read the registry');
select throws_ok($$ select * from private.subject_tables() $$, '42501', null, 'nor call its helpers');
select tests.authenticate_as_service_role();
select isnt_empty($$ select * from private.subject_tables() $$, 'the service role (the gdpr functions) reads it');
select tests.reset_role();

select * from finish();
rollback;
