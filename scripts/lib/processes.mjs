// Process bookkeeping for the local stack: pid files, ports, waiting with a deadline.
// Kept apart from scripts/stack.mjs so its failure handling (a taken port, a stale pid file) is
// tested on its own (tests/stack/processes.test.ts).
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { LOCAL_DIR } from './config.mjs';

export const RUN_DIR = path.join(LOCAL_DIR, 'run');

/** An expected failure: its message names the problem and the fix, and no stack trace is shown. */
export class StackError extends Error {}

export const say = (msg) => console.log(`[stack] ${msg}`);
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export const pidFile = (name) => path.join(RUN_DIR, `${name}.pid`);

export function isAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return e.code === 'EPERM';
  }
}

/** The pid of a service we started, or null; a stale pid file is removed and reported. */
export function readPid(name) {
  let pid;
  try {
    pid = Number(fs.readFileSync(pidFile(name), 'utf8').trim());
  } catch {
    return null;
  }
  if (pid > 0 && isAlive(pid)) return pid;
  say(`removing stale pid file for ${name} (process ${pid} is gone)`);
  fs.rmSync(pidFile(name), { force: true });
  return null;
}

export function portInUse(port) {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.once('connect', () => { socket.destroy(); resolve(true); });
    socket.once('error', () => resolve(false));
    socket.setTimeout(1000, () => { socket.destroy(); resolve(false); });
  });
}

export async function assertPortFree(port, what) {
  if (await portInUse(port)) {
    throw new StackError(
      `port ${port} (${what}) is already taken by another process. Find it with \`ss -ltnp 'sport = :${port}'\` and stop it, ` +
        `or stop a stack started from another checkout with \`npm run stack:down\` there.`,
    );
  }
}

/**
 * Polls `check` until it answers true; fails at the deadline, or at once when `child` exited.
 * @param {string} what
 * @param {() => Promise<boolean>} check
 * @param {{ timeoutMs?: number, onTimeout?: () => string, child?: import('node:child_process').ChildProcess }} [options]
 */
export async function waitFor(what, check, { timeoutMs = 30000, onTimeout, child } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    if (child && child.exitCode !== null) {
      throw new StackError(`${what} exited (code ${child.exitCode}) while starting${onTimeout ? `:\n${onTimeout()}` : ''}`);
    }
    try {
      if (await check()) return;
    } catch (e) {
      last = e;
    }
    await sleep(200);
  }
  throw new StackError(`${what} did not become ready within ${timeoutMs / 1000}s${last ? ` (${last.message})` : ''}${onTimeout ? `\n${onTimeout()}` : ''}`);
}

export async function stopPid(name) {
  const pid = readPid(name);
  if (!pid) return false;
  try { process.kill(pid, 'SIGTERM'); } catch { /* already gone */ }
  for (let i = 0; i < 50 && isAlive(pid); i++) await sleep(100);
  if (isAlive(pid)) process.kill(pid, 'SIGKILL');
  fs.rmSync(pidFile(name), { force: true });
  return true;
}

export function tail(file, lines = 20) {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

