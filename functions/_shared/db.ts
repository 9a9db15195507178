// Database access over SUPABASE_DB_URL with postgres.js. Queries on behalf of a caller run in a
// transaction that takes the caller's role and JWT claims, the way PostgREST does, so the same
// RLS policies and auth.uid()/auth.jwt() apply here as through /rest/v1.
import postgres from 'postgres';
import type { Claims } from './auth.ts';
import { env } from './env.ts';
import { HttpError } from './errors.ts';

export type Sql = postgres.Sql;
export type Tx = postgres.TransactionSql;

let client: Sql | undefined;

/** The shared pool, created on first use. */
export function sql(): Sql {
  client ??= postgres(env().dbUrl, {
    // Supavisor's transaction pooler (port 6543) cannot keep named prepared statements.
    prepare: false,
    // An edge function instance serves few concurrent requests; keep the pooler's slots free.
    max: 3,
    idle_timeout: 20,
    connect_timeout: 10,
    onnotice: () => {},
  });
  return client;
}

/** Closes the pool (tests, shutdown). */
export async function closeDb(): Promise<void> {
  const c = client;
  client = undefined;
  await c?.end({ timeout: 5 });
}

// The only roles a token may make us take. A token signed with the project secret but claiming
// e.g. `postgres` must not become a superuser session.
const ALLOWED_ROLES = new Set(['anon', 'authenticated', 'service_role']);

async function inRole<T>(role: string, claims: Record<string, unknown>, fn: (tx: Tx) => Promise<T>): Promise<T> {
  if (!ALLOWED_ROLES.has(role)) throw new HttpError(401, 'invalid_jwt', 'Unsupported role claim');
  const result = await sql().begin(async (tx) => {
    // is_local = true: the settings end with the transaction, so a pooled connection never
    // carries one caller's identity into the next caller's queries.
    await tx`
      select set_config('role', ${role}, true),
             set_config('request.jwt.claims', ${JSON.stringify(claims)}, true),
             set_config('request.jwt.claim.sub', ${typeof claims.sub === 'string' ? claims.sub : ''}, true)`;
    // What PostgREST's pre-request check does (public.check_request): a token whose user was
    // deleted or whose session was signed out is refused here too (session_ended, 401).
    if (role === 'authenticated') await tx`select private.check_session()`;
    return await fn(tx);
  });
  return result as T;
}

/** Runs fn in a transaction as the caller (role and claims from their verified JWT): RLS applies. */
export function withUser<T>(claims: Claims, fn: (tx: Tx) => Promise<T>): Promise<T> {
  return inRole(claims.role, claims, fn);
}

/**
 * Runs fn as service_role on behalf of a caller: RLS is bypassed, but auth.uid() is the caller's
 * id (none for the service role itself), so what the SQL records as done by someone names them.
 */
export function withServiceRoleFor<T>(caller: Claims, fn: (tx: Tx) => Promise<T>): Promise<T> {
  const sub = caller.role === 'service_role' ? undefined : caller.sub;
  return inRole('service_role', { role: 'service_role', ...(sub ? { sub } : {}) }, fn);
}

/** Runs fn in a transaction as service_role (bypasses RLS, as the service_role key does). */
export function withServiceRole<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
  return inRole('service_role', { role: 'service_role' }, fn);
}
