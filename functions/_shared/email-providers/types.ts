// What every way of sending mail (Resend, the local mailbox) takes and answers. Pure module.

/** One rendered message, ready to hand to a provider. */
export interface OutgoingEmail {
  /** The outbox message's id; providers use it as the idempotency key, so a retry never sends twice. */
  id: string;
  from: string;
  to: string;
  subject: string;
  html: string;
  text: string;
  /** Extra headers, e.g. List-Unsubscribe and List-Unsubscribe-Post (RFC 8058). */
  headers: Record<string, string>;
  /** Name/value tags the provider echoes in its webhooks (Resend tags). */
  tags?: { name: string; value: string }[];
}

export interface SendResult {
  /** The provider's id of the message, which its delivery webhooks name. */
  providerMessageId: string;
}

/**
 * A failed send. `temporary` (network, 429, 5xx) is retried with backoff, honouring
 * `retryAfterSeconds` when the provider said so; `permanent` (other 4xx) is not retried.
 */
export class SendError extends Error {
  constructor(
    message: string,
    readonly kind: 'temporary' | 'permanent',
    readonly status?: number,
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
    this.name = 'SendError';
  }
}

export interface EmailProvider {
  /** For logs and the outbox row: 'resend' or 'mailbox'. */
  readonly name: string;
  send(email: OutgoingEmail): Promise<SendResult>;
}
