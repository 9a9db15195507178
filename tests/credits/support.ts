// Arrangements only the credits suites need: test plans and actions, the reconciliation checks,
// and barriers for concurrency tests. Users, organizations, clients and connection pools are the
// shared fixtures of tests/support. Direct connections carry no JWT claims, so the credit
// functions treat them as the service role (private.credit_caller_role()).
import { randomUUID } from 'node:crypto';
import { expect } from 'vitest';
import type { Sql } from '../support/db.ts';

export type { Sql };
export const POOLS = ['ai', 'email', 'sms', 'whatsapp'] as const; // pool-key order
export type Pool = (typeof POOLS)[number];

/** A short random suffix for keys of test plans and actions (^[a-z][a-z0-9_]*$). */
export function suffix(): string {
  return randomUUID().replaceAll('-', '').slice(0, 10);
}

/** Inserts a test plan with the given allocations (pools left out get nothing). */
export async function createPlan(sql: Sql, key: string, allocations: Partial<Record<Pool, number>>): Promise<void> {
  await sql`insert into public.credit_plans (key, name, description) values (${key}, ${`Test ${key}`}, 'vitest credits suite')`;
  for (const [pool, amount] of Object.entries(allocations)) {
    await sql`insert into public.credit_plan_allocations (plan_key, pool_key, amount) values (${key}, ${pool}, ${amount as number})`;
  }
}

/** Inserts a test action costing `costs` per unit. */
export async function createAction(sql: Sql, key: string, costs: Partial<Record<Pool, number>>): Promise<void> {
  await sql`insert into public.credit_actions (key, name, description) values (${key}, ${`Test ${key}`}, 'vitest credits suite')`;
  for (const [pool, amount] of Object.entries(costs)) {
    await sql`insert into public.credit_action_costs (action_key, pool_key, amount) values (${key}, ${pool}, ${amount as number})`;
  }
}

export interface BalanceRow {
  pool_key: Pool;
  available: number;
  reserved: number;
  head_remaining: number;
}

export async function balanceRows(sql: Sql, org: string): Promise<Record<Pool, BalanceRow>> {
  const rows = await sql<BalanceRow[]>`
    select pool_key, available::float8 as available, reserved::float8 as reserved, head_remaining::float8 as head_remaining
    from public.credit_balances where organization_id = ${org} order by pool_key`;
  return Object.fromEntries(rows.map((r) => [r.pool_key, r])) as Record<Pool, BalanceRow>;
}

export interface VerifyRow {
  pool_key: Pool;
  available: number;
  ledger_sum: number;
  grants_remaining: number;
  reserved: number;
  holds_sum: number;
  ok: boolean;
}

export async function verifyLedger(sql: Sql, org: string): Promise<VerifyRow[]> {
  return sql<VerifyRow[]>`
    select pool_key, available::float8 as available, ledger_sum::float8 as ledger_sum,
           grants_remaining::float8 as grants_remaining, reserved::float8 as reserved,
           holds_sum::float8 as holds_sum, ok
    from private.verify_credit_ledger(${org})`;
}

/** private.verify_credit_ledger is ok for every pool, and every balance is non-negative. */
export async function expectReconciled(sql: Sql, org: string): Promise<void> {
  const rows = await verifyLedger(sql, org);
  expect(rows.map((r) => r.pool_key)).toEqual([...POOLS]);
  for (const row of rows) {
    expect(row, `verify_credit_ledger ${row.pool_key}`).toMatchObject({ ok: true });
    expect(row.available).toBeGreaterThanOrEqual(0);
    expect(row.reserved).toBeGreaterThanOrEqual(0);
  }
}

export type Balances = Record<Pool, { available: number; reserved: number; total: number }>;

export async function getBalances(sql: Sql, org: string): Promise<Balances> {
  const [row] = await sql<{ b: Balances }[]>`select public.get_credit_balances(${org}) as b`;
  return row.b;
}

/** Sum of the ledger per pool and kind for an organization. */
export async function ledgerSums(sql: Sql, org: string, kind: string): Promise<Record<string, number>> {
  const rows = await sql<{ pool_key: string; total: number }[]>`
    select pool_key, sum(amount)::float8 as total from public.credit_ledger
    where organization_id = ${org} and kind = ${kind}::public.credit_entry_kind group by pool_key`;
  return Object.fromEntries(rows.map((r) => [r.pool_key, r.total]));
}

/** Settles a promise into its value or its error, never rejecting. */
export async function settle<T>(promise: Promise<T>): Promise<{ value: T; error?: undefined } | { value?: undefined; error: { code?: string; message: string } }> {
  try {
    return { value: await promise };
  } catch (e) {
    const err = e as { code?: string; message?: string };
    return { error: { code: err.code, message: String(err.message ?? e) } };
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Waits until `count` sessions of `applicationName` are blocked on a lock (a barrier). */
export async function waitForLockWaiters(sql: Sql, applicationName: string, count: number, timeoutMs = 10000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const [row] = await sql<{ n: number }[]>`
      select count(*)::int as n from pg_stat_activity
      where application_name = ${applicationName} and wait_event_type = 'Lock'`;
    if (row.n >= count) return;
    if (Date.now() > deadline) {
      const sessions = await sql`
        select state, wait_event_type, wait_event, left(query, 80) as query from pg_stat_activity
        where application_name = ${applicationName}`;
      throw new Error(`only ${row.n} of ${count} sessions of ${applicationName} reached the lock: ${JSON.stringify(sessions)}`);
    }
    await sleep(20);
  }
}
