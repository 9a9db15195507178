// Who is calling, as GoTrue's middleware decides: requireAuthentication (a user's access token
// whose user and session still exist) and requireAdminCredentials (a token with an admin role:
// the service_role key).
import type { Ctx } from './context.ts';
import { authDb } from './db.ts';
import { forbidden } from './errors.ts';
import { findSession, type SessionRow } from './sessions.ts';
import { type AccessClaims, bearerToken, verifyAccessToken } from './tokens.ts';
import { findUserById, isBanned, type UserRow } from './users.ts';

export interface Caller {
  claims: AccessClaims;
  user: UserRow;
  session?: SessionRow;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const NIL_SESSION = '00000000-0000-0000-0000-000000000000';

/** The user and session of the claims (GoTrue's maybeLoadUserOrSession). */
async function loadCaller(ctx: Ctx, claims: AccessClaims): Promise<Caller> {
  const db = authDb(ctx.config);
  if (!claims.sub) throw forbidden('bad_jwt', 'invalid claim: missing sub claim');
  if (!UUID.test(claims.sub)) throw forbidden('bad_jwt', 'invalid claim: sub claim must be a UUID');
  const user = await findUserById(db, claims.sub);
  if (!user) throw forbidden('user_not_found', 'User from sub claim in JWT does not exist');
  let session: SessionRow | undefined;
  if (claims.session_id && claims.session_id !== NIL_SESSION) {
    if (!UUID.test(claims.session_id)) throw forbidden('bad_jwt', 'invalid claim: session_id claim must be a UUID');
    session = await findSession(db, claims.session_id);
    if (!session) throw forbidden('session_not_found', 'Session from session_id claim in JWT does not exist');
  }
  return { claims, user, session };
}

/** A signed-in user's request: 401 without a bearer token, 403 for a bad, orphaned or banned one. */
export async function requireUser(ctx: Ctx): Promise<Caller> {
  const claims = await verifyAccessToken(ctx.config, bearerToken(ctx.req));
  const caller = await loadCaller(ctx, claims);
  if (isBanned(caller.user)) throw forbidden('user_banned', 'User is banned');
  return caller;
}

/** An admin request: a valid token whose role is an admin role (service_role), else 403 not_admin. */
export async function requireAdmin(ctx: Ctx): Promise<AccessClaims> {
  const claims = await verifyAccessToken(ctx.config, bearerToken(ctx.req));
  // A user's token must still be a live session before its role is even looked at.
  if (claims.session_id && claims.session_id !== NIL_SESSION) await loadCaller(ctx, claims);
  if (!ctx.config.adminRoles.includes(String(claims.role ?? ''))) throw forbidden('not_admin', 'User not allowed');
  return claims;
}
