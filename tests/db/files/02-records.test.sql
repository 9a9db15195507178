-- 02 The record of every file: uploads checked and routed, their outcome (ready or forgotten),
-- who may manage a file, moves between the stores (resumable), deletion with its event, usage per
-- store, orphans (never a referenced object, never before the grace period), files whose object
-- is gone, who reads the records, and the cleanup job in the registry.
--
-- Cast: alice owns Acme, with bob (admin) and dave (member); erin owns Globex; oscar is a
-- platform admin and nothing in either.
begin;
select plan(65);

select tests.create_user('alice@records.test');
select tests.create_user('bob@records.test');
select tests.create_user('dave@records.test');
select tests.create_user('erin@records.test');
select tests.create_user('oscar@records.test', '{"platform_admin": true}');
select tests.authenticate_as('alice@records.test');
select public.create_organization('Acme', 'acme-records-test') as acme \gset
select tests.authenticate_as('erin@records.test');
select public.create_organization('Globex', 'globex-records-test') as globex \gset
select tests.reset_role();
insert into public.organization_members (organization_id, user_id, role) values
  (:'acme', tests.get_user_id('bob@records.test'), 'admin'),
  (:'acme', tests.get_user_id('dave@records.test'), 'member');

-- ---------------------------------------------------------------------------------------------
-- Beginning an upload: checked and routed
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('dave@records.test');
select private.begin_file_upload(:'acme', 'user_upload', ' Contract.pdf ', 'Application/PDF', 1000) as up1 \gset
select :'up1'::jsonb ->> 'file_id' as f1, :'up1'::jsonb ->> 'object_name' as o1, :'up1'::jsonb ->> 'store' as s1 \gset
select is(:'s1'::text, 'private', 'a user upload goes to the private store');
select ok(:'o1' = format('%s/user_upload/%s/Contract.pdf', :'acme', :'f1'),
  'its object is <organization>/<context>/<file id>/<name>, the name trimmed');
select tests.reset_role();
select results_eq(format($$ select status::text, store, content_type, uploaded_by, size_bytes from public.files where id = %L $$, :'f1'),
  format($$ values ('uploading', 'private', 'application/pdf', %L::uuid, 1000::bigint) $$, tests.get_user_id('dave@records.test')),
  'the record waits for its bytes, with its uploader and the content type lower-cased');

select tests.authenticate_as('dave@records.test');
select throws_ok(format($$ select private.begin_file_upload(%L, 'no_such_context', 'a.pdf', 'application/pdf', 1) $$, :'acme'),
  '22023', 'invalid_context', 'an unknown context is refused');
select throws_ok(format($$ select private.begin_file_upload(%L, 'user_upload', '../etc/passwd', 'text/plain', 1) $$, :'acme'),
  '22023', 'invalid_file_name', 'a name with a slash is refused');
select throws_ok(format($$ select private.begin_file_upload(%L, 'user_upload', E'bad\nname.txt', 'text/plain', 1) $$, :'acme'),
  '22023', 'invalid_file_name', 'a name with a control character is refused');
select throws_ok(format($$ select private.begin_file_upload(%L, 'user_upload', repeat('a', 256), 'text/plain', 1) $$, :'acme'),
  '22023', 'invalid_file_name', 'a name over 255 characters is refused');
select throws_ok(format($$ select private.begin_file_upload(%L, 'user_upload', '  ', 'text/plain', 1) $$, :'acme'),
  '22023', 'invalid_file_name', 'a blank name is refused');
select throws_ok(format($$ select private.begin_file_upload(%L, 'invoice', 'inv.png', 'image/png', 1) $$, :'acme'),
  '22023', 'file_type_not_allowed', 'a type the context does not take is refused');
select throws_ok(format($$ select private.begin_file_upload(%L, 'user_upload', 'a.exe', 'application/x-msdownload', 1) $$, :'acme'),
  '22023', 'file_type_not_allowed', 'an executable type is refused');
select throws_ok(format($$ select private.begin_file_upload(%L, 'invoice', 'inv.pdf', 'application/pdf', 10485761) $$, :'acme'),
  '22023', 'file_too_large', 'a file over its context''s limit is refused');
select throws_ok(format($$ select private.begin_file_upload(%L, 'invoice', 'inv.pdf', 'application/pdf', 1, true) $$, :'acme'),
  'P0001', 'not_publishable', 'an invoice is never public');
select throws_ok(format($$ select private.begin_file_upload(%L, 'public_asset', 'logo.png', 'image/png', 1, true) $$, :'acme'),
  '42501', 'not_authorized', 'a plain member does not publish');
select is(private.begin_file_upload(:'acme', 'public_asset', 'draft.png', 'image/png', 1, false) ->> 'store', 'private',
  'an unpublished asset of a plain member goes to the private store');
select throws_ok(format($$ select private.begin_file_upload(%L, 'user_upload', 'a.pdf', 'application/pdf', 1) $$, :'globex'),
  '42501', 'not_authorized', 'nobody uploads for an organization they are not a member of');

select tests.authenticate_as('bob@records.test');
select private.begin_file_upload(:'acme', 'public_asset', 'logo.png', 'image/png', 2000, true) as up2 \gset
select :'up2'::jsonb ->> 'file_id' as f2, :'up2'::jsonb ->> 'object_name' as o2, :'up2'::jsonb ->> 'store' as s2 \gset
select is(:'s2'::text, 'public', 'an admin''s published asset goes to the public store');

select tests.clear_authentication();
select throws_ok(format($$ select private.begin_file_upload(%L, 'user_upload', 'a.pdf', 'application/pdf', 1) $$, :'acme'),
  '42501', null, 'anon cannot begin an upload');
select tests.authenticate_as('dave@records.test');
select throws_ok(format($$ select private.finish_file_upload(%L, 10) $$, :'f1'),
  '42501', null, 'a user cannot mark their own upload done (only files-upload, as the service role)');
select throws_ok($$ insert into public.files (organization_id, context, store, object_name, file_name, content_type)
                    values ('00000000-0000-0000-0000-000000000000', 'invoice', 'private', 'x', 'x', 'application/pdf') $$,
  '42501', null, 'nor write records directly');

-- ---------------------------------------------------------------------------------------------
-- The outcome of an upload
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as_service_role();
select lives_ok(format($$ select private.finish_file_upload(%L, 1234) $$, :'f1'), 'files-upload marks an upload done');
select lives_ok(format($$ select private.finish_file_upload(%L, 2000) $$, :'f2'), 'and another');
select throws_ok(format($$ select private.finish_file_upload(%L, 1) $$, :'f1'),
  'PT404', 'file_not_found', 'only once');
select results_eq(format($$ select status::text, size_bytes from public.files where id = %L $$, :'f1'),
  $$ values ('ready', 1234::bigint) $$, 'with the size that arrived');
select is((select payload ->> 'uploaded_by' from private.domain_events where type = 'file.uploaded' and payload ->> 'file_id' = :'f1'),
  tests.get_user_id('dave@records.test')::text, 'a file.uploaded event names the uploader');
select tests.authenticate_as('dave@records.test');
select private.begin_file_upload(:'acme', 'receipt', 'r.png', 'image/png', 10) as up3 \gset
select :'up3'::jsonb ->> 'file_id' as f3, :'up3'::jsonb ->> 'object_name' as o3, :'up3'::jsonb ->> 'store' as s3 \gset
select tests.authenticate_as_service_role();
select private.abandon_file_upload(:'f3');
select private.abandon_file_upload(:'f1');
select is((select count(*)::int from public.files where id in (:'f1', :'f3')), 1,
  'a refused upload is forgotten; a ready file is never abandoned');

-- ---------------------------------------------------------------------------------------------
-- Reading the records
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('dave@records.test');
select ok((select count(*) from public.files where organization_id = :'acme') >= 2, 'members read their organization''s records');
select tests.authenticate_as('erin@records.test');
select is((select count(*)::int from public.files where organization_id = :'acme'), 0, 'a stranger reads none');
select tests.authenticate_as('oscar@records.test');
select ok((select count(*) from public.files where organization_id = :'acme') >= 2, 'a platform admin reads every organization''s');
select tests.clear_authentication();
select throws_ok($$ select * from public.files $$, '42501', null, 'anon has no access to the records');

-- ---------------------------------------------------------------------------------------------
-- Who manages a file
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('dave@records.test');
select throws_ok(format($$ select private.manageable_file(%L) $$, :'f1'),
  '42501', 'not_authorized', 'a plain member does not manage files');
select tests.authenticate_as('erin@records.test');
select throws_ok(format($$ select private.manageable_file(%L) $$, :'f1'),
  'PT404', 'file_not_found', 'for a stranger the file does not exist');
select throws_ok($$ select private.manageable_file(gen_random_uuid()) $$, 'PT404', 'file_not_found', 'nor does one that does not');
select tests.authenticate_as('bob@records.test');
select is((private.manageable_file(:'f1')).id::text, :'f1', 'an admin manages the organization''s files');
select tests.authenticate_as('oscar@records.test');
select is((private.manageable_file(:'f1')).id::text, :'f1', 'so does a platform admin');

-- ---------------------------------------------------------------------------------------------
-- Moving between the stores
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('alice@records.test');
select throws_ok(format($$ select private.begin_file_move(%L, 'public') $$, :'f1'),
  'P0001', 'not_publishable', 'a user upload is never published');
select throws_ok(format($$ select private.begin_file_move(%L, 'elsewhere') $$, :'f2'),
  '22023', 'invalid_input', 'the store is private or public');
select is((private.begin_file_move(:'f1', 'private')).status::text, 'ready',
  'moving to the store it is in is a no-op');
select results_eq(format($$ select status::text, move_to_store, move_to_object_name = object_name
                           from private.begin_file_move(%L, 'private') $$, :'f2'),
  $$ values ('moving', 'private', true) $$, 'unpublishing marks the file moving, to the same name in the other store');
select results_eq(format($$ select status::text, move_to_store from private.begin_file_move(%L, 'private') $$, :'f2'),
  $$ values ('moving', 'private') $$, 'run again (after a crash), the move under way is resumed');
select throws_ok(format($$ select private.begin_file_move(%L, 'public') $$, :'f2'),
  'PT409', 'file_not_ready', 'a file moving one way cannot start moving the other');
select throws_ok(format($$ select private.switch_file_store(%L) $$, :'f2'),
  '42501', null, 'only files-move (the service role) switches a file to its copy');
select tests.authenticate_as_service_role();
select results_eq(format($$ select store, status::text, move_to_store from private.switch_file_store(%L) $$, :'f2'),
  $$ values ('private', 'ready', null::text) $$, 'the switch points the record at the copy');
select results_eq(format($$ select store, status::text from private.switch_file_store(%L) $$, :'f2'),
  $$ values ('private', 'ready') $$, 'switching again changes nothing');
select is((select count(*)::int from private.domain_events where type = 'file.moved' and payload ->> 'file_id' = :'f2'), 1,
  'one file.moved event');

-- ---------------------------------------------------------------------------------------------
-- Usage, orphans and files whose object is gone
-- ---------------------------------------------------------------------------------------------
select tests.reset_role();
-- Only this test's objects, until the rollback.
delete from storage.objects;
insert into storage.buckets (id, name) values ('other-bucket', 'other-bucket');
insert into storage.objects (bucket_id, name, metadata, created_at) values
  -- the object of up1 (referenced), old
  ('private', :'o1', '{"size": 1234}', now() - interval '3 days'),
  -- an old object nothing references: an orphan
  ('private', :'acme' || '/user_upload/0a0a0a0a-0a0a-4a0a-8a0a-0a0a0a0a0a0a/left-behind.pdf', '{"size": 50}', now() - interval '2 days'),
  -- a fresh object nothing references yet (an upload on its way): not an orphan yet
  ('private', :'acme' || '/user_upload/0b0b0b0b-0b0b-4b0b-8b0b-0b0b0b0b0b0b/arriving.pdf', '{"size": 60}', now() - interval '1 hour'),
  -- the old copy a crashed move left in the public store: an orphan
  ('public', :'o2', '{"size": 2000}', now() - interval '2 days'),
  -- an object of another bucket is none of the cleanup's business
  ('other-bucket', 'x/y.pdf', '{"size": 1}', now() - interval '9 days');
select tests.authenticate_as_service_role();
select results_eq($$ select bucket_id, storage.filename(name) from private.orphan_objects() order by 1, 2 $$,
  $$ values ('private', 'left-behind.pdf'), ('public', 'logo.png') $$,
  'orphans: old objects no file names; never a referenced one, a fresh one, or another bucket''s');
select is((select count(*)::int from private.orphan_objects(now() + interval '1 day')), 3,
  'a day later the arriving object is an orphan too, if still nothing names it');
select is((select count(*)::int from private.orphan_objects(now(), 1)), 1, 'in batches');
select results_eq($$ select file_id::text from private.files_missing_objects() where organization_id = $$ || quote_literal(:'acme'),
  format($$ values (%L) $$, :'f2'),
  'a ready file whose object is gone is reported (up2 now lives in private, where no object is)');

select tests.authenticate_as('alice@records.test');
select results_eq(format($$ select * from public.get_file_usage(%L) $$, :'acme'),
  $$ values ('private', 3::bigint, 1344::bigint), ('public', 1::bigint, 2000::bigint) $$,
  'usage per store: objects and bytes, as Storage counts them');
select tests.authenticate_as('bob@records.test');
select lives_ok(format($$ select * from public.get_file_usage(%L) $$, :'acme'), 'admins see the usage');
select tests.authenticate_as('dave@records.test');
select throws_ok(format($$ select * from public.get_file_usage(%L) $$, :'acme'), '42501', 'not_authorized', 'plain members do not');
select tests.authenticate_as('erin@records.test');
select throws_ok(format($$ select * from public.get_file_usage(%L) $$, :'acme'), '42501', 'not_authorized', 'nor strangers');
select tests.authenticate_as('oscar@records.test');
select is((select sum(objects)::int from public.get_file_usage(:'acme')), 4, 'platform admins see any organization''s');
select tests.authenticate_as('dave@records.test');
select throws_ok($$ select * from private.orphan_objects() $$, '42501', null, 'only the service role lists orphans');

-- ---------------------------------------------------------------------------------------------
-- Deleting
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as_service_role();
select set_config('request.jwt.claim.sub', tests.get_user_id('bob@records.test')::text, true);
select private.forget_file(:'f2');
select set_config('request.jwt.claim.sub', '', true);
select is((select count(*)::int from public.files where id = :'f2'), 0, 'the record is gone');
select is((select payload ->> 'deleted_by' from private.domain_events where type = 'file.deleted' and payload ->> 'file_id' = :'f2'),
  tests.get_user_id('bob@records.test')::text, 'and a file.deleted event says who deleted it');
select lives_ok(format($$ select private.forget_file(%L) $$, :'f2'), 'forgetting a forgotten file is a no-op');
select tests.authenticate_as('alice@records.test');
select throws_ok(format($$ select private.forget_file(%L) $$, :'f1'), '42501', null,
  'users delete through files-delete, which removes the object first');

-- ---------------------------------------------------------------------------------------------
-- The references registry and the cleanup job
-- ---------------------------------------------------------------------------------------------
select tests.reset_role();
select set_eq($$ select table_name || ':' || store_column || '/' || object_column from private.file_references $$,
  $$ values ('public.files:store/object_name'), ('public.files:move_to_store/move_to_object_name'),
          ('private.data_exports:store/object_name') $$,
  'the files record names its objects, a moving file its copy, and a data export its archive');
select results_eq($$ select kind::text, command, enabled from private.jobs where name = 'files-cleanup' $$,
  $$ values ('http', 'files-cleanup', true) $$, 'the cleanup runs from the job registry, calling files-cleanup');
select ok((select relrowsecurity from pg_class where oid = 'public.files'::regclass), 'public.files is under RLS');
select ok(not has_table_privilege('authenticated', 'public.files', 'insert,update,delete'), 'users write no records directly');
select ok(not has_function_privilege('anon', 'public.get_file_usage(uuid)', 'execute'), 'anon cannot ask for usage');
select is((select count(*)::int from pg_policies where schemaname = 'public' and tablename = 'files'), 1, 'one policy: reading');
select is((select count(*)::int from private.error_codes where code in
  ('invalid_file_name', 'file_type_not_allowed', 'file_too_large', 'content_type_mismatch', 'file_not_found', 'file_not_ready',
   'not_publishable', 'invalid_context')), 8, 'every files code is in the catalogue');

select * from finish();
rollback;
