// An admin (postgres superuser) connection for arranging test data, bypassing RLS.
// Importing this module from a test file closes the pool after that file's tests.
import postgres from 'postgres';
import { afterAll } from 'vitest';
import { DB_URL } from '../../scripts/lib/config.mjs';

export const sql = postgres(DB_URL, { max: 4, onnotice: () => {} });

afterAll(async () => {
  await sql.end({ timeout: 5 });
});
