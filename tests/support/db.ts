// An admin (postgres superuser) connection for arranging test data, bypassing RLS, and pools of
// real parallel connections for concurrency tests.
// Importing this module from a test file closes the shared pool after that file's tests.
import postgres from 'postgres';
import { afterAll, beforeAll } from 'vitest';
import { DB_URL } from '../../scripts/lib/config.mjs';

export const sql = postgres(DB_URL, { max: 4, onnotice: () => {} });

afterAll(async () => {
  await sql.end({ timeout: 5 });
});

export type Sql = postgres.Sql;

/**
 * A pool of `max` real connections, named so that tests can see their own sessions in
 * pg_stat_activity. A statement timeout bounds any hang (a lost wake-up, a lock never freed).
 * The caller ends it.
 */
export function connectionPool(max: number, applicationName: string): Sql {
  return postgres(DB_URL, {
    max,
    onnotice: () => {},
    connection: { application_name: applicationName, statement_timeout: 20000 },
  });
}

/**
 * Sets a row of private.settings while the calling file's tests run, and puts the old value back
 * after them. Call it at the top of a file whose subject is not that limit (one owner creating
 * many organizations, say).
 */
export function useSetting(key: string, value: unknown): void {
  let previous: unknown;
  beforeAll(async () => {
    const [row] = await sql<{ value: unknown }[]>`select value from private.settings where key = ${key}`;
    if (!row) throw new Error(`no setting ${key}`);
    previous = row.value;
    await sql`update private.settings set value = ${sql.json(value as never)} where key = ${key}`;
  });
  afterAll(async () => {
    if (previous !== undefined) await sql`update private.settings set value = ${sql.json(previous as never)} where key = ${key}`;
  });
}
