-- 03 Invitations: owners and admins invite by email; the token is shown once and stored only as
-- its SHA-256; only the invited email can accept, once, before it expires.
--
-- Cast: in Acme, alice is owner, bob admin, carol member, dave billing. erin, frank, grace and
-- heidi are invited. mallory owns Evil Corp and is a stranger to Acme.
begin;
select plan(68);

select tests.create_user('alice@invites.test');
select tests.create_user('bob@invites.test');
select tests.create_user('carol@invites.test');
select tests.create_user('dave@invites.test');
select tests.create_user('erin@invites.test');
select tests.create_user('frank@invites.test');
select tests.create_user('grace@invites.test');
select tests.create_user('heidi@invites.test');
select tests.create_user('mallory@invites.test');

-- Acme is 04000000-0000-4000-8000-00000000a0a0, Evil Corp 04000000-0000-4000-8000-00000000e0e0.
insert into public.organizations (id, name, slug) values
  ('04000000-0000-4000-8000-00000000a0a0', 'Acme', 'acme-invites-test'),
  ('04000000-0000-4000-8000-00000000e0e0', 'Evil Corp', 'evil-invites-test');
insert into public.organization_members (organization_id, user_id, role) values
  ('04000000-0000-4000-8000-00000000a0a0', tests.get_user_id('alice@invites.test'), 'owner'),
  ('04000000-0000-4000-8000-00000000a0a0', tests.get_user_id('bob@invites.test'), 'admin'),
  ('04000000-0000-4000-8000-00000000a0a0', tests.get_user_id('carol@invites.test'), 'member'),
  ('04000000-0000-4000-8000-00000000a0a0', tests.get_user_id('dave@invites.test'), 'billing'),
  ('04000000-0000-4000-8000-00000000e0e0', tests.get_user_id('mallory@invites.test'), 'owner');

-- ---------------------------------------------------------------------------------------------
-- Inviting
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('alice@invites.test');
select public.invite_member('04000000-0000-4000-8000-00000000a0a0', '  Erin@Invites.TEST ', 'member') as erin_invitation \gset

select is(:'erin_invitation'::jsonb - 'invitation_id' - 'token' - 'expires_at',
  '{"email": "erin@invites.test", "role": "member"}'::jsonb,
  'alice, the owner, invites erin; the email comes back trimmed and lower-cased, with the role');
select matches(:'erin_invitation'::jsonb ->> 'token', '^[0-9a-f]{64}$',
  'the result carries a one-time token of 64 hex characters (256 random bits)');
select is((:'erin_invitation'::jsonb ->> 'expires_at')::timestamptz, now() + interval '7 days',
  'the invitation expires after seven days');

select tests.reset_role();
select results_eq($$
  select id, organization_id, email, role::text, invited_by, accepted_at, accepted_by
  from public.organization_invitations where email = 'erin@invites.test'
$$, format($$ values (%L::uuid, '04000000-0000-4000-8000-00000000a0a0'::uuid, 'erin@invites.test', 'member',
                      tests.get_user_id('alice@invites.test'), null::timestamptz, null::uuid) $$,
           :'erin_invitation'::jsonb ->> 'invitation_id'),
  'one pending invitation for erin is stored, sent by alice');

select is((select token_hash from public.organization_invitations where email = 'erin@invites.test'),
  encode(sha256(convert_to(:'erin_invitation'::jsonb ->> 'token', 'UTF8')), 'hex'),
  'the table keeps the hex SHA-256 of the token');
select is((select count(*)::int from public.organization_invitations i
           where strpos(i::text, :'erin_invitation'::jsonb ->> 'token') > 0), 0,
  'the token itself is stored in no column');

select tests.authenticate_as('bob@invites.test');
select public.invite_member('04000000-0000-4000-8000-00000000a0a0', 'frank@invites.test', 'admin') ->> 'token' as frank_token \gset
select tests.reset_role();
select is((select role::text from public.organization_invitations where email = 'frank@invites.test'), 'admin',
  'bob, an admin, invites frank as another admin');

select tests.authenticate_as('bob@invites.test');
select lives_ok($$ select public.invite_member('04000000-0000-4000-8000-00000000a0a0', 'grace@invites.test', 'billing') $$,
  'bob, an admin, invites grace for billing');
select throws_ok($$ select public.invite_member('04000000-0000-4000-8000-00000000a0a0', 'heidi@invites.test', 'owner') $$,
  '42501', 'not_authorized', 'bob, an admin, cannot invite an owner');

select tests.authenticate_as('carol@invites.test');
select throws_ok($$ select public.invite_member('04000000-0000-4000-8000-00000000a0a0', 'heidi@invites.test', 'member') $$,
  '42501', 'not_authorized', 'carol, a member, cannot invite');

select tests.authenticate_as('dave@invites.test');
select throws_ok($$ select public.invite_member('04000000-0000-4000-8000-00000000a0a0', 'heidi@invites.test', 'member') $$,
  '42501', 'not_authorized', 'dave, billing, cannot invite');

select tests.authenticate_as('mallory@invites.test');
select throws_ok($$ select public.invite_member('04000000-0000-4000-8000-00000000a0a0', 'mallory@invites.test', 'owner') $$,
  '42501', 'not_authorized', 'mallory, an owner elsewhere, cannot invite anyone into Acme');
select throws_ok($$ select public.invite_member('04000000-0000-4000-8000-0000000000ff', 'heidi@invites.test', 'member') $$,
  '42501', 'not_authorized', 'an organization that does not exist answers the same not_authorized');

select tests.authenticate_as('alice@invites.test');
select public.invite_member('04000000-0000-4000-8000-00000000a0a0', 'heidi@invites.test', 'owner') ->> 'token' as heidi_token \gset
select tests.reset_role();
select is((select role::text from public.organization_invitations where email = 'heidi@invites.test'), 'owner',
  'alice, an owner, invites heidi as an owner');

select tests.authenticate_as('alice@invites.test');
select throws_ok($$ select public.invite_member('04000000-0000-4000-8000-00000000a0a0', 'not-an-email', 'member') $$,
  '22023', 'invalid_email', 'an address without @ is refused');
select throws_ok($$ select public.invite_member('04000000-0000-4000-8000-00000000a0a0', 'someone@localhost', 'member') $$,
  '22023', 'invalid_email', 'an address without a domain dot is refused');
select throws_ok($$ select public.invite_member('04000000-0000-4000-8000-00000000a0a0', 'some one@invites.test', 'member') $$,
  '22023', 'invalid_email', 'an address with a space is refused');
select throws_ok($$ select public.invite_member('04000000-0000-4000-8000-00000000a0a0', '   ', 'member') $$,
  '22023', 'invalid_email', 'a blank address is refused');
select throws_ok($$ select public.invite_member('04000000-0000-4000-8000-00000000a0a0', null, 'member') $$,
  '22023', 'invalid_email', 'a missing address is refused');

select throws_ok($$ select public.invite_member('04000000-0000-4000-8000-00000000a0a0', 'ivan@invites.test', 'superuser') $$,
  '22023', 'invalid_role', 'an unknown role is refused');
select throws_ok($$ select public.invite_member('04000000-0000-4000-8000-00000000a0a0', 'ivan@invites.test', 'Admin') $$,
  '22023', 'invalid_role', 'roles are spelt in lower case');
select throws_ok($$ select public.invite_member('04000000-0000-4000-8000-00000000a0a0', 'ivan@invites.test', null) $$,
  '22023', 'invalid_role', 'an explicit null role is refused');
select is(public.invite_member('04000000-0000-4000-8000-00000000a0a0', 'ivan@invites.test') ->> 'role', 'member',
  'without a role, the invitee is invited as a member');

select throws_ok($$ select public.invite_member('04000000-0000-4000-8000-00000000a0a0', 'carol@invites.test', 'admin') $$,
  'PT409', 'already_member', 'carol, already a member, cannot be invited');
select throws_ok($$ select public.invite_member('04000000-0000-4000-8000-00000000a0a0', 'CAROL@invites.test', 'admin') $$,
  'PT409', 'already_member', 'the member check ignores the case of the email');

select throws_ok($$ select private.invite_member('04000000-0000-4000-8000-00000000a0a0', 'judy@invites.test', 'member', interval '30 seconds') $$,
  '22023', 'invalid_expiry', 'an invitation cannot expire in under a minute');
select throws_ok($$ select private.invite_member('04000000-0000-4000-8000-00000000a0a0', 'judy@invites.test', 'member', interval '31 days') $$,
  '22023', 'invalid_expiry', 'an invitation cannot last more than 30 days');

-- Inviting erin again re-sends her pending invitation: same row, new role, fresh token.
select public.invite_member('04000000-0000-4000-8000-00000000a0a0', 'erin@invites.test', 'admin') as erin_reinvitation \gset
select tests.reset_role();
select results_eq($$
  select id::text, role::text, token_hash from public.organization_invitations where email = 'erin@invites.test'
$$, format($$ values (%L, 'admin', %L) $$,
           :'erin_invitation'::jsonb ->> 'invitation_id',
           encode(sha256(convert_to(:'erin_reinvitation'::jsonb ->> 'token', 'UTF8')), 'hex')),
  're-inviting erin keeps her single pending invitation, now for admin and with the new token''s hash');
select isnt(:'erin_reinvitation'::jsonb ->> 'token', :'erin_invitation'::jsonb ->> 'token',
  'the re-sent invitation carries a new token');

-- ---------------------------------------------------------------------------------------------
-- Who sees invitations
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('alice@invites.test');
select results_eq($$ select email from public.organization_invitations order by email $$,
  array['erin@invites.test', 'frank@invites.test', 'grace@invites.test', 'heidi@invites.test', 'ivan@invites.test'],
  'alice, the owner, sees Acme''s invitations');

select tests.authenticate_as('bob@invites.test');
select is((select count(*)::int from public.organization_invitations), 5, 'bob, an admin, sees them too');

select tests.authenticate_as('carol@invites.test');
select is_empty($$ select 1 from public.organization_invitations $$, 'carol, a member, sees no invitation');

select tests.authenticate_as('dave@invites.test');
select is_empty($$ select 1 from public.organization_invitations $$, 'dave, billing, sees no invitation');

select tests.authenticate_as('mallory@invites.test');
select is_empty($$ select 1 from public.organization_invitations $$, 'mallory, a stranger, sees no invitation');

select tests.authenticate_as('erin@invites.test');
select is_empty($$ select 1 from public.organization_invitations $$,
  'erin, the invitee, does not see her invitation in the table either (the token is her key)');

select tests.authenticate_as('alice@invites.test');
select throws_ok($$ update public.organization_invitations set expires_at = now() + interval '1 year' $$,
  '42501', 'permission denied for table organization_invitations', 'alice cannot edit an invitation directly');
select throws_ok($$
  insert into public.organization_invitations (organization_id, email, token_hash, expires_at)
  values ('04000000-0000-4000-8000-00000000a0a0', 'judy@invites.test', repeat('a', 64), now() + interval '1 day')
$$, '42501', 'permission denied for table organization_invitations', 'alice cannot insert an invitation directly');

-- ---------------------------------------------------------------------------------------------
-- Accepting
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('frank@invites.test');
select throws_ok(format($$ select public.accept_invitation(%L) $$, :'erin_reinvitation'::jsonb ->> 'token'),
  '42501', 'invitation_email_mismatch', 'frank cannot accept the invitation sent to erin');

select tests.authenticate_as('erin@invites.test');
select throws_ok(format($$ select public.accept_invitation(%L) $$, :'erin_invitation'::jsonb ->> 'token'),
  'PT404', 'invitation_not_found', 'the token replaced by the re-sent invitation no longer works');
select throws_ok($$ select public.accept_invitation('garbage') $$,
  'PT404', 'invitation_not_found', 'a token that is not 64 hex characters is not found');
select throws_ok($$ select public.accept_invitation(repeat('0', 64)) $$,
  'PT404', 'invitation_not_found', 'a well-formed token that matches nothing is not found');
select throws_ok($$ select public.accept_invitation(null) $$,
  'PT404', 'invitation_not_found', 'a missing token is not found');
select throws_ok(format($$ select public.accept_invitation(%L) $$, upper(:'erin_reinvitation'::jsonb ->> 'token')),
  'PT404', 'invitation_not_found', 'tokens are exact: the upper-cased token is not found');

-- Expiry: accept_invitation reads the clock itself (a caller-chosen time would let an expired
-- invitation through), so the test's superuser moves expires_at instead.
select tests.reset_role();
update public.organization_invitations set expires_at = now() where email = 'erin@invites.test';
select tests.authenticate_as('erin@invites.test');
select throws_ok(format($$ select public.accept_invitation(%L) $$, :'erin_reinvitation'::jsonb ->> 'token'),
  'P0001', 'invitation_expired', 'at the moment it expires, the invitation can no longer be accepted');
select tests.reset_role();
update public.organization_invitations set expires_at = now() - interval '1 day' where email = 'erin@invites.test';
select tests.authenticate_as('erin@invites.test');
select throws_ok(format($$ select public.accept_invitation(%L) $$, :'erin_reinvitation'::jsonb ->> 'token'),
  'P0001', 'invitation_expired', 'a day after it expired, neither');
select tests.reset_role();
update public.organization_invitations set expires_at = now() + interval '1 second' where email = 'erin@invites.test';
select tests.authenticate_as('erin@invites.test');

select is(public.accept_invitation(:'erin_reinvitation'::jsonb ->> 'token'),
  jsonb_build_object('organization_id', '04000000-0000-4000-8000-00000000a0a0', 'role', 'admin'),
  'erin accepts her invitation and is told she joined Acme as admin');
select results_eq($$ select slug from public.organizations $$, array['acme-invites-test'],
  'erin now sees Acme');

select tests.reset_role();
select results_eq($$
  select role::text, invited_by from public.organization_members
  where organization_id = '04000000-0000-4000-8000-00000000a0a0' and user_id = tests.get_user_id('erin@invites.test')
$$, $$ values ('admin', tests.get_user_id('alice@invites.test')) $$,
  'erin is a member with the invited role, invited by alice');
select results_eq($$
  select accepted_at, accepted_by from public.organization_invitations where email = 'erin@invites.test'
$$, $$ values (now(), tests.get_user_id('erin@invites.test')) $$,
  'the invitation records when and by whom it was accepted');

select tests.authenticate_as('erin@invites.test');
select throws_ok(format($$ select public.accept_invitation(%L) $$, :'erin_reinvitation'::jsonb ->> 'token'),
  'P0001', 'invitation_already_accepted', 'the same invitation cannot be accepted twice');

select lives_ok($$ select public.invite_member('04000000-0000-4000-8000-00000000a0a0', 'judy@invites.test', 'member') $$,
  'erin, now an admin, can invite in turn');

-- An invitation whose expiry passed (moved into the past by the test's superuser).
select tests.reset_role();
update public.organization_invitations set expires_at = now() - interval '1 second' where email = 'heidi@invites.test';
select tests.authenticate_as('heidi@invites.test');
select throws_ok(format($$ select public.accept_invitation(%L) $$, :'heidi_token'),
  'P0001', 'invitation_expired', 'heidi''s expired invitation can no longer be accepted');
select tests.reset_role();
select is((select count(*)::int from public.organization_members where user_id = tests.get_user_id('heidi@invites.test')), 0,
  'heidi did not join');

-- Someone who became a member another way uses the invitation up, and keeps the role they have.
select tests.authenticate_as('alice@invites.test');
select public.invite_member('04000000-0000-4000-8000-00000000a0a0', 'heidi@invites.test', 'owner') ->> 'token' as heidi_token \gset
select tests.reset_role();
insert into public.organization_members (organization_id, user_id, role)
values ('04000000-0000-4000-8000-00000000a0a0', tests.get_user_id('heidi@invites.test'), 'member');
select tests.authenticate_as('heidi@invites.test');
select is(public.accept_invitation(:'heidi_token') ->> 'role', 'member',
  'heidi, already a member when she accepts an owner invitation, stays a member');
select tests.reset_role();
select is((select count(*)::int from public.organization_invitations
            where email = 'heidi@invites.test' and accepted_by = tests.get_user_id('heidi@invites.test')), 1,
  'and her invitation (the expired one, refreshed by alice''s re-invitation) is used up');

-- Nobody signed in.
select set_config('request.jwt.claims', '{"role": "authenticated"}', true);
select set_config('role', 'authenticated', true);
select throws_ok(format($$ select public.accept_invitation(%L) $$, :'frank_token'),
  'PT401', 'not_authenticated', 'without a user, an invitation cannot be accepted');
select throws_ok($$ select public.invite_member('04000000-0000-4000-8000-00000000a0a0', 'judy@invites.test', 'member') $$,
  'PT401', 'not_authenticated', 'without a user, nobody can be invited');

-- ---------------------------------------------------------------------------------------------
-- Revoking
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('carol@invites.test');
select is_empty($$ delete from public.organization_invitations where email = 'frank@invites.test' returning id $$,
  'carol, a member, cannot revoke an invitation');

select tests.authenticate_as('dave@invites.test');
select is_empty($$ delete from public.organization_invitations where email = 'frank@invites.test' returning id $$,
  'dave, billing, cannot revoke an invitation');

select tests.authenticate_as('mallory@invites.test');
select is_empty($$ delete from public.organization_invitations where email = 'frank@invites.test' returning id $$,
  'mallory, a stranger, cannot revoke Acme''s invitations');

select tests.authenticate_as('frank@invites.test');
select is_empty($$ delete from public.organization_invitations where email = 'frank@invites.test' returning id $$,
  'frank, the invitee, cannot delete his invitation');

select tests.authenticate_as('bob@invites.test');
select isnt_empty($$ delete from public.organization_invitations where email = 'frank@invites.test' returning id $$,
  'bob, an admin, revokes frank''s invitation');

select tests.authenticate_as('frank@invites.test');
select throws_ok(format($$ select public.accept_invitation(%L) $$, :'frank_token'),
  'PT404', 'invitation_not_found', 'a revoked invitation cannot be accepted');

select tests.authenticate_as('alice@invites.test');
select isnt_empty($$ delete from public.organization_invitations where email = 'grace@invites.test' returning id $$,
  'alice, the owner, revokes grace''s invitation');
select is_empty($$ delete from public.organization_invitations where email = 'erin@invites.test' returning id $$,
  'alice cannot delete erin''s accepted invitation: only pending invitations can be revoked');

-- ---------------------------------------------------------------------------------------------
-- Anonymous callers, and the organization going away
-- ---------------------------------------------------------------------------------------------
select tests.clear_authentication();
select throws_ok($$ select * from public.organization_invitations $$,
  '42501', 'permission denied for table organization_invitations', 'anon cannot read invitations');
select throws_ok($$ delete from public.organization_invitations $$,
  '42501', 'permission denied for table organization_invitations', 'anon cannot revoke invitations');

select tests.reset_role();
delete from public.organizations where id = '04000000-0000-4000-8000-00000000a0a0';
select is((select count(*)::int from public.organization_invitations where organization_id = '04000000-0000-4000-8000-00000000a0a0'), 0,
  'deleting the organization deletes its invitations');

select * from finish();
rollback;
