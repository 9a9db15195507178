// GET /functions/v1/health: 200 once the database, PostgREST and the functions are up; 503
// naming the failing checks otherwise. No auth (verify_jwt = false), no data in the answer.
import { sql } from '../_shared/db.ts';
import { env } from '../_shared/env.ts';
import { createHandler, json } from '../_shared/handler.ts';

const TIMEOUT_MS = 2000;

type Check = 'ok' | 'error';

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function checkDatabase(): Promise<void> {
  await withTimeout(sql()`select 1`.execute(), TIMEOUT_MS);
}

async function checkRest(): Promise<void> {
  const { supabaseUrl, anonKey } = env();
  const res = await fetch(`${supabaseUrl}/rest/v1/`, {
    headers: { apikey: anonKey },
    signal: AbortSignal.timeout(TIMEOUT_MS),
  });
  await res.body?.cancel(); // the OpenAPI document is not needed
  if (res.status >= 500) throw new Error(`PostgREST answered ${res.status}`);
}

export const handler = createHandler(async (_req, { log }) => {
  const run = async (name: string, check: () => Promise<void>): Promise<Check> => {
    try {
      await check();
      return 'ok';
    } catch (err) {
      log.warn('health check failed', { check: name, message: (err as Error).message });
      return 'error';
    }
  };
  const [database, rest] = await Promise.all([run('database', checkDatabase), run('rest', checkRest)]);
  const checks = { database, rest, functions: 'ok' as Check };

  const failing = Object.entries(checks).filter(([, v]) => v !== 'ok').map(([k]) => k);
  if (failing.length === 0) return json({ status: 'ok', checks });
  return json({
    status: 'unavailable',
    checks,
    error: { code: 'service_unavailable', message: `Failing checks: ${failing.join(', ')}`, details: { failing } },
  }, 503);
}, { name: 'health', methods: ['GET'] });

if (import.meta.main) Deno.serve(handler);
