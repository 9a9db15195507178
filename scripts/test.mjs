#!/usr/bin/env node
// `npm test`: brings the local stack up (or resets its database), then runs every suite and
// check, and closes with one line the CI reads: "tests: N passed, N failed".
//
//   pg_prove     tests/db/<area>/*.test.sql (pgTAP: tables, RLS, RPCs, triggers)
//   vitest       tests/**/*.test.ts (edge functions over HTTP, the SDK, end-to-end flows)
//   checks       generated files fresh (types, error catalogue, schema dump), tsc --noEmit,
//                deno check, squawk, supabase db advisors
//
// Flags: --skip-reset (use the running database as it is), --only=db|vitest|checks
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { DB_URL, LOCAL_DIR, ROOT } from './lib/config.mjs';
import { connect, runSqlFile } from './lib/db.mjs';

const bin = (name) => path.join(ROOT, 'node_modules/.bin', name);
const args = process.argv.slice(2);
const only = args.find((a) => a.startsWith('--only='))?.slice('--only='.length);
const wants = (part) => !only || only === part;

const results = []; // { name, passed, failed }

function run(cmd, cmdArgs, opts = {}) {
  return spawnSync(cmd, cmdArgs, { cwd: ROOT, stdio: 'inherit', encoding: 'utf8', ...opts });
}

function banner(title) {
  console.log(`\n=== ${title} ${'='.repeat(Math.max(0, 90 - title.length))}`);
}

function record(name, passed, failed) {
  results.push({ name, passed, failed });
}

// --- the stack -------------------------------------------------------------------------------
banner('stack');
if (run('node', ['scripts/stack.mjs', 'up']).status !== 0) {
  console.error('the stack did not come up; see above');
  console.log('\ntests: 0 passed, 1 failed');
  process.exit(1);
}
if (!args.includes('--skip-reset')) {
  if (run('node', ['scripts/stack.mjs', 'reset']).status !== 0) {
    console.log('\ntests: 0 passed, 1 failed');
    process.exit(1);
  }
}
// The pgTAP helpers (tests schema) live only in the local database, never in a migration.
{
  const sql = connect();
  try {
    for (const f of fs.readdirSync(path.join(ROOT, 'sql/tests')).filter((f) => f.endsWith('.sql')).sort()) {
      await runSqlFile(sql, path.join(ROOT, 'sql/tests', f));
    }
  } finally {
    await sql.end();
  }
}

// --- pgTAP -----------------------------------------------------------------------------------
if (wants('db')) {
  banner('pgTAP (pg_prove tests/db/<area>)');
  // One folder per area; each file runs in its own transaction and rolls back.
  const files = fs.readdirSync(path.join(ROOT, 'tests/db'), { recursive: true })
    .filter((f) => f.endsWith('.test.sql')).sort().map((f) => path.join('tests/db', f));
  const url = new URL(DB_URL);
  const r = spawnSync('pg_prove', ['-h', url.hostname, '-p', url.port, '-U', url.username, '-d', 'postgres', ...files], {
    cwd: ROOT, encoding: 'utf8', env: { ...process.env, PGPASSWORD: decodeURIComponent(url.password) },
  });
  process.stdout.write(r.stdout);
  process.stderr.write(r.stderr);
  // pg_prove's summary: "Files=N, Tests=M, ..." and, on failures, "Failed: K" per file.
  const total = Number(/Tests=(\d+)/.exec(r.stdout)?.[1] ?? 0);
  const failed = [...r.stdout.matchAll(/Failed: (\d+)\)/g)].reduce((n, m) => n + Number(m[1]), 0);
  // A file that died (bad plan, SQL error) counts as one more failure.
  const dubious = (r.stdout.match(/Dubious|Bad plan|Parse errors/g) ?? []).length;
  const failedAll = failed + (r.status !== 0 && failed === 0 ? Math.max(dubious, 1) : 0);
  record('pgTAP', total - failed, failedAll);
}

// --- vitest ----------------------------------------------------------------------------------
if (wants('vitest')) {
  banner('vitest (tests/**/*.test.ts)');
  // The mailbox page's test drives Debian's Chromium.
  (await import('./lib/chromium.mjs')).ensureChromium();
  const report = path.join(LOCAL_DIR, 'vitest-report.json');
  fs.rmSync(report, { force: true });
  const r = run(bin('vitest'), ['run', '--reporter=default', '--reporter=json', `--outputFile=${report}`]);
  let passed = 0;
  let failed = 0;
  try {
    const json = JSON.parse(fs.readFileSync(report, 'utf8'));
    passed = json.numPassedTests;
    failed = json.numFailedTests;
  } catch {
    failed = 1;
  }
  if (r.status !== 0 && failed === 0) failed = 1;
  record('vitest', passed, failed);
}

// --- static checks ---------------------------------------------------------------------------
if (wants('checks')) {
  const checks = [
    ['generated database types are fresh', 'node', ['scripts/gen-types.mjs', '--check']],
    ['generated error catalogue (SDK, functions, README) is fresh', 'node', ['scripts/gen-errors.mjs', '--check']],
    ['schema dump (sql/schema.sql) is fresh', 'node', ['scripts/dump-schema.mjs', '--check']],
    ['tsc --noEmit', bin('tsc'), ['--noEmit', '-p', 'tsconfig.json']],
    ['deno check (edge functions and gateway)', bin('deno'), ['check', '--config', 'deno.json',
      ...fs.readdirSync(path.join(ROOT, 'functions'), { withFileTypes: true })
        .filter((d) => d.isDirectory() && !d.name.startsWith('_')).map((d) => `functions/${d.name}/index.ts`),
      'scripts/functions-server.ts']],
    ['squawk (migrations)', bin('squawk'), fs.readdirSync(path.join(ROOT, 'supabase/migrations'))
      .filter((f) => f.endsWith('.sql')).map((f) => `supabase/migrations/${f}`)],
    ['supabase db advisors (fail on warnings)', bin('supabase'),
      ['db', 'advisors', `--remote=${DB_URL}`, '--level', 'warn', '--fail-on', 'warn', '--workdir', ROOT]],
  ];
  let passed = 0;
  let failed = 0;
  for (const [name, cmd, cmdArgs] of checks) {
    banner(name);
    const ok = run(cmd, cmdArgs).status === 0;
    console.log(ok ? `ok: ${name}` : `FAILED: ${name}`);
    if (ok) passed++;
    else failed++;
  }
  record('checks', passed, failed);
}

// --- summary ---------------------------------------------------------------------------------
banner('summary');
for (const r of results) console.log(`${r.name.padEnd(8)} ${r.passed} passed, ${r.failed} failed`);
const passed = results.reduce((n, r) => n + r.passed, 0);
const failed = results.reduce((n, r) => n + r.failed, 0);
console.log(`\ntests: ${passed} passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);
