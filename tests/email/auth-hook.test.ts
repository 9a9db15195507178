// Supabase Auth's Send Email Hook (auth-send-email): a call signed per Standard Webhooks with the
// hook secret becomes the matching auth mail, through the project's templates, outbox and Resend
// (a local fake here), sent at once; a retry of the same call sends nothing new; a forged call is
// refused the way Auth expects ({"error": {"http_code", "message"}}).
import { randomUUID } from 'node:crypto';
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { API_URL, SEND_EMAIL_HOOK_SECRET } from '../../scripts/lib/config.mjs';
import { startFakeResend, type FakeResend } from '../fakes/resend.ts';
import { startGateway, type Gateway } from '../support/gateway.ts';
import { messagesTo, pauseScheduledDispatch, settleOutbox } from './support.ts';

let fake: FakeResend;
let gateway: Gateway;

pauseScheduledDispatch();

beforeAll(async () => {
  fake = await startFakeResend();
  gateway = await startGateway({ RESEND_API_KEY: fake.apiKey, RESEND_BASE_URL: fake.url });
}, 90000);

afterAll(async () => {
  await gateway?.stop();
  await fake?.close();
});

beforeEach(async () => {
  await settleOutbox();
  fake.reset();
});

interface EmailData {
  email_action_type: string;
  token?: string;
  token_hash?: string;
  token_new?: string;
  token_hash_new?: string;
}

function hookPayload(email: string, data: EmailData, emailNew?: string) {
  return JSON.stringify({
    user: {
      id: randomUUID(), aud: 'authenticated', role: 'authenticated', email, ...(emailNew ? { email_new: emailNew } : {}),
      phone: '', app_metadata: { provider: 'email', providers: ['email'] }, user_metadata: {}, identities: [],
      created_at: new Date().toISOString(), updated_at: new Date().toISOString(), is_anonymous: false,
    },
    email_data: {
      token: '', token_hash: '', token_new: '', token_hash_new: '',
      redirect_to: 'http://127.0.0.1:3000/welcome', site_url: 'http://127.0.0.1:3000', ...data,
    },
  });
}

/** POSTs a hook call as Supabase Auth does: signed with the hook secret (or with another one). */
async function callHook(payload: string, { id = `msg_${randomUUID()}`, forged = false } = {}) {
  const secret = forged ? Buffer.from('some-other-secret-of-32-characters!').toString('base64') : SEND_EMAIL_HOOK_SECRET.replace(/^v1,whsec_/, '');
  const timestamp = new Date();
  const signature = new Webhook(secret).sign(id, timestamp, payload);
  const res = await fetch(`${gateway.url}/functions/v1/auth-send-email`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json', 'webhook-id': id,
      'webhook-timestamp': String(Math.floor(timestamp.getTime() / 1000)), 'webhook-signature': signature,
    },
    body: payload,
  });
  return { status: res.status, body: await res.json(), id };
}

const to = (address: string) => fake.emails.filter((e) => String(e.body.to) === address);
const address = (label: string) => `${label}-${randomUUID().slice(0, 8)}@auth.example.test`;

describe('the Send Email Hook', () => {
  it('sends the sign-up confirmation with its code and verify link at once', async () => {
    const email = address('signup');
    const { status, body } = await callHook(hookPayload(email, { email_action_type: 'signup', token: '305805', token_hash: 'pkce_7d5b7b1964cf5d3883' }));
    expect(status).toBe(200);
    expect(body).toEqual({});
    const [mail] = to(email);
    expect(mail.body.text).toContain('305805');
    // The link points at the gateway the function runs behind (SUPABASE_URL), Auth's verify endpoint.
    const link = new URL(/https?:\/\/\S+\/auth\/v1\/verify\?\S+/.exec(String(mail.body.text))![0]);
    expect(link.searchParams.get('token')).toBe('pkce_7d5b7b1964cf5d3883');
    expect(link.searchParams.get('type')).toBe('signup');
    expect(link.searchParams.get('redirect_to')).toBe('http://127.0.0.1:3000/welcome');
    expect((await messagesTo(email))[0]).toMatchObject({ template: 'auth_confirm_signup', status: 'sent' });
  });

  it('answers a retry of the same call (same webhook-id) without a second mail', async () => {
    const email = address('retry');
    const payload = hookPayload(email, { email_action_type: 'magiclink', token: '111222', token_hash: 'hash_magic_0001' });
    const first = await callHook(payload);
    const again = await callHook(payload, { id: first.id });
    expect(again.status).toBe(200);
    expect(to(email)).toHaveLength(1);
    expect(await messagesTo(email)).toHaveLength(1);
  });

  it('sends recovery and invite mail from their templates', async () => {
    const recovery = address('recovery');
    await callHook(hookPayload(recovery, { email_action_type: 'recovery', token: '999000', token_hash: 'hash_recovery_1' }));
    expect(to(recovery)[0].body.text).toContain('999000');
    const invited = address('invite');
    await callHook(hookPayload(invited, { email_action_type: 'invite', token_hash: 'hash_invite_001' }));
    expect(String(to(invited)[0].body.text)).toContain('type=invite');
  });

  it('sends both mails of a secure email change, each with its own code', async () => {
    const current = address('current');
    const next = address('next');
    await callHook(hookPayload(current, {
      email_action_type: 'email_change', token: '123123', token_hash_new: 'hash_for_current', token_new: '456456', token_hash: 'hash_for_new',
    }, next));
    expect(String(to(current)[0].body.text)).toMatch(/123123[\s\S]*hash_for_current|hash_for_current[\s\S]*123123/);
    expect(String(to(next)[0].body.text)).toMatch(/456456[\s\S]*hash_for_new|hash_for_new[\s\S]*456456/);
  });

  it('acknowledges a notification it does not send', async () => {
    const email = address('notified');
    const { status } = await callHook(hookPayload(email, { email_action_type: 'password_changed_notification' }));
    expect(status).toBe(200);
    expect(await messagesTo(email)).toHaveLength(0);
  });

  it('refuses a forged or unsigned call, as Auth reads errors, and sends nothing', async () => {
    const email = address('forged');
    const forged = await callHook(hookPayload(email, { email_action_type: 'signup', token: '000000', token_hash: 'hash_forged_01' }), { forged: true });
    expect(forged.status).toBe(401);
    expect(forged.body).toEqual({ error: { http_code: 401, message: expect.any(String) } });
    const unsigned = await fetch(`${gateway.url}/functions/v1/auth-send-email`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: hookPayload(email, { email_action_type: 'signup' }),
    });
    expect(unsigned.status).toBe(401);
    expect(await messagesTo(email)).toHaveLength(0);
    expect(fake.requests).toHaveLength(0);
  });

  it('is reachable without a JWT on the stack itself (verify_jwt = false), and still checks the signature', async () => {
    const res = await fetch(`${API_URL}/functions/v1/auth-send-email`, { method: 'POST', body: '{}' });
    expect(res.status).toBe(401);
    expect(await res.json()).toMatchObject({ error: { http_code: 401 } });
  });
});
