// The local Storage API: the part of supabase/storage that storage-js (supabase.storage) calls,
// served by the gateway at /storage/v1 (scripts/functions-server.ts), local-only.
//
//   bucket  GET /bucket, GET|PUT|DELETE /bucket/:id, POST /bucket, POST /bucket/:id/empty
//   object  POST|PUT|GET|HEAD|DELETE /object/:bucket/*, DELETE /object/:bucket (many),
//           GET|HEAD /object/authenticated/:bucket/*, GET /object/info[/authenticated|/public]/:bucket/*,
//           GET|HEAD /object/public/:bucket/*, POST /object/list/:bucket, POST /object/move,
//           POST /object/copy, POST /object/sign/:bucket[/*], GET /object/sign/:bucket/*,
//           POST|PUT /object/upload/sign/:bucket/*
//
// Kong's part first (CORS preflights, key-auth except on the public and signed routes), then
// Storage's: the JWT, then the route, every answer in Storage's error shape (./errors.ts).
// Bytes: LOCAL_STORAGE_DIR/<bucket>/<name>; rows: storage.objects as the caller (./db.ts).
import { corsHeaders } from '../../functions/_shared/cors.ts';
import { ANONYMOUS, authenticate, type Caller, checkApiKey } from './auth.ts';
import { createBucket, deleteBucket, emptyBucket, getBucket, listBuckets, updateBucket } from './buckets.ts';
import { ERRORS, StorageApiError, toStorageError } from './errors.ts';
import {
  copyObject,
  createSignedUploadUrl,
  createSignedUrl,
  createSignedUrls,
  deleteObject,
  deleteObjects,
  getObject,
  getObjectInfo,
  getPublicObject,
  getSignedObject,
  listObjects,
  moveObject,
  uploadObject,
  uploadToSignedUrl,
} from './objects.ts';

/** The headers a browser may send to Storage: supabase-js's, and the upload ones storage-js adds. */
const ALLOWED_HEADERS = [
  ...corsHeaders['access-control-allow-headers'].split(',').map((h) => h.trim()),
  'x-upsert',
  'x-metadata',
  'cache-control',
  'content-encoding',
  'range',
  'if-none-match',
  'if-modified-since',
].filter((h, i, all) => h && all.indexOf(h) === i).join(', ');

const CORS: Record<string, string> = {
  'access-control-allow-origin': '*',
  'access-control-allow-methods': 'GET, HEAD, POST, PUT, DELETE, OPTIONS',
  'access-control-allow-headers': ALLOWED_HEADERS,
  'access-control-expose-headers':
    'content-length, content-range, content-type, content-disposition, etag, last-modified, cache-control, expires, accept-ranges, x-request-id',
  'access-control-max-age': '86400',
};

function withCors(res: Response): Response {
  const headers = new Headers(res.headers);
  for (const [k, v] of Object.entries(CORS)) headers.set(k, v);
  return new Response(res.body, { status: res.status, statusText: res.statusText, headers });
}

function errorResponse(err: StorageApiError): Response {
  return new Response(JSON.stringify(err.render()), {
    status: err.status,
    headers: { 'content-type': 'application/json', ...err.headers },
  });
}

type Auth = 'required' | 'optional' | 'none';

interface Route {
  method: string | string[];
  pattern: RegExp;
  /** Kong's key-auth; off on the routes a bare link must reach. */
  apikey: boolean;
  auth: Auth;
  handle(req: Request, url: URL, caller: Caller, params: string[]): Promise<Response>;
}

// Matched in order, so the fixed paths win over /object/:bucket/* as Storage's router has them
// (a bucket named "public" or "sign" is shadowed on those paths there too).
const ROUTES: Route[] = [
  // Buckets
  { method: 'GET', pattern: /^\/bucket\/?$/, apikey: true, auth: 'required', handle: (_r, url, c) => listBuckets(url, c) },
  { method: 'POST', pattern: /^\/bucket\/?$/, apikey: true, auth: 'required', handle: (r, _u, c) => createBucket(r, c) },
  { method: 'POST', pattern: /^\/bucket\/([^/]+)\/empty\/?$/, apikey: true, auth: 'required', handle: (r, _u, c, [id]) => emptyBucket(r, c, id) },
  { method: 'GET', pattern: /^\/bucket\/([^/]+)\/?$/, apikey: true, auth: 'required', handle: (_r, _u, c, [id]) => getBucket(c, id) },
  { method: 'PUT', pattern: /^\/bucket\/([^/]+)\/?$/, apikey: true, auth: 'required', handle: (r, _u, c, [id]) => updateBucket(r, c, id) },
  { method: 'DELETE', pattern: /^\/bucket\/([^/]+)\/?$/, apikey: true, auth: 'required', handle: (r, _u, c, [id]) => deleteBucket(r, c, id) },

  // Objects: fixed paths first
  { method: 'POST', pattern: /^\/object\/list\/([^/]+)\/?$/, apikey: true, auth: 'required', handle: (r, _u, c, [b]) => listObjects(r, c, b) },
  { method: 'POST', pattern: /^\/object\/move\/?$/, apikey: true, auth: 'required', handle: (r, _u, c) => moveObject(r, c) },
  { method: 'POST', pattern: /^\/object\/copy\/?$/, apikey: true, auth: 'required', handle: (r, _u, c) => copyObject(r, c) },
  { method: 'POST', pattern: /^\/object\/upload\/sign\/([^/]+)\/(.*)$/, apikey: true, auth: 'required', handle: (r, _u, c, [b, n]) => createSignedUploadUrl(r, c, b, n) },
  { method: 'PUT', pattern: /^\/object\/upload\/sign\/([^/]+)\/(.*)$/, apikey: false, auth: 'none', handle: (r, u, _c, [b, n]) => uploadToSignedUrl(r, u, b, n) },
  { method: 'POST', pattern: /^\/object\/sign\/([^/]+)\/?$/, apikey: true, auth: 'required', handle: (r, _u, c, [b]) => createSignedUrls(r, c, b) },
  { method: 'POST', pattern: /^\/object\/sign\/([^/]+)\/(.+)$/, apikey: true, auth: 'required', handle: (r, _u, c, [b, n]) => createSignedUrl(r, c, b, n) },
  { method: 'GET', pattern: /^\/object\/sign\/([^/]+)\/(.+)$/, apikey: false, auth: 'none', handle: (r, u, _c, [b, n]) => getSignedObject(r, u, b, n) },
  { method: ['GET', 'HEAD'], pattern: /^\/object\/public\/([^/]+)\/(.+)$/, apikey: false, auth: 'none', handle: (r, u, _c, [b, n]) => getPublicObject(r, u, b, n) },
  { method: 'GET', pattern: /^\/object\/info\/public\/([^/]+)\/(.+)$/, apikey: false, auth: 'none', handle: (_r, _u, _c, [b, n]) => getObjectInfo(ANONYMOUS, b, n, { publicRoute: true }) },
  { method: 'GET', pattern: /^\/object\/info\/authenticated\/([^/]+)\/(.+)$/, apikey: true, auth: 'required', handle: (_r, _u, c, [b, n]) => getObjectInfo(c, b, n) },
  { method: 'GET', pattern: /^\/object\/info\/([^/]+)\/(.+)$/, apikey: true, auth: 'optional', handle: (_r, _u, c, [b, n]) => getObjectInfo(c, b, n) },
  { method: ['GET', 'HEAD'], pattern: /^\/object\/authenticated\/([^/]+)\/(.+)$/, apikey: true, auth: 'required', handle: (r, u, c, [b, n]) => getObject(r, u, c, b, n) },

  // Objects: /object/:bucket[/*]
  { method: 'DELETE', pattern: /^\/object\/([^/]+)\/?$/, apikey: true, auth: 'required', handle: (r, _u, c, [b]) => deleteObjects(r, c, b) },
  { method: 'POST', pattern: /^\/object\/([^/]+)\/(.*)$/, apikey: true, auth: 'required', handle: (r, _u, c, [b, n]) => uploadObject(r, c, b, n, 'POST') },
  { method: 'PUT', pattern: /^\/object\/([^/]+)\/(.*)$/, apikey: true, auth: 'required', handle: (r, _u, c, [b, n]) => uploadObject(r, c, b, n, 'PUT') },
  { method: ['GET', 'HEAD'], pattern: /^\/object\/([^/]+)\/(.+)$/, apikey: true, auth: 'optional', handle: (r, u, c, [b, n]) => getObject(r, u, c, b, n) },
  { method: 'DELETE', pattern: /^\/object\/([^/]+)\/(.+)$/, apikey: true, auth: 'required', handle: (_r, _u, c, [b, n]) => deleteObject(c, b, n) },
];

function matchRoute(method: string, path: string): { route: Route; params: string[] } | null {
  for (const route of ROUTES) {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    if (!methods.includes(method)) continue;
    const match = route.pattern.exec(path);
    if (match) return { route, params: match.slice(1) };
  }
  return null;
}

function log(fields: Record<string, unknown>): void {
  console.log(JSON.stringify({ time: new Date().toISOString(), ...fields }));
}

async function dispatch(req: Request, url: URL): Promise<Response> {
  const rawPath = url.pathname.slice('/storage/v1'.length) || '/';
  // Matched on the raw path, so an encoded slash stays inside its parameter; parameters are then
  // decoded, as Storage's router decodes them (%2F included).
  const found = matchRoute(req.method, rawPath);
  if (!found) throw ERRORS.RouteNotFound(req.method, `${rawPath}${url.search}`);
  const { route } = found;
  let params: string[];
  try {
    params = found.params.map((p) => decodeURIComponent(p));
  } catch {
    throw ERRORS.InvalidRequest('Malformed percent-encoding in the path');
  }

  if (route.apikey) {
    const refused = checkApiKey(req, url);
    if (refused) return new Response(JSON.stringify({ message: refused.message }), { status: refused.status, headers: { 'content-type': 'application/json' } });
  }
  const caller = route.auth === 'none' ? ANONYMOUS : await authenticate(req, url, { optional: route.auth === 'optional' });
  return await route.handle(req, url, caller, params);
}

/** The /storage/v1 branch of the gateway. */
export async function handleStorage(req: Request, url: URL): Promise<Response> {
  // Kong's cors plugin answers preflights before any auth.
  if (req.method === 'OPTIONS') return new Response(null, { status: 204, headers: CORS });
  let res: Response;
  try {
    res = await dispatch(req, url);
  } catch (err) {
    const storageError = toStorageError(err);
    if (storageError.status >= 500) {
      const e = err as { name?: string; message?: string; code?: unknown };
      log({ level: 'error', msg: 'storage: request failed', path: url.pathname, error: e?.name, message: e?.message, code: e?.code });
    }
    // A body the handler did not read is dropped, so the connection ends cleanly.
    req.body?.cancel().catch(() => {});
    res = errorResponse(storageError);
  }
  return withCors(res);
}
