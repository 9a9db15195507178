// Who is calling (Kong's key-auth, then Storage's JWT check), and the signed-URL tokens.
//
// Key-auth as Kong does it: an `apikey` header (or query parameter) naming one of the project's
// keys, except on the routes that work from a bare link (public objects, signed URLs).
// The JWT as Storage's jwt plugin checks it (src/http/plugins/jwt.ts): the bearer token verified
// with the JWT secret; on routes that allow it (download, info, head) a missing or bad token is
// the anonymous caller instead of an error. Without an Authorization header the apikey is the
// bearer, as the gateway does for /rest/v1.
//
// Signed URLs (src/storage/object.ts, src/internal/auth/jwt.ts): HS256 JWTs signed with the same
// secret, { url: '<bucket>/<name>', scope: 'download', iat, exp } for downloads and
// { owner, url, upsert, scope: 'upload', iat, exp } for uploads; tokens without `scope` (issued
// before Storage added it) count as downloads unless they carry `upsert`.
import { jwtVerify, SignJWT } from 'jose';
import { config } from './config.ts';
import { ERRORS } from './errors.ts';

export type DbRole = 'anon' | 'authenticated' | 'service_role';

export interface Caller {
  role: DbRole;
  /** What request.jwt.claims holds for the caller's queries. */
  claims: Record<string, unknown>;
  /** The JWT's sub: objects' owner / owner_id. */
  owner?: string;
  /** Whether a valid JWT was presented (the anon key counts: it is a valid JWT). */
  authenticated: boolean;
}

const ROLES = new Set<string>(['anon', 'authenticated', 'service_role']);

/** Kong's key-auth; null when the key is good, otherwise Kong's answer. */
export function checkApiKey(req: Request, url: URL): { status: number; message: string } | null {
  const apikey = req.headers.get('apikey') ?? url.searchParams.get('apikey');
  if (!apikey) return { status: 401, message: 'No API key found in request' };
  if (!config().apiKeys.has(apikey)) return { status: 401, message: 'Invalid authentication credentials' };
  return null;
}

function bearer(req: Request, url: URL): string {
  const authorization = req.headers.get('authorization');
  if (authorization !== null) return authorization.replace(/^Bearer\s+/i, '');
  return req.headers.get('apikey') ?? url.searchParams.get('apikey') ?? '';
}

/** The anonymous caller of a route that allows a missing or invalid JWT. */
export const ANONYMOUS: Caller = { role: 'anon', claims: { role: 'anon' }, authenticated: false };

/** The caller behind Storage's superuser connection: the service role key's claims. */
export function serviceCaller(): Caller {
  return { role: 'service_role', claims: config().serviceClaims, authenticated: true };
}

/**
 * The caller from the request's JWT. With `optional`, a missing or invalid token is the
 * anonymous caller (Storage's allowInvalidJwt); otherwise it is refused with AccessDenied and
 * jose's reason, as Storage answers.
 */
export async function authenticate(req: Request, url: URL, { optional = false } = {}): Promise<Caller> {
  const token = bearer(req, url);
  if (!token && optional) return ANONYMOUS;
  let claims: Record<string, unknown>;
  try {
    ({ payload: claims } = await jwtVerify(token, config().jwtKey, { algorithms: ['HS256'] }));
  } catch (err) {
    if (optional) return ANONYMOUS;
    throw ERRORS.AccessDenied((err as Error).message);
  }
  const role = typeof claims.role === 'string' ? claims.role : 'anon';
  // A token signed with the secret but claiming another role (postgres, say) never becomes
  // that role's session.
  if (!ROLES.has(role)) throw ERRORS.AccessDenied('Access denied: Invalid role');
  return {
    role: role as DbRole,
    claims,
    owner: typeof claims.sub === 'string' && claims.sub !== '' ? claims.sub : undefined,
    authenticated: true,
  };
}

export const SCOPE_DOWNLOAD = 'download';
export const SCOPE_UPLOAD = 'upload';

/** Signs a signed-URL token valid for `expiresIn` seconds (Storage's signJWT). */
export function signUrlToken(payload: Record<string, unknown>, expiresIn: number): Promise<string> {
  return new SignJWT(payload)
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuedAt()
    .setExpirationTime(`${Math.floor(expiresIn)}s`)
    .sign(config().jwtKey);
}

export interface SignedToken {
  url: string;
  exp: number;
  scope?: string;
  owner?: string;
  upsert?: boolean;
}

/**
 * Verifies a signed-URL token for `<bucket>/<name>` and `scope` (Storage's
 * verifyObjectSignature): a bad or expired JWT is InvalidJWT with jose's reason, a token for
 * another object or action InvalidSignature.
 */
export async function verifyUrlToken(token: string, bucket: string, name: string, scope: string): Promise<SignedToken> {
  let payload: Record<string, unknown>;
  try {
    ({ payload } = await jwtVerify(token, config().jwtKey, { algorithms: ['HS256'] }));
  } catch (err) {
    throw ERRORS.InvalidJWT((err as Error).message);
  }
  const validScope = scope === SCOPE_UPLOAD
    ? payload.scope === SCOPE_UPLOAD || (payload.scope === undefined && 'upsert' in payload)
    : payload.scope === SCOPE_DOWNLOAD || (payload.scope === undefined && !('upsert' in payload));
  if (!validScope) throw ERRORS.InvalidSignature(`Token is not scoped for ${scope}`);
  if (payload.url !== `${bucket}/${name}`) throw ERRORS.InvalidSignature();
  if (typeof payload.exp !== 'number' || payload.exp * 1000 < Date.now()) throw ERRORS.ExpiredSignature();
  return payload as unknown as SignedToken;
}
