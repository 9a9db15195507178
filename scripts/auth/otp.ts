// The mail-sending entry points: POST /otp (signInWithOtp: magic link and code), POST /magiclink,
// POST /recover (resetPasswordForEmail) and POST /resend. Each is limited per client address by
// [auth.rate_limit] sign_in_sign_ups and per user by [auth.email] max_frequency; none tells
// whether an address is registered (an unknown address answers {} like a known one).
import { z } from 'zod';
import { audit } from './audit.ts';
import { type Ctx, requestAud } from './context.ts';
import { authDb, transaction } from './db.ts';
import { badRequest, unprocessable } from './errors.ts';
import { flowFromChallenge, sendConfirmation, sendEmailChange, sendRecoveryLike } from './mail.ts';
import { randomPassword } from './passwords.ts';
import { createFlowState } from './pkce.ts';
import { limitAddress } from './ratelimit.ts';
import { json } from './respond.ts';
import { signUp } from './signup.ts';
import { findUserByEmail, findUserById, type Metadata } from './users.ts';
import { jsonObject, pkceFields, readBody, text, validateEmail, validatePkceParams } from './validation.ts';

const OtpBody = z.object({
  email: text(1024),
  phone: text(64),
  create_user: z.boolean().nullish().transform((v) => v ?? true),
  data: jsonObject(),
  channel: text(32),
  ...pkceFields,
});
const RecoverBody = z.object({ email: text(1024), ...pkceFields });
const ResendBody = z.object({ type: text(32), email: text(1024), phone: text(64), ...pkceFields });

/** GoTrue's Otp, MagicLink, Recover and Resend limiters: one bucket each, all sign_in_sign_ups. */
function limitPerAddress(ctx: Ctx, limiter: 'otp' | 'magiclink' | 'recover' | 'resend'): void {
  limitAddress(limiter, ctx.ip, ctx.config.rateLimit.signInSignUps);
}

/**
 * GoTrue's MagicLink: a confirmed user gets a magic link (and code); an unknown or unconfirmed
 * address is signed up with a random password, which sends the confirmation mail instead (it
 * signs in just the same), or with confirmations off, signs up and sends the magic link.
 */
async function magicLink(ctx: Ctx, rawEmail: string, data: Metadata, codeChallenge: string, codeChallengeMethod: string) {
  const { config } = ctx;
  if (!config.email.enabled) throw unprocessable('email_provider_disabled', 'Email logins are disabled');
  if (rawEmail === '') throw unprocessable('validation_failed', 'Password recovery requires an email');
  const email = validateEmail(rawEmail);
  validatePkceParams(codeChallengeMethod, codeChallenge);
  let user = await findUserByEmail(authDb(config), email, requestAud(ctx));
  if (!user || !user.email_confirmed_at) {
    await signUp(ctx, { email, phone: '', password: randomPassword(config, 33), data, codeChallenge, codeChallengeMethod });
    if (config.email.enableConfirmations) return;
    user = await findUserByEmail(authDb(config), email, requestAud(ctx));
    if (!user) return;
  }
  const flow = flowFromChallenge(codeChallenge);
  const target = user;
  await transaction(config, async (tx) => {
    if (flow === 'pkce') {
      await createFlowState(tx, { providerType: 'magiclink', method: 'magiclink', codeChallenge, codeChallengeMethod, userId: target.id });
    }
    await audit(tx, target, 'user_recovery_requested');
    await sendRecoveryLike(tx, ctx, (await findUserById(tx, target.id))!, 'magiclink', flow);
  });
}

export async function handleOtp(ctx: Ctx): Promise<Response> {
  limitPerAddress(ctx, 'otp');
  const body = await readBody(ctx.req, OtpBody);
  if (body.email !== '' && body.phone !== '') {
    throw badRequest('validation_failed', 'Only an email address or phone number should be provided');
  }
  if (body.email !== '' && body.channel !== '') {
    throw badRequest('validation_failed', 'Channel should only be specified with Phone OTP');
  }
  validatePkceParams(body.code_challenge_method, body.code_challenge);
  if (!body.create_user) {
    const known = body.email !== '' && await findUserByEmail(authDb(ctx.config), validateEmail(body.email), requestAud(ctx));
    if (!known) throw unprocessable('otp_disabled', 'Signups not allowed for otp');
  }
  if (body.email !== '') {
    await magicLink(ctx, body.email, body.data ?? {}, body.code_challenge, body.code_challenge_method);
    return json({});
  }
  if (body.phone !== '') throw badRequest('phone_provider_disabled', 'Unsupported phone provider');
  throw badRequest('validation_failed', 'One of email or phone must be set');
}

/** POST /magiclink, the older entry point supabase-js no longer calls. */
export async function handleMagicLink(ctx: Ctx): Promise<Response> {
  limitPerAddress(ctx, 'magiclink');
  const body = await readBody(ctx.req, OtpBody);
  await magicLink(ctx, body.email, body.data ?? {}, body.code_challenge, body.code_challenge_method);
  return json({});
}

export async function handleRecover(ctx: Ctx): Promise<Response> {
  limitPerAddress(ctx, 'recover');
  const { config } = ctx;
  if (!config.email.enabled) throw badRequest('email_provider_disabled', 'Email logins are disabled');
  const body = await readBody(ctx.req, RecoverBody);
  if (body.email === '') throw badRequest('validation_failed', 'Password recovery requires an email');
  const email = validateEmail(body.email);
  validatePkceParams(body.code_challenge_method, body.code_challenge);
  const user = await findUserByEmail(authDb(config), email, requestAud(ctx));
  if (!user) return json({});
  const flow = flowFromChallenge(body.code_challenge);
  await transaction(config, async (tx) => {
    if (flow === 'pkce') {
      await createFlowState(tx, {
        providerType: 'recovery', method: 'recovery',
        codeChallenge: body.code_challenge, codeChallengeMethod: body.code_challenge_method, userId: user.id,
      });
    }
    await audit(tx, user, 'user_recovery_requested');
    await sendRecoveryLike(tx, ctx, user, 'recovery', flow);
  });
  return json({});
}

export async function handleResend(ctx: Ctx): Promise<Response> {
  limitPerAddress(ctx, 'resend');
  const { config } = ctx;
  const body = await readBody(ctx.req, ResendBody);
  if (!['signup', 'email_change', 'sms', 'phone_change'].includes(body.type)) {
    throw badRequest('validation_failed', 'Missing one of these types: signup, email_change, sms, phone_change');
  }
  if (body.type === 'signup' && body.email === '') throw badRequest('validation_failed', 'Type provided requires an email address');
  if (body.email !== '' && body.phone !== '') {
    throw badRequest('validation_failed', 'Only an email address or phone number should be provided.');
  }
  if (body.type === 'sms' || body.type === 'phone_change' || body.phone !== '') {
    throw badRequest('phone_provider_disabled', 'Phone logins are disabled');
  }
  if (body.email === '') throw badRequest('validation_failed', 'Missing email address or phone number');
  if (!config.email.enabled) throw badRequest('email_provider_disabled', 'Email logins are disabled');
  validatePkceParams(body.code_challenge_method, body.code_challenge);
  const user = await findUserByEmail(authDb(config), validateEmail(body.email), requestAud(ctx));
  if (!user) return json({});
  if (body.type === 'signup' && user.email_confirmed_at) return json({});
  if (body.type === 'email_change' && !user.email_change) return json({});
  const flow = flowFromChallenge(body.code_challenge);
  await transaction(config, async (tx) => {
    const method = body.type === 'signup' ? 'email/signup' as const : 'email_change' as const;
    if (flow === 'pkce') {
      await createFlowState(tx, {
        providerType: method, method,
        codeChallenge: body.code_challenge, codeChallengeMethod: body.code_challenge_method, userId: user.id,
      });
    }
    if (body.type === 'signup') {
      await audit(tx, user, 'user_confirmation_requested');
      await sendConfirmation(tx, ctx, user, flow);
    } else {
      await sendEmailChange(tx, ctx, user, user.email_change!, flow);
    }
  });
  return json({});
}
