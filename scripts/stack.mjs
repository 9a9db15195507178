#!/usr/bin/env node
// The local Supabase stack without Docker: Postgres 15 (+ pg_cron, pgTAP) from Debian packages,
// the real PostgREST 12, a Deno gateway that serves /rest/v1 and /functions/v1 on one port, and
// the mailbox page (port 54324) that shows the mail sent without RESEND_API_KEY, and the local
// fake of Stripe's API (port 54325) when STRIPE_SECRET_KEY is not set.
//
//   node scripts/stack.mjs up       start in the background, return once healthy
//   node scripts/stack.mjs start    the same in the foreground with logs; Ctrl-C stops it all
//   node scripts/stack.mjs down     stop everything
//   node scripts/stack.mjs status   what runs, where, with the keys
//   node scripts/stack.mjs reset    a fresh database with the platform, migrations and seed
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import {
  ROOT, LOCAL_DIR, PORTS, API_URL, DB_URL, JWT_SECRET, ANON_KEY, SERVICE_ROLE_KEY,
  SEND_EMAIL_HOOK_SECRET, RESEND_WEBHOOK_SECRET, EMAIL_UNSUBSCRIBE_SECRET, functionsEnv,
  STRIPE_FAKE, STRIPE_FAKE_URL, STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET,
} from './lib/config.mjs';
import Stripe from 'stripe';
import { connect } from './lib/db.mjs';
import { ensureStripePrices } from './lib/stripe-prices.mjs';
import { isDatabaseBuilt, pushMigrations, rebuildDatabase } from './lib/db.mjs';
import {
  RUN_DIR, StackError, assertPortFree, pidFile, readPid, say, stopPid, tail, waitFor,
} from './lib/processes.mjs';
import { planPackageInstall } from './lib/packages.mjs';
import { postgrestBinary, writePostgrestConfig } from './lib/postgrest.mjs';
import {
  PG_BIN, PG_SHARE, PG_VERSION, clusterIsRunning, clusterPaths, initCluster, startCluster, stopCluster,
} from './lib/cluster.mjs';

const LOG_DIR = path.join(LOCAL_DIR, 'logs');
const IS_ROOT = process.getuid?.() === 0;
const PG = clusterPaths('db');
const PG_LOG = PG.log;
const MAIL_DIR = path.join(LOCAL_DIR, 'mail');
const MAILBOX_URL = `http://127.0.0.1:${PORTS.mailbox}`;

// ---------------------------------------------------------------------------------------------
// Debian packages
// ---------------------------------------------------------------------------------------------
const REQUIRED_PACKAGES = [
  { pkg: `postgresql-${PG_VERSION}`, present: () => fs.existsSync(`${PG_BIN}/postgres`) },
  { pkg: `postgresql-${PG_VERSION}-cron`, present: () => fs.existsSync(`${PG_SHARE}/extension/pg_cron.control`) },
  { pkg: `postgresql-${PG_VERSION}-pgtap`, present: () => fs.existsSync(`${PG_SHARE}/extension/pgtap.control`) },
  { pkg: 'pgtap', present: () => commandExists('pg_prove') },
];

function commandExists(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

function ensurePackages() {
  const missing = REQUIRED_PACKAGES.filter((p) => !p.present()).map((p) => p.pkg);
  const plan = planPackageInstall(missing, { hasAptGet: commandExists('apt-get'), isRoot: IS_ROOT });
  if (plan.error) throw new StackError(plan.error);
  if (!plan.install) return;
  say(`installing Debian packages: ${plan.install.join(' ')} (apt-get)`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  for (const args of [['update', '-qq'], ['install', '-y', '-qq', ...plan.install]]) {
    const r = spawnSync('apt-get', args, { stdio: ['ignore', 'inherit', 'inherit'], env });
    if (r.status !== 0) throw new StackError(`apt-get ${args[0]} failed (exit ${r.status}); fix the apt error above and run this again`);
  }
}

/**
 * Starts a long-running service. In the background it is detached with its output in
 * .local/logs/<name>.log; in the foreground its lines are prefixed on our stdout.
 */
function startService(name, cmd, args, { env = {}, foreground = false } = {}) {
  const logFile = path.join(LOG_DIR, `${name}.log`);
  const fullEnv = { ...process.env, ...env };
  let child;
  if (foreground) {
    child = spawn(cmd, args, { cwd: ROOT, env: fullEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    for (const stream of [child.stdout, child.stderr]) prefixLines(stream, name);
  } else {
    const fd = fs.openSync(logFile, 'a');
    child = spawn(cmd, args, { cwd: ROOT, env: fullEnv, stdio: ['ignore', fd, fd], detached: true });
    fs.closeSync(fd);
    child.unref();
  }
  fs.writeFileSync(pidFile(name), String(child.pid));
  return { child, logFile };
}

function prefixLines(stream, name) {
  let buffered = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk) => {
    buffered += chunk;
    const lines = buffered.split('\n');
    buffered = lines.pop();
    for (const line of lines) process.stdout.write(`[${name}] ${line}\n`);
  });
}

// ---------------------------------------------------------------------------------------------
// Postgres
// ---------------------------------------------------------------------------------------------
// Password auth over TCP, pg_cron preloaded, tuned for a laptop.
const PG_CONF = `
# --- local Supabase stand-in (scripts/stack.mjs) ---
listen_addresses = '127.0.0.1'
port = ${PORTS.db}
unix_socket_directories = ''
max_connections = 200
shared_preload_libraries = 'pg_cron'
cron.database_name = 'postgres'
# A development database: commits do not wait for the WAL flush (fast tests), but the cluster
# stays crash-safe. Benchmarks turn synchronous_commit back on per session, as in production.
synchronous_commit = off
shared_buffers = 256MB
log_min_messages = warning
log_line_prefix = '%m [%p] %q%u@%d '
`;

const pgIsRunning = () => clusterIsRunning(PG);
const startPostgres = () => startCluster(PG, { port: PORTS.db, what: 'Postgres' });
const stopPostgres = () => stopCluster(PG);

// ---------------------------------------------------------------------------------------------
// PostgREST and the gateway
// ---------------------------------------------------------------------------------------------
async function httpOk(url) {
  const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
  await res.arrayBuffer();
  return res.ok;
}


// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------
async function isUp() {
  return (await healthy()) && pgIsRunning();
}

async function healthy() {
  try {
    return await httpOk(`${API_URL}/functions/v1/health`);
  } catch {
    return false;
  }
}

async function up({ foreground = false } = {}) {
  if (!foreground && (await isUp())) {
    say('already running');
    await status();
    return { alreadyRunning: true };
  }
  ensurePackages();
  for (const dir of [RUN_DIR, LOG_DIR, path.join(LOCAL_DIR, 'storage'), MAIL_DIR]) {
    fs.mkdirSync(dir, { recursive: true });
  }
  const started = [];
  const children = [];
  try {
    // A leftover PostgREST, gateway or mailbox from a stack that half-died: clear it before starting anew.
    await stopPid('stripe');
    await stopPid('mailbox');
    await stopPid('gateway');
    await stopPid('postgrest');
    const fresh = initCluster(PG, { conf: PG_CONF });
    if (await startPostgres()) started.push('postgres');

    if (fresh || !(await isDatabaseBuilt())) {
      const t0 = Date.now();
      await rebuildDatabase({ log: say });
      say(`database built in ${((Date.now() - t0) / 1000).toFixed(1)}s`);
    } else {
      say('applying pending migrations (supabase db push)');
      pushMigrations();
    }

    await assertPortFree(PORTS.postgrest, 'PostgREST');
    await assertPortFree(PORTS.postgrestAdmin, 'PostgREST admin');
    say(`starting PostgREST on 127.0.0.1:${PORTS.postgrest}`);
    const conf = writePostgrestConfig(path.join(RUN_DIR, 'postgrest.conf'),
      { dbPort: PORTS.db, port: PORTS.postgrest, adminPort: PORTS.postgrestAdmin });
    const rest = startService('postgrest', postgrestBinary(), [conf], { foreground });
    started.push('postgrest');
    children.push(rest.child);
    await waitFor('PostgREST', () => httpOk(`http://127.0.0.1:${PORTS.postgrestAdmin}/ready`), {
      child: rest.child,
      onTimeout: () => tail(rest.logFile),
    });

    await assertPortFree(PORTS.gateway, 'API gateway');
    say(`starting the gateway and edge functions on ${API_URL}`);
    const deno = path.join(ROOT, 'node_modules/.bin/deno');
    const gateway = startService(
      'gateway',
      deno,
      ['run', '--allow-all', '--config', path.join(ROOT, 'deno.json'), path.join(ROOT, 'scripts/functions-server.ts')],
      { foreground, env: { ...functionsEnv(), LOCAL_JOB_SCHEDULER: 'on' } },
    );
    started.push('gateway');
    children.push(gateway.child);
    await waitFor('the gateway (GET /functions/v1/health)', healthy, {
      timeoutMs: 120000, // the first run downloads and compiles the functions' npm dependencies
      child: gateway.child,
      onTimeout: () => tail(gateway.logFile),
    });

    // Without RESEND_API_KEY the functions write mail to .local/mail/ (the mailbox provider); the
    // page shows it. It runs either way, as Inbucket does in the Supabase CLI's stack.
    say(process.env.RESEND_API_KEY
      ? 'mail: sending through Resend'
      : `mail: no RESEND_API_KEY, so mail goes to .local/mail/ and ${MAILBOX_URL}`);
    await assertPortFree(PORTS.mailbox, 'mailbox page');
    const mailbox = startService(
      'mailbox',
      deno,
      ['run', '--allow-net', '--allow-read', '--allow-env', '--config', path.join(ROOT, 'deno.json'),
        path.join(ROOT, 'scripts/mailbox-server.ts')],
      { foreground, env: { MAILBOX_PORT: String(PORTS.mailbox), LOCAL_MAIL_DIR: MAIL_DIR } },
    );
    started.push('mailbox');
    children.push(mailbox.child);
    await waitFor(`the mailbox page (${MAILBOX_URL})`, () => httpOk(`${MAILBOX_URL}/api/messages`), {
      child: mailbox.child,
      onTimeout: () => tail(mailbox.logFile),
    });

    if (STRIPE_FAKE) {
      await assertPortFree(PORTS.stripe, 'local Stripe');
      say(`billing: no STRIPE_SECRET_KEY, so the functions use the local Stripe on ${STRIPE_FAKE_URL}`);
      const stripeFake = startService(
        'stripe',
        deno,
        ['run', '--allow-net', '--allow-env', '--allow-read', '--config', path.join(ROOT, 'deno.json'),
          path.join(ROOT, 'scripts/stripe-fake.ts')],
        {
          foreground,
          env: {
            STRIPE_FAKE_PORT: String(PORTS.stripe),
            STRIPE_WEBHOOK_URL: `${API_URL}/functions/v1/stripe-webhook`,
            STRIPE_WEBHOOK_SECRET,
            STRIPE_SECRET_KEY,
          },
        },
      );
      started.push('stripe');
      children.push(stripeFake.child);
      await waitFor(`the local Stripe (${STRIPE_FAKE_URL})`, () => httpOk(`${STRIPE_FAKE_URL}/health`), {
        child: stripeFake.child,
        onTimeout: () => tail(stripeFake.logFile),
      });
      await createFakePrices();
    } else {
      say('billing: STRIPE_SECRET_KEY is set, so the functions talk to Stripe (prices: npm run stripe:prices)');
    }
  } catch (error) {
    say('start failed; stopping what was started');
    await stopPid('stripe');
    await stopPid('mailbox');
    await stopPid('gateway');
    await stopPid('postgrest');
    if (started.includes('postgres')) stopPostgres();
    throw error;
  }
  await status();
  return { children };
}

async function down() {
  const stopped = [];
  if (await stopPid('stripe')) stopped.push('local Stripe');
  if (await stopPid('mailbox')) stopped.push('mailbox');
  if (await stopPid('gateway')) stopped.push('gateway');
  if (await stopPid('postgrest')) stopped.push('PostgREST');
  if (stopPostgres()) stopped.push('Postgres');
  say(stopped.length ? `stopped ${stopped.join(', ')}` : 'nothing was running');
}

async function status() {
  const pg = pgIsRunning();
  const rest = readPid('postgrest');
  const gw = readPid('gateway');
  const mb = readPid('mailbox');
  const sf = readPid('stripe');
  const ok = await healthy();
  const line = (name, running, where) => console.log(`  ${name.padEnd(12)} ${running ? 'running' : 'stopped'}  ${where}`);
  console.log('');
  line('Postgres', pg, DB_URL);
  line('PostgREST', !!rest, `http://127.0.0.1:${PORTS.postgrest} (behind the gateway)`);
  line('Gateway', !!gw, `${API_URL}  health: ${ok ? 'ok' : 'not answering'}`);
  line('Mailbox', !!mb, MAILBOX_URL);
  if (STRIPE_FAKE) line('Stripe', !!sf, `${STRIPE_FAKE_URL} (the local fake)`);
  console.log(`
  API URL           ${API_URL}
  REST              ${API_URL}/rest/v1
  Functions         ${API_URL}/functions/v1/<name>
  DB URL            ${DB_URL}
  JWT secret        ${JWT_SECRET}
  anon key          ${ANON_KEY}
  service_role key  ${SERVICE_ROLE_KEY}
  SEND_EMAIL_HOOK_SECRET    ${SEND_EMAIL_HOOK_SECRET}
  RESEND_WEBHOOK_SECRET     ${RESEND_WEBHOOK_SECRET}
  EMAIL_UNSUBSCRIBE_SECRET  ${EMAIL_UNSUBSCRIBE_SECRET}
  STRIPE_SECRET_KEY         ${STRIPE_FAKE ? STRIPE_SECRET_KEY : '(from the environment)'}
  STRIPE_WEBHOOK_SECRET     ${STRIPE_FAKE ? STRIPE_WEBHOOK_SECRET : '(from the environment)'}

  A user's token:   npm run token -- you@example.com
  Logs:             ${LOG_DIR}/ and ${PG_LOG}
`);
  return ok && pg;
}

// The local Stripe's prices, one per plan and pack of the catalogue (the ids the seed names).
async function createFakePrices() {
  const sql = connect();
  try {
    const stripe = new Stripe(STRIPE_SECRET_KEY, {
      host: '127.0.0.1', port: PORTS.stripe, protocol: 'http', maxNetworkRetries: 2,
    });
    await ensureStripePrices(stripe, sql);
  } finally {
    await sql.end();
  }
}

async function reset() {
  if (!pgIsRunning()) throw new StackError('Postgres is not running: start the stack first with `npm run stack:up`');
  const t0 = Date.now();
  await rebuildDatabase({ log: say });
  // PostgREST lost its connections with the old database: wait until it serves the new schema.
  if (readPid('postgrest')) {
    await waitFor('PostgREST after the reset', () => httpOk(`http://127.0.0.1:${PORTS.postgrestAdmin}/ready`));
  }
  // The local Stripe forgets the old database's customers too, and gets its prices again.
  if (STRIPE_FAKE && readPid('stripe')) {
    const res = await fetch(`${STRIPE_FAKE_URL}/_fake/reset`, { method: 'POST', headers: { authorization: `Bearer ${STRIPE_SECRET_KEY}` } });
    await res.arrayBuffer();
    await createFakePrices();
  }
  say(`database reset in ${((Date.now() - t0) / 1000).toFixed(1)}s`);
}

async function foreground() {
  if (await isUp()) {
    say('the stack is already running in the background; stop it with `npm run stack:down` to run it in the foreground');
    await status();
    process.exitCode = 1;
    return;
  }
  const { children } = await up({ foreground: true });
  say('running in the foreground; Ctrl-C stops everything');
  const pgTail = followFile(PG_LOG, 'postgres');
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    say('stopping');
    clearInterval(pgTail);
    await down();
    process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  for (const child of children) {
    child.on('exit', (code) => {
      if (!stopping) {
        say(`a service exited (code ${code}); stopping the stack`);
        stop();
      }
    });
  }
}

/** Prints lines appended to a file, prefixed (Postgres runs daemonized, logging to a file). */
function followFile(file, name) {
  let offset = fs.existsSync(file) ? fs.statSync(file).size : 0;
  return setInterval(() => {
    try {
      const size = fs.statSync(file).size;
      if (size <= offset) return;
      const fd = fs.openSync(file, 'r');
      const buf = Buffer.alloc(size - offset);
      fs.readSync(fd, buf, 0, buf.length, offset);
      fs.closeSync(fd);
      offset = size;
      for (const l of buf.toString('utf8').trimEnd().split('\n')) process.stdout.write(`[${name}] ${l}\n`);
    } catch { /* rotated or gone */ }
  }, 500);
}

const commands = { up, down, status, reset, start: foreground };
const name = process.argv[2];
if (!commands[name]) {
  console.error(`usage: node scripts/stack.mjs <${Object.keys(commands).join('|')}>`);
  process.exit(2);
}
try {
  const result = await commands[name]();
  if (name === 'status' && result === false) process.exitCode = 1;
} catch (error) {
  console.error(`[stack] error: ${error instanceof StackError ? error.message : error.stack}`);
  process.exit(1);
}
