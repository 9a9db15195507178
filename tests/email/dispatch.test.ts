// Email through the outbox to Resend: the edge functions run in a gateway of their own whose
// RESEND_API_KEY and RESEND_BASE_URL point at a local fake of Resend's API, so the real `resend`
// SDK in the real function talks HTTP to it. Success, retry then success, permanent failure, dead
// letter and requeue, two dispatchers racing, a crash between send and record, preferences and
// suppressions, the one-click unsubscribe link, and Resend's signed webhooks (and forged ones).
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { sql, useSetting } from '../support/db.ts';
import { startFakeResend, type FakeResend } from '../fakes/resend.ts';
import { startGateway, type Gateway } from '../support/gateway.ts';
import { backendFor } from '../support/clients.ts';
import { createOrganization } from '../support/organizations.ts';
import { createUser } from '../support/users.ts';
import {
  dispatch, enqueue, LOW_CREDITS_PROPS, makeDue, messagesTo, pauseScheduledDispatch, settleOutbox,
} from './support.ts';

let fake: FakeResend;
let gateway: Gateway;
const address = (label: string) => `${label}-${randomUUID().slice(0, 8)}@mail.example.test`;

pauseScheduledDispatch();

beforeAll(async () => {
  fake = await startFakeResend();
  gateway = await startGateway({
    RESEND_API_KEY: fake.apiKey,
    RESEND_BASE_URL: fake.url,
    RESEND_WEBHOOK_SECRET: fake.webhookSecret,
    EMAIL_FROM: 'Acme <mail@acme.example.test>',
  });
}, 90000);

afterAll(async () => {
  await gateway?.stop();
  await fake?.close();
});

beforeEach(async () => {
  await settleOutbox();
  fake.reset();
});

const sentTo = (recipient: string) => fake.emails.filter((e) => (e.body.to as string[] | string).toString() === recipient);
const webhookUrl = () => `${gateway.url}/functions/v1/resend-webhook`;

describe('an invitation', () => {
  it('becomes a message Resend accepts, and delivered once Resend says so', async () => {
    const owner = await createUser();
    const org = await createOrganization(owner, 'Mail Co');
    const invitee = address('invitee');
    await backendFor(owner).organizations.invite({ organizationId: org.id, email: invitee, role: 'admin' });

    const summary = await dispatch(gateway.url);
    expect(summary).toMatchObject({ enqueued: 1, sent: 1 });
    const [email] = sentTo(invitee);
    expect(email.body).toMatchObject({ from: 'Acme <mail@acme.example.test>', subject: expect.stringContaining('Mail Co') });
    expect(email.body.html).toContain('/invitations/accept?token=');
    const [message] = await messagesTo(invitee);
    expect(message).toMatchObject({ template: 'organization_invitation', status: 'sent', provider: 'resend', provider_message_id: email.id });
    expect(email.idempotencyKey).toBe(message.id);

    const res = await fake.deliver(webhookUrl(), 'email.delivered', email.id);
    expect(res.status).toBe(200);
    expect((await messagesTo(invitee))[0].status).toBe('delivered');
  });
});

describe('failures', () => {
  it('retries after a 429, no sooner than Retry-After, then sends', async () => {
    const to = address('ratelimited');
    const id = await enqueue('low_credits', to, LOW_CREDITS_PROPS, `test:${to}`);
    fake.next({ status: 429, retryAfter: 30 });
    const before = Date.now();
    expect(await dispatch(gateway.url)).toMatchObject({ retried: 1, sent: 0 });
    const [queued] = await messagesTo(to);
    expect(queued).toMatchObject({ status: 'queued', attempts: 1 });
    expect(queued.next_attempt_at.getTime()).toBeGreaterThanOrEqual(before + 30000);
    expect(queued.last_error).toContain('rate_limit_exceeded');

    await makeDue(id);
    expect(await dispatch(gateway.url)).toMatchObject({ sent: 1 });
    expect((await messagesTo(to))[0]).toMatchObject({ status: 'sent', attempts: 2 });
    expect(sentTo(to)).toHaveLength(1);
  });

  it('retries a 5xx with backoff, then sends', async () => {
    const to = address('flaky');
    const id = await enqueue('low_credits', to, LOW_CREDITS_PROPS, `test:${to}`);
    fake.next({ status: 503 });
    expect(await dispatch(gateway.url)).toMatchObject({ retried: 1 });
    const [first] = await messagesTo(to);
    // The first retry waits 30 seconds (plus jitter).
    expect(first.next_attempt_at.getTime()).toBeGreaterThan(Date.now() + 20000);
    await makeDue(id);
    expect(await dispatch(gateway.url)).toMatchObject({ sent: 1 });
    expect(sentTo(to)).toHaveLength(1);
  });

  it('survives a dropped connection: whoever retries (the HTTP client or the outbox), one mail goes out', async () => {
    const to = address('dropped');
    const id = await enqueue('low_credits', to, LOW_CREDITS_PROPS, `test:${to}`);
    // Resend took the mail, but the connection dropped before its answer.
    fake.next({ networkError: true, accept: true });
    await dispatch(gateway.url);
    await makeDue(id);
    await dispatch(gateway.url);
    expect((await messagesTo(to))[0].status).toBe('sent');
    expect(sentTo(to)).toHaveLength(1);
    const posts = fake.requests.filter((r) => r.method === 'POST' && r.headers['idempotency-key'] === id);
    expect(posts.length).toBeGreaterThanOrEqual(2);
  });

  it('fails for good on a 4xx, without retrying', async () => {
    const to = address('invalid');
    const id = await enqueue('low_credits', to, LOW_CREDITS_PROPS, `test:${to}`);
    fake.next({ status: 422, name: 'validation_error', message: 'Invalid `from` field.' });
    expect(await dispatch(gateway.url)).toMatchObject({ failed: 1 });
    expect((await messagesTo(to))[0]).toMatchObject({ status: 'failed', attempts: 1 });
    await makeDue(id);
    const requests = fake.requests.length;
    await dispatch(gateway.url);
    expect(fake.requests.length).toBe(requests);
  });

  it('fails for good when the props do not render (a bug upstream), without calling Resend', async () => {
    const to = address('badprops');
    await enqueue('low_credits', to, { organizationName: 'Acme' }, `test:${to}`);
    expect(await dispatch(gateway.url)).toMatchObject({ failed: 1 });
    expect((await messagesTo(to))[0].status).toBe('failed');
    expect(fake.requests).toHaveLength(0);
  });
});

describe('dead letters', () => {
  useSetting('email_max_attempts', 2);

  it('are dead after the last attempt, and an operator requeues them', async () => {
    const to = address('dead');
    const id = await enqueue('low_credits', to, LOW_CREDITS_PROPS, `test:${to}`);
    fake.next({ status: 500 }, { status: 500 });
    await dispatch(gateway.url);
    await makeDue(id);
    expect(await dispatch(gateway.url)).toMatchObject({ failed: 1 });
    expect((await messagesTo(to))[0]).toMatchObject({ status: 'dead', attempts: 2 });
    await makeDue(id);
    await dispatch(gateway.url);
    expect((await messagesTo(to))[0].status).toBe('dead');

    await sql`select private.requeue_email(${id})`;
    expect(await dispatch(gateway.url)).toMatchObject({ sent: 1 });
    expect((await messagesTo(to))[0]).toMatchObject({ status: 'sent', attempts: 1 });
  });
});

describe('concurrency and crashes', () => {
  it('two dispatchers racing send every message exactly once', async () => {
    const recipients = Array.from({ length: 30 }, (_, i) => address(`race${i}`));
    for (const to of recipients) await enqueue('low_credits', to, LOW_CREDITS_PROPS, `test:${to}`);
    const [a, b] = await Promise.all([dispatch(gateway.url), dispatch(gateway.url)]);
    expect(a.sent + b.sent).toBe(30);
    expect(a.sent).toBeGreaterThan(0);
    expect(b.sent).toBeGreaterThan(0);
    for (const to of recipients) {
      expect(sentTo(to), to).toHaveLength(1);
      expect((await messagesTo(to))[0].status).toBe('sent');
    }
  });

  it('a crash between sending and recording never sends twice: the next dispatcher resends the same mail under the same key', async () => {
    const to = address('crash');
    const id = await enqueue('low_credits', to, LOW_CREDITS_PROPS, `test:${to}`);
    expect(await dispatch(gateway.url)).toMatchObject({ sent: 1 });
    const [first] = sentTo(to);
    // As if that dispatcher had died after Resend accepted the mail but before recording it: the
    // message is left sending, and its lease runs out.
    await sql`update private.email_messages set status = 'sending', provider_message_id = null, claimed_until = now() - interval '1 second'
              where id = ${id}`;

    expect(await dispatch(gateway.url)).toMatchObject({ claimed: 1, sent: 1 });
    // Resend recognised the retry (same key, same body) and sent nothing new.
    expect(sentTo(to)).toHaveLength(1);
    const posts = fake.requests.filter((r) => r.method === 'POST' && r.headers['idempotency-key'] === id);
    expect(posts).toHaveLength(2);
    expect(posts[1].body).toEqual(posts[0].body);
    expect((await messagesTo(to))[0]).toMatchObject({ status: 'sent', attempts: 2, provider_message_id: first.id });
  });
});

describe('preferences, suppressions and unsubscribing', () => {
  it('skips a user who turned the category off, and a suppressed address, but still sends required mail', async () => {
    const optedOut = await createUser(address('optedout'));
    await sql`insert into public.email_preferences (user_id, category, subscribed) values (${optedOut.id}, 'usage_alerts', false)`;
    const suppressed = address('suppressed');
    await sql`insert into private.email_suppressions (email, category, reason) values (${suppressed}, null, 'hard_bounce')`;
    await enqueue('low_credits', optedOut.email, LOW_CREDITS_PROPS, `test:${optedOut.email}`);
    await enqueue('low_credits', suppressed, LOW_CREDITS_PROPS, `test:${suppressed}`);
    await enqueue('auth_recovery', suppressed, { resetUrl: 'https://app.example.test/reset', code: '123456' }, `test:recovery:${suppressed}`);

    expect(await dispatch(gateway.url)).toMatchObject({ sent: 1 });
    expect((await messagesTo(optedOut.email))[0].status).toBe('suppressed');
    expect((await messagesTo(suppressed)).map((m) => [m.template, m.status])).toEqual([
      ['low_credits', 'suppressed'], ['auth_recovery', 'sent'],
    ]);
    expect(sentTo(suppressed)[0].body.subject).toMatch(/password/i);
    expect(sentTo(optedOut.email)).toHaveLength(0);
  });

  it('puts a one-click unsubscribe link in non-required mail that works without signing in', async () => {
    const user = await createUser(address('unsub'));
    await enqueue('low_credits', user.email, LOW_CREDITS_PROPS, `test:${user.email}`);
    await dispatch(gateway.url);
    const [email] = sentTo(user.email);
    const headers = email.body.headers as Record<string, string>;
    expect(headers['List-Unsubscribe-Post']).toBe('List-Unsubscribe=One-Click');
    const link = /^<(.+)>$/.exec(headers['List-Unsubscribe'])![1];
    expect(link.startsWith(`${gateway.url}/functions/v1/email-unsubscribe?token=`)).toBe(true);
    expect(email.body.html).toContain(link.replaceAll('&', '&amp;'));

    const page = await fetch(link);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain(user.email);
    expect(await sql`select 1 from public.email_preferences where user_id = ${user.id}`).toHaveLength(0);

    // What a mailbox provider sends for RFC 8058 one-click: a POST, no cookies, no session.
    const oneClick = await fetch(link, {
      method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'List-Unsubscribe=One-Click',
    });
    expect(oneClick.status).toBe(200);
    expect(await oneClick.text()).toContain('unsubscribed');
    const [pref] = await sql`select subscribed from public.email_preferences where user_id = ${user.id} and category = 'usage_alerts'`;
    expect(pref.subscribed).toBe(false);

    await enqueue('low_credits', user.email, LOW_CREDITS_PROPS, `test:again:${user.email}`);
    await dispatch(gateway.url);
    expect(sentTo(user.email)).toHaveLength(1);
  });

  it('leaves required mail without an unsubscribe link', async () => {
    const to = address('required');
    await enqueue('auth_magic_link', to, { magicLinkUrl: 'https://app.example.test/m', code: '654321' }, `test:${to}`);
    await dispatch(gateway.url);
    const [email] = sentTo(to);
    expect(email.body.headers ?? {}).not.toHaveProperty('List-Unsubscribe');
    expect(email.body.html).not.toContain('email-unsubscribe');
  });

  it('refuses a forged or altered unsubscribe token', async () => {
    for (const token of ['nonsense', 'eyJlIjoiYUBiLmMiLCJjIjoiYWNjb3VudCIsImV4cCI6OTk5OTk5OTk5OX0.forged']) {
      const res = await fetch(`${gateway.url}/functions/v1/email-unsubscribe?token=${token}`, { method: 'POST' });
      expect(res.status).toBe(400);
    }
  });
});

describe("Resend's webhooks", () => {
  async function sentMessage(label: string) {
    const to = address(label);
    await enqueue('low_credits', to, LOW_CREDITS_PROPS, `test:${to}`);
    await dispatch(gateway.url);
    return { to, email: sentTo(to)[0] };
  }

  it('refuses a forged signature with 400 and changes nothing', async () => {
    const { to, email } = await sentMessage('forged');
    const res = await fake.deliver(webhookUrl(), 'email.delivered', email.id, {}, { forgeSignature: true });
    expect(res.status).toBe(400);
    expect((await messagesTo(to))[0].status).toBe('sent');
    const unsigned = await fetch(webhookUrl(), { method: 'POST', body: res.payload, headers: { 'content-type': 'application/json' } });
    expect(unsigned.status).toBe(400);
  });

  it('acknowledges a replay without acting on it twice', async () => {
    const { email } = await sentMessage('replay');
    const first = await fake.deliver(webhookUrl(), 'email.delivered', email.id);
    const replay = await fake.deliver(webhookUrl(), 'email.delivered', email.id, {}, { messageId: first.headers['svix-id'] });
    expect(replay.status).toBe(200);
    expect(JSON.parse(replay.body)).toMatchObject({ outcome: 'replay' });
  });

  it('suppresses the address after a hard bounce or a complaint, not after a soft bounce', async () => {
    const soft = await sentMessage('soft');
    await fake.deliver(webhookUrl(), 'email.bounced', soft.email.id, { bounce: { type: 'Transient', subType: 'MailboxFull', message: 'full' } });
    expect((await messagesTo(soft.to))[0].status).toBe('bounced');
    expect(await sql`select 1 from private.email_suppressions where email = ${soft.to}`).toHaveLength(0);

    const hard = await sentMessage('hard');
    await fake.deliver(webhookUrl(), 'email.bounced', hard.email.id);
    const complained = await sentMessage('complained');
    await fake.deliver(webhookUrl(), 'email.complained', complained.email.id);
    const suppressed = await sql`select email, category, reason::text from private.email_suppressions where email in (${hard.to}, ${complained.to})`;
    expect([...suppressed].sort((a, b) => a.reason.localeCompare(b.reason))).toEqual([
      { email: complained.to, category: null, reason: 'complaint' }, { email: hard.to, category: null, reason: 'hard_bounce' },
    ]);
  });

  it('acknowledges event types it does not act on', async () => {
    const { to, email } = await sentMessage('opened');
    const res = await fake.deliver(webhookUrl(), 'email.opened', email.id);
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toMatchObject({ outcome: 'ignored' });
    expect((await messagesTo(to))[0].status).toBe('sent');
  });
});
