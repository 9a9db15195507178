// POST /functions/v1/auth-send-email (verify_jwt = false): Supabase Auth's Send Email Hook. Auth
// posts the user and the mail to send (email_data), signed per Standard Webhooks (webhook-id,
// webhook-timestamp, webhook-signature) with the hook secret (SEND_EMAIL_HOOK_SECRET, "v1,whsec_...").
// The mail goes through the same templates, outbox and provider as every other: it is enqueued
// (the webhook id is its idempotency key, so Auth's retries never send twice) and sent at once.
// Auth reads errors as {"error": {"http_code", "message"}}; an empty 200 is success.
import { Webhook } from 'standardwebhooks';
import { z } from 'zod';
import { withServiceRole } from '../_shared/db.ts';
import { dispatchConfigFromEnv, dispatchDueEmails } from '../_shared/email-dispatch.ts';
import { emailEnv, env, requireSecret } from '../_shared/env.ts';
import { createHandler, json } from '../_shared/handler.ts';
import type { TemplateName } from '../_shared/emails/index.ts';

const MAX_BODY = 64 * 1024;

const HookPayload = z.object({
  // Auth sends the user as its user object: a pending email change is `new_email` (email_new is
  // read too, for payloads written by hand).
  user: z.object({ id: z.string(), email: z.string(), new_email: z.string().optional(), email_new: z.string().optional() }).passthrough(),
  email_data: z.object({
    token: z.string(),
    token_hash: z.string(),
    redirect_to: z.string(),
    email_action_type: z.string(),
    site_url: z.string(),
    token_new: z.string().optional().default(''),
    token_hash_new: z.string().optional().default(''),
  }).passthrough(),
});
type HookPayload = z.infer<typeof HookPayload>;

interface AuthMail {
  to: string;
  template: TemplateName;
  props: Record<string, unknown>;
}

/** Auth's own endpoint that checks a token and redirects, as the link in its mails points to. */
function verifyUrl(tokenHash: string, type: string, redirectTo: string): string {
  const url = new URL(`${env().supabaseUrl}/auth/v1/verify`);
  url.searchParams.set('token', tokenHash);
  url.searchParams.set('type', type);
  if (redirectTo) url.searchParams.set('redirect_to', redirectTo);
  return url.toString();
}

/** The mails one hook call asks for; none for the notifications we do not send (yet). */
export function authMails({ user, email_data: d }: HookPayload): AuthMail[] {
  switch (d.email_action_type) {
    case 'signup':
      return [{ to: user.email, template: 'auth_confirm_signup', props: { confirmUrl: verifyUrl(d.token_hash, 'signup', d.redirect_to), code: d.token } }];
    case 'magiclink':
      return [{ to: user.email, template: 'auth_magic_link', props: { magicLinkUrl: verifyUrl(d.token_hash, 'magiclink', d.redirect_to), code: d.token } }];
    case 'recovery':
      return [{ to: user.email, template: 'auth_recovery', props: { resetUrl: verifyUrl(d.token_hash, 'recovery', d.redirect_to), code: d.token } }];
    case 'invite':
      return [{ to: user.email, template: 'auth_invite', props: { acceptUrl: verifyUrl(d.token_hash, 'invite', d.redirect_to) } }];
    case 'email_change': {
      // Auth's historical naming: token_hash_new goes with `token` to the current address,
      // token_hash with `token_new` to the new one (Secure Email Change sends both).
      const newEmail = user.new_email || user.email_new || user.email;
      const change = (to: string, hash: string, code: string): AuthMail => ({
        to, template: 'auth_email_change',
        props: { confirmUrl: verifyUrl(hash, 'email_change', d.redirect_to), newEmail, code },
      });
      if (d.token_hash && d.token_hash_new) {
        return [change(user.email, d.token_hash_new, d.token), change(newEmail, d.token_hash, d.token_new)];
      }
      return [change(newEmail, d.token_hash || d.token_hash_new, d.token_new || d.token)];
    }
    default:
      return [];
  }
}

function hookError(status: number, message: string): Response {
  return json({ error: { http_code: status, message } }, status);
}

export const handler = createHandler(async (req, { log, requestId }) => {
  const secret = requireSecret(emailEnv().sendEmailHookSecret, 'SEND_EMAIL_HOOK_SECRET').replace(/^v1,whsec_/, '');
  const body = await req.text();
  if (body.length > MAX_BODY) return hookError(413, 'payload too large');
  let payload: HookPayload;
  try {
    payload = HookPayload.parse(new Webhook(secret).verify(body, Object.fromEntries(req.headers)));
  } catch (err) {
    log.warn('send email hook refused', { reason: (err as Error).name });
    return hookError(401, 'invalid signature or payload');
  }
  const mails = authMails(payload);
  const webhookId = req.headers.get('webhook-id') ?? requestId;
  const ids = await withServiceRole(async (tx) => {
    const queued: string[] = [];
    for (const mail of mails) {
      const [{ id }] = await tx<[{ id: string }]>`select private.enqueue_email(${mail.template}, ${mail.to}, ${tx.json(mail.props as never)},
        ${`auth:${webhookId}:${mail.to.toLowerCase()}`}) as id`;
      queued.push(id);
    }
    return queued;
  });
  // Auth mails are awaited by a person: these, now, ahead of whatever else is queued.
  if (ids.length > 0) await dispatchDueEmails(dispatchConfigFromEnv(log), { limit: ids.length, deadline: Date.now() + 8000, ids });
  log.info('send email hook', { action: payload.email_data.email_action_type, mails: mails.length });
  return json({});
}, { name: 'auth-send-email', methods: ['POST'] });

if (import.meta.main) Deno.serve(handler);
