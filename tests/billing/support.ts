// What the billing suites share: a fake Stripe of their own and a gateway whose functions talk to
// it (STRIPE_API_BASE), with the fake's webhooks going to that gateway's stripe-webhook; the
// catalogue's prices created in the fake (ids price_local_<lookup key>, as the seed names them);
// a team (owner, admin, billing member, plain member, stranger) of a fresh organization.
import Stripe from 'stripe';
import { afterAll, beforeAll } from 'vitest';
import { ensureStripePrices } from '../../scripts/lib/stripe-prices.mjs';
import { startFakeStripe, type FakeStripe } from '../fakes/stripe.ts';
import { backendFor } from '../support/clients.ts';
import { sql } from '../support/db.ts';
import { startGateway, type Gateway } from '../support/gateway.ts';
import { addMember, insertOrganization } from '../support/organizations.ts';
import { createUser, type TestUser } from '../support/users.ts';

export interface Billing {
  fake: FakeStripe;
  gateway: Gateway;
  /** The SDK against the fake, as a test's own view of "Stripe". */
  stripe: Stripe;
}

/** Starts the fake and the gateway for the file's tests, and stops them after. */
export function useBilling(): Billing {
  const billing = {} as Billing;
  beforeAll(async () => {
    billing.fake = await startFakeStripe({ retryDelaysMs: [100, 300, 900] });
    billing.gateway = await startGateway({
      STRIPE_API_BASE: billing.fake.url,
      STRIPE_SECRET_KEY: billing.fake.secretKey,
      STRIPE_WEBHOOK_SECRET: billing.fake.webhookSecret,
    });
    billing.fake.setWebhookUrl(`${billing.gateway.url}/functions/v1/stripe-webhook`);
    billing.stripe = new Stripe(billing.fake.secretKey, { host: billing.fake.host, port: billing.fake.port, protocol: 'http' });
    await ensureStripePrices(billing.stripe, sql);
  }, 120_000);
  afterAll(async () => {
    await billing.gateway?.stop();
    await billing.fake?.stop();
  });
  return billing;
}

export interface Team {
  organizationId: string;
  owner: TestUser;
  admin: TestUser;
  billing: TestUser;
  member: TestUser;
  stranger: TestUser;
}

export async function createTeam(name = 'Billing Co'): Promise<Team> {
  const [owner, admin, billing, member, stranger] = await Promise.all([1, 2, 3, 4, 5].map(() => createUser()));
  const org = await insertOrganization({ owner, name });
  await insertOrganization({ owner: stranger, name: 'Elsewhere' });
  await addMember(org.id, admin, 'admin');
  await addMember(org.id, billing, 'billing');
  await addMember(org.id, member, 'member');
  return { organizationId: org.id, owner, admin, billing, member, stranger };
}

export const RETURN = { successUrl: 'http://127.0.0.1:3000/billing/done', cancelUrl: 'http://127.0.0.1:3000/billing' };

/** `user` checks out through the SDK against the suite's gateway. */
export function billingFor(user: TestUser, gateway: Gateway) {
  return backendFor(user, gateway.url).billing;
}

/** Balances of the organization per pool. */
export async function balances(organizationId: string): Promise<Record<string, number>> {
  const rows = await sql<{ pool_key: string; available: string }[]>`
    select pool_key, available from public.credit_balances where organization_id = ${organizationId}`;
  return Object.fromEntries(rows.map((r) => [r.pool_key, Number(r.available)]));
}

/** Waits until `check` holds (webhooks arrive asynchronously), or fails with its last value. */
export async function eventually<T>(read: () => Promise<T>, check: (value: T) => boolean, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let value = await read();
  while (!check(value)) {
    if (Date.now() > deadline) throw new Error(`condition not met in ${timeoutMs} ms; last value: ${JSON.stringify(value)}`);
    await new Promise((r) => setTimeout(r, 100));
    value = await read();
  }
  return value;
}

/** A subscription to premium, checked out and paid; resolves once every webhook was handled. */
export async function subscribe(b: Billing, team: Team, user: TestUser = team.billing) {
  const session = await billingFor(user, b.gateway).checkout({ organizationId: team.organizationId, plan: 'premium', ...RETURN });
  const result = b.fake.completeCheckout(session.id, 'paid');
  await b.fake.flush();
  const subscriptionId = result.session.subscription as string;
  return { session, subscriptionId, result };
}
