// The Resend fake, driven by the real `resend` SDK (what the edge functions use): what it answers
// is what the SDK understands, and its webhooks verify with the `svix` package as Resend's do.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Resend } from 'resend';
import { Webhook } from 'svix';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startFakeResend, type FakeResend } from './resend.ts';

let fake: FakeResend;
let resend: Resend;

const message = {
  from: 'Acme <mail@acme.test>',
  to: 'alice@example.test',
  subject: 'Welcome',
  html: '<p>Hello</p>',
  text: 'Hello',
};

beforeAll(async () => {
  fake = await startFakeResend();
  resend = new Resend(fake.apiKey, { baseUrl: fake.url });
});

afterAll(async () => {
  await fake.close();
});

beforeEach(() => fake.reset());

describe('POST /emails', () => {
  it('accepts an email and answers its id, which GET /emails/<id> describes', async () => {
    const { data, error, headers } = await resend.emails.send({ ...message, tags: [{ name: 'kind', value: 'welcome' }] });
    expect(error).toBeNull();
    expect(data?.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(headers?.['ratelimit-limit']).toBe('2');

    expect(fake.emails).toHaveLength(1);
    expect(fake.emails[0]).toMatchObject({ id: data!.id, idempotencyKey: null, lastEvent: 'sent' });
    expect(fake.emails[0].body).toMatchObject({ from: message.from, to: message.to, subject: 'Welcome', html: '<p>Hello</p>' });
    expect(fake.requests[0]).toMatchObject({ method: 'POST', path: '/emails', status: 200 });
    expect(fake.requests[0].headers.authorization).toBe(`Bearer ${fake.apiKey}`);

    const got = await resend.emails.get(data!.id);
    expect(got.error).toBeNull();
    expect(got.data).toMatchObject({
      object: 'email',
      id: data!.id,
      to: ['alice@example.test'],
      from: message.from,
      subject: 'Welcome',
      last_event: 'sent',
      tags: [{ name: 'kind', value: 'welcome' }],
    });
  });

  it('refuses a missing or wrong API key with 401 and records the refused request', async () => {
    const wrong = await new Resend('re_wrong', { baseUrl: fake.url }).emails.send(message);
    expect(wrong.error).toEqual({ statusCode: 401, name: 'validation_error', message: 'API key is invalid' });
    const missing = await fetch(`${fake.url}/emails`, { method: 'POST', body: JSON.stringify(message) });
    expect(missing.status).toBe(401);
    expect(await missing.json()).toMatchObject({ statusCode: 401, name: 'missing_api_key' });
    expect(fake.emails).toHaveLength(0);
    expect(fake.requests.map((r) => r.status)).toEqual([401, 401]);
  });

  it('answers 422 for a send without a required field', async () => {
    const { data, error } = await resend.emails.send({ from: message.from, to: message.to, subject: 'No body' } as never);
    expect(data).toBeNull();
    expect(error).toEqual({ statusCode: 422, name: 'missing_required_field', message: 'Missing `html` or `text` field.' });
    const badFrom = await resend.emails.send({ ...message, from: 'not an address' });
    expect(badFrom.error).toMatchObject({ statusCode: 422, name: 'validation_error' });
    expect(fake.emails).toHaveLength(0);
  });

  it('surfaces a queued 429 as rate_limit_exceeded with retry-after in the returned headers', async () => {
    fake.next({ status: 429, retryAfter: 7 });
    const limited = await resend.emails.send(message);
    expect(limited.data).toBeNull();
    expect(limited.error).toMatchObject({ statusCode: 429, name: 'rate_limit_exceeded' });
    expect(limited.headers?.['retry-after']).toBe('7');
    expect(fake.emails).toHaveLength(0);

    // The queue is used up: the next send succeeds.
    const next = await resend.emails.send(message);
    expect(next.error).toBeNull();
    expect(fake.emails).toHaveLength(1);
  });

  it('surfaces a queued 422 as a validation error, and answers queued errors in order', async () => {
    fake.next(
      { status: 422, name: 'validation_error', message: 'The `to` address is on the suppression list.' },
      { status: 503 },
      { status: 500 },
    );
    const first = await resend.emails.send(message);
    expect(first.error).toEqual({ statusCode: 422, name: 'validation_error', message: 'The `to` address is on the suppression list.' });
    const second = await resend.emails.send(message);
    expect(second.error).toMatchObject({ statusCode: 503, name: 'application_error' });
    const third = await resend.emails.send(message);
    expect(third.error).toMatchObject({ statusCode: 500, name: 'internal_server_error' });
    expect(fake.emails).toHaveLength(0);
    expect(fake.requests.map((r) => r.status)).toEqual([422, 503, 500]);
  });

  it('sends once for the same idempotency key and body, and refuses the key with another body (409)', async () => {
    const first = await resend.emails.send(message, { idempotencyKey: 'welcome/42' });
    const again = await resend.emails.send(message, { idempotencyKey: 'welcome/42' });
    expect(first.error).toBeNull();
    expect(again.error).toBeNull();
    expect(again.data?.id).toBe(first.data?.id);
    expect(fake.emails).toHaveLength(1);
    expect(fake.emails[0].idempotencyKey).toBe('welcome/42');
    expect(fake.requests.map((r) => r.headers['idempotency-key'])).toEqual(['welcome/42', 'welcome/42']);

    const other = await resend.emails.send({ ...message, subject: 'Another' }, { idempotencyKey: 'welcome/42' });
    expect(other.error).toMatchObject({ statusCode: 409, name: 'invalid_idempotent_request' });
    const tooLong = await resend.emails.send(message, { idempotencyKey: 'k'.repeat(257) });
    expect(tooLong.error).toMatchObject({ statusCode: 400, name: 'invalid_idempotency_key' });
    expect(fake.emails).toHaveLength(1);
  });

  it('hangs until the client aborts', async () => {
    fake.next({ hang: true });
    const controller = new AbortController();
    const pending = resend.emails.send(message, { signal: controller.signal });
    await expect.poll(() => fake.requests.length).toBe(1);
    let settled = false;
    void pending.finally(() => {
      settled = true;
    });
    await new Promise((r) => setTimeout(r, 200));
    expect(settled).toBe(false);

    controller.abort();
    const aborted = await pending;
    // The SDK turns the aborted fetch into an error result without a status.
    expect(aborted.data).toBeNull();
    expect(aborted.error).toMatchObject({ statusCode: null, name: 'application_error' });
    expect(fake.requests[0].status).toBeNull();
    expect(fake.emails).toHaveLength(0);
  });

  it('cuts a hanging request off when it closes', async () => {
    const other = await startFakeResend();
    other.next({ hang: true });
    const pending = new Resend(other.apiKey, { baseUrl: other.url }).emails.send(message);
    await expect.poll(() => other.requests.length).toBe(1);
    await other.close();
    expect((await pending).error).toMatchObject({ statusCode: null });
  });

  it('drops the connection on a networkError, and with accept the email was sent all the same', async () => {
    fake.next({ networkError: true });
    const dropped = await resend.emails.send(message, { idempotencyKey: 'k-1' });
    expect(dropped.error).toMatchObject({ statusCode: null, name: 'application_error' });
    expect(fake.emails).toHaveLength(0);

    // The answer is lost after the send: a retry with the same key gets the same id, sends nothing.
    fake.next({ networkError: true, accept: true });
    const lost = await resend.emails.send(message, { idempotencyKey: 'k-2' });
    expect(lost.error).toMatchObject({ statusCode: null });
    expect(fake.emails).toHaveLength(1);
    const retry = await resend.emails.send(message, { idempotencyKey: 'k-2' });
    expect(retry.data?.id).toBe(fake.emails[0].id);
    expect(fake.emails).toHaveLength(1);
  });

  it('answers Resend-shaped 404s for unknown emails and routes', async () => {
    const missing = await resend.emails.get('00000000-0000-0000-0000-000000000000');
    expect(missing.error).toMatchObject({ statusCode: 404, name: 'not_found' });
    const route = await fetch(`${fake.url}/nowhere`, { headers: { authorization: `Bearer ${fake.apiKey}` } });
    expect(route.status).toBe(404);
    expect(await route.json()).toMatchObject({ statusCode: 404, name: 'not_found' });
  });
});

describe('deliver (webhooks)', () => {
  let receiver: http.Server;
  let receiverUrl: string;
  const received: { headers: http.IncomingHttpHeaders; body: string }[] = [];

  beforeAll(async () => {
    receiver = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        received.push({ headers: req.headers, body });
        // Verifies as a receiver would, with the svix package and the raw body.
        try {
          new Webhook(fake.webhookSecret).verify(body, req.headers as Record<string, string>);
          res.writeHead(200, { 'content-type': 'application/json' }).end('{"received":true}');
        } catch {
          res.writeHead(400).end('invalid signature');
        }
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
  });

  afterAll(async () => {
    await new Promise<void>((resolve) => receiver.close(() => resolve()));
  });

  beforeEach(() => {
    received.length = 0;
  });

  it('signs an event the svix package verifies, shaped like Resend\'s, and updates last_event', async () => {
    expect(fake.webhookSecret).toMatch(/^whsec_[A-Za-z0-9+/]+=*$/);
    const { data } = await resend.emails.send({ ...message, tags: [{ name: 'outbox_id', value: 'm-1' }] });
    const result = await fake.deliver(receiverUrl, 'email.delivered', data!.id);
    expect(result.status).toBe(200);
    expect(result.body).toBe('{"received":true}');

    const { headers, body } = received[0];
    expect(body).toBe(result.payload);
    expect(headers['svix-id']).toMatch(/^msg_/);
    expect(headers['svix-signature']).toMatch(/^v1,/);
    expect(() => new Webhook(fake.webhookSecret).verify(body, result.headers)).not.toThrow();
    expect(JSON.parse(body)).toEqual({
      type: 'email.delivered',
      created_at: expect.any(String),
      data: {
        created_at: fake.emails[0].receivedAt.toISOString(),
        email_id: data!.id,
        message_id: fake.emails[0].messageId,
        from: message.from,
        to: ['alice@example.test'],
        subject: 'Welcome',
        tags: { outbox_id: 'm-1' },
      },
    });
    expect((await resend.emails.get(data!.id)).data?.last_event).toBe('delivered');
  });

  it('gives email.bounced a bounce, which extra can replace', async () => {
    const { data } = await resend.emails.send(message);
    const permanent = await fake.deliver(receiverUrl, 'email.bounced', data!.id);
    expect(permanent.event.data.bounce).toEqual({ type: 'Permanent', subType: 'General', message: expect.any(String) });
    const transient = await fake.deliver(receiverUrl, 'email.bounced', data!.id, {
      bounce: { type: 'Transient', subType: 'MailboxFull', message: 'Mailbox full' },
    });
    expect(JSON.parse(received[1].body).data.bounce).toEqual({ type: 'Transient', subType: 'MailboxFull', message: 'Mailbox full' });
    expect(transient.status).toBe(200);
  });

  it('sends a forged signature that the svix package rejects', async () => {
    const { data } = await resend.emails.send(message);
    const forged = await fake.deliver(receiverUrl, 'email.complained', data!.id, {}, { forgeSignature: true });
    expect(forged.status).toBe(400);
    expect(forged.headers['svix-signature']).toMatch(/^v1,/);
    expect(() => new Webhook(fake.webhookSecret).verify(forged.payload, forged.headers)).toThrow();
  });

  it('replays a message with the same svix-id, and signs with an old timestamp on request', async () => {
    const { data } = await resend.emails.send(message);
    const first = await fake.deliver(receiverUrl, 'email.sent', data!.id);
    const replay = await fake.deliver(receiverUrl, 'email.sent', data!.id, {}, { messageId: first.headers['svix-id'] });
    expect(replay.headers['svix-id']).toBe(first.headers['svix-id']);
    expect(replay.status).toBe(200);

    const stale = await fake.deliver(receiverUrl, 'email.sent', data!.id, {}, { timestamp: new Date(Date.now() - 10 * 60_000) });
    expect(stale.status).toBe(400); // outside svix's 5-minute tolerance
  });
});
