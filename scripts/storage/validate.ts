// Storage's input rules (src/storage/limits.ts, src/storage/uploader.ts, src/storage/storage.ts)
// and the small request-body helpers the JSON routes share.
import { ERRORS } from './errors.ts';

// Hyphen last so it stays a literal. Object keys and bucket names are ASCII, as Storage allows.
const VALID_OBJECT_KEY = /^[A-Za-z0-9_/!.*'() &$=@;:+,?-]*$/;
const VALID_BUCKET_NAME = /^[A-Za-z0-9_!.*'() &$=@;:+,?-]*$/;

export function mustBeValidKey(key: string | undefined): asserts key is string {
  if (!key || !VALID_OBJECT_KEY.test(key)) throw ERRORS.InvalidKey(key ?? '');
}

export function mustBeValidBucketName(name: string | undefined): asserts name is string {
  if (!name || name.length > 100 || !VALID_BUCKET_NAME.test(name)) throw ERRORS.InvalidBucketName();
}

export function isEmptyFolder(name: string): boolean {
  return name.endsWith('.emptyFolderPlaceholder');
}

/**
 * Storage's validateMimeType: type/subtype must equal an allowed one, or the allowed one is
 * type/*. Parameters count as part of the subtype (text/plain;charset=UTF-8 is not text/plain),
 * as Storage compares them.
 */
export function validateMimeType(mimeType: string, allowed: string[]): void {
  const requested = mimeType.split('/');
  if (requested.length < 2) throw ERRORS.InvalidMimeType(mimeType);
  const [type, subtype] = requested;
  for (const entry of allowed) {
    const [allowedType, allowedSubtype] = entry.split('/');
    if (allowedType === type && (allowedSubtype === '*' || allowedSubtype === subtype)) return;
  }
  throw ERRORS.InvalidMimeType(mimeType);
}

/** A bucket's allowed_mime_types entries as Storage accepts them. */
export function validateAllowedMimeTypes(types: string[]): void {
  for (const type of types) {
    if (typeof type !== 'string' || type.length > 1000 ||
        !/^([a-zA-Z0-9\-+.]+)\/([a-zA-Z0-9\-+.]+)(;\s*charset=[a-zA-Z0-9\-]+)?$|\*$/.test(type)) {
      throw ERRORS.InvalidMimeType(String(type));
    }
  }
}

/** "20MB" and the like (parseFileSizeToBytes), or a number of bytes. */
export function parseFileSizeLimit(value: number | string): number {
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value) || value < 0) throw ERRORS.InvalidFileSizeLimit();
    return value;
  }
  const match = /^([0-9]+(?:\.[0-9]+)?)(gb|mb|kb|b)$/i.exec(value);
  if (!match) throw ERRORS.InvalidFileSizeLimit();
  const amount = +parseFloat(match[1]).toPrecision(3);
  const unit = { GB: 1e9, MB: 1e6, KB: 1000, B: 1 }[match[2].toUpperCase() as 'GB' | 'MB' | 'KB' | 'B'];
  return Math.round(amount * unit);
}

export function isUuid(value: string | undefined): boolean {
  return !!value && /^[0-9a-f]{8}-[0-9a-f]{4}-[0-5][0-9a-f]{3}-[089ab][0-9a-f]{3}-[0-9a-f]{12}$/i.test(value);
}

/** Storage's parseUserMetadata: base64 of JSON (the x-metadata header); unreadable is none. */
export function parseUserMetadata(header: string | null): Record<string, unknown> | undefined {
  if (!header) return undefined;
  try {
    const json = new TextDecoder().decode(Uint8Array.from(atob(header), (c) => c.charCodeAt(0)));
    const value = JSON.parse(json);
    return value && typeof value === 'object' ? value : undefined;
  } catch {
    return undefined;
  }
}

const MAX_JSON_BYTES = 5 * 1024 * 1024;

/** A JSON request body (an empty one is {}), read up to a limit; 400 when it is not JSON. */
export async function readJson(req: Request): Promise<Record<string, unknown>> {
  if (Number(req.headers.get('content-length')) > MAX_JSON_BYTES) throw ERRORS.EntityTooLarge('request body');
  let text = '';
  if (req.body) {
    const chunks: Uint8Array[] = [];
    let size = 0;
    for await (const chunk of req.body) {
      size += chunk.length;
      if (size > MAX_JSON_BYTES) throw ERRORS.EntityTooLarge('request body');
      chunks.push(chunk);
    }
    const all = new Uint8Array(size);
    let at = 0;
    for (const c of chunks) {
      all.set(c, at);
      at += c.length;
    }
    text = new TextDecoder().decode(all);
  }
  if (text.trim() === '') return {};
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw ERRORS.Validation('Body is not valid JSON');
  }
  if (!value || typeof value !== 'object' || Array.isArray(value)) throw ERRORS.Validation('body must be object');
  return value as Record<string, unknown>;
}

/** body.<field> as a string; Fastify's validation message when it is missing or not one. */
export function stringField(body: Record<string, unknown>, field: string, { required = true } = {}): string | undefined {
  const value = body[field];
  if (value === undefined || value === null) {
    if (required) throw ERRORS.Validation(`body must have required property '${field}'`);
    return undefined;
  }
  if (typeof value !== 'string') throw ERRORS.Validation(`body/${field} must be string`);
  return value;
}

export function integerField(body: Record<string, unknown>, field: string, minimum: number): number | undefined {
  const value = body[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value)) throw ERRORS.Validation(`body/${field} must be integer`);
  if (value < minimum) throw ERRORS.Validation(`body/${field} must be >= ${minimum}`);
  return value;
}
