// Every SDK method throws BackendError on failure, with a stable machine `code` to branch on.
//
// The database raises `raise exception using errcode = <SQLSTATE>, message = '<code>'`, which
// PostgREST answers as {"code": SQLSTATE, "message": "<code>", "details": "<human text>"}. When the
// message is one of our codes it becomes `code`; otherwise (Postgres' own errors, PostgREST's,
// the gateway's, the network) the SQLSTATE and HTTP status are mapped to the nearest code.
// The codes, their SQLSTATEs and statuses are the server's error catalogue: ./error-codes.ts.

import { ERROR_CATALOGUE, type ServerErrorCode } from './error-codes.ts';

/**
 * Generic codes for errors the server did not name: mapped from SQLSTATE / HTTP status. The
 * catalogue's `not_authenticated`, `not_authorized` and `rate_limited` double as generic codes.
 */
export const GENERIC_ERROR_CODES = [
  'not_found', // PT404, P0002, PGRST116
  'conflict', // PT409, 23505 on a constraint we have no name for
  'invalid_input', // 22xxx, 23502, 23503, 23514, PGRST1xx: the request itself is malformed
  'network_error', // no HTTP response at all (server down, DNS, aborted)
  'unknown',
] as const;

export type BackendErrorCode = ServerErrorCode | (typeof GENERIC_ERROR_CODES)[number];

/** The fields of a supabase-js PostgrestError (or any `{message, code?, details?, hint?}` body). */
export interface PostgrestErrorLike {
  message: string;
  code?: string | null;
  details?: string | null;
  hint?: string | null;
}

export interface BackendErrorInit {
  /** HTTP status of the response; 0 when there was none. */
  status?: number;
  details?: string | null;
  hint?: string | null;
  /** Postgres SQLSTATE or PostgREST code (`42501`, `PGRST116`), when there was one. */
  sqlstate?: string | null;
  cause?: unknown;
}

export class BackendError extends Error {
  override readonly name = 'BackendError';
  readonly code: BackendErrorCode;
  readonly status: number;
  readonly details: string | null;
  readonly hint: string | null;
  readonly sqlstate: string | null;

  constructor(code: BackendErrorCode, message: string, init: BackendErrorInit = {}) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.code = code;
    this.status = init.status ?? 0;
    this.details = init.details ?? null;
    this.hint = init.hint ?? null;
    this.sqlstate = init.sqlstate ?? null;
  }

  /** Builds the error from what supabase-js returned: `{ error, status }` of a response. */
  static fromPostgrest(error: PostgrestErrorLike, status: number): BackendError {
    const code = errorCodeOf(error, status);
    // Our errors carry the code as message and the explanation in details; Postgres' and
    // PostgREST's carry the explanation in message.
    const text = isServerErrorCode(error.message) ? (error.details ?? error.message) : error.message;
    return new BackendError(code, text || code, {
      status,
      details: error.details ?? null,
      hint: error.hint ?? null,
      sqlstate: error.code || null,
      cause: error,
    });
  }

  /**
   * Builds the error from an edge function's answer: its status and JSON body
   * `{"error": {"code", "message", "details"?}}`. A code of the catalogue is kept; any other (or
   * no body, e.g. the gateway's own answers) maps to the generic code of the status.
   */
  static fromFunction(status: number, body: unknown): BackendError {
    const error = (body as { error?: { code?: unknown; message?: unknown; details?: unknown } } | null)?.error;
    const serverCode = error?.code;
    const message = typeof error?.message === 'string' ? error.message
      : typeof (body as { message?: unknown } | null)?.message === 'string' ? (body as { message: string }).message
      : `The function answered ${status}`;
    const code: BackendErrorCode = isServerErrorCode(serverCode) ? serverCode : codeOfStatus(status);
    const details = error?.details === undefined ? null : typeof error.details === 'string' ? error.details : JSON.stringify(error.details);
    // The server's own code (e.g. invalid_request) stays readable as `hint` when it is not in the catalogue.
    return new BackendError(code, message, {
      status,
      details,
      hint: typeof serverCode === 'string' && serverCode !== code ? serverCode : null,
      cause: body,
    });
  }

  /** Wraps anything thrown while talking to the backend (e.g. an aborted fetch). */
  static fromUnknown(err: unknown): BackendError {
    if (err instanceof BackendError) return err;
    const message = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    return new BackendError('network_error', message, { cause: err });
  }
}

/** Narrows `err` to a BackendError, optionally with one of the given codes. */
export function isBackendError(err: unknown, ...codes: BackendErrorCode[]): err is BackendError {
  return err instanceof BackendError && (codes.length === 0 || codes.includes(err.code));
}

/** Whether `value` is a code of the server's error catalogue (`SERVER_ERROR_CODES`). */
export function isServerErrorCode(value: unknown): value is ServerErrorCode {
  return typeof value === 'string' && Object.hasOwn(ERROR_CATALOGUE, value);
}

// Constraint names of public tables whose violation has a precise code (direct table writes,
// e.g. renaming an organization, hit the constraint rather than an RPC's own check).
const CONSTRAINT_CODES: Record<string, ServerErrorCode> = {
  organizations_slug_key: 'slug_taken',
  organizations_slug_check: 'invalid_slug',
  organizations_name_check: 'invalid_name',
  organization_invitations_email_check: 'invalid_email',
};

function constraintCode(error: PostgrestErrorLike): ServerErrorCode | undefined {
  const text = `${error.message} ${error.details ?? ''}`;
  for (const [constraint, code] of Object.entries(CONSTRAINT_CODES)) {
    if (text.includes(`"${constraint}"`)) return code;
  }
  return undefined;
}

/**
 * The BackendErrorCode for a PostgREST error body and the HTTP status it came with: the catalogue
 * code when the message is one, otherwise the generic code of the SQLSTATE (the catalogue's class
 * SQLSTATEs included) or, failing that, of the HTTP status.
 */
export function errorCodeOf(error: PostgrestErrorLike, status: number): BackendErrorCode {
  if (isServerErrorCode(error.message)) return error.message;
  const sqlstate = error.code ?? '';
  // postgrest-js reports a failed fetch as status 0 with an empty code.
  if (status === 0 && sqlstate === '') return 'network_error';

  switch (sqlstate) {
    case 'PT401': // our SQL's not_authenticated class
    case '28000':
    case '28P01':
    case 'PGRST301': // JWT invalid or expired
    case 'PGRST302': // anonymous access disabled
    case 'PGRST303': // JWT claims invalid
      return 'not_authenticated';
    case '42501': // our SQL's not_authorized class, and Postgres' "insufficient privilege"
      // PostgREST answers "insufficient privilege" with 401 to anonymous callers, 403 otherwise.
      return status === 401 ? 'not_authenticated' : 'not_authorized';
    case 'PT404': // our SQL's not_found class (PostgREST answers with 404)
    case 'P0002':
    case 'PGRST116': // .single() on no rows
      return 'not_found';
    case 'PT409': // our SQL's conflict class (PostgREST answers with 409)
      return 'conflict';
    case '23505':
      return constraintCode(error) ?? 'conflict';
    case 'PT429': // our SQL's rate_limited class
      return 'rate_limited';
    case '23514':
      return constraintCode(error) ?? 'invalid_input';
    case '23502':
    case '23503':
      return 'invalid_input';
  }
  // 22023 is our SQL's invalid_input class.
  if (sqlstate.startsWith('22') || /^PGRST1\d\d$/.test(sqlstate)) return 'invalid_input';

  // No (known) code: the gateway or a proxy answered.
  if (status === 401) return 'not_authenticated';
  if (status === 403) return 'not_authorized';
  if (status === 429) return 'rate_limited';
  return 'unknown';
}

/**
 * The generic code of an edge function's HTTP status when its body names no code of the
 * catalogue (the function's own protocol errors, the gateway's answers).
 */
function codeOfStatus(status: number): BackendErrorCode {
  if (status === 0) return 'network_error';
  if (status === 400 || status === 405 || status === 413 || status === 415 || status === 422) return 'invalid_input';
  if (status === 401) return 'not_authenticated';
  if (status === 403) return 'not_authorized';
  if (status === 404) return 'not_found';
  if (status === 409) return 'conflict';
  if (status === 429) return 'rate_limited';
  return 'unknown';
}
