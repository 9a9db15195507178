// `npm run token` (scripts/token.mjs) makes a real session: its token is accepted by Auth's own
// endpoints as a signed-in session is, and signing out ends it.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ANON_KEY, API_URL, ROOT } from '../../scripts/lib/config.mjs';
import { sql } from '../support/db.ts';
import { decodeJwt, uniqueEmail } from './support.ts';

function token(email: string): string {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'scripts/token.mjs'), email], { cwd: ROOT, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
  return r.stdout.trim();
}

const headers = (jwt: string) => ({ apikey: ANON_KEY, authorization: `Bearer ${jwt}`, 'x-supabase-api-version': '2024-01-01' });

describe('npm run token', () => {
  it('prints the token of a session Auth knows, for a user with an email identity', async () => {
    const email = uniqueEmail('script');
    const jwt = token(email);
    const claims = decodeJwt(jwt);
    expect(await sql`select 1 from auth.sessions where id = ${claims.session_id as string} and user_id = ${claims.sub as string}`).toHaveLength(1);

    const me = await fetch(`${API_URL}/auth/v1/user`, { headers: headers(jwt) });
    expect(me.status).toBe(200);
    expect(await me.json()).toMatchObject({ email, identities: [{ provider: 'email' }] });

    const out = await fetch(`${API_URL}/auth/v1/logout?scope=local`, { method: 'POST', headers: headers(jwt) });
    expect(out.status).toBe(204);
    const after = await fetch(`${API_URL}/auth/v1/user`, { headers: headers(jwt) });
    expect(after.status).toBe(403);
    expect(await after.json()).toMatchObject({ code: 'session_not_found' });
  });
});
