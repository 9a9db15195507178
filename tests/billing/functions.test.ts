// billing-checkout, billing-portal and billing-setup-intent through the SDK's billing module:
// who may call them, what bad input gets, one Stripe customer per organization even when two
// first checkouts race, the checkout Stripe receives, saving a card (mirrored from the webhooks),
// Stripe not answering.
import { beforeAll, describe, expect, it } from 'vitest';
import { ANON_KEY } from '../../scripts/lib/config.mjs';
import { rejection } from '../support/clients.ts';
import { sql, useSetting } from '../support/db.ts';
import { billingFor, createTeam, eventually, RETURN, subscribe, useBilling, type Team } from './support.ts';

const b = useBilling();
let team: Team;

beforeAll(async () => {
  team = await createTeam('Functions Co');
});

describe('billing-checkout', () => {
  it('lists the packs for sale', async () => {
    const packs = await billingFor(team.member, b.gateway).packs();
    expect(packs.map((p) => p.key)).toEqual(expect.arrayContaining(['ai_1000', 'whatsapp_500']));
    expect(packs.find((p) => p.key === 'ai_1000')).toMatchObject({ pool_key: 'ai', credits: 1000, stripe_price_id: 'price_local_pack_ai_1000' });
  });

  it('creates one Stripe customer for the organization, even for two first checkouts at once', async () => {
    const fresh = await createTeam('Race Co');
    const billing = billingFor(fresh.owner, b.gateway);
    const [one, two] = await Promise.all([
      billing.checkout({ organizationId: fresh.organizationId, pack: 'ai_1000', ...RETURN }),
      billing.checkout({ organizationId: fresh.organizationId, pack: 'sms_500', ...RETURN }),
    ]);
    const customers = b.fake.events({ type: 'customer.created' })
      .filter((e) => (e.data.object as any).metadata?.organization_id === fresh.organizationId);
    expect(customers).toHaveLength(1);
    const [account] = await sql`select stripe_customer_id from public.billing_accounts where organization_id = ${fresh.organizationId}`;
    expect(account.stripe_customer_id).toBe(customers[0].data.object.id);
    expect(b.fake.get(one.id)!.customer).toBe(account.stripe_customer_id);
    expect(b.fake.get(two.id)!.customer).toBe(account.stripe_customer_id);
  });

  it('sends Stripe the pack, the quantity, the organization and the return URLs', async () => {
    const session = await billingFor(team.billing, b.gateway).checkout({
      organizationId: team.organizationId, pack: 'whatsapp_500', quantity: 3, ...RETURN,
    });
    expect(session.url).toBe(`${b.fake.url}/checkout/${session.id}`);
    const stored = b.fake.get(session.id)!;
    expect(stored).toMatchObject({
      mode: 'payment',
      client_reference_id: team.organizationId,
      success_url: RETURN.successUrl,
      cancel_url: RETURN.cancelUrl,
      metadata: { organization_id: team.organizationId, pack_key: 'whatsapp_500', quantity: '3' },
    });
    const lines = await b.stripe.checkout.sessions.listLineItems(session.id);
    expect(lines.data.map((l) => [l.price?.id, l.quantity])).toEqual([['price_local_pack_whatsapp_500', 3]]);
    // Paid: 3 x 500 credits.
    b.fake.completeCheckout(session.id, 'paid');
    await b.fake.flush();
    const [{ available }] = await sql`select available from public.credit_balances where organization_id = ${team.organizationId} and pool_key = 'whatsapp'`;
    expect(Number(available)).toBe(150 + 1500);
  });

  describe('with Stripe Tax on', () => {
    useSetting('billing_automatic_tax', true);
    it('asks Stripe to compute tax, and to take the address Checkout collects', async () => {
      const session = await billingFor(team.owner, b.gateway).checkout({ organizationId: team.organizationId, pack: 'ai_1000', ...RETURN });
      expect(b.fake.get(session.id)).toMatchObject({ automatic_tax: { enabled: true } });
      const request = b.fake.requests.filter((r) => r.method === 'POST' && r.path === '/v1/checkout/sessions').at(-1)!;
      expect(request.params).toMatchObject({ automatic_tax: { enabled: 'true' }, customer_update: { address: 'auto' } });
    });
  });

  it('refuses plain members, strangers and anonymous callers', async () => {
    await rejection(billingFor(team.member, b.gateway).checkout({ organizationId: team.organizationId, pack: 'ai_1000', ...RETURN }), 'not_authorized');
    await rejection(billingFor(team.stranger, b.gateway).checkout({ organizationId: team.organizationId, pack: 'ai_1000', ...RETURN }), 'not_authorized');
    const anon = await fetch(`${b.gateway.url}/functions/v1/billing-checkout`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ANON_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ organization_id: team.organizationId, pack: 'ai_1000', success_url: RETURN.successUrl, cancel_url: RETURN.cancelUrl }),
    });
    expect(anon.status).toBe(401);
    await anon.arrayBuffer();
  });

  it('refuses bad input with a stable code', async () => {
    const billing = billingFor(team.owner, b.gateway);
    const base = { organizationId: team.organizationId, ...RETURN };
    await rejection(billing.checkout({ ...base, pack: 'ai_1000', successUrl: 'https://phishing.example/ok' }), 'invalid_return_url');
    await rejection(billing.checkout({ ...base, pack: 'no_such_pack' }), 'pack_not_found');
    await rejection(billing.checkout({ ...base, plan: 'starter' }), 'plan_not_billable');
    const tooMany = await rejection(billing.checkout({ ...base, pack: 'ai_1000', quantity: 101 }), 'invalid_request');
    expect(tooMany.status).toBe(400);
    // The SDK's types allow a plan or a pack; the function refuses both at once.
    const both = await fetch(`${b.gateway.url}/functions/v1/billing-checkout`, {
      method: 'POST',
      headers: { authorization: `Bearer ${team.owner.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ organization_id: team.organizationId, plan: 'premium', pack: 'ai_1000', success_url: RETURN.successUrl, cancel_url: RETURN.cancelUrl }),
    });
    expect(both.status).toBe(400);
    expect((await both.json()).error.code).toBe('invalid_checkout');
    await rejection(billing.checkout({ ...base, pack: 'ai_1000', successUrl: 'not a url' }), 'invalid_request');
  });

  it('refuses a second subscription: the portal changes the first', async () => {
    await subscribe(b, team);
    await rejection(billingFor(team.owner, b.gateway).checkout({ organizationId: team.organizationId, plan: 'premium', ...RETURN }), 'subscription_exists');
  });

  it('answers 503 stripe_unavailable when Stripe does not answer, and creates nothing', async () => {
    const before = b.fake.events({ type: 'checkout.session.created' }).length;
    b.fake.next(...[1, 2, 3].map(() => ({ match: 'POST /v1/checkout/sessions', status: 500 })));
    const err = await rejection(billingFor(team.owner, b.gateway).checkout({ organizationId: team.organizationId, pack: 'ai_1000', ...RETURN }), 'stripe_unavailable');
    expect(err.status).toBe(503);
    expect(b.fake.events({ type: 'checkout.session.created' }).length).toBe(before);
  });
});

describe('billing-portal', () => {
  it('needs a Stripe customer first', async () => {
    const fresh = await createTeam('No Customer Co');
    await rejection(billingFor(fresh.owner, b.gateway).portal(fresh.organizationId, 'http://127.0.0.1:3000/billing'), 'no_billing_account');
  });

  it('opens a portal session for billing managers, back to a configured origin only', async () => {
    const portal = await billingFor(team.billing, b.gateway).portal(team.organizationId, 'http://localhost:3000/settings/billing');
    expect(portal.url).toMatch(new RegExp(`^${b.fake.url}/portal/`));
    await rejection(billingFor(team.billing, b.gateway).portal(team.organizationId, 'https://evil.example'), 'invalid_return_url');
    await rejection(billingFor(team.member, b.gateway).portal(team.organizationId, 'http://localhost:3000/'), 'not_authorized');
  });
});

describe('billing-setup-intent and payment methods', () => {
  it('saves a card without paying; the webhook mirrors it, with the default', async () => {
    const fresh = await createTeam('Card Co');
    const intent = await billingFor(fresh.admin, b.gateway).setupIntent(fresh.organizationId);
    expect(intent.id).toMatch(/^seti_/);
    expect(intent.clientSecret).toMatch(new RegExp(`^${intent.id}_secret_`));
    const confirmed = b.fake.confirmSetupIntent(intent.id, 'succeeded', 'mastercard');
    await b.fake.flush();
    const methods = await eventually(() => billingFor(fresh.owner, b.gateway).paymentMethods(fresh.organizationId), (m) => m.length === 1);
    expect(methods[0]).toMatchObject({ stripe_payment_method_id: confirmed.payment_method, brand: 'mastercard', type: 'card', is_default: false });
    expect(methods[0].last4).toMatch(/^\d{4}$/);
    // The customer makes it the default in the portal.
    const portal = await billingFor(fresh.owner, b.gateway).portal(fresh.organizationId, 'http://127.0.0.1:3000/billing');
    b.fake.portalAction(portal.url.split('/').at(-1)!, { action: 'set_default', payment_method: confirmed.payment_method as string });
    await b.fake.flush();
    await eventually(() => billingFor(fresh.owner, b.gateway).paymentMethods(fresh.organizationId), (m) => m[0]?.is_default === true);
    expect(await billingFor(fresh.member, b.gateway).paymentMethods(fresh.organizationId)).toEqual([]);
    // Removed in the portal: forgotten.
    b.fake.portalAction(portal.url.split('/').at(-1)!, { action: 'detach', payment_method: confirmed.payment_method as string });
    await b.fake.flush();
    await eventually(() => billingFor(fresh.owner, b.gateway).paymentMethods(fresh.organizationId), (m) => m.length === 0);
  });
});
