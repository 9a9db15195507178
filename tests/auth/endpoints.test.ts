// /auth/v1 on the gateway as Kong and GoTrue answer it: the apikey required everywhere but on the
// open routes (the links in mails), CORS for supabase-js in a browser on another origin, GoTrue's
// health, settings and key set, its error bodies for API version 2024-01-01 (what supabase-js
// sends) and before it, and the request size limit.
import { describe, expect, it } from 'vitest';
import { ANON_KEY, SERVICE_ROLE_KEY } from '../../scripts/lib/config.mjs';
import { useGateway } from './support.ts';

const gateway = useGateway({ AUTH_ENABLE_CONFIRMATIONS: 'true' });
const auth = (path: string) => `${gateway.url}/auth/v1${path}`;

describe('the apikey, as Kong requires it', () => {
  it('is required on /auth/v1', async () => {
    const missing = await fetch(auth('/settings'));
    expect(missing.status).toBe(401);
    expect(await missing.json()).toEqual({ message: 'No API key found in request' });
    const wrong = await fetch(auth('/settings'), { headers: { apikey: 'not-a-key' } });
    expect(wrong.status).toBe(401);
    expect(await wrong.json()).toEqual({ message: 'Invalid authentication credentials' });
    const health = await fetch(auth('/health'));
    expect(health.status).toBe(401);
  });

  it('is accepted as a header or a query parameter, either key', async () => {
    expect((await fetch(auth('/settings'), { headers: { apikey: ANON_KEY } })).status).toBe(200);
    expect((await fetch(auth(`/settings?apikey=${ANON_KEY}`))).status).toBe(200);
    expect((await fetch(auth('/settings'), { headers: { apikey: SERVICE_ROLE_KEY } })).status).toBe(200);
  });

  it('is not required on /verify, whose links are opened from a mail', async () => {
    const res = await fetch(auth('/verify?token=nope&type=signup&redirect_to=http://127.0.0.1:3000/welcome'), { redirect: 'manual' });
    expect(res.status).toBe(303);
    expect(res.headers.get('location')).toMatch(/^http:\/\/127\.0\.0\.1:3000\/welcome#/);
  });
});

describe('GoTrue\'s informational endpoints', () => {
  const headers = { apikey: ANON_KEY };

  it('answers /health', async () => {
    const res = await fetch(auth('/health'), { headers });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ name: 'GoTrue', version: expect.any(String), description: expect.any(String) });
  });

  it('answers /settings with the configured providers and confirmations', async () => {
    const body = await (await fetch(auth('/settings'), { headers })).json();
    expect(body).toMatchObject({
      disable_signup: false,
      mailer_autoconfirm: false,
      phone_autoconfirm: expect.any(Boolean),
      external: expect.objectContaining({ email: true, phone: false, google: false, anonymous_users: false }),
    });
  });

  it('publishes an empty key set (HS256 keys are never published)', async () => {
    const res = await fetch(auth('/.well-known/jwks.json'), { headers });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ keys: [] });
  });
});

describe('errors, as GoTrue writes them', () => {
  const headers = { apikey: ANON_KEY, 'content-type': 'application/json' };
  const body = JSON.stringify({ email: 'nobody@auth.example.test', password: 'wrong-password' });

  it('has {code, message} and echoes the version for API version 2024-01-01', async () => {
    const res = await fetch(auth('/token?grant_type=password'), {
      method: 'POST', headers: { ...headers, 'x-supabase-api-version': '2024-01-01' }, body,
    });
    expect(res.status).toBe(400);
    expect(res.headers.get('x-supabase-api-version')).toBe('2024-01-01');
    expect(res.headers.get('x-sb-error-code')).toBe('invalid_credentials');
    expect(await res.json()).toEqual({ code: 'invalid_credentials', message: 'Invalid login credentials' });
  });

  it('has {code: status, error_code, msg} without a version', async () => {
    const res = await fetch(auth('/token?grant_type=password'), { method: 'POST', headers, body });
    expect(res.status).toBe(400);
    expect(res.headers.get('x-supabase-api-version')).toBeNull();
    expect(await res.json()).toEqual({ code: 400, error_code: 'invalid_credentials', msg: 'Invalid login credentials' });
  });

  it('refuses a body that is not JSON with bad_json', async () => {
    const res = await fetch(auth('/signup'), {
      method: 'POST', headers: { ...headers, 'x-supabase-api-version': '2024-01-01' }, body: '{not json',
    });
    expect(res.status).toBe(400);
    expect((await res.json()).code).toBe('bad_json');
  });

  it('refuses an unsupported grant type', async () => {
    const res = await fetch(auth('/token?grant_type=magic'), {
      method: 'POST', headers: { ...headers, 'x-supabase-api-version': '2024-01-01' }, body: '{}',
    });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ code: 'invalid_credentials', message: 'unsupported_grant_type' });
  });

  it('answers 404 for a path GoTrue does not serve', async () => {
    const res = await fetch(auth('/no-such-endpoint'), { headers });
    expect(res.status).toBe(404);
    await res.arrayBuffer();
  });

  it('refuses a body over the gateway\'s size limit with 413 before Auth reads it', async () => {
    const res = await fetch(auth('/signup'), {
      method: 'POST', headers, body: JSON.stringify({ email: 'x@auth.example.test', password: 'x'.repeat(3 * 1024 * 1024) }),
    });
    expect(res.status).toBe(413);
    expect(await res.json()).toEqual({ message: 'Request size limit exceeded' });
  });
});

describe('CORS, for supabase-js in a browser on another origin', () => {
  it('answers a preflight without an apikey, allowing every header supabase-js sends', async () => {
    const res = await fetch(auth('/token?grant_type=password'), {
      method: 'OPTIONS',
      headers: {
        origin: 'http://localhost:5173',
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'apikey, authorization, content-type, x-client-info, x-supabase-api-version',
      },
    });
    expect(res.status).toBeLessThan(300);
    await res.arrayBuffer();
    expect(res.headers.get('access-control-allow-origin')).toBe('*');
    const allowed = (res.headers.get('access-control-allow-headers') ?? '').toLowerCase();
    for (const h of ['apikey', 'authorization', 'content-type', 'x-client-info', 'x-supabase-api-version']) {
      expect(allowed).toContain(h);
    }
    expect((res.headers.get('access-control-allow-methods') ?? '').toUpperCase()).toEqual(expect.stringContaining('POST'));
  });

  it('puts the allow-origin header on answers and errors alike', async () => {
    const ok = await fetch(auth('/settings'), { headers: { apikey: ANON_KEY, origin: 'http://localhost:5173' } });
    expect(ok.headers.get('access-control-allow-origin')).toBe('*');
    await ok.arrayBuffer();
    const refused = await fetch(auth('/settings'), { headers: { origin: 'http://localhost:5173' } });
    expect(refused.status).toBe(401);
    expect(refused.headers.get('access-control-allow-origin')).toBe('*');
    await refused.arrayBuffer();
  });
});
