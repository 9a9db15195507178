// The SDK's credits end to end: supabase-js through the local gateway to PostgREST and the credit
// RPCs (consume, batch, balances, usage, reservations, grants, refunds, plans, the catalogue).
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, expectTypeOf, it } from 'vitest';
import { backendFor, rejection, serviceBackend } from '../support/clients.ts';
import { sql, useSetting } from '../support/db.ts';
import { createOrganization, join } from '../support/organizations.ts';
import { createUser, deleteUsers, type TestUser } from '../support/users.ts';
import {
  errorCodeOf,
  isServerErrorCode,
  type ConsumeResult,
  type CreditBalance,
  type Organization,
} from '../../clients/js/src/index.ts';

// One owner creates an organization per test here; the free-organization limit has its own tests
// (tests/db/08-tenancy-hardening.test.sql).
useSetting('free_organizations_per_user', 1000);

let owner: TestUser;
let member: TestUser;
let stranger: TestUser;
let platformAdmin: TestUser;
const createdUserIds: string[] = [];

beforeAll(async () => {
  [owner, member, stranger, platformAdmin] = await Promise.all([
    createUser(),
    createUser(),
    createUser(),
    createUser(undefined, { platform_admin: true }),
  ]);
  createdUserIds.push(owner.id, member.id, stranger.id, platformAdmin.id);
});

afterAll(async () => {
  await sql`delete from public.organizations where created_by = any(${createdUserIds}::uuid[])`;
  await deleteUsers(createdUserIds);
});

/** A fresh organization on the starter plan (200 ai, 150 whatsapp, 1000 email, 50 sms) with `member` in it. */
async function starterOrganization(): Promise<Organization> {
  const org = await createOrganization(owner, 'Credits Co');
  await join(org.id, owner, member, 'member');
  return org;
}

const STARTER: Record<string, CreditBalance> = {
  ai: { available: 200, reserved: 0, total: 200 },
  whatsapp: { available: 150, reserved: 0, total: 150 },
  email: { available: 1000, reserved: 0, total: 1000 },
  sms: { available: 50, reserved: 0, total: 50 },
};

async function verifyLedger(organizationId: string): Promise<void> {
  const rows = await sql<{ pool_key: string; ok: boolean }[]>`
    select pool_key, ok from private.verify_credit_ledger(${organizationId})`;
  expect(rows.length).toBeGreaterThan(0);
  expect(rows.filter((r) => !r.ok)).toEqual([]);
}

describe('credit error codes', () => {
  it('knows the SQL codes and maps unnamed PT404/PT409 to not_found/conflict', () => {
    for (const code of ['unknown_action', 'idempotency_key_reused', 'reservation_not_active', 'refund_exceeds_consumed', 'invalid_range']) {
      expect(isServerErrorCode(code)).toBe(true);
      expect(errorCodeOf({ message: code, code: 'PT409' }, 409)).toBe(code);
    }
    expect(isServerErrorCode('insufficient_credits')).toBe(false); // a result, never an error
    expect(errorCodeOf({ message: 'something else', code: 'PT409' }, 409)).toBe('conflict');
    expect(errorCodeOf({ message: 'something else', code: 'PT404' }, 404)).toBe('not_found');
  });
});

describe('consume', () => {
  it('a member consumes ai_chat and sees 199 left; balances and the ledger agree', async () => {
    const org = await starterOrganization();
    const credits = backendFor(member).credits;
    expect(await credits.balances(org.id)).toEqual(STARTER);

    const result = await credits.consume({ organizationId: org.id, action: 'ai_chat', metadata: { message_id: 'm1' } });
    expectTypeOf(result).toEqualTypeOf<ConsumeResult>();
    expect(result).toEqual({
      success: true,
      transaction_id: expect.stringMatching(/^[0-9a-f-]{36}$/),
      consumed: { ai: 1 },
      remaining: { ai: 199 },
    });
    if (!result.success || result.dry_run) throw new Error('narrowing');
    expectTypeOf(result.transaction_id).toEqualTypeOf<string>();

    const balances = await credits.balances(org.id);
    expectTypeOf(balances.ai).toEqualTypeOf<CreditBalance>();
    expect(balances).toEqual({ ...STARTER, ai: { available: 199, reserved: 0, total: 200 } });

    const [entry] = await credits.ledger(org.id, { limit: 1 });
    expect(entry).toMatchObject({
      transaction_id: result.transaction_id,
      pool_key: 'ai',
      kind: 'consumption',
      amount: -1,
      action_key: 'ai_chat',
      quantity: 1,
      actor_id: member.id,
      actor_role: 'authenticated',
      metadata: { message_id: 'm1' },
    });
    // The owner sees the same; the ledger is newest first and limited.
    const ownerLedger = await backendFor(owner).credits.ledger(org.id, { limit: 2 });
    expect(ownerLedger).toHaveLength(2);
    expect(ownerLedger[0]?.id).toBeGreaterThan(ownerLedger[1]?.id ?? Infinity);
    expect(await backendFor(owner).credits.ledger(org.id, { transactionId: result.transaction_id })).toHaveLength(1);
    await verifyLedger(org.id);
  });

  it('answers insufficient_credits as a result for bulk_email x200 (2000 email needed, 1000 held)', async () => {
    const org = await starterOrganization();
    const credits = backendFor(member).credits;
    const result = await credits.consume({ organizationId: org.id, action: 'bulk_email', quantity: 200 });
    expect(result).toEqual({
      success: false,
      error: 'insufficient_credits',
      message: 'Insufficient Email credits',
      pool: 'email',
      required: 2000,
      available: 1000,
    });
    if (result.success) throw new Error('narrowing');
    expectTypeOf(result.required).toEqualTypeOf<number>();
    expect((await credits.balances(org.id)).email).toEqual(STARTER.email);
    // 100 batches fit exactly.
    expect(await credits.consume({ organizationId: org.id, action: 'bulk_email', quantity: 100 })).toMatchObject({
      success: true,
      consumed: { email: 1000 },
      remaining: { email: 0 },
    });
  });

  it('dry-runs one unit without charging, and says when it would not fit', async () => {
    const org = await starterOrganization();
    const credits = backendFor(member).credits;
    expect(await credits.dryRun({ organizationId: org.id, action: 'form_generation' })).toEqual({
      success: true,
      dry_run: true,
      would_consume: { ai: 5 },
      remaining: { ai: 195 },
    });
    expect(await credits.consume({ organizationId: org.id, action: 'sms_send', quantity: 0 })).toEqual({
      success: true,
      dry_run: true,
      would_consume: { sms: 1 },
      remaining: { sms: 49 },
    });
    expect(await credits.balances(org.id)).toEqual(STARTER);

    await credits.consume({ organizationId: org.id, action: 'sms_send', quantity: 50 });
    expect(await credits.dryRun({ organizationId: org.id, action: 'sms_send' })).toEqual({
      success: false,
      error: 'insufficient_credits',
      message: 'Insufficient SMS credits',
      pool: 'sms',
      required: 1,
      available: 0,
      dry_run: true,
    });
  });

  it('replays a retry with the same idempotency key: same transaction, charged once', async () => {
    const org = await starterOrganization();
    const credits = backendFor(member).credits;
    const key = `chat-${randomUUID()}`;
    const input = { organizationId: org.id, action: 'ai_chat', idempotencyKey: key, metadata: { reply: 1 } };

    const first = await credits.consume(input);
    const retry = await credits.consume(input);
    if (!first.success || first.dry_run || !retry.success || retry.dry_run) throw new Error('expected charges');
    expect(first.idempotent_replay).toBeUndefined();
    expect(retry).toEqual({ ...first, idempotent_replay: true });
    expect((await credits.balances(org.id)).ai.available).toBe(199);
    expect(await credits.ledger(org.id, { transactionId: first.transaction_id })).toHaveLength(1);

    // Concurrent retries of a new key: one charge, the same answer for all.
    const parallelKey = `chat-${randomUUID()}`;
    const results = await Promise.all(
      Array.from({ length: 5 }, () =>
        backendFor(member).credits.consume({ organizationId: org.id, action: 'ai_chat', idempotencyKey: parallelKey }),
      ),
    );
    const ids = new Set(results.map((r) => (r.success && !r.dry_run ? r.transaction_id : null)));
    expect(ids.size).toBe(1);
    expect(results.filter((r) => !('idempotent_replay' in r && r.idempotent_replay))).toHaveLength(1);
    expect((await credits.balances(org.id)).ai.available).toBe(198);

    // The same key with other arguments is a conflict.
    const reused = await rejection(credits.consume({ ...input, quantity: 2 }), 'idempotency_key_reused');
    expect(reused).toMatchObject({ status: 409, sqlstate: 'PT409' });
    await rejection(credits.consume({ ...input, metadata: { reply: 2 } }), 'idempotency_key_reused');
    await rejection(credits.consume({ ...input, action: 'ai_assistant' }), 'idempotency_key_reused');
    // Keys are per organization.
    const other = await starterOrganization();
    expect(await credits.consume({ ...input, organizationId: other.id })).toMatchObject({
      success: true,
      remaining: { ai: 199 },
    });
    await verifyLedger(org.id);
  });

  it('refuses strangers and anonymous callers', async () => {
    const org = await starterOrganization();
    const outsider = backendFor(stranger).credits;
    const denied = await rejection(outsider.consume({ organizationId: org.id, action: 'ai_chat' }), 'not_authorized');
    expect(denied.status).toBe(403);
    await rejection(outsider.balances(org.id), 'not_authorized');
    await rejection(outsider.usage({ organizationId: org.id, from: new Date(0), to: new Date() }), 'not_authorized');
    await rejection(outsider.consumeBatch(org.id, [{ action: 'ai_chat' }]), 'not_authorized');
    expect(await outsider.ledger(org.id)).toEqual([]);

    const anonymous = backendFor().credits;
    const anon = await rejection(anonymous.consume({ organizationId: org.id, action: 'ai_chat' }), 'not_authenticated');
    expect(anon.status).toBe(401);
    await rejection(anonymous.balances(org.id), 'not_authenticated');
    await rejection(anonymous.plans(), 'not_authenticated');

    expect(await backendFor(member).credits.balances(org.id)).toEqual(STARTER);
  });

  it('throws the SQL codes for bad input', async () => {
    const org = await starterOrganization();
    const credits = backendFor(member).credits;
    const unknown = await rejection(credits.consume({ organizationId: org.id, action: 'teleport' }), 'unknown_action');
    expect(unknown).toMatchObject({ status: 404, sqlstate: 'PT404' });
    expect(unknown.message).toBe("No action 'teleport'.");
    await rejection(credits.consume({ organizationId: org.id, action: 'ai_chat', quantity: -1 }), 'invalid_quantity');
    await rejection(credits.consume({ organizationId: org.id, action: 'ai_chat', quantity: 1_000_001 }), 'invalid_quantity');
    await rejection(
      credits.consume({ organizationId: org.id, action: 'ai_chat', idempotencyKey: 'not a key!' }),
      'invalid_idempotency_key',
    );
    await rejection(
      credits.consume({ organizationId: org.id, action: 'ai_chat', metadata: { blob: 'x'.repeat(9000) } }),
      'invalid_metadata',
    );
    const serviceMissing = await rejection(
      serviceBackend().credits.consume({ organizationId: randomUUID(), action: 'ai_chat' }),
      'organization_not_found',
    );
    expect(serviceMissing.status).toBe(404);
  });
});

describe('consumeBatch', () => {
  it('runs each item on its own and answers in order', async () => {
    const org = await starterOrganization();
    const credits = backendFor(member).credits;
    const key = `batch-${randomUUID()}`;
    const results = await credits.consumeBatch(org.id, [
      { action: 'ai_chat' },
      { action: 'email_send', quantity: 3, idempotencyKey: key, metadata: { campaign: 'c1' } },
      { action: 'teleport' },
      { action: 'bulk_email', quantity: 200 },
      { action: 'ai_chat', quantity: 0 },
      { action: 'email_send', quantity: 3, idempotencyKey: key, metadata: { campaign: 'c1' } },
      { action: 'ai_chat', quantity: -5 },
    ]);
    expect(results).toEqual([
      { success: true, transaction_id: expect.any(String), consumed: { ai: 1 }, remaining: { ai: 199 } },
      { success: true, transaction_id: expect.any(String), consumed: { email: 3 }, remaining: { email: 997 } },
      { success: false, error: 'unknown_action' },
      {
        success: false,
        error: 'insufficient_credits',
        message: 'Insufficient Email credits',
        pool: 'email',
        required: 2000,
        available: 997,
      },
      { success: true, dry_run: true, would_consume: { ai: 1 }, remaining: { ai: 198 } },
      { ...results[1], idempotent_replay: true },
      { success: false, error: 'invalid_quantity' },
    ]);
    const balances = await credits.balances(org.id);
    expect(balances.ai.available).toBe(199);
    expect(balances.email.available).toBe(997);

    await rejection(credits.consumeBatch(org.id, []), 'invalid_items');
    await rejection(
      credits.consumeBatch(org.id, Array.from({ length: 101 }, () => ({ action: 'ai_chat' }))),
      'invalid_items',
    );
    await verifyLedger(org.id);
  });
});

describe('reservations', () => {
  it('reserves, commits part, and frees the rest', async () => {
    const org = await starterOrganization();
    const credits = backendFor(member).credits;
    const reservation = await credits.reserve({ organizationId: org.id, amounts: { ai: 20 }, ttlSeconds: 600 });
    if (!reservation.success) throw new Error('expected a reservation');
    expect(reservation).toEqual({
      success: true,
      reservation_id: expect.any(String),
      status: 'active',
      held: { ai: 20 },
      expires_at: expect.any(String),
    });
    const ttl = (Date.parse(reservation.expires_at) - Date.now()) / 1000;
    expect(ttl).toBeGreaterThan(590);
    expect(ttl).toBeLessThanOrEqual(600);
    expect((await credits.balances(org.id)).ai).toEqual({ available: 180, reserved: 20, total: 200 });

    const committed = await credits.commit({ reservationId: reservation.reservation_id, amounts: { ai: 7 } });
    expect(committed).toEqual({
      success: true,
      reservation_id: reservation.reservation_id,
      transaction_id: expect.any(String),
      consumed: { ai: 7 },
      released: { ai: 13 },
      overage: {},
    });
    expect((await credits.balances(org.id)).ai).toEqual({ available: 193, reserved: 0, total: 200 });

    const again = await rejection(credits.commit({ reservationId: reservation.reservation_id }), 'reservation_not_active');
    expect(again.status).toBe(409);
    await rejection(credits.release(reservation.reservation_id), 'reservation_not_active');
    const missing = await rejection(credits.release(randomUUID()), 'reservation_not_found');
    expect(missing.status).toBe(404);

    const [row] = await sql<{ status: string; charged: unknown }[]>`
      select status, charged from public.credit_reservations where id = ${reservation.reservation_id}`;
    expect(row).toEqual({ status: 'committed', charged: { ai: 7 } });
    await verifyLedger(org.id);
  });

  it('holds an action\'s cost and releases it all; retries with the key return the same reservation', async () => {
    const org = await starterOrganization();
    const credits = backendFor(member).credits;
    const key = `res-${randomUUID()}`;
    const input = { organizationId: org.id, action: 'form_generation', quantity: 2, idempotencyKey: key };
    const reservation = await credits.reserve(input);
    if (!reservation.success) throw new Error('expected a reservation');
    expect(reservation.held).toEqual({ ai: 10 });
    expect(await credits.reserve(input)).toEqual({ ...reservation, idempotent_replay: true });
    expect((await credits.balances(org.id)).ai).toEqual({ available: 190, reserved: 10, total: 200 });

    // Another member of the organization may release it.
    expect(await backendFor(owner).credits.release(reservation.reservation_id)).toEqual({
      success: true,
      reservation_id: reservation.reservation_id,
      released: { ai: 10 },
    });
    expect((await credits.balances(org.id)).ai).toEqual({ available: 200, reserved: 0, total: 200 });
    expect(await credits.reserve(input)).toMatchObject({ status: 'released', idempotent_replay: true });

    // The caller is checked before the reservation's status.
    await rejection(backendFor(stranger).credits.release(reservation.reservation_id), 'not_authorized');
    await verifyLedger(org.id);
  });

  it('gives concurrent retries with one key the same reservation, held once', async () => {
    const org = await starterOrganization();
    for (let round = 0; round < 3; round++) {
      const key = `race-${randomUUID()}`;
      const results = await Promise.all(
        Array.from({ length: 8 }, () =>
          backendFor(member).credits.reserve({ organizationId: org.id, amounts: { ai: 1 }, idempotencyKey: key }),
        ),
      );
      const ids = new Set(results.map((r) => (r.success ? r.reservation_id : null)));
      expect(ids.size).toBe(1);
      expect(ids.has(null)).toBe(false);
    }
    expect((await backendFor(member).credits.balances(org.id)).ai).toEqual({ available: 197, reserved: 3, total: 200 });
    await verifyLedger(org.id);
  });

  it('answers insufficient_credits, and refuses bad reservations and over-commits', async () => {
    const org = await starterOrganization();
    const credits = backendFor(member).credits;
    expect(await credits.reserve({ organizationId: org.id, amounts: { sms: 51 } })).toEqual({
      success: false,
      error: 'insufficient_credits',
      message: 'Insufficient SMS credits',
      pool: 'sms',
      required: 51,
      available: 50,
    });
    await rejection(credits.reserve({ organizationId: org.id, amounts: { ai: 1 }, ttlSeconds: 0 }), 'invalid_ttl');
    await rejection(credits.reserve({ organizationId: org.id, amounts: { ai: 1 }, ttlSeconds: 86_401 }), 'invalid_ttl');
    await rejection(credits.reserve({ organizationId: org.id, amounts: { ai: 1 }, ttlSeconds: Number.NaN }), 'invalid_ttl');
    await rejection(credits.reserve({ organizationId: org.id, amounts: {} }), 'invalid_amounts');
    await rejection(credits.reserve({ organizationId: org.id, amounts: { ai: 1.5 } }), 'invalid_amounts');
    await rejection(credits.reserve({ organizationId: org.id, amounts: { gold: 1 } }), 'pool_not_found');
    await rejection(credits.reserve({ organizationId: org.id, action: 'teleport' }), 'unknown_action');
    await rejection(credits.reserve({ organizationId: org.id, action: 'ai_chat', quantity: 0 }), 'invalid_quantity');
    await rejection(backendFor(stranger).credits.reserve({ organizationId: org.id, amounts: { ai: 1 } }), 'not_authorized');

    const reservation = await credits.reserve({ organizationId: org.id, amounts: { ai: 5 } });
    if (!reservation.success) throw new Error('expected a reservation');
    await rejection(
      credits.commit({ reservationId: reservation.reservation_id, amounts: { email: 1 } }),
      'invalid_amounts',
    );
    // Starter allows no overage: more than held is refused, even with credits available.
    await rejection(
      credits.commit({ reservationId: reservation.reservation_id, amounts: { ai: 8 } }),
      'exceeds_reservation',
    );
    expect((await credits.balances(org.id)).ai).toEqual({ available: 195, reserved: 5, total: 200 });
    expect(await credits.commit({ reservationId: reservation.reservation_id, amounts: { ai: 5 } })).toMatchObject({
      consumed: { ai: 5 },
      released: { ai: 0 },
      overage: {},
    });
    expect((await credits.balances(org.id)).ai).toEqual({ available: 195, reserved: 0, total: 200 });
    await verifyLedger(org.id);
  });
});

describe('usage', () => {
  it('sums consumption per pool and UTC day', async () => {
    const org = await starterOrganization();
    const credits = backendFor(member).credits;
    await credits.consume({ organizationId: org.id, action: 'ai_chat', quantity: 3 });
    await credits.consume({ organizationId: org.id, action: 'automation_run' });
    await credits.consume({ organizationId: org.id, action: 'email_send', quantity: 4 });
    await credits.consume({ organizationId: org.id, action: 'bulk_email', quantity: 500 }); // insufficient: not usage

    const now = Date.now();
    const rows = await credits.usage({
      organizationId: org.id,
      from: new Date(now - 86_400_000),
      to: new Date(now + 86_400_000).toISOString(),
    });
    const today = new Date().toISOString().slice(0, 10);
    expect(rows).toEqual([
      { day: today, pool_key: 'ai', consumed: 5, refunded: 0 },
      { day: today, pool_key: 'email', consumed: 4, refunded: 0 },
    ]);
    expect(await credits.usage({ organizationId: org.id, from: new Date(now - 3 * 86_400_000), to: new Date(now - 86_400_000) })).toEqual([]);

    await rejection(credits.usage({ organizationId: org.id, from: new Date(now), to: new Date(now) }), 'invalid_range');
    await rejection(
      credits.usage({ organizationId: org.id, from: new Date(now - 400 * 86_400_000), to: new Date(now) }),
      'invalid_range',
    );
  });
});

describe('refunds and grants (service role and platform admins)', () => {
  it('lets only the service role and platform admins refund', async () => {
    const org = await starterOrganization();
    const charge = await backendFor(member).credits.consume({ organizationId: org.id, action: 'form_generation' });
    if (!charge.success || charge.dry_run) throw new Error('expected a charge');

    for (const user of [owner, member]) {
      const denied = await rejection(backendFor(user).credits.refund({ transactionId: charge.transaction_id }), 'not_authorized');
      expect(denied.status).toBe(403);
    }
    await rejection(backendFor().credits.refund({ transactionId: charge.transaction_id }), 'not_authenticated');
    for (const admin of [serviceBackend(), backendFor(platformAdmin)]) {
      const missing = await rejection(admin.credits.refund({ transactionId: randomUUID() }), 'transaction_not_found');
      expect(missing.status).toBe(404);
      await rejection(admin.credits.refund({ transactionId: charge.transaction_id, amounts: { ai: 0 } }), 'invalid_amounts');
      await rejection(admin.credits.refund({ transactionId: charge.transaction_id, amounts: { gold: 1 } }), 'pool_not_found');
    }

    expect((await backendFor(member).credits.balances(org.id)).ai.available).toBe(195);
  });

  it('refunds a consumption in parts, never more than consumed', async () => {
    const org = await starterOrganization();
    const credits = backendFor(member).credits;
    const charge = await credits.consume({ organizationId: org.id, action: 'form_generation' });
    if (!charge.success || charge.dry_run) throw new Error('expected a charge');
    expect(charge.remaining).toEqual({ ai: 195 });

    const service = serviceBackend().credits;
    const partial = await service.refund({ transactionId: charge.transaction_id, amounts: { ai: 2 }, reason: 'bad answer' });
    expect(partial).toEqual({
      success: true,
      transaction_id: expect.any(String),
      refund_of: charge.transaction_id,
      refunded: { ai: 2 },
    });
    expect((await credits.balances(org.id)).ai.available).toBe(197);

    await rejection(service.refund({ transactionId: charge.transaction_id, amounts: { ai: 4 } }), 'refund_exceeds_consumed');
    await rejection(service.refund({ transactionId: charge.transaction_id, amounts: { email: 1 } }), 'refund_exceeds_consumed');

    // A platform admin (app_metadata.platform_admin) refunds the rest.
    const rest = await backendFor(platformAdmin).credits.refund({ transactionId: charge.transaction_id });
    expect(rest).toMatchObject({ refund_of: charge.transaction_id, refunded: { ai: 3 } });
    expect((await credits.balances(org.id)).ai.available).toBe(200);
    expect(await service.refund({ transactionId: charge.transaction_id })).toMatchObject({ refunded: {} });

    const refunds = await credits.ledger(org.id, { limit: 10 });
    expect(refunds.filter((e) => e.kind === 'refund').map((e) => [e.amount, e.refund_of, e.actor_role])).toEqual([
      [3, charge.transaction_id, 'authenticated'],
      [2, charge.transaction_id, 'service_role'],
    ]);
    const today = new Date().toISOString().slice(0, 10);
    expect(
      await credits.usage({ organizationId: org.id, from: new Date(Date.now() - 3_600_000), to: new Date(Date.now() + 3_600_000) }),
    ).toEqual([{ day: today, pool_key: 'ai', consumed: 5, refunded: 5 }]);
    await verifyLedger(org.id);
  });

  it('grants credits that are drawn by priority; owners cannot grant', async () => {
    const org = await starterOrganization();
    const service = serviceBackend().credits;
    const granted = await service.grant({ organizationId: org.id, pool: 'ai', amount: 100, kind: 'promotion', source: 'launch' });
    expect(granted).toEqual({
      success: true,
      grant_id: expect.any(String),
      transaction_id: expect.any(String),
      pool: 'ai',
      amount: 100,
      expires_at: 'infinity',
    });
    const expiresAt = new Date(Date.now() + 7 * 86_400_000);
    const purchase = await backendFor(platformAdmin).credits.grant({
      organizationId: org.id,
      pool: 'sms',
      amount: 10,
      kind: 'purchase',
      expiresAt,
      priority: 0,
    });
    expect(Date.parse(purchase.expires_at)).toBe(expiresAt.getTime());
    const balances = await backendFor(member).credits.balances(org.id);
    expect(balances.ai).toEqual({ available: 300, reserved: 0, total: 300 });
    expect(balances.sms).toEqual({ available: 60, reserved: 0, total: 60 });

    // Priority 0 is drawn first.
    const charge = await backendFor(member).credits.consume({ organizationId: org.id, action: 'sms_send' });
    if (!charge.success || charge.dry_run) throw new Error('expected a charge');
    expect((await backendFor(member).credits.ledger(org.id, { transactionId: charge.transaction_id }))[0]?.grant_id).toBe(
      purchase.grant_id,
    );

    await rejection(backendFor(owner).credits.grant({ organizationId: org.id, pool: 'ai', amount: 1 }), 'not_authorized');
    await rejection(service.grant({ organizationId: org.id, pool: 'ai', amount: 0 }), 'invalid_amount');
    await rejection(service.grant({ organizationId: org.id, pool: 'gold', amount: 1 }), 'pool_not_found');
    await rejection(
      service.grant({ organizationId: org.id, pool: 'ai', amount: 1, kind: 'plan_allocation' as 'manual' }),
      'invalid_kind',
    );
    await rejection(service.grant({ organizationId: org.id, pool: 'ai', amount: 1, expiresAt: new Date(0) }), 'invalid_expiry');
    await rejection(service.grant({ organizationId: org.id, pool: 'ai', amount: 1, priority: 1001 }), 'invalid_priority');
    await rejection(service.grant({ organizationId: randomUUID(), pool: 'ai', amount: 1 }), 'organization_not_found');
    await verifyLedger(org.id);
  });

  it('changes plans through the service role only', async () => {
    const org = await starterOrganization();
    await rejection(backendFor(owner).credits.changePlan({ organizationId: org.id, plan: 'premium' }), 'not_authorized');
    await rejection(backendFor(platformAdmin).credits.changePlan({ organizationId: org.id, plan: 'premium' }), 'not_authorized');
    const service = serviceBackend().credits;
    await rejection(service.changePlan({ organizationId: org.id, plan: 'platinum' }), 'plan_not_found');

    await backendFor(member).credits.consume({ organizationId: org.id, action: 'ai_chat' });
    const changed = await service.changePlan({ organizationId: org.id, plan: 'premium' });
    expect(changed).toMatchObject({ success: true, plan: 'premium' });
    expect(Date.parse(changed.period_end)).toBeGreaterThan(Date.parse(changed.period_start));
    // The rest of the starter allocation expired; the premium one replaces it.
    expect(await backendFor(member).credits.balances(org.id)).toEqual({
      ai: { available: 1500, reserved: 0, total: 1500 },
      whatsapp: { available: 1200, reserved: 0, total: 1200 },
      email: { available: 20000, reserved: 0, total: 20000 },
      sms: { available: 500, reserved: 0, total: 500 },
    });
    await verifyLedger(org.id);
  });

  it('stripes a pool through the service role only, and the pool spends as before', async () => {
    const org = await starterOrganization();
    await rejection(backendFor(owner).credits.setStripes({ organizationId: org.id, pool: 'ai', stripes: 4 }), 'not_authorized');
    const service = serviceBackend().credits;
    await rejection(service.setStripes({ organizationId: org.id, pool: 'ai', stripes: 65 }), 'invalid_stripes');
    await rejection(service.setStripes({ organizationId: org.id, pool: 'gold' as 'ai', stripes: 4 }), 'pool_not_found');
    await rejection(service.setStripes({ organizationId: randomUUID(), pool: 'ai', stripes: 4 }), 'organization_not_found');

    expect(await service.setStripes({ organizationId: org.id, pool: 'ai', stripes: 4 })).toEqual({ pool: 'ai', stripes: 4 });
    const memberCredits = backendFor(member).credits;
    for (let i = 1; i <= 3; i++) {
      expect(await memberCredits.consume({ organizationId: org.id, action: 'ai_chat' })).toMatchObject({
        success: true, consumed: { ai: 1 }, remaining: { ai: 200 - i },
      });
    }
    // The stripes hold part of the balance; the balances count them.
    expect((await memberCredits.balances(org.id)).ai).toEqual({ available: 197, reserved: 0, total: 200 });
    expect(await service.setStripes({ organizationId: org.id, pool: 'ai', stripes: 1 })).toEqual({ pool: 'ai', stripes: 1 });
    expect((await memberCredits.balances(org.id)).ai).toEqual({ available: 197, reserved: 0, total: 200 });
    await verifyLedger(org.id);
  });
});

describe('low-balance thresholds', () => {
  it('owners and admins set a pool threshold; null restores 10% of the allocation', async () => {
    const org = await starterOrganization();
    const thresholdOf = async (pool: string) =>
      (await sql<{ low_threshold: string; low_threshold_override: string | null }[]>`
        select low_threshold, low_threshold_override from public.credit_balances
        where organization_id = ${org.id} and pool_key = ${pool}`)[0];
    expect(await thresholdOf('ai')).toEqual({ low_threshold: '20', low_threshold_override: null });

    const credits = backendFor(owner).credits;
    await credits.setLowThreshold({ organizationId: org.id, pool: 'ai', threshold: 150 });
    expect(await thresholdOf('ai')).toEqual({ low_threshold: '150', low_threshold_override: '150' });

    await rejection(backendFor(member).credits.setLowThreshold({ organizationId: org.id, pool: 'ai', threshold: 1 }), 'not_authorized');
    await rejection(credits.setLowThreshold({ organizationId: org.id, pool: 'ai', threshold: -1 }), 'invalid_threshold');
    await rejection(credits.setLowThreshold({ organizationId: org.id, pool: 'gold', threshold: 1 }), 'pool_not_found');

    await credits.setLowThreshold({ organizationId: org.id, pool: 'ai', threshold: null });
    expect(await thresholdOf('ai')).toEqual({ low_threshold: '20', low_threshold_override: null });
  });
});

describe('the catalogue', () => {
  it('lists the seeded pools, plans with allocations and actions with costs', async () => {
    const credits = backendFor(stranger).credits;
    expect((await credits.pools()).map((p) => p.key)).toEqual(['ai', 'whatsapp', 'email', 'sms']);

    const plans = await credits.plans();
    const allocations = Object.fromEntries(
      plans.map((plan) => [plan.key, Object.fromEntries(plan.allocations.map((a) => [a.pool_key, a.amount]))]),
    );
    expect(allocations).toMatchObject({
      starter: { ai: 200, whatsapp: 150, email: 1000, sms: 50 },
      premium: { ai: 1500, whatsapp: 1200, email: 20000, sms: 500 },
    });
    expect(plans.find((p) => p.key === 'starter')).toMatchObject({ name: 'Starter', is_active: true });
    expect(plans.find((p) => p.key === 'premium')?.allocations.every((a) => a.allows_overage)).toBe(true);

    const actions = await credits.actions();
    const costs = Object.fromEntries(actions.map((a) => [a.key, a.costs.map((c) => [c.pool_key, c.amount])]));
    expect(costs).toMatchObject({
      ai_chat: [['ai', 1]],
      ai_assistant: [['ai', 1]],
      form_generation: [['ai', 5]],
      automation_run: [['ai', 2]],
      whatsapp_message: [['whatsapp', 1]],
      email_send: [['email', 1]],
      bulk_email: [['email', 10]],
      sms_send: [['sms', 1]],
    });
    expect(actions.find((a) => a.key === 'ai_chat')?.is_enabled).toBe(true);
  });
});
