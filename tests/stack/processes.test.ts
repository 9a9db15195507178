// The stack script's failure handling: a taken port and a stale pid file get a clear message
// and no hang; a wait that cannot succeed ends at its deadline, or at once when its process died.
import fs from 'node:fs';
import net from 'node:net';
import { spawn } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import {
  StackError, assertPortFree, pidFile, readPid, waitFor,
} from '../../scripts/lib/processes.mjs';

const servers: net.Server[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

function listen(): Promise<number> {
  return new Promise((resolve) => {
    const server = net.createServer().listen(0, '127.0.0.1', () => {
      servers.push(server);
      resolve((server.address() as net.AddressInfo).port);
    });
  });
}

describe('ports', () => {
  it('names a taken port, what needed it, and how to free it', async () => {
    const port = await listen();
    const error = await assertPortFree(port, 'Postgres').catch((e) => e);
    expect(error).toBeInstanceOf(StackError);
    expect(error.message).toContain(`port ${port} (Postgres) is already taken`);
    expect(error.message).toContain('ss -ltnp');
    expect(error.message).toContain('npm run stack:down');
  });

  it('lets a free port through', async () => {
    const port = await listen();
    servers.splice(0).forEach((s) => s.close());
    await new Promise((r) => setTimeout(r, 50));
    await expect(assertPortFree(port, 'PostgREST')).resolves.toBeUndefined();
  });
});

describe('pid files', () => {
  const name = `test-${process.pid}`;
  afterEach(() => fs.rmSync(pidFile(name), { force: true }));

  it('removes a stale pid file whose process is gone', () => {
    // A child that has already exited leaves a pid nobody owns.
    fs.mkdirSync(pidFile(name).replace(/[^/]+$/, ''), { recursive: true });
    fs.writeFileSync(pidFile(name), '999999999');
    expect(readPid(name)).toBeNull();
    expect(fs.existsSync(pidFile(name))).toBe(false);
  });

  it('keeps the pid file of a live process', () => {
    fs.mkdirSync(pidFile(name).replace(/[^/]+$/, ''), { recursive: true });
    fs.writeFileSync(pidFile(name), String(process.pid));
    expect(readPid(name)).toBe(process.pid);
  });
});

describe('waiting for a service', () => {
  it('gives up at the deadline with what it waited for and the log tail', async () => {
    const started = Date.now();
    const error = await waitFor('the gateway', async () => false, { timeoutMs: 500, onTimeout: () => 'last log line' })
      .catch((e) => e);
    expect(error).toBeInstanceOf(StackError);
    expect(error.message).toContain('the gateway did not become ready within 0.5s');
    expect(error.message).toContain('last log line');
    expect(Date.now() - started).toBeLessThan(3000);
  });

  it('fails at once when the process it waits for has exited', async () => {
    const child = spawn(process.execPath, ['-e', 'process.exit(3)']);
    await new Promise((r) => child.once('exit', r));
    const started = Date.now();
    const error = await waitFor('PostgREST', async () => false, { timeoutMs: 30000, child }).catch((e) => e);
    expect(error.message).toContain('PostgREST exited (code 3)');
    expect(Date.now() - started).toBeLessThan(2000);
  });
});
