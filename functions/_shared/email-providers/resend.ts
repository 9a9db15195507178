// Sending through Resend with its SDK. The outbox message id is Resend's idempotency key: a retry
// after a crash between sending and recording returns the first send's id instead of sending again.
import { Resend } from 'resend';
import { type EmailProvider, SendError } from './types.ts';

// A send that takes longer is abandoned and retried (with the same idempotency key).
const SEND_TIMEOUT_MS = 15000;

/** Whether a failure can succeed later: no answer at all, rate limited, a concurrent same-key send, or Resend's own trouble. */
function isTemporary(status: number | null | undefined, name: string | undefined): boolean {
  return status == null || status === 429 || status >= 500 || name === 'concurrent_idempotent_requests';
}

function retryAfterSeconds(headers: Record<string, string> | null): number | undefined {
  const value = Number(headers?.['retry-after']);
  return Number.isFinite(value) && value >= 0 ? value : undefined;
}

export function resendProvider(apiKey: string, baseUrl?: string): EmailProvider {
  const resend = new Resend(apiKey, baseUrl ? { baseUrl } : undefined);
  return {
    name: 'resend',
    async send(email) {
      const { data, error, headers } = await resend.emails.send({
        from: email.from,
        to: email.to,
        subject: email.subject,
        html: email.html,
        text: email.text,
        headers: email.headers,
        tags: email.tags,
      }, { idempotencyKey: email.id, signal: AbortSignal.timeout(SEND_TIMEOUT_MS) });
      if (error || !data) {
        const status = (error as { statusCode?: number | null } | null)?.statusCode;
        throw new SendError(`Resend: ${error?.name ?? 'error'}: ${error?.message ?? 'no answer'}`,
          isTemporary(status, error?.name) ? 'temporary' : 'permanent', status ?? undefined, retryAfterSeconds(headers));
      }
      return { providerMessageId: data.id };
    },
  };
}
