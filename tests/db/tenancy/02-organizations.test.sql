-- 02 Organizations: create_organization makes the caller the owner; members read their
-- organizations only; owners and admins rename; only owners delete.
--
-- Cast: alice creates Acme and is its owner; bob is Acme's admin, carol a member, dave billing;
-- erin owns Globex; frank belongs to nothing.
begin;
select plan(51);

select tests.create_user('alice@orgs.test');
select tests.create_user('bob@orgs.test');
select tests.create_user('carol@orgs.test');
select tests.create_user('dave@orgs.test');
select tests.create_user('erin@orgs.test');
select tests.create_user('frank@orgs.test');

-- ---------------------------------------------------------------------------------------------
-- create_organization
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('alice@orgs.test');
select lives_ok($$ select public.create_organization('  Acme Inc  ', '  ACME-Orgs-Test ') $$,
  'alice creates an organization');

select tests.reset_role();
select results_eq($$
  select name, slug, created_by from public.organizations where slug = 'acme-orgs-test'
$$, $$ values ('Acme Inc', 'acme-orgs-test', tests.get_user_id('alice@orgs.test')) $$,
  'the name is trimmed, the slug trimmed and lower-cased, and alice recorded as its creator');
select results_eq($$
  select user_id, role::text from public.organization_members
  where organization_id = (select id from public.organizations where slug = 'acme-orgs-test')
$$, $$ values (tests.get_user_id('alice@orgs.test'), 'owner') $$,
  'alice is the only member of Acme, as its owner');

select tests.authenticate_as('alice@orgs.test');
select public.create_organization('Second', 'second-orgs-test') as second_id \gset
select is((select id::text from public.organizations where slug = 'second-orgs-test'), :'second_id',
  'create_organization returns the new organization''s id, which its owner can read at once');

select throws_ok($$ select public.create_organization('Another Acme', 'acme-orgs-test') $$,
  'PT409', 'slug_taken', 'a slug already in use is refused with slug_taken');
select throws_ok($$ select public.create_organization('Another Acme', 'ACME-ORGS-TEST') $$,
  'PT409', 'slug_taken', 'slugs are compared after lower-casing');

select tests.authenticate_as('erin@orgs.test');
select throws_ok($$ select public.create_organization('Stolen', 'acme-orgs-test') $$,
  'PT409', 'slug_taken', 'another user cannot take Acme''s slug either');

select throws_ok($$ select public.create_organization('Globex', '-globex') $$, '22023', 'invalid_slug',
  'a slug cannot start with a hyphen');
select throws_ok($$ select public.create_organization('Globex', 'globex-') $$, '22023', 'invalid_slug',
  'a slug cannot end with a hyphen');
select throws_ok($$ select public.create_organization('Globex', 'glo bex') $$, '22023', 'invalid_slug',
  'a slug cannot contain spaces');
select throws_ok($$ select public.create_organization('Globex', 'glo_bex') $$, '22023', 'invalid_slug',
  'a slug cannot contain underscores');
select throws_ok($$ select public.create_organization('Globex', 'glöbex') $$, '22023', 'invalid_slug',
  'a slug is ASCII only');
select throws_ok($$ select public.create_organization('Globex', '   ') $$, '22023', 'invalid_slug',
  'a blank slug is refused');
select throws_ok($$ select public.create_organization('Globex', null) $$, '22023', 'invalid_slug',
  'a missing slug is refused');
select throws_ok($$ select public.create_organization('Globex', repeat('g', 64)) $$, '22023', 'invalid_slug',
  'a slug longer than 63 characters is refused');
select lives_ok($$ select public.create_organization('Sixty-three', rpad('orgs-test-', 63, '3')) $$,
  'a slug of exactly 63 characters is accepted');

select throws_ok($$ select public.create_organization('', 'globex-orgs-test') $$, '22023', 'invalid_name',
  'an empty name is refused');
select throws_ok($$ select public.create_organization('   ', 'globex-orgs-test') $$, '22023', 'invalid_name',
  'a blank name is refused');
select throws_ok($$ select public.create_organization(null, 'globex-orgs-test') $$, '22023', 'invalid_name',
  'a missing name is refused');
select throws_ok($$ select public.create_organization(repeat('n', 201), 'globex-orgs-test') $$, '22023', 'invalid_name',
  'a name longer than 200 characters is refused');

select lives_ok($$ select public.create_organization('Globex', 'globex-orgs-test') $$,
  'erin creates Globex');

select tests.reset_role();
select is((select count(*)::int from public.organizations where created_by = tests.get_user_id('erin@orgs.test')), 2,
  'of erin''s attempts, only the two valid ones created an organization');

select set_config('request.jwt.claims', '{"role": "authenticated"}', true);
select set_config('role', 'authenticated', true);
select throws_ok($$ select public.create_organization('Nobody', 'nobody-orgs-test') $$, 'PT401', 'not_authenticated',
  'the authenticated role without a user (no sub claim) gets not_authenticated');

select tests.clear_authentication();
select throws_ok($$ select public.create_organization('Anon', 'anon-orgs-test') $$,
  '42501', 'permission denied for function create_organization',
  'anon is not allowed to execute create_organization at all');

select tests.authenticate_as('alice@orgs.test');
select throws_ok($$ insert into public.organizations (name, slug) values ('Direct', 'direct-orgs-test') $$,
  '42501', 'permission denied for table organizations',
  'alice cannot insert an organization directly, only through create_organization');
select throws_ok($$
  insert into public.organization_members (organization_id, user_id, role)
  values ((select id from public.organizations where slug = 'acme-orgs-test'), tests.get_user_id('frank@orgs.test'), 'member')
$$, '42501', 'permission denied for table organization_members',
  'alice cannot add a member directly, only by invitation');

-- ---------------------------------------------------------------------------------------------
-- The rest of Acme's team, arranged directly
-- ---------------------------------------------------------------------------------------------
select tests.reset_role();
insert into public.organization_members (organization_id, user_id, role)
select o.id, tests.get_user_id(u.email), u.role::public.organization_role
from public.organizations o,
  (values ('bob@orgs.test', 'admin'), ('carol@orgs.test', 'member'), ('dave@orgs.test', 'billing')) as u (email, role)
where o.slug = 'acme-orgs-test';

-- ---------------------------------------------------------------------------------------------
-- Reading
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('carol@orgs.test');
select results_eq($$ select slug from public.organizations $$, array['acme-orgs-test'],
  'carol, a member, sees Acme and nothing else');
select results_eq($$ select p.email from public.organization_members m join public.profiles p on p.id = m.user_id order by 1 $$,
  array['alice@orgs.test', 'bob@orgs.test', 'carol@orgs.test', 'dave@orgs.test'],
  'carol sees all of Acme''s members');

select tests.authenticate_as('erin@orgs.test');
select results_eq($$ select slug from public.organizations order by slug $$,
  array['globex-orgs-test', rpad('orgs-test-', 63, '3')],
  'erin sees only the organizations she created, not Acme');
select is_empty($$
  select 1 from public.organization_members where organization_id = (select id from public.organizations where slug = 'acme-orgs-test')
$$, 'erin sees none of Acme''s members');

select tests.authenticate_as('frank@orgs.test');
select is_empty($$ select 1 from public.organizations $$, 'frank, in no organization, sees no organization');
select is_empty($$ select 1 from public.organization_members $$, 'frank sees no membership');

-- ---------------------------------------------------------------------------------------------
-- Updating
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('alice@orgs.test');
select isnt_empty($$ update public.organizations set name = 'Acme Corporation' where slug = 'acme-orgs-test' returning id $$,
  'alice, the owner, renames Acme');

select tests.authenticate_as('bob@orgs.test');
select isnt_empty($$ update public.organizations set name = '  Acme Corp.  ' where slug = 'acme-orgs-test' returning id $$,
  'bob, an admin, renames Acme');
select isnt_empty($$ update public.organizations set slug = '  ACME-Renamed-Orgs-Test ' where slug = 'acme-orgs-test' returning id $$,
  'bob, an admin, changes Acme''s slug');
select is((select slug from public.organizations where name = 'Acme Corp.'), 'acme-renamed-orgs-test',
  'a direct update is normalised like the RPC: the name and slug are trimmed and the slug lower-cased');
select throws_ok($$ update public.organizations set slug = 'globex-orgs-test' where slug = 'acme-renamed-orgs-test' $$,
  '23505', 'duplicate key value violates unique constraint "organizations_slug_key"',
  'a direct slug change cannot take another organization''s slug');
update public.organizations set slug = 'acme-orgs-test' where slug = 'acme-renamed-orgs-test';
select throws_ok($$ update public.organizations set slug = 'Not A Slug' where slug = 'acme-orgs-test' $$,
  '23514', 'new row for relation "organizations" violates check constraint "organizations_slug_check"',
  'a direct slug change is still held to the slug rules');
select throws_ok($$ update public.organizations set created_by = tests.get_user_id('bob@orgs.test') where slug = 'acme-orgs-test' $$,
  '42501', 'permission denied for table organizations', 'bob cannot rewrite who created Acme');

select tests.authenticate_as('carol@orgs.test');
select is_empty($$ update public.organizations set name = 'Carol''s' where slug = 'acme-orgs-test' returning id $$,
  'carol, a member, cannot rename Acme (no row is updated)');

select tests.authenticate_as('dave@orgs.test');
select is_empty($$ update public.organizations set name = 'Dave''s' where slug = 'acme-orgs-test' returning id $$,
  'dave, billing, cannot rename Acme (no row is updated)');

select tests.authenticate_as('erin@orgs.test');
select is_empty($$ update public.organizations set name = 'Erin''s' where slug = 'acme-orgs-test' returning id $$,
  'erin, from another organization, cannot rename Acme (no row is updated)');

select tests.reset_role();
select results_eq($$ select name, slug from public.organizations where slug like 'acme%orgs-test' $$,
  $$ values ('Acme Corp.', 'acme-orgs-test') $$,
  'Acme carries the admin''s name and slug, untouched by the refused attempts');

-- ---------------------------------------------------------------------------------------------
-- Deleting
-- ---------------------------------------------------------------------------------------------
-- Nobody deletes through the API: owners ask for the purge (request_organization_purge, the
-- lifecycle tests), which offers the export first.
select tests.authenticate_as('bob@orgs.test');
select throws_ok($$ delete from public.organizations where slug = 'acme-orgs-test' $$, '42501', null,
  'bob, an admin, cannot delete Acme');

select tests.authenticate_as('carol@orgs.test');
select throws_ok($$ delete from public.organizations where slug = 'acme-orgs-test' $$, '42501', null,
  'carol, a member, cannot delete Acme');

select tests.authenticate_as('erin@orgs.test');
select throws_ok($$ delete from public.organizations where slug = 'acme-orgs-test' $$, '42501', null,
  'erin, from another organization, cannot delete Acme');

select tests.authenticate_as('alice@orgs.test');
select throws_ok($$ delete from public.organizations where slug = 'acme-orgs-test' $$, '42501', null,
  'nor can alice, the owner: she asks for its purge, which offers the export first');

select tests.reset_role();
select id as acme_id from public.organizations where slug = 'acme-orgs-test' \gset
select isnt_empty($$ delete from public.organizations where slug = 'acme-orgs-test' returning id $$,
  'the database owner (an operator) deletes Acme (the cascade to its members does not trip the last-owner guard)');

select tests.reset_role();
select is((select count(*)::int from public.organization_members where organization_id = :'acme_id'), 0,
  'Acme''s four memberships went with it');

-- ---------------------------------------------------------------------------------------------
-- Anonymous callers
-- ---------------------------------------------------------------------------------------------
select tests.clear_authentication();
select throws_ok($$ select * from public.organizations $$, '42501', 'permission denied for table organizations',
  'anon cannot read organizations');
select throws_ok($$ select * from public.organization_members $$, '42501', 'permission denied for table organization_members',
  'anon cannot read memberships');

select tests.reset_role();
select * from finish();
rollback;
