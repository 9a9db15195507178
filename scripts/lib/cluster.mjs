// A Postgres 15 cluster from Debian's packages, owned by the Debian `postgres` OS user when we
// run as root (Postgres refuses to run as root). The stack's database is one; the test that
// deploys the migrations to a database with hosted Supabase's roles and defaults makes another.
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { LOCAL_DIR, ROOT } from './config.mjs';
import { StackError, assertPortFree, say, tail } from './processes.mjs';

export const PG_VERSION = 15;
export const PG_BIN = `/usr/lib/postgresql/${PG_VERSION}/bin`;
export const PG_SHARE = `/usr/share/postgresql/${PG_VERSION}`;
const IS_ROOT = process.getuid?.() === 0;
const PG_OS_USER = IS_ROOT ? 'postgres' : null;

export function runAsPg(cmd, args, opts = {}) {
  const [c, a] = PG_OS_USER ? ['runuser', ['-u', PG_OS_USER, '--', cmd, ...args]] : [cmd, args];
  return spawnSync(c, a, { encoding: 'utf8', ...opts });
}

/**
 * Where a cluster named `name` lives: .local/<name>, unless the Postgres OS user cannot reach this
 * checkout (a clone under a private home directory): then under its own home, keyed by the
 * checkout's path.
 */
export function clusterHome(name) {
  const local = path.join(LOCAL_DIR, name);
  if (!PG_OS_USER) return local;
  fs.mkdirSync(LOCAL_DIR, { recursive: true, mode: 0o755 });
  const reachable = spawnSync('runuser', ['-u', PG_OS_USER, '--', 'test', '-x', LOCAL_DIR]).status === 0;
  if (reachable) return local;
  const key = crypto.createHash('sha1').update(ROOT).digest('hex').slice(0, 10);
  return `/var/lib/postgresql/saas-backend-${key}${name === 'db' ? '' : `-${name}`}`;
}

/** A cluster's files: home, data directory and server log. */
export function clusterPaths(name) {
  const home = clusterHome(name);
  return { home, data: path.join(home, 'data'), log: path.join(home, 'postgres.log') };
}

export function clusterIsRunning({ data }) {
  if (!fs.existsSync(path.join(data, 'PG_VERSION'))) return false;
  return runAsPg(`${PG_BIN}/pg_ctl`, ['-D', data, 'status']).status === 0;
}

/**
 * Creates the cluster on first use (password auth over TCP for `superuser`, whose password is
 * `password`) and appends `conf` to its postgresql.conf. Returns false when it already existed.
 */
export function initCluster({ home, data }, { superuser = 'postgres', password = 'postgres', conf }) {
  if (fs.existsSync(path.join(data, 'PG_VERSION'))) return false;
  say(`creating the Postgres ${PG_VERSION} cluster in ${data}`);
  fs.mkdirSync(home, { recursive: true, mode: 0o700 });
  const pwFile = path.join(home, '.pw');
  fs.writeFileSync(pwFile, `${password}\n`, { mode: 0o600 });
  if (PG_OS_USER) spawnSync('chown', ['-R', `${PG_OS_USER}:${PG_OS_USER}`, home]);
  const r = runAsPg(`${PG_BIN}/initdb`, [
    '-D', data, '-U', superuser, '--pwfile', pwFile, '-E', 'UTF8', '--locale=C.UTF-8',
    '--auth-host=scram-sha-256', '--auth-local=trust',
  ]);
  fs.rmSync(pwFile, { force: true });
  if (r.status !== 0) {
    fs.rmSync(data, { recursive: true, force: true });
    throw new StackError(`initdb failed:\n${r.stdout}\n${r.stderr}`);
  }
  fs.appendFileSync(path.join(data, 'postgresql.conf'), conf);
  return true;
}

/** Starts the cluster on `port` unless it runs; returns whether it started it. */
export async function startCluster(paths, { port, what = 'Postgres' }) {
  if (clusterIsRunning(paths)) return false;
  await assertPortFree(port, what);
  say(`starting ${what} on 127.0.0.1:${port}`);
  const r = runAsPg(`${PG_BIN}/pg_ctl`, ['-D', paths.data, '-l', paths.log, '-w', '-t', '60', 'start']);
  if (r.status !== 0) {
    throw new StackError(`${what} did not start (pg_ctl exit ${r.status}). Last lines of ${paths.log}:\n${tail(paths.log)}`);
  }
  return true;
}

export function stopCluster(paths) {
  if (!clusterIsRunning(paths)) return false;
  runAsPg(`${PG_BIN}/pg_ctl`, ['-D', paths.data, '-m', 'fast', '-w', 'stop']);
  return true;
}
