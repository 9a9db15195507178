// What the local Auth (scripts/auth) leaves in GoTrue's schema, row by row, so that a database
// written here reads the same to GoTrue, Studio and the tenancy triggers: bcrypt password hashes,
// one-time tokens only as sha224 hashes (in the user's *_token column and auth.one_time_tokens),
// identities, sessions with their amr claim, refresh tokens, and the audit trail.
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { sql } from '../support/db.ts';
import { authClient, codeOf, latestMail, PASSWORD, uniqueEmail, useGateway, verifyLinkOf } from './support.ts';

const gateway = useGateway({ AUTH_ENABLE_CONFIRMATIONS: 'true' });
const sha224 = (s: string) => createHash('sha224').update(s).digest('hex');

describe('the auth schema after a sign-up', () => {
  it('keeps a bcrypt hash, the code only as sha224(email + code), and no plaintext anywhere', async () => {
    const email = uniqueEmail('rows');
    const client = authClient(gateway.url);
    const { data, error } = await client.auth.signUp({ email, password: PASSWORD, options: { data: { full_name: 'Row Test' } } });
    expect(error).toBeNull();
    const id = data.user!.id;
    const mail = await latestMail(email);
    const code = codeOf(mail);

    const [user] = await sql`
      select instance_id, aud, role, encrypted_password, confirmation_token, confirmation_sent_at, raw_app_meta_data,
             raw_user_meta_data, email_confirmed_at, is_anonymous
      from auth.users where id = ${id}`;
    expect(user.instance_id).toBe('00000000-0000-0000-0000-000000000000');
    expect(user).toMatchObject({ aud: 'authenticated', role: 'authenticated', email_confirmed_at: null, is_anonymous: false });
    expect(user.encrypted_password).toMatch(/^\$2a\$10\$[./A-Za-z0-9]{53}$/);
    expect(user.encrypted_password).not.toContain(PASSWORD);
    expect(user.confirmation_token).toBe(sha224(email + code));
    expect(verifyLinkOf(mail).searchParams.get('token')).toBe(user.confirmation_token);
    expect(user.raw_app_meta_data).toEqual({ provider: 'email', providers: ['email'] });
    // GoTrue's RemoveUnconfirmedIdentities: the user's metadata is the new identity's data.
    expect(user.raw_user_meta_data).toEqual({ sub: id, email, email_verified: false, phone_verified: false, full_name: 'Row Test' });

    const tokens = await sql`select token_type::text, token_hash, relates_to from auth.one_time_tokens where user_id = ${id}`;
    expect(tokens).toEqual([{ token_type: 'confirmation_token', token_hash: sha224(email + code), relates_to: email }]);
    const identities = await sql`select provider, provider_id, email, identity_data from auth.identities where user_id = ${id}`;
    expect(identities).toEqual([{ provider: 'email', provider_id: id, email, identity_data: expect.objectContaining({ sub: id, email }) }]);
    const [{ count }] = await sql<{ count: number }[]>`
      select count(*)::int as count from auth.users u where u.id = ${id}
        and (u::text like ${`%${code}%`} or u::text like ${`%${PASSWORD}%`})`;
    expect(count).toBe(0);
    const [{ profiles }] = await sql<{ profiles: number }[]>`select count(*)::int as profiles from public.profiles where id = ${id} and full_name = 'Row Test'`;
    expect(profiles).toBe(1);

    // Confirming spends the token and records the sign-in.
    const verified = await client.auth.verifyOtp({ email, token: code, type: 'email' });
    expect(verified.error).toBeNull();
    const [after] = await sql`select confirmation_token, email_confirmed_at, raw_user_meta_data ->> 'email_verified' as verified from auth.users where id = ${id}`;
    expect(after).toMatchObject({ confirmation_token: '', verified: 'true' });
    expect(after.email_confirmed_at).toBeInstanceOf(Date);
    expect(await sql`select 1 from auth.one_time_tokens where user_id = ${id}`).toHaveLength(0);
    const [identity] = await sql`select identity_data ->> 'email_verified' as verified from auth.identities where user_id = ${id}`;
    expect(identity.verified).toBe('true');

    const audit = await sql<{ action: string }[]>`
      select payload ->> 'action' as action from auth.audit_log_entries where payload ->> 'actor_id' = ${id} order by created_at`;
    expect(audit.map((a) => a.action)).toEqual(expect.arrayContaining(['user_confirmation_requested', 'user_signedup']));
  });

  it('keeps each sign-in as a session with its amr claim and a chain of 12-character refresh tokens', async () => {
    const email = uniqueEmail('session-rows');
    const client = authClient(gateway.url);
    await client.auth.signUp({ email, password: PASSWORD });
    await client.auth.verifyOtp({ email, token: codeOf(await latestMail(email)), type: 'signup' });
    const { data } = await client.auth.signInWithPassword({ email, password: PASSWORD });
    const sessionId = JSON.parse(Buffer.from(data.session!.access_token.split('.')[1], 'base64url').toString()).session_id;
    const [session] = await sql`select aal::text, ip::text, user_agent from auth.sessions where id = ${sessionId}`;
    expect(session.aal).toBe('aal1');
    expect(session.ip).toMatch(/^127\./);
    const claims = await sql`select authentication_method from auth.mfa_amr_claims where session_id = ${sessionId}`;
    expect(claims).toEqual([{ authentication_method: 'password' }]);
    const refreshed = await client.auth.refreshSession();
    expect(refreshed.data.session!.refresh_token).toMatch(/^[a-z2-7]{12}$/);
    const chain = await sql`select token, parent, revoked from auth.refresh_tokens where session_id = ${sessionId} order by id`;
    expect(chain).toEqual([
      { token: data.session!.refresh_token, parent: null, revoked: true },
      { token: refreshed.data.session!.refresh_token, parent: data.session!.refresh_token, revoked: false },
    ]);
    expect(await sql`select 1 from auth.audit_log_entries where payload ->> 'action' = 'token_refreshed' and payload ->> 'actor_id' = ${data.user!.id}`).toHaveLength(1);
  });
});

describe('concurrent refreshes', () => {
  it('of one refresh token all get the same child token, as GoTrue serializes them', async () => {
    const email = uniqueEmail('concurrent');
    const client = authClient(gateway.url);
    await client.auth.signUp({ email, password: PASSWORD });
    await client.auth.verifyOtp({ email, token: codeOf(await latestMail(email)), type: 'signup' });
    const { data } = await client.auth.signInWithPassword({ email, password: PASSWORD });
    const results = await Promise.all(Array.from({ length: 6 }, () =>
      authClient(gateway.url).auth.refreshSession({ refresh_token: data.session!.refresh_token })));
    expect(results.map((r) => r.error)).toEqual(new Array(6).fill(null));
    expect(new Set(results.map((r) => r.data.session!.refresh_token)).size).toBe(1);
  });
});
