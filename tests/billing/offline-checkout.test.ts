// The offline flow of the local stack (npm start without STRIPE_SECRET_KEY): billing-checkout on
// the stack's gateway answers a Checkout URL of the stack's local Stripe; its page pays (or
// declines) as a customer would click, redirects to the success URL, and delivers the signed
// webhooks to the stack's stripe-webhook, which brings the plan's credits.
import { describe, expect, it } from 'vitest';
import { STRIPE_FAKE_URL } from '../../scripts/lib/config.mjs';
import { apiUrl, backendFor } from '../support/clients.ts';
import { balances, createTeam, eventually, RETURN } from './support.ts';

describe('Checkout on the local stack', () => {
  it('pays a subscription from the Checkout page and credits the organization', async () => {
    const team = await createTeam('Offline Co');
    const session = await backendFor(team.owner, apiUrl).billing.checkout({ organizationId: team.organizationId, plan: 'premium', ...RETURN });
    expect(session.url.startsWith(`${STRIPE_FAKE_URL}/checkout/`)).toBe(true);

    const page = await fetch(session.url);
    expect(page.status).toBe(200);
    const html = await page.text();
    expect(html).toContain(`action="/checkout/${session.id}/complete"`);

    // Declined first: nothing happens, the session stays open.
    const declined = await fetch(`${STRIPE_FAKE_URL}/checkout/${session.id}/complete`, {
      method: 'POST', redirect: 'manual', headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ outcome: 'declined', card: 'chargeDeclined' }),
    });
    await declined.arrayBuffer();
    expect(declined.status).toBeLessThan(400);
    expect((await balances(team.organizationId)).ai).toBe(200);

    const paid = await fetch(`${STRIPE_FAKE_URL}/checkout/${session.id}/complete`, {
      method: 'POST', redirect: 'manual', headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ outcome: 'paid', card: 'visa', email: team.owner.email, name: 'Offline Owner' }),
    });
    await paid.arrayBuffer();
    expect(paid.status).toBe(303);
    expect(paid.headers.get('location')).toBe(RETURN.successUrl);
    await eventually(() => balances(team.organizationId), (b) => b.ai === 1500, 30_000);
    const status = await backendFor(team.billing, apiUrl).billing.status(team.organizationId);
    expect(status.subscription).toMatchObject({ status: 'active', plan_key: 'premium' });
  }, 60_000);
});
