// The email outbox's consumer loop, shared by the email-dispatch function (the scheduled job) and
// the auth-send-email hook (which sends what it queued at once). It turns due domain events into
// messages (private.email_from_events), then claims due messages under a lease, renders each,
// hands it to the provider with the message id as idempotency key, and records the outcome.
// Several loops at once never send one message twice: claims skip each other's rows, and a lease
// that runs out while a send hangs is covered by the provider's idempotency key.
import { withServiceRole } from './db.ts';
import { emailProvider, type EmailProvider, SendError } from './email-providers/index.ts';
import { emailEnv, env, requireSecret } from './env.ts';
import { EmailTemplateError, isTemplateName, renderEmail } from './emails/index.ts';
import type { Logger } from './log.ts';
import { signToken } from './signing.ts';

export interface DispatchConfig {
  provider: EmailProvider;
  from: string;
  /** Base of the one-click unsubscribe link: <SUPABASE_URL>/functions/v1/email-unsubscribe. */
  unsubscribeEndpoint: string;
  unsubscribeSecret: string;
  log: Logger;
}

export interface DispatchSummary {
  /** Messages the email consumer made from domain events. */
  enqueued: number;
  claimed: number;
  sent: number;
  /** Failed for now, queued again after a backoff. */
  retried: number;
  /** Failed for good (a permanent error) or out of attempts (dead). */
  failed: number;
}

interface ClaimedEmail {
  id: string;
  created_at: Date;
  recipient: string;
  template: string;
  props: Record<string, unknown>;
  category: string;
  required: boolean;
}

const BATCH = 20;
const LEASE = '2 minutes';
// An unsubscribe link keeps working this long after the mail went out.
const UNSUBSCRIBE_LINK_SECONDS = 60 * 60 * 24 * 90;

/**
 * The one-click link of a non-required mail: who unsubscribes from what, signed, valid for a
 * while after the message was queued. It depends on the message alone, so a retry renders the
 * very same mail, and Resend recognises the retry by its idempotency key instead of refusing a
 * different body under the same key.
 */
export async function unsubscribeUrl(config: Pick<DispatchConfig, 'unsubscribeEndpoint' | 'unsubscribeSecret'>,
  recipient: string, category: string, queuedAt: Date): Promise<string> {
  const token = await signToken({ e: recipient, c: category }, config.unsubscribeSecret,
    queuedAt.getTime() / 1000 + UNSUBSCRIBE_LINK_SECONDS);
  return `${config.unsubscribeEndpoint}?token=${encodeURIComponent(token)}`;
}

async function sendOne(config: DispatchConfig, email: ClaimedEmail): Promise<'sent' | 'retried' | 'failed'> {
  let outcome: { status: string; permanent: boolean; error: string; retryAfter?: number } | undefined;
  try {
    if (!isTemplateName(email.template)) throw new EmailTemplateError(`No template ${email.template}`, []);
    // Mail that is not required carries its unsubscribe link and the RFC 8058 headers large
    // mailbox providers ask bulk senders for.
    const link = email.required ? undefined : await unsubscribeUrl(config, email.recipient, email.category, email.created_at);
    const rendered = await renderEmail(email.template, email.props, { unsubscribeUrl: link });
    const { providerMessageId } = await config.provider.send({
      id: email.id,
      from: config.from,
      to: email.recipient,
      subject: rendered.subject,
      html: rendered.html,
      text: rendered.text,
      headers: link ? { 'List-Unsubscribe': `<${link}>`, 'List-Unsubscribe-Post': 'List-Unsubscribe=One-Click' } : {},
      tags: [{ name: 'message_id', value: email.id }, { name: 'template', value: email.template }],
    });
    await withServiceRole((tx) => tx`select private.mark_email_sent(${email.id}, ${config.provider.name}, ${providerMessageId})`);
    return 'sent';
  } catch (err) {
    if (err instanceof SendError) {
      outcome = { status: 'send', permanent: err.kind === 'permanent', error: err.message, retryAfter: err.retryAfterSeconds };
    } else if (err instanceof EmailTemplateError) {
      // Props that do not render never will: no retry.
      outcome = { status: 'render', permanent: true, error: err.message };
    } else {
      outcome = { status: 'error', permanent: false, error: (err as Error).message ?? String(err) };
    }
  }
  const retryAfter = outcome.retryAfter === undefined ? null : `${outcome.retryAfter} seconds`;
  const [{ status }] = await withServiceRole((tx) =>
    tx<{ status: string }[]>`select private.fail_email(${email.id}, ${outcome.error}, ${outcome.permanent}, ${retryAfter}::interval) as status`);
  config.log.warn('email not sent', { message_id: email.id, template: email.template, stage: outcome.status, now: status, error: outcome.error });
  return status === 'queued' ? 'retried' : 'failed';
}

/**
 * Makes mail of due events, then sends due messages until none are left or `deadline` (epoch ms)
 * passes; at most `limit` messages.
 */
export async function dispatchDueEmails(
  config: DispatchConfig,
  { limit = 500, deadline = Date.now() + 25000, ids }: { limit?: number; deadline?: number; ids?: string[] } = {},
): Promise<DispatchSummary> {
  // With `ids`, only those messages (the Send Email Hook's own, sent at once); otherwise the
  // events' mail first, then whatever is due.
  const [{ enqueued }] = ids
    ? [{ enqueued: 0 }]
    : await withServiceRole((tx) => tx<{ enqueued: number }[]>`select private.email_from_events() as enqueued`);
  const summary: DispatchSummary = { enqueued, claimed: 0, sent: 0, retried: 0, failed: 0 };
  while (summary.claimed < limit && Date.now() < deadline) {
    const batch = await withServiceRole((tx) => tx<ClaimedEmail[]>`
      select id, created_at, recipient, template, props, category::text as category, required
      from private.claim_emails(${Math.min(BATCH, limit - summary.claimed)}, ${LEASE}::interval, now(), ${ids ?? null}::uuid[])`);
    if (batch.length === 0) break;
    summary.claimed += batch.length;
    for (const email of batch) summary[await sendOne(config, email)]++;
  }
  return summary;
}

/** The loop's configuration from the function's environment. */
export function dispatchConfigFromEnv(log: Logger): DispatchConfig {
  const mail = emailEnv();
  return {
    provider: emailProvider(mail),
    from: mail.from,
    unsubscribeEndpoint: `${env().supabaseUrl}/functions/v1/email-unsubscribe`,
    unsubscribeSecret: requireSecret(mail.unsubscribeSecret, 'EMAIL_UNSUBSCRIBE_SECRET'),
    log,
  };
}
