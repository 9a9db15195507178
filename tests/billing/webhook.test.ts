// stripe-webhook against the fake Stripe: signatures (missing, bad, old, a tampered body), events
// stored once and replays acknowledged, unknown types ignored, every event of a subscription
// delivered twice and in the wrong order, two states of one subscription in the same second
// delivered newest first, and a failure midway (Stripe not answering) that writes nothing and
// succeeds on Stripe's retry.
import { beforeAll, describe, expect, it } from 'vitest';
import { loadStripeEvent } from '../fakes/stripe.ts';
import { sql } from '../support/db.ts';
import { balances, billingFor, createTeam, eventually, RETURN, subscribe, useBilling, type Team } from './support.ts';

const b = useBilling();
const webhookUrl = () => `${b.gateway.url}/functions/v1/stripe-webhook`;

async function post(body: string, signature?: string): Promise<{ status: number; body: any }> {
  const res = await fetch(webhookUrl(), {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(signature ? { 'stripe-signature': signature } : {}) },
    body,
  });
  return { status: res.status, body: await res.json() };
}

const storedCount = async (id: string) =>
  Number((await sql`select count(*) as n from private.stripe_events where id = ${id}`)[0].n);

describe('signatures', () => {
  const event = loadStripeEvent('invoice.paid');
  const payload = JSON.stringify(event);

  it('refuses a missing signature with 400 and writes nothing', async () => {
    const res = await post(payload);
    expect(res).toMatchObject({ status: 400, body: { error: { code: 'invalid_signature' } } });
    expect(await storedCount(event.id)).toBe(0);
  });

  it('refuses a bad signature, another secret, an old timestamp or a tampered body', async () => {
    for (const signature of [
      't=1,v1=deadbeef',
      b.fake.signatureHeader(payload, { secret: 'whsec_someone_else' }),
      b.fake.signatureHeader(payload, { timestamp: Math.floor(Date.now() / 1000) - 3600 }),
    ]) {
      expect((await post(payload, signature)).status).toBe(400);
    }
    const tampered = JSON.stringify({ ...event, type: 'invoice.voided' });
    const res = await post(tampered, b.fake.signatureHeader(payload));
    expect(res).toMatchObject({ status: 400, body: { error: { code: 'invalid_signature' } } });
    expect(await storedCount(event.id)).toBe(0);
  });

  it('refuses a signed body that is not an event with 400', async () => {
    const body = JSON.stringify({ hello: 'world' });
    // Signed with the SDK's own test-header helper, as Stripe signs.
    const res = await post(body, b.stripe.webhooks.generateTestHeaderString({ payload: body, secret: b.fake.webhookSecret }));
    expect(res).toMatchObject({ status: 400, body: { error: { code: 'invalid_request' } } });
  });
});

describe('events', () => {
  let team: Team;
  beforeAll(async () => {
    team = await createTeam('Webhook Co');
  });

  it('acknowledges an event type it does not handle, and stores it as ignored', async () => {
    const event = loadStripeEvent('customer.updated', { type: 'customer.tax_id.created' });
    const payload = JSON.stringify(event);
    const res = await post(payload, b.stripe.webhooks.generateTestHeaderString({ payload, secret: b.fake.webhookSecret }));
    expect(res).toMatchObject({ status: 200, body: { received: true, outcome: 'ignored' } });
    const [row] = await sql`select outcome, attempts from private.stripe_events where id = ${event.id}`;
    expect(row).toEqual({ outcome: 'ignored', attempts: 1 });
  });

  it('stores every event once: a replay is acknowledged and changes nothing', async () => {
    const { subscriptionId } = await subscribe(b, team);
    const paid = b.fake.events({ type: 'invoice.paid' }).find((e) => (e.data.object as any).parent?.subscription_details?.subscription === subscriptionId)!;
    const before = await sql`select * from private.stripe_events where id = ${paid.id}`;
    const res = await post(JSON.stringify(paid), b.fake.signatureHeader(JSON.stringify(paid)));
    expect(res).toMatchObject({ status: 200, body: { received: true, duplicate: true } });
    expect(await sql`select * from private.stripe_events where id = ${paid.id}`).toEqual(before);
    expect((await balances(team.organizationId)).ai).toBe(1500);
  });
});

describe('order and duplicates', () => {
  it('ends in the same state when every event comes twice and in reverse order', async () => {
    const team = await createTeam('Reverse Co');
    b.fake.pauseDelivery();
    const session = await billingFor(team.owner, b.gateway).checkout({ organizationId: team.organizationId, plan: 'premium', ...RETURN });
    b.fake.completeCheckout(session.id, 'paid');
    const events = b.fake.takePending();
    b.fake.resumeDelivery();
    expect(events.map((e) => e.type)).toEqual(expect.arrayContaining(['checkout.session.completed', 'customer.subscription.created', 'invoice.paid']));
    for (const event of [...events].reverse()) {
      expect(await b.fake.deliver(event)).toBe(200);
    }
    for (const event of events) expect(await b.fake.deliver(event)).toBe(200);
    expect((await balances(team.organizationId)).ai).toBe(1500);
    const status = await billingFor(team.owner, b.gateway).status(team.organizationId);
    expect(status.subscription).toMatchObject({ status: 'active', plan_key: 'premium' });
    const [{ grants }] = await sql`select count(*)::int as grants from public.credit_grants
      where organization_id = ${team.organizationId} and kind = 'plan_allocation' and pool_key = 'ai' and amount = 1500`;
    expect(grants).toBe(1);
  });

  it('never lets an older state win, even from an event of the same second delivered last', async () => {
    const team = await createTeam('Same Second Co');
    const { subscriptionId } = await subscribe(b, team);
    const portal = await billingFor(team.owner, b.gateway).portal(team.organizationId, 'http://127.0.0.1:3000/billing');
    const portalId = portal.url.split('/').at(-1)!;
    b.fake.pauseDelivery();
    b.fake.portalAction(portalId, { action: 'cancel_at_period_end', subscription: subscriptionId });
    b.fake.portalAction(portalId, { action: 'resume', subscription: subscriptionId });
    const [cancel, resume] = b.fake.takePending().filter((e) => e.type === 'customer.subscription.updated');
    b.fake.resumeDelivery();
    expect(cancel.created).toBe(resume.created);
    expect((cancel.data.object as any).cancel_at_period_end).toBe(true);
    expect(await b.fake.deliver(resume)).toBe(200);
    expect(await b.fake.deliver(cancel)).toBe(200);
    const status = await billingFor(team.owner, b.gateway).status(team.organizationId);
    expect(status.subscription?.cancel_at_period_end).toBe(false);
  });
});

describe('a whole lifecycle out of order', () => {
  it('ends as Stripe says when every event comes in reverse, and then again in order', async () => {
    const team = await createTeam('Lifecycle Co');
    const billing = billingFor(team.owner, b.gateway);
    b.fake.pauseDelivery();
    const subscription = await billing.checkout({ organizationId: team.organizationId, plan: 'premium', ...RETURN });
    const subscriptionId = b.fake.completeCheckout(subscription.id, 'paid').session.subscription as string;
    b.fake.renewSubscription(subscriptionId, { outcome: 'paid' });
    const failed = b.fake.renewSubscription(subscriptionId, { outcome: 'failed' });
    b.fake.payInvoice(failed.invoice!.id);
    const pack = await billing.checkout({ organizationId: team.organizationId, pack: 'ai_1000', ...RETURN });
    const packSession = b.fake.completeCheckout(pack.id, 'paid').session;
    b.fake.refund(b.fake.get(packSession.payment_intent as string)!.latest_charge as string, 950);
    const intent = await billing.setupIntent(team.organizationId);
    const card = b.fake.confirmSetupIntent(intent.id, 'succeeded', 'amex').payment_method as string;
    const events = b.fake.takePending();
    b.fake.resumeDelivery();
    expect([...new Set(events.map((e) => e.type))]).toEqual(expect.arrayContaining([
      'checkout.session.completed', 'customer.subscription.created', 'customer.subscription.updated', 'invoice.paid',
      'invoice.payment_failed', 'charge.refunded', 'payment_method.attached', 'customer.updated',
    ]));

    for (const event of [...events].reverse()) expect(await b.fake.deliver(event)).toBe(200);
    for (const event of events) expect(await b.fake.deliver(event)).toBe(200);

    // The current period's allocation (only the newest paid invoice's), and half the pack.
    expect((await balances(team.organizationId)).ai).toBe(1500 + 500);
    const status = await billing.status(team.organizationId);
    expect(status).toMatchObject({ standing: 'good', subscription: { status: 'active', plan_key: 'premium' } });
    const [{ period_start: start }] = await sql`select period_start from public.organization_plans where organization_id = ${team.organizationId}`;
    expect(start.getTime() / 1000).toBe(b.fake.get(subscriptionId)!.items.data[0].current_period_start);
    const [purchase] = await sql`select credits_revoked from private.credit_pack_purchases where organization_id = ${team.organizationId}`;
    expect(Number(purchase.credits_revoked)).toBe(500);
    const methods = await billing.paymentMethods(team.organizationId);
    expect(methods.map((m) => m.stripe_payment_method_id)).toContain(card);
    const invoices = await billing.invoices(team.organizationId);
    expect(invoices.map((i) => i.status).sort()).toEqual(['paid', 'paid', 'paid']);
  }, 60_000);
});

describe('a failure midway', () => {
  it('writes nothing when Stripe does not answer, answers 503, and succeeds when Stripe retries', async () => {
    const team = await createTeam('Flaky Co');
    b.fake.pauseDelivery();
    const session = await billingFor(team.owner, b.gateway).checkout({ organizationId: team.organizationId, plan: 'premium', ...RETURN });
    b.fake.completeCheckout(session.id, 'paid');
    const events = b.fake.takePending();
    b.fake.resumeDelivery();
    const paid = events.find((e) => e.type === 'invoice.paid')!;
    // The invoice cannot be fetched: the SDK's own retries fail too.
    const invoiceId = (paid.data.object as { id: string }).id;
    b.fake.next(...[1, 2, 3].map(() => ({ match: `GET /v1/invoices/${invoiceId}`, status: 500 })));
    expect(await b.fake.deliver(paid)).toBe(503);
    const [row] = await sql`select outcome, last_error from private.stripe_events where id = ${paid.id}`;
    expect(row.outcome).toBe('failed');
    expect(await sql`select 1 from public.invoices where stripe_invoice_id = ${invoiceId}`).toHaveLength(0);
    expect((await balances(team.organizationId)).ai).toBe(200);
    // Stripe delivers it again later: handled now, once.
    expect(await b.fake.deliver(paid)).toBe(200);
    expect(await b.fake.deliver(paid)).toBe(200);
    await eventually(() => balances(team.organizationId), (bal) => bal.ai === 1500);
    const [done] = await sql`select outcome, attempts from private.stripe_events where id = ${paid.id}`;
    expect(done).toEqual({ outcome: 'processed', attempts: 2 });
    for (const event of events) await b.fake.deliver(event);
    expect((await balances(team.organizationId)).ai).toBe(1500);
  });
});
