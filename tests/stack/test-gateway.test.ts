// tests/support/gateway.ts: a second gateway on a free port with its own environment, in front of
// the shared PostgREST and database, that answers health, takes env overrides and stops.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { API_URL, SERVICE_ROLE_KEY } from '../../scripts/lib/config.mjs';
import { startGateway, type Gateway } from '../support/gateway.ts';

// The override this suite checks: a function body limit far below the shared gateway's 50 MiB.
const LIMIT = 1024;
const overLimit = JSON.stringify({ padding: 'x'.repeat(2 * LIMIT) });

let gateway: Gateway;

beforeAll(async () => {
  gateway = await startGateway({ GATEWAY_MAX_FUNCTION_BODY_BYTES: String(LIMIT) });
}, 90_000);

afterAll(async () => {
  await gateway?.stop();
});

describe('startGateway', () => {
  it('listens on its own port and answers health 200 (its rest check goes through itself)', async () => {
    expect(gateway.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(gateway.url).not.toBe(API_URL);
    const res = await fetch(`${gateway.url}/functions/v1/health`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: 'ok', checks: { database: 'ok', rest: 'ok', functions: 'ok' } });
  });

  it('proxies /rest/v1 to the shared PostgREST with the stack keys', async () => {
    const res = await fetch(`${gateway.url}/rest/v1/credit_pools?select=key&order=sort_order`, {
      headers: { apikey: SERVICE_ROLE_KEY },
    });
    expect(res.status).toBe(200);
    expect((await res.json()).map((p: { key: string }) => p.key)).toEqual(expect.arrayContaining(['ai', 'whatsapp', 'email', 'sms']));
    const noKey = await fetch(`${gateway.url}/rest/v1/credit_pools`);
    expect(noKey.status).toBe(401);
  });

  it('runs with the overrides it was given, where the shared gateway keeps its own', async () => {
    const here = await fetch(`${gateway.url}/functions/v1/health`, { method: 'POST', body: overLimit });
    expect(here.status).toBe(413);
    await here.arrayBuffer();
    // The shared gateway (50 MiB limit) hands the same body to health, which refuses POST.
    const shared = await fetch(`${API_URL}/functions/v1/health`, { method: 'POST', body: overLimit });
    expect(shared.status).toBe(405);
    await shared.arrayBuffer();
  });

  it('fails with the gateway\'s output when it cannot start', async () => {
    const failed = startGateway({ JWT_SECRET: '' }, { timeoutMs: 20_000 });
    await expect(failed).rejects.toThrow(/exited \(code 1.*JWT_SECRET is not set/s);
  }, 30_000);

  it('stops: the port no longer answers, and a second stop is a no-op', async () => {
    const other = await startGateway({});
    expect((await fetch(`${other.url}/functions/v1/health`)).status).toBe(200);
    await other.stop();
    await expect(fetch(`${other.url}/functions/v1/health`)).rejects.toThrow();
    await other.stop();
  }, 90_000);
});
