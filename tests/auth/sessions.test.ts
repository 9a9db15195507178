// Sessions as GoTrue keeps them: password sign-in, the access token's claims, auth.sessions and
// auth.refresh_tokens with rotation (each refresh revokes its token and issues a child), a used
// token refused and, past refresh_token_reuse_interval, its reuse ending the whole session; an
// expired access token refreshed by supabase-js on its own; getSession/refreshSession/getUser;
// signOut's scopes; and the events supabase-js emits along the way.
import { describe, expect, it } from 'vitest';
import { sql } from '../support/db.ts';
import { ANON_KEY } from '../../scripts/lib/config.mjs';
import {
  authClient, createConfirmedUser, decodeJwt, eventually, PASSWORD, recordEvents, signedIn, sleep, uniqueEmail, useGateway,
} from './support.ts';

const gateway = useGateway({ AUTH_ENABLE_CONFIRMATIONS: 'true', AUTH_JWT_EXPIRY: '3600' });
// Short-lived access tokens and a short reuse interval, to see expiry and reuse within a test.
const shortLived = useGateway({ AUTH_JWT_EXPIRY: '2', AUTH_REFRESH_TOKEN_REUSE_INTERVAL: '1' });

interface RefreshTokenRow { token: string; parent: string | null; revoked: boolean; session_id: string }

async function refreshTokensOf(sessionId: string): Promise<RefreshTokenRow[]> {
  return sql<RefreshTokenRow[]>`
    select token, parent, revoked, session_id from auth.refresh_tokens where session_id = ${sessionId} order by id`;
}

describe('signInWithPassword', () => {
  it('refuses an unknown address or a wrong password alike with invalid_credentials', async () => {
    const user = await createConfirmedUser(gateway.url);
    const wrong = await authClient(gateway.url).auth.signInWithPassword({ email: user.email, password: 'not-the-password' });
    expect(wrong.error).toMatchObject({ name: 'AuthApiError', status: 400, code: 'invalid_credentials', message: 'Invalid login credentials' });
    const unknown = await authClient(gateway.url).auth.signInWithPassword({ email: uniqueEmail('nobody'), password: PASSWORD });
    expect(unknown.error).toMatchObject({ status: 400, code: 'invalid_credentials' });
  });

  it('answers a session shaped as GoTrue\'s, with GoTrue\'s claims in the access token', async () => {
    const user = await createConfirmedUser(gateway.url, uniqueEmail('claims'), { user_metadata: { full_name: 'Claude' } });
    const client = authClient(gateway.url);
    const events = recordEvents(client);
    const { data, error } = await client.auth.signInWithPassword({ email: user.email, password: user.password });
    expect(error).toBeNull();
    const session = data.session!;
    expect(session).toMatchObject({ token_type: 'bearer', expires_in: 3600, refresh_token: expect.any(String) });
    expect(session.expires_at! - Math.floor(Date.now() / 1000)).toBeGreaterThan(3500);
    expect(session.user).toMatchObject({
      id: user.id, aud: 'authenticated', role: 'authenticated', email: user.email, phone: '',
      email_confirmed_at: expect.any(String), confirmed_at: expect.any(String), last_sign_in_at: expect.any(String),
      app_metadata: { provider: 'email', providers: ['email'] }, user_metadata: expect.objectContaining({ full_name: 'Claude' }),
      identities: [expect.objectContaining({ provider: 'email', identity_id: expect.any(String) })],
      created_at: expect.any(String), updated_at: expect.any(String), is_anonymous: false,
    });

    const claims = decodeJwt(session.access_token);
    expect(claims).toMatchObject({
      iss: `${gateway.url}/auth/v1`, sub: user.id, aud: 'authenticated', email: user.email, phone: '',
      app_metadata: { provider: 'email', providers: ['email'] }, user_metadata: expect.objectContaining({ full_name: 'Claude' }),
      role: 'authenticated', aal: 'aal1', is_anonymous: false,
      amr: [{ method: 'password', timestamp: expect.any(Number) }],
    });
    expect((claims.exp as number) - (claims.iat as number)).toBe(3600);
    const header = JSON.parse(Buffer.from(session.access_token.split('.')[0], 'base64url').toString());
    expect(header.alg).toBe('HS256');

    const [row] = await sql`select user_id, aal::text from auth.sessions where id = ${claims.session_id as string}`;
    expect(row).toEqual({ user_id: user.id, aal: 'aal1' });
    const tokens = await refreshTokensOf(claims.session_id as string);
    expect(tokens).toEqual([{ token: session.refresh_token, parent: null, revoked: false, session_id: claims.session_id }]);
    await eventually(() => events.includes('SIGNED_IN'));
  });

  it('lets PostgREST read as the user with the access token', async () => {
    const { client, user } = await signedIn(gateway.url);
    const { data, error } = await client.from('profiles').select('id, email').eq('id', user.id);
    expect(error).toBeNull();
    expect(data).toEqual([{ id: user.id, email: user.email }]);
  });
});

describe('refresh tokens', () => {
  it('rotate: each refresh revokes the used token and issues its child (TOKEN_REFRESHED)', async () => {
    const { client, session } = await signedIn(gateway.url);
    const events = recordEvents(client);
    const sessionId = decodeJwt(session.access_token).session_id as string;
    const { data, error } = await client.auth.refreshSession();
    expect(error).toBeNull();
    const next = data.session!;
    expect(next.refresh_token).not.toBe(session.refresh_token);
    expect(decodeJwt(next.access_token).session_id).toBe(sessionId);
    await eventually(() => events.includes('TOKEN_REFRESHED'));
    expect(await refreshTokensOf(sessionId)).toEqual([
      { token: session.refresh_token, parent: null, revoked: true, session_id: sessionId },
      { token: next.refresh_token, parent: session.refresh_token, revoked: false, session_id: sessionId },
    ]);
    expect((await client.auth.getSession()).data.session?.refresh_token).toBe(next.refresh_token);
  });

  it('refuse an unknown token with refresh_token_not_found, a malformed one with validation_failed', async () => {
    const { error } = await authClient(gateway.url).auth.refreshSession({ refresh_token: 'abcdefgh2345' });
    expect(error).toMatchObject({ status: 400, code: 'refresh_token_not_found' });
    const malformed = await authClient(gateway.url).auth.refreshSession({ refresh_token: 'no-such-token!' });
    expect(malformed.error).toMatchObject({ status: 400, code: 'validation_failed' });
  });

  it('give a token used once more right away its child again (a client that missed the answer)', async () => {
    const { session } = await signedIn(shortLived.url);
    const first = await authClient(shortLived.url).auth.refreshSession({ refresh_token: session.refresh_token });
    const again = await authClient(shortLived.url).auth.refreshSession({ refresh_token: session.refresh_token });
    expect(again.error).toBeNull();
    expect(again.data.session?.refresh_token).toBe(first.data.session!.refresh_token);
  });

  it('refuse a used token past the reuse interval with refresh_token_already_used, and end the whole session', async () => {
    const { session } = await signedIn(shortLived.url);
    const sessionId = decodeJwt(session.access_token).session_id as string;
    const second = (await authClient(shortLived.url).auth.refreshSession({ refresh_token: session.refresh_token })).data.session!;
    const third = (await authClient(shortLived.url).auth.refreshSession({ refresh_token: second.refresh_token })).data.session!;
    await sleep(1500); // past refresh_token_reuse_interval (1 s here, 10 s in config.toml)
    const reuse = await authClient(shortLived.url).auth.refreshSession({ refresh_token: session.refresh_token });
    expect(reuse.error).toMatchObject({ name: 'AuthApiError', status: 400, code: 'refresh_token_already_used' });
    // The session's newest token is no good any more either: someone else may hold the old ones.
    await sleep(1500);
    const current = await authClient(shortLived.url).auth.refreshSession({ refresh_token: third.refresh_token });
    expect(current.error).toMatchObject({ status: 400 });
    expect(['refresh_token_not_found', 'refresh_token_already_used', 'session_not_found']).toContain(current.error!.code);
    const live = await sql`select token from auth.refresh_tokens where session_id = ${sessionId} and not revoked`;
    expect(live).toEqual([]);
  });

  it('are refreshed by supabase-js on its own once the access token has expired', async () => {
    const { client, user, session } = await signedIn(shortLived.url);
    const events = recordEvents(client);
    expect(session.expires_in).toBe(2);
    await sleep(2500);
    // The old token is expired: Auth refuses it (PostgREST allows 30 s of clock skew).
    const stale = await fetch(`${shortLived.url}/auth/v1/user`, {
      headers: { apikey: ANON_KEY, authorization: `Bearer ${session.access_token}`, 'x-supabase-api-version': '2024-01-01' },
    });
    expect(stale.status).toBe(403);
    expect((await stale.json()).code).toBe('bad_jwt');
    // supabase-js notices the expiry before its request and refreshes first.
    const { data, error } = await client.from('profiles').select('id').eq('id', user.id);
    expect(error).toBeNull();
    expect(data).toEqual([{ id: user.id }]);
    expect(events).toContain('TOKEN_REFRESHED');
    const now = (await client.auth.getSession()).data.session!;
    expect(now.refresh_token).not.toBe(session.refresh_token);
    expect(now.expires_at! * 1000).toBeGreaterThan(Date.now());
  });

  it('are refreshed by the auto-refresh ticker of a client with autoRefreshToken', async () => {
    const { client, session } = await signedIn(shortLived.url, { autoRefreshToken: true });
    try {
      const events = recordEvents(client);
      // The ticker runs every 30 s; starting it ticks at once.
      await client.auth.startAutoRefresh();
      await eventually(() => events.includes('TOKEN_REFRESHED'), 20_000);
      expect((await client.auth.getSession()).data.session?.refresh_token).not.toBe(session.refresh_token);
    } finally {
      await client.auth.stopAutoRefresh();
    }
  }, 30_000);
});

describe('getUser', () => {
  it('answers the user of the session from the server', async () => {
    const { client, user } = await signedIn(gateway.url);
    const { data, error } = await client.auth.getUser();
    expect(error).toBeNull();
    expect(data.user).toMatchObject({ id: user.id, email: user.email });
  });

  it('refuses a token that is not one of the project\'s with bad_jwt, and none with no_authorization', async () => {
    const { data: { user }, error } = await authClient(gateway.url).auth.getUser('eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.bad-signature');
    expect(user).toBeNull();
    expect(error).toMatchObject({ status: 403, code: 'bad_jwt' });
    const res = await fetch(`${gateway.url}/auth/v1/user`, { headers: { apikey: ANON_KEY, authorization: 'Basic abc', 'x-supabase-api-version': '2024-01-01' } });
    expect(res.status).toBe(401);
    expect((await res.json()).code).toBe('no_authorization');
  });
});

describe('signOut', () => {
  async function threeSessions() {
    const user = await createConfirmedUser(gateway.url);
    const clients = [authClient(gateway.url), authClient(gateway.url), authClient(gateway.url)];
    const sessions = [];
    for (const c of clients) {
      const { data, error } = await c.auth.signInWithPassword({ email: user.email, password: user.password });
      if (error) throw error;
      sessions.push(data.session!);
    }
    return { user, clients, sessions };
  }

  const sessionIds = async (userId: string) =>
    (await sql<{ id: string }[]>`select id from auth.sessions where user_id = ${userId}`).map((r) => r.id).sort();
  const idOf = (s: { access_token: string }) => decodeJwt(s.access_token).session_id as string;

  it('with scope others ends every other session and keeps this one', async () => {
    const { user, clients, sessions } = await threeSessions();
    const { error } = await clients[0].auth.signOut({ scope: 'others' });
    expect(error).toBeNull();
    expect(await sessionIds(user.id)).toEqual([idOf(sessions[0])]);
    expect((await clients[0].auth.getUser()).data.user?.id).toBe(user.id);
    const other = await clients[1].auth.getUser();
    expect(other.data.user).toBeNull();
    expect(other.error?.name).toBe('AuthSessionMissingError');
    const refreshed = await authClient(gateway.url).auth.refreshSession({ refresh_token: sessions[2].refresh_token });
    expect(refreshed.error).toMatchObject({ status: 400 });
  });

  it('with scope local ends only this session (SIGNED_OUT)', async () => {
    const { user, clients, sessions } = await threeSessions();
    const events = recordEvents(clients[1]);
    const { error } = await clients[1].auth.signOut({ scope: 'local' });
    expect(error).toBeNull();
    await eventually(() => events.includes('SIGNED_OUT'));
    expect((await clients[1].auth.getSession()).data.session).toBeNull();
    expect(await sessionIds(user.id)).toEqual([idOf(sessions[0]), idOf(sessions[2])].sort());
  });

  it('with scope global (the default) ends every session of the user', async () => {
    const { user, clients, sessions } = await threeSessions();
    const events = recordEvents(clients[2]);
    const { error } = await clients[2].auth.signOut();
    expect(error).toBeNull();
    await eventually(() => events.includes('SIGNED_OUT'));
    expect(await sessionIds(user.id)).toEqual([]);
    const revoked = await authClient(gateway.url).auth.refreshSession({ refresh_token: sessions[0].refresh_token });
    expect(revoked.error).toMatchObject({ status: 400, code: 'refresh_token_not_found' });
    // The access token of an ended session: GoTrue answers session_not_found, which supabase-js
    // reads as a missing session.
    const res = await fetch(`${gateway.url}/auth/v1/user`, {
      headers: {
        apikey: ANON_KEY,
        authorization: `Bearer ${sessions[0].access_token}`,
        'x-supabase-api-version': '2024-01-01',
      },
    });
    expect(res.status).toBe(403);
    expect((await res.json()).code).toBe('session_not_found');
  });

  it('refuses an unknown scope with validation_failed', async () => {
    const { session } = await signedIn(gateway.url);
    const res = await fetch(`${gateway.url}/auth/v1/logout?scope=everywhere`, {
      method: 'POST',
      headers: {
        apikey: ANON_KEY,
        authorization: `Bearer ${session.access_token}`,
        'x-supabase-api-version': '2024-01-01',
      },
    });
    expect(res.status).toBe(400);
    expect((await res.json()).code).toBe('validation_failed');
  });
});
