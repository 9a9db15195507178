// Request bodies as GoTrue reads them: JSON into a typed struct, where a value of the wrong type
// fails the whole body (bad_json, as Go's json.Unmarshal does), unknown fields are ignored (the
// clients send extras such as gotrue_meta_security) and null means "not given". The rules on the
// values themselves (an email's format, a password's length) answer validation_failed. Strings are
// capped so nothing unbounded reaches the database; the body as a whole is capped at GoTrue's 1 MB.
import { z } from 'zod';
import { AuthError, badRequest } from './errors.ts';

/** GoTrue refuses bodies over 1 MB (limitRequestBody(1 << 20)). */
export const MAX_BODY_BYTES = 1 << 20;

/** The longest email address GoTrue accepts. */
const MAX_EMAIL_LENGTH = 255;

/** checkmail's format check, which GoTrue's validateEmail uses. */
const EMAIL_FORMAT =
  /^[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/;

/** A string field; null or absent is "" as in Go. `max` keeps hostile input bounded. */
export const text = (max = 4096) => z.string().max(max).nullish().transform((v) => v ?? '');
/** A string field where "absent" and "" differ (GoTrue's *string: password in PUT /user). */
export const optionalText = (max = 4096) => z.string().max(max).nullish().transform((v) => v ?? undefined);
/** A JSON object field (user metadata), null or absent is undefined. */
export const jsonObject = () => z.record(z.string(), z.unknown()).nullish().transform((v) => v ?? undefined);
export const flag = () => z.boolean().nullish().transform((v) => v ?? false);

function describe(issue: z.core.$ZodIssue): string {
  const path = issue.path.length > 0 ? issue.path.join('.') : 'body';
  return `${path}: ${issue.message}`;
}

/**
 * Reads the body as JSON and parses it with `schema`: bad_json for what is not JSON or has a field
 * of the wrong type, validation_failed for a value over its limit.
 */
export async function readBody<S extends z.ZodType>(req: Request, schema: S, { optional = false } = {}): Promise<z.output<S>> {
  const bytes = new Uint8Array(await req.arrayBuffer());
  if (bytes.byteLength > MAX_BODY_BYTES) {
    throw new AuthError(413, 'request_entity_too_large', `Request body too large (max ${MAX_BODY_BYTES} bytes)`);
  }
  const raw = new TextDecoder().decode(bytes);
  let value: unknown;
  if (raw.trim() === '' && optional) {
    value = {};
  } else {
    try {
      value = JSON.parse(raw);
    } catch (err) {
      throw badRequest('bad_json', `Could not parse request body as JSON: ${(err as Error).message}`);
    }
  }
  // Go decodes `null` into an untouched struct.
  if (value === null) value = {};
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw badRequest('bad_json', 'Could not parse request body as JSON: the body is not a JSON object');
  }
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  if (issue.code === 'too_big') throw badRequest('validation_failed', describe(issue));
  throw badRequest('bad_json', `Could not parse request body as JSON: ${describe(issue)}`);
}

/** GoTrue's validateEmail: required, at most 255 characters, checkmail's format; lower-cased. */
export function validateEmail(email: string): string {
  if (email === '') throw badRequest('validation_failed', 'An email address is required');
  if (email.length > MAX_EMAIL_LENGTH) throw badRequest('validation_failed', 'An email address is too long');
  if (!EMAIL_FORMAT.test(email)) throw badRequest('validation_failed', 'Unable to validate email address: invalid format');
  return email.toLowerCase();
}

/** GoTrue's validatePhone: E.164 without the "+", as it stores phone numbers. */
export function validatePhone(phone: string): string {
  const formatted = phone.replace(/[\s+()-]/g, '');
  if (!/^[1-9]\d{1,14}$/.test(formatted)) throw badRequest('validation_failed', 'Invalid phone number format (E.164 required)');
  return formatted;
}

const CODE_CHALLENGE = /^[a-zA-Z._~0-9-]+$/;

/** GoTrue's validatePKCEParams: both or neither, a challenge of 43 to 128 URL-safe characters. */
export function validatePkceParams(method: string, challenge: string): void {
  if ((challenge === '') !== (method === '')) {
    throw badRequest('validation_failed', 'PKCE flow requires code_challenge_method and code_challenge');
  }
  if (challenge === '') return;
  if (challenge.length < 43 || challenge.length > 128) {
    throw badRequest('validation_failed', 'code challenge has to be between 43 and 128 characters');
  }
  if (!CODE_CHALLENGE.test(challenge)) {
    throw badRequest('validation_failed', 'code challenge can only contain alphanumeric characters, hyphens, periods, underscores and tildes');
  }
  if (!['s256', 'plain'].includes(method.toLowerCase())) {
    throw badRequest('validation_failed', `code challenge method not supported: ${method}`);
  }
}

/** The fields every flow that can start PKCE takes. */
export const pkceFields = {
  code_challenge: text(256),
  code_challenge_method: text(16),
};
