// A second gateway (scripts/functions-server.ts) on a free port, for suites that need the edge
// functions running with another environment than the shared stack's: e.g. RESEND_API_KEY and
// RESEND_BASE_URL pointing at tests/fakes/resend.ts. It proxies /rest/v1 to the shared
// PostgREST and its functions use the shared database, like the stack's gateway; SUPABASE_URL is
// this gateway's own URL, so a function calling the API or another function reaches this one.
//
//   const gateway = await startGateway({ RESEND_API_KEY: fake.apiKey, RESEND_BASE_URL: fake.url });
//   await fetch(`${gateway.url}/functions/v1/email-dispatch`, ...);
//   await gateway.stop();
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { functionsEnv, ROOT } from '../../scripts/lib/config.mjs';

export interface Gateway {
  /** http://127.0.0.1:<port>: `${url}/rest/v1/...`, `${url}/functions/v1/<name>`. */
  url: string;
  /** SIGTERM, then SIGKILL if it is still running a few seconds later; resolves once it exited. */
  stop(): Promise<void>;
}

export interface GatewayOptions {
  /** How long to wait for GET /functions/v1/health to answer 200 (default 60 s). */
  timeoutMs?: number;
}

const DENO = path.join(ROOT, 'node_modules/.bin/deno');
const KILL_AFTER_MS = 5000;
const OUTPUT_KEPT = 64 * 1024;

/** A port nothing listens on right now: bind port 0, read it, let it go. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** The environment the stack gives its gateway (functionsEnv), for a gateway at `port`. */
export function gatewayEnv(port: number): Record<string, string> {
  return functionsEnv({ port, url: `http://127.0.0.1:${port}` });
}

/**
 * The test process's environment without outside services' settings (RESEND_*, STRIPE_*): a
 * test gateway reaches Resend or Stripe only where the suite points it (at a fake), never because
 * the shell running the tests happened to hold a real key.
 */
function inheritedEnv(): Record<string, string> {
  return Object.fromEntries(
    Object.entries(process.env).filter((e): e is [string, string] => e[1] !== undefined && !/^(RESEND|STRIPE)_/.test(e[0])),
  );
}

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

function waitForExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (exited(child)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.off('exit', onExit);
      resolve(false);
    }, ms);
    const onExit = () => {
      clearTimeout(timer);
      resolve(true);
    };
    child.once('exit', onExit);
  });
}

async function healthy(url: string): Promise<boolean> {
  try {
    const res = await fetch(`${url}/functions/v1/health`, { signal: AbortSignal.timeout(3000) });
    await res.arrayBuffer();
    return res.status === 200;
  } catch {
    return false;
  }
}

/**
 * Starts the gateway with the stack's environment plus `env` (which wins; RESEND_* and STRIPE_*
 * come only from `env`, never from the test process), and resolves once
 * GET /functions/v1/health answers 200; rejects with the gateway's output if it exits or is not
 * healthy in time. Needs the shared stack's Postgres and PostgREST up.
 */
export async function startGateway(env: Record<string, string> = {}, options: GatewayOptions = {}): Promise<Gateway> {
  const timeoutMs = options.timeoutMs ?? 60_000;
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child = spawn(
    DENO,
    ['run', '--allow-all', '--config', path.join(ROOT, 'deno.json'), path.join(ROOT, 'scripts/functions-server.ts')],
    { cwd: ROOT, env: { ...inheritedEnv(), ...gatewayEnv(port), ...env }, stdio: ['ignore', 'pipe', 'pipe'] },
  );

  let output = '';
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString('utf8')).slice(-OUTPUT_KEPT);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  let spawnError: Error | undefined;
  child.once('error', (err) => {
    spawnError = err;
  });

  // A test run that ends without stop() does not leave the gateway behind.
  const killOnExit = () => {
    if (!exited(child)) child.kill('SIGKILL');
  };
  process.once('exit', killOnExit);

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (!exited(child) && child.pid !== undefined) {
        child.kill('SIGTERM');
        if (!(await waitForExit(child, KILL_AFTER_MS))) {
          child.kill('SIGKILL');
          await waitForExit(child, KILL_AFTER_MS);
        }
      }
      process.off('exit', killOnExit);
    })();
    return stopping;
  };

  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (spawnError || exited(child)) {
      await stop();
      const why = spawnError ? `could not start (${spawnError.message})` : `exited (code ${child.exitCode}, signal ${child.signalCode})`;
      throw new Error(`gateway on port ${port} ${why} before it was healthy; its output:\n${output}`);
    }
    if (await healthy(url)) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`gateway on port ${port} not healthy (GET /functions/v1/health) after ${timeoutMs} ms; its output:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }

  return { url, stop };
}
