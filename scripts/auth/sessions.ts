// Sessions and refresh tokens as GoTrue keeps them by default (refresh token algorithm 0): a row
// of auth.sessions per sign-in, how it was authenticated in auth.mfa_amr_claims, and a chain of
// 12-character refresh tokens in auth.refresh_tokens. Refreshing revokes the token used and issues
// its child (parent = the old token). A revoked token presented again is answered with the
// session's current token if it is the current token's parent (the client lost the last answer),
// is accepted within refresh_token_reuse_interval of its revocation (concurrent tabs), and past
// that revokes every token of the session: refresh_token_already_used.
import { audit } from './audit.ts';
import type { Ctx } from './context.ts';
import { type Db, transaction, type Tx } from './db.ts';
import { badRequest, conflict } from './errors.ts';
import { type AmrEntry, type SessionClaims, signAccessToken } from './tokens.ts';
import { findUserById, isBanned, loadUserJson, NIL_UUID, type UserRow } from './users.ts';

/** How a session was authenticated: the `amr` methods GoTrue records. */
export type AuthMethod = 'password' | 'otp' | 'magiclink' | 'recovery' | 'invite' | 'email/signup' | 'email_change' | 'token_refresh';

export interface SessionRow {
  id: string;
  user_id: string;
  created_at: Date;
  not_after: Date | null;
  aal: string | null;
}

export interface TokenResponse {
  access_token: string;
  token_type: 'bearer';
  expires_in: number;
  expires_at: number;
  refresh_token: string;
  user: Record<string, unknown>;
  weak_password?: { message: string; reasons: string[] };
}

const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567';

/** The client's address for sessions.ip (an inet), or null when the gateway did not get one. */
function inetOrNull(ip: string): string | null {
  return /^[0-9.]+$|^[0-9a-f:]+$/i.test(ip) && ip.length <= 45 ? ip : null;
}

/** GoTrue's SecureAlphanumeric(12): lower-case base32 of random bytes. */
function newRefreshToken(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return Array.from(bytes, (b) => BASE32[b & 31]).join('');
}

export async function findSession(db: Db, id: string): Promise<SessionRow | undefined> {
  const [session] = await db<SessionRow[]>`select id, user_id, created_at, not_after, aal::text as aal from auth.sessions where id = ${id}`;
  return session;
}

/** The session's aal and its amr list, most recent first (GoTrue's CalculateAALAndAMR). */
async function sessionClaims(db: Db, session: SessionRow): Promise<SessionClaims> {
  const claims = await db<{ method: string; at: Date }[]>`
    select authentication_method as method, updated_at as at from auth.mfa_amr_claims
    where session_id = ${session.id} order by updated_at desc`;
  const amr: AmrEntry[] = claims.map((c) => ({ method: c.method, timestamp: Math.floor(new Date(c.at).getTime() / 1000) }));
  return { id: session.id, aal: session.aal ?? 'aal1', amr };
}

async function tokenResponse(tx: Tx, ctx: Ctx, user: UserRow, session: SessionRow, refreshToken: string): Promise<TokenResponse> {
  const { token, expiresAt } = await signAccessToken(ctx.config, user, await sessionClaims(tx, session));
  return {
    access_token: token,
    token_type: 'bearer',
    expires_in: expiresAt - Math.floor(Date.now() / 1000),
    expires_at: expiresAt,
    refresh_token: refreshToken,
    user: await loadUserJson(tx, user.id),
  };
}

/**
 * A new session for `userId` with its first refresh token and an access token (GoTrue's
 * IssueRefreshToken); last_sign_in_at is now. Runs in the caller's transaction.
 */
export async function issueSession(tx: Tx, ctx: Ctx, userId: string, method: AuthMethod): Promise<TokenResponse> {
  const [session] = await tx<SessionRow[]>`
    insert into auth.sessions (id, user_id, created_at, updated_at, aal, user_agent, ip)
    values (gen_random_uuid(), ${userId}, now(), now(), 'aal1', ${ctx.userAgent || null}, ${inetOrNull(ctx.ip)}::inet)
    returning id, user_id, created_at, not_after, aal::text as aal`;
  const token = newRefreshToken();
  await tx`
    insert into auth.refresh_tokens (instance_id, token, user_id, revoked, created_at, updated_at, parent, session_id)
    values (${NIL_UUID}, ${token}, ${userId}, false, now(), now(), null, ${session.id})`;
  await tx`update auth.users set last_sign_in_at = now(), updated_at = now() where id = ${userId}`;
  await tx`
    insert into auth.mfa_amr_claims (id, session_id, created_at, updated_at, authentication_method)
    values (gen_random_uuid(), ${session.id}, now(), now(), ${method})
    on conflict on constraint mfa_amr_claims_session_id_authentication_method_pkey do update set updated_at = now()`;
  const user = await findUserById(tx, userId);
  return await tokenResponse(tx, ctx, user!, session, token);
}

interface RefreshTokenRow {
  id: string;
  token: string;
  user_id: string;
  revoked: boolean;
  updated_at: Date;
  parent: string | null;
  session_id: string | null;
}

/** GoTrue's RefreshTokenGrantParams.Validate for the tokens this server issues. */
export function validateRefreshToken(token: string): void {
  if (token.length < 12 || (token.length === 12 && !/^[a-z0-9]{12}$/.test(token)) || token.length > 12) {
    // Longer tokens are GoTrue's v2 (HMAC) format, which is never issued here.
    throw badRequest('validation_failed', 'Refresh token is not valid');
  }
}

const RETRY_FOR_MS = 5000;

type RefreshOutcome = { ok: TokenResponse } | { retry: true } | { error: Error };

/** The refresh_token grant (GoTrue's RefreshTokenGrant), with its retry loop on locked rows. */
export async function refreshTokenGrant(ctx: Ctx, refreshToken: string): Promise<TokenResponse> {
  const started = Date.now();
  while (Date.now() - started < RETRY_FOR_MS) {
    const outcome = await transaction(ctx.config, (tx) => refreshOnce(tx, ctx, refreshToken));
    if ('ok' in outcome) return outcome.ok;
    if ('error' in outcome) throw outcome.error;
    await new Promise((r) => setTimeout(r, 10 + Math.random() * 20));
  }
  throw conflict('Too many concurrent token refresh requests on the same session or refresh token');
}

/**
 * One attempt. Errors that must still commit what was written (revoking a reused token's family)
 * come back as `{error}` so the transaction commits first; the rest throw and roll back.
 */
async function refreshOnce(tx: Tx, ctx: Ctx, presented: string): Promise<RefreshOutcome> {
  const [peek] = await tx<RefreshTokenRow[]>`select * from auth.refresh_tokens where token = ${presented}`;
  if (!peek) throw badRequest('refresh_token_not_found', 'Invalid Refresh Token: Refresh Token Not Found');
  const user = await findUserById(tx, peek.user_id);
  if (!user) throw badRequest('refresh_token_not_found', 'Invalid Refresh Token: Refresh Token Not Found');
  if (isBanned(user)) throw badRequest('user_banned', 'Invalid Refresh Token: User Banned');
  const session = peek.session_id ? await findSession(tx, peek.session_id) : undefined;
  if (!session) throw badRequest('session_not_found', 'Invalid Refresh Token: No Valid Session Found');
  if (session.not_after && new Date(session.not_after).getTime() < Date.now()) {
    throw badRequest('session_expired', 'Invalid Refresh Token: Session Expired');
  }

  // Serialize refreshes of one session: rows locked by another refresh are skipped and retried.
  const [token] = await tx<RefreshTokenRow[]>`select * from auth.refresh_tokens where token = ${presented} for update skip locked`;
  const [locked] = await tx`select id from auth.sessions where id = ${session.id} for update skip locked`;
  if (!token || !locked) return { retry: true };

  let issued = '';
  if (token.revoked) {
    const [active] = await tx<RefreshTokenRow[]>`
      select * from auth.refresh_tokens where session_id = ${session.id} and revoked = false order by id desc limit 1`;
    if (active && active.parent === token.token) {
      // The client never stored the answer to its last refresh: give it that answer again.
      issued = active.token;
    } else {
      const reuseUntil = new Date(token.updated_at).getTime() + ctx.config.refreshTokenReuseInterval * 1000;
      if (Date.now() > reuseUntil) {
        if (ctx.config.refreshTokenRotation) {
          await tx`update auth.refresh_tokens set revoked = true, updated_at = now() where session_id = ${session.id} and revoked = false`;
        }
        return { error: badRequest('refresh_token_already_used', 'Invalid Refresh Token: Already Used') };
      }
    }
  }
  await audit(tx, user, 'token_refreshed');
  if (!issued) {
    await audit(tx, user, 'token_revoked');
    await tx`update auth.refresh_tokens set revoked = true, updated_at = now() where id = ${token.id}`;
    issued = newRefreshToken();
    await tx`
      insert into auth.refresh_tokens (instance_id, token, user_id, revoked, created_at, updated_at, parent, session_id)
      values (${NIL_UUID}, ${issued}, ${user.id}, false, now(), now(), ${token.token}, ${session.id})`;
  }
  await tx`
    update auth.sessions set refreshed_at = timezone('utc', now()), updated_at = now(),
      user_agent = ${ctx.userAgent || null}, ip = ${inetOrNull(ctx.ip)}::inet
    where id = ${session.id}`;
  return { ok: await tokenResponse(tx, ctx, user, session, issued) };
}

export type LogoutScope = 'global' | 'local' | 'others';

/** GoTrue's Logout: the session, the user's other sessions, or all of them (tokens go with them). */
export async function logout(tx: Tx, userId: string, sessionId: string | undefined, scope: LogoutScope): Promise<void> {
  if (sessionId && scope === 'local') await tx`delete from auth.sessions where id = ${sessionId}`;
  else if (sessionId && scope === 'others') await tx`delete from auth.sessions where id <> ${sessionId} and user_id = ${userId}`;
  else await tx`delete from auth.sessions where user_id = ${userId}`;
}
