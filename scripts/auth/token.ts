// POST /token: grant_type=password (sign in), refresh_token (rotate), pkce (exchange an auth
// code from an email link). All are limited per client address by [auth.rate_limit]
// token_refresh, as GoTrue's Token limiter.
import { z } from 'zod';
import { audit } from './audit.ts';
import { type Ctx, requestAud } from './context.ts';
import { authDb, transaction } from './db.ts';
import { AuthError, badRequest, unprocessable } from './errors.ts';
import { checkPasswordStrength, passwordMatches } from './passwords.ts';
import { findFlowByAuthCode, flowNotFound, isFlowExpired, verifyCodeChallenge } from './pkce.ts';
import { limitAddress } from './ratelimit.ts';
import { json } from './respond.ts';
import { type AuthMethod, issueSession, refreshTokenGrant, validateRefreshToken } from './sessions.ts';
import { findUserByEmail, findUserById, isBanned } from './users.ts';
import { readBody, text } from './validation.ts';

const PasswordBody = z.object({ email: text(1024), phone: text(64), password: text(1024) });
const RefreshBody = z.object({ refresh_token: text(1024) });
const PkceBody = z.object({ auth_code: text(256), code_verifier: text(256) });

const INVALID_LOGIN = 'Invalid login credentials';

async function passwordGrant(ctx: Ctx): Promise<Response> {
  const { config } = ctx;
  const body = await readBody(ctx.req, PasswordBody);
  if (body.email !== '' && body.phone !== '') {
    throw badRequest('validation_failed', 'Only an email address or phone number should be provided on login.');
  }
  if (body.phone !== '') throw unprocessable('phone_provider_disabled', 'Phone logins are disabled');
  if (body.email === '') throw badRequest('validation_failed', 'missing email or phone');
  if (!config.email.enabled) throw unprocessable('email_provider_disabled', 'Email logins are disabled');

  const user = await findUserByEmail(authDb(config), body.email, requestAud(ctx));
  if (!user || !user.encrypted_password) throw badRequest('invalid_credentials', INVALID_LOGIN);
  if (isBanned(user)) throw badRequest('user_banned', 'User is banned');
  if (!(await passwordMatches(config, body.password, user.encrypted_password))) {
    throw badRequest('invalid_credentials', INVALID_LOGIN);
  }
  if (!user.email_confirmed_at) throw badRequest('email_not_confirmed', 'Email not confirmed');

  // A correct password that no longer meets the rules still signs in, with a warning (GoTrue).
  let weak: { message: string; reasons: string[] } | undefined;
  try {
    checkPasswordStrength(config, body.password);
  } catch (err) {
    if (err instanceof AuthError && err.code === 'weak_password') {
      weak = { message: err.message, reasons: (err.extra.weak_password as { reasons: string[] }).reasons };
    }
  }
  const token = await transaction(config, async (tx) => {
    await audit(tx, user, 'login', { provider: 'email' });
    return await issueSession(tx, ctx, user.id, 'password');
  });
  return json(weak ? { ...token, weak_password: weak } : token);
}

async function refreshGrant(ctx: Ctx): Promise<Response> {
  const body = await readBody(ctx.req, RefreshBody);
  validateRefreshToken(body.refresh_token);
  return json(await refreshTokenGrant(ctx, body.refresh_token));
}

async function pkceGrant(ctx: Ctx): Promise<Response> {
  const { config } = ctx;
  const body = await readBody(ctx.req, PkceBody);
  if (body.auth_code === '' || body.code_verifier === '') {
    throw badRequest('validation_failed', 'invalid request: both auth code and code verifier should be non-empty');
  }
  const flow = await findFlowByAuthCode(authDb(config), body.auth_code);
  if (!flow || !flow.user_id) throw flowNotFound();
  if (isFlowExpired(flow, config.flowStateExpiry)) {
    throw unprocessable('flow_state_expired', 'invalid flow state, flow state has expired');
  }
  const user = await findUserById(authDb(config), flow.user_id);
  if (!user) throw flowNotFound();
  verifyCodeChallenge(flow, body.code_verifier);
  const token = await transaction(config, async (tx) => {
    // The flow is used up: a second exchange of the same code finds nothing.
    const deleted = await tx`delete from auth.flow_state where id = ${flow.id} returning id`;
    if (deleted.length === 0) throw flowNotFound();
    await audit(tx, user, 'login', { provider_type: flow.provider_type });
    return await issueSession(tx, ctx, user.id, flow.authentication_method as AuthMethod);
  });
  return json(token);
}

export async function handleToken(ctx: Ctx): Promise<Response> {
  const grantType = ctx.url.searchParams.get('grant_type') ?? '';
  const grants: Record<string, (ctx: Ctx) => Promise<Response>> = {
    password: passwordGrant,
    refresh_token: refreshGrant,
    pkce: pkceGrant,
  };
  const grant = grants[grantType];
  if (!grant) {
    if (grantType === 'id_token' || grantType === 'web3') {
      // Sign-in with a provider's ID token or a wallet needs providers the local stack does not have.
      throw badRequest('provider_disabled', `grant_type=${grantType} needs supabase start or a hosted project`);
    }
    throw badRequest('invalid_credentials', 'unsupported_grant_type');
  }
  limitAddress('token', ctx.ip, ctx.config.rateLimit.tokenRefresh);
  return await grant(ctx);
}
