// How the local Auth reads request bodies, as GoTrue does: a value of the wrong type or a body that
// is not a JSON object is bad_json (Go's json.Unmarshal fails), a value over its limit is
// validation_failed, unknown fields are ignored, and a body over GoTrue's 1 MB is refused with 413.
// Features it does not serve answer feature_disabled instead of pretending.
import { describe, expect, it } from 'vitest';
import { ANON_KEY } from '../../scripts/lib/config.mjs';
import { authClient, PASSWORD, signedIn, uniqueEmail, useGateway } from './support.ts';

const gateway = useGateway({ AUTH_ENABLE_CONFIRMATIONS: 'false' });

async function post(path: string, body: string) {
  const res = await fetch(`${gateway.url}/auth/v1${path}`, {
    method: 'POST',
    headers: { apikey: ANON_KEY, 'content-type': 'application/json', 'x-supabase-api-version': '2024-01-01' },
    body,
  });
  return { status: res.status, body: await res.json() as Record<string, unknown> };
}

describe('request bodies', () => {
  it('answer bad_json for a field of the wrong type or a body that is not an object', async () => {
    expect(await post('/signup', JSON.stringify({ email: 42, password: PASSWORD }))).toMatchObject({ status: 400, body: { code: 'bad_json' } });
    expect(await post('/signup', '[1, 2]')).toMatchObject({ status: 400, body: { code: 'bad_json' } });
    expect(await post('/signup', JSON.stringify({ email: uniqueEmail(), password: PASSWORD, data: ['not', 'an', 'object'] })))
      .toMatchObject({ status: 400, body: { code: 'bad_json' } });
  });

  it('answer validation_failed for values over their limits', async () => {
    const long = `${'a'.repeat(250)}@example.test`;
    expect(await post('/signup', JSON.stringify({ email: long, password: PASSWORD }))).toMatchObject({ status: 400, body: { code: 'validation_failed' } });
    expect(await post('/signup', JSON.stringify({ email: uniqueEmail(), password: 'x'.repeat(73) })))
      .toMatchObject({ status: 400, body: { code: 'validation_failed', message: 'Password cannot be longer than 72 characters' } });
    expect(await post('/otp', JSON.stringify({ email: 'x'.repeat(5000) }))).toMatchObject({ status: 400, body: { code: 'validation_failed' } });
  });

  it('ignore fields they do not know, as the captcha token supabase-js sends', async () => {
    const email = uniqueEmail('extra');
    const res = await post('/signup', JSON.stringify({ email, password: PASSWORD, gotrue_meta_security: { captcha_token: 'x' }, unknown: 1 }));
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ user: { email } });
  });

  it('refuse a body over 1 MB with 413 request_entity_too_large', async () => {
    const res = await post('/signup', JSON.stringify({ email: uniqueEmail(), password: PASSWORD, data: { blob: 'x'.repeat(1_100_000) } }));
    expect(res).toMatchObject({ status: 413, body: { code: 'request_entity_too_large' } });
  });
});

describe('what the local Auth does not serve', () => {
  it('answers MFA, SSO and OAuth sign-in with feature_disabled', async () => {
    const { client } = await signedIn(gateway.url);
    const mfa = await client.auth.mfa.enroll({ factorType: 'totp' });
    expect(mfa.error).toMatchObject({ name: 'AuthApiError', status: 400, code: 'feature_disabled' });
    const sso = await authClient(gateway.url).auth.signInWithSSO({ domain: 'example.test' });
    expect(sso.error).toMatchObject({ status: 400, code: 'feature_disabled' });
    const oauth = await fetch(`${gateway.url}/auth/v1/authorize?provider=github`, { redirect: 'manual' });
    expect(oauth.status).toBe(400);
    expect(oauth.headers.get('x-sb-error-code')).toBe('feature_disabled');
    const anonymous = await authClient(gateway.url).auth.signInAnonymously();
    expect(anonymous.error).toMatchObject({ status: 422, code: 'anonymous_provider_disabled' });
  });
});
