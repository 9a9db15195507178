// The local Storage API's settings, read from the gateway's environment on first use (so the
// gateway starts even where storage is never called).
//   LOCAL_STORAGE_DIR        where the bytes live: <dir>/<bucket>/<object name> (.local/storage)
//   STORAGE_MAX_FILE_BYTES   the largest object accepted whatever the bucket says (50 MiB, the
//                            free plan's global limit); a bucket's file_size_limit lowers it
//   STORAGE_SIGNED_UPLOAD_EXPIRES_IN  seconds a signed upload URL stays valid (7200, as hosted)
//   JWT_SECRET, SUPABASE_ANON_KEY, SUPABASE_SERVICE_ROLE_KEY, SUPABASE_DB_URL
import { decodeJwt } from 'jose';

export interface StorageConfig {
  root: string;
  /** Where uploads are written before they are renamed into place; on the same filesystem. */
  tmpDir: string;
  maxFileBytes: number;
  signedUploadExpiresIn: number;
  jwtKey: Uint8Array;
  /** Kong's key-auth consumers: the keys accepted as `apikey`. */
  apiKeys: Set<string>;
  /** The service role key's claims: who Storage's "superuser" queries run as. */
  serviceClaims: Record<string, unknown>;
  dbUrl: string;
}

function required(name: string): string {
  const value = Deno.env.get(name);
  if (!value) throw new Error(`storage: ${name} is not set`);
  return value;
}

function positiveInteger(name: string, fallback: number): number {
  const value = Number(Deno.env.get(name) ?? fallback);
  if (!Number.isSafeInteger(value) || value <= 0) throw new Error(`storage: ${name} must be a positive integer`);
  return value;
}

let cached: StorageConfig | undefined;

export function config(): StorageConfig {
  if (cached) return cached;
  const root = Deno.env.get('LOCAL_STORAGE_DIR') || new URL('../../.local/storage', import.meta.url).pathname;
  const serviceKey = required('SUPABASE_SERVICE_ROLE_KEY');
  let serviceClaims: Record<string, unknown> = { role: 'service_role' };
  try {
    serviceClaims = { ...decodeJwt(serviceKey), role: 'service_role' };
  } catch { /* an opaque key: the role is enough */ }
  cached = {
    root: root.replace(/\/+$/, ''),
    // A name no bucket can have ('~' is not allowed in bucket names), so it never collides.
    tmpDir: `${root.replace(/\/+$/, '')}/.~uploads`,
    maxFileBytes: positiveInteger('STORAGE_MAX_FILE_BYTES', 50 * 1024 * 1024),
    signedUploadExpiresIn: positiveInteger('STORAGE_SIGNED_UPLOAD_EXPIRES_IN', 7200),
    jwtKey: new TextEncoder().encode(required('JWT_SECRET')),
    apiKeys: new Set([required('SUPABASE_ANON_KEY'), serviceKey]),
    serviceClaims,
    dbUrl: required('SUPABASE_DB_URL'),
  };
  return cached;
}
