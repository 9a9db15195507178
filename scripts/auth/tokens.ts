// Access tokens with GoTrue's claims, signed HS256 with the project's JWT secret (the legacy
// shared secret a local stack has), and the bearer-token checks GoTrue's middleware makes.
import { errors as joseErrors, jwtVerify, SignJWT, type JWTPayload } from 'jose';
import type { AuthConfig } from './config.ts';
import { AuthError, forbidden } from './errors.ts';
import type { UserRow } from './users.ts';

/** One entry of the `amr` claim: how and when the session was authenticated. */
export interface AmrEntry {
  method: string;
  timestamp: number;
}

export interface SessionClaims {
  id: string;
  aal: string;
  amr: AmrEntry[];
}

/** The claims of a token this server issued (or the anon/service keys: role only). */
export interface AccessClaims extends JWTPayload {
  role?: string;
  email?: string;
  phone?: string;
  session_id?: string;
  is_anonymous?: boolean;
  app_metadata?: Record<string, unknown>;
  user_metadata?: Record<string, unknown>;
}

function key(config: AuthConfig): Uint8Array {
  return new TextEncoder().encode(config.jwtSecret);
}

/** Signs an access token for `user` in `session`; `expiresAt` is in seconds since the epoch. */
export async function signAccessToken(
  config: AuthConfig,
  user: UserRow,
  session: SessionClaims,
): Promise<{ token: string; expiresAt: number }> {
  const issuedAt = Math.floor(Date.now() / 1000);
  const expiresAt = issuedAt + Math.floor(config.jwtExpiry);
  // The claim order and shapes of GoTrue's AccessTokenClaims: aud is a single string, amr a list
  // of {method, timestamp}, email and phone "" when the user has none.
  const token = await new SignJWT({
    iss: config.jwtIssuer,
    sub: user.id,
    aud: user.aud ?? 'authenticated',
    exp: expiresAt,
    iat: issuedAt,
    email: user.email ?? '',
    phone: user.phone ?? '',
    app_metadata: user.raw_app_meta_data ?? {},
    user_metadata: user.raw_user_meta_data ?? {},
    role: user.role ?? 'authenticated',
    aal: session.aal,
    amr: session.amr,
    session_id: session.id,
    is_anonymous: user.is_anonymous,
  })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .sign(key(config));
  return { token, expiresAt };
}

/** The bearer token of `Authorization`, or 401 no_authorization as GoTrue answers. */
export function bearerToken(req: Request): string {
  const match = /^bearer\s+(\S+)$/i.exec(req.headers.get('authorization') ?? '');
  if (!match) throw new AuthError(401, 'no_authorization', 'This endpoint requires a valid Bearer token');
  return match[1];
}

/** Verifies a bearer token's signature and expiry: 403 bad_jwt otherwise, with GoTrue's wording. */
export async function verifyAccessToken(config: AuthConfig, token: string): Promise<AccessClaims> {
  try {
    const { payload } = await jwtVerify(token, key(config), { algorithms: ['HS256'] });
    return payload as AccessClaims;
  } catch (err) {
    const reason = err instanceof joseErrors.JWTExpired ? 'token has invalid claims: token is expired' : (err as Error).message;
    throw forbidden('bad_jwt', `invalid JWT: unable to parse or verify signature, ${reason}`);
  }
}
