// The Send Email Hook as Auth calls it: a POST signed per Standard Webhooks with the hook secret
// (webhook-id, webhook-timestamp, webhook-signature), carrying {user, email_data} whose token is
// the 6-digit code and whose token_hash is what the link carries (sha224 of address + code). Here
// a gateway's Auth calls a fake hook of this test (AUTH_SEND_EMAIL_HOOK_URI) that checks the
// signature and can fail on demand: a failed hook fails the request, and nothing is kept.
import { createHash } from 'node:crypto';
import http from 'node:http';
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { SEND_EMAIL_HOOK_SECRET } from '../../scripts/lib/config.mjs';
import { startGateway, type Gateway } from '../support/gateway.ts';
import { sql } from '../support/db.ts';
import { authClient, createConfirmedUser, PASSWORD, uniqueEmail } from './support.ts';

interface HookCall {
  headers: http.IncomingHttpHeaders;
  body: string;
  payload: {
    user: Record<string, unknown>;
    email_data: Record<string, string>;
  };
  verified: boolean;
}

let hook: http.Server;
let gateway: Gateway;
const calls: HookCall[] = [];
let answer: { status: number; body?: unknown } = { status: 200, body: {} };

beforeAll(async () => {
  const webhook = new Webhook(SEND_EMAIL_HOOK_SECRET.replace(/^v1,whsec_/, ''));
  hook = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      let verified = false;
      try {
        webhook.verify(body, {
          'webhook-id': String(req.headers['webhook-id']),
          'webhook-timestamp': String(req.headers['webhook-timestamp']),
          'webhook-signature': String(req.headers['webhook-signature']),
        });
        verified = true;
      } catch { /* recorded as unverified */ }
      calls.push({ headers: req.headers, body, payload: JSON.parse(body), verified });
      res.writeHead(answer.status, { 'content-type': 'application/json' }).end(answer.body === undefined ? '' : JSON.stringify(answer.body));
    });
  });
  await new Promise<void>((resolve) => hook.listen(0, '127.0.0.1', resolve));
  const port = (hook.address() as { port: number }).port;
  gateway = await startGateway({ AUTH_ENABLE_CONFIRMATIONS: 'true', AUTH_SEND_EMAIL_HOOK_URI: `http://127.0.0.1:${port}/hook` });
}, 90_000);

afterAll(async () => {
  await gateway?.stop();
  await new Promise((r) => hook?.close(r));
});

beforeEach(() => {
  calls.length = 0;
  answer = { status: 200, body: {} };
});

const sha224 = (text: string) => createHash('sha224').update(text).digest('hex');

describe('the Send Email Hook call', () => {
  it('is signed per Standard Webhooks and carries the user, the code and the link\'s hash', async () => {
    const email = uniqueEmail('hooked');
    const { data } = await authClient(gateway.url).auth.signUp({
      email, password: PASSWORD, options: { emailRedirectTo: 'http://127.0.0.1:3000/welcome' },
    });
    expect(calls).toHaveLength(1);
    const [call] = calls;
    expect(call.verified).toBe(true);
    expect(call.headers['content-type']).toMatch(/^application\/json/);
    expect(String(call.headers['webhook-signature'])).toMatch(/^v1,[A-Za-z0-9+/=]+$/);
    expect(Math.abs(Number(call.headers['webhook-timestamp']) - Date.now() / 1000)).toBeLessThan(30);
    expect(call.payload.user).toMatchObject({ id: data.user!.id, email, aud: 'authenticated', role: 'authenticated' });
    expect(call.payload.user).not.toHaveProperty('encrypted_password');
    expect(call.payload.user).not.toHaveProperty('confirmation_token');
    const d = call.payload.email_data;
    expect(d).toMatchObject({ email_action_type: 'signup', redirect_to: 'http://127.0.0.1:3000/welcome', token_new: '', token_hash_new: '' });
    expect(d.token).toMatch(/^\d{6}$/);
    expect(d.token_hash).toBe(sha224(email + d.token));
    expect(typeof d.site_url).toBe('string');
    const [row] = await sql`select confirmation_token from auth.users where id = ${data.user!.id}`;
    expect(row.confirmation_token).toBe(d.token_hash);
  });

  it('names the action of each mail and, for an email change, both addresses\' tokens', async () => {
    const user = await createConfirmedUser(gateway.url);
    await authClient(gateway.url).auth.signInWithOtp({ email: user.email });
    expect(calls.at(-1)!.payload.email_data.email_action_type).toBe('magiclink');
    await new Promise((r) => setTimeout(r, 1100));
    await authClient(gateway.url).auth.resetPasswordForEmail(user.email);
    expect(calls.at(-1)!.payload.email_data.email_action_type).toBe('recovery');

    const client = authClient(gateway.url);
    await client.auth.signInWithPassword({ email: user.email, password: user.password });
    const newEmail = uniqueEmail('hook-change');
    await client.auth.updateUser({ email: newEmail });
    const change = calls.at(-1)!.payload;
    expect(change.email_data.email_action_type).toBe('email_change');
    expect(change.user).toMatchObject({ email: user.email, new_email: newEmail });
    // GoTrue's naming with secure email change: token and token_hash_new belong to the current
    // address, token_new and token_hash to the new one.
    const d = change.email_data;
    expect(d.token_hash_new).toBe(sha224(user.email + d.token));
    expect(d.token_hash).toBe(sha224(newEmail + d.token_new));
  });
});

describe('a failing hook', () => {
  it('fails the sign-up, and no user is left behind', async () => {
    answer = { status: 500, body: { error: 'broken' } };
    const email = uniqueEmail('hook-fails');
    const { data, error } = await authClient(gateway.url).auth.signUp({ email, password: PASSWORD });
    expect(error).not.toBeNull();
    expect(error!.status).toBeGreaterThanOrEqual(400);
    expect(data.user).toBeNull();
    expect(await sql`select 1 from auth.users where email = ${email}`).toHaveLength(0);
  });

  it('passes on the hook\'s own error ({"error": {"http_code", "message"}}) and keeps no token', async () => {
    const user = await createConfirmedUser(gateway.url);
    answer = { status: 200, body: { error: { http_code: 429, message: 'Too many mails for now' } } };
    const { error } = await authClient(gateway.url).auth.resetPasswordForEmail(user.email);
    expect(error).toMatchObject({ status: 429, message: 'Too many mails for now' });
    const [row] = await sql`select recovery_token, recovery_sent_at from auth.users where id = ${user.id}`;
    expect(row.recovery_sent_at).toBeNull();
    expect(await sql`select 1 from auth.one_time_tokens where user_id = ${user.id}`).toHaveLength(0);
  });
});
