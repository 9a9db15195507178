// The SDK end to end: supabase-js through the local gateway to PostgREST, RLS and the tenancy RPCs.
import { afterAll, beforeAll, describe, expect, expectTypeOf, it } from 'vitest';
import { sql, useSetting } from '../support/db.ts';
import { backendFor, clientFor, rejection } from '../support/clients.ts';
import { createOrganization, join, uniqueSlug } from '../support/organizations.ts';
import { createUser, deleteUsers, type TestUser } from '../support/users.ts';
import {
  createBackendClient,
  type Organization,
  type OrganizationWithRole,
  type Role,
  type TypedSupabaseClient,
} from '../../clients/js/src/index.ts';

// One owner creates an organization per test here; the free-organization limit has its own tests
// (tests/db/08-tenancy-hardening.test.sql).
useSetting('free_organizations_per_user', 1000);

let alice: TestUser;
let bob: TestUser;
let carol: TestUser;
let dave: TestUser;

const createdUserIds: string[] = [];

beforeAll(async () => {
  [alice, bob, carol, dave] = await Promise.all([createUser(), createUser(), createUser(), createUser()]);
  createdUserIds.push(alice.id, bob.id, carol.id, dave.id);
});

afterAll(async () => {
  // Organizations first: the last-owner trigger lets a cascade from the organization through.
  await sql`delete from public.organizations where created_by = any(${createdUserIds}::uuid[])`;
  await deleteUsers(createdUserIds);
});

async function roleOf(organizationId: string, userId: string): Promise<Role | undefined> {
  const [row] = await sql<{ role: Role }[]>`
    select role from public.organization_members where organization_id = ${organizationId} and user_id = ${userId}`;
  return row?.role;
}

describe('creating and listing organizations', () => {
  it('creates an organization whose creator lists it with the role owner', async () => {
    const backend = backendFor(alice);
    const slug = uniqueSlug('acme');
    const org = await backend.organizations.create({ name: '  Acme Inc  ', slug: `  ${slug.toUpperCase()} ` });
    expectTypeOf(org).toEqualTypeOf<Organization>();
    expect(org).toMatchObject({ name: 'Acme Inc', slug, created_by: alice.id });

    const list = await backend.organizations.list();
    expectTypeOf(list).toEqualTypeOf<OrganizationWithRole[]>();
    expect(list).toContainEqual({ ...org, role: 'owner' });
    expect(await backend.organizations.get(org.id)).toEqual(org);
    expect(await backend.currentUserId()).toBe(alice.id);
  });

  it('lists only the caller\'s organizations, by name', async () => {
    const erin = await createUser();
    createdUserIds.push(erin.id);
    const zeta = await createOrganization(erin, 'Zeta');
    const alpha = await createOrganization(erin, 'Alpha');
    await createOrganization(alice, 'Not Erins');
    const list = await backendFor(erin).organizations.list();
    expect(list.map((o) => [o.id, o.role])).toEqual([
      [alpha.id, 'owner'],
      [zeta.id, 'owner'],
    ]);
  });

  it('works with a supabase-js client passed in, given the access token', async () => {
    const org = await createOrganization(alice);
    const supabase = clientFor(alice.token) as TypedSupabaseClient;
    const backend = createBackendClient({ supabase, accessToken: async () => alice.token });
    expect(backend.supabase).toBe(supabase);
    expect((await backend.organizations.list()).map((o) => o.id)).toContain(org.id);

    // Without the token the SDK cannot tell who "me" is (supabase.auth is off with accessToken).
    const blind = createBackendClient({ supabase });
    expect(await blind.currentUserId()).toBeNull();
    await rejection(blind.organizations.list(), 'not_authenticated');
    expect(await blind.organizations.get(org.id)).toEqual(org); // RLS still applies to alice's token
  });
});

describe('invitations', () => {
  it('bob accepts an invitation and lists the organization with the invited role', async () => {
    const org = await createOrganization(alice);
    const owner = backendFor(alice).organizations;

    const ticket = await owner.invite({ organizationId: org.id, email: bob.email.toUpperCase(), role: 'billing' });
    expect(ticket).toMatchObject({ email: bob.email, role: 'billing' });
    expect(ticket.token).toMatch(/^[0-9a-f]{64}$/);
    const expiresInDays = (Date.parse(ticket.expires_at) - Date.now()) / 86_400_000;
    expect(expiresInDays).toBeGreaterThan(6.9);
    expect(expiresInDays).toBeLessThanOrEqual(7);

    const pending = await owner.invitations(org.id, { pending: true });
    expect(pending.map((i) => i.id)).toEqual([ticket.invitation_id]);
    expect(pending[0]).not.toHaveProperty('token_hash');

    const accepted = await backendFor(bob).organizations.accept(ticket.token);
    expect(accepted).toEqual({ organization_id: org.id, role: 'billing' });

    expect(await backendFor(bob).organizations.list()).toContainEqual({ ...org, role: 'billing' });

    for (const viewer of [alice, bob]) {
      const members = await backendFor(viewer).organizations.members(org.id);
      expect(members.map((m) => ({ user_id: m.user_id, role: m.role, email: m.profile?.email }))).toEqual([
        { user_id: alice.id, role: 'owner', email: alice.email },
        { user_id: bob.id, role: 'billing', email: bob.email },
      ]);
    }
    const bobs = (await owner.members(org.id)).find((m) => m.user_id === bob.id);
    expect(bobs?.invited_by).toBe(alice.id);

    expect(await owner.invitations(org.id, { pending: true })).toEqual([]);
    const [used] = await owner.invitations(org.id);
    expect(used).toMatchObject({ id: ticket.invitation_id, accepted_by: bob.id, email: bob.email, role: 'billing' });
    expect(used?.accepted_at).not.toBeNull();
  });

  it('refuses a used, unknown or someone else\'s token', async () => {
    const org = await createOrganization(alice);
    const ticket = await backendFor(alice).organizations.invite({ organizationId: org.id, email: bob.email });
    expect(ticket.role).toBe('member');

    // carol uses bob's token: refused, and the token still works for bob.
    const mismatch = await rejection(backendFor(carol).organizations.accept(ticket.token), 'invitation_email_mismatch');
    expect(mismatch).toMatchObject({ status: 403, sqlstate: '42501' });
    expect(mismatch.message).toMatch(/another email/);
    expect(await roleOf(org.id, carol.id)).toBeUndefined();

    await backendFor(bob).organizations.accept(ticket.token);
    await rejection(backendFor(bob).organizations.accept(ticket.token), 'invitation_already_accepted');
    const unknown = await rejection(backendFor(bob).organizations.accept('0'.repeat(64)), 'invitation_not_found');
    // Raised with SQLSTATE PT404, which PostgREST answers with HTTP 404.
    expect(unknown).toMatchObject({ status: 404, sqlstate: 'PT404' });
    await rejection(backendFor(bob).organizations.accept('not a token'), 'invitation_not_found');
  });

  it('refuses an expired invitation', async () => {
    const org = await createOrganization(alice);
    const ticket = await backendFor(alice).organizations.invite({ organizationId: org.id, email: dave.email });
    await sql`update public.organization_invitations set expires_at = now() - interval '1 second' where id = ${ticket.invitation_id}`;
    await rejection(backendFor(dave).organizations.accept(ticket.token), 'invitation_expired');
  });

  it('refuses bad input and members who are already in', async () => {
    const org = await createOrganization(alice);
    const owner = backendFor(alice).organizations;
    await join(org.id, alice, bob, 'member');
    const already = await rejection(owner.invite({ organizationId: org.id, email: bob.email }), 'already_member');
    expect(already.status).toBe(409);
    const email = await rejection(owner.invite({ organizationId: org.id, email: 'not-an-email' }), 'invalid_email');
    expect(email.status).toBe(400);
    await rejection(owner.invite({ organizationId: org.id, email: dave.email, role: 'superuser' as Role }), 'invalid_role');
  });

  it('owners and admins revoke pending invitations; the token stops working', async () => {
    const org = await createOrganization(alice);
    await join(org.id, alice, bob, 'member');
    const owner = backendFor(alice).organizations;
    const ticket = await owner.invite({ organizationId: org.id, email: dave.email });

    // A plain member sees no invitations and cannot revoke one.
    expect(await backendFor(bob).organizations.invitations(org.id)).toEqual([]);
    await rejection(backendFor(bob).organizations.revokeInvitation(ticket.invitation_id), 'invitation_not_found');

    await owner.revokeInvitation(ticket.invitation_id);
    expect(await owner.invitations(org.id, { pending: true })).toEqual([]);
    await rejection(backendFor(dave).organizations.accept(ticket.token), 'invitation_not_found');
    await rejection(owner.revokeInvitation(ticket.invitation_id), 'invitation_not_found');
  });

  it('inviting the same email again re-sends: the old token dies, one pending invitation remains', async () => {
    const org = await createOrganization(alice);
    const owner = backendFor(alice).organizations;
    const first = await owner.invite({ organizationId: org.id, email: dave.email });
    const second = await owner.invite({ organizationId: org.id, email: dave.email, role: 'admin' });
    expect(second.invitation_id).toBe(first.invitation_id);
    expect(second.token).not.toBe(first.token);
    expect((await owner.invitations(org.id, { pending: true })).map((i) => i.role)).toEqual(['admin']);
    await rejection(backendFor(dave).organizations.accept(first.token), 'invitation_not_found');
    expect(await backendFor(dave).organizations.accept(second.token)).toEqual({ organization_id: org.id, role: 'admin' });
  });
});

describe('row-level security against a stranger', () => {
  let org: Organization;
  let stranger: TestUser;

  beforeAll(async () => {
    org = await createOrganization(alice, 'Private');
    await join(org.id, alice, bob, 'member');
    stranger = await createUser(); // a fresh carol, in no organization at all
    createdUserIds.push(stranger.id);
  });

  it('sees no organizations and cannot read this one or its members', async () => {
    const backend = backendFor(stranger).organizations;
    expect(await backend.list()).toEqual([]);
    expect(await backend.get(org.id)).toBeNull();
    expect(await backend.members(org.id)).toEqual([]);
    expect(await backend.invitations(org.id)).toEqual([]);
    // Nor the members' profiles.
    const { data, error } = await backendFor(stranger).supabase.from('profiles').select('id').in('id', [alice.id, bob.id]);
    expect(error).toBeNull();
    expect(data).toEqual([]);
  });

  it('cannot invite, change roles or remove members (not_authorized)', async () => {
    const backend = backendFor(stranger).organizations;
    const invite = await rejection(backend.invite({ organizationId: org.id, email: stranger.email }), 'not_authorized');
    expect(invite).toMatchObject({ status: 403, sqlstate: '42501' });
    await rejection(backend.changeRole({ organizationId: org.id, userId: bob.id, role: 'admin' }), 'not_authorized');
    await rejection(backend.remove({ organizationId: org.id, userId: bob.id }), 'not_authorized');
    await rejection(backend.leave(org.id), 'not_authorized');
    expect(await roleOf(org.id, bob.id)).toBe('member');
  });

  it('cannot update the organization: no row changes', async () => {
    const backend = backendFor(stranger);
    const { data, error } = await backend.supabase
      .from('organizations')
      .update({ name: 'Taken over' })
      .eq('id', org.id)
      .select();
    expect(error).toBeNull();
    expect(data).toEqual([]);
    await rejection(backend.organizations.update(org.id, { name: 'Taken over' }), 'not_authorized');
    // A plain member cannot either.
    await rejection(backendFor(bob).organizations.update(org.id, { name: 'Taken over' }), 'not_authorized');

    const [row] = await sql`select name, slug from public.organizations where id = ${org.id}`;
    expect(row).toEqual({ name: org.name, slug: org.slug });
  });

  it('cannot delete the organization, nor write members directly', async () => {
    const backend = backendFor(stranger).supabase;
    // Nobody deletes through the API (owners ask for the purge); a stranger gets no grant.
    const deleted = await backend.from('organizations').delete().eq('id', org.id).select();
    expect(deleted.error?.code).toBe('42501');
    const inserted = await backend
      .from('organization_members')
      .insert({ organization_id: org.id, user_id: stranger.id, role: 'owner' });
    expect(inserted.error?.code).toBe('42501');
    expect(await roleOf(org.id, stranger.id)).toBeUndefined();
  });
});

describe('typed errors', () => {
  it('slug_taken, invalid_slug, invalid_name on create', async () => {
    const org = await createOrganization(alice);
    const taken = await rejection(backendFor(carol).organizations.create({ name: 'Copy', slug: org.slug }), 'slug_taken');
    expect(taken).toMatchObject({ status: 409, sqlstate: 'PT409' });
    expect(taken.message).toContain(org.slug);

    const badSlug = await rejection(backendFor(alice).organizations.create({ name: 'Bad', slug: 'no spaces!' }), 'invalid_slug');
    expect(badSlug).toMatchObject({ status: 400, sqlstate: '22023' });
    await rejection(backendFor(alice).organizations.create({ name: 'Bad', slug: '-leading-hyphen' }), 'invalid_slug');
    await rejection(backendFor(alice).organizations.create({ name: '   ', slug: uniqueSlug() }), 'invalid_name');
  });

  it('last_owner: the only owner cannot leave, be demoted or be removed', async () => {
    const org = await createOrganization(alice);
    const owner = backendFor(alice).organizations;
    const err = await rejection(owner.leave(org.id), 'last_owner');
    expect(err).toMatchObject({ status: 400, sqlstate: 'P0001' });
    await rejection(owner.changeRole({ organizationId: org.id, userId: alice.id, role: 'admin' }), 'last_owner');
    await rejection(owner.remove({ organizationId: org.id, userId: alice.id }), 'last_owner');
    expect(await roleOf(org.id, alice.id)).toBe('owner');

    // With a second owner, the first may go.
    await join(org.id, alice, bob, 'owner');
    await owner.leave(org.id);
    expect(await roleOf(org.id, alice.id)).toBeUndefined();
    expect((await owner.list()).map((o) => o.id)).not.toContain(org.id);
  });

  it('an anonymous client cannot create an organization or list any', async () => {
    const anon = backendFor();
    expect(await anon.currentUserId()).toBeNull();
    const err = await rejection(anon.organizations.create({ name: 'Anon', slug: uniqueSlug('anon') }), 'not_authenticated');
    expect(err).toMatchObject({ status: 401, sqlstate: '42501' });
    expect(err.message).toMatch(/permission denied/);
    await rejection(anon.organizations.list(), 'not_authenticated');
    const read = await rejection(anon.organizations.get('00000000-0000-0000-0000-000000000000'), 'not_authenticated');
    expect(read.message).toMatch(/permission denied for table organizations/);
  });

  it('member_not_found and invalid_input', async () => {
    const org = await createOrganization(alice);
    const owner = backendFor(alice).organizations;
    const missing = await rejection(owner.changeRole({ organizationId: org.id, userId: carol.id, role: 'admin' }), 'member_not_found');
    expect(missing).toMatchObject({ status: 404, sqlstate: 'PT404' });
    await rejection(owner.remove({ organizationId: org.id, userId: carol.id }), 'member_not_found');
    const malformed = await rejection(owner.get('not-a-uuid'), 'invalid_input');
    expect(malformed).toMatchObject({ status: 400, sqlstate: '22P02' });
  });
});

describe('roles', () => {
  it('a plain member cannot change roles; the owner promotes bob to admin; an admin cannot make anyone owner', async () => {
    const org = await createOrganization(alice);
    await join(org.id, alice, bob, 'member');
    await join(org.id, alice, dave, 'member');

    const asMember = backendFor(bob).organizations;
    const denied = await rejection(asMember.changeRole({ organizationId: org.id, userId: dave.id, role: 'admin' }), 'not_authorized');
    expect(denied.message).toMatch(/owners and admins/i);
    await rejection(asMember.changeRole({ organizationId: org.id, userId: bob.id, role: 'admin' }), 'not_authorized');
    await rejection(asMember.invite({ organizationId: org.id, email: carol.email }), 'not_authorized');
    await rejection(asMember.remove({ organizationId: org.id, userId: dave.id }), 'not_authorized');

    await backendFor(alice).organizations.changeRole({ organizationId: org.id, userId: bob.id, role: 'admin' });
    expect((await asMember.list()).find((o) => o.id === org.id)?.role).toBe('admin');

    const asAdmin = asMember;
    await rejection(asAdmin.changeRole({ organizationId: org.id, userId: dave.id, role: 'owner' }), 'not_authorized');
    await rejection(asAdmin.changeRole({ organizationId: org.id, userId: bob.id, role: 'owner' }), 'not_authorized');
    await rejection(asAdmin.changeRole({ organizationId: org.id, userId: alice.id, role: 'member' }), 'not_authorized');
    await rejection(asAdmin.remove({ organizationId: org.id, userId: alice.id }), 'not_authorized');
    await rejection(asAdmin.invite({ organizationId: org.id, email: carol.email, role: 'owner' }), 'not_authorized');
    expect(await roleOf(org.id, dave.id)).toBe('member');
    expect(await roleOf(org.id, alice.id)).toBe('owner');

    // What an admin may do: change non-owners, invite, rename.
    await asAdmin.changeRole({ organizationId: org.id, userId: dave.id, role: 'billing' });
    expect(await roleOf(org.id, dave.id)).toBe('billing');
    await asAdmin.invite({ organizationId: org.id, email: carol.email, role: 'admin' });
    const renamed = await backendFor(bob).organizations.update(org.id, { name: 'Renamed by admin' });
    expect(renamed.name).toBe('Renamed by admin');
  });

  it('owners and admins remove members; members leave', async () => {
    const org = await createOrganization(alice);
    await join(org.id, alice, bob, 'admin');
    await join(org.id, alice, carol, 'member');
    await join(org.id, alice, dave, 'billing');

    await backendFor(bob).organizations.remove({ organizationId: org.id, userId: carol.id });
    expect((await backendFor(carol).organizations.list()).map((o) => o.id)).not.toContain(org.id);
    expect(await backendFor(carol).organizations.members(org.id)).toEqual([]);

    await backendFor(dave).organizations.leave(org.id);
    const members = await backendFor(alice).organizations.members(org.id);
    expect(members.map((m) => [m.user_id, m.role])).toEqual([
      [alice.id, 'owner'],
      [bob.id, 'admin'],
    ]);
  });
});

describe('updating an organization', () => {
  it('the owner renames it and changes its slug; constraint errors are typed', async () => {
    const org = await createOrganization(alice);
    const other = await createOrganization(alice);
    const owner = backendFor(alice).organizations;
    const slug = uniqueSlug('renamed');
    const updated = await owner.update(org.id, { name: 'Renamed', slug });
    expect(updated).toMatchObject({ id: org.id, name: 'Renamed', slug });
    expect(Date.parse(updated.updated_at)).toBeGreaterThanOrEqual(Date.parse(org.updated_at));

    const taken = await rejection(owner.update(org.id, { slug: other.slug }), 'slug_taken');
    expect(taken).toMatchObject({ status: 409, sqlstate: '23505' });
    await rejection(owner.update(org.id, { slug: 'Upper Case' }), 'invalid_slug');
    await rejection(owner.update(org.id, { name: '' }), 'invalid_name');
    expect(await owner.update(org.id, {})).toEqual(updated);
  });
});
