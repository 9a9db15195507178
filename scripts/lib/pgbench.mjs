// pgbench against the local database, for the benchmark scripts: runs a script on N clients for
// a number of seconds with durable commits (synchronous_commit = on, as in production) and
// returns pgbench's TPS and failed count and every transaction's latency and end time, read
// from its per-transaction log.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { DB_URL } from './config.mjs';

/** Resolves with { tps, failed, txs: [{ ms, at }] } (latency in ms, end as epoch ms). */
export function pgbench(script, { clients, seconds }) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgbench-'));
  const file = path.join(dir, 'script.sql');
  fs.writeFileSync(file, `${script}\n`);
  const url = new URL(DB_URL);
  const child = spawn('pgbench', [
    '-h', url.hostname, '-p', url.port, '-U', url.username, '-n', '-M', 'prepared',
    '-c', String(clients), '-j', String(Math.min(clients, 2)), '-T', String(seconds),
    '-l', '--log-prefix', path.join(dir, 'log'), '-f', file, 'postgres',
  ], {
    cwd: dir,
    env: { ...process.env, PGPASSWORD: decodeURIComponent(url.password), PGOPTIONS: '-c synchronous_commit=on' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { out += d; });
  return new Promise((resolve, reject) => {
    child.on('exit', (code) => {
      try {
        if (code !== 0) throw new Error(`pgbench failed:\n${out}`);
        // Per-transaction log lines: client_id transaction_no time_us script_no epoch_s epoch_us
        const txs = [];
        for (const f of fs.readdirSync(dir).filter((f) => f.startsWith('log'))) {
          for (const line of fs.readFileSync(path.join(dir, f), 'utf8').split('\n')) {
            const [, , us, , s, sus] = line.split(' ').map(Number);
            if (us > 0) txs.push({ ms: us / 1000, at: s * 1000 + sus / 1000 });
          }
        }
        resolve({
          tps: Number(/tps = ([\d.]+) \(without initial connection time\)/.exec(out)?.[1]),
          failed: Number(/number of failed transactions: (\d+)/.exec(out)?.[1] ?? 0),
          txs,
        });
      } catch (error) {
        reject(error);
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });
  });
}

/** The p-th percentile of a list of numbers. */
export function percentile(values, p) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}
