// Two ways of ending one membership at once: an owner removes a member while the member leaves.
// Exactly one of them wins and writes its event (member.removed or member.left); the loser sees
// that its delete removed nothing and writes nothing. Real parallel connections, each acting as
// its user the way PostgREST does (role and JWT claims set in the transaction).
import { randomUUID } from 'node:crypto';
import type postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectionPool, sql } from '../support/db.ts';
import { addMember, deleteOrganizations, insertOrganization } from '../support/organizations.ts';
import { createUser, type TestUser } from '../support/users.ts';

const APP = `membership-races-${randomUUID().slice(0, 8)}`;
const pool = connectionPool(4, APP);

let owner: TestUser;
const members: TestUser[] = [];
const organizations: string[] = [];

afterAll(async () => {
  await deleteOrganizations(organizations);
  await pool.end({ timeout: 5 });
});

beforeAll(async () => {
  owner = await createUser();
});

/** A fresh organization with `owner` as owner and a new plain member. */
async function organizationWithMember(): Promise<{ organizationId: string; member: TestUser }> {
  const member = await createUser();
  members.push(member);
  const { id } = await insertOrganization({ name: 'Race', owner });
  organizations.push(id);
  await addMember(id, member, 'member');
  return { organizationId: id, member };
}

/** Runs `call` as `user` in its own transaction; resolves with the error code, or null on success. */
function asUser(user: TestUser, call: (tx: postgres.TransactionSql) => Promise<unknown>, hold?: Promise<void>): Promise<string | null> {
  return pool.begin(async (tx) => {
    await tx`select set_config('request.jwt.claims', ${JSON.stringify({ sub: user.id, role: 'authenticated', email: user.email })}, true),
                    set_config('role', 'authenticated', true)`;
    await call(tx);
    await hold;
  }).then(() => null, (err: { message: string }) => err.message);
}

const removeMember = (organizationId: string, userId: string) => (tx: postgres.TransactionSql) =>
  tx`select public.remove_member(${organizationId}, ${userId})`;
const leave = (organizationId: string) => (tx: postgres.TransactionSql) =>
  tx`select public.leave_organization(${organizationId})`;

/** Waits until one of our sessions waits for a row lock. */
async function someoneWaitsForALock(): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const [{ waiting }] = await sql`
      select count(*)::int as waiting from pg_stat_activity where application_name = ${APP} and wait_event_type = 'Lock'`;
    if (waiting > 0) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error('no session ever waited for the lock');
}

async function endingEvents(organizationId: string): Promise<string[]> {
  const rows = await sql`select type from private.domain_events
                         where organization_id = ${organizationId} and type in ('member.removed', 'member.left') order by id`;
  return rows.map((r) => r.type as string);
}

describe('remove_member racing leave_organization', () => {
  it('the member leaving while the removal is uncommitted writes nothing once it finds the row gone', async () => {
    const { organizationId, member } = await organizationWithMember();
    let release!: () => void;
    const held = new Promise<void>((r) => { release = r; });
    const removal = asUser(owner, removeMember(organizationId, member.id), held);
    // The removal has deleted the row (uncommitted) before the member tries to leave.
    await new Promise((r) => setTimeout(r, 50));
    const leaving = asUser(member, leave(organizationId));
    await someoneWaitsForALock();
    release();
    expect(await removal).toBeNull();
    expect(await leaving).toBe('not_authorized');
    expect(await endingEvents(organizationId)).toEqual(['member.removed']);
  });

  it('the owner removing while the leave is uncommitted finds no member and writes nothing', async () => {
    const { organizationId, member } = await organizationWithMember();
    let release!: () => void;
    const held = new Promise<void>((r) => { release = r; });
    const leaving = asUser(member, leave(organizationId), held);
    await new Promise((r) => setTimeout(r, 50));
    const removal = asUser(owner, removeMember(organizationId, member.id));
    await someoneWaitsForALock();
    release();
    expect(await leaving).toBeNull();
    expect(await removal).toBe('member_not_found');
    expect(await endingEvents(organizationId)).toEqual(['member.left']);
  });

  it('ten free-running races each end the membership once, with one event', async () => {
    for (let trial = 0; trial < 10; trial++) {
      const { organizationId, member } = await organizationWithMember();
      const results = await Promise.all([
        asUser(owner, removeMember(organizationId, member.id)),
        asUser(member, leave(organizationId)),
      ]);
      expect(results.filter((r) => r === null), `trial ${trial}: ${results}`).toHaveLength(1);
      expect(await endingEvents(organizationId), `trial ${trial}`).toHaveLength(1);
    }
  });
});
