// GoTrue's errors: an HTTP status, a stable error code (the names of supabase/auth's
// internal/api/apierrors, which supabase-js's AuthApiError carries as `code`) and a message.
// The body depends on the API version the client asked for in X-Supabase-Api-Version:
//   2024-01-01 and later (supabase-js sends it):  {"code": "<error_code>", "message": "..."}
//   none (curl, old clients):                     {"code": <status>, "error_code": "...", "msg": "..."}
// The version header is echoed back, and x-sb-error-code names the code, as GoTrue does.

export const API_VERSION_HEADER = 'X-Supabase-Api-Version';
const API_VERSION_2024 = '2024-01-01';

export class AuthError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    /** Extra fields of the body (weak_password's reasons). */
    readonly extra: Record<string, unknown> = {},
    /** What went wrong underneath, for the server's log only (never the client's answer). */
    readonly internal?: string,
  ) {
    super(message);
    this.name = 'AuthError';
  }
}

/** The OAuth2-shaped error GoTrue answers some token requests with: {"error", "error_description"}. */
export class OAuthError extends Error {
  constructor(readonly error: string, readonly description: string) {
    super(`${error}: ${description}`);
    this.name = 'OAuthError';
  }
}

export const badRequest = (code: string, message: string) => new AuthError(400, code, message);
export const unauthorized = (code: string, message: string) => new AuthError(401, code, message);
export const forbidden = (code: string, message: string) => new AuthError(403, code, message);
export const notFound = (code: string, message: string) => new AuthError(404, code, message);
export const unprocessable = (code: string, message: string) => new AuthError(422, code, message);
export const conflict = (message: string) => new AuthError(409, 'conflict', message);
export const tooManyRequests = (code: string, message: string) => new AuthError(429, code, message);
export const internalError = (message: string) => new AuthError(500, 'unexpected_failure', message);

/** The weak_password error: 422 with the reasons (length, characters, pwned). */
export function weakPassword(message: string, reasons: string[]): AuthError {
  return new AuthError(422, 'weak_password', message, { weak_password: { reasons } });
}

/** True when the client asked for API version 2024-01-01 or later (a valid YYYY-MM-DD). */
export function wantsApiVersion2024(req: Request): boolean {
  const v = req.headers.get(API_VERSION_HEADER);
  if (!v || !/^\d{4}-\d{2}-\d{2}$/.test(v) || Number.isNaN(Date.parse(`${v}T00:00:00Z`))) return false;
  return v >= API_VERSION_2024;
}

function json(body: unknown, status: number, headers: Headers): Response {
  headers.set('content-type', 'application/json');
  return new Response(JSON.stringify(body), { status, headers });
}

/** The response GoTrue sends for `err` (anything not an AuthError/OAuthError is a 500). */
export function errorResponse(req: Request, err: unknown, requestId: string): Response {
  const headers = new Headers();
  const v2024 = wantsApiVersion2024(req);
  if (v2024) headers.set(API_VERSION_HEADER, API_VERSION_2024);

  if (err instanceof OAuthError) {
    return json({ error: err.error, error_description: err.description }, 400, headers);
  }
  const e = err instanceof AuthError
    ? err
    : new AuthError(500, 'unexpected_failure', 'Unexpected failure, please check server logs for more information');
  const code = e.code || (e.status === 500 ? 'unexpected_failure' : 'unknown');
  headers.set('x-sb-error-code', code);
  if (v2024) return json({ code, message: e.message, ...e.extra }, e.status, headers);
  return json({
    code: e.status,
    error_code: code,
    msg: e.message,
    ...(e.status >= 500 ? { error_id: requestId } : {}),
    ...e.extra,
  }, e.status, headers);
}
