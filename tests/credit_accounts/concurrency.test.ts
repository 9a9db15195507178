// Credit account charges under real parallel connections: racing charges exactly fill the limit
// and never pass it; one idempotency key from ten connections charges once; racing overage
// through consume_credits_rpc is charged once per entry and stays within the credit line.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectionPool, sql, type Sql } from '../support/db.ts';
import { insertOrganization } from '../support/organizations.ts';
import { createUser } from '../support/users.ts';

let pool: Sql;

beforeAll(() => {
  pool = connectionPool(20, 'credit-accounts-concurrency');
});
afterAll(async () => {
  await pool?.end();
});

async function openAccount(limit: number): Promise<string> {
  const owner = await createUser();
  const org = await insertOrganization({ owner, name: 'Racing Co' });
  await sql`select public.open_credit_account(${org.id}, ${limit}, 'concurrency test')`;
  return org.id;
}

const owed = async (org: string) =>
  Number((await sql`select amount_owed from public.credit_accounts where organization_id = ${org}`)[0].amount_owed);

/** Runs `charge` on every connection of the pool at once; resolves to each outcome. */
async function race<T>(n: number, charge: (i: number) => Promise<T>): Promise<PromiseSettledResult<T>[]> {
  return Promise.allSettled(Array.from({ length: n }, (_, i) => charge(i)));
}

describe('racing charges', () => {
  it('exactly fill the limit with 20 charges, and never pass it with more', async () => {
    const org = await openAccount(20 * 500);
    const outcomes = await race(25, (i) => pool`
      select (public.post_credit_account_transaction(${org}, 'charge', 500, ${`racer ${i}`}, ${`race-${i}`})).id`);
    const won = outcomes.filter((o) => o.status === 'fulfilled');
    const lost = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected');
    expect(won).toHaveLength(20);
    expect(lost.map((o) => (o.reason as Error).message)).toEqual(Array(5).fill('credit_limit_exceeded'));
    expect(await owed(org)).toBe(10000);
    const [{ n }] = await sql`select count(*)::int as n from public.credit_account_transactions where organization_id = ${org} and type = 'charge'`;
    expect(n).toBe(20);
  });

  it('charge once for one idempotency key sent from ten connections', async () => {
    const org = await openAccount(100000);
    const outcomes = await race(10, () => pool`
      select (public.post_credit_account_transaction(${org}, 'charge', 1234, 'the same purchase', 'one-key')).id as id`);
    const ids = outcomes.map((o) => (o.status === 'fulfilled' ? (o.value as unknown as { id: string }[])[0].id : (o.reason as Error).message));
    expect(new Set(ids).size).toBe(1);
    expect(await owed(org)).toBe(1234);
  });
});

describe('racing overage', () => {
  it('charges each overage entry once and stays within the credit line', async () => {
    const owner = await createUser();
    const org = await insertOrganization({ owner, name: 'Overage Co' });
    await sql`select public.change_plan(${org.id}, 'premium')`;
    // 1500 ai credits, then a line of 1.00: 50 overage credits at 2 cents.
    await sql`select public.open_credit_account(${org.id}, 100, 'concurrency test')`;
    await sql`select public.consume_credits_rpc(${org.id}, 'ai_chat', 1500)`;
    const outcomes = await race(15, (i) => pool`
      select public.consume_credits_rpc(${org.id}, 'ai_chat', 5, ${`overage-${i}`}) as result`);
    const won = outcomes.filter((o) => o.status === 'fulfilled');
    const lost = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected');
    expect(won).toHaveLength(10);
    expect(new Set(lost.map((o) => (o.reason as Error).message))).toEqual(new Set(['credit_limit_exceeded']));
    expect(await owed(org.id)).toBe(100);
    const [{ entries, charged }] = await sql`
      select count(*)::int as entries, count(distinct o.credit_transaction_id)::int as charged
      from public.credit_overages o where o.organization_id = ${org.id}`;
    expect({ entries, charged }).toEqual({ entries: 10, charged: 10 });
  });
});
