// One error shape for every function: {"error": {"code", "message", "details"?}}.
// Pure module (no Deno APIs), so node tests can import it too.

export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

/** The fields postgres.js puts on a server error (PostgresError); duck-typed to stay import-free. */
interface PgError {
  name: 'PostgresError';
  code: string; // SQLSTATE
  message: string;
  detail?: string;
}

function isPgError(err: unknown): err is PgError {
  return err instanceof Error && err.name === 'PostgresError' && typeof (err as PgError).code === 'string';
}

// Our SQL raises `raise exception using errcode = ..., message = 'some_code'`: a snake_case message
// is a stable machine code. Postgres' own messages ("permission denied for table x") never match.
const STABLE_CODE = /^[a-z][a-z0-9_]*$/;

/**
 * Status for a stable code raised by our SQL. Deliberately small:
 *   not_authorized, forbidden           -> 403
 *   not_found, *_not_found              -> 404
 *   already_exists, *_already_exists, conflict -> 409
 *   anything else (a rule the input broke, e.g. insufficient_credits) -> 400
 */
function statusForCode(code: string): number {
  if (code === 'not_authorized' || code === 'forbidden') return 403;
  if (code === 'not_found' || code.endsWith('_not_found')) return 404;
  if (code === 'conflict' || code === 'already_exists' || code.endsWith('_already_exists')) return 409;
  return 400;
}

/**
 * Maps any thrown value to an HttpError. Postgres errors:
 *   - a stable code in the message: that code, status from statusForCode (42501 always 403), and the
 *     SQL's `detail` (if any) as the human message;
 *   - 42501 insufficient_privilege (grants, RLS `with check`): 403 insufficient_privilege;
 *   - 23505 unique_violation: 409 conflict; other class 22/23 (bad data, constraint): 400 invalid_request;
 *   - everything else is a bug: 500 internal_error. Postgres' own text is not echoed (it names tables).
 */
export function toHttpError(err: unknown): HttpError {
  if (err instanceof HttpError) return err;
  if (isPgError(err)) {
    if (STABLE_CODE.test(err.message)) {
      // PTxyz is PostgREST's convention for "answer with HTTP xyz"; honour it here too.
      const status = err.code === '42501' ? 403 : /^PT\d{3}$/.test(err.code) ? Number(err.code.slice(2)) : statusForCode(err.message);
      return new HttpError(status, err.message, err.detail || err.message.replaceAll('_', ' '));
    }
    if (err.code === '42501') return new HttpError(403, 'insufficient_privilege', 'Permission denied');
    if (err.code === '23505') return new HttpError(409, 'conflict', 'The record already exists');
    if (err.code.startsWith('22') || err.code.startsWith('23')) {
      return new HttpError(400, 'invalid_request', 'The request was rejected by a data constraint');
    }
  }
  return new HttpError(500, 'internal_error', 'Internal error');
}

export function errorBody(err: HttpError): { error: { code: string; message: string; details?: unknown } } {
  return {
    error: {
      code: err.code,
      message: err.message,
      ...(err.details === undefined ? {} : { details: err.details }),
    },
  };
}

/** A JSON error response; never carries a stack trace. */
export function errorResponse(err: unknown, headers?: HeadersInit): Response {
  const httpError = toHttpError(err);
  const h = new Headers(headers);
  h.set('content-type', 'application/json');
  return new Response(JSON.stringify(errorBody(httpError)), { status: httpError.status, headers: h });
}
