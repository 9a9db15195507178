// The local stack's fixed facts: ports, URLs and the Supabase CLI's well-known local keys.
// Every script and test reads them from here, so there is one place to change a port.
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { SignJWT } from 'jose';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const LOCAL_DIR = path.join(ROOT, '.local');

export const PORTS = {
  gateway: 54321, // Kong's place: /rest/v1 and /functions/v1
  db: 54322,
  postgrest: 54330, // internal, reached through the gateway
  postgrestAdmin: 54331, // PostgREST's /live and /ready
  // tests/hosted: a throwaway database with hosted Supabase's roles and defaults, and its PostgREST
  hostedDb: 54332,
  hostedRest: 54333,
  hostedRestAdmin: 54334,
  mailbox: 54324, // the local mailbox page (Inbucket/Mailpit's place in the Supabase CLI)
  stripe: 54325, // the local fake of Stripe's API, when STRIPE_SECRET_KEY is not set
};

export const API_URL = `http://127.0.0.1:${PORTS.gateway}`;
export const DB_URL = `postgresql://postgres:postgres@127.0.0.1:${PORTS.db}/postgres`;

// The Supabase CLI's local defaults (the same on every developer machine; never used in production).
export const JWT_SECRET = 'super-secret-jwt-token-with-at-least-32-characters-long';
// The secrets the email functions verify and sign with: fixed local defaults, overridable from
// the environment (a real Resend webhook secret, the hook secret of a hosted project's Auth).
export const SEND_EMAIL_HOOK_SECRET = process.env.SEND_EMAIL_HOOK_SECRET ?? 'v1,whsec_bG9jYWwtc2VuZC1lbWFpbC1ob29rLXNlY3JldC0zMmIh';
export const RESEND_WEBHOOK_SECRET = process.env.RESEND_WEBHOOK_SECRET ?? 'whsec_bG9jYWwtcmVzZW5kLXdlYmhvb2stc2VjcmV0LTMyYiEh';
export const EMAIL_UNSUBSCRIBE_SECRET = process.env.EMAIL_UNSUBSCRIBE_SECRET ?? 'local-email-unsubscribe-secret-with-32-characters';

// Billing: with STRIPE_SECRET_KEY (a test-mode key) the functions talk to Stripe and
// STRIPE_WEBHOOK_SECRET is the one `stripe listen` prints; without it the stack runs the local
// fake of Stripe's API (scripts/stripe-fake.ts) with these fixed defaults.
export const STRIPE_FAKE = !process.env.STRIPE_SECRET_KEY;
export const STRIPE_FAKE_URL = `http://127.0.0.1:${PORTS.stripe}`;
export const STRIPE_SECRET_KEY = process.env.STRIPE_SECRET_KEY ?? 'sk_test_fake_local';
export const STRIPE_WEBHOOK_SECRET = process.env.STRIPE_WEBHOOK_SECRET ??
  'whsec_e95bb41d59db37142c422398c17bef35d9dba6e229fa56094f3d43d895308fa1';

export const ANON_KEY =
  'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZS1kZW1vIiwicm9sZSI6ImFub24iLCJleHAiOjE5ODM4MTI5OTZ9.CRXP1A7WOeoJeXxjNni43kdQwgnWNReilDMblYTn_I0';
export const SERVICE_ROLE_KEY =
  'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZS1kZW1vIiwicm9sZSI6InNlcnZpY2Vfcm9sZSIsImV4cCI6MTk4MzgxMjk5Nn0.EGIM96RAZx35lJzdJsyH-qQwv8Hdp7fsn3W0YpN81IU';

/**
 * Signs an access token shaped like the ones GoTrue issues, so PostgREST, the gateway and
 * RLS see a signed-in user. `appMetadata` lands in `app_metadata` (e.g. `{ platform_admin: true }`).
 * `sessionId` is its session_id claim: a row of auth.sessions for Auth's own endpoints (GET /user,
 * logout) and PostgREST's session check (public.check_request) to accept the token.
 * @param {{ id: string, email: string, appMetadata?: object, userMetadata?: object, expiresIn?: string, sessionId?: string }} subject
 */
export async function signUserToken({ id, email, appMetadata = {}, userMetadata = {}, expiresIn = '1h', sessionId = String(crypto.randomUUID()) }) {
  return new SignJWT({
    sub: id,
    email,
    role: 'authenticated',
    aud: 'authenticated',
    aal: 'aal1',
    session_id: sessionId,
    is_anonymous: false,
    app_metadata: { provider: 'email', providers: ['email'], ...appMetadata },
    user_metadata: userMetadata,
  })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuer(`${API_URL}/auth/v1`)
    .setIssuedAt()
    .setExpirationTime(expiresIn)
    .sign(new TextEncoder().encode(JWT_SECRET));
}

/**
 * The environment of the gateway and the edge functions it runs: what a hosted project gives
 * every function (SUPABASE_URL, the keys, SUPABASE_DB_URL), the secrets set on deploy, and the
 * local stack's own (the mail and storage folders). `port` and `url` place a second gateway
 * (tests) elsewhere; its functions then call themselves there.
 */
export function functionsEnv({ port = PORTS.gateway, url = API_URL } = {}) {
  return {
    PORT: String(port),
    POSTGREST_URL: `http://127.0.0.1:${PORTS.postgrest}`,
    SUPABASE_URL: url,
    SUPABASE_ANON_KEY: ANON_KEY,
    SUPABASE_SERVICE_ROLE_KEY: SERVICE_ROLE_KEY,
    SUPABASE_DB_URL: DB_URL,
    JWT_SECRET,
    SEND_EMAIL_HOOK_SECRET,
    RESEND_WEBHOOK_SECRET,
    EMAIL_UNSUBSCRIBE_SECRET,
    STRIPE_SECRET_KEY,
    STRIPE_WEBHOOK_SECRET,
    ...(STRIPE_FAKE ? { STRIPE_API_BASE: STRIPE_FAKE_URL } : {}),
    LOCAL_STORAGE_DIR: path.join(LOCAL_DIR, 'storage'),
    LOCAL_MAIL_DIR: path.join(LOCAL_DIR, 'mail'),
  };
}
