// GET and POST /verify (GoTrue's Verify): a one-time token from a mail confirms a sign-up or an
// invitation, signs in by magic link or recovery, or confirms an email change. GET is the mail's
// link: it redirects to redirect_to with the session in the fragment (#access_token=...&type=...),
// the auth code in the query for PKCE, or the error in the fragment. POST is verifyOtp: the code
// typed with its email, or the link's token_hash, answered with the session as JSON.
import { z } from 'zod';
import { audit } from './audit.ts';
import { type Ctx, requestAud } from './context.ts';
import { authDb, type Db, transaction, type Tx } from './db.ts';
import { AuthError, badRequest, forbidden, unprocessable } from './errors.ts';
import { tokenHash } from './mail.ts';
import { hashPassword, randomPassword } from './passwords.ts';
import { authMethodOfVerifyType, issueAuthCode } from './pkce.ts';
import { limitAddress } from './ratelimit.ts';
import { referrer } from './redirect.ts';
import { json, redirect } from './respond.ts';
import { issueSession, type TokenResponse } from './sessions.ts';
import {
  clearOneTimeTokens,
  confirmUser,
  emailIdentityData,
  findUserByEmail,
  findUserById,
  findUserByOneTimeToken,
  identitiesOf,
  insertIdentity,
  isBanned,
  type OneTimeTokenType,
  refreshProviders,
  updateIdentityData,
  type UserRow,
} from './users.ts';
import { readBody, text, validateEmail } from './validation.ts';

const VerifyBody = z.object({
  type: text(32),
  token: text(1024),
  token_hash: text(1024),
  email: text(1024),
  phone: text(64),
  redirect_to: text(4096),
});

const SINGLE_CONFIRMATION = 'Confirmation link accepted. Please proceed to confirm link sent to the other email';
const LINK_INVALID = 'Email link is invalid or has expired';
const TOKEN_INVALID = 'Token has expired or is invalid';

interface Params {
  type: string;
  token: string;
  tokenHash: string;
  email: string;
}

const TOKEN_TYPES: Record<string, OneTimeTokenType[]> = {
  email: ['confirmation_token', 'recovery_token'],
  signup: ['confirmation_token'],
  invite: ['confirmation_token'],
  recovery: ['recovery_token'],
  magiclink: ['recovery_token'],
  email_change: ['email_change_token_current', 'email_change_token_new'],
};

function expired(ctx: Ctx, sentAt: Date | null): boolean {
  return !sentAt || Date.now() > new Date(sentAt).getTime() + ctx.config.email.otpExpiry * 1000;
}

/** The stored hash matches what was presented (GoTrue's isOtpValid, with the pkce_ prefix). */
function otpValid(ctx: Ctx, presented: string, expected: string | null, sentAt: Date | null): boolean {
  if (!expected || expired(ctx, sentAt)) return false;
  return presented === expected || `pkce_${presented}` === expected;
}

/** GoTrue's verifyTokenHash: the link's hash finds its user. `p.type` "email" is resolved. */
async function userByTokenHash(ctx: Ctx, db: Db, p: Params): Promise<UserRow> {
  const types = TOKEN_TYPES[p.type];
  if (!types) throw badRequest('validation_failed', 'Invalid email verification type');
  const user = await findUserByOneTimeToken(db, p.tokenHash, types);
  if (!user) throw forbidden('otp_expired', LINK_INVALID);
  if (isBanned(user)) throw forbidden('user_banned', 'User is banned');
  let sentAt: Date | null;
  if (p.type === 'email') {
    const isRecovery = user.recovery_token === p.tokenHash;
    p.type = isRecovery ? 'magiclink' : 'signup';
    sentAt = isRecovery ? user.recovery_sent_at : user.confirmation_sent_at;
  } else if (p.type === 'signup' || p.type === 'invite') sentAt = user.confirmation_sent_at;
  else if (p.type === 'recovery' || p.type === 'magiclink') sentAt = user.recovery_sent_at;
  else sentAt = user.email_change_sent_at;
  if (expired(ctx, sentAt)) throw forbidden('otp_expired', LINK_INVALID);
  return user;
}

/** GoTrue's FindUserForEmailChange: the address and code of either side of an email change. */
async function userForEmailChange(ctx: Ctx, db: Db, hash: string): Promise<UserRow | undefined> {
  const kinds: OneTimeTokenType[] = ctx.config.email.doubleConfirmChanges
    ? ['email_change_token_current', 'email_change_token_new']
    : ['email_change_token_new'];
  for (const kind of kinds) {
    const user = await findUserByOneTimeToken(db, hash, [kind]) ?? await findUserByOneTimeToken(db, `pkce_${hash}`, [kind]);
    if (user) return user;
  }
  return undefined;
}

/** GoTrue's verifyUserAndToken: an email and its typed code. `p.type` "email" is resolved. */
async function userByEmailAndCode(ctx: Ctx, db: Db, p: Params): Promise<UserRow> {
  const user = p.type === 'email_change'
    ? await userForEmailChange(ctx, db, p.tokenHash)
    : await findUserByEmail(db, p.email, requestAud(ctx));
  if (!user) throw forbidden('otp_expired', TOKEN_INVALID);
  if (isBanned(user)) throw forbidden('user_banned', 'User is banned');
  let valid = false;
  switch (p.type) {
    case 'email':
      if (otpValid(ctx, p.tokenHash, user.confirmation_token, user.confirmation_sent_at)) {
        valid = true;
        p.type = 'signup';
      } else if (otpValid(ctx, p.tokenHash, user.recovery_token, user.recovery_sent_at)) {
        valid = true;
        p.type = 'magiclink';
      }
      break;
    case 'signup':
    case 'invite':
      valid = otpValid(ctx, p.tokenHash, user.confirmation_token, user.confirmation_sent_at);
      break;
    case 'recovery':
    case 'magiclink':
      valid = otpValid(ctx, p.tokenHash, user.recovery_token, user.recovery_sent_at);
      break;
    case 'email_change':
      valid = otpValid(ctx, p.tokenHash, user.email_change_token_current, user.email_change_sent_at) ||
        otpValid(ctx, p.tokenHash, user.email_change_token_new, user.email_change_sent_at);
      break;
  }
  if (!valid) throw forbidden('otp_expired', TOKEN_INVALID);
  return user;
}

/** GoTrue's signupVerify: the address is confirmed; an invited user without a password gets a random one. */
async function confirmSignup(tx: Tx, user: UserRow, passwordHash: string | null): Promise<void> {
  if (passwordHash) {
    await tx`update auth.users set encrypted_password = ${passwordHash}, updated_at = now() where id = ${user.id}`;
  }
  await audit(tx, user, 'user_signedup', { provider: 'email' });
  await confirmUser(tx, user.id);
  for (const identity of await identitiesOf(tx, user.id)) {
    if (identity.email && user.email && identity.email === user.email.toLowerCase()) {
      await updateIdentityData(tx, identity, { email_verified: true });
    }
  }
}

/** GoTrue's recoverVerify: the recovery token is spent; an unconfirmed address is confirmed by it. */
async function confirmRecovery(tx: Tx, user: UserRow): Promise<void> {
  await tx`update auth.users set recovery_token = '', updated_at = now() where id = ${user.id}`;
  await clearOneTimeTokens(tx, user.id);
  if (!user.email_confirmed_at) {
    await audit(tx, user, 'user_signedup', { provider: 'email' });
    await confirmUser(tx, user.id);
  } else {
    await audit(tx, user, 'login');
  }
}

/**
 * GoTrue's emailChangeVerify. With double_confirm_changes (and confirmations on) the first of
 * the two codes only marks its side confirmed and answers null; the second makes the change.
 */
async function confirmEmailChange(tx: Tx, ctx: Ctx, user: UserRow, p: Params): Promise<UserRow | null> {
  const { config } = ctx;
  if (config.email.enableConfirmations && config.email.doubleConfirmChanges && user.email_change_confirm_status === 0 && user.email) {
    const matches = (stored: string | null) => !!stored && (p.tokenHash === stored || `pkce_${p.tokenHash}` === stored || p.token === stored);
    if (matches(user.email_change_token_current)) {
      await tx`update auth.users set email_change_confirm_status = 1, email_change_token_current = '', updated_at = now() where id = ${user.id}`;
      await clearOneTimeTokens(tx, user.id, 'email_change_token_current');
    } else if (matches(user.email_change_token_new)) {
      await tx`update auth.users set email_change_confirm_status = 1, email_change_token_new = '', updated_at = now() where id = ${user.id}`;
      await clearOneTimeTokens(tx, user.id, 'email_change_token_new');
    } else {
      await tx`update auth.users set email_change_confirm_status = 1, updated_at = now() where id = ${user.id}`;
    }
    return null;
  }
  const newEmail = user.email_change ?? '';
  await audit(tx, user, 'user_modified');
  const identity = (await identitiesOf(tx, user.id)).find((i) => i.provider === 'email');
  if (identity) await updateIdentityData(tx, identity, { email: newEmail.toLowerCase(), email_verified: true });
  else await insertIdentity(tx, user.id, 'email', emailIdentityData(user.id, newEmail, true));
  await tx`
    update auth.users set email = ${newEmail}, email_change = '', email_change_token_current = '',
      email_change_token_new = '', email_change_confirm_status = 0, is_anonymous = false, updated_at = now()
    where id = ${user.id}`;
  await clearOneTimeTokens(tx, user.id);
  if (!user.email_confirmed_at) await confirmUser(tx, user.id);
  return (await findUserById(tx, user.id))!;
}

type Verified =
  | { kind: 'session'; token: TokenResponse }
  | { kind: 'code'; code: string }
  | { kind: 'single_confirmation' };

/** Finds the user, applies what the token is for, and signs them in: one transaction. */
async function verify(ctx: Ctx, p: Params, byHash: boolean, flow: 'implicit' | 'pkce'): Promise<Verified> {
  const db = authDb(ctx.config);
  // A user invited without a password gets one nobody knows; hashed before the transaction.
  const probe = byHash ? await userByTokenHash(ctx, db, { ...p }) : await userByEmailAndCode(ctx, db, { ...p });
  const inviteHash = !probe.encrypted_password && probe.invited_at ? await hashPassword(ctx.config, randomPassword(ctx.config)) : null;

  return await transaction(ctx.config, async (tx) => {
    let user = byHash ? await userByTokenHash(ctx, tx, p) : await userByEmailAndCode(ctx, tx, p);
    switch (p.type) {
      case 'signup':
      case 'invite':
        await confirmSignup(tx, user, user.id === probe.id ? inviteHash : null);
        break;
      case 'recovery':
      case 'magiclink':
        await confirmRecovery(tx, user);
        break;
      case 'email_change': {
        const changed = await confirmEmailChange(tx, ctx, user, p);
        if (!changed) return { kind: 'single_confirmation' };
        user = changed;
        break;
      }
      default:
        throw badRequest('validation_failed', 'Unsupported verification type');
    }
    await refreshProviders(tx, user.id);
    if (flow === 'pkce') return { kind: 'code', code: await issueAuthCode(tx, user.id, authMethodOfVerifyType(p.type)) };
    return { kind: 'session', token: await issueSession(tx, ctx, user.id, 'otp') };
  });
}

/** Go's url.Values.Encode: keys sorted, form-encoded. */
function encodeSorted(values: Record<string, string>): string {
  return Object.keys(values).sort().map((k) => `${encodeURIComponent(k)}=${encodeURIComponent(values[k]).replace(/%20/g, '+')}`).join('&');
}

/** GoTrue's prepErrorRedirectURL: the error in the fragment (and in the query for PKCE). */
function errorRedirect(to: string, err: AuthError, flow: 'implicit' | 'pkce'): string {
  const url = new URL(to);
  const oauthError: Record<number, string> = {
    400: 'invalid_request', 401: 'unauthorized_client', 403: 'access_denied', 500: 'server_error', 503: 'temporarily_unavailable',
  };
  const fragment: Record<string, string> = { error_code: err.code, error_description: err.message, sb: '' };
  if (oauthError[err.status]) fragment.error = oauthError[err.status];
  if (flow === 'pkce') {
    if (fragment.error) url.searchParams.set('error', fragment.error);
    url.searchParams.set('error_code', err.code);
    url.searchParams.set('error_description', err.message);
  }
  url.hash = encodeSorted(fragment);
  return url.toString();
}

async function verifyGet(ctx: Ctx): Promise<Response> {
  const token = ctx.url.searchParams.get('token') ?? '';
  const type = ctx.url.searchParams.get('type') ?? '';
  const redirectTo = referrer(ctx.config, ctx.req, ctx.url);
  if (type === '') throw badRequest('validation_failed', 'Verify requires a verification type');
  if (token === '') throw badRequest('validation_failed', 'Verify requires a token or a token hash');
  const flow = token.startsWith('pkce_') ? 'pkce' : 'implicit';
  let result: Verified;
  try {
    if (flow === 'pkce') authMethodOfVerifyType(type);
    result = await verify(ctx, { type, token, tokenHash: token, email: '' }, true, flow);
  } catch (err) {
    if (err instanceof AuthError) return redirect(errorRedirect(redirectTo, err, flow));
    throw err;
  }
  if (result.kind === 'single_confirmation') {
    const url = new URL(redirectTo);
    if (flow === 'pkce') url.searchParams.set('message', SINGLE_CONFIRMATION);
    url.hash = encodeSorted({ message: SINGLE_CONFIRMATION, sb: '' });
    return redirect(url.toString());
  }
  if (result.kind === 'code') {
    const url = new URL(redirectTo);
    url.searchParams.set('code', result.code);
    return redirect(url.toString());
  }
  const t = result.token;
  return redirect(`${redirectTo}#${encodeSorted({
    access_token: t.access_token,
    expires_at: String(t.expires_at),
    expires_in: String(t.expires_in),
    refresh_token: t.refresh_token,
    sb: '',
    token_type: t.token_type,
    type,
  })}`);
}

async function verifyPost(ctx: Ctx): Promise<Response> {
  const body = await readBody(ctx.req, VerifyBody);
  if (body.type === '') throw badRequest('validation_failed', 'Verify requires a verification type');
  if ((body.token === '') === (body.token_hash === '')) {
    throw badRequest('validation_failed', 'Verify requires either a token or a token hash');
  }
  const p: Params = { type: body.type, token: body.token, tokenHash: body.token_hash, email: '' };
  if (body.token !== '') {
    if (body.phone !== '' && body.email === '') {
      // Phone codes need an SMS provider, which the local stack does not have.
      throw forbidden('otp_expired', TOKEN_INVALID);
    }
    if (body.phone === '' && body.email !== '') {
      try {
        p.email = validateEmail(body.email);
      } catch {
        throw unprocessable('validation_failed', 'Invalid email format');
      }
      p.tokenHash = tokenHash(p.email, body.token);
    } else {
      throw badRequest('validation_failed', 'Only an email address or phone number should be provided on verify');
    }
  } else if (body.email !== '' || body.phone !== '' || body.redirect_to !== '') {
    throw badRequest('validation_failed', 'Only the token_hash and type should be provided');
  }
  const result = await verify(ctx, p, body.token === '', 'implicit');
  if (result.kind === 'single_confirmation') return json({ msg: SINGLE_CONFIRMATION, code: '200' });
  if (result.kind === 'code') throw badRequest('validation_failed', 'Unsupported verification type');
  return json(result.token);
}

export async function handleVerify(ctx: Ctx): Promise<Response> {
  limitAddress('verify', ctx.ip, ctx.config.rateLimit.tokenVerifications);
  return ctx.req.method === 'GET' ? await verifyGet(ctx) : await verifyPost(ctx);
}
