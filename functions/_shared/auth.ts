// Verifies the caller's access token. Functions verify it themselves even when the gateway has
// (verify_jwt = true): hosted projects with asymmetric signing keys are advised to turn the
// gateway check off, and the claims are needed anyway to run queries as the caller.
import { createRemoteJWKSet, errors as joseErrors, jwtVerify, type JWTPayload } from 'jose';
import { env } from './env.ts';
import { HttpError } from './errors.ts';

export interface Claims extends JWTPayload {
  sub?: string;
  role: string;
  email?: string;
  app_metadata?: Record<string, unknown>;
  user_metadata?: Record<string, unknown>;
  aal?: string;
  session_id?: string;
  is_anonymous?: boolean;
}

/** A signed-in user's claims: `sub` is the auth.users id. */
export interface UserClaims extends Claims {
  sub: string;
  role: 'authenticated';
}

// jose codes that mean "could not get the keys", not "bad token" (the generic one is a non-200 JWKS).
const JWKS_FAILURES = new Set(['ERR_JOSE_GENERIC', 'ERR_JWKS_TIMEOUT', 'ERR_JWKS_INVALID']);

let jwks: ReturnType<typeof createRemoteJWKSet> | undefined;

/** The bearer token of the Authorization header; 401 missing_authorization without one. */
export function bearerToken(req: Request): string {
  const header = req.headers.get('authorization') ?? '';
  const match = /^Bearer\s+(\S+)$/i.exec(header);
  if (!match) throw new HttpError(401, 'missing_authorization', 'Missing or malformed Authorization header');
  return match[1];
}

/**
 * Verifies a JWT: HS256 with JWT_SECRET when it is set (the local stack, legacy hosted secret),
 * otherwise against the project's JWKS (hosted projects with asymmetric signing keys).
 */
export async function verifyJwt(token: string): Promise<Claims> {
  const { jwtSecret, supabaseUrl } = env();
  try {
    const { payload } = jwtSecret
      ? await jwtVerify(token, new TextEncoder().encode(jwtSecret), { algorithms: ['HS256'] })
      : await jwtVerify(
        token,
        (jwks ??= createRemoteJWKSet(new URL(`${supabaseUrl}/auth/v1/.well-known/jwks.json`))),
        { algorithms: ['ES256', 'RS256'] },
      );
    if (typeof payload.role !== 'string') throw new HttpError(401, 'invalid_jwt', 'Token has no role claim');
    return payload as Claims;
  } catch (err) {
    if (err instanceof HttpError) throw err;
    // A bad token (signature, expiry, format, unknown key id) is the caller's problem: 401.
    // Failing to fetch or read the JWKS is ours: it surfaces as a 500.
    if (err instanceof joseErrors.JOSEError && !JWKS_FAILURES.has(err.code)) {
      throw new HttpError(401, 'invalid_jwt', 'Invalid or expired token');
    }
    throw err;
  }
}

/** Claims of any valid token (anon key, service_role key or a user's token). */
export async function authenticate(req: Request): Promise<Claims> {
  return await verifyJwt(bearerToken(req));
}

/** Claims of a signed-in user; the anon or service_role key is refused with 401 user_required. */
export async function requireUser(req: Request): Promise<UserClaims> {
  const claims = await authenticate(req);
  if (claims.role !== 'authenticated' || typeof claims.sub !== 'string') {
    throw new HttpError(401, 'user_required', 'A signed-in user is required');
  }
  return claims as UserClaims;
}

/** The service role's claims (another backend, a scheduled job); anyone else is refused with 403. */
export async function requireServiceRole(req: Request): Promise<Claims> {
  const claims = await authenticate(req);
  if (claims.role !== 'service_role') {
    throw new HttpError(403, 'not_authorized', 'Only the service role can call this function');
  }
  return claims;
}
