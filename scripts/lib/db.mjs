// Building the local database: the platform stand-in, the migrations (through the Supabase CLI, as
// on a hosted project), the seed. Shared by the stack script and the test runner.
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import postgres from 'postgres';
import { DB_URL, ROOT } from './config.mjs';

export const SQL_LOCAL_DIR = path.join(ROOT, 'sql/local');
export const SEED_FILE = path.join(ROOT, 'supabase/seed.sql');
const SUPABASE_BIN = path.join(ROOT, 'node_modules/.bin/supabase');

/** A short-lived admin connection; `database` picks another database of the cluster, `url` another cluster. */
export function connect({ database = 'postgres', max = 1, url: base = DB_URL } = {}) {
  const url = new URL(base);
  url.pathname = `/${database}`;
  return postgres(url.toString(), { max, onnotice: () => {}, connect_timeout: 5 });
}

/** Runs every statement of a SQL file in one simple-protocol round trip. */
export async function runSqlFile(sql, file) {
  const text = fs.readFileSync(file, 'utf8');
  try {
    await sql.unsafe(text).simple();
  } catch (error) {
    throw new Error(`${path.relative(ROOT, file)}: ${error.message}`);
  }
}

/** Applies sql/local/*.sql in name order: the Supabase platform stand-in (roles, auth, storage, ...). */
export async function applyPlatform(sql) {
  const files = fs.readdirSync(SQL_LOCAL_DIR).filter((f) => f.endsWith('.sql')).sort();
  for (const file of files) await runSqlFile(sql, path.join(SQL_LOCAL_DIR, file));
}

/** Applies pending migrations with the Supabase CLI, exactly as `supabase db push` does for a hosted project. */
export function pushMigrations(url = DB_URL) {
  const result = spawnSync(
    SUPABASE_BIN,
    ['db', 'push', `--remote=${url}`, '--include-all', '--yes', '--workdir', ROOT],
    { cwd: ROOT, encoding: 'utf8', env: { ...process.env, SUPABASE_YES: '1', DO_NOT_TRACK: '1' } },
  );
  if (result.status !== 0) {
    throw new Error(`supabase db push failed:\n${result.stdout}\n${result.stderr}`);
  }
  return result.stdout + result.stderr;
}

/**
 * Drops and recreates the `postgres` database, then applies the platform stand-in, the migrations
 * and the seed. Roles are cluster-wide and survive; the platform SQL is idempotent over them.
 */
export async function rebuildDatabase({ log = () => {} } = {}) {
  const admin = connect({ database: 'template1' });
  try {
    await admin.unsafe('drop database if exists postgres with (force)');
    await admin.unsafe('create database postgres');
  } finally {
    await admin.end();
  }
  const sql = connect();
  try {
    log('applying the platform stand-in (sql/local)');
    await applyPlatform(sql);
    log('applying migrations (supabase db push)');
    pushMigrations();
    log('loading supabase/seed.sql');
    await runSqlFile(sql, SEED_FILE);
    await sql.unsafe(`notify pgrst, 'reload schema'`);
  } finally {
    await sql.end();
  }
}

/** True when the database has been built (the platform stand-in is there). */
export async function isDatabaseBuilt() {
  const sql = connect();
  try {
    const [row] = await sql`select to_regclass('auth.users') is not null as built`;
    return row.built;
  } finally {
    await sql.end();
  }
}

