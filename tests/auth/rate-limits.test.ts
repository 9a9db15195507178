// GoTrue's rate limits with supabase/config.toml's [auth.rate_limit] (the CLI's defaults): per
// client address, buckets of 30 requests that refill at sign_in_sign_ups (sign-ups, OTP, magic
// links, recovery), token_verifications (/verify) and token_refresh (POST /token: sign-ins and
// refreshes) per 5 minutes, answered 429 over_request_rate_limit; per user and kind of mail,
// [auth.email] max_frequency; and email_sent mails an hour, 429 over_email_send_rate_limit.
// Each block has a gateway of its own, whose limits start full.
import http from 'node:http';
import { describe, expect, it } from 'vitest';
import { ANON_KEY } from '../../scripts/lib/config.mjs';
import { sql } from '../support/db.ts';
import { authClient, createConfirmedUser, latestMail, PASSWORD, uniqueEmail, useGateway } from './support.ts';

/** POSTs JSON to Auth from a chosen local address (127.0.0.x): another client, as Auth sees it. */
function postFrom(localAddress: string, url: string, body: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const payload = JSON.stringify(body);
    const req = http.request(url, {
      method: 'POST',
      localAddress,
      headers: {
        apikey: ANON_KEY, 'content-type': 'application/json', 'x-supabase-api-version': '2024-01-01',
        'content-length': Buffer.byteLength(payload),
      },
    }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { text += c; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text ? JSON.parse(text) : {} }));
    });
    req.on('error', reject);
    req.end(payload);
  });
}

describe('per client address', () => {
  const gateway = useGateway({ AUTH_ENABLE_CONFIRMATIONS: 'true' });

  it('limits password sign-ins (token_refresh): past a burst of 30 they are refused with over_request_rate_limit', async () => {
    const user = await createConfirmedUser(gateway.url);
    // The bucket refills at 150 per 5 minutes (0.5/s) while the burst is spent, so the first
    // refusal comes after at least 30 attempts, and soon after.
    const codes: (string | undefined)[] = [];
    while (codes.length < 40 && codes.at(-1) !== 'over_request_rate_limit') {
      const { error } = await authClient(gateway.url).auth.signInWithPassword({ email: user.email, password: 'wrong-password' });
      codes.push(error?.code);
    }
    expect(codes.length).toBeGreaterThan(30);
    expect(codes.slice(0, 30).every((c) => c === 'invalid_credentials')).toBe(true);
    expect(codes.at(-1)).toBe('over_request_rate_limit');
    const { error } = await authClient(gateway.url).auth.signInWithPassword({ email: user.email, password: PASSWORD });
    expect(error).toMatchObject({ name: 'AuthApiError', status: 429, code: 'over_request_rate_limit' });
    // Another address is not limited.
    const other = await postFrom('127.0.0.2', `${gateway.url}/auth/v1/token?grant_type=password`, { email: user.email, password: PASSWORD });
    expect(other.status).toBe(200);
  });

  it('limits recovery requests (sign_in_sign_ups), even for unknown addresses', async () => {
    const codes = [];
    for (let i = 0; i < 31; i++) {
      const { error } = await authClient(gateway.url).auth.resetPasswordForEmail(uniqueEmail('limited'));
      codes.push(error?.code ?? null);
    }
    expect(codes.slice(0, 30)).toEqual(new Array(30).fill(null));
    expect(codes[30]).toBe('over_request_rate_limit');
  });

  it('limits sign-ups (sign_in_sign_ups)', async () => {
    const statuses = [];
    for (let i = 0; i < 31; i++) {
      const res = await postFrom('127.0.0.3', `${gateway.url}/auth/v1/signup`, { email: 'not-an-address', password: PASSWORD });
      statuses.push(res.status);
    }
    expect(statuses.slice(0, 30).every((s) => s === 400)).toBe(true);
    expect(statuses[30]).toBe(429);
  });

  it('limits verifications (token_verifications)', async () => {
    const codes = [];
    for (let i = 0; i < 31; i++) {
      const res = await postFrom('127.0.0.4', `${gateway.url}/auth/v1/verify`, { type: 'email', email: uniqueEmail('v'), token: '123456' });
      codes.push(res.body.code);
    }
    expect(codes.slice(0, 30).every((c) => c === 'otp_expired')).toBe(true);
    expect(codes[30]).toBe('over_request_rate_limit');
  });
});

describe('per user and kind of mail: max_frequency', () => {
  const gateway = useGateway({ AUTH_ENABLE_CONFIRMATIONS: 'true', AUTH_EMAIL_MAX_FREQUENCY: '60s' });

  it('refuses a second mail of a kind too soon with over_email_send_rate_limit', async () => {
    const user = await createConfirmedUser(gateway.url);
    expect((await authClient(gateway.url).auth.resetPasswordForEmail(user.email)).error).toBeNull();
    await latestMail(user.email);
    const { error } = await authClient(gateway.url).auth.resetPasswordForEmail(user.email);
    expect(error).toMatchObject({ name: 'AuthApiError', status: 429, code: 'over_email_send_rate_limit' });
    expect(error?.message).toMatch(/^For security purposes, you can only request this after \d+ seconds\.$/);
  });
});

describe('mails an hour: email_sent', () => {
  const gateway = useGateway({ AUTH_ENABLE_CONFIRMATIONS: 'true', AUTH_RATE_LIMIT_EMAIL_SENT: '1' });

  it('refuses the mail past the hourly count with over_email_send_rate_limit, and keeps nothing of the sign-up', async () => {
    const first = await authClient(gateway.url).auth.signUp({ email: uniqueEmail('hourly'), password: PASSWORD });
    expect(first.error).toBeNull();
    const email = uniqueEmail('hourly');
    const second = await authClient(gateway.url).auth.signUp({ email, password: PASSWORD });
    expect(second.error).toMatchObject({ status: 429, code: 'over_email_send_rate_limit' });
    expect(await sql`select 1 from auth.users where email = ${email}`).toHaveLength(0);
  });
});
