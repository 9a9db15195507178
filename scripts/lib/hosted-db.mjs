// A throwaway database shaped like a hosted Supabase project's: its own cluster on
// PORTS.hostedDb whose superuser is supabase_admin, with `postgres` an ordinary role
// (sql/hosted), the platform stand-in (sql/local) and the migrations pushed by the Supabase CLI
// as `postgres`, as `supabase db push` does against a hosted project. tests/hosted runs the main
// flows there, so a migration that leans on superuser rights or on default grants fails in
// `npm test` instead of on deploy.
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { PORTS, ROOT } from './config.mjs';
import { applyPlatform, connect, pushMigrations, runSqlFile } from './db.mjs';
import { clusterPaths, initCluster, startCluster, stopCluster } from './cluster.mjs';
import { postgrestBinary, writePostgrestConfig } from './postgrest.mjs';
import { waitFor } from './processes.mjs';

const PATHS = clusterPaths('hosted-db');
const ADMIN_URL = `postgresql://supabase_admin:postgres@127.0.0.1:${PORTS.hostedDb}/postgres`;
export const HOSTED_DB_URL = `postgresql://postgres:postgres@127.0.0.1:${PORTS.hostedDb}/postgres`;

// Disposable: no durability needed, only pg_cron as on the real thing.
const CONF = `
listen_addresses = '127.0.0.1'
port = ${PORTS.hostedDb}
unix_socket_directories = ''
max_connections = 50
shared_preload_libraries = 'pg_cron'
cron.database_name = 'postgres'
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
`;

export const HOSTED_REST_URL = `http://127.0.0.1:${PORTS.hostedRest}`;
let postgrest;

/**
 * Builds the database from scratch and starts a PostgREST for it (configured as the stack's);
 * returns the `postgres` URL and the PostgREST URL.
 */
export async function createHostedDatabase() {
  stopCluster(PATHS);
  fs.rmSync(PATHS.home, { recursive: true, force: true });
  initCluster(PATHS, { superuser: 'supabase_admin', conf: CONF });
  await startCluster(PATHS, { port: PORTS.hostedDb, what: 'the hosted-defaults database' });
  const admin = connect({ url: ADMIN_URL });
  try {
    await runSqlFile(admin, path.join(ROOT, 'sql/hosted/00_postgres_role.sql'));
    await applyPlatform(admin);
    await runSqlFile(admin, path.join(ROOT, 'sql/hosted/10_policy_grants.sql'));
  } finally {
    await admin.end();
  }
  pushMigrations(HOSTED_DB_URL);

  const conf = writePostgrestConfig(path.join(PATHS.home, 'postgrest.conf'),
    { dbPort: PORTS.hostedDb, port: PORTS.hostedRest, adminPort: PORTS.hostedRestAdmin });
  const log = fs.openSync(path.join(PATHS.home, 'postgrest.log'), 'a');
  postgrest = spawn(postgrestBinary(), [conf], { stdio: ['ignore', log, log] });
  fs.closeSync(log);
  await waitFor('PostgREST for the hosted-defaults database', async () => {
    const res = await fetch(`http://127.0.0.1:${PORTS.hostedRestAdmin}/ready`, { signal: AbortSignal.timeout(1000) });
    return res.ok;
  }, { child: postgrest });
  return { dbUrl: HOSTED_DB_URL, restUrl: HOSTED_REST_URL };
}

/** Stops PostgREST and the cluster and removes its files. */
export function dropHostedDatabase() {
  postgrest?.kill('SIGTERM');
  postgrest = undefined;
  stopCluster(PATHS);
  fs.rmSync(PATHS.home, { recursive: true, force: true });
}
