// A fake of Resend's HTTP API (api.resend.com), with the routes an edge function sending mail
// through the `resend` SDK calls, and Resend's webhooks signed the way Resend (Svix) signs them:
//   POST /emails       send one email: Bearer key, from/to/subject and html or text (or a
//                      template), Idempotency-Key honoured for 24 hours like Resend's
//   GET  /emails/<id>  an accepted email as Resend describes it, with its `last_event`
// Point the SDK at it with `new Resend(fake.apiKey, { baseUrl: fake.url })`, or RESEND_API_KEY and
// RESEND_BASE_URL in the function's environment. `next(...)` decides how the next sends are
// answered (a 429 with retry-after, a 422, a 5xx, a hang, a dropped connection); `deliver(...)`
// POSTs a signed `email.*` webhook event to a URL.
// Error bodies are Resend's: {"statusCode": 422, "name": "validation_error", "message": "..."}.
import { randomBytes, randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { isDeepStrictEqual } from 'node:util';
import { Webhook } from 'svix';

/** The `name` of a Resend error (the SDK's RESEND_ERROR_CODE_KEY), or any other string. */
export type ResendErrorName =
  | 'invalid_idempotency_key'
  | 'validation_error'
  | 'missing_api_key'
  | 'restricted_api_key'
  | 'invalid_api_key'
  | 'not_found'
  | 'method_not_allowed'
  | 'invalid_idempotent_request'
  | 'concurrent_idempotent_requests'
  | 'invalid_attachment'
  | 'invalid_from_address'
  | 'invalid_access'
  | 'invalid_parameter'
  | 'invalid_region'
  | 'missing_required_field'
  | 'monthly_quota_exceeded'
  | 'daily_quota_exceeded'
  | 'rate_limit_exceeded'
  | 'security_error'
  | 'application_error'
  | 'internal_server_error'
  | (string & {});

/**
 * How one POST /emails is answered (queued with `next`):
 * - `{ ok: true }`: handled normally (validated, sent, idempotency honoured), as with no queued answer.
 * - `{ status, name?, message? }`: that error, Resend-shaped; nothing is sent. `name` and `message`
 *   default to Resend's for the status (422 validation_error, 500 internal_server_error, ...).
 * - `{ status: 429, retryAfter? }`: rate_limit_exceeded with a `retry-after` header (seconds, default 1).
 * - `{ hang: true }`: never answered, until the client aborts or the fake closes.
 * - `{ networkError: true }`: the connection is destroyed without an answer.
 * With `accept: true`, a hang or a dropped connection happens *after* the email was accepted
 * (recorded, its idempotency key stored): the send happened but its answer was lost, so a retry
 * with the same key must get the same id back and send nothing.
 */
export type FakeResendAnswer =
  | { ok: true }
  | { status: number; name?: ResendErrorName; message?: string; retryAfter?: number }
  | { hang: true; accept?: boolean }
  | { networkError: true; accept?: boolean };

/** Resend's `last_event` of an email (GET /emails/<id>). */
export type EmailLastEvent =
  | 'bounced' | 'canceled' | 'clicked' | 'complained' | 'delivered' | 'delivery_delayed' | 'failed'
  | 'opened' | 'queued' | 'scheduled' | 'sent' | 'suppressed';

/** An email the fake accepted (answered with an id). */
export interface RecordedEmail {
  id: string;
  /** The JSON body of the POST /emails, as received (the SDK's snake_case fields: reply_to, ...). */
  body: Record<string, unknown>;
  /** The Idempotency-Key header, or null without one. */
  idempotencyKey: string | null;
  receivedAt: Date;
  /** `last_event` in GET /emails/<id>: 'sent' once accepted, then what `deliver` reported. */
  lastEvent: EmailLastEvent;
  /** The Message-ID header it went out with (`message_id` in webhooks and GET /emails/<id>). */
  messageId: string;
}

/** Every request the fake received, refused ones included. */
export interface RecordedRequest {
  method: string;
  /** The path with the query string. */
  path: string;
  /** Node's lower-cased request headers (authorization, idempotency-key, user-agent, ...). */
  headers: http.IncomingHttpHeaders;
  /** The body parsed as JSON, the raw text when it is not JSON, null when empty. */
  body: unknown;
  /** The status answered; null while hanging, or when the connection was dropped or aborted. */
  status: number | null;
  receivedAt: Date;
}

/** Resend's webhook event types for sent emails. */
export type ResendEmailEventType =
  | 'email.sent'
  | 'email.delivered'
  | 'email.delivery_delayed'
  | 'email.complained'
  | 'email.bounced'
  | 'email.opened'
  | 'email.clicked'
  | 'email.failed'
  | 'email.suppressed';

/** `data.bounce` of an `email.bounced` event. */
export interface ResendBounce {
  type: 'Permanent' | 'Transient' | 'Undetermined' | (string & {});
  /** e.g. General, NoEmail, Suppressed, OnAccountSuppressionList, MailboxFull, MessageTooLarge. */
  subType: string;
  message: string;
}

/** A Resend webhook event for an email, as Resend POSTs it. */
export interface ResendEmailEvent {
  type: ResendEmailEventType;
  created_at: string;
  data: {
    created_at: string;
    email_id: string;
    message_id: string;
    from: string;
    to: string[];
    subject: string;
    tags?: Record<string, string>;
    bounce?: ResendBounce;
    [field: string]: unknown;
  };
}

export interface DeliverOptions {
  /**
   * Signs with another secret than `webhookSecret`: the headers look right, the signature does
   * not verify (a forged request).
   */
  forgeSignature?: boolean;
  /** The `svix-id`; pass a previous delivery's to replay the same message (Svix retries keep it). */
  messageId?: string;
  /** The signing time (`svix-timestamp`); an old one tests the receiver's replay window (5 minutes). */
  timestamp?: Date;
  /** The event's top-level `created_at` (default: now). */
  createdAt?: string;
  /** More request headers (e.g. an Authorization for a gateway that verifies JWTs). */
  headers?: Record<string, string>;
}

export interface DeliverResult {
  /** The receiver's answer. */
  status: number;
  body: string;
  /** What was POSTed: the event and its exact serialized payload, and the Svix headers. */
  event: ResendEmailEvent;
  payload: string;
  headers: { 'svix-id': string; 'svix-timestamp': string; 'svix-signature': string };
}

export interface FakeResendOptions {
  /** The API key it accepts (default: a random `re_...` key). */
  apiKey?: string;
  /** The webhook signing secret (default: a random `whsec_<base64>` secret). */
  webhookSecret?: string;
}

export interface FakeResend {
  /** Base URL: the SDK's `baseUrl`, RESEND_BASE_URL. */
  url: string;
  /** The one API key accepted (`Authorization: Bearer <key>`). */
  apiKey: string;
  /** The Svix signing secret `deliver` signs with (`whsec_<base64>`), RESEND_WEBHOOK_SECRET. */
  webhookSecret: string;
  /** Every accepted email, in arrival order. */
  emails: RecordedEmail[];
  /** Every request, in arrival order, refused ones included. */
  requests: RecordedRequest[];
  /** Queues how the next POST /emails calls are answered, one answer each, in order. */
  next(...answers: FakeResendAnswer[]): void;
  /** Forgets emails, requests, queued answers and idempotency keys (the arrays are emptied in place). */
  reset(): void;
  /**
   * POSTs a Resend webhook event about `emailId` to `url`, signed with `webhookSecret`, and
   * returns the answer. `extra` is merged into `data` (e.g. `{ bounce: {...} }`, `{ tags: {...} }`);
   * an `email.bounced` gets a Permanent/General bounce unless `extra.bounce` says otherwise.
   * An email this fake accepted gets its from/to/subject/tags in `data` and its `last_event` updated.
   */
  deliver(
    url: string,
    type: ResendEmailEventType,
    emailId: string,
    extra?: Record<string, unknown>,
    options?: DeliverOptions,
  ): Promise<DeliverResult>;
  /** Stops the server; hanging requests are cut off. */
  close(): Promise<void>;
}

/** Resend keeps idempotency keys for 24 hours; keys are 1 to 256 characters. */
const IDEMPOTENCY_TTL_MS = 24 * 60 * 60 * 1000;
const IDEMPOTENCY_KEY_MAX = 256;
const MAX_RECIPIENTS = 50;
// Resend's default: 2 requests per second per team, announced in the ratelimit-* headers.
const RATE_LIMIT = 2;

/** Resend's documented name and message for an error status (docs: api-reference/errors). */
const DEFAULT_ERRORS: Record<number, { name: ResendErrorName; message: string }> = {
  400: { name: 'validation_error', message: 'We found an error with one or more fields in the request.' },
  401: { name: 'missing_api_key', message: 'Missing API key in the authorization header.' },
  403: { name: 'validation_error', message: 'You can only send testing emails to your own email address.' },
  404: { name: 'not_found', message: 'The requested endpoint does not exist.' },
  405: { name: 'method_not_allowed', message: 'Method is not allowed for the requested path.' },
  409: { name: 'concurrent_idempotent_requests', message: 'Same idempotency key used while original request is still in progress.' },
  422: { name: 'validation_error', message: 'We found an error with one or more fields in the request.' },
  429: {
    name: 'rate_limit_exceeded',
    message: 'Too many requests. Please limit the number of requests per second. Or contact support to increase rate limit.',
  },
  500: { name: 'internal_server_error', message: 'An unexpected error occurred.' },
};

function defaultError(status: number): { name: ResendErrorName; message: string } {
  return DEFAULT_ERRORS[status] ?? (status >= 500
    ? { name: 'application_error', message: 'An unexpected error occurred, please try again.' }
    : { name: 'validation_error', message: 'We found an error with one or more fields in the request.' });
}

// No parameter properties: the fake also loads in plain Node (--experimental-strip-types).
class ResendApiError extends Error {
  readonly status: number;
  readonly errorName: ResendErrorName;
  readonly headers: Record<string, string>;

  constructor(status: number, errorName: ResendErrorName, message: string, headers: Record<string, string> = {}) {
    super(message);
    this.status = status;
    this.errorName = errorName;
    this.headers = headers;
  }
}

/** What a route answers: JSON, or nothing (hang, dropped connection). */
type Outcome =
  | { kind: 'json'; status: number; body: unknown; headers?: Record<string, string> }
  | { kind: 'hang' }
  | { kind: 'drop' };

async function readBody(req: http.IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function parseBody(raw: string): unknown {
  if (raw === '') return null;
  try {
    return JSON.parse(raw);
  } catch {
    return raw;
  }
}

const EMAIL = /^[^\s@<>]+@[^\s@<>]+\.[^\s@<>]+$/;
const NAMED_EMAIL = /^[^<>]*<[^\s@<>]+@[^\s@<>]+\.[^\s@<>]+>$/;

function asList(value: unknown): string[] {
  if (value === undefined || value === null) return [];
  return Array.isArray(value) ? value.map(String) : [String(value)];
}

/** Resend's checks on a send, in its words (missing_required_field / validation_error, 422). */
function validateSend(body: unknown): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new ResendApiError(422, 'validation_error', 'The request body must be a JSON object.');
  }
  const email = body as Record<string, unknown>;
  for (const field of ['from', 'to', 'subject']) {
    const value = email[field];
    if (value === undefined || value === null || value === '' || (Array.isArray(value) && value.length === 0)) {
      throw new ResendApiError(422, 'missing_required_field', `Missing \`${field}\` field.`);
    }
  }
  const hasTemplate = typeof (email.template as { id?: unknown } | undefined)?.id === 'string';
  if (typeof email.html !== 'string' && typeof email.text !== 'string' && !hasTemplate) {
    throw new ResendApiError(422, 'missing_required_field', 'Missing `html` or `text` field.');
  }
  if (typeof email.from !== 'string' || !(EMAIL.test(email.from) || NAMED_EMAIL.test(email.from))) {
    throw new ResendApiError(422, 'validation_error',
      'Invalid `from` field. The email address needs to follow the `email@example.com` or `Name <email@example.com>` format.');
  }
  if (typeof email.subject !== 'string') throw new ResendApiError(422, 'validation_error', 'Invalid `subject` field.');
  const to = asList(email.to);
  if (to.length > MAX_RECIPIENTS) {
    throw new ResendApiError(422, 'validation_error', `Too many recipients: \`to\` takes at most ${MAX_RECIPIENTS}.`);
  }
  for (const field of ['to', 'cc', 'bcc', 'reply_to']) {
    for (const address of asList(email[field])) {
      if (!(EMAIL.test(address) || NAMED_EMAIL.test(address))) {
        throw new ResendApiError(422, 'validation_error',
          `Invalid \`${field}\` field. The email address needs to follow the \`email@example.com\` or \`Name <email@example.com>\` format.`);
      }
    }
  }
  return email;
}

/** A `svix-id` like Svix's (`msg_` and 27 base62-ish characters). */
function svixMessageId(): string {
  return `msg_${randomBytes(20).toString('base64url').slice(0, 27)}`;
}

function randomWebhookSecret(): string {
  return `whsec_${randomBytes(24).toString('base64')}`;
}

const LAST_EVENT: Record<ResendEmailEventType, EmailLastEvent> = {
  'email.sent': 'sent',
  'email.delivered': 'delivered',
  'email.delivery_delayed': 'delivery_delayed',
  'email.complained': 'complained',
  'email.bounced': 'bounced',
  'email.opened': 'opened',
  'email.clicked': 'clicked',
  'email.failed': 'failed',
  'email.suppressed': 'suppressed',
};

export async function startFakeResend(options: FakeResendOptions = {}): Promise<FakeResend> {
  const apiKey = options.apiKey ?? `re_${randomBytes(18).toString('base64url')}`;
  const webhookSecret = options.webhookSecret ?? randomWebhookSecret();
  const emails: RecordedEmail[] = [];
  const requests: RecordedRequest[] = [];
  const queue: FakeResendAnswer[] = [];
  /** Idempotency key -> the accepted email and the body it came with. */
  const idempotency = new Map<string, { email: RecordedEmail; body: unknown; expiresAt: number }>();
  /** Responses left hanging, cut off on close. */
  const hanging = new Set<http.ServerResponse>();

  function authenticate(req: http.IncomingMessage): void {
    const authorization = req.headers.authorization;
    const token = authorization ? /^Bearer\s+(\S+)\s*$/i.exec(authorization)?.[1] : undefined;
    if (!token) throw new ResendApiError(401, 'missing_api_key', 'Missing API key in the authorization header.');
    // Resend's current docs: the sending endpoints answer 401 validation_error for a key that does
    // not exist (older docs: 403 invalid_api_key). Either way a permanent error.
    if (token !== apiKey) throw new ResendApiError(401, 'validation_error', 'API key is invalid');
  }

  function accept(body: Record<string, unknown>, idempotencyKey: string | null): RecordedEmail {
    const id = randomUUID();
    const email: RecordedEmail = {
      id,
      body,
      idempotencyKey,
      receivedAt: new Date(),
      lastEvent: 'sent',
      messageId: `<${randomUUID()}@resend.fake>`,
    };
    emails.push(email);
    if (idempotencyKey !== null) {
      idempotency.set(idempotencyKey, { email, body, expiresAt: Date.now() + IDEMPOTENCY_TTL_MS });
    }
    return email;
  }

  function sendEmail(req: http.IncomingMessage, body: unknown): Outcome {
    authenticate(req);
    const rawKey = req.headers['idempotency-key'];
    const idempotencyKey = Array.isArray(rawKey) ? rawKey[0] : rawKey ?? null;
    const answer = queue.shift() ?? { ok: true };

    if ('status' in answer) {
      const fallback = defaultError(answer.status);
      const headers: Record<string, string> = {};
      if (answer.status === 429) {
        headers['retry-after'] = String(answer.retryAfter ?? 1);
        headers['ratelimit-remaining'] = '0';
        headers['ratelimit-reset'] = String(answer.retryAfter ?? 1);
      }
      throw new ResendApiError(answer.status, answer.name ?? fallback.name, answer.message ?? fallback.message, headers);
    }
    if ('networkError' in answer && !answer.accept) return { kind: 'drop' };
    if ('hang' in answer && !answer.accept) return { kind: 'hang' };

    if (idempotencyKey !== null && (idempotencyKey.length < 1 || idempotencyKey.length > IDEMPOTENCY_KEY_MAX)) {
      throw new ResendApiError(400, 'invalid_idempotency_key', 'The key must be between 1-256 chars.');
    }
    const email = validateSend(body);
    let accepted: RecordedEmail;
    const previous = idempotencyKey !== null ? idempotency.get(idempotencyKey) : undefined;
    if (previous && previous.expiresAt > Date.now()) {
      if (!isDeepStrictEqual(previous.body, body)) {
        throw new ResendApiError(409, 'invalid_idempotent_request', 'Same idempotency key used with a different request payload.');
      }
      accepted = previous.email; // the first answer again; nothing is sent
    } else {
      accepted = accept(email, idempotencyKey);
    }

    if ('networkError' in answer) return { kind: 'drop' };
    if ('hang' in answer) return { kind: 'hang' };
    return { kind: 'json', status: 200, body: { id: accepted.id } };
  }

  function describeEmail(email: RecordedEmail): Record<string, unknown> {
    const list = (field: string) => (email.body[field] === undefined ? null : asList(email.body[field]));
    return {
      object: 'email',
      id: email.id,
      to: asList(email.body.to),
      from: email.body.from,
      created_at: email.receivedAt.toISOString(),
      subject: email.body.subject,
      html: email.body.html ?? null,
      text: email.body.text ?? null,
      bcc: list('bcc'),
      cc: list('cc'),
      reply_to: list('reply_to'),
      last_event: email.lastEvent,
      scheduled_at: email.body.scheduled_at ?? null,
      message_id: email.messageId,
      ...(Array.isArray(email.body.tags) ? { tags: email.body.tags } : {}),
    };
  }

  function route(req: http.IncomingMessage, url: URL, body: unknown): Outcome {
    if (url.pathname === '/emails') {
      if (req.method === 'POST') return sendEmail(req, body);
      throw new ResendApiError(405, 'method_not_allowed', 'Method is not allowed for the requested path.');
    }
    const match = /^\/emails\/([^/]+)$/.exec(url.pathname);
    if (match) {
      if (req.method !== 'GET') throw new ResendApiError(405, 'method_not_allowed', 'Method is not allowed for the requested path.');
      authenticate(req);
      const email = emails.find((e) => e.id === decodeURIComponent(match[1]));
      if (!email) throw new ResendApiError(404, 'not_found', 'Email not found');
      return { kind: 'json', status: 200, body: describeEmail(email) };
    }
    throw new ResendApiError(404, 'not_found', 'The requested endpoint does not exist.');
  }

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://fake.invalid');
    const record: RecordedRequest = {
      method: req.method ?? 'GET',
      path: url.pathname + url.search,
      headers: req.headers,
      body: null,
      status: null,
      receivedAt: new Date(),
    };
    requests.push(record);

    readBody(req)
      .then((raw) => {
        record.body = parseBody(raw);
        try {
          return route(req, url, record.body);
        } catch (err) {
          if (err instanceof ResendApiError) {
            return {
              kind: 'json',
              status: err.status,
              body: { statusCode: err.status, name: err.errorName, message: err.message },
              headers: err.headers,
            } satisfies Outcome;
          }
          throw err;
        }
      })
      .catch((err: unknown): Outcome => ({
        kind: 'json',
        status: 500,
        body: { statusCode: 500, name: 'internal_server_error', message: (err as Error).message },
      }))
      .then((outcome) => {
        if (outcome.kind === 'drop') {
          req.socket.destroy();
          return;
        }
        if (outcome.kind === 'hang') {
          hanging.add(res);
          res.on('close', () => hanging.delete(res));
          return;
        }
        record.status = outcome.status;
        res.writeHead(outcome.status, {
          'content-type': 'application/json; charset=utf-8',
          'ratelimit-limit': String(RATE_LIMIT),
          'ratelimit-remaining': String(RATE_LIMIT - 1),
          'ratelimit-reset': '1',
          ...outcome.headers,
        });
        res.end(JSON.stringify(outcome.body));
      });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  async function deliver(
    url: string,
    type: ResendEmailEventType,
    emailId: string,
    extra: Record<string, unknown> = {},
    deliverOptions: DeliverOptions = {},
  ): Promise<DeliverResult> {
    const email = emails.find((e) => e.id === emailId);
    if (email) email.lastEvent = LAST_EVENT[type] ?? email.lastEvent;
    const tags = Array.isArray(email?.body.tags)
      ? Object.fromEntries((email.body.tags as { name: string; value: string }[]).map((t) => [t.name, t.value]))
      : undefined;
    const event: ResendEmailEvent = {
      type,
      created_at: deliverOptions.createdAt ?? new Date().toISOString(),
      data: {
        created_at: (email?.receivedAt ?? new Date()).toISOString(),
        email_id: emailId,
        message_id: email?.messageId ?? `<${randomUUID()}@resend.fake>`,
        from: typeof email?.body.from === 'string' ? email.body.from : 'Fake <sender@example.test>',
        to: email ? asList(email.body.to) : ['recipient@example.test'],
        subject: typeof email?.body.subject === 'string' ? email.body.subject : 'Fake subject',
        ...(tags ? { tags } : {}),
        ...(type === 'email.bounced'
          ? { bounce: { type: 'Permanent', subType: 'General', message: "The recipient's email provider sent a hard bounce message." } }
          : {}),
        ...extra,
      },
    };
    const payload = JSON.stringify(event);
    const msgId = deliverOptions.messageId ?? svixMessageId();
    const timestamp = deliverOptions.timestamp ?? new Date();
    const signer = new Webhook(deliverOptions.forgeSignature ? randomWebhookSecret() : webhookSecret);
    const headers = {
      'svix-id': msgId,
      'svix-timestamp': String(Math.floor(timestamp.getTime() / 1000)),
      'svix-signature': signer.sign(msgId, timestamp, payload),
    };
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'user-agent': 'Svix-Webhooks/1.x (fake)', ...deliverOptions.headers, ...headers },
      body: payload,
    });
    return { status: res.status, body: await res.text(), event, payload, headers };
  }

  return {
    url: `http://127.0.0.1:${port}`,
    apiKey,
    webhookSecret,
    emails,
    requests,
    next: (...answers) => {
      queue.push(...answers);
    },
    reset: () => {
      emails.length = 0;
      requests.length = 0;
      queue.length = 0;
      idempotency.clear();
    },
    deliver,
    close: () =>
      new Promise<void>((resolve, reject) => {
        for (const res of hanging) res.socket?.destroy();
        hanging.clear();
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      }),
  };
}
