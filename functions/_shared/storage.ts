// The few calls of Supabase Storage's HTTP API the files functions make, with a caller's token
// (so the storage.objects policies decide) or the service role key. The same API answers on a
// hosted project and on the local stack's gateway.
import { env } from './env.ts';
import { HttpError } from './errors.ts';

/**
 * Storage answered with an error. Unless the caller maps it to something more precise (as
 * files-upload does with a refused upload), it answers 503 storage_unavailable: the file is not
 * the caller's fault. `storageStatus` (the body's statusCode, else the HTTP status) and `body`
 * are what Storage said.
 */
export class StorageError extends HttpError {
  constructor(readonly storageStatus: number, readonly body: unknown) {
    super(503, 'storage_unavailable', `Storage answered ${storageStatus}`);
    this.name = 'StorageError';
  }
}

const objectPath = (name: string) => name.split('/').map(encodeURIComponent).join('/');

async function call(path: string, token: string, init: RequestInit & { duplex?: 'half' } = {}): Promise<Response> {
  const { supabaseUrl, anonKey } = env();
  const res = await fetch(`${supabaseUrl}/storage/v1${path}`, {
    ...init,
    headers: { apikey: anonKey, authorization: `Bearer ${token}`, ...init.headers },
  });
  if (!res.ok) {
    const text = await res.text();
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch { /* keep the text */ }
    // Older Storage versions answer HTTP 400 with the real status in the body's statusCode.
    const said = Number((body as { statusCode?: unknown } | null)?.statusCode);
    throw new StorageError(Number.isInteger(said) && said >= 400 ? said : res.status, body);
  }
  return res;
}

/** Uploads a stream as a new object (never over an existing one). */
export async function uploadObject(token: string, bucket: string, name: string, body: ReadableStream<Uint8Array>,
  contentType: string): Promise<void> {
  await (await call(`/object/${bucket}/${objectPath(name)}`, token, {
    method: 'POST',
    headers: { 'content-type': contentType, 'x-upsert': 'false', 'cache-control': 'max-age=3600' },
    body,
    duplex: 'half',
  })).body?.cancel();
}

/** Copies an object, also into the other bucket. */
export async function copyObject(token: string, from: { bucket: string; name: string }, to: { bucket: string; name: string }): Promise<void> {
  await (await call('/object/copy', token, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ bucketId: from.bucket, sourceKey: from.name, destinationBucket: to.bucket, destinationKey: to.name }),
  })).body?.cancel();
}

/** The object's size, or null when there is no such object. */
export async function objectSize(token: string, bucket: string, name: string): Promise<number | null> {
  try {
    // The /authenticated/ form: Storage routes GET /object/info/public/... to its public-bucket
    // route, which would read a bucket named `public` as part of the path.
    const info = await (await call(`/object/info/authenticated/${bucket}/${objectPath(name)}`, token)).json();
    return Number(info.size ?? info.metadata?.size);
  } catch (err) {
    if (err instanceof StorageError && (err.storageStatus === 404 || err.storageStatus === 400)) return null;
    throw err;
  }
}

/** Removes objects of one bucket (names that are gone already are fine). */
export async function removeObjects(token: string, bucket: string, names: string[]): Promise<void> {
  if (names.length === 0) return;
  await (await call(`/object/${bucket}`, token, {
    method: 'DELETE',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prefixes: names }),
  })).body?.cancel();
}
