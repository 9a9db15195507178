// The local Auth server's database connections. Like GoTrue it works as supabase_auth_admin, the
// owner of the auth schema; the triggers other chapters put on auth.users (profiles) run as
// their own security-definer owners. Passwords are hashed by pgcrypto (bcrypt, GoTrue's $2a$
// format), which lives in the `extensions` schema that supabase_auth_admin has no usage on, as
// on a hosted project: hashing uses a second small pool as SUPABASE_DB_URL's role and only
// computes there, it never writes.
import postgres from 'postgres';
import type { AuthConfig } from './config.ts';

export type Sql = postgres.Sql;
export type Tx = postgres.TransactionSql;
/** Either a pool or a transaction: helpers that only read take both. */
export type Db = Sql | Tx;

let authPool: Sql | undefined;
let cryptoPool: Sql | undefined;

/** The pool writes go through (supabase_auth_admin). */
export function authDb(config: AuthConfig): Sql {
  authPool ??= postgres(config.dbUrl, { max: 10, idle_timeout: 30, connect_timeout: 10, onnotice: () => {} });
  return authPool;
}

/** The pool that may call extensions.crypt (hashing only). */
export function cryptoDb(config: AuthConfig): Sql {
  cryptoPool ??= postgres(config.cryptoDbUrl, { max: 4, idle_timeout: 30, connect_timeout: 10, onnotice: () => {} });
  return cryptoPool;
}

/**
 * Runs `fn` in one transaction of the auth pool: every request that writes does all of its writes
 * there, so a failure (a mail the hook refused, a constraint) leaves nothing half done.
 */
export async function transaction<T>(config: AuthConfig, fn: (tx: Tx) => Promise<T>): Promise<T> {
  return await authDb(config).begin(fn) as T;
}

/** A postgres.js error's SQLSTATE, if it is one. */
export function sqlState(err: unknown): string | undefined {
  return err instanceof postgres.PostgresError ? err.code : undefined;
}
