// Striped pools under real parallel connections: one organization's pool spread over stripes
// (set_credit_stripes), consumed by 24 connections at once until it is empty. What must hold:
// never more charged than there was, no refusal while the pool's whole balance covers the
// request, exactly one low-balance and one depleted event, no deadlock with batches, grants,
// reservations, a restriping or the organization's deletion racing the consumers, and the ledger
// reconciling at every moment.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectionPool, sql } from '../support/db.ts';
import { deleteOrganizations, insertOrganization } from '../support/organizations.ts';
import { createPlan, expectReconciled, getBalances, ledgerSums, settle, sleep, suffix, verifyLedger, type Sql } from './support.ts';

type ConsumeResult = {
  success: boolean;
  consumed?: Record<string, number>;
  remaining?: Record<string, number>;
  error?: string;
  required?: number;
  available?: number;
};

const id = suffix();
const APP = `credits-striping-${id}`;
const PLAN = `tstripe_${id}`; // ai 400, nothing else
const START = 400;
const THRESHOLD = 150;

let pool: Sql;
const orgs: string[] = [];

beforeAll(async () => {
  pool = connectionPool(24, APP);
  await createPlan(sql, PLAN, { ai: START });
});

afterAll(async () => {
  await deleteOrganizations(orgs);
  await sql`delete from public.credit_plans where key = ${PLAN}`;
  await pool?.end({ timeout: 5 });
});

async function stripedOrg(stripes: number): Promise<string> {
  const org = (await insertOrganization({ name: 'Credits striping' })).id;
  orgs.push(org);
  await sql`select public.change_plan(${org}, ${PLAN})`;
  await sql`select public.set_credit_low_threshold(${org}, 'ai', ${THRESHOLD})`;
  await sql`select public.set_credit_stripes(${org}, 'ai', ${stripes})`;
  return org;
}

function consume(org: string, action: string, quantity = 1): Promise<ConsumeResult> {
  return pool<{ r: ConsumeResult }[]>`select public.consume_credits_rpc(${org}, ${action}, ${quantity}) as r`.then((rows) => rows[0].r);
}

function batch(org: string, items: { action_type: string; quantity?: number }[]): Promise<ConsumeResult[]> {
  return pool<{ r: ConsumeResult[] }[]>`select public.consume_credits_batch(${org}, ${sql.json(items)}) as r`.then((rows) => rows[0].r);
}

/** Every snapshot during the race reconciles (balances, ledger, grants, stripes). */
function watch(org: string): () => Promise<{ problems: string[]; snapshots: number }> {
  let running = true;
  const problems: string[] = [];
  let snapshots = 0;
  const loop = (async () => {
    while (running) {
      for (const r of await verifyLedger(sql, org)) {
        if (!r.ok || r.available < 0) problems.push(JSON.stringify(r));
      }
      snapshots += 1;
      await sleep(3);
    }
  })();
  return async () => {
    running = false;
    await loop;
    return { problems, snapshots };
  };
}

describe('a striped pool under parallel connections', () => {
  it('spends exactly its balance, refuses only when the whole pool is short, and emits each event once', { timeout: 90000 }, async () => {
    const org = await stripedOrg(8);
    expect((await getBalances(sql, org)).ai.available).toBe(START);

    const stop = watch(org);
    // 24 connections: single calls of 1, 2 and 5 credits and batches of five. First 40 calls
    // with a grant of 10 credits among them (the general path, which gathers every stripe while
    // calls pay from them), all far above the threshold (at most 40 x 5 credits are spent, so a
    // late grant cannot lift the pool back over it); then the rest of the race.
    const actions = ['ai_chat', 'automation_run', 'form_generation']; // 1, 2, 5 ai
    const singleCalls: Promise<Awaited<ReturnType<typeof settle<ConsumeResult>>>>[] = [];
    const batchCalls: Promise<Awaited<ReturnType<typeof settle<ConsumeResult[]>>>>[] = [];
    const call = (i: number) => {
      if (i % 40 === 7) batchCalls.push(settle(batch(org, Array.from({ length: 5 }, () => ({ action_type: 'ai_chat' })))));
      else singleCalls.push(settle(consume(org, actions[(i * 7) % 3])));
    };
    for (let i = 0; i < 40; i++) call(i);
    const grant = settle(sql`select public.grant_credits(${org}, 'ai', 10, 'manual', null, 100)`);
    for (let i = 40; i < 50; i++) call(i);
    await Promise.all([grant, ...singleCalls, ...batchCalls]);
    expect((await getBalances(sql, org)).ai.available).toBeGreaterThan(THRESHOLD);
    for (let i = 50; i < 360; i++) call(i);
    const singleResults = await Promise.all(singleCalls);
    const batchResults = await Promise.all(batchCalls);
    const results = [...singleResults, ...batchResults, (await grant) as { error?: unknown }];
    // Then one credit at a time until the pool is empty.
    const tail: ConsumeResult[] = [];
    for (;;) {
      const wave = await Promise.all(Array.from({ length: 24 }, () => consume(org, 'ai_chat')));
      tail.push(...wave);
      if (wave.every((r) => !r.success)) break;
    }
    const seen = await stop();

    // No error at all: no deadlock (40P01), no lock timeout.
    expect(results.filter((r) => r.error).map((r) => r.error)).toEqual([]);
    const singles: ConsumeResult[] = [
      ...singleResults.map((r) => r.value!),
      ...batchResults.flatMap((r) => r.value!),
      ...tail,
    ];
    expect(singles).toHaveLength(360 - 9 + 9 * 5 + tail.length);

    const spent = singles.filter((r) => r.success).reduce((sum, r) => sum + r.consumed!.ai, 0);
    expect(spent).toBe(START + 10);
    // Every refusal saw the pool's whole balance short of what was asked, and the final balance
    // is below every refused cost: no refusal while the stripes and the shared row covered it.
    const refusals = singles.filter((r) => !r.success);
    expect(refusals.length).toBeGreaterThan(24);
    for (const f of refusals) {
      expect(f.error).toBe('insufficient_credits');
      expect(f.available!).toBeLessThan(f.required!);
    }
    expect(await getBalances(sql, org)).toMatchObject({ ai: { available: 0, reserved: 0 } });
    expect(await ledgerSums(sql, org, 'consumption')).toEqual({ ai: -(START + 10) });

    // One credits.low when the whole pool went below the threshold, one credits.depleted at zero.
    const events = await sql<{ type: string; payload: { available: number; threshold?: number } }[]>`
      select type, payload from private.domain_events
      where organization_id = ${org} and type in ('credits.low', 'credits.depleted') and payload ->> 'pool' = 'ai' order by id`;
    expect(events.map((e) => e.type)).toEqual(['credits.low', 'credits.depleted']);
    expect(events[0].payload.threshold).toBe(THRESHOLD);
    expect(events[0].payload.available).toBeLessThan(THRESHOLD);

    // The race did go through the stripes (several were refilled: a refill names the grant),
    // and every snapshot reconciled.
    const [{ used }] = await sql<{ used: number }[]>`
      select count(*)::int as used from public.credit_balance_stripes where organization_id = ${org} and grant_id is not null`;
    expect(used).toBeGreaterThanOrEqual(2);
    expect(seen.problems).toEqual([]);
    expect(seen.snapshots).toBeGreaterThan(0);
    await expectReconciled(sql, org);
  });

  it('keeps the balance whole while the stripes are changed under racing consumers', { timeout: 60000 }, async () => {
    const org = await stripedOrg(8);
    const stop = watch(org);
    const calls = Array.from({ length: 240 }, (_, i) => settle(consume(org, i % 4 === 0 ? 'automation_run' : 'ai_chat')));
    // Meanwhile the operator restripes the pool: off, back on with fewer stripes, then more.
    const changes: unknown[] = [];
    for (const stripes of [1, 4, 16, 2]) {
      await sleep(15);
      changes.push(await settle(sql`select public.set_credit_stripes(${org}, 'ai', ${stripes})`));
    }
    const results = await Promise.all(calls);
    const seen = await stop();

    expect(changes.filter((c) => (c as { error?: unknown }).error)).toEqual([]);
    expect(results.filter((r) => r.error).map((r) => r.error)).toEqual([]);
    const spent = results.map((r) => r.value!).filter((r) => r.success).reduce((sum, r) => sum + r.consumed!.ai, 0);
    // 180 calls of 1 credit and 60 of 2: 300 of the 400, so none is refused.
    expect(spent).toBe(300);
    expect((await getBalances(sql, org)).ai.available).toBe(START - 300);
    // Two stripes in use at the end; the rows of stripes 3 to 16 stay, and hold nothing.
    const [{ stripes, beyond }] = await sql<{ stripes: number; beyond: number }[]>`
      select b.stripes, (select coalesce(sum(s.remaining), 0)::int from public.credit_balance_stripes s
                         where s.organization_id = b.organization_id and s.pool_key = b.pool_key and s.stripe > b.stripes) as beyond
      from public.credit_balances b where b.organization_id = ${org} and b.pool_key = 'ai'`;
    expect({ stripes, beyond }).toEqual({ stripes: 2, beyond: 0 });
    expect(seen.problems).toEqual([]);
    await expectReconciled(sql, org);
  });

  it('races stripe payers against reservations and grants, which gather the stripes', { timeout: 60000 }, async () => {
    const org = await stripedOrg(8);
    const before = (await getBalances(sql, org)).ai.available;
    type Reserved = { success: boolean; reservation_id?: string };
    let consumed = 0;
    let granted = 0;
    const unexpected: unknown[] = [];
    const attempt = async <T>(p: Promise<T>): Promise<T | undefined> => {
      const r = await settle(p);
      if (r.error) unexpected.push(r.error);
      return r.value;
    };
    const worker = async (w: number) => {
      for (let i = 0; i < 12; i++) {
        const n = (w * 7 + i) % 6;
        if (n === 0 && w % 4 === 0) {
          await attempt(sql`select public.grant_credits(${org}, 'ai', 5, 'manual', null, 100)`);
          granted += 5;
        } else if (n === 1) {
          // Hold 3, use 2 of them.
          const [{ r }] = (await attempt(pool<{ r: Reserved }[]>`select public.reserve_credits(${org}, p_amounts => '{"ai": 3}'::jsonb) as r`)) ?? [{ r: { success: false } }];
          if (!r.success) continue;
          const c = await attempt(pool<{ r: ConsumeResult }[]>`select public.commit_reservation(${r.reservation_id!}, '{"ai": 2}'::jsonb) as r`);
          consumed += c?.[0].r.consumed?.ai ?? 0;
        } else if (n === 2) {
          const [{ r }] = (await attempt(pool<{ r: Reserved }[]>`select public.reserve_credits(${org}, p_amounts => '{"ai": 2}'::jsonb) as r`)) ?? [{ r: { success: false } }];
          if (r.success) await attempt(pool`select public.release_reservation(${r.reservation_id!})`);
        } else {
          const r = await attempt(consume(org, n === 3 ? 'automation_run' : 'ai_chat'));
          if (r?.success) consumed += r.consumed!.ai;
        }
      }
    };
    const stop = watch(org);
    await Promise.all(Array.from({ length: 24 }, (_, w) => worker(w)));
    const seen = await stop();

    expect(unexpected).toEqual([]);
    expect(consumed).toBeGreaterThan(0);
    const after = await getBalances(sql, org);
    expect(after.ai.reserved).toBe(0);
    expect(after.ai.available).toBe(before + granted - consumed);
    expect(await ledgerSums(sql, org, 'consumption')).toEqual({ ai: -consumed });
    expect(seen.problems).toEqual([]);
    await expectReconciled(sql, org);
  });

  it('deletes the organization while its striped pool is consumed, without a deadlock', { timeout: 60000 }, async () => {
    let paidDuringRace = 0;
    let answeredAfterDeletion = 0;
    for (let round = 0; round < 5; round++) {
      const org = await stripedOrg(8);
      // Fill some stripes first, so the deletion's cascade meets stripes that hold credits.
      await Promise.all(Array.from({ length: 16 }, () => consume(org, 'ai_chat')));
      const calls = Array.from({ length: 120 }, (_, i) => settle(consume(org, i % 3 === 0 ? 'automation_run' : 'ai_chat')));
      await sleep(5 + round * 5);
      const deleted = await settle(sql`delete from public.organizations where id = ${org}`);
      const results = await Promise.all(calls);

      expect(deleted.error).toBeUndefined();
      expect(await sql`select 1 from public.organizations where id = ${org}`).toHaveLength(0);
      expect(await sql`select 1 from public.credit_balance_stripes where organization_id = ${org}`).toHaveLength(0);
      // Each call either paid before the deletion or was answered after it: never a deadlock
      // (40P01) or a lock timeout, and any refusal a plain answer or an error of the catalogue.
      const codes = results.filter((r) => r.error).map((r) => r.error!.code);
      expect(codes.filter((c) => c === '40P01' || c === '55P03' || c === '57014')).toEqual([]);
      for (const r of results) {
        if (r.error) expect(r.error.code, r.error.message).toMatch(/^(22023|42501|PT4\d\d)$/);
      }
      // What was paid is in the ledger (money records outlive their organization).
      const paid = results.filter((r) => r.value?.success).reduce((sum, r) => sum + r.value!.consumed!.ai, 0);
      expect(await ledgerSums(sql, org, 'consumption')).toEqual({ ai: -(16 + paid) });
      paidDuringRace += results.filter((r) => r.value?.success).length;
      answeredAfterDeletion += results.filter((r) => !r.value?.success).length;
    }
    // The deletion did land in the middle of the calls.
    expect(paidDuringRace).toBeGreaterThan(0);
    expect(answeredAfterDeletion).toBeGreaterThan(0);
  });

  it('lets a consumer pay from a stripe while another holds a different one', { timeout: 30000 }, async () => {
    const org = await stripedOrg(4);
    // Fill the stripes: a few calls on separate sessions refill one stripe each.
    await Promise.all(Array.from({ length: 8 }, () => consume(org, 'ai_chat')));
    const [{ held }] = await sql<{ held: number }[]>`
      select count(*)::int as held from public.credit_balance_stripes where organization_id = ${org} and remaining > 0`;
    expect(held).toBeGreaterThan(0);

    // One session pays and keeps its transaction (and its stripe, and maybe the shared row) open.
    const reserved = await pool.reserve();
    try {
      await reserved`begin`;
      const [{ r }] = await reserved<{ r: ConsumeResult }[]>`select public.consume_credits_rpc(${org}, 'ai_chat', 1) as r`;
      expect(r.success).toBe(true);
      // Others still pay meanwhile, on their own connections, without waiting for it.
      const others = await Promise.race([
        Promise.all(Array.from({ length: 6 }, () => consume(org, 'ai_chat'))),
        sleep(5000).then(() => 'timed out' as const),
      ]);
      expect(others).not.toBe('timed out');
      expect((others as ConsumeResult[]).every((o) => o.success)).toBe(true);
      await reserved`commit`;
    } finally {
      reserved.release();
    }
    expect((await getBalances(sql, org)).ai.available).toBe(START - 15);
    await expectReconciled(sql, org);
  });
});
