-- 01 Profiles: one per auth user, created and kept in sync by trigger; a user edits their own
-- name and avatar, reads their own and their teammates' profiles, and nothing else.
begin;
select plan(27);

-- ---------------------------------------------------------------------------------------------
-- Created by the auth.users trigger
-- ---------------------------------------------------------------------------------------------
insert into auth.users (id, email) values ('02000000-0000-4000-8000-000000000001', 'plain@profiles.test');

select results_eq($$
  select email, full_name, avatar_url from public.profiles where id = '02000000-0000-4000-8000-000000000001'
$$, $$ values ('plain@profiles.test', null::text, null::text) $$,
  'inserting an auth user with just id and email creates a profile carrying the email');

select tests.create_user('alice@profiles.test', '{}',
  '{"full_name": "Alice Liddell", "name": "alice", "avatar_url": "https://img.test/alice.png", "picture": "https://img.test/other.png"}');
select results_eq($$
  select full_name, avatar_url from public.profiles where id = tests.get_user_id('alice@profiles.test')
$$, $$ values ('Alice Liddell', 'https://img.test/alice.png') $$,
  'full_name and avatar_url come from the sign-up metadata, preferred over name and picture');

select tests.create_user('bob@profiles.test', '{}', '{"name": "Bob Builder", "picture": "https://img.test/bob.png"}');
select results_eq($$
  select full_name, avatar_url from public.profiles where id = tests.get_user_id('bob@profiles.test')
$$, $$ values ('Bob Builder', 'https://img.test/bob.png') $$,
  'without full_name and avatar_url, the metadata name and picture are used (OAuth providers)');

select tests.create_user('carol@profiles.test', '{}', '{"full_name": "Carol"}');
select tests.create_user('dave@profiles.test', '{}', '{"full_name": "Dave"}');

-- ---------------------------------------------------------------------------------------------
-- Kept in sync with auth.users
-- ---------------------------------------------------------------------------------------------
update auth.users set email = 'bob.builder@profiles.test' where id = tests.get_user_id('bob@profiles.test');
select is((select email from public.profiles where full_name = 'Bob Builder' and email like '%@profiles.test'),
  'bob.builder@profiles.test', 'changing the auth email changes the profile email');
update auth.users set email = 'bob@profiles.test' where email = 'bob.builder@profiles.test';

update auth.users set raw_user_meta_data = '{"full_name": "Robert Builder"}' where id = tests.get_user_id('bob@profiles.test');
select results_eq($$
  select full_name, avatar_url from public.profiles where id = tests.get_user_id('bob@profiles.test')
$$, $$ values ('Robert Builder', 'https://img.test/bob.png') $$,
  'new metadata with a name updates full_name and keeps the avatar the metadata no longer carries');

-- A name the user edited survives an auth update that does not touch the metadata.
update public.profiles set full_name = 'Bobby' where id = tests.get_user_id('bob@profiles.test');
update auth.users set email = 'bobby@profiles.test' where id = tests.get_user_id('bob@profiles.test');
select results_eq($$
  select email, full_name from public.profiles where id = tests.get_user_id('bobby@profiles.test')
$$, $$ values ('bobby@profiles.test', 'Bobby') $$,
  'an email change does not overwrite the name the user chose');
update auth.users set email = 'bob@profiles.test' where email = 'bobby@profiles.test';

delete from auth.users where id = '02000000-0000-4000-8000-000000000001';
select is_empty($$ select 1 from public.profiles where id = '02000000-0000-4000-8000-000000000001' $$,
  'deleting the auth user deletes the profile');

-- ---------------------------------------------------------------------------------------------
-- Teams: alice and carol share Acme; bob belongs to Globex with carol; dave is alone.
-- ---------------------------------------------------------------------------------------------
insert into public.organizations (id, name, slug) values
  ('02000000-0000-4000-8000-00000000a0a0', 'Acme', 'acme-profiles-test'),
  ('02000000-0000-4000-8000-00000000b0b0', 'Globex', 'globex-profiles-test');
insert into public.organization_members (organization_id, user_id, role) values
  ('02000000-0000-4000-8000-00000000a0a0', tests.get_user_id('alice@profiles.test'), 'owner'),
  ('02000000-0000-4000-8000-00000000a0a0', tests.get_user_id('carol@profiles.test'), 'member'),
  ('02000000-0000-4000-8000-00000000b0b0', tests.get_user_id('bob@profiles.test'), 'owner'),
  ('02000000-0000-4000-8000-00000000b0b0', tests.get_user_id('carol@profiles.test'), 'billing');

-- ---------------------------------------------------------------------------------------------
-- Reading
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('alice@profiles.test');
select results_eq($$ select email from public.profiles order by email $$,
  array['alice@profiles.test', 'carol@profiles.test'],
  'alice sees her own profile and her teammate carol''s, not bob''s or dave''s');

select tests.authenticate_as('carol@profiles.test');
select results_eq($$ select email from public.profiles order by email $$,
  array['alice@profiles.test', 'bob@profiles.test', 'carol@profiles.test'],
  'carol, in two organizations, sees the members of both');

select tests.authenticate_as('dave@profiles.test');
select results_eq($$ select email from public.profiles $$, array['dave@profiles.test'],
  'dave, in no organization, sees only himself');

-- ---------------------------------------------------------------------------------------------
-- Writing
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('alice@profiles.test');
select isnt_empty($$
  update public.profiles set full_name = 'Alice L.', avatar_url = 'https://img.test/alice-2.png'
  where id = tests.get_user_id('alice@profiles.test') returning id
$$, 'alice can change her own name and avatar');
select results_eq($$
  select full_name, avatar_url from public.profiles where id = tests.get_user_id('alice@profiles.test')
$$, $$ values ('Alice L.', 'https://img.test/alice-2.png') $$,
  'alice''s new name and avatar are stored');

select throws_ok($$
  update public.profiles set email = 'alice@elsewhere.test' where id = tests.get_user_id('alice@profiles.test')
$$, '42501', 'permission denied for table profiles',
  'alice cannot change her profile email (it follows auth.users)');

select throws_ok($$
  update public.profiles set created_at = now() - interval '1 year' where id = tests.get_user_id('alice@profiles.test')
$$, '42501', 'permission denied for table profiles',
  'alice cannot change her profile''s bookkeeping columns');

select throws_ok($$
  update public.profiles set full_name = repeat('x', 201) where id = tests.get_user_id('alice@profiles.test')
$$, '23514', 'new row for relation "profiles" violates check constraint "profiles_full_name_check"',
  'a name longer than 200 characters is refused');

select is_empty($$
  update public.profiles set full_name = 'Hacked' where id = tests.get_user_id('carol@profiles.test') returning id
$$, 'alice cannot change her teammate carol''s profile (no row is updated)');

select is_empty($$
  update public.profiles set full_name = 'Hacked' where id = tests.get_user_id('dave@profiles.test') returning id
$$, 'alice cannot change a stranger''s profile (no row is updated)');

select throws_ok($$
  insert into public.profiles (id, email) values (gen_random_uuid(), 'ghost@profiles.test')
$$, '42501', 'permission denied for table profiles', 'alice cannot create a profile');

select throws_ok($$
  delete from public.profiles where id = tests.get_user_id('alice@profiles.test')
$$, '42501', 'permission denied for table profiles', 'alice cannot delete her profile');

select tests.reset_role();
select results_eq($$
  select full_name from public.profiles where id in (tests.get_user_id('carol@profiles.test'), tests.get_user_id('dave@profiles.test'))
  order by full_name
$$, array['Carol', 'Dave'], 'carol''s and dave''s names are unchanged');

-- The name alice chose survives a metadata update that is about something else (an app storing a
-- preference with auth.updateUser, an OAuth sign-in refreshing unrelated claims) ...
update auth.users set raw_user_meta_data = raw_user_meta_data || '{"locale": "fr"}' where id = tests.get_user_id('alice@profiles.test');
select results_eq($$
  select full_name, avatar_url from public.profiles where id = tests.get_user_id('alice@profiles.test')
$$, $$ values ('Alice L.', 'https://img.test/alice-2.png') $$,
  'a metadata change that touches neither name nor avatar keeps the name and avatar alice chose');

-- ... while a new name in the metadata does reach the profile.
update auth.users set raw_user_meta_data = raw_user_meta_data || '{"full_name": "Alice Pleasance Liddell"}'
where id = tests.get_user_id('alice@profiles.test');
select is((select full_name from public.profiles where id = tests.get_user_id('alice@profiles.test')),
  'Alice Pleasance Liddell', 'a new full_name in the metadata replaces the profile name');

-- ---------------------------------------------------------------------------------------------
-- Anonymous callers and users without a session
-- ---------------------------------------------------------------------------------------------
select tests.clear_authentication();
select throws_ok($$ select * from public.profiles $$, '42501', 'permission denied for table profiles',
  'anon cannot read profiles');
select throws_ok($$ update public.profiles set full_name = 'x' $$, '42501', 'permission denied for table profiles',
  'anon cannot update profiles');

select tests.reset_role();
select set_config('request.jwt.claims', '{"role": "authenticated"}', true);
select set_config('role', 'authenticated', true);
select is_empty($$ select * from public.profiles $$,
  'an authenticated role without a user id (no sub claim) sees no profile');

select tests.authenticate_as('bob@profiles.test');
select results_eq($$ select email from public.profiles order by email $$,
  array['bob@profiles.test', 'carol@profiles.test'],
  'bob sees carol through Globex, but not alice');

select tests.authenticate_as('carol@profiles.test');
select isnt_empty($$
  update public.profiles set avatar_url = null where id = tests.get_user_id('carol@profiles.test') returning id
$$, 'carol can clear her own avatar');

select tests.reset_role();
select * from finish();
rollback;
