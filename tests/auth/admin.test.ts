// The admin API through supabase-js with the service role key: createUser, listUsers with
// GoTrue's pagination (supabase-js reads its Link and X-Total-Count headers), getUserById,
// updateUserById (app_metadata.platform_admin, how operators are marked), deleteUser (and the
// last-owner guard on auth.users), generateLink for every type, inviteUserByEmail; and every one
// of them refused without the service role key.
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ANON_KEY, SERVICE_ROLE_KEY } from '../../scripts/lib/config.mjs';
import { sql } from '../support/db.ts';
import {
  adminClient, authClient, createConfirmedUser, decodeJwt, fragmentOf, latestMail, openLink, PASSWORD, signedIn,
  uniqueEmail, useGateway, verifyLinkOf,
} from './support.ts';

const gateway = useGateway({ AUTH_ENABLE_CONFIRMATIONS: 'true' });
const admin = () => adminClient(gateway.url).auth.admin;

describe('users', () => {
  it('creates a user (confirmed or not) with metadata, an email identity and a profile', async () => {
    const email = uniqueEmail('created');
    const { data, error } = await admin().createUser({
      email, password: PASSWORD, email_confirm: true,
      user_metadata: { full_name: 'Made By Admin' }, app_metadata: { plan: 'team' },
    });
    expect(error).toBeNull();
    expect(data.user).toMatchObject({
      email, email_confirmed_at: expect.any(String), role: 'authenticated', aud: 'authenticated',
      app_metadata: { provider: 'email', providers: ['email'], plan: 'team' },
      user_metadata: expect.objectContaining({ full_name: 'Made By Admin' }),
      identities: [expect.objectContaining({ provider: 'email', id: data.user!.id })],
    });
    const [profile] = await sql`select full_name from public.profiles where id = ${data.user!.id}`;
    expect(profile.full_name).toBe('Made By Admin');
    const signIn = await authClient(gateway.url).auth.signInWithPassword({ email, password: PASSWORD });
    expect(signIn.error).toBeNull();

    const unconfirmed = await admin().createUser({ email: uniqueEmail('unconfirmed'), password: PASSWORD });
    expect(unconfirmed.data.user?.email_confirmed_at).toBeUndefined();
  });

  it('refuses a duplicate address with email_exists, and a missing address with validation_failed', async () => {
    const { email } = await createConfirmedUser(gateway.url);
    const dup = await admin().createUser({ email, password: PASSWORD });
    expect(dup.error).toMatchObject({ status: 422, code: 'email_exists' });
    const none = await admin().createUser({ password: PASSWORD });
    expect(none.error).toMatchObject({ status: 400, code: 'validation_failed' });
  });

  it('lists users newest first, paginated as GoTrue does', async () => {
    const made = [];
    for (let i = 0; i < 3; i++) made.push(await createConfirmedUser(gateway.url));
    const first = await admin().listUsers({ page: 1, perPage: 2 });
    expect(first.error).toBeNull();
    expect(first.data.users).toHaveLength(2);
    const listed = first.data as { users: { id: string; created_at: string }[]; aud: string; total: number; nextPage: number | null };
    expect(listed).toMatchObject({ aud: 'authenticated', nextPage: 2 });
    expect(listed.total).toBeGreaterThanOrEqual(3);

    // Page by page (other suites may add users meanwhile), newest first, no user twice.
    const seen: { id: string; created_at: string }[] = [...listed.users];
    for (let page = 2; page <= 10 && !made.every((m) => seen.some((u) => u.id === m.id)); page++) {
      const { data } = await admin().listUsers({ page, perPage: 2 });
      seen.push(...data.users);
    }
    const ids = seen.map((u) => u.id);
    expect(new Set(ids).size).toBe(ids.length);
    const times = seen.map((u) => new Date(u.created_at).getTime());
    expect(times).toEqual([...times].sort((a, b) => b - a));
    const positions = made.map((m) => ids.indexOf(m.id));
    expect(positions.every((p) => p >= 0)).toBe(true);
    expect(positions[2]).toBeLessThan(positions[1]);
    expect(positions[1]).toBeLessThan(positions[0]);

    const res = await fetch(`${gateway.url}/auth/v1/admin/users?page=1&per_page=2`, {
      headers: { apikey: SERVICE_ROLE_KEY, authorization: `Bearer ${SERVICE_ROLE_KEY}` },
    });
    const total = Number(res.headers.get('x-total-count'));
    expect(total).toBeGreaterThanOrEqual(listed.total);
    const link = res.headers.get('link') ?? '';
    expect(link).toMatch(/<[^>]*[?&]page=2(&[^>]*)?>; rel="next"/);
    expect(link).toMatch(new RegExp(`<[^>]*[?&]page=${Math.ceil(total / 2)}(&[^>]*)?>; rel="last"`));
    expect((await res.json()).users).toHaveLength(2);
  });

  it('gets a user by id, and answers user_not_found for an unknown one', async () => {
    const { id, email } = await createConfirmedUser(gateway.url);
    const { data } = await admin().getUserById(id);
    expect(data.user).toMatchObject({ id, email });
    const missing = await admin().getUserById(randomUUID());
    expect(missing.error).toMatchObject({ status: 404, code: 'user_not_found' });
  });

  it('marks a platform admin through app_metadata, which the next access tokens carry', async () => {
    const { id, email } = await createConfirmedUser(gateway.url);
    const { data, error } = await admin().updateUserById(id, {
      app_metadata: { platform_admin: true }, user_metadata: { full_name: 'Operator' },
    });
    expect(error).toBeNull();
    expect(data.user?.app_metadata).toEqual({ provider: 'email', providers: ['email'], platform_admin: true });
    const { data: signIn } = await authClient(gateway.url).auth.signInWithPassword({ email, password: PASSWORD });
    expect(decodeJwt(signIn.session!.access_token).app_metadata).toMatchObject({ platform_admin: true });
    const [row] = await sql`select raw_app_meta_data from auth.users where id = ${id}`;
    expect(row.raw_app_meta_data.platform_admin).toBe(true);
  });

  it('updates the password and the email, confirms, and bans', async () => {
    const { id } = await createConfirmedUser(gateway.url);
    const newEmail = uniqueEmail('renamed');
    const { error } = await admin().updateUserById(id, { email: newEmail, password: 'changed-by-admin-1', email_confirm: true });
    expect(error).toBeNull();
    const signIn = await authClient(gateway.url).auth.signInWithPassword({ email: newEmail, password: 'changed-by-admin-1' });
    expect(signIn.error).toBeNull();
    const banned = await admin().updateUserById(id, { ban_duration: '24h' });
    expect(banned.data.user?.banned_until).toEqual(expect.any(String));
    const refused = await authClient(gateway.url).auth.signInWithPassword({ email: newEmail, password: 'changed-by-admin-1' });
    expect(refused.error).toMatchObject({ code: 'user_banned' });
    await admin().updateUserById(id, { ban_duration: 'none' });
    expect((await authClient(gateway.url).auth.signInWithPassword({ email: newEmail, password: 'changed-by-admin-1' })).error).toBeNull();
  });

  it('deletes a user, their sessions with them', async () => {
    const { user, session } = await signedIn(gateway.url);
    const { error } = await admin().deleteUser(user.id);
    expect(error).toBeNull();
    expect(await sql`select 1 from auth.users where id = ${user.id}`).toHaveLength(0);
    expect(await sql`select 1 from auth.sessions where user_id = ${user.id}`).toHaveLength(0);
    const refresh = await authClient(gateway.url).auth.refreshSession({ refresh_token: session.refresh_token });
    expect(refresh.error).toMatchObject({ status: 400, code: 'refresh_token_not_found' });
  });

  it('does not delete the only owner of an organization: the database refuses, Auth answers 500', async () => {
    const { user } = await signedIn(gateway.url);
    const [org] = await sql`insert into public.organizations (name, slug, created_by) values ('Owned', ${`owned-${randomUUID().slice(0, 8)}`}, ${user.id}) returning id`;
    await sql`insert into public.organization_members (organization_id, user_id, role) values (${org.id}, ${user.id}, 'owner')`;
    try {
      const { error } = await admin().deleteUser(user.id);
      expect(error).toMatchObject({ status: 500 });
      expect(await sql`select 1 from auth.users where id = ${user.id}`).toHaveLength(1);
    } finally {
      await sql`delete from public.organizations where id = ${org.id}`;
    }
  });
});

describe('links and invitations', () => {
  it('generates a sign-up link for a new address (creating the user) that confirms it', async () => {
    const email = uniqueEmail('gen-signup');
    const { data, error } = await admin().generateLink({ type: 'signup', email, password: PASSWORD, options: { data: { full_name: 'Linked' } } });
    expect(error).toBeNull();
    expect(data.properties).toMatchObject({
      verification_type: 'signup', email_otp: expect.stringMatching(/^\d{6}$/), hashed_token: expect.any(String),
      action_link: expect.stringContaining(`${gateway.url}/auth/v1/verify?`), redirect_to: 'http://127.0.0.1:3000',
    });
    expect(data.user).toMatchObject({ email });
    const { location } = await openLink(data.properties!.action_link);
    expect(fragmentOf(location).get('type')).toBe('signup');
    const [row] = await sql`select email_confirmed_at from auth.users where email = ${email}`;
    expect(row.email_confirmed_at).not.toBeNull();
  });

  it('generates magic link, recovery and invite links whose code or hash verifies', async () => {
    const user = await createConfirmedUser(gateway.url);
    const magic = await admin().generateLink({ type: 'magiclink', email: user.email });
    const byCode = await authClient(gateway.url).auth.verifyOtp({ email: user.email, token: magic.data.properties!.email_otp, type: 'email' });
    expect(byCode.error).toBeNull();

    const recovery = await admin().generateLink({ type: 'recovery', email: user.email, options: { redirectTo: 'http://127.0.0.1:3000/reset' } });
    expect(recovery.data.properties?.redirect_to).toBe('http://127.0.0.1:3000/reset');
    const byHash = await authClient(gateway.url).auth.verifyOtp({ token_hash: recovery.data.properties!.hashed_token, type: 'recovery' });
    expect(byHash.error).toBeNull();

    const invited = uniqueEmail('gen-invite');
    const invite = await admin().generateLink({ type: 'invite', email: invited });
    expect(invite.data.user).toMatchObject({ email: invited, invited_at: expect.any(String) });
    const { location } = await openLink(invite.data.properties!.action_link);
    expect(fragmentOf(location).get('type')).toBe('invite');

    const unknown = await admin().generateLink({ type: 'recovery', email: uniqueEmail('gen-unknown') });
    expect(unknown.error).toMatchObject({ status: 404, code: 'user_not_found' });
  });

  it('generates email change links for the current and the new address', async () => {
    const user = await createConfirmedUser(gateway.url);
    const newEmail = uniqueEmail('gen-change');
    const current = await admin().generateLink({ type: 'email_change_current', email: user.email, newEmail });
    expect(current.error).toBeNull();
    const next = await admin().generateLink({ type: 'email_change_new', email: user.email, newEmail });
    expect(next.error).toBeNull();
    expect(current.data.properties?.action_link).toContain('type=email_change');
    await openLink(current.data.properties!.action_link);
    const { location } = await openLink(next.data.properties!.action_link);
    expect(fragmentOf(location).get('access_token')).toBeTruthy();
    const [row] = await sql`select email from auth.users where id = ${user.id}`;
    expect(row.email).toBe(newEmail);
  });

  it('invites by email: the invitee gets a mail whose link signs them in', async () => {
    const email = uniqueEmail('invited');
    const { data, error } = await admin().inviteUserByEmail(email, { data: { full_name: 'Invitee' } });
    expect(error).toBeNull();
    expect(data.user).toMatchObject({ email, invited_at: expect.any(String) });
    const link = verifyLinkOf(await latestMail(email));
    expect(link.searchParams.get('type')).toBe('invite');
    const { location } = await openLink(link);
    const session = fragmentOf(location);
    expect(session.get('type')).toBe('invite');
    const client = authClient(gateway.url);
    await client.auth.setSession({ access_token: session.get('access_token')!, refresh_token: session.get('refresh_token')! });
    const { error: setError } = await client.auth.updateUser({ password: 'invitee-password-1' });
    expect(setError).toBeNull();
    expect((await authClient(gateway.url).auth.signInWithPassword({ email, password: 'invitee-password-1' })).error).toBeNull();
  });
});

describe('without the service role key', () => {
  it('refuses the anon key and a user\'s token with not_admin, and no bearer with no_authorization', async () => {
    const asAnon = authClient(gateway.url).auth.admin;
    const listed = await asAnon.listUsers();
    expect(listed.error).toMatchObject({ name: 'AuthApiError', status: 403, code: 'not_admin' });
    const created = await asAnon.createUser({ email: uniqueEmail('nope'), password: PASSWORD });
    expect(created.error).toMatchObject({ status: 403, code: 'not_admin' });
    const link = await asAnon.generateLink({ type: 'magiclink', email: uniqueEmail('nope') });
    expect(link.error).toMatchObject({ status: 403, code: 'not_admin' });

    const { session } = await signedIn(gateway.url);
    for (const [method, path] of [['GET', '/admin/users'], ['POST', '/admin/users'], ['DELETE', `/admin/users/${randomUUID()}`], ['POST', '/invite']]) {
      const res = await fetch(`${gateway.url}/auth/v1${path}`, {
        method,
        headers: { apikey: ANON_KEY, authorization: `Bearer ${session.access_token}`, 'content-type': 'application/json', 'x-supabase-api-version': '2024-01-01' },
        body: method === 'GET' ? undefined : JSON.stringify({ email: uniqueEmail('nope') }),
      });
      expect(res.status).toBe(403);
      expect((await res.json()).code).toBe('not_admin');
    }

    const res = await fetch(`${gateway.url}/auth/v1/admin/users`, {
      headers: { apikey: SERVICE_ROLE_KEY, authorization: 'Token abc', 'x-supabase-api-version': '2024-01-01' },
    });
    expect(res.status).toBe(401);
    expect((await res.json()).code).toBe('no_authorization');
  });
});
