// The mails Auth sends and the one-time tokens behind them, as GoTrue keeps them: a 6-digit code
// goes out, and only its hash is stored, in the user's *_token column and in auth.one_time_tokens:
// token_hash = hex(sha224(email + code)), with "pkce_" in front for a PKCE flow. The mail's link
// carries that hash (/auth/v1/verify?token=<hash>&type=...), the code can be typed instead. Each
// kind of mail goes to a user at most once per max_frequency (429 over_email_send_rate_limit).
import { createHash } from 'node:crypto';
import type { Ctx } from './context.ts';
import type { Tx } from './db.ts';
import { badRequest, tooManyRequests } from './errors.ts';
import { callSendEmailHook, type EmailData } from './hook.ts';
import { ONE_HOUR, takeToken } from './ratelimit.ts';
import { referrer } from './redirect.ts';
import { createOneTimeToken, identitiesOf, type UserRow, userJson } from './users.ts';

export type FlowType = 'implicit' | 'pkce';

export function flowFromChallenge(codeChallenge: string): FlowType {
  return codeChallenge ? 'pkce' : 'implicit';
}

/** A code of `digits` digits from a cryptographic source, zero-padded. */
export function generateOtp(digits: number): string {
  const upper = 10 ** digits;
  // Rejection sampling: no modulo bias.
  const limit = Math.floor(0x1_0000_0000 / upper) * upper;
  for (;;) {
    const n = crypto.getRandomValues(new Uint32Array(1))[0];
    if (n < limit) return String(n % upper).padStart(digits, '0');
  }
}

/** GoTrue's GenerateTokenHash: hex(sha224(emailOrPhone + otp)). */
export function tokenHash(emailOrPhone: string, otp: string): string {
  return createHash('sha224').update(emailOrPhone + otp).digest('hex');
}

export function withFlowPrefix(hash: string, flow: FlowType): string {
  return flow === 'pkce' ? `pkce_${hash}` : hash;
}

/** GoTrue's validateSentWithinFrequencyLimit. */
function checkFrequency(ctx: Ctx, sentAt: Date | null): void {
  if (!sentAt) return;
  const wait = new Date(sentAt).getTime() + ctx.config.email.maxFrequency * 1000 - Date.now();
  if (wait > 0) {
    throw tooManyRequests('over_email_send_rate_limit', `For security purposes, you can only request this after ${Math.floor(wait / 1000)} seconds.`);
  }
}

interface SendParams {
  action: 'signup' | 'invite' | 'magiclink' | 'recovery' | 'email_change';
  otp: string;
  otpNew?: string;
  tokenHashWithPrefix: string;
  /** The hash for the current address of a secure email change (token_hash_new, GoTrue's naming). */
  tokenHashCurrent?: string;
  /** The user JSON's fields as they will be once this mail's writes are done (new_email). */
  userOverrides?: Record<string, unknown>;
}

/** GoTrue's sendEmail through the Send Email Hook (the only mail path locally). */
async function sendEmail(tx: Tx, ctx: Ctx, user: UserRow, p: SendParams): Promise<void> {
  const { config } = ctx;
  // [auth.rate_limit] email_sent: mails per hour for the whole project.
  if (config.rateLimit.emailSent !== null && config.email.enableConfirmations) {
    takeToken('email_sent', 'project', {
      events: config.rateLimit.emailSent, windowSeconds: ONE_HOUR, burst: config.rateLimit.emailSent,
      code: 'over_email_send_rate_limit', message: 'email rate limit exceeded',
    });
  }
  if (!config.hook.enabled) {
    // No SMTP here: without the hook there is nowhere to send to. Say so, never what the code is.
    console.log(JSON.stringify({ level: 'warn', msg: 'auth: [auth.hook.send_email] is disabled, mail not sent', action: p.action, request_id: ctx.requestId }));
    return;
  }
  const emailData: EmailData = {
    token: p.otp,
    token_hash: p.tokenHashWithPrefix,
    redirect_to: referrer(config, ctx.req, ctx.url),
    email_action_type: p.action,
    site_url: config.externalUrl,
    token_new: '',
    token_hash_new: '',
  };
  if (p.action === 'email_change') {
    if (p.tokenHashCurrent) {
      // Secure email change: `token` with token_hash_new goes to the current address, token_new
      // with token_hash to the new one (GoTrue's historical naming, kept for compatibility).
      emailData.token_new = p.otpNew ?? '';
      emailData.token_hash_new = p.tokenHashCurrent;
    } else {
      emailData.token = p.otpNew ?? '';
    }
  }
  const json = { ...userJson(user, await identitiesOf(tx, user.id)), ...p.userOverrides };
  await callSendEmailHook(config, json, emailData, ctx.ip);
}

function newToken(ctx: Ctx, address: string, flow: FlowType): { otp: string; hash: string } {
  const otp = generateOtp(ctx.config.email.otpLength);
  return { otp, hash: withFlowPrefix(tokenHash(address, otp), flow) };
}

function requireEmail(user: UserRow): string {
  if (!user.email) throw badRequest('validation_failed', 'The user has no email address');
  return user.email;
}

/** The sign-up confirmation (GoTrue's sendConfirmation). */
export async function sendConfirmation(tx: Tx, ctx: Ctx, user: UserRow, flow: FlowType): Promise<void> {
  checkFrequency(ctx, user.confirmation_sent_at);
  const email = requireEmail(user);
  const { otp, hash } = newToken(ctx, email, flow);
  await sendEmail(tx, ctx, user, { action: 'signup', otp, tokenHashWithPrefix: hash });
  await tx`update auth.users set confirmation_token = ${hash}, confirmation_sent_at = now(), updated_at = now() where id = ${user.id}`;
  await createOneTimeToken(tx, user.id, email, hash, 'confirmation_token');
}

/** An invitation (GoTrue's sendInvite): no frequency limit, the admin asked for it. */
export async function sendInvite(tx: Tx, ctx: Ctx, user: UserRow): Promise<void> {
  const email = requireEmail(user);
  const { otp, hash } = newToken(ctx, email, 'implicit');
  await sendEmail(tx, ctx, user, { action: 'invite', otp, tokenHashWithPrefix: hash });
  await tx`
    update auth.users set confirmation_token = ${hash}, confirmation_sent_at = now(), invited_at = now(), updated_at = now()
    where id = ${user.id}`;
  await createOneTimeToken(tx, user.id, email, hash, 'confirmation_token');
}

/**
 * A password recovery or a magic link: both are a recovery token, and share one frequency limit
 * (GoTrue's sendPasswordRecovery and sendMagicLink).
 */
export async function sendRecoveryLike(tx: Tx, ctx: Ctx, user: UserRow, action: 'recovery' | 'magiclink', flow: FlowType): Promise<void> {
  checkFrequency(ctx, user.recovery_sent_at);
  const email = requireEmail(user);
  const { otp, hash } = newToken(ctx, email, flow);
  await sendEmail(tx, ctx, user, { action, otp, tokenHashWithPrefix: hash });
  await tx`update auth.users set recovery_token = ${hash}, recovery_sent_at = now(), updated_at = now() where id = ${user.id}`;
  await createOneTimeToken(tx, user.id, email, hash, 'recovery_token');
}

/**
 * An email change (GoTrue's sendEmailChange): a code for the new address, and with
 * double_confirm_changes one for the current address too; both must be confirmed.
 */
export async function sendEmailChange(tx: Tx, ctx: Ctx, user: UserRow, newEmail: string, flow: FlowType): Promise<void> {
  checkFrequency(ctx, user.email_change_sent_at);
  const fresh = newToken(ctx, newEmail, flow);
  const current = ctx.config.email.doubleConfirmChanges && user.email ? newToken(ctx, user.email, flow) : null;
  await sendEmail(tx, ctx, user, {
    action: 'email_change',
    otp: current?.otp ?? '',
    otpNew: fresh.otp,
    tokenHashWithPrefix: fresh.hash,
    tokenHashCurrent: current?.hash,
    userOverrides: { new_email: newEmail },
  });
  await tx`
    update auth.users set email_change = ${newEmail}, email_change_token_new = ${fresh.hash},
      email_change_token_current = ${current?.hash ?? ''}, email_change_confirm_status = 0,
      email_change_sent_at = now(), updated_at = now()
    where id = ${user.id}`;
  if (current && user.email) await createOneTimeToken(tx, user.id, user.email, current.hash, 'email_change_token_current');
  await createOneTimeToken(tx, user.id, newEmail, fresh.hash, 'email_change_token_new');
}
