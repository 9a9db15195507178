// The job registry with real sessions: a SQL job's run that finds the previous one still going is
// skipped (pg_cron would otherwise queue it behind), an HTTP job's function records its run and
// skips while one is leased, and the local scheduler's reading of cron schedules.
import { describe, expect, it } from 'vitest';
import { API_URL, SERVICE_ROLE_KEY } from '../../scripts/lib/config.mjs';
import { cronMatches } from '../../scripts/lib/cron-schedule.ts';
import { connectionPool, sql } from '../support/db.ts';

describe('a SQL job', () => {
  it('is skipped while its previous run still holds the lock', async () => {
    const name = `test-slow-${Date.now()}`;
    await sql`select private.register_job(${name}, '0 0 1 1 *', 'sql', '(select 1 from pg_sleep(1))', 'Sleeps a second (test).')`;
    const pool = connectionPool(2, 'job-registry-test');
    try {
      // postgres.js sends a query when it is awaited or executed: start this one now.
      const slow = pool`select private.run_job(${name})`.execute();
      // Let the first run take its lock, then start a second one beside it.
      await new Promise((r) => setTimeout(r, 300));
      await pool`select private.run_job(${name})`;
      await slow;
      const runs = await sql`select outcome::text as outcome from private.job_runs where job_name = ${name} order by started_at`;
      expect(runs.map((r) => r.outcome).sort()).toEqual(['skipped', 'succeeded']);
    } finally {
      await pool.end();
      await sql`delete from private.jobs where name = ${name}`;
    }
  });
});

describe('an HTTP job (email-dispatch)', () => {
  const call = (body: unknown) => fetch(`${API_URL}/functions/v1/email-dispatch`, {
    method: 'POST', headers: { authorization: `Bearer ${SERVICE_ROLE_KEY}`, 'content-type': 'application/json' }, body: JSON.stringify(body),
  });

  it('records its scheduled run, and skips while a run is leased', async () => {
    const before = new Date();
    const res = await call({ job: 'email-dispatch' });
    expect(res.status).toBe(200);
    const [run] = await sql`select outcome::text as outcome, finished_at from private.job_runs
                            where job_name = 'email-dispatch' and started_at >= ${before} order by id desc limit 1`;
    expect(run.outcome).toBe('succeeded');
    expect(run.finished_at).not.toBeNull();

    await sql`update private.jobs set running_since = now() where name = 'email-dispatch'`;
    try {
      expect(await (await call({ job: 'email-dispatch' })).json()).toEqual({ skipped: true });
    } finally {
      await sql`update private.jobs set running_since = null where name = 'email-dispatch'`;
    }
  });

  it('refuses callers without the service role', async () => {
    const res = await fetch(`${API_URL}/functions/v1/email-dispatch`, { method: 'POST', body: '{}' });
    expect(res.status).toBe(401);
  });
});

describe('cron schedules, as the local scheduler reads them', () => {
  const at = (iso: string) => new Date(iso);
  it.each([
    ['* * * * *', '2026-12-01T10:17:00Z', true],
    ['*/5 * * * *', '2026-12-01T10:15:00Z', true],
    ['*/5 * * * *', '2026-12-01T10:17:00Z', false],
    ['17 * * * *', '2026-12-01T03:17:00Z', true],
    ['41 3 * * *', '2026-12-01T03:41:00Z', true],
    ['41 3 * * *', '2026-12-01T04:41:00Z', false],
    ['0 9-17/2 * * 1-5', '2026-12-01T11:00:00Z', true], // a Tuesday
    ['0 9-17/2 * * 1-5', '2026-12-05T11:00:00Z', false], // a Saturday
    ['0 0 * * 7', '2026-12-06T00:00:00Z', true], // 7 is Sunday too
    ['0 0 1,15 * *', '2026-12-15T00:00:00Z', true],
    ['0 0 1 * 1', '2026-12-07T00:00:00Z', true], // both day fields set: either may match (a Monday)
  ])('%s at %s: %s', (expression, iso, expected) => {
    expect(cronMatches(expression, at(iso))).toBe(expected);
  });

  it('refuses a malformed expression', () => {
    expect(() => cronMatches('61 * * * *', new Date())).toThrow();
    expect(() => cronMatches('* * *', new Date())).toThrow();
  });
});
