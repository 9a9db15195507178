#!/usr/bin/env node
// `npm run bench:lifecycle`: the data lifecycle's two heavy operations, each measured against its
// baseline in the same run, on the local stack (npm run stack:up first).
//
// 1. Export: a person with 100,000 rows about them across tables (sql/bench/lifecycle-setup.sql).
//    gdpr-export builds their zip (rows through a cursor, JSON, deflate, SHA-256, streamed into
//    the private store) compared with `COPY (<the export's own queries>) TO STDOUT` of the same
//    rows through psql. Target: within 3x.
// 2. Purge: an organization with 1,000,000 rows purged by lifecycle-purge (batches of 5,000, each
//    its own transaction) while 8 pgbench clients call consume_credits_rpc for 1,000 other
//    organizations; their p99 while the purge runs compared with their p99 alone. Target: at
//    most 2x.
// Options: --seconds=N of the consumers alone (default 15), --loaded-seconds=N of the whole
// pgbench run (default 120; must outlast the alone window and the purge), --batch=N rows per
// purge batch (default 5000, lifecycle-purge's own), --keep (leave the fixtures).
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { DB_URL, ROOT, SERVICE_ROLE_KEY, API_URL } from './lib/config.mjs';
import { connect, runSqlFile } from './lib/db.mjs';
import { percentile, pgbench } from './lib/pgbench.mjs';

const arg = (name, fallback) => process.argv.find((a) => a.startsWith(`--${name}=`))?.split('=')[1] ?? fallback;
const SECONDS = Number(arg('seconds', 15));
const LOADED_SECONDS = Number(arg('loaded-seconds', 120));
const BATCH = Number(arg('batch', 5000));
const BENCH_DIR = path.join(ROOT, 'sql/bench');
const SUBJECT = '00000000-0000-4000-9000-000000000001';
const PURGED_ORG = '00000000-0000-4000-9000-000000000020';
const url = new URL(DB_URL);
const pgEnv = { ...process.env, PGPASSWORD: decodeURIComponent(url.password) };
const pgArgs = ['-h', url.hostname, '-p', url.port, '-U', url.username];

async function callFunction(name, body = {}) {
  const res = await fetch(`${API_URL}/functions/v1/${name}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${SERVICE_ROLE_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${name}: ${res.status} ${text}`);
  return JSON.parse(text);
}

/** pgbench's consumers: 8 clients, one of 1,000 organizations each call. */
function consumers(seconds) {
  return pgbench("\\set o random(1, 1000)\nselect public.consume_credits_rpc(bench.org_id(:o), 'ai_chat');",
    { clients: 8, seconds }).then((r) => r.txs);
}

const sql = connect();
let exportRatio;
let p99Ratio;
const lines = [];
try {
  console.log('setting up: 1,000 consuming organizations, a person with 100,000 rows, an organization with 1,000,000 rows...');
  await runSqlFile(sql, path.join(BENCH_DIR, 'credits-setup.sql'));
  await runSqlFile(sql, path.join(BENCH_DIR, 'lifecycle-setup.sql'));

  // ---- 1. Export ------------------------------------------------------------------------
  const [{ rows }] = await sql`
    select (select count(*) from private.activity_events where user_id = ${SUBJECT})
         + (select count(*) from private.email_messages where user_id = ${SUBJECT})
         + (select count(*) from public.consent_records where user_id = ${SUBJECT})
         + (select count(*) from public.credit_ledger where actor_id = ${SUBJECT}) as rows`;
  const [{ id: exportId }] = await sql`
    insert into private.data_exports (scope, subject_user_id, subject_email) values ('subject', ${SUBJECT}, 'bench-subject@bench.test')
    returning id`;
  const queries = await sql`select table_name, query from private.export_queries(${exportId})`;
  // The baseline: the same queries, COPY'd out through psql (server-side JSON, no zip, no upload).
  const copyStart = performance.now();
  let copied = 0;
  for (const { query } of queries) {
    const r = spawnSync('psql', [...pgArgs, '-X', '-q', '-d', 'postgres', '-c', `copy (${query}) to stdout`],
      { env: pgEnv, maxBuffer: 1024 * 1024 * 1024 });
    if (r.status !== 0) throw new Error(`COPY failed: ${r.stderr}`);
    copied += r.stdout.length;
  }
  const copyMs = performance.now() - copyStart;
  const exportStart = performance.now();
  const built = await callFunction('gdpr-export');
  const exportMs = performance.now() - exportStart;
  if (!built.built.includes(exportId)) throw new Error(`the export was not built: ${JSON.stringify(built)}`);
  const [{ manifest }] = await sql`select manifest from private.data_exports where id = ${exportId}`;
  const exported = manifest.files.reduce((n, f) => n + f.rows, 0);
  if (exported < rows) throw new Error(`the export holds ${exported} rows, ${rows} were seeded`);
  exportRatio = exportMs / copyMs;
  lines.push(
    '| export of one person | rows | ms | ratio |', '|---|---:|---:|---:|',
    `| COPY (the export's queries) TO STDOUT, ${(copied / 2 ** 20).toFixed(1)} MiB | ${exported} | ${copyMs.toFixed(0)} | 1.00 |`,
    `| gdpr-export: JSON files, zip, SHA-256, streamed into the private store | ${exported} | ${exportMs.toFixed(0)} | ${exportRatio.toFixed(2)} |`,
  );

  // ---- 2. Purge under load ----------------------------------------------------------------
  // One pgbench run: the consumers alone for --seconds (after a 2 s warm-up), then the purge
  // starts; the two windows of the same run are compared. The run lasts --loaded-seconds, which
  // must outlast both.
  const [{ id: purgeId }] = await sql`
    select (private.start_purge(${PURGED_ORG}, 'Benchmark', now(), now())).id as id`;
  await sql`select private.move_purge(${purgeId}, 'executing', '{"forced": true, "reason": "benchmark"}', now())`;
  const [{ n: purgeRows }] = await sql`
    select (select count(*) from private.activity_events where organization_id = ${PURGED_ORG})
         + (select count(*) from private.email_messages where organization_id = ${PURGED_ORG})
         + (select count(*) from private.domain_events where organization_id = ${PURGED_ORG}) as n`;
  const [{ rest }] = await sql`select private.setting('purge_rest_ratio') #>> '{}' as rest`;
  const run = consumers(LOADED_SECONDS);
  const aloneStart = Date.now() + 2000;
  await new Promise((r) => setTimeout(r, 2000 + SECONDS * 1000));
  const purgeStart = Date.now();
  for (;;) {
    const step = await callFunction('lifecycle-purge', { batch_size: BATCH });
    if (step.completed.includes(purgeId)) break;
  }
  const purgeEnd = Date.now();
  const txs = await run;
  if (txs.reduce((last, t) => Math.max(last, t.at), 0) < purgeEnd) {
    throw new Error(`the purge outlasted the consumers (${LOADED_SECONDS} s): raise --loaded-seconds`);
  }
  const aloneMs = txs.filter((t) => t.at >= aloneStart && t.at < purgeStart).map((t) => t.ms);
  const window = txs.filter((t) => t.at >= purgeStart && t.at <= purgeEnd).map((t) => t.ms);
  const [{ left }] = await sql`select count(*)::int as left from public.organizations where id = ${PURGED_ORG}`;
  if (left !== 0) throw new Error('the organization is still there');
  p99Ratio = percentile(window, 99) / percentile(aloneMs, 99);
  const tps = (n, ms) => Math.round(n / (ms / 1000));
  lines.push(
    '', '| 8 clients calling consume_credits_rpc (one pgbench run) | transactions | TPS | p50 ms | p99 ms | p99 ratio |', '|---|---:|---:|---:|---:|---:|',
    `| alone, ${((purgeStart - aloneStart) / 1000).toFixed(1)} s | ${aloneMs.length} | ${tps(aloneMs.length, purgeStart - aloneStart)} | ${percentile(aloneMs, 50).toFixed(2)} | ${percentile(aloneMs, 99).toFixed(2)} | 1.00 |`,
    `| while ${purgeRows} rows are purged in batches of ${BATCH}, purge_rest_ratio ${rest} (${((purgeEnd - purgeStart) / 1000).toFixed(1)} s) | ${window.length} | ${tps(window.length, purgeEnd - purgeStart)} | ${percentile(window, 50).toFixed(2)} | ${percentile(window, 99).toFixed(2)} | ${p99Ratio.toFixed(2)} |`,
  );
} finally {
  if (!process.argv.includes('--keep')) {
    await runSqlFile(sql, path.join(BENCH_DIR, 'lifecycle-teardown.sql')).catch((e) => console.error(`teardown: ${e.message}`));
    await runSqlFile(sql, path.join(BENCH_DIR, 'credits-teardown.sql')).catch((e) => console.error(`teardown: ${e.message}`));
  }
  await sql.end();
}

console.log(`\n${lines.join('\n')}`);
const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
console.log(`\nmachine: ${os.cpus().length} × ${cpu}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB; ${
  spawnSync('pgbench', ['--version'], { encoding: 'utf8' }).stdout.trim()}; synchronous_commit=on for the consumers`);
const ok = exportRatio <= 3 && p99Ratio <= 2;
console.log(`targets: export within 3x of COPY: ${exportRatio <= 3 ? 'met' : 'MISSED'} (${exportRatio.toFixed(2)}x); ` +
  `consumers' p99 during the purge at most 2x: ${p99Ratio <= 2 ? 'met' : 'MISSED'} (${p99Ratio.toFixed(2)}x)`);
process.exit(ok ? 0 : 1);
