// Shared arrangements of the email suites: an outbox holding only the suite's own mail, a paused
// scheduled dispatch (so the stack's own gateway takes none of the suite's messages), a dispatcher
// to call, and reading back what happened to a message.
import { afterAll, beforeAll } from 'vitest';
import { SERVICE_ROLE_KEY } from '../../scripts/lib/config.mjs';
import { sql } from '../support/db.ts';

/**
 * Pauses the scheduled email dispatch while the file's tests run: the stack's gateway calls it
 * every minute and would send this suite's messages through its own provider (the mailbox).
 */
export function pauseScheduledDispatch(): void {
  beforeAll(async () => {
    await sql`update private.jobs set enabled = false where name = 'email-dispatch'`;
  });
  afterAll(async () => {
    await sql`update private.jobs set enabled = true where name = 'email-dispatch'`;
  });
}

/**
 * Settles what other suites left in the outbox (their invitations' events and messages), so a
 * dispatch here sends only what this suite queues. Auth mail is left alone: the Send Email Hook
 * sends it at once, and a suite signing someone up at this moment is waiting for it.
 */
export async function settleOutbox(): Promise<void> {
  await sql`update private.event_deliveries set processed_at = now() where consumer = 'email' and processed_at is null`;
  await sql`update private.email_messages set status = 'suppressed', claimed_until = null
            where status in ('queued', 'sending') and template not like 'auth\_%'`;
}

export interface DispatchSummary { enqueued: number; claimed: number; sent: number; retried: number; failed: number }

/** POSTs to email-dispatch at `gatewayUrl` with the service key. */
export async function dispatch(gatewayUrl: string, body: Record<string, unknown> = {}): Promise<DispatchSummary> {
  const res = await fetch(`${gatewayUrl}/functions/v1/email-dispatch`, {
    method: 'POST',
    headers: { authorization: `Bearer ${SERVICE_ROLE_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const json = await res.json();
  if (res.status !== 200) throw new Error(`email-dispatch answered ${res.status}: ${JSON.stringify(json)}`);
  return json as DispatchSummary;
}

export interface MessageRow {
  id: string;
  recipient: string;
  template: string;
  status: string;
  attempts: number;
  next_attempt_at: Date;
  provider: string | null;
  provider_message_id: string | null;
  last_error: string | null;
}

export async function messagesTo(recipient: string): Promise<MessageRow[]> {
  return sql<MessageRow[]>`
    select id, recipient, template, status::text as status, attempts, next_attempt_at, provider, provider_message_id, last_error
    from private.email_messages where recipient = ${recipient.toLowerCase()} order by created_at`;
}

/** Queues a message directly, as a transaction of the backend would. */
export async function enqueue(template: string, recipient: string, props: Record<string, unknown>, key: string): Promise<string> {
  const [{ id }] = await sql<{ id: string }[]>`
    select private.enqueue_email(${template}, ${recipient}, ${sql.json(props as never)}, ${key}) as id`;
  return id;
}

/** Makes a queued message due now (skipping its backoff). */
export async function makeDue(id: string): Promise<void> {
  await sql`update private.email_messages set next_attempt_at = now() where id = ${id}`;
}

export const LOW_CREDITS_PROPS = {
  organizationName: 'Acme', pool: 'ai', poolName: 'AI', available: 15, threshold: 20, topUpUrl: 'https://app.example.test/billing',
};
