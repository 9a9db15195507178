// The local API gateway: plays the part Kong and the edge runtime play on a Supabase project, so
// supabase-js pointed at http://127.0.0.1:54321 works as against a hosted one.
//   /rest/v1/*             -> PostgREST (prefix stripped), after an API-key check like Kong's key-auth
//   /functions/v1/<name>/* -> the `handler` exported by that function's entrypoint, JWT verified
//                             first unless `verify_jwt = false` in supabase/config.toml
// Run: deno run --allow-all --config deno.json scripts/functions-server.ts
// Env: PORT (54321), POSTGREST_URL (http://127.0.0.1:54330), JWT_SECRET, SUPABASE_ANON_KEY,
// SUPABASE_SERVICE_ROLE_KEY, and what the functions read (SUPABASE_URL, SUPABASE_DB_URL).
// Functions run in this process, imported once on first call: restart the gateway after editing one.
import { parse } from 'smol-toml';
import { jwtVerify } from 'jose';
import { corsHeaders } from '../functions/_shared/cors.ts';

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

const PORT = Number(Deno.env.get('PORT') ?? 54321);
const POSTGREST_URL = (Deno.env.get('POSTGREST_URL') ?? 'http://127.0.0.1:54330').replace(/\/+$/, '');
const JWT_KEY = new TextEncoder().encode(requireEnv('JWT_SECRET'));
// Kong's key-auth consumers: the only keys accepted as `apikey`.
const API_KEYS = new Set([requireEnv('SUPABASE_ANON_KEY'), requireEnv('SUPABASE_SERVICE_ROLE_KEY')]);

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

// Connection-level headers a proxy must not forward (RFC 9110 §7.6.1), plus host.
const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer',
  'transfer-encoding', 'upgrade', 'host', 'content-length'];

async function proxyRest(req: Request, url: URL): Promise<Response> {
  const apikey = req.headers.get('apikey') ?? url.searchParams.get('apikey');
  // Kong answers preflights (cors plugin) before key-auth: browsers never send apikey on OPTIONS.
  if (req.method !== 'OPTIONS') {
    if (!apikey && !req.headers.has('authorization')) {
      return jsonResponse({ message: 'No API key found in request' }, 401);
    }
    if (apikey && !API_KEYS.has(apikey)) return jsonResponse({ message: 'Invalid authentication credentials' }, 401);
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

  // Request bodies are small JSON documents: buffer them (no chunked upload quirks); stream the answer.
  const body = req.method === 'GET' || req.method === 'HEAD' ? undefined : await req.arrayBuffer();
  let upstream: Response;
  try {
    upstream = await fetch(target, { method: req.method, headers, body, redirect: 'manual' });
  } catch {
    return jsonResponse({ message: 'An invalid response was received from the upstream server' }, 502);
  }
  const resHeaders = new Headers(upstream.headers);
  for (const h of HOP_BY_HOP) resHeaders.delete(h);
  return new Response(upstream.body, { status: upstream.status, statusText: upstream.statusText, headers: resHeaders });
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
  const forwarded = new Request(new URL(`/${name}${rest}${url.search}`, url), {
    method: req.method,
    headers: req.headers,
    body: req.body,
  });
  try {
    return await handler(forwarded);
  } catch (err) {
    // The shared wrapper catches errors; this only guards a function that does not use it.
    log({ level: 'error', msg: 'function threw', fn: name, error: (err as Error).message });
    return jsonResponse({ error: { code: 'internal_error', message: 'Internal error' } }, 500);
  }
}

function route(req: Request): Promise<Response> {
  const url = new URL(req.url);
  if (url.pathname === '/rest/v1' || url.pathname.startsWith('/rest/v1/')) return proxyRest(req, url);
  const fn = /^\/functions\/v1\/([^/]+)(\/.*)?$/.exec(url.pathname);
  if (fn) return invokeFunction(req, url, decodeURIComponent(fn[1]), fn[2] ?? '');
  return Promise.resolve(jsonResponse({ message: 'no Route matched with those values' }, 404));
}

const server = Deno.serve({
  port: PORT,
  hostname: '127.0.0.1',
  onListen: ({ hostname, port }) =>
    log({ level: 'info', msg: 'functions-server listening', url: `http://${hostname}:${port}`, functions: [...FUNCTIONS.keys()] }),
}, async (req) => {
  const started = performance.now();
  let res: Response;
  try {
    res = await route(req);
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
