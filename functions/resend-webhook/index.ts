// POST /functions/v1/resend-webhook (verify_jwt = false): Resend's delivery webhooks, signed by
// Svix (svix-id, svix-timestamp, svix-signature) with the endpoint's secret (RESEND_WEBHOOK_SECRET).
// A missing or bad signature gets 400 and changes nothing; a replay (a svix-id seen before) is
// acknowledged and changes nothing; delivered, bounced and complained events update the message,
// and a permanent bounce or a complaint suppresses the address for non-required mail. Other event
// types are acknowledged and ignored.
import { Webhook } from 'svix';
import { withServiceRole } from '../_shared/db.ts';
import { emailEnv, requireSecret } from '../_shared/env.ts';
import { HttpError } from '../_shared/errors.ts';
import { createHandler, json } from '../_shared/handler.ts';

// Resend's events are small JSON documents.
const MAX_BODY = 256 * 1024;

const RECORDED: Record<string, string> = {
  'email.delivered': 'delivered',
  'email.bounced': 'bounced',
  'email.complained': 'complained',
};

interface ResendEvent {
  type: string;
  data?: { email_id?: string; bounce?: { type?: string } };
}

export const handler = createHandler(async (req, { log }) => {
  const secret = requireSecret(emailEnv().resendWebhookSecret, 'RESEND_WEBHOOK_SECRET');
  const body = await req.text();
  if (body.length > MAX_BODY) throw new HttpError(413, 'payload_too_large', 'The webhook body is too large');
  try {
    // Checks the signature and the timestamp (a delivery older than five minutes is refused).
    new Webhook(secret).verify(body, {
      'svix-id': req.headers.get('svix-id') ?? '',
      'svix-timestamp': req.headers.get('svix-timestamp') ?? '',
      'svix-signature': req.headers.get('svix-signature') ?? '',
    });
  } catch {
    throw new HttpError(400, 'invalid_signature', 'The webhook signature is missing or invalid');
  }
  let event: ResendEvent;
  try {
    event = JSON.parse(body);
  } catch {
    throw new HttpError(400, 'invalid_request', 'The webhook body must be JSON');
  }
  if (typeof event?.type !== 'string') throw new HttpError(400, 'invalid_request', 'The webhook body has no event type');
  const receiptId = req.headers.get('svix-id')!;
  const outcome = await withServiceRole(async (tx) => {
    const [{ fresh }] = await tx<{ fresh: boolean }[]>`select private.receive_webhook('resend', ${receiptId}) as fresh`;
    if (!fresh) return 'replay';
    const recorded = RECORDED[event.type];
    const emailId = event.data?.email_id;
    if (!recorded || !emailId) return 'ignored';
    // Resend marks a bounce Permanent (hard) or Transient (soft); only a hard one suppresses.
    const permanent = event.type !== 'email.bounced' || event.data?.bounce?.type !== 'Transient';
    const [{ known }] = await tx<{ known: boolean }[]>`
      select private.record_email_event(${emailId}, ${recorded}, ${permanent}) as known`;
    return known ? 'recorded' : 'unknown_message';
  });
  log.info('resend webhook', { type: event.type, outcome });
  return json({ received: true, outcome });
}, { name: 'resend-webhook', methods: ['POST'] });

if (import.meta.main) Deno.serve(handler);
