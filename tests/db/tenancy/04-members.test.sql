-- 04 Members: changing roles, removing members, leaving; an organization always keeps an owner,
-- whatever the write path.
--
-- Cast: in Acme (05000000-0000-4000-8000-00000000a0a0), alice is owner, bob admin, carol member,
-- dave billing, olivia a second admin. erin owns Evil Corp (05000000-0000-4000-8000-00000000e0e0)
-- and is a stranger to Acme. frank belongs to nothing.
begin;
select plan(62);

select tests.create_user('alice@members.test');
select tests.create_user('bob@members.test');
select tests.create_user('carol@members.test');
select tests.create_user('dave@members.test');
select tests.create_user('olivia@members.test');
select tests.create_user('erin@members.test');
select tests.create_user('frank@members.test');

insert into public.organizations (id, name, slug) values
  ('05000000-0000-4000-8000-00000000a0a0', 'Acme', 'acme-members-test'),
  ('05000000-0000-4000-8000-00000000e0e0', 'Evil Corp', 'evil-members-test');
insert into public.organization_members (organization_id, user_id, role) values
  ('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('alice@members.test'), 'owner'),
  ('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('bob@members.test'), 'admin'),
  ('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('carol@members.test'), 'member'),
  ('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('dave@members.test'), 'billing'),
  ('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('olivia@members.test'), 'admin'),
  ('05000000-0000-4000-8000-00000000e0e0', tests.get_user_id('erin@members.test'), 'owner');

-- ---------------------------------------------------------------------------------------------
-- update_member_role
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('alice@members.test');
select lives_ok($$ select public.update_member_role('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('carol@members.test'), 'billing') $$,
  'alice, the owner, makes carol billing');
select is((select role::text from public.organization_members where user_id = tests.get_user_id('carol@members.test')), 'billing',
  'carol is now billing');
select lives_ok($$ select public.update_member_role('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('carol@members.test'), 'member') $$,
  'alice makes carol a member again');
select lives_ok($$ select public.update_member_role('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('carol@members.test'), 'member') $$,
  'setting the role a member already has is accepted (and changes nothing)');

select throws_ok($$ select public.update_member_role('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('carol@members.test'), 'boss') $$,
  '22023', 'invalid_role', 'an unknown role is refused');
select throws_ok($$ select public.update_member_role('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('carol@members.test'), null) $$,
  '22023', 'invalid_role', 'a missing role is refused');
select throws_ok($$ select public.update_member_role('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('frank@members.test'), 'admin') $$,
  'PT404', 'member_not_found', 'frank is not a member of Acme, so his role cannot be changed');
select throws_ok($$ select public.update_member_role('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('erin@members.test'), 'member') $$,
  'PT404', 'member_not_found', 'erin belongs to another organization, not to Acme');
select throws_ok($$ select public.update_member_role('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('alice@members.test'), 'admin') $$,
  'P0001', 'last_owner', 'alice, the last owner, cannot demote herself');

select tests.authenticate_as('bob@members.test');
select lives_ok($$ select public.update_member_role('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('carol@members.test'), 'admin') $$,
  'bob, an admin, makes carol an admin');
select lives_ok($$ select public.update_member_role('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('carol@members.test'), 'member') $$,
  'bob makes carol a member again');
select lives_ok($$ select public.update_member_role('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('dave@members.test'), 'member') $$,
  'bob makes dave (billing) a member');
select lives_ok($$ select public.update_member_role('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('dave@members.test'), 'billing') $$,
  'bob makes dave billing again');
select lives_ok($$ select public.update_member_role('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('olivia@members.test'), 'member') $$,
  'bob demotes olivia, another admin, to member');
select throws_ok($$ select public.update_member_role('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('alice@members.test'), 'admin') $$,
  '42501', 'not_authorized', 'bob, an admin, cannot demote alice, an owner');
select throws_ok($$ select public.update_member_role('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('carol@members.test'), 'owner') $$,
  '42501', 'not_authorized', 'bob, an admin, cannot make carol an owner');
select throws_ok($$ select public.update_member_role('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('bob@members.test'), 'owner') $$,
  '42501', 'not_authorized', 'bob, an admin, cannot make himself an owner');

select tests.authenticate_as('carol@members.test');
select throws_ok($$ select public.update_member_role('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('olivia@members.test'), 'admin') $$,
  '42501', 'not_authorized', 'carol, a member, cannot change roles');
select throws_ok($$ select public.update_member_role('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('carol@members.test'), 'admin') $$,
  '42501', 'not_authorized', 'carol, a member, cannot promote herself');

select tests.authenticate_as('dave@members.test');
select throws_ok($$ select public.update_member_role('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('carol@members.test'), 'billing') $$,
  '42501', 'not_authorized', 'dave, billing, cannot change roles');

select tests.authenticate_as('erin@members.test');
select throws_ok($$ select public.update_member_role('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('carol@members.test'), 'admin') $$,
  '42501', 'not_authorized', 'erin, an owner elsewhere, cannot change roles in Acme');
select throws_ok($$ select public.update_member_role('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('frank@members.test'), 'admin') $$,
  '42501', 'not_authorized', 'erin learns nothing about who is in Acme: not_authorized before member_not_found');

select tests.authenticate_as('carol@members.test');
select throws_ok($$ update public.organization_members set role = 'owner' where user_id = tests.get_user_id('carol@members.test') $$,
  '42501', 'permission denied for table organization_members', 'carol cannot change her role by writing the table');

-- Two owners: one may step down, the other then is the last.
select tests.authenticate_as('alice@members.test');
select lives_ok($$ select public.update_member_role('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('bob@members.test'), 'owner') $$,
  'alice makes bob a second owner');
select lives_ok($$ select public.update_member_role('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('alice@members.test'), 'admin') $$,
  'with two owners, alice can step down to admin');
select tests.reset_role();
select results_eq($$
  select p.email, m.role::text from public.organization_members m join public.profiles p on p.id = m.user_id
  where m.organization_id = '05000000-0000-4000-8000-00000000a0a0' and m.role in ('owner', 'admin') order by 1
$$, $$ values ('alice@members.test', 'admin'), ('bob@members.test', 'owner') $$,
  'bob is now the only owner and alice an admin');

select tests.authenticate_as('alice@members.test');
select throws_ok($$ select public.update_member_role('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('alice@members.test'), 'owner') $$,
  '42501', 'not_authorized', 'alice, now an admin, cannot make herself owner again');

select tests.authenticate_as('bob@members.test');
select throws_ok($$ select public.update_member_role('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('bob@members.test'), 'member') $$,
  'P0001', 'last_owner', 'bob, now the last owner, cannot demote himself');
select lives_ok($$ select public.update_member_role('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('alice@members.test'), 'owner') $$,
  'bob makes alice owner again');
select lives_ok($$ select public.update_member_role('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('bob@members.test'), 'admin') $$,
  'and steps back down to admin');

-- ---------------------------------------------------------------------------------------------
-- remove_member
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('carol@members.test');
select throws_ok($$ select public.remove_member('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('dave@members.test')) $$,
  '42501', 'not_authorized', 'carol, a member, cannot remove anyone');

select tests.authenticate_as('dave@members.test');
select throws_ok($$ select public.remove_member('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('carol@members.test')) $$,
  '42501', 'not_authorized', 'dave, billing, cannot remove anyone');

select tests.authenticate_as('erin@members.test');
select throws_ok($$ select public.remove_member('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('carol@members.test')) $$,
  '42501', 'not_authorized', 'erin, a stranger, cannot remove Acme''s members');

select tests.authenticate_as('bob@members.test');
select throws_ok($$ select public.remove_member('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('alice@members.test')) $$,
  '42501', 'not_authorized', 'bob, an admin, cannot remove alice, an owner');
select throws_ok($$ select public.remove_member('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('frank@members.test')) $$,
  'PT404', 'member_not_found', 'removing someone who is not a member answers member_not_found');
select lives_ok($$ select public.remove_member('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('olivia@members.test')) $$,
  'bob, an admin, removes olivia');
select lives_ok($$ select public.remove_member('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('dave@members.test')) $$,
  'bob removes dave (billing)');

select tests.authenticate_as('olivia@members.test');
select is_empty($$ select 1 from public.organizations where id = '05000000-0000-4000-8000-00000000a0a0' $$,
  'once removed, olivia no longer sees Acme');
select throws_ok($$ select public.leave_organization('05000000-0000-4000-8000-00000000a0a0') $$,
  '42501', 'not_authorized', 'and she is no longer a member who could leave it');

select tests.authenticate_as('alice@members.test');
select throws_ok($$ select public.remove_member('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('alice@members.test')) $$,
  'P0001', 'last_owner', 'alice, the last owner, cannot remove herself');
select lives_ok($$ select public.update_member_role('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('carol@members.test'), 'owner') $$,
  'alice makes carol a second owner');
select lives_ok($$ select public.remove_member('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('carol@members.test')) $$,
  'an owner can remove another owner');
select lives_ok($$ select public.remove_member('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('bob@members.test')) $$,
  'alice removes bob, an admin');

select tests.reset_role();
select results_eq($$
  select p.email, m.role::text from public.organization_members m join public.profiles p on p.id = m.user_id
  where m.organization_id = '05000000-0000-4000-8000-00000000a0a0'
$$, $$ values ('alice@members.test', 'owner') $$,
  'only alice is left in Acme, as its owner');

-- ---------------------------------------------------------------------------------------------
-- leave_organization
-- ---------------------------------------------------------------------------------------------
insert into public.organization_members (organization_id, user_id, role) values
  ('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('bob@members.test'), 'admin'),
  ('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('carol@members.test'), 'member');

select tests.authenticate_as('carol@members.test');
select lives_ok($$ select public.leave_organization('05000000-0000-4000-8000-00000000a0a0') $$, 'carol, a member, leaves Acme');
select is_empty($$ select 1 from public.organization_members where organization_id = '05000000-0000-4000-8000-00000000a0a0' $$,
  'carol no longer sees Acme''s members');

select tests.authenticate_as('frank@members.test');
select throws_ok($$ select public.leave_organization('05000000-0000-4000-8000-00000000a0a0') $$,
  '42501', 'not_authorized', 'frank cannot leave an organization he is not in');

select tests.authenticate_as('alice@members.test');
select throws_ok($$ select public.leave_organization('05000000-0000-4000-8000-00000000a0a0') $$,
  'P0001', 'last_owner', 'alice, the last owner, cannot leave');
select lives_ok($$ select public.update_member_role('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('bob@members.test'), 'owner') $$,
  'alice hands ownership to bob');
select lives_ok($$ select public.leave_organization('05000000-0000-4000-8000-00000000a0a0') $$,
  'with another owner in place, alice leaves');

select tests.authenticate_as('bob@members.test');
select throws_ok($$ select public.leave_organization('05000000-0000-4000-8000-00000000a0a0') $$,
  'P0001', 'last_owner', 'bob, now the last owner, cannot leave either');

-- Nobody signed in.
select tests.reset_role();
select set_config('request.jwt.claims', '{"role": "authenticated"}', true);
select set_config('role', 'authenticated', true);
select throws_ok($$ select public.update_member_role('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('bob@members.test'), 'member') $$,
  'PT401', 'not_authenticated', 'without a user, no role can be changed');
select throws_ok($$ select public.remove_member('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('bob@members.test')) $$,
  'PT401', 'not_authenticated', 'without a user, nobody can be removed');
select throws_ok($$ select public.leave_organization('05000000-0000-4000-8000-00000000a0a0') $$,
  'PT401', 'not_authenticated', 'without a user, nobody can leave');

select tests.clear_authentication();
select throws_ok($$ select public.leave_organization('05000000-0000-4000-8000-00000000a0a0') $$,
  '42501', 'permission denied for function leave_organization', 'anon may not call leave_organization');

-- ---------------------------------------------------------------------------------------------
-- The last-owner guard sits under every write path, the test's superuser included
-- ---------------------------------------------------------------------------------------------
select tests.reset_role();
select throws_ok($$
  delete from public.organization_members
  where organization_id = '05000000-0000-4000-8000-00000000a0a0' and user_id = tests.get_user_id('bob@members.test')
$$, 'P0001', 'last_owner', 'even the superuser cannot delete the last owner''s membership');
select throws_ok($$
  update public.organization_members set role = 'member'
  where organization_id = '05000000-0000-4000-8000-00000000a0a0' and user_id = tests.get_user_id('bob@members.test')
$$, 'P0001', 'last_owner', 'even the superuser cannot demote the last owner');
select throws_ok($$ delete from auth.users where id = tests.get_user_id('bob@members.test') $$,
  'P0001', 'last_owner', 'deleting the account of an organization''s last owner is refused until ownership moves');

insert into public.organization_members (organization_id, user_id, role)
values ('05000000-0000-4000-8000-00000000a0a0', tests.get_user_id('carol@members.test'), 'owner');
select lives_ok($$
  delete from public.organization_members
  where organization_id = '05000000-0000-4000-8000-00000000a0a0' and user_id = tests.get_user_id('bob@members.test')
$$, 'with a second owner, the superuser can delete an owner''s membership');

select lives_ok($$ delete from public.organizations where id = '05000000-0000-4000-8000-00000000a0a0' $$,
  'deleting the organization takes its last owner''s membership with it, without tripping the guard');
select is((select count(*)::int from public.organization_members where organization_id = '05000000-0000-4000-8000-00000000a0a0'), 0,
  'Acme has no members left');

-- Moving a membership between organizations is no business operation, yet a write path: frank,
-- sole owner of Initech, must not be moved out and leave Initech without an owner.
insert into public.organizations (id, name, slug) values ('05000000-0000-4000-8000-00000000c0c0', 'Initech', 'initech-members-test');
insert into public.organization_members (organization_id, user_id, role)
values ('05000000-0000-4000-8000-00000000c0c0', tests.get_user_id('frank@members.test'), 'owner');
select throws_ok($$
  update public.organization_members set organization_id = '05000000-0000-4000-8000-00000000e0e0'
  where organization_id = '05000000-0000-4000-8000-00000000c0c0' and user_id = tests.get_user_id('frank@members.test')
$$, '22023', 'membership_immutable', 'even the superuser cannot move the last owner''s membership to another organization');

select * from finish();
rollback;
