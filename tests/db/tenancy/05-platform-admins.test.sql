-- 05 Platform admins: operators of the whole platform, known by app_metadata.platform_admin in
-- their JWT (set only with the service role key) or by a row in private.platform_admins (written
-- only by service_role).
--
-- Cast: ada is an operator through her app_metadata, grace through a platform_admins row; bob is
-- an ordinary user; mallory sets platform_admin in her own user_metadata; quinn's app_metadata
-- says false.
begin;
select plan(21);

select tests.create_user('ada@platform.test', '{"platform_admin": true}');
select tests.create_user('grace@platform.test');
select tests.create_user('bob@platform.test');
select tests.create_user('mallory@platform.test', '{}', '{"platform_admin": true}');
select tests.create_user('quinn@platform.test', '{"platform_admin": false}');

-- ---------------------------------------------------------------------------------------------
-- private.platform_admins: service_role only
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as_service_role();
select lives_ok($$
  insert into private.platform_admins (user_id, note) values (tests.get_user_id('grace@platform.test'), 'on-call operator')
$$, 'service_role makes grace a platform admin');
select results_eq($$ select note from private.platform_admins where user_id = tests.get_user_id('grace@platform.test') $$,
  array['on-call operator'], 'service_role reads the platform admins');

-- ---------------------------------------------------------------------------------------------
-- is_platform_admin()
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('ada@platform.test');
select ok(private.is_platform_admin(), 'ada is a platform admin through app_metadata.platform_admin');

select tests.authenticate_as('grace@platform.test');
select ok(private.is_platform_admin(), 'grace is a platform admin through her platform_admins row');

select tests.authenticate_as('bob@platform.test');
select ok(not private.is_platform_admin(), 'bob, an ordinary user, is not');

select tests.authenticate_as('mallory@platform.test');
select ok(not private.is_platform_admin(), 'mallory is not: user_metadata is hers to edit and counts for nothing');

select tests.authenticate_as('quinn@platform.test');
select ok(not private.is_platform_admin(), 'quinn is not: her app_metadata says false');

select tests.reset_role();
select set_config('request.jwt.claims', '{"role": "authenticated"}', true);
select set_config('role', 'authenticated', true);
select ok(not private.is_platform_admin(), 'a session without a user is not');

select tests.clear_authentication();
select throws_ok($$ select private.is_platform_admin() $$, '42501', 'permission denied for schema private',
  'anon cannot ask');

-- ---------------------------------------------------------------------------------------------
-- Signed-in users, platform admins included, cannot touch the table
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('bob@platform.test');
select throws_ok($$ select * from private.platform_admins $$, '42501', 'permission denied for table platform_admins',
  'bob cannot read the platform admins');
select throws_ok($$ insert into private.platform_admins (user_id) values (tests.get_user_id('bob@platform.test')) $$,
  '42501', 'permission denied for table platform_admins', 'bob cannot make himself a platform admin');

select tests.authenticate_as('grace@platform.test');
select throws_ok($$ select * from private.platform_admins $$, '42501', 'permission denied for table platform_admins',
  'grace, a platform admin, cannot read the table either');
select throws_ok($$ update private.platform_admins set note = 'edited' $$,
  '42501', 'permission denied for table platform_admins', 'grace cannot edit it');
select throws_ok($$ delete from private.platform_admins $$,
  '42501', 'permission denied for table platform_admins', 'grace cannot delete from it');

select tests.authenticate_as('ada@platform.test');
select throws_ok($$ insert into private.platform_admins (user_id) values (tests.get_user_id('bob@platform.test')) $$,
  '42501', 'permission denied for table platform_admins', 'ada, a platform admin, cannot appoint another one');

select tests.clear_authentication();
select throws_ok($$ select * from private.platform_admins $$, '42501', 'permission denied for schema private',
  'anon cannot reach the table');

-- ---------------------------------------------------------------------------------------------
-- Removal
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as_service_role();
select lives_ok($$ update private.platform_admins set note = 'retired' where user_id = tests.get_user_id('grace@platform.test') $$,
  'service_role edits a platform admin''s note');
select lives_ok($$ delete from private.platform_admins where user_id = tests.get_user_id('grace@platform.test') $$,
  'service_role removes grace');

select tests.authenticate_as('grace@platform.test');
select ok(not private.is_platform_admin(), 'without her row, grace is no longer a platform admin');

select tests.reset_role();
select tests.get_user_id('bob@platform.test') as bob_id \gset
insert into private.platform_admins (user_id) values (:'bob_id');
delete from auth.users where id = :'bob_id';
select is((select count(*)::int from private.platform_admins where user_id = :'bob_id'), 0,
  'deleting a user deletes their platform_admins row');
select table_privs_are('private', 'platform_admins', 'service_role', array['SELECT', 'INSERT', 'UPDATE', 'DELETE'],
  'service_role may select, insert, update and delete platform admins, nothing more');

select * from finish();
rollback;
