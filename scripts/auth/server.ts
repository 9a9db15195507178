// The local stand-in for Supabase Auth (GoTrue) on the gateway's /auth/v1: the part of its HTTP
// API supabase-js calls, over GoTrue's own auth schema. On a hosted project or `supabase start`
// the real Auth serves these routes and none of this runs. The README's "Auth locally" says what
// is served and what is not.
//
// Like Kong in front of GoTrue, requests need an `apikey` (anon or service_role) except /verify
// (the links in mails, opened by a browser); CORS as GoTrue answers browsers, with the API version
// header exposed so supabase-js reads error codes.
import { corsHeaders } from '../../functions/_shared/cors.ts';
import { handleAdmin } from './admin.ts';
import { type AuthConfig, loadAuthConfig } from './config.ts';
import type { Ctx } from './context.ts';
import { AuthError, errorResponse } from './errors.ts';
import { handleMagicLink, handleOtp, handleRecover, handleResend } from './otp.ts';
import { json } from './respond.ts';
import { handleHealth, handleJwks, handleSettings } from './settings.ts';
import { handleSignup } from './signup.ts';
import { handleToken } from './token.ts';
import { handleGetUser, handleLogout, handleUpdateUser } from './user.ts';
import { handleVerify } from './verify.ts';

const PREFIX = '/auth/v1';

const AUTH_CORS: Record<string, string> = {
  ...corsHeaders,
  'access-control-allow-headers': [
    corsHeaders['access-control-allow-headers'],
    'accept', 'x-client-ip', 'x-jwt-aud', 'x-use-cookie', 'x-supabase-api-version',
  ].join(', '),
  'access-control-expose-headers': ['x-request-id', 'x-total-count', 'link', 'x-supabase-api-version'].join(', '),
};

/** Paths Kong serves without key-auth: the mail links and the OAuth redirects. */
const OPEN_PATHS = new Set(['/verify', '/callback', '/authorize']);

/** Features of Supabase Auth the local stack does not serve, answered as disabled. */
const UNSUPPORTED: [RegExp, string][] = [
  [/^\/authorize$|^\/callback$/, 'OAuth sign-in'],
  [/^\/sso(\/|$)|^\/saml(\/|$)/, 'SSO (SAML)'],
  [/^\/factors(\/|$)/, 'MFA'],
  [/^\/passkeys(\/|$)/, 'Passkeys'],
  [/^\/reauthenticate$/, 'Reauthentication'],
  [/^\/user\/identities(\/|$)/, 'Identity linking'],
  [/^\/oauth(\/|$)/, 'The OAuth server'],
  [/^\/admin\/(sso|oauth|audit|custom-providers)(\/|$)|^\/admin\/users\/[^/]+\/(factors|passkeys)(\/|$)/, 'This admin API'],
];

let config: AuthConfig | undefined;

function loadConfig(): AuthConfig {
  config ??= loadAuthConfig(Deno.readTextFileSync(new URL('../../supabase/config.toml', import.meta.url)));
  return config;
}

type Route = (ctx: Ctx, path: string) => Promise<Response | null> | Response | null;

/** method → path → handler; a path with other methods answers 405 as GoTrue's router does. */
const ROUTES: Record<string, Record<string, (ctx: Ctx) => Promise<Response> | Response>> = {
  '/health': { GET: handleHealth },
  '/settings': { GET: handleSettings },
  '/.well-known/jwks.json': { GET: handleJwks },
  '/signup': { POST: handleSignup },
  '/token': { POST: handleToken },
  '/otp': { POST: handleOtp },
  '/magiclink': { POST: handleMagicLink },
  '/recover': { POST: handleRecover },
  '/resend': { POST: handleResend },
  '/verify': { GET: handleVerify, POST: handleVerify },
  '/user': { GET: handleGetUser, PUT: handleUpdateUser },
  '/logout': { POST: handleLogout },
};

const route: Route = async (ctx, path) => {
  const table = ROUTES[path.replace(/\/+$/, '') || '/'];
  if (table) {
    const handler = table[ctx.req.method];
    return handler ? await handler(ctx) : new Response(null, { status: 405 });
  }
  const admin = await handleAdmin(ctx, path);
  if (admin) return admin;
  for (const [pattern, feature] of UNSUPPORTED) {
    if (pattern.test(path)) {
      throw new AuthError(400, 'feature_disabled', `${feature} is not served by the local Auth: use supabase start or a hosted project`);
    }
  }
  return null;
};

function apiKeyProblem(cfg: AuthConfig, req: Request, url: URL, path: string): Response | null {
  if (OPEN_PATHS.has(path)) return null;
  const apikey = req.headers.get('apikey') ?? url.searchParams.get('apikey');
  if (!apikey) return json({ message: 'No API key found in request' }, 401);
  if (!cfg.apiKeys.has(apikey)) return json({ message: 'Invalid authentication credentials' }, 401);
  return null;
}

function withCors(res: Response, requestId: string): Response {
  const headers = new Headers(res.headers);
  for (const [k, v] of Object.entries(AUTH_CORS)) headers.set(k, v);
  headers.set('x-request-id', requestId);
  return new Response(res.body, { status: res.status, statusText: res.statusText, headers });
}

/**
 * Serves a request to /auth/v1/*; `url` is the request's URL, `clientAddress` the peer the gateway
 * accepted it from (the key of the per-address rate limits, as GoTrue's rate-limit header is on
 * hosted).
 */
export async function handleAuth(req: Request, url: URL, clientAddress = '127.0.0.1'): Promise<Response> {
  const requestId = req.headers.get('x-request-id') || crypto.randomUUID();
  if (req.method === 'OPTIONS') return withCors(new Response(null, { status: 204 }), requestId);
  const path = url.pathname.slice(PREFIX.length) || '/';
  let cfg: AuthConfig;
  try {
    cfg = loadConfig();
  } catch (err) {
    console.log(JSON.stringify({ level: 'error', msg: 'auth: cannot load its configuration', error: (err as Error).message }));
    return withCors(json({ message: 'Auth is misconfigured, see the gateway log' }, 500), requestId);
  }
  const keyProblem = apiKeyProblem(cfg, req, url, path);
  if (keyProblem) return withCors(keyProblem, requestId);
  const ctx: Ctx = { config: cfg, req, url, ip: clientAddress, userAgent: req.headers.get('user-agent') ?? '', requestId };
  let res: Response;
  try {
    res = (await route(ctx, path)) ?? new Response('404 page not found\n', { status: 404, headers: { 'content-type': 'text/plain; charset=utf-8' } });
  } catch (err) {
    if (!(err instanceof AuthError) || err.status >= 500) {
      // Never the request body: it may hold a password. The message and what lay underneath only.
      console.log(JSON.stringify({
        level: 'error', msg: 'auth error', path, request_id: requestId,
        error: err instanceof Error ? err.message : String(err),
        internal: err instanceof AuthError ? err.internal : undefined,
      }));
    }
    res = errorResponse(req, err, requestId);
  }
  return withCors(res, requestId);
}
