// storage.objects and storage.buckets as the caller, the way the Storage API queries them: each
// unit of work is a transaction that first takes the caller's role and JWT claims
// (set_config(..., true): they end with the transaction), so the policies on storage.objects
// decide, and auth.uid()/auth.jwt() see the caller. Set like functions/_shared/db.ts sets them,
// plus request.jwt.claim.role and storage.operation, which Storage also sets
// (src/internal/database/postgres/scope.ts).
// The connection (SUPABASE_DB_URL) must be a role that may switch to anon, authenticated and
// service_role: postgres locally.
import postgres from 'postgres';
import type { Caller } from './auth.ts';
import { config } from './config.ts';
import { mapPg } from './errors.ts';

export type Tx = postgres.TransactionSql;

let pool: postgres.Sql | undefined;

function db(): postgres.Sql {
  pool ??= postgres(config().dbUrl, {
    max: 10,
    idle_timeout: 30,
    connect_timeout: 10,
    onnotice: () => {},
    connection: { application_name: 'local-storage-api' },
  });
  return pool;
}

async function scope(tx: Tx, caller: Caller, operation: string): Promise<void> {
  await tx`
    select set_config('role', ${caller.role}, true),
           set_config('request.jwt.claim.role', ${caller.role}, true),
           set_config('request.jwt.claims', ${JSON.stringify(caller.claims)}, true),
           set_config('request.jwt.claim.sub', ${caller.owner ?? ''}, true),
           set_config('storage.operation', ${operation}, true)`;
}

/**
 * Runs fn in a transaction as `caller`; it commits when fn resolves. Database errors come out
 * as the Storage errors they map to (src/storage/database/errors.ts).
 */
export async function asCaller<T>(caller: Caller, operation: string, fn: (tx: Tx) => Promise<T>): Promise<T> {
  try {
    return await db().begin(async (tx) => {
      await scope(tx, caller, operation);
      return await fn(tx);
    }) as T;
  } catch (err) {
    return mapPg(err);
  }
}

const ROLLBACK = Symbol('rollback');

/**
 * Storage's testPermission: runs fn as the caller and rolls it back, so a write is tried
 * (policies, constraints) without keeping it.
 */
export async function testPermission(caller: Caller, operation: string, fn: (tx: Tx) => Promise<unknown>): Promise<void> {
  try {
    await asCaller(caller, operation, async (tx) => {
      await fn(tx);
      throw ROLLBACK;
    });
  } catch (err) {
    if (err !== ROLLBACK) throw err;
  }
}

/** The pool's end, for a clean shutdown in tests. */
export async function closeStorageDb(): Promise<void> {
  const p = pool;
  pool = undefined;
  await p?.end({ timeout: 5 });
}

// ---------------------------------------------------------------------------------------------
// Per-object mutual exclusion inside this process
// ---------------------------------------------------------------------------------------------
// Row locks order writers of one object in the database; this orders them on disk too, so the
// bytes of an object change only together with its row (rename, commit or undo) and two writers
// never interleave their file steps. The gateway is one process, so an in-process lock suffices.
const locks = new Map<string, Promise<void>>();

export async function withObjectLocks<T>(keys: string[], fn: () => Promise<T>): Promise<T> {
  const sorted = [...new Set(keys)].sort();
  const releases: (() => void)[] = [];
  try {
    for (const key of sorted) {
      const previous = locks.get(key) ?? Promise.resolve();
      let release!: () => void;
      const current = new Promise<void>((resolve) => (release = resolve));
      const chained = previous.then(() => current);
      locks.set(key, chained);
      releases.push(() => {
        release();
        if (locks.get(key) === chained) locks.delete(key);
      });
      await previous;
    }
    return await fn();
  } finally {
    for (const release of releases.reverse()) release();
  }
}
