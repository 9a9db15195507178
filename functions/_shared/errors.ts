// One error shape for every function: {"error": {"code", "message", "details"?}}, with the status
// the error catalogue gives each code (functions/_shared/error-codes.ts, generated from it).
// Pure module (no Deno APIs), so node tests can import it too.
import { ERROR_CATALOGUE, type ServerErrorCode } from './error-codes.ts';

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

/**
 * Maps any thrown value to an HttpError. Postgres errors:
 *   - a code of the error catalogue as the message (what private.raise raises): that code, the
 *     catalogue's HTTP status (the one PostgREST answers with), and the SQL's `detail` as the
 *     human message;
 *   - 42501 insufficient_privilege (grants, RLS `with check`): 403 insufficient_privilege;
 *   - 23505 unique_violation: 409 conflict; other class 22/23 (bad data, constraint): 400 invalid_request;
 *   - everything else is a bug: 500 internal_error. Postgres' own text is not echoed (it names tables).
 */
export function toHttpError(err: unknown): HttpError {
  if (err instanceof HttpError) return err;
  if (isPgError(err)) {
    if (Object.hasOwn(ERROR_CATALOGUE, err.message)) {
      const entry = ERROR_CATALOGUE[err.message as ServerErrorCode];
      return new HttpError(entry.status, err.message, err.detail || entry.meaning);
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
