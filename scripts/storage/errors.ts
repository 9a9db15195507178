// The Storage API's errors as supabase/storage renders them (src/internal/errors/codes.ts,
// storage-error.ts, src/http/error-handler.ts, src/storage/database/errors.ts):
//   body  {"statusCode": "<the error's own status>", "code": "<ErrorCode>", "error": "<legacy name>", "message"}
//   HTTP  400 for every error but 500s (StorageBackendError.userStatusCode), unless the error
//         carries its own status (enforceJwtRole's 403, the range error's 416).
// So "Object not found" is HTTP 400 with statusCode "404", as on a hosted project; storage-js
// reads `code` (exists() looks for NoSuchKey) and `message`.

export class StorageApiError extends Error {
  constructor(
    /** Storage's ErrorCode, e.g. NoSuchKey. */
    readonly code: string,
    /** The status in the body (statusCode). */
    readonly httpStatusCode: number,
    message: string,
    /** The legacy `error` field; the code when Storage gives none. */
    readonly error: string = code,
    /** The HTTP status when it is not Storage's default (400, or 500 for a 500). */
    readonly userStatusCode?: number,
    /** Extra response headers (cache-control: no-store on a missing file). */
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'StorageApiError';
  }

  /** The HTTP status the response goes out with. */
  get status(): number {
    return this.userStatusCode ?? (this.httpStatusCode === 500 ? 500 : 400);
  }

  render(): { statusCode: string; code: string; error: string; message: string } {
    return { statusCode: String(this.httpStatusCode), code: this.code, error: this.error, message: this.message };
  }
}

const e = (code: string, status: number, message: string, error?: string, userStatus?: number) =>
  new StorageApiError(code, status, message, error ?? code, userStatus);

export const ERRORS = {
  NoSuchBucket: () => e('NoSuchBucket', 404, 'Bucket not found', 'Bucket not found'),
  NoSuchKey: () => e('NoSuchKey', 404, 'Object not found', 'not_found'),
  /** The object's row exists but its bytes do not (the renderer's answer to a backend 404). */
  MissingBytes: () =>
    new StorageApiError('NoSuchKey', 404, 'The resource was not found', 'Not found', 400, { 'cache-control': 'no-store' }),
  AccessDenied: (message = 'Access denied') => e('AccessDenied', 403, message, 'Unauthorized'),
  /** enforceJwtRole: answered with HTTP 403 itself. */
  AccessDeniedRole: (message: string) => e('AccessDenied', 403, message, 'Unauthorized', 403),
  InvalidJWT: (message = 'Invalid JWT') => e('InvalidJWT', 400, message),
  InvalidSignature: (message = 'Invalid signature') => e('InvalidSignature', 400, message),
  ExpiredSignature: () => e('ExpiredToken', 400, 'The provided token has expired.'),
  ResourceAlreadyExists: () => e('ResourceAlreadyExists', 409, 'The resource already exists', 'Duplicate'),
  KeyAlreadyExists: () => e('KeyAlreadyExists', 409, 'The resource already exists', 'Duplicate'),
  BucketAlreadyExists: () => e('BucketAlreadyExists', 409, 'The resource already exists', 'Duplicate'),
  BucketNotEmpty: () => e('ResourceNotEmpty', 409, 'The bucket you tried to delete is not empty'),
  UnableToEmptyBucket: (message: string) => e('InvalidRequest', 409, message),
  EntityTooLarge: (entity = 'object', limit = 'the maximum allowed size') =>
    e('EntityTooLarge', 413, `The ${entity} exceeded ${limit}`, 'Payload too large'),
  InvalidMimeType: (mimeType: string) => e('InvalidMimeType', 415, `mime type ${mimeType} is not supported`, 'invalid_mime_type'),
  InvalidKey: (key: string, reason?: string) => e('InvalidKey', 400, `Invalid key: ${key}${reason ? ` ${reason}` : ''}`),
  InvalidBucketName: () => e('InvalidBucketName', 400, 'Bucket name invalid', 'Invalid Input'),
  InvalidFileSizeLimit: () => e('InvalidRequest', 400, 'Invalid file size format, hint: use 20GB / 20MB / 30KB / 3B'),
  InvalidRequest: (message = 'Invalid Request') => e('InvalidRequest', 400, message),
  /** A request that does not match the route's schema (Fastify's FST_ERR_VALIDATION). */
  Validation: (message: string) => e('InvalidRequest', 400, message, 'Bad Request', 400),
  InvalidParameter: (parameter: string) => e('InvalidParameter', 400, `Invalid Parameter ${parameter}`),
  NoContentProvided: (message = 'No content provided') => e('InvalidRequest', 400, message),
  InvalidRange: () => e('InvalidRange', 416, 'invalid range provided', 'invalid_range', 416),
  RelatedResourceNotFound: () => e('InvalidRequest', 404, 'The related resource does not exist'),
  ResourceReferenced: () => e('ResourceReferenced', 409, 'The resource could not be updated or removed due to a foreign key constraint'),
  ResourceLocked: () => e('ResourceLocked', 423, 'The resource is locked'),
  DatabaseTimeout: () => e('DatabaseTimeout', 544, 'The connection to the database timed out', undefined, 544),
  DatabaseError: (sqlstate: string) => e('DatabaseError', 500, `database error, code: ${sqlstate}`),
  InternalError: () => e('InternalError', 500, 'Internal server error', 'Internal'),
  RouteNotFound: (method: string, path: string) =>
    e('InvalidRequest', 404, `Route ${method}:${path} not found`, 'Not Found', 404),
};

/** postgres.js's server error (PostgresError), duck-typed. */
interface PgError {
  name: string;
  code: string;
  message: string;
  detail?: string;
}

function isPgError(err: unknown): err is PgError {
  return err instanceof Error && err.name === 'PostgresError' && typeof (err as PgError).code === 'string';
}

/** The Storage error for a database error, as DBError.fromDBError maps SQLSTATEs. */
export function fromPgError(err: PgError): StorageApiError {
  switch (err.code) {
    case '42501':
      return ERRORS.AccessDenied(
        err.message.includes('row-level security') ? 'new row violates row-level security policy' : err.message,
      );
    case '23505':
      return ERRORS.ResourceAlreadyExists();
    case '23503':
      return err.detail?.includes('is still referenced from table') ? ERRORS.ResourceReferenced() : ERRORS.RelatedResourceNotFound();
    case '55P03':
      return ERRORS.ResourceLocked();
    case '57014':
      return ERRORS.DatabaseTimeout();
    case '22P02':
      return e('InvalidParameter', 400, err.message || 'Invalid value format or type conversion failed');
    default:
      return ERRORS.DatabaseError(err.code);
  }
}

/** Any thrown value as a Storage error; database errors are mapped, anything else is a 500. */
export function toStorageError(err: unknown): StorageApiError {
  if (err instanceof StorageApiError) return err;
  if (isPgError(err)) return fromPgError(err);
  return ERRORS.InternalError();
}

/** Rethrows a database error as the Storage error it maps to (other errors unchanged). */
export function mapPg(err: unknown): never {
  throw isPgError(err) ? fromPgError(err) : err;
}
