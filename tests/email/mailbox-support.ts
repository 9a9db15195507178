// The mailbox suites' fixtures: a mailbox page (scripts/mailbox-server.ts) of their own on a free
// port over a temp dir, and messages sent through the real provider
// (functions/_shared/email-providers/mailbox.ts), which runs in Deno (tests/email/mailbox-send.mjs).
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { ROOT } from '../../scripts/lib/config.mjs';

const DENO = path.join(ROOT, 'node_modules/.bin/deno');
const DENO_CONFIG = path.join(ROOT, 'deno.json');

/** What the provider takes (OutgoingEmail of functions/_shared/email-providers/types.ts). */
export interface TestEmail {
  id: string;
  from: string;
  to: string;
  subject: string;
  html: string;
  text: string;
  headers: Record<string, string>;
  tags?: { name: string; value: string }[];
}

export type SendOutcome = { providerMessageId: string } | { error: string; kind: 'permanent' | 'temporary' };

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-`));
}

export function testEmail(overrides: Partial<TestEmail> = {}): TestEmail {
  const id = overrides.id ?? randomUUID();
  return {
    id,
    from: 'Acme <no-reply@acme.test>',
    to: `user-${id.slice(0, 8)}@example.com`,
    subject: `Hello ${id.slice(0, 8)}`,
    html: `<p>HTML body of ${id}</p>`,
    text: `Text body of ${id}`,
    headers: {},
    ...overrides,
  };
}

/** Sends each message through mailboxProvider(dir) in one Deno process, in order; `sentAt` fixes its clock. */
export function sendToMailbox(dir: string, messages: { email: TestEmail; sentAt?: string }[]): SendOutcome[] {
  const r = spawnSync(
    DENO,
    ['run', `--allow-read=${dir}`, `--allow-write=${dir}`, '--config', DENO_CONFIG, path.join(ROOT, 'tests/email/mailbox-send.mjs')],
    { cwd: ROOT, input: JSON.stringify({ dir, messages }), encoding: 'utf8', timeout: 60000 },
  );
  if (r.status !== 0) throw new Error(`mailbox-send.mjs failed (exit ${r.status}):\n${r.stderr}`);
  return JSON.parse(r.stdout);
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

export interface MailboxServer {
  url: string;
  stop(): Promise<void>;
}

/** Starts scripts/mailbox-server.ts over `dir` on a free port, as the stack starts it; resolves once it answers. */
export async function startMailboxServer(dir: string): Promise<MailboxServer> {
  const port = await freePort();
  const child: ChildProcess = spawn(
    DENO,
    ['run', '--allow-net', '--allow-read', '--allow-env', '--config', DENO_CONFIG, path.join(ROOT, 'scripts/mailbox-server.ts')],
    { cwd: ROOT, env: { ...process.env, MAILBOX_PORT: String(port), LOCAL_MAIL_DIR: dir }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  child.stdout?.on('data', (d) => { output += d; });
  child.stderr?.on('data', (d) => { output += d; });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`mailbox-server exited (code ${child.exitCode}):\n${output}`);
    try {
      const res = await fetch(`${url}/api/messages`, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      if (res.ok) break;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`mailbox-server did not answer within 60s:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    stop: () => new Promise<void>((resolve) => {
      if (child.exitCode !== null) return resolve();
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      child.once('exit', () => { clearTimeout(timer); resolve(); });
      child.kill('SIGTERM');
    }),
  };
}

/** Every file under `dir` (relative path, size, mtime), to show that nothing was written. */
export function snapshot(dir: string): Record<string, { size: number; mtimeMs: number }> {
  const out: Record<string, { size: number; mtimeMs: number }> = {};
  // The folder itself too: a temp folder made and removed again would change its mtime.
  for (const rel of ['.', ...fs.readdirSync(dir, { recursive: true }) as string[]]) {
    const st = fs.statSync(path.join(dir, rel));
    out[rel] = { size: st.size, mtimeMs: st.mtimeMs };
  }
  return out;
}
