-- 01 The two stores: what goes where (the routing function), the buckets' limits, and the
-- storage.objects policies both ways for every caller: plain member, admin, owner, a stranger
-- (owner of another organization), anon and the service role.
--
-- Cast: alice owns Acme, with bob (admin), carol (billing) and dave (member); erin owns Globex.
begin;
select plan(65);

select tests.create_user('alice@files.test');
select tests.create_user('bob@files.test');
select tests.create_user('carol@files.test');
select tests.create_user('dave@files.test');
select tests.create_user('erin@files.test');
select tests.authenticate_as('alice@files.test');
select public.create_organization('Acme', 'acme-files-test') as acme \gset
select tests.authenticate_as('erin@files.test');
select public.create_organization('Globex', 'globex-files-test') as globex \gset
select tests.reset_role();
insert into public.organization_members (organization_id, user_id, role) values
  (:'acme', tests.get_user_id('bob@files.test'), 'admin'),
  (:'acme', tests.get_user_id('carol@files.test'), 'billing'),
  (:'acme', tests.get_user_id('dave@files.test'), 'member');

-- ---------------------------------------------------------------------------------------------
-- Routing: private unless a publishable context is published
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('dave@files.test');
select results_eq(
  $$ select c, public.file_store_for(c, false), public.file_store_for(c, true)
     from unnest('{invoice,receipt,legal_doc,user_upload,customer_document,data_export,kb_article,public_asset}'::text[]) as c $$,
  $$ values ('invoice', 'private', 'private'), ('receipt', 'private', 'private'), ('legal_doc', 'private', 'private'),
            ('user_upload', 'private', 'private'), ('customer_document', 'private', 'private'),
            ('data_export', 'private', 'private'), ('kb_article', 'private', 'public'), ('public_asset', 'private', 'public') $$,
  'sensitive contexts are private even when "published"; kb_article and public_asset are public only when published');
select is(public.file_store_for('no_such_context', true), 'private', 'an unknown context defaults to private');
select is(public.file_store_for('kb_article'), 'private', 'unpublished is the default');
select is(public.file_store_for(null, null), 'private', 'nothing known: private');
select tests.clear_authentication();
select throws_ok($$ select public.file_store_for('invoice') $$, '42501', null, 'anon cannot call the routing function');
select tests.reset_role();

-- ---------------------------------------------------------------------------------------------
-- The buckets and their limits
-- ---------------------------------------------------------------------------------------------
select results_eq($$ select id, public, file_size_limit from storage.buckets where id in ('private', 'public') order by id $$,
  $$ values ('private', false, 52428800::bigint), ('public', true, 10485760::bigint) $$,
  'private is not public and takes up to 50 MiB; public is public and takes up to 10 MiB');
select ok((select 'application/pdf' = any (allowed_mime_types) and not ('application/x-msdownload' = any (allowed_mime_types))
           from storage.buckets where id = 'private'), 'the private bucket takes PDFs and no executables');
select ok((select not ('application/zip' = any (allowed_mime_types)) and 'image/png' = any (allowed_mime_types)
           from storage.buckets where id = 'public'), 'the public bucket takes only what publishable contexts take');
select ok((select bool_and(max_bytes <= (select file_size_limit from storage.buckets b where b.id = 'public'))
           from public.file_contexts where publishable), 'every publishable context fits the public bucket''s limit');

-- Objects to act on, placed as the service role would (it bypasses RLS), and only those: what
-- other suites left is out of sight until the rollback.
delete from storage.objects;
insert into storage.objects (bucket_id, name, metadata) values
  ('private', :'acme' || '/user_upload/11111111-1111-4111-8111-111111111111/contract.pdf', '{"size": 100}'),
  ('private', :'acme' || '/invoice/22222222-2222-4222-8222-222222222222/inv.pdf', '{"size": 200}'),
  ('private', :'globex' || '/user_upload/33333333-3333-4333-8333-333333333333/secret.pdf', '{"size": 300}'),
  ('public', :'acme' || '/public_asset/44444444-4444-4444-8444-444444444444/logo.png', '{"size": 400}'),
  ('public', :'globex' || '/public_asset/55555555-5555-4555-8555-555555555555/banner.png', '{"size": 500}');

-- ---------------------------------------------------------------------------------------------
-- private: members read and write their organization's folder; owners and admins delete
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('dave@files.test');
select is((select count(*)::int from storage.objects where bucket_id = 'private'), 2,
  'a plain member reads their organization''s private objects, and no other''s');
select lives_ok(format($$ insert into storage.objects (bucket_id, name) values ('private', '%s/user_upload/66666666-6666-4666-8666-666666666666/notes.txt') $$, :'acme'),
  'a plain member uploads into their organization''s private folder');
with u as (update storage.objects set metadata = '{"size": 101}' where bucket_id = 'private' and name like :'acme' || '/user_upload/1111%' returning 1)
select is(count(*)::int, 1,
  'a plain member replaces a private object of their organization') from u;
with d as (delete from storage.objects where bucket_id = 'private' and name like :'acme' || '/%' returning 1)
select is(count(*)::int, 0,
  'a plain member deletes nothing in private') from d;
select throws_ok(format($$ insert into storage.objects (bucket_id, name) values ('private', '%s/user_upload/77777777-7777-4777-8777-777777777777/x.pdf') $$, :'globex'),
  '42501', null, 'a plain member cannot upload into another organization''s folder');
select throws_ok($$ insert into storage.objects (bucket_id, name) values ('private', 'loose.pdf') $$,
  '42501', null, 'nor outside any organization''s folder');
select throws_ok($$ insert into storage.objects (bucket_id, name) values ('private', 'not-a-uuid/user_upload/x/loose.pdf') $$,
  '42501', null, 'nor into a folder that is no organization');
select throws_ok(format($$ update storage.objects set name = '%s/user_upload/88888888-8888-4888-8888-888888888888/stolen.pdf'
                          where bucket_id = 'private' and name like '%s/user_upload/1111%%' $$, :'globex', :'acme'),
  '42501', null, 'nor move an object into another organization''s folder');

select tests.authenticate_as('carol@files.test');
select is((select count(*)::int from storage.objects where bucket_id = 'private'), 3,
  'a billing member reads the organization''s private objects too');
with d as (delete from storage.objects where bucket_id = 'private' returning 1)
select is(count(*)::int, 0,
  'and deletes nothing') from d;

select tests.authenticate_as('bob@files.test');
with d as (delete from storage.objects where bucket_id = 'private'
  and name like :'acme' || '/user_upload/6666%' returning 1)
select is(count(*)::int, 1, 'an admin deletes a private object of their organization') from d;
select tests.authenticate_as('alice@files.test');
select is((select count(*)::int from storage.objects where bucket_id = 'private'), 2, 'the owner reads the organization''s private objects');
with d as (delete from storage.objects where bucket_id = 'private' and name like :'globex' || '/%' returning 1)
select is(count(*)::int, 0,
  'but deletes nothing of another organization''s') from d;

-- The stranger: erin owns Globex and is nothing in Acme.
select tests.authenticate_as('erin@files.test');
select is((select count(*)::int from storage.objects where bucket_id = 'private' and name like :'acme' || '/%'), 0,
  'a stranger reads (and lists) none of another organization''s private objects');
select is((select array_agg(name) from storage.objects where bucket_id = 'private'),
  array[:'globex' || '/user_upload/33333333-3333-4333-8333-333333333333/secret.pdf'], 'only their own');
select throws_ok(format($$ insert into storage.objects (bucket_id, name) values ('private', '%s/user_upload/11111111-1111-4111-8111-111111111111/contract.pdf') $$, :'acme'),
  '42501', null, 'a stranger cannot write into another organization''s folder (nor overwrite by name)');
with u as (update storage.objects set metadata = '{}' where bucket_id = 'private' and name like :'acme' || '/%' returning 1)
select is(count(*)::int, 0,
  'a stranger changes none of another organization''s objects') from u;
with d as (delete from storage.objects where bucket_id = 'private' and name like :'acme' || '/%' returning 1)
select is(count(*)::int, 0,
  'a stranger deletes none of another organization''s objects') from d;

select tests.clear_authentication();
select is((select count(*)::int from storage.objects where bucket_id = 'private'), 0, 'anon reads no private object');
select throws_ok(format($$ insert into storage.objects (bucket_id, name) values ('private', '%s/user_upload/99999999-9999-4999-8999-999999999999/x.pdf') $$, :'acme'),
  '42501', null, 'anon uploads nothing into private');
with d as (delete from storage.objects where bucket_id = 'private' returning 1)
select is(count(*)::int, 0, 'anon deletes nothing') from d;

-- ---------------------------------------------------------------------------------------------
-- public: anyone reads; owners and admins write their organization's folder
-- ---------------------------------------------------------------------------------------------
select is((select count(*)::int from storage.objects where bucket_id = 'public'), 2, 'anon reads every public object');
select throws_ok(format($$ insert into storage.objects (bucket_id, name) values ('public', '%s/public_asset/aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa/x.png') $$, :'acme'),
  '42501', null, 'anon publishes nothing');
with u as (update storage.objects set metadata = '{}' where bucket_id = 'public' returning 1)
select is(count(*)::int, 0, 'anon changes no public object') from u;
with d as (delete from storage.objects where bucket_id = 'public' returning 1)
select is(count(*)::int, 0, 'anon deletes no public object') from d;

select tests.authenticate_as('dave@files.test');
select is((select count(*)::int from storage.objects where bucket_id = 'public'), 2, 'a member reads every public object');
select throws_ok(format($$ insert into storage.objects (bucket_id, name) values ('public', '%s/public_asset/bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb/x.png') $$, :'acme'),
  '42501', null, 'a plain member cannot publish');
with u as (update storage.objects set metadata = '{}' where bucket_id = 'public' returning 1)
select is(count(*)::int, 0,
  'nor change a public object of their organization') from u;
with d as (delete from storage.objects where bucket_id = 'public' returning 1)
select is(count(*)::int, 0, 'nor delete one') from d;

select tests.authenticate_as('bob@files.test');
select lives_ok(format($$ insert into storage.objects (bucket_id, name) values ('public', '%s/public_asset/cccccccc-cccc-4ccc-8ccc-cccccccccccc/hero.png') $$, :'acme'),
  'an admin publishes into their organization''s public folder');
with u as (update storage.objects set metadata = '{"size": 1}' where bucket_id = 'public' and name like :'acme' || '/%' returning 1)
select is(count(*)::int, 2,
  'and changes their organization''s public objects') from u;
with u as (update storage.objects set metadata = '{}' where bucket_id = 'public' and name like :'globex' || '/%' returning 1)
select is(count(*)::int, 0,
  'but not another organization''s') from u;
select throws_ok(format($$ insert into storage.objects (bucket_id, name) values ('public', '%s/public_asset/dddddddd-dddd-4ddd-8ddd-dddddddddddd/x.png') $$, :'globex'),
  '42501', null, 'nor publish into another organization''s folder');
with d as (delete from storage.objects where bucket_id = 'public' and name like :'acme' || '/public_asset/cccc%' returning 1)
select is(count(*)::int, 1,
  'an admin deletes their organization''s public object') from d;

select tests.authenticate_as('alice@files.test');
select lives_ok(format($$ insert into storage.objects (bucket_id, name) values ('public', '%s/kb_article/eeeeeeee-eeee-4eee-8eee-eeeeeeeeeeee/diagram.png') $$, :'acme'),
  'the owner publishes');
with d as (delete from storage.objects where bucket_id = 'public' and name like :'acme' || '/kb_article/%' returning 1)
select is(count(*)::int, 1,
  'and deletes') from d;

select tests.authenticate_as('erin@files.test');
select is((select count(*)::int from storage.objects where bucket_id = 'public' and name like :'acme' || '/%'), 1,
  'a stranger reads another organization''s public objects (they are public)');
select throws_ok(format($$ insert into storage.objects (bucket_id, name) values ('public', '%s/public_asset/44444444-4444-4444-8444-444444444444/logo.png') $$, :'acme'),
  '42501', null, 'but cannot overwrite one');
with u as (update storage.objects set metadata = '{}' where bucket_id = 'public' and name like :'acme' || '/%' returning 1)
select is(count(*)::int, 0,
  'nor change one') from u;
with d as (delete from storage.objects where bucket_id = 'public' and name like :'acme' || '/%' returning 1)
select is(count(*)::int, 0,
  'nor delete one') from d;
with d as (delete from storage.objects where bucket_id = 'public' and name like :'globex' || '/%' returning 1)
select is(count(*)::int, 1,
  'while the owner of Globex deletes Globex''s') from d;

-- ---------------------------------------------------------------------------------------------
-- The service role: everything, in both stores
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as_service_role();
select is((select count(*)::int from storage.objects where bucket_id in ('private', 'public')), 4, 'the service role reads every object');
select lives_ok(format($$ insert into storage.objects (bucket_id, name) values ('public', '%s/public_asset/ffffffff-ffff-4fff-8fff-ffffffffffff/x.png'),
                                                                          ('private', 'anywhere.pdf') $$, :'acme'),
  'the service role writes anywhere in both stores');
with d as (delete from storage.objects where bucket_id in ('private', 'public') returning 1)
select is(count(*)::int, 6,
  'and deletes anything') from d;

-- ---------------------------------------------------------------------------------------------
-- Grants as hosted gives them, and no more
-- ---------------------------------------------------------------------------------------------
select tests.reset_role();
-- (Hosted grants anon and authenticated every command on storage.buckets and lets RLS refuse;
-- the local stand-in grants only select. Either way, a user makes no bucket.)
select tests.authenticate_as('alice@files.test');
select throws_ok($$ insert into storage.buckets (id, name, public) values ('mine', 'mine', true) $$, '42501', null,
  'a user creates no bucket');
select tests.reset_role();
select ok(has_table_privilege('authenticated', 'public.file_contexts', 'select') and not has_table_privilege('anon', 'public.file_contexts', 'select'),
  'signed-in users read the file contexts; anon does not');
select ok(not has_table_privilege('authenticated', 'public.file_contexts', 'insert'), 'nor writes them');
select ok((select relrowsecurity from pg_class where oid = 'public.file_contexts'::regclass), 'file_contexts is under RLS');
select is((select count(*)::int from pg_policies where schemaname = 'storage' and tablename = 'objects'
           and policyname in ('Members read their organization''s private files', 'Members add files to their private folder',
                              'Members replace files in their private folder', 'Owners and admins delete their private files',
                              'Anyone reads public files', 'Owners and admins publish into their public folder',
                              'Owners and admins replace their public files', 'Owners and admins delete their public files')), 8,
  'one policy per command and store on storage.objects');
select ok(not exists (select 1 from pg_policies where schemaname = 'storage' and tablename = 'objects' and 'public' = any (roles)),
  'no storage policy is for the public pseudo-role');
select is((select count(*)::int from pg_policies where schemaname = 'storage' and tablename = 'objects' and 'anon' = any (roles)), 1,
  'anon has exactly one policy: reading public files');
select ok(not exists (select 1 from pg_policies where schemaname = 'storage' and tablename = 'objects'
                      and coalesce(qual, with_check) !~ 'bucket_id'), 'every policy is tied to its bucket');
select ok((select file_size_limit from storage.buckets where id = 'private') >= (select max(max_bytes) from public.file_contexts),
  'every context fits the private bucket''s limit');
select ok((select bool_and(t = any ((select allowed_mime_types from storage.buckets where id = 'private')::text[]))
           from public.file_contexts, unnest(allowed_mime_types) t), 'the private bucket takes every type a context takes');
select ok((select bool_and(t = any ((select allowed_mime_types from storage.buckets where id = 'public')::text[]))
           from public.file_contexts, unnest(allowed_mime_types) t where publishable), 'the public bucket takes every type a publishable context takes');
select is(public.file_store_for('public_asset', true), 'public', 'the routing function also answers the superuser (it is what the SDK asks)');

select * from finish();
rollback;
