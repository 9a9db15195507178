// The local API gateway: plays the part Kong and the edge runtime play on a Supabase project, so
// supabase-js pointed at http://127.0.0.1:54321 works as against a hosted one.
//   /rest/v1/*             -> PostgREST (prefix stripped), after an API-key check like Kong's key-auth
//   /functions/v1/<name>/* -> the `handler` exported by that function's entrypoint, JWT verified
//                             first unless `verify_jwt = false` in supabase/config.toml
//   /auth/v1/*             -> the local Supabase Auth (scripts/auth), after the same API-key check,
//                             except on the paths Kong leaves open (/verify, /callback, /authorize)
//   /storage/v1/*          -> the Storage API storage-js calls (scripts/storage/server.ts), bytes
//                             under LOCAL_STORAGE_DIR, rows of storage.objects as the caller
// Request bodies on both are limited like Kong's request-size-limiting: 413 when content-length
// says too much, before reading; a chunked body is counted as it streams and refused with 413 once
// it passes the limit, so PostgREST or the function never receive more than the limit.
// Run: deno run --allow-all --config deno.json scripts/functions-server.ts
// Env: PORT (54321), POSTGREST_URL (http://127.0.0.1:54330), JWT_SECRET, SUPABASE_ANON_KEY,
// SUPABASE_SERVICE_ROLE_KEY, GATEWAY_MAX_BODY_BYTES (2097152, 2 MiB: the largest request body
// accepted by /rest/v1), GATEWAY_MAX_FUNCTION_BODY_BYTES (52428800, 50 MiB: by a function, the
// largest file files-upload takes), and what the functions read (SUPABASE_URL, SUPABASE_DB_URL).
// Functions run in this process, imported once on first call: restart the gateway after editing one.
// With LOCAL_JOB_SCHEDULER=on (the stack's own gateway, not the ones tests start) it also plays
// pg_cron + pg_net for the HTTP jobs of the registry (private.jobs), calling each function on its
// schedule with the service role key, as hosted Supabase does.
import { parse } from 'smol-toml';
import { jwtVerify } from 'jose';
import postgres from 'postgres';
import { corsHeaders } from '../functions/_shared/cors.ts';
import { cronMatches } from './lib/cron-schedule.ts';
import { handleAuth } from './auth/server.ts';
import { handleStorage } from './storage/server.ts';

type Handler = (req: Request) => Promise<Response>;

interface FunctionConfig {
  entrypoint: URL;
  verifyJwt: boolean;
}

function requireEnv(name: string): string {
  const value = Deno.env.get(name);
  if (!value) {
    console.error(JSON.stringify({ level: 'error', msg: `functions-server: ${name} is not set` }));
    Deno.exit(1);
  }
  return value;
}

function positiveIntegerEnv(name: string, fallback: number): number {
  const value = Number(Deno.env.get(name) ?? fallback);
  if (!Number.isSafeInteger(value) || value <= 0) {
    console.error(JSON.stringify({ level: 'error', msg: `functions-server: ${name} must be a positive integer` }));
    Deno.exit(1);
  }
  return value;
}

const PORT = Number(Deno.env.get('PORT') ?? 54321);
const POSTGREST_URL = (Deno.env.get('POSTGREST_URL') ?? 'http://127.0.0.1:54330').replace(/\/+$/, '');
const JWT_KEY = new TextEncoder().encode(requireEnv('JWT_SECRET'));
// Kong's key-auth consumers: the only keys accepted as `apikey`.
const SERVICE_ROLE_KEY = requireEnv('SUPABASE_SERVICE_ROLE_KEY');
const API_KEYS = new Set([requireEnv('SUPABASE_ANON_KEY'), SERVICE_ROLE_KEY]);
// 2 MiB by default: room for consume_credits_batch's largest call (100 items, 8 KB metadata each).
const MAX_BODY_BYTES = positiveIntegerEnv('GATEWAY_MAX_BODY_BYTES', 2 * 1024 * 1024);
// Functions take files (files-upload streams them to Storage): up to the private bucket's limit.
const MAX_FUNCTION_BODY_BYTES = positiveIntegerEnv('GATEWAY_MAX_FUNCTION_BODY_BYTES', 50 * 1024 * 1024);
// How far the gateway reads a body ahead of the upstream consuming it.
const READ_AHEAD_BYTES = 1024 * 1024;

const SUPABASE_DIR = new URL('../supabase/', import.meta.url);

/** [functions.<name>] tables of supabase/config.toml; entrypoints are relative to supabase/. */
function loadFunctions(): Map<string, FunctionConfig> {
  const functions = new Map<string, FunctionConfig>();
  let config: Record<string, unknown>;
  try {
    config = parse(Deno.readTextFileSync(new URL('config.toml', SUPABASE_DIR)));
  } catch (err) {
    log({ level: 'warn', msg: 'no functions: cannot read supabase/config.toml', error: (err as Error).message });
    return functions;
  }
  const tables = (config.functions ?? {}) as Record<string, Record<string, unknown>>;
  for (const [name, fn] of Object.entries(tables)) {
    if (fn.enabled === false) continue;
    // Same defaults as the Supabase CLI: supabase/functions/<name>/index.ts, verify_jwt = true.
    const entrypoint = typeof fn.entrypoint === 'string' ? fn.entrypoint : `./functions/${name}/index.ts`;
    functions.set(name, { entrypoint: new URL(entrypoint, SUPABASE_DIR), verifyJwt: fn.verify_jwt !== false });
  }
  return functions;
}

const FUNCTIONS = loadFunctions();
const loaded = new Map<string, Promise<Handler>>();

function loadHandler(name: string, entrypoint: URL): Promise<Handler> {
  let handler = loaded.get(name);
  if (!handler) {
    handler = import(entrypoint.href).then((mod) => {
      if (typeof mod.handler !== 'function') throw new Error(`${entrypoint.pathname} does not export handler`);
      return mod.handler as Handler;
    });
    // A failed import is not cached, so fixing the file and calling again works.
    handler.catch(() => loaded.delete(name));
    loaded.set(name, handler);
  }
  return handler;
}

function log(fields: Record<string, unknown>): void {
  console.log(JSON.stringify({ time: new Date().toISOString(), ...fields }));
}

function jsonResponse(body: unknown, status: number): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { ...corsHeaders, 'content-type': 'application/json' },
  });
}

/** The error a limited request body fails with once more than its limit has arrived. */
class BodyTooLargeError extends Error {}

interface LimitedBody {
  /** The request body for the upstream; it fails with BodyTooLargeError past the limit. */
  stream: ReadableStream<Uint8Array>;
  /** Settles once the client has sent the whole body; rejects with BodyTooLargeError if it passed the limit. */
  received: Promise<void>;
}

function limitBody(body: ReadableStream<Uint8Array>, limit: number): LimitedBody {
  let bytes = 0;
  const counter = new TransformStream<Uint8Array, Uint8Array>(
    {
      transform(chunk, controller) {
        bytes += chunk.byteLength;
        // The chunk that passes the limit is not handed on: the upstream never gets more than the limit.
        if (bytes > limit) throw new BodyTooLargeError();
        controller.enqueue(chunk);
      },
    },
    undefined,
    // Reads ahead of a slow upstream by at most this much: a 50 MiB upload is never held whole.
    new ByteLengthQueuingStrategy({ highWaterMark: Math.min(limit, READ_AHEAD_BYTES) }),
  );
  const received = body.pipeTo(counter.writable).catch((err) => {
    // The body's other ends (the client went away, the upstream cancelled it) are the upstream's to report.
    if (err instanceof BodyTooLargeError) throw err;
  });
  return { stream: counter.readable, received };
}

function bodyTooLarge(): Response {
  return jsonResponse({ message: 'Request size limit exceeded' }, 413);
}

/**
 * Answers with `forward`, which gets the request body limited to `limit` bytes, or with 413 as
 * soon as the body passes the limit. An upstream that answers without touching the body gets it
 * read to the end all the same (discarded), as Kong reads a body in full, so an oversized one is
 * still a 413; one that took the body and stopped reading has its answer passed on.
 */
async function withBodyLimit(
  req: Request,
  forward: (body: ReadableStream<Uint8Array> | null) => Promise<Response>,
  limit = MAX_BODY_BYTES,
): Promise<Response> {
  if (Number(req.headers.get('content-length')) > limit) return bodyTooLarge();
  if (!req.body) return forward(null);
  const { stream, received } = limitBody(req.body, limit);
  let settled = false;
  const overLimit = received.then(() => false, (err) => {
    if (err instanceof BodyTooLargeError) return true;
    throw err;
  }).finally(() => {
    settled = true;
  });
  const answer = forward(stream);
  const first = await Promise.race([answer.then((res) => ({ res })), overLimit.then((over) => ({ over }))]);
  if ('over' in first) {
    if (!first.over) return answer;
    answer.then((res) => res.body?.cancel(), () => {});
    return bodyTooLarge();
  }
  const { res } = first;
  const untouched = !stream.locked;
  if (untouched) void stream.pipeTo(new WritableStream()).catch(() => {});
  // Unread (now draining): wait for the whole body. Taken by the upstream: only a limit it has
  // already run into counts (it may have stopped reading for good).
  const over = untouched || settled ? await overLimit : false;
  if (!over) return res;
  await res.body?.cancel();
  return bodyTooLarge();
}

// Connection-level headers a proxy must not forward (RFC 9110 §7.6.1), plus host.
const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer',
  'transfer-encoding', 'upgrade', 'host', 'content-length'];

async function proxyRest(req: Request, url: URL): Promise<Response> {
  const apikey = req.headers.get('apikey') ?? url.searchParams.get('apikey');
  // Kong answers preflights (cors plugin) before key-auth: browsers never send apikey on OPTIONS.
  if (req.method !== 'OPTIONS') {
    if (!apikey) return jsonResponse({ message: 'No API key found in request' }, 401);
    if (!API_KEYS.has(apikey)) return jsonResponse({ message: 'Invalid authentication credentials' }, 401);
  }

  const headers = new Headers(req.headers);
  for (const h of HOP_BY_HOP) headers.delete(h);
  // Like Kong (hide_credentials): the key does not reach PostgREST, which would read a query
  // param as a filter. A request with only an apikey acts with that key's role, as on hosted.
  headers.delete('apikey');
  if (apikey && !headers.has('authorization')) headers.set('authorization', `Bearer ${apikey}`);
  // Deno's fetch decompresses bodies; ask for none rather than forward a stale content-encoding.
  headers.set('accept-encoding', 'identity');

  const search = new URLSearchParams(url.search);
  search.delete('apikey');
  const query = search.size > 0 ? `?${search}` : '';
  const target = `${POSTGREST_URL}${url.pathname.slice('/rest/v1'.length) || '/'}${query}`;

  // Both ways stream: the body reaches PostgREST chunked as it arrives, the answer as PostgREST writes it.
  return withBodyLimit(req, async (body) => {
    let upstream: Response;
    try {
      upstream = await fetch(target, {
        method: req.method,
        headers,
        body: req.method === 'GET' || req.method === 'HEAD' ? null : body,
        redirect: 'manual',
      });
    } catch {
      return jsonResponse({ message: 'An invalid response was received from the upstream server' }, 502);
    }
    const resHeaders = new Headers(upstream.headers);
    for (const h of HOP_BY_HOP) resHeaders.delete(h);
    return new Response(upstream.body, { status: upstream.status, statusText: upstream.statusText, headers: resHeaders });
  });
}

async function invokeFunction(req: Request, url: URL, name: string, rest: string): Promise<Response> {
  const fn = FUNCTIONS.get(name);
  if (!fn) return jsonResponse({ code: 'NOT_FOUND', message: 'Requested function was not found' }, 404);

  // The hosted relay's check (messages as hosted answers them). Preflights pass for CORS.
  if (fn.verifyJwt && req.method !== 'OPTIONS') {
    const authorization = req.headers.get('authorization');
    if (!authorization) return jsonResponse({ code: 401, message: 'Missing authorization header' }, 401);
    const token = /^Bearer\s+(\S+)$/i.exec(authorization)?.[1];
    try {
      if (!token) throw new Error('not a bearer token');
      await jwtVerify(token, JWT_KEY, { algorithms: ['HS256'] });
    } catch {
      return jsonResponse({ code: 401, message: 'Invalid JWT' }, 401);
    }
  }

  let handler: Handler;
  try {
    handler = await loadHandler(name, fn.entrypoint);
  } catch (err) {
    log({ level: 'error', msg: 'function failed to boot', fn: name, error: (err as Error).message });
    return jsonResponse({ code: 'BOOT_ERROR', message: 'Function failed to start (please check logs)' }, 503);
  }
  // A hosted function sees its path without /functions/v1 (`/<name>/...`); keep the query.
  // Not `new Request(url, req)`: that would carry req.signal along, which Deno.serve aborts once
  // the response is sent (its legacy behaviour, and a warning on every start).
  return withBodyLimit(req, async (body) => {
    const forwarded = new Request(new URL(`/${name}${rest}${url.search}`, url), {
      method: req.method,
      headers: req.headers,
      body,
    });
    try {
      return await handler(forwarded);
    } catch (err) {
      // The shared wrapper catches errors; this only guards a function that does not use it.
      log({ level: 'error', msg: 'function threw', fn: name, error: (err as Error).message });
      return jsonResponse({ error: { code: 'internal_error', message: 'Internal error' } }, 500);
    }
  }, MAX_FUNCTION_BODY_BYTES);
}

/** A function's name from its path segment, or null when the segment's percent-escapes are malformed. */
function decodeFunctionName(segment: string): string | null {
  try {
    return decodeURIComponent(segment);
  } catch {
    return null;
  }
}

function route(req: Request, clientAddress: string): Promise<Response> {
  const url = new URL(req.url);
  if (url.pathname === '/rest/v1' || url.pathname.startsWith('/rest/v1/')) return proxyRest(req, url);
  if (url.pathname === '/auth/v1' || url.pathname.startsWith('/auth/v1/')) {
    // /auth/v1: the local Supabase Auth (scripts/auth/server.ts), bodies limited as on /rest/v1.
    return withBodyLimit(req, (body) => handleAuth(new Request(url, { method: req.method, headers: req.headers, body }), url, clientAddress));
  }
  // /storage/v1: the Storage API subset storage-js calls, served here (scripts/storage/); no
  // GATEWAY_MAX_BODY_BYTES there: uploads stream to disk under the bucket's own size limit.
  if (url.pathname === '/storage/v1' || url.pathname.startsWith('/storage/v1/')) return handleStorage(req, url);
  const fn = /^\/functions\/v1\/([^/]+)(\/.*)?$/.exec(url.pathname);
  if (fn) {
    const name = decodeFunctionName(fn[1]);
    if (name === null) {
      return Promise.resolve(jsonResponse({ code: 'BAD_REQUEST', message: 'Malformed function name' }, 400));
    }
    return invokeFunction(req, url, name, fn[2] ?? '');
  }
  return Promise.resolve(jsonResponse({ message: 'no Route matched with those values' }, 404));
}

const server = Deno.serve({
  port: PORT,
  hostname: '127.0.0.1',
  onListen: ({ hostname, port }) =>
    log({ level: 'info', msg: 'functions-server listening', url: `http://${hostname}:${port}`, functions: [...FUNCTIONS.keys()] }),
}, async (req, info) => {
  const started = performance.now();
  let res: Response;
  try {
    res = await route(req, info.remoteAddr.transport === 'tcp' ? info.remoteAddr.hostname : 'unknown');
  } catch (err) {
    log({ level: 'error', msg: 'gateway error', error: (err as Error).message });
    res = jsonResponse({ message: 'An unexpected error occurred' }, 500);
  }
  // Path only: the query string may carry an apikey; headers (Authorization) are never logged.
  log({
    level: 'info',
    msg: 'request',
    method: req.method,
    path: new URL(req.url).pathname,
    status: res.status,
    ms: Math.round(performance.now() - started),
  });
  return res;
});

// ---------------------------------------------------------------------------------------------
// The local stand-in for pg_cron + pg_net: HTTP jobs on their schedules
// ---------------------------------------------------------------------------------------------
interface HttpJob {
  name: string;
  schedule: string;
  command: string;
}

async function runDueHttpJobs(db: postgres.Sql, minute: Date): Promise<void> {
  let jobs: HttpJob[];
  try {
    jobs = await db<HttpJob[]>`select name, schedule, command from private.jobs where kind = 'http' and enabled`;
  } catch (err) {
    // The database restarting (a reset) is no reason to stop scheduling.
    log({ level: 'warn', msg: 'job scheduler: cannot read private.jobs', error: (err as Error).message });
    return;
  }
  for (const job of jobs) {
    let due: boolean;
    try {
      due = cronMatches(job.schedule, minute);
    } catch (err) {
      log({ level: 'warn', msg: 'job scheduler: bad schedule', job: job.name, error: (err as Error).message });
      continue;
    }
    if (!due) continue;
    const started = performance.now();
    fetch(`http://127.0.0.1:${PORT}/functions/v1/${job.command}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${SERVICE_ROLE_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ job: job.name }),
    }).then(async (res) => {
      log({ level: 'info', msg: 'job', job: job.name, status: res.status, ms: Math.round(performance.now() - started), result: await res.text() });
    }).catch((err) => log({ level: 'error', msg: 'job failed', job: job.name, error: (err as Error).message }));
  }
}

function startJobScheduler(): void {
  const db = postgres(requireEnv('SUPABASE_DB_URL'), { max: 1, onnotice: () => {} });
  const tick = () => {
    const minute = new Date();
    minute.setUTCSeconds(0, 0);
    void runDueHttpJobs(db, minute);
    // A second past the next full minute, so `minute` is the one that just began.
    setTimeout(tick, 61000 - (Date.now() % 60000));
  };
  setTimeout(tick, 61000 - (Date.now() % 60000));
  log({ level: 'info', msg: 'job scheduler on: calling HTTP jobs of private.jobs on their schedules' });
}

if (Deno.env.get('LOCAL_JOB_SCHEDULER') === 'on') startJobScheduler();

let stopping = false;
async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  log({ level: 'info', msg: 'functions-server stopping', signal });
  // In-flight requests get a moment to finish; open DB pools die with the process.
  await Promise.race([server.shutdown(), new Promise((r) => setTimeout(r, 3000))]);
  Deno.exit(0);
}
Deno.addSignalListener('SIGINT', () => void shutdown('SIGINT'));
Deno.addSignalListener('SIGTERM', () => void shutdown('SIGTERM'));
