// A deleted user's access token is still a validly signed JWT until it expires; Auth refuses it at
// once (user_not_found), and PostgREST must too: the database checks, before each request, that
// the token's user still exists (a pre-request function). The contract: a REST call with the old
// token gets 401 or 403 and no data.
import { describe, expect, it } from 'vitest';
import { ANON_KEY } from '../../scripts/lib/config.mjs';
import { adminClient, authClient, signedIn, useGateway } from './support.ts';

const gateway = useGateway({ AUTH_ENABLE_CONFIRMATIONS: 'true' });

describe('a deleted user', () => {
  it('is refused by Auth and by PostgREST with the access token they held', async () => {
    const { client, user, session } = await signedIn(gateway.url);
    const before = await client.from('profiles').select('id').eq('id', user.id);
    expect(before.data).toEqual([{ id: user.id }]);

    const { error } = await adminClient(gateway.url).auth.admin.deleteUser(user.id);
    expect(error).toBeNull();

    const authRes = await fetch(`${gateway.url}/auth/v1/user`, {
      headers: { apikey: ANON_KEY, authorization: `Bearer ${session.access_token}`, 'x-supabase-api-version': '2024-01-01' },
    });
    expect(authRes.status).toBe(403);
    expect(['user_not_found', 'session_not_found']).toContain((await authRes.json()).code);

    const rest = await fetch(`${gateway.url}/rest/v1/profiles?select=id`, {
      headers: { apikey: ANON_KEY, authorization: `Bearer ${session.access_token}` },
    });
    const body = await rest.text();
    expect([401, 403], `PostgREST answered ${rest.status}: ${body}`).toContain(rest.status);
    expect(JSON.parse(body)).toMatchObject({ code: 'PT401', message: 'session_ended' });

    // The edge functions check the same before they query as the user.
    const fn = await fetch(`${gateway.url}/functions/v1/me`, { headers: { authorization: `Bearer ${session.access_token}` } });
    expect(fn.status).toBe(401);
    expect((await fn.json()).error.code).toBe('session_ended');
  });
});

describe('a signed-out session', () => {
  it('is refused by PostgREST with its access token, while the user\'s other sessions go on', async () => {
    const first = await signedIn(gateway.url);
    const secondClient = authClient(gateway.url);
    const { data, error: signInError } = await secondClient.auth.signInWithPassword({ email: first.user.email, password: first.user.password });
    expect(signInError).toBeNull();
    const second = { session: data.session! };
    const read = (token: string) => fetch(`${gateway.url}/rest/v1/profiles?select=id`, {
      headers: { apikey: ANON_KEY, authorization: `Bearer ${token}` },
    });
    expect((await read(first.session.access_token)).status).toBe(200);

    const { error } = await first.client.auth.signOut({ scope: 'local' });
    expect(error).toBeNull();
    const refused = await read(first.session.access_token);
    expect(refused.status).toBe(401);
    expect(await refused.json()).toMatchObject({ message: 'session_ended' });
    const other = await read(second.session.access_token);
    expect(other.status).toBe(200);
    expect(await other.json()).toEqual([{ id: first.user.id }]);
  });
});
