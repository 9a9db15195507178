// The migrations on a database with hosted Supabase's roles and defaults: `postgres` is not a
// superuser, and nothing in public is granted to the API roles unless a migration grants it
// (scripts/lib/hosted-db.mjs builds it and runs a PostgREST in front of it). The main flows then
// run through that PostgREST as each API role, as a frontend and a backend would on a hosted
// project: a migration that relied on default grants or on superuser rights fails here.
import { randomUUID } from 'node:crypto';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ANON_KEY, SERVICE_ROLE_KEY } from '../../scripts/lib/config.mjs';
import { createHostedDatabase, dropHostedDatabase } from '../../scripts/lib/hosted-db.mjs';
import { userToken } from '../support/tokens.ts';

let restUrl: string;
let dbUrl: string;

/** A PostgREST call with a key or a user's token, as supabase-js makes it. */
async function rest(token: string, path: string, init: RequestInit = {}) {
  const res = await fetch(`${restUrl}${path}`, {
    ...init,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...init.headers },
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

const rpc = (token: string, name: string, args: Record<string, unknown>) =>
  rest(token, `/rpc/${name}`, { method: 'POST', body: JSON.stringify(args) });

interface HostedUser { id: string; email: string; token: string }

/** Signs a user up and in the way GoTrue does on hosted: rows written by supabase_auth_admin. */
async function signUp(email: string): Promise<HostedUser> {
  const id = randomUUID();
  const sessionId = randomUUID();
  const url = new URL(dbUrl);
  url.username = 'supabase_auth_admin';
  const auth = postgres(url.toString(), { max: 1, onnotice: () => {} });
  try {
    await auth`insert into auth.users (id, email, raw_user_meta_data) values (${id}, ${email}, ${auth.json({ full_name: 'Hosted Alice' })})`;
    await auth`insert into auth.sessions (id, user_id, created_at, updated_at, aal) values (${sessionId}, ${id}, now(), now(), 'aal1')`;
  } finally {
    await auth.end();
  }
  return { id, email, token: await userToken({ id, email, sessionId }) };
}

beforeAll(async () => {
  ({ dbUrl, restUrl } = await createHostedDatabase());
}, 120000);

afterAll(() => {
  dropHostedDatabase();
});

describe('a database with hosted defaults', () => {
  it('has postgres as an ordinary role, so the migrations never relied on superuser rights', async () => {
    const sql = postgres(dbUrl, { max: 1, onnotice: () => {} });
    try {
      const [role] = await sql`select rolsuper from pg_roles where rolname = current_user`;
      expect(role.rolsuper).toBe(false);
      const jobs = await sql`select jobname from cron.job order by jobname`;
      expect(jobs.map((j) => j.jobname)).toEqual(
        expect.arrayContaining(['credits-expire', 'credits-purge-idempotency-keys', 'credits-renew-periods']),
      );
    } finally {
      await sql.end();
    }
  });
});

describe('the main flows through PostgREST, as each API role', () => {
  let alice: HostedUser;
  let bob: HostedUser;
  let organizationId: string;

  beforeAll(async () => {
    alice = await signUp(`alice-${randomUUID().slice(0, 8)}@hosted.test`);
    bob = await signUp(`bob-${randomUUID().slice(0, 8)}@hosted.test`);
  });

  it('gives a new user a profile they can read', async () => {
    const { status, body } = await rest(alice.token, `/profiles?select=id,email,full_name&id=eq.${alice.id}`);
    expect(status).toBe(200);
    expect(body).toEqual([{ id: alice.id, email: alice.email, full_name: 'Hosted Alice' }]);
  });

  it('lets a signed-in user create an organization and read it, its members and profiles', async () => {
    const created = await rpc(alice.token, 'create_organization', { p_name: 'Hosted', p_slug: `hosted-${randomUUID().slice(0, 8)}` });
    expect(created.status).toBe(200);
    organizationId = created.body;

    const orgs = await rest(alice.token, '/organizations?select=id,name');
    expect(orgs.body).toEqual([{ id: organizationId, name: 'Hosted' }]);
    const members = await rest(alice.token, `/organization_members?select=user_id,role&organization_id=eq.${organizationId}`);
    expect(members.body).toEqual([{ user_id: alice.id, role: 'owner' }]);

    const renamed = await rest(alice.token, `/organizations?id=eq.${organizationId}`, {
      method: 'PATCH', body: JSON.stringify({ name: 'Hosted Co' }), headers: { prefer: 'return=representation' },
    });
    expect(renamed.status).toBe(200);
    expect(renamed.body[0].name).toBe('Hosted Co');
  });

  it('invites and admits a member, who then sees the teammates\' profiles', async () => {
    const invite = await rpc(alice.token, 'invite_member', { p_organization_id: organizationId, p_email: bob.email, p_role: 'member' });
    expect(invite.status).toBe(200);
    const accept = await rpc(bob.token, 'accept_invitation', { p_token: invite.body.token });
    expect(accept.status).toBe(200);
    const profiles = await rest(bob.token, '/profiles?select=id&order=email');
    expect(profiles.body.map((p: { id: string }) => p.id).sort()).toEqual([alice.id, bob.id].sort());
  });

  it('reads balances, consumes credits and reads usage as a member', async () => {
    const balances = await rpc(bob.token, 'get_credit_balances', { p_organization_id: organizationId });
    expect(balances.status).toBe(200);
    expect(balances.body.ai).toMatchObject({ available: 200, total: 200 });

    const consumed = await rpc(bob.token, 'consume_credits_rpc', {
      p_organization_id: organizationId, p_action_type: 'ai_chat', p_idempotency_key: 'hosted-1',
    });
    expect(consumed.body).toMatchObject({ success: true, remaining: { ai: 199 } });

    const now = new Date();
    const usage = await rpc(bob.token, 'get_credit_usage', {
      p_organization_id: organizationId,
      p_from: new Date(now.getTime() - 86400000).toISOString(),
      p_to: new Date(now.getTime() + 86400000).toISOString(),
    });
    expect(usage.status).toBe(200);
    expect(usage.body).toEqual([expect.objectContaining({ pool_key: 'ai', consumed: 1 })]);

    const ledger = await rest(bob.token, `/credit_ledger?select=kind,amount&organization_id=eq.${organizationId}&kind=eq.consumption`);
    expect(ledger.body).toEqual([{ kind: 'consumption', amount: -1 }]);
  });

  it('keeps the ledger append-only for members', async () => {
    const res = await rest(bob.token, `/credit_ledger?organization_id=eq.${organizationId}`, { method: 'DELETE' });
    expect(res.status).toBe(403);
  });

  it('lets the service role read tables, grant credits and change plans', async () => {
    const orgs = await rest(SERVICE_ROLE_KEY, `/organizations?select=id&id=eq.${organizationId}`);
    expect(orgs.status).toBe(200);
    expect(orgs.body).toEqual([{ id: organizationId }]);

    const granted = await rpc(SERVICE_ROLE_KEY, 'grant_credits', { p_organization_id: organizationId, p_pool: 'sms', p_amount: 10 });
    expect(granted.body).toMatchObject({ success: true, amount: 10 });

    const plan = await rpc(SERVICE_ROLE_KEY, 'change_plan', { p_organization_id: organizationId, p_plan_key: 'premium' });
    expect(plan.body).toMatchObject({ success: true, plan: 'premium' });
    const balances = await rpc(SERVICE_ROLE_KEY, 'get_credit_balances', { p_organization_id: organizationId });
    expect(balances.body.ai).toMatchObject({ available: 1500 });
    expect(balances.body.sms).toMatchObject({ available: 510 });

    const catalogue = await rest(SERVICE_ROLE_KEY, '/credit_actions?key=eq.ai_chat', {
      method: 'PATCH', body: JSON.stringify({ description: 'AI replies' }), headers: { prefer: 'return=representation' },
    });
    expect(catalogue.status).toBe(200);
  });

  it('refuses change_plan to a member and every table to anon', async () => {
    const plan = await rpc(alice.token, 'change_plan', { p_organization_id: organizationId, p_plan_key: 'starter' });
    expect(plan.status).toBe(403);
    for (const table of ['organizations', 'profiles', 'credit_balances', 'credit_pools']) {
      const res = await rest(ANON_KEY, `/${table}?select=*`);
      expect(res.status, table).toBe(401);
    }
  });
});
