// Every SDK method throws BackendError on failure, with a stable machine `code` to branch on.
//
// The database raises `raise exception using errcode = <SQLSTATE>, message = '<code>'`, which
// PostgREST answers as {"code": SQLSTATE, "message": "<code>", "details": "<human text>"}. When the
// message is one of our codes it becomes `code`; otherwise (Postgres' own errors, PostgREST's,
// the gateway's, the network) the SQLSTATE and HTTP status are mapped to the nearest code.

/** Codes the SQL raises as the error message (supabase/migrations/*_tenancy.sql, *_credits.sql). */
export const SERVER_ERROR_CODES = [
  // tenancy
  'not_authenticated',
  'not_authorized',
  'invalid_name',
  'invalid_slug',
  'slug_taken',
  'invalid_role',
  'invalid_email',
  'invalid_expiry',
  'already_member',
  'invitation_not_found',
  'invitation_already_accepted',
  'invitation_expired',
  'invitation_email_mismatch',
  'member_not_found',
  'last_owner',
  'rate_limited',
  'unsettled_balance',
  'free_organization_limit',
  // credits (invalid_expiry above is shared with grant_credits)
  'invalid_organization',
  'invalid_quantity',
  'invalid_metadata',
  'invalid_idempotency_key',
  'unknown_action',
  'action_disabled',
  'organization_not_found',
  'idempotency_key_reused',
  'invalid_amounts',
  'pool_not_found',
  'invalid_ttl',
  'reservation_not_found',
  'reservation_not_active',
  'exceeds_reservation',
  'invalid_amount',
  'invalid_kind',
  'invalid_priority',
  'transaction_not_found',
  'refund_exceeds_consumed',
  'plan_not_found',
  'invalid_threshold',
  'invalid_items',
  'invalid_range',
  'overage_cap_exceeded',
  'invalid_reason',
] as const;

/** Generic codes for errors the server did not name: mapped from SQLSTATE / HTTP status. */
export const GENERIC_ERROR_CODES = [
  'not_found', // P0002, PT404, PGRST116, 404
  'conflict', // 23505 on a constraint we have no name for, PT409
  'invalid_input', // 22xxx, 23502, 23503, 23514, PGRST1xx: the request itself is malformed
  'network_error', // no HTTP response at all (server down, DNS, aborted)
  'unknown',
] as const;

export type ServerErrorCode = (typeof SERVER_ERROR_CODES)[number];
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

export function isServerErrorCode(value: unknown): value is ServerErrorCode {
  return typeof value === 'string' && (SERVER_ERROR_CODES as readonly string[]).includes(value);
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

/** The BackendErrorCode for a PostgREST error body and the HTTP status it came with. */
export function errorCodeOf(error: PostgrestErrorLike, status: number): BackendErrorCode {
  if (isServerErrorCode(error.message)) return error.message;
  const sqlstate = error.code ?? '';
  // postgrest-js reports a failed fetch as status 0 with an empty code.
  if (status === 0 && sqlstate === '') return 'network_error';

  switch (sqlstate) {
    case '42501':
      // PostgREST answers "insufficient privilege" with 401 to anonymous callers, 403 otherwise.
      return status === 401 ? 'not_authenticated' : 'not_authorized';
    case '28000':
    case '28P01':
    case 'PGRST301': // JWT invalid or expired
    case 'PGRST302': // anonymous access disabled
    case 'PGRST303': // JWT claims invalid
      return 'not_authenticated';
    case 'P0002':
    case 'PT404': // our SQL's not-found errors (PostgREST answers with 404)
    case 'PGRST116': // .single() on no rows
      return 'not_found';
    case '23505':
      return constraintCode(error) ?? 'conflict';
    case 'PT409': // our SQL's conflicts (PostgREST answers with 409)
      return 'conflict';
    case '23514':
      return constraintCode(error) ?? 'invalid_input';
    case '23502':
    case '23503':
      return 'invalid_input';
  }
  if (sqlstate.startsWith('22') || /^PGRST1\d\d$/.test(sqlstate)) return 'invalid_input';

  // No (known) code: the gateway or a proxy answered.
  if (status === 401) return 'not_authenticated';
  if (status === 403) return 'not_authorized';
  return 'unknown';
}
