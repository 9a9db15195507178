// The Stripe fake, driven by the real `stripe` SDK (what the billing edge functions use), through
// both of its HTTP clients: what it answers is what the SDK understands, its webhooks verify with
// stripe.webhooks.constructEventAsync, and its pages complete the flows a customer clicks through.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import Stripe from 'stripe';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  connectFakeStripe,
  DEFAULT_SECRET_KEY,
  DEFAULT_WEBHOOK_SECRET,
  STRIPE_API_VERSION,
  loadStripeEvent,
  startFakeStripe,
  stripeEventFixtures,
  type FakeStripe,
  type StripeEvent,
} from './stripe.ts';

let fake: FakeStripe;

const clients = {
  node: () => new Stripe(fake.secretKey, { host: fake.host, port: fake.port, protocol: 'http' }),
  fetch: () => new Stripe(fake.secretKey, { host: fake.host, port: fake.port, protocol: 'http', httpClient: Stripe.createFetchHttpClient() }),
};

/** A local webhook endpoint that verifies every delivery as the billing function will. */
interface Receiver {
  url: string;
  received: { raw: string; signature: string | undefined; event: Stripe.Event | null; error: string | null; status: number }[];
  /** Statuses to answer next, in order (then 200 when the signature verifies, 400 otherwise). */
  answer: number[];
  close(): Promise<void>;
}

async function startReceiver(secret = DEFAULT_WEBHOOK_SECRET): Promise<Receiver> {
  const verifier = new Stripe('sk_test_unused');
  const received: Receiver['received'] = [];
  const answer: number[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      const signature = req.headers['stripe-signature'] as string | undefined;
      verifier.webhooks.constructEventAsync(raw, signature ?? '', secret).then(
        (event) => ({ event, error: null }),
        (err: Error) => ({ event: null, error: err.message }),
      ).then(({ event, error }) => {
        const status = answer.shift() ?? (error ? 400 : 200);
        received.push({ raw, signature, event, error, status });
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ received: !error }));
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/functions/v1/stripe-webhook`,
    received,
    answer,
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}

beforeAll(async () => {
  fake = await startFakeStripe({ retryDelaysMs: [20, 40, 80], taxRatePercent: 0 });
});

afterAll(async () => {
  await fake.stop();
});

beforeEach(() => {
  fake.setWebhookUrl(null);
  fake.resumeDelivery({ discard: true });
  fake.reset();
});

async function catalogue(stripe: Stripe) {
  const product = await stripe.products.create({ name: 'Premium', metadata: { plan: 'premium' } });
  const monthly = await stripe.prices.create({
    product: product.id, currency: 'eur', unit_amount: 4900, recurring: { interval: 'month' }, lookup_key: 'premium_monthly',
  });
  const pack = await stripe.prices.create({ product_data: { name: 'AI credits 1000' }, currency: 'eur', unit_amount: 1500, lookup_key: 'pack_ai_1000' });
  return { product, monthly, pack };
}

const types = (events: { type: string }[]) => events.map((e) => e.type);

describe.each(Object.keys(clients) as (keyof typeof clients)[])('through the SDK (%s http client)', (client) => {
  let stripe: Stripe;
  beforeEach(() => {
    stripe = clients[client]();
  });

  it('pins the API version the fake answers with', async () => {
    const customer = await stripe.customers.create({ email: 'v@example.test' });
    expect(fake.requests[0].stripeVersion).toBe(STRIPE_API_VERSION);
    expect(fake.requests[0].headers.authorization).toBe(`Bearer ${DEFAULT_SECRET_KEY}`);
    expect(fake.events({ type: 'customer.created' })[0]).toMatchObject({ api_version: STRIPE_API_VERSION, object: 'event', livemode: false });
    expect(customer).toMatchObject({ object: 'customer', email: 'v@example.test', livemode: false, metadata: {}, delinquent: false });
    expect(customer.id).toMatch(/^cus_[A-Za-z0-9]{14}$/);
    expect(customer.lastResponse.requestId).toMatch(/^req_/);
  });

  it('creates one customer for two concurrent creates with one Idempotency-Key, and refuses the key with other params', async () => {
    const params = { email: 'org@example.test', metadata: { organization_id: 'org-1' } };
    const [a, b] = await Promise.all([
      stripe.customers.create(params, { idempotencyKey: 'customer:org-1' }),
      stripe.customers.create(params, { idempotencyKey: 'customer:org-1' }),
    ]);
    expect(a.id).toBe(b.id);
    expect((await stripe.customers.list({ email: 'org@example.test' })).data).toHaveLength(1);
    expect(fake.requests.filter((r) => r.replayed)).toHaveLength(1);
    expect(fake.events({ type: 'customer.created' })).toHaveLength(1);
    expect(fake.events({ type: 'customer.created' })[0].request).toEqual({ id: fake.requests[0].id, idempotency_key: 'customer:org-1' });

    const other = stripe.customers.create({ email: 'other@example.test' }, { idempotencyKey: 'customer:org-1' });
    await expect(other).rejects.toBeInstanceOf(Stripe.errors.StripeIdempotencyError);
    await expect(other).rejects.toMatchObject({ type: 'StripeIdempotencyError', rawType: 'idempotency_error', statusCode: 400 });
  });

  it('retries a scripted 500 and a dropped answer with the same key, making one customer', async () => {
    fake.failNext('POST /v1/customers');
    const first = await stripe.customers.create({ email: 'retry@example.test' });
    expect(fake.requests.map((r) => r.status)).toEqual([500, 200]);
    expect(fake.requests[0].idempotencyKey).toBe(fake.requests[1].idempotencyKey);
    expect(first.email).toBe('retry@example.test');

    fake.next({ match: 'POST /v1/customers', networkError: true, accept: true });
    const second = await stripe.customers.create({ email: 'lost@example.test' }, { idempotencyKey: 'lost-answer' });
    expect(fake.requests.slice(2).map((r) => [r.status, r.replayed])).toEqual([[null, false], [200, true]]);
    expect((await stripe.customers.list({ email: 'lost@example.test' })).data.map((c) => c.id)).toEqual([second.id]);
  });

  it('creates, lists and filters products and prices', async () => {
    const { product, monthly, pack } = await catalogue(stripe);
    expect(monthly).toMatchObject({
      object: 'price', type: 'recurring', currency: 'eur', unit_amount: 4900, product: product.id, active: true,
      recurring: { interval: 'month', interval_count: 1, usage_type: 'licensed' }, lookup_key: 'premium_monthly',
    });
    expect(pack).toMatchObject({ type: 'one_time', recurring: null });
    const byKey = await stripe.prices.list({ lookup_keys: ['premium_monthly', 'pack_ai_1000'], expand: ['data.product'] });
    expect(byKey.object).toBe('list');
    expect(byKey.data.map((p) => p.lookup_key).sort()).toEqual(['pack_ai_1000', 'premium_monthly']);
    expect(byKey.data.map((p) => (p.product as Stripe.Product).object)).toEqual(['product', 'product']);
    expect((await stripe.prices.list({ product: product.id })).data.map((p) => p.id)).toEqual([monthly.id]);
    await stripe.prices.update(pack.id, { active: false });
    expect((await stripe.prices.list({ active: true })).data.map((p) => p.id)).toEqual([monthly.id]);
    await expect(stripe.prices.create({ product: product.id, currency: 'eur', unit_amount: 1, lookup_key: 'premium_monthly' }))
      .rejects.toMatchObject({ type: 'StripeInvalidRequestError', param: 'lookup_key' });
    const moved = await stripe.prices.create({ product: product.id, currency: 'eur', unit_amount: 5900, recurring: { interval: 'month' }, lookup_key: 'premium_monthly', transfer_lookup_key: true });
    expect((await stripe.prices.retrieve(monthly.id)).lookup_key).toBeNull();
    expect((await stripe.prices.list({ lookup_keys: ['premium_monthly'] })).data.map((p) => p.id)).toEqual([moved.id]);
    const all: string[] = [];
    for await (const p of stripe.prices.list({ limit: 1 })) all.push(p.id);
    expect(all).toHaveLength(3);
  });

  it('updates, searches and deletes customers', async () => {
    const customer = await stripe.customers.create({ email: 'c@example.test', name: 'Acme', metadata: { organization_id: 'org-9' } });
    const updated = await stripe.customers.update(customer.id, { name: 'Acme Inc', metadata: { plan: 'premium' } });
    expect(updated.metadata).toEqual({ organization_id: 'org-9', plan: 'premium' });
    const event = fake.events({ type: 'customer.updated' })[0];
    expect(event.data.previous_attributes).toEqual({ name: 'Acme', metadata: { plan: null } });
    const found = await stripe.customers.search({ query: "metadata['organization_id']:'org-9'" });
    expect(found.data.map((c) => c.id)).toEqual([customer.id]);
    const gone = await stripe.customers.del(customer.id);
    expect(gone).toMatchObject({ id: customer.id, object: 'customer', deleted: true });
    expect(await stripe.customers.retrieve(customer.id)).toMatchObject({ id: customer.id, deleted: true });
    await expect(stripe.customers.update(customer.id, { name: 'x' })).rejects.toMatchObject({ code: 'resource_missing', statusCode: 404 });
    expect(fake.events({ type: 'customer.deleted' })).toHaveLength(1);
  });

  it('answers errors in Stripe\'s shape, which the SDK turns into its error classes', async () => {
    const noKey = await fetch(`${fake.url}/v1/customers`);
    expect(noKey.status).toBe(401);
    expect(await noKey.json()).toMatchObject({ error: { type: 'invalid_request_error', message: expect.stringContaining('You did not provide an API key') } });
    const wrongKey = new Stripe('sk_test_wrong', { host: fake.host, port: fake.port, protocol: 'http', httpClient: client === 'fetch' ? Stripe.createFetchHttpClient() : undefined });
    await expect(wrongKey.customers.list()).rejects.toBeInstanceOf(Stripe.errors.StripeAuthenticationError);
    await expect(wrongKey.customers.list()).rejects.toMatchObject({ statusCode: 401, rawType: 'invalid_request_error' });

    const missing = stripe.customers.retrieve('cus_missing0000000');
    await expect(missing).rejects.toBeInstanceOf(Stripe.errors.StripeInvalidRequestError);
    await expect(missing).rejects.toMatchObject({ statusCode: 404, code: 'resource_missing', param: 'id', message: "No such customer: 'cus_missing0000000'" });

    await expect(stripe.checkout.sessions.create({} as Stripe.Checkout.SessionCreateParams))
      .rejects.toMatchObject({ type: 'StripeInvalidRequestError', statusCode: 400, code: 'parameter_missing', param: 'mode' });
    await expect(stripe.customers.create({ email: 'x@example.test', name: '' }))
      .resolves.toMatchObject({ name: null });
    await expect(stripe.products.create({ name: '' }))
      .rejects.toMatchObject({ code: 'parameter_invalid_empty', param: 'name' });
    await expect(stripe.customers.create({ email: 'x@example.test', bogus: 1 } as Stripe.CustomerCreateParams))
      .rejects.toMatchObject({ code: 'parameter_unknown', param: 'bogus' });
    await expect(stripe.checkout.sessions.create({ mode: 'payment', line_items: [{ price: 'price_nope', quantity: 1 }] }))
      .rejects.toMatchObject({ statusCode: 400, code: 'resource_missing', param: 'line_items[0][price]' });
    await expect(stripe.setupIntents.create({ payment_method_types: ['card'] } as Stripe.SetupIntentCreateParams))
      .rejects.toMatchObject({ code: 'payment_method_types_no_longer_supported' });

    fake.next({ match: 'POST /v1/customers', status: 402 });
    await expect(stripe.customers.create({ email: 'card@example.test' })).rejects.toMatchObject({
      type: 'StripeCardError', code: 'card_declined', decline_code: 'generic_decline', statusCode: 402,
    });
  });

  it('completes a subscription checkout with the events Stripe sends, in order', async () => {
    const { monthly } = await catalogue(stripe);
    const customer = await stripe.customers.create({ email: 'owner@acme.test', metadata: { organization_id: 'org-1' } });
    const session = await stripe.checkout.sessions.create({
      mode: 'subscription',
      customer: customer.id,
      line_items: [{ price: monthly.id, quantity: 1 }],
      success_url: 'https://app.test/billing/success?session_id={CHECKOUT_SESSION_ID}',
      cancel_url: 'https://app.test/billing',
      client_reference_id: 'org-1',
      metadata: { organization_id: 'org-1', kind: 'plan' },
      subscription_data: { metadata: { organization_id: 'org-1', plan: 'premium' } },
    });
    expect(session).toMatchObject({
      object: 'checkout.session', mode: 'subscription', status: 'open', payment_status: 'unpaid', customer: customer.id,
      amount_total: 4900, currency: 'eur', url: `${fake.url}/checkout/${session.id}`, subscription: null, invoice: null,
    });
    expect((await fetch(session.url!)).status).toBe(200);
    expect(session.id).toMatch(/^cs_test_a1[A-Za-z0-9]{56}$/);
    const before = fake.events().length;

    const result = fake.completeCheckout(session.id, 'paid');
    expect(result.redirectUrl).toBe(`https://app.test/billing/success?session_id=${session.id}`);
    expect(types(fake.events().slice(before))).toEqual([
      'payment_method.attached',
      'payment_intent.created',
      'charge.succeeded',
      'payment_intent.succeeded',
      'customer.updated',
      'customer.subscription.created',
      'invoice.created',
      'invoice.finalized',
      'invoice.paid',
      'invoice.payment_succeeded',
      'invoice_payment.paid',
      'checkout.session.completed',
    ]);
    const completed = await stripe.checkout.sessions.retrieve(session.id, {
      expand: ['subscription', 'invoice', 'line_items', 'subscription.default_payment_method'],
    });
    const sub = completed.subscription as Stripe.Subscription;
    const invoice = completed.invoice as Stripe.Invoice;
    expect(completed).toMatchObject({ status: 'complete', payment_status: 'paid', client_reference_id: 'org-1' });
    expect(completed.line_items?.data[0]).toMatchObject({ object: 'item', quantity: 1, amount_total: 4900, price: { id: monthly.id } });
    expect(sub).toMatchObject({
      object: 'subscription', status: 'active', customer: customer.id, latest_invoice: invoice.id, currency: 'eur',
      metadata: { organization_id: 'org-1', plan: 'premium' }, cancel_at_period_end: false, billing_mode: { type: 'flexible' },
    });
    expect(sub).not.toHaveProperty('current_period_end');
    const item = sub.items.data[0];
    expect(item.price.id).toBe(monthly.id);
    expect(item.current_period_end - item.current_period_start).toBeGreaterThanOrEqual(28 * 86400);
    expect((sub.default_payment_method as Stripe.PaymentMethod).card).toMatchObject({ brand: 'visa', last4: '4242' });
    expect(invoice).toMatchObject({
      status: 'paid', billing_reason: 'subscription_create', amount_due: 4900, amount_paid: 4900, amount_remaining: 0, total: 4900,
      attempt_count: 1, parent: { type: 'subscription_details', subscription_details: { subscription: sub.id, metadata: { plan: 'premium' } } },
      hosted_invoice_url: `${fake.url}/invoices/${invoice.id}`, invoice_pdf: `${fake.url}/invoices/${invoice.id}/pdf`,
    });
    expect(invoice.number).toMatch(/^[0-9A-F]{8}-0001$/);
    expect(invoice.lines.data[0]).toMatchObject({
      amount: 4900, period: { start: item.current_period_start, end: item.current_period_end },
      pricing: { price_details: { price: monthly.id } }, parent: { subscription_item_details: { subscription: sub.id, subscription_item: item.id } },
    });
    const withPayments = await stripe.invoices.retrieve(invoice.id, { expand: ['payments.data.payment.payment_intent'] });
    const pi = withPayments.payments!.data[0].payment.payment_intent as Stripe.PaymentIntent;
    expect(pi).toMatchObject({ object: 'payment_intent', status: 'succeeded', amount: 4900, customer: customer.id });

    const completedEvent = fake.events({ type: 'checkout.session.completed' })[0];
    expect(completedEvent.data.object).toMatchObject({ id: session.id, subscription: sub.id, invoice: invoice.id, customer: customer.id, metadata: { kind: 'plan' } });
    expect(completedEvent.request).toEqual({ id: null, idempotency_key: null });
    const currency = fake.events({ type: 'customer.updated' }).at(-1)!;
    expect(currency.data.previous_attributes).toEqual({ currency: null });
    const attached = fake.events({ type: 'payment_method.attached' })[0].data.object;
    expect(attached).toMatchObject({ customer: customer.id, card: { brand: 'visa', last4: '4242', exp_month: 12 } });
    expect((await stripe.customers.retrieve(customer.id) as Stripe.Customer).invoice_settings.default_payment_method).toBeNull();
  });

  it('keeps a declined checkout open and records the failed payment', async () => {
    const { monthly } = await catalogue(stripe);
    const customer = await stripe.customers.create({ email: 'd@example.test' });
    const session = await stripe.checkout.sessions.create({ mode: 'subscription', customer: customer.id, line_items: [{ price: monthly.id, quantity: 1 }], success_url: 'https://app.test/ok' });
    const before = fake.events().length;
    const result = fake.completeCheckout(session.id, 'declined');
    expect(result.redirectUrl).toBeNull();
    expect(result.session).toMatchObject({ status: 'open', payment_status: 'unpaid', subscription: null });
    expect(types(fake.events().slice(before))).toEqual(['payment_intent.created', 'charge.failed', 'payment_intent.payment_failed']);
    expect(fake.events({ type: 'charge.failed' })[0].data.object).toMatchObject({ status: 'failed', failure_code: 'card_declined', outcome: { type: 'issuer_declined' } });
    expect((await stripe.subscriptions.list({ customer: customer.id })).data).toHaveLength(0);
    // The customer tries again with a good card: the session completes.
    expect(fake.completeCheckout(session.id, 'paid').session.status).toBe('complete');
  });

  it('completes a payment checkout (a credit pack) with an invoice when invoice_creation is on', async () => {
    const { pack } = await catalogue(stripe);
    const customer = await stripe.customers.create({ email: 'p@example.test' });
    const session = await stripe.checkout.sessions.create({
      mode: 'payment', customer: customer.id, line_items: [{ price: pack.id, quantity: 2 }], success_url: 'https://app.test/ok',
      metadata: { kind: 'pack', pool: 'ai' }, payment_intent_data: { metadata: { kind: 'pack' } }, invoice_creation: { enabled: true },
    });
    const before = fake.events().length;
    fake.completeCheckout(session.id, 'paid');
    expect(types(fake.events().slice(before))).toEqual([
      'payment_intent.created', 'charge.succeeded', 'payment_intent.succeeded', 'customer.updated',
      'invoice.created', 'invoice.finalized', 'invoice.paid', 'invoice.payment_succeeded', 'invoice_payment.paid',
      'checkout.session.completed',
    ]);
    const done = await stripe.checkout.sessions.retrieve(session.id, { expand: ['payment_intent.latest_charge'] });
    const pi = done.payment_intent as Stripe.PaymentIntent;
    expect(done).toMatchObject({ status: 'complete', payment_status: 'paid', amount_total: 3000, subscription: null });
    expect(pi).toMatchObject({ status: 'succeeded', amount: 3000, amount_received: 3000, metadata: { kind: 'pack' }, customer: customer.id });
    expect((pi.latest_charge as Stripe.Charge)).toMatchObject({ object: 'charge', paid: true, amount: 3000, amount_refunded: 0 });
    const invoice = await stripe.invoices.retrieve(done.invoice as string);
    expect(invoice).toMatchObject({ status: 'paid', billing_reason: 'manual', parent: null, total: 3000 });
    // Without invoice_creation: no invoice, no customer currency change.
    const plain = await stripe.checkout.sessions.create({ mode: 'payment', customer: customer.id, line_items: [{ price: pack.id, quantity: 1 }] });
    const r = fake.completeCheckout(plain.id, 'paid');
    expect(types(r.events)).toEqual(['payment_intent.created', 'charge.succeeded', 'payment_intent.succeeded', 'checkout.session.completed']);
    expect(r.redirectUrl).toBeNull();
  });

  it('applies automatic tax and saves the address Checkout collected when customer_update asks for it', async () => {
    const taxed = await startFakeStripe({ taxRatePercent: 20 });
    try {
      const s = new Stripe(taxed.secretKey, { host: taxed.host, port: taxed.port, protocol: 'http' });
      const { monthly } = await catalogue(s);
      const customer = await s.customers.create({ email: 't@example.test' });
      await expect(s.checkout.sessions.create({ mode: 'subscription', customer: customer.id, automatic_tax: { enabled: true }, line_items: [{ price: monthly.id, quantity: 1 }] }))
        .rejects.toMatchObject({ statusCode: 400, message: expect.stringContaining('customer_update[address]') });
      const session = await s.checkout.sessions.create({
        mode: 'subscription', customer: customer.id, automatic_tax: { enabled: true }, customer_update: { address: 'auto' },
        line_items: [{ price: monthly.id, quantity: 1 }],
      });
      const result = taxed.completeCheckout(session.id, 'paid', { address: { country: 'DE', postal_code: '10115' } });
      expect(result.session).toMatchObject({ amount_subtotal: 4900, amount_total: 5880, total_details: { amount_tax: 980 }, automatic_tax: { status: 'complete' } });
      const invoice = await s.invoices.retrieve(result.session.invoice);
      expect(invoice).toMatchObject({ subtotal: 4900, total: 5880, amount_paid: 5880, total_taxes: [{ amount: 980, taxable_amount: 4900 }] });
      const addressed = result.events.find((e) => e.type === 'customer.updated' && e.data.previous_attributes && 'address' in e.data.previous_attributes)!;
      expect(addressed.data.object.address).toMatchObject({ country: 'DE', postal_code: '10115' });
    } finally {
      await taxed.stop();
    }
  });

  it('saves a card in setup mode, and attaches and detaches payment methods', async () => {
    const customer = await stripe.customers.create({ email: 's@example.test' });
    const session = await stripe.checkout.sessions.create({ mode: 'setup', customer: customer.id, currency: 'eur', success_url: 'https://app.test/cards' });
    expect(session).toMatchObject({ payment_status: 'no_payment_required', amount_total: null, setup_intent: null });
    const result = fake.completeCheckout(session.id, 'paid', { card: 'mastercard' });
    expect(types(result.events)).toEqual(['setup_intent.created', 'payment_method.attached', 'setup_intent.succeeded', 'checkout.session.completed']);
    const si = await stripe.setupIntents.retrieve(result.session.setup_intent, { expand: ['payment_method'] });
    expect(si).toMatchObject({ status: 'succeeded', customer: customer.id, usage: 'off_session', payment_method: { card: { brand: 'mastercard', last4: '4444' } } });

    const direct = await stripe.setupIntents.create({ customer: customer.id, usage: 'off_session', automatic_payment_methods: { enabled: true }, metadata: { organization_id: 'org-1' } });
    expect(direct).toMatchObject({ status: 'requires_payment_method', client_secret: expect.stringMatching(/^seti_.+_secret_/) });
    const confirmed = fake.confirmSetupIntent(direct.id, 'succeeded', 'amex');
    expect(confirmed.status).toBe('succeeded');
    const declined = await stripe.setupIntents.create({ customer: customer.id, automatic_payment_methods: { enabled: true } });
    await expect(stripe.setupIntents.confirm(declined.id, { payment_method: 'pm_card_chargeDeclined' })).rejects.toMatchObject({ type: 'StripeCardError', code: 'card_declined' });
    expect(fake.events({ type: 'setup_intent.setup_failed' })).toHaveLength(1);

    const listed = await stripe.paymentMethods.list({ customer: customer.id, type: 'card' });
    expect(listed.data.map((p) => p.card?.brand).sort()).toEqual(['amex', 'mastercard']);
    const visa = await stripe.paymentMethods.attach('pm_card_visa', { customer: customer.id });
    expect(visa).toMatchObject({ customer: customer.id, card: { brand: 'visa', last4: '4242' }, type: 'card' });
    await stripe.customers.update(customer.id, { invoice_settings: { default_payment_method: visa.id } });
    expect(fake.events({ type: 'customer.updated' }).at(-1)!.data.previous_attributes).toEqual({ invoice_settings: { default_payment_method: null } });
    const detached = await stripe.paymentMethods.detach(visa.id);
    expect(detached.customer).toBeNull();
    const detachedEvent = fake.events({ type: 'payment_method.detached' })[0];
    expect(detachedEvent.data).toMatchObject({ object: { id: visa.id, customer: null }, previous_attributes: { customer: customer.id } });
    expect(types(fake.events().slice(-2))).toEqual(['payment_method.detached', 'customer.updated']);
    expect((await stripe.customers.retrieve(customer.id) as Stripe.Customer).invoice_settings.default_payment_method).toBeNull();
    await expect(stripe.paymentMethods.attach(visa.id, { customer: customer.id })).rejects.toMatchObject({ statusCode: 400 });
    await expect(stripe.customers.update(customer.id, { invoice_settings: { default_payment_method: visa.id } })).rejects.toMatchObject({ code: 'resource_missing' });
  });

  it('opens a portal session whose page cancels, resumes and switches the plan', async () => {
    const { product, monthly } = await catalogue(stripe);
    const yearly = await stripe.prices.create({ product: product.id, currency: 'eur', unit_amount: 49000, recurring: { interval: 'year' } });
    const customer = await stripe.customers.create({ email: 'portal@example.test' });
    const session = await stripe.checkout.sessions.create({ mode: 'subscription', customer: customer.id, line_items: [{ price: monthly.id, quantity: 1 }] });
    const subId = fake.completeCheckout(session.id, 'paid').session.subscription as string;

    const portal = await stripe.billingPortal.sessions.create({ customer: customer.id, return_url: 'https://app.test/billing' });
    expect(portal).toMatchObject({ object: 'billing_portal.session', customer: customer.id, return_url: 'https://app.test/billing', url: `${fake.url}/portal/${portal.id}` });
    const page = await fetch(portal.url);
    const text = await page.text();
    expect(page.status).toBe(200);
    expect(text).toContain('https://app.test/billing');
    expect(text).toContain('Cancel at period end');

    const post = (body: Record<string, string>) => fetch(`${portal.url}/action`, { method: 'POST', body: new URLSearchParams(body), redirect: 'manual' });
    expect((await post({ action: 'cancel_at_period_end', subscription: subId })).status).toBe(303);
    let updated = fake.events({ type: 'customer.subscription.updated' }).at(-1)!;
    expect(updated.data.object).toMatchObject({ cancel_at_period_end: true, cancellation_details: { reason: 'cancellation_requested' } });
    expect(updated.data.previous_attributes).toMatchObject({ cancel_at_period_end: false, cancel_at: null });
    await post({ action: 'resume', subscription: subId });
    await post({ action: 'switch_price', subscription: subId, price: yearly.id });
    updated = fake.events({ type: 'customer.subscription.updated' }).at(-1)!;
    expect(updated.data.object.items.data[0].price.id).toBe(yearly.id);
    expect((updated.data.previous_attributes as { items: { data: { price: { id: string } }[] } }).items.data[0].price.id).toBe(monthly.id);
    fake.portalAction(portal.id, { action: 'add_card', card: 'mastercard' });
    expect(types(fake.events().slice(-2))).toEqual(['payment_method.attached', 'customer.updated']);
    await post({ action: 'cancel_now', subscription: subId });
    expect(fake.events({ type: 'customer.subscription.deleted' })[0].data.object).toMatchObject({ id: subId, status: 'canceled' });
    expect((await stripe.subscriptions.retrieve(subId)).status).toBe('canceled');
  });

  it('renews a subscription: paid, then failed (past_due, dunning fields) and paid later', async () => {
    const { monthly } = await catalogue(stripe);
    const customer = await stripe.customers.create({ email: 'renew@example.test' });
    const session = await stripe.checkout.sessions.create({ mode: 'subscription', customer: customer.id, line_items: [{ price: monthly.id, quantity: 1 }] });
    const subId = fake.completeCheckout(session.id, 'paid').session.subscription as string;
    const first = await stripe.subscriptions.retrieve(subId);
    const firstEnd = first.items.data[0].current_period_end;

    const paid = fake.renewSubscription(subId, { outcome: 'paid' });
    expect(fake.now()).toBeGreaterThanOrEqual(firstEnd);
    expect(types(paid.events)).toEqual([
      'customer.subscription.updated', 'invoice.created', 'invoice.finalized', 'payment_intent.created', 'charge.succeeded',
      'payment_intent.succeeded', 'invoice.paid', 'invoice.payment_succeeded', 'invoice_payment.paid',
    ]);
    expect(paid.invoice).toMatchObject({ billing_reason: 'subscription_cycle', status: 'paid', amount_paid: 4900, period_end: firstEnd });
    expect(paid.invoice!.lines.data[0].period.start).toBe(firstEnd);
    expect(paid.subscription.items.data[0].current_period_start).toBe(firstEnd);
    expect(paid.events[0].data.previous_attributes).toMatchObject({ latest_invoice: first.latest_invoice, items: { data: [{ current_period_start: first.items.data[0].current_period_start }] } });

    const failed = fake.renewSubscription(subId, { outcome: 'failed' });
    expect(types(failed.events)).toEqual([
      'customer.subscription.updated', 'invoice.created', 'invoice.finalized', 'payment_intent.created', 'charge.failed',
      'payment_intent.payment_failed', 'invoice.payment_failed', 'customer.updated', 'customer.subscription.updated',
    ]);
    const failedInvoice = failed.invoice!;
    expect(failedInvoice).toMatchObject({ status: 'open', attempt_count: 1, attempted: true, amount_remaining: 4900 });
    expect(failedInvoice.next_payment_attempt).toBeGreaterThan(fake.now());
    expect(failed.subscription.status).toBe('past_due');
    expect(failed.events.at(-1)!.data.previous_attributes).toEqual({ status: 'active' });
    expect((await stripe.customers.retrieve(customer.id) as Stripe.Customer).delinquent).toBe(true);
    expect((await stripe.invoices.list({ subscription: subId, status: 'open' })).data.map((i) => i.id)).toEqual([failedInvoice.id]);

    const retried = fake.failInvoice(failedInvoice.id);
    expect(retried).toMatchObject({ attempt_count: 2, status: 'open' });
    const recovered = fake.payInvoice(failedInvoice.id);
    expect(recovered).toMatchObject({ status: 'paid', attempt_count: 3, amount_remaining: 0, next_payment_attempt: null });
    expect(types(fake.events().slice(-7))).toEqual([
      'charge.succeeded', 'payment_intent.succeeded', 'invoice.paid', 'invoice.payment_succeeded', 'invoice_payment.paid',
      'customer.updated', 'customer.subscription.updated',
    ]);
    expect((await stripe.subscriptions.retrieve(subId)).status).toBe('active');
    expect(fake.events({ type: 'customer.subscription.updated' }).at(-1)!.data.previous_attributes).toEqual({ status: 'past_due' });
    expect((await stripe.customers.retrieve(customer.id) as Stripe.Customer).delinquent).toBe(false);
  });

  it('ends a subscription at period end, or makes it unpaid when retries are exhausted', async () => {
    const { monthly } = await catalogue(stripe);
    const customer = await stripe.customers.create({ email: 'end@example.test' });
    const subscribe = async () => {
      const s = await stripe.checkout.sessions.create({ mode: 'subscription', customer: customer.id, line_items: [{ price: monthly.id, quantity: 1 }] });
      return fake.completeCheckout(s.id, 'paid').session.subscription as string;
    };
    const a = await subscribe();
    await stripe.subscriptions.update(a, { cancel_at_period_end: true });
    const ended = fake.renewSubscription(a);
    expect(ended.invoice).toBeNull();
    expect(types(ended.events)).toEqual(['customer.subscription.deleted']);
    expect(ended.subscription).toMatchObject({ status: 'canceled', cancellation_details: { reason: 'cancellation_requested' } });

    const b = await subscribe();
    const inv = fake.renewSubscription(b, { outcome: 'failed' }).invoice!;
    const last = fake.failInvoice(inv.id, { exhausted: 'unpaid' });
    expect(last.next_payment_attempt).toBeNull();
    expect((await stripe.subscriptions.retrieve(b)).status).toBe('unpaid');
    await stripe.invoices.pay(inv.id, { payment_method: 'pm_card_visa' });
    expect((await stripe.subscriptions.retrieve(b)).status).toBe('active');
    expect((await stripe.subscriptions.list({ customer: customer.id })).data.map((s) => s.id)).toEqual([b]);
    expect((await stripe.subscriptions.list({ customer: customer.id, status: 'all' })).data).toHaveLength(2);
  });

  it('creates subscriptions through the API: active with a saved card, incomplete until the invoice is paid', async () => {
    const { monthly } = await catalogue(stripe);
    const customer = await stripe.customers.create({ email: 'api@example.test', payment_method: 'pm_card_visa', invoice_settings: { default_payment_method: 'pm_card_visa' } });
    expect(customer.invoice_settings.default_payment_method).toMatch(/^pm_/);
    const active = await stripe.subscriptions.create({ customer: customer.id, items: [{ price: monthly.id }], metadata: { organization_id: 'org-5' }, expand: ['latest_invoice'] });
    expect(active).toMatchObject({ status: 'active', latest_invoice: { status: 'paid', billing_reason: 'subscription_create' } });
    const incomplete = await stripe.subscriptions.create({
      customer: customer.id, items: [{ price: monthly.id }], payment_behavior: 'default_incomplete',
      expand: ['latest_invoice.confirmation_secret'],
    });
    expect(incomplete.status).toBe('incomplete');
    const invoice = incomplete.latest_invoice as Stripe.Invoice;
    expect(invoice).toMatchObject({ status: 'open', confirmation_secret: { type: 'payment_intent', client_secret: expect.stringMatching(/^pi_.+_secret_/) } });
    await stripe.invoices.pay(invoice.id);
    expect((await stripe.subscriptions.retrieve(incomplete.id)).status).toBe('active');
    const updated = await stripe.subscriptions.update(active.id, { metadata: { seats: '3' }, items: [{ id: active.items.data[0].id, quantity: 3 }], proration_behavior: 'none' });
    expect(updated.items.data[0].quantity).toBe(3);
    expect(updated.metadata).toEqual({ organization_id: 'org-5', seats: '3' });
    const canceled = await stripe.subscriptions.cancel(active.id, { cancellation_details: { comment: 'too expensive' } });
    expect(canceled).toMatchObject({ status: 'canceled', cancellation_details: { comment: 'too expensive', reason: 'cancellation_requested' } });
    await expect(stripe.subscriptions.update(active.id, { trial_end: 'now' })).rejects.toMatchObject({ statusCode: 400, param: 'trial_end' });
  });

  it('refunds part of a charge, then the rest, with refund.created and charge.refunded', async () => {
    const { pack } = await catalogue(stripe);
    const customer = await stripe.customers.create({ email: 'refund@example.test' });
    const session = await stripe.checkout.sessions.create({ mode: 'payment', customer: customer.id, line_items: [{ price: pack.id, quantity: 1 }] });
    const pi = await stripe.paymentIntents.retrieve(fake.completeCheckout(session.id, 'paid').session.payment_intent as string);
    const chargeId = pi.latest_charge as string;
    const partial = await stripe.refunds.create({ charge: chargeId, amount: 500, reason: 'requested_by_customer' });
    expect(partial).toMatchObject({ object: 'refund', amount: 500, charge: chargeId, payment_intent: pi.id, status: 'succeeded' });
    expect(types(fake.events().slice(-2))).toEqual(['refund.created', 'charge.refunded']);
    expect(fake.events({ type: 'charge.refunded' })[0].data.object).toMatchObject({ id: chargeId, amount: 1500, amount_refunded: 500, refunded: false });
    const rest = fake.refund(chargeId);
    expect(rest.amount).toBe(1000);
    const charge = await stripe.charges.retrieve(chargeId, { expand: ['refunds'] });
    expect(charge).toMatchObject({ amount_refunded: 1500, refunded: true });
    expect(charge.refunds!.data.map((r) => r.amount).sort()).toEqual([1000, 500]);
    await expect(stripe.refunds.create({ payment_intent: pi.id })).rejects.toMatchObject({ code: 'charge_already_refunded' });
  });

  it('expires a session by API or when its time is up, and changes a plan through the API', async () => {
    const { product, monthly } = await catalogue(stripe);
    const yearly = await stripe.prices.create({ product: product.id, currency: 'eur', unit_amount: 49000, recurring: { interval: 'year' } });
    const customer = await stripe.customers.create({ email: 'exp@example.test' });
    const a = await stripe.checkout.sessions.create({ mode: 'subscription', customer: customer.id, line_items: [{ price: monthly.id, quantity: 1 }] });
    const expired = await stripe.checkout.sessions.expire(a.id);
    expect(expired).toMatchObject({ status: 'expired', url: null });
    expect(fake.events({ type: 'checkout.session.expired' })).toHaveLength(1);
    await expect(stripe.checkout.sessions.expire(a.id)).rejects.toMatchObject({ statusCode: 400 });
    expect(() => fake.completeCheckout(a.id, 'paid')).toThrow(/expired/);
    const b = await stripe.checkout.sessions.create({ mode: 'subscription', customer: customer.id, line_items: [{ price: monthly.id, quantity: 1 }], expires_at: fake.now() + 3600 });
    fake.advanceClock(3601);
    expect((await stripe.checkout.sessions.retrieve(b.id)).status).toBe('expired');
    expect((await fetch(`${fake.url}/checkout/${b.id}`)).status).toBe(410);

    const c = await stripe.checkout.sessions.create({ mode: 'subscription', customer: customer.id, line_items: [{ price: monthly.id, quantity: 1 }] });
    const subId = fake.completeCheckout(c.id, 'paid').session.subscription as string;
    const sub = await stripe.subscriptions.retrieve(subId);
    const changed = await stripe.subscriptions.update(subId, { items: [{ id: sub.items.data[0].id, price: yearly.id }], proration_behavior: 'none' });
    expect(changed.items.data[0]).toMatchObject({ id: sub.items.data[0].id, price: { id: yearly.id, recurring: { interval: 'year' } } });
    expect(fake.events({ type: 'customer.subscription.updated' }).at(-1)!.data.previous_attributes).toHaveProperty('items');
    await expect(stripe.subscriptions.update(subId, { items: [{ id: sub.items.data[0].id, price: monthly.id }], proration_behavior: 'always_invoice' }))
      .rejects.toMatchObject({ statusCode: 400, param: 'proration_behavior' });
    await expect(stripe.subscriptions.retrieve(subId, { expand: ['latest_invoice.payment_intent'] }))
      .rejects.toMatchObject({ statusCode: 400, message: 'This property cannot be expanded (latest_invoice.payment_intent).' });
  });

  it('bills a statement: invoice items, a draft that includes them, finalize, and the automatic charge of the saved card', async () => {
    const { pack } = await catalogue(stripe);
    const customer = await stripe.customers.create({ email: 'statement@example.test', payment_method: 'pm_card_visa', invoice_settings: { default_payment_method: 'pm_card_visa' } });
    const usage = await stripe.invoiceItems.create({ customer: customer.id, amount: 1250, currency: 'eur', description: 'AI usage, March', metadata: { statement_id: 'st-1' } });
    expect(usage).toMatchObject({
      object: 'invoiceitem', customer: customer.id, invoice: null, amount: 1250, currency: 'eur', quantity: 1, parent: null, proration: false,
      description: 'AI usage, March', metadata: { statement_id: 'st-1' }, discountable: true, period: { start: usage.date, end: usage.date },
      pricing: { type: 'price_details', price_details: { price: expect.stringMatching(/^price_/), product: expect.stringMatching(/^prod_/) } },
    });
    expect(usage.id).toMatch(/^ii_1[A-Za-z0-9]{23}$/);
    // The SDK turns decimal strings into its Decimal type.
    expect([String(usage.pricing!.unit_amount_decimal), String(usage.quantity_decimal)]).toEqual(['1250', '1']);
    // The inline price of an amount-only item can be fetched, but lists and searches never show it.
    const inline = await stripe.prices.retrieve(usage.pricing!.price_details!.price as string);
    expect(inline).toMatchObject({ active: false, type: 'one_time', unit_amount: 1250, currency: 'eur' });
    expect((await stripe.prices.list({ limit: 100 })).data.map((p) => p.id)).not.toContain(inline.id);
    expect((await stripe.products.list({ limit: 100 })).data.map((p) => p.id)).not.toContain(inline.product);
    const credits = await stripe.invoiceItems.create({ customer: customer.id, pricing: { price: pack.id }, quantity: 2 });
    expect(credits).toMatchObject({ amount: 3000, quantity: 2, description: 'AI credits 1000', pricing: { price_details: { price: pack.id, product: pack.product } } });
    expect(String(credits.pricing!.unit_amount_decimal)).toBe('1500');
    expect(types(fake.events().slice(-2))).toEqual(['invoiceitem.created', 'invoiceitem.created']);
    expect((await stripe.invoiceItems.list({ customer: customer.id, pending: true })).data.map((i) => i.id)).toEqual([credits.id, usage.id]);
    await expect(stripe.invoiceItems.create({ customer: customer.id, amount: 1, currency: 'eur', subscription: 'sub_x' }))
      .rejects.toMatchObject({ statusCode: 400, param: 'subscription', message: expect.stringContaining('does not implement') });
    await expect(stripe.invoiceItems.create({ customer: customer.id, description: 'nothing' })).rejects.toMatchObject({ statusCode: 400, code: 'parameter_missing', param: 'amount' });

    // The pinned version excludes pending items unless asked.
    const bare = await stripe.invoices.create({ customer: customer.id, currency: 'eur' });
    expect(bare).toMatchObject({
      object: 'invoice', status: 'draft', billing_reason: 'manual', parent: null, auto_advance: false, automatically_finalizes_at: null,
      collection_method: 'charge_automatically', currency: 'eur', total: 0, amount_due: 0, number: null, hosted_invoice_url: null, lines: { data: [] },
    });
    const created = await stripe.invoices.create({
      customer: customer.id, pending_invoice_items_behavior: 'include', auto_advance: true, description: 'Statement, March', metadata: { statement_id: 'st-1' },
    });
    expect(created).toMatchObject({
      status: 'draft', currency: 'eur', subtotal: 4250, total: 4250, amount_due: 4250, amount_remaining: 4250, amount_paid: 0, auto_advance: true,
      automatically_finalizes_at: created.created + 3600, description: 'Statement, March', period_start: created.created, due_date: null,
    });
    expect(created.lines.data.map((l) => [l.object, l.parent?.type, l.parent?.invoice_item_details?.invoice_item, l.amount, l.invoice])).toEqual([
      ['line_item', 'invoice_item_details', usage.id, 1250, created.id],
      ['line_item', 'invoice_item_details', credits.id, 3000, created.id],
    ]);
    expect(created.lines.data[0]).toMatchObject({ id: expect.stringMatching(/^il_/), description: 'AI usage, March', metadata: { statement_id: 'st-1' }, subscription: null, pricing: usage.pricing });
    expect(created.lines.data[1].parent!.subscription_item_details).toBeNull();
    expect((await stripe.invoiceItems.retrieve(usage.id)).invoice).toBe(created.id);
    expect((await stripe.invoiceItems.list({ invoice: created.id })).data).toHaveLength(2);
    expect((await stripe.invoiceItems.list({ customer: customer.id, pending: true })).data).toEqual([]);

    // An item put on the draft, one changed, a stray one deleted.
    const credit = await stripe.invoiceItems.create({ customer: customer.id, invoice: created.id, amount: -250, currency: 'eur', description: 'Goodwill credit' });
    expect(credit.discountable).toBe(false);
    const updated = fake.events().at(-1)!;
    expect(types(fake.events().slice(-2))).toEqual(['invoiceitem.created', 'invoice.updated']);
    expect(updated.data.previous_attributes).toMatchObject({ subtotal: 4250, total: 4250, amount_due: 4250, amount_remaining: 4250 });
    expect(updated.data.object).toMatchObject({ id: created.id, total: 4000 });
    await stripe.invoiceItems.update(credits.id, { quantity: 3, metadata: { pack: 'ai_1000' } });
    expect(fake.events().at(-1)!.data).toMatchObject({ object: { total: 5500 }, previous_attributes: { total: 4000 } });
    await stripe.invoiceItems.update(credits.id, { quantity: 2 });
    await expect(stripe.invoiceItems.create({ customer: customer.id, invoice: created.id, amount: 100, currency: 'usd' }))
      .rejects.toMatchObject({ statusCode: 400, param: 'currency' });
    const stray = await stripe.invoiceItems.create({ customer: customer.id, amount: 99, currency: 'eur' });
    expect(await stripe.invoiceItems.del(stray.id)).toMatchObject({ id: stray.id, object: 'invoiceitem', deleted: true });
    expect(fake.events().at(-1)).toMatchObject({ type: 'invoiceitem.deleted', data: { object: { id: stray.id, amount: 99 } } });
    await expect(stripe.invoiceItems.retrieve(stray.id)).rejects.toMatchObject({ statusCode: 404, message: `No such invoiceitem: '${stray.id}'` });

    const before = fake.events().length;
    const finalized = await stripe.invoices.finalizeInvoice(created.id, { expand: ['payments'] });
    expect(types(fake.events().slice(before))).toEqual([
      'invoice.finalized', 'payment_intent.created', 'charge.succeeded', 'payment_intent.succeeded', 'invoice.paid', 'invoice.payment_succeeded', 'invoice_payment.paid',
    ]);
    expect(finalized).toMatchObject({
      status: 'paid', amount_due: 4000, amount_paid: 4000, amount_remaining: 0, attempt_count: 1, attempted: true, next_payment_attempt: null,
      number: `${customer.invoice_prefix}-0001`, hosted_invoice_url: `${fake.url}/invoices/${created.id}`, invoice_pdf: `${fake.url}/invoices/${created.id}/pdf`,
      automatically_finalizes_at: null, status_transitions: { finalized_at: expect.any(Number), paid_at: expect.any(Number) },
    });
    expect(fake.events({ type: 'invoice.finalized' })[0].data.object).toMatchObject({ id: created.id, status: 'open', amount_remaining: 4000 });
    const payment = finalized.payments!.data[0];
    expect(payment).toMatchObject({ status: 'paid', amount_paid: 4000, payment: { type: 'payment_intent' } });
    const pi = await stripe.paymentIntents.retrieve(payment.payment.payment_intent as string, { expand: ['latest_charge'] });
    expect(pi).toMatchObject({ status: 'succeeded', amount: 4000, currency: 'eur', customer: customer.id, description: 'Statement, March' });
    expect((pi.latest_charge as Stripe.Charge).payment_method).toBe(customer.invoice_settings.default_payment_method);

    // A finalized invoice's items and amounts are frozen.
    await expect(stripe.invoiceItems.del(usage.id)).rejects.toMatchObject({ statusCode: 400 });
    await expect(stripe.invoiceItems.update(usage.id, { amount: 1 })).rejects.toMatchObject({ statusCode: 400 });
    await expect(stripe.invoiceItems.create({ customer: customer.id, invoice: created.id, amount: 1, currency: 'eur' })).rejects.toMatchObject({ statusCode: 400, param: 'invoice' });
    await expect(stripe.invoices.finalizeInvoice(created.id)).rejects.toMatchObject({ statusCode: 400, message: expect.stringContaining('already finalized') });
    await expect(stripe.invoices.update(created.id, { description: 'changed' })).rejects.toMatchObject({ statusCode: 400, param: 'description' });
    expect((await stripe.invoices.update(created.id, { metadata: { exported: 'yes' } })).metadata).toEqual({ statement_id: 'st-1', exported: 'yes' });
    expect((await stripe.invoices.list({ customer: customer.id, status: 'paid' })).data.map((i) => i.id)).toEqual([created.id]);
    // An empty draft is paid as soon as it is finalized.
    expect(await stripe.invoices.finalizeInvoice(bare.id)).toMatchObject({ status: 'paid', amount_paid: 0, number: `${customer.invoice_prefix}-0002` });
  });

  it('sends an invoice: due date counted from finalization, invoice.sent, paid from the hosted page', async () => {
    const customer = await stripe.customers.create({ email: 'send@example.test', name: 'Send Org' });
    await stripe.invoiceItems.create({ customer: customer.id, amount: 9900, currency: 'eur', description: 'Consulting' });
    await expect(stripe.invoices.create({ customer: customer.id, collection_method: 'send_invoice' }))
      .rejects.toMatchObject({ statusCode: 400, code: 'parameter_missing', param: 'days_until_due' });
    await expect(stripe.invoices.create({ customer: customer.id, days_until_due: 30 })).rejects.toMatchObject({ statusCode: 400, param: 'days_until_due' });
    const draft = await stripe.invoices.create({ customer: customer.id, collection_method: 'send_invoice', days_until_due: 30, pending_invoice_items_behavior: 'include' });
    expect(draft).toMatchObject({ collection_method: 'send_invoice', status: 'draft', total: 9900, due_date: draft.created + 30 * 86400 });
    await stripe.invoices.update(draft.id, { days_until_due: 14, description: 'Statement Q1', metadata: { statement_id: 'st-2' } });
    expect(fake.events().at(-1)!).toMatchObject({
      type: 'invoice.updated',
      data: { object: { due_date: draft.created + 14 * 86400, description: 'Statement Q1' }, previous_attributes: { due_date: draft.due_date, description: null, metadata: {} } },
    });
    await expect(stripe.invoices.sendInvoice((await stripe.invoices.create({ customer: customer.id, currency: 'eur' })).id))
      .rejects.toMatchObject({ statusCode: 400, message: "You can only manually send an invoice if its collection method is 'send_invoice'." });

    fake.advanceClock(3 * 86400);
    const before = fake.events().length;
    const open = await stripe.invoices.finalizeInvoice(draft.id, { expand: ['confirmation_secret'] });
    expect(types(fake.events().slice(before))).toEqual(['invoice.finalized', 'payment_intent.created']);
    expect(open).toMatchObject({ status: 'open', attempt_count: 0, attempted: false, next_payment_attempt: null, amount_remaining: 9900, auto_advance: false });
    expect(open.due_date).toBe(open.status_transitions.finalized_at! + 14 * 86400);
    expect(open.confirmation_secret).toMatchObject({ type: 'payment_intent', client_secret: expect.stringMatching(/^pi_.+_secret_/) });
    const sent = await stripe.invoices.sendInvoice(draft.id);
    expect(sent.status).toBe('open');
    expect(fake.events().at(-1)).toMatchObject({ type: 'invoice.sent', data: { object: { id: draft.id, status: 'open', due_date: open.due_date } } });
    await expect(stripe.invoices.update(draft.id, { days_until_due: 1 })).rejects.toMatchObject({ statusCode: 400, param: 'days_until_due' });
    expect((await stripe.invoices.list({ collection_method: 'send_invoice', customer: customer.id })).data.map((i) => i.id)).toEqual([draft.id]);
    // Without a card the API cannot collect it; the customer pays on the hosted page.
    await expect(stripe.invoices.pay(draft.id)).rejects.toMatchObject({ statusCode: 400, message: expect.stringContaining('no attached payment source') });
    const page = await (await fetch(open.hosted_invoice_url!)).text();
    expect(page).toContain(open.number!);
    expect(page).toContain(`Due ${new Date(open.due_date! * 1000).toISOString().slice(0, 10)}`);
    expect(page).toContain('Pay €99.00');
    const mark = fake.events().length;
    const res = await fetch(`${fake.url}/invoices/${draft.id}/pay`, { method: 'POST', body: new URLSearchParams({ card: 'visa' }), redirect: 'manual' });
    expect(res.status).toBe(303);
    expect(types(fake.events().slice(mark))).toEqual([
      'payment_method.attached', 'charge.succeeded', 'payment_intent.succeeded', 'invoice.paid', 'invoice.payment_succeeded', 'invoice_payment.paid',
    ]);
    expect(await stripe.invoices.retrieve(draft.id)).toMatchObject({ status: 'paid', amount_paid: 9900, amount_remaining: 0, attempt_count: 1 });
    expect((await stripe.customers.retrieve(customer.id) as Stripe.Customer).currency).toBeNull();
    const pdf = Buffer.from(await (await fetch(open.invoice_pdf!)).arrayBuffer()).toString('latin1');
    expect(pdf).toContain('Consulting');
    expect(pdf).toContain('Status paid');
  });

  it('fails the automatic charge of a declining card (402 when paid by API), then the invoice is paid later', async () => {
    const customer = await stripe.customers.create({
      email: 'decline@example.test', payment_method: 'pm_card_chargeCustomerFail', invoice_settings: { default_payment_method: 'pm_card_chargeCustomerFail' },
    });
    await stripe.invoiceItems.create({ customer: customer.id, amount: 5000, currency: 'eur', description: 'Overage' });
    const draft = await stripe.invoices.create({ customer: customer.id, pending_invoice_items_behavior: 'include', auto_advance: true });
    const before = fake.events().length;
    const open = await stripe.invoices.finalizeInvoice(draft.id);
    expect(types(fake.events().slice(before))).toEqual([
      'invoice.finalized', 'payment_intent.created', 'charge.failed', 'payment_intent.payment_failed', 'invoice.payment_failed', 'customer.updated',
    ]);
    expect(open).toMatchObject({ status: 'open', attempt_count: 1, attempted: true, amount_remaining: 5000, amount_paid: 0 });
    expect(open.next_payment_attempt).toBeGreaterThan(fake.now());
    expect((await stripe.customers.retrieve(customer.id) as Stripe.Customer).delinquent).toBe(true);

    const declined = await stripe.invoices.pay(draft.id).catch((err: unknown) => err);
    expect(declined).toBeInstanceOf(Stripe.errors.StripeCardError);
    expect(declined).toMatchObject({ statusCode: 402, code: 'card_declined', decline_code: 'generic_decline', raw: { payment_intent: { status: 'requires_payment_method' } } });
    expect(fake.events({ type: 'invoice.payment_failed' }).map((e) => e.data.object.attempt_count)).toEqual([1, 2]);
    expect(fake.failInvoice(draft.id)).toMatchObject({ status: 'open', attempt_count: 3 });
    const paid = fake.payInvoice(draft.id, { card: 'mastercard' });
    expect(paid).toMatchObject({ status: 'paid', attempt_count: 4, amount_paid: 5000, amount_remaining: 0, next_payment_attempt: null });
    expect(types(fake.events().slice(-6))).toEqual(['charge.succeeded', 'payment_intent.succeeded', 'invoice.paid', 'invoice.payment_succeeded', 'invoice_payment.paid', 'customer.updated']);
    expect((await stripe.customers.retrieve(customer.id) as Stripe.Customer).delinquent).toBe(false);
    const charges = (await stripe.charges.list({ customer: customer.id })).data;
    expect(charges.map((c) => c.status)).toEqual(['succeeded', 'failed', 'failed', 'failed']);
    expect(charges[0].payment_method_details!.card!.last4).toBe('4444');
  });

  it("charges the invoice's default_payment_method before the customer's, and finalizes an auto_advance draft after an hour", async () => {
    const customer = await stripe.customers.create({
      email: 'pm@example.test', payment_method: 'pm_card_chargeCustomerFail', invoice_settings: { default_payment_method: 'pm_card_chargeCustomerFail' },
    });
    const visa = await stripe.paymentMethods.attach('pm_card_visa', { customer: customer.id });
    await expect(stripe.invoices.create({ customer: customer.id, default_payment_method: 'pm_card_amex' })).rejects.toMatchObject({ statusCode: 400, param: 'default_payment_method' });
    await stripe.invoiceItems.create({ customer: customer.id, amount: 2500, currency: 'usd' });
    const draft = await stripe.invoices.create({ customer: customer.id, pending_invoice_items_behavior: 'include', default_payment_method: visa.id });
    expect(draft).toMatchObject({ default_payment_method: visa.id, currency: 'usd', total: 2500, auto_advance: false });
    // Paying a draft finalizes it first.
    const paid = await stripe.invoices.pay(draft.id, { expand: ['payments.data.payment.payment_intent'] });
    expect(paid).toMatchObject({ status: 'paid', amount_paid: 2500, number: expect.stringMatching(/-0001$/) });
    const pi = paid.payments!.data[0].payment.payment_intent as Stripe.PaymentIntent;
    expect((await stripe.charges.retrieve(pi.latest_charge as string)).payment_method).toBe(visa.id);

    await stripe.invoiceItems.create({ customer: customer.id, amount: 700, currency: 'usd' });
    const later = await stripe.invoices.create({ customer: customer.id, pending_invoice_items_behavior: 'include', auto_advance: true });
    await stripe.invoices.update(later.id, { default_payment_method: visa.id });
    fake.advanceClock(1800);
    expect((await stripe.invoices.retrieve(later.id)).status).toBe('draft');
    const mark = fake.events().length;
    fake.advanceClock(1800);
    expect(types(fake.events().slice(mark))).toEqual([
      'invoice.finalized', 'payment_intent.created', 'charge.succeeded', 'payment_intent.succeeded', 'invoice.paid', 'invoice.payment_succeeded', 'invoice_payment.paid',
    ]);
    expect(fake.events().slice(mark).every((e) => e.request.id === null)).toBe(true);
    expect(await stripe.invoices.retrieve(later.id)).toMatchObject({ status: 'paid', amount_paid: 700, automatically_finalizes_at: null });
  });

  it('makes nothing new when a statement is billed again with the same Idempotency-Keys', async () => {
    const customer = await stripe.customers.create({ email: 'idem@example.test', payment_method: 'pm_card_visa', invoice_settings: { default_payment_method: 'pm_card_visa' } });
    const bill = async () => {
      const item = await stripe.invoiceItems.create({ customer: customer.id, amount: 700, currency: 'eur', description: 'March' }, { idempotencyKey: 'statement-9:item:1' });
      const invoice = await stripe.invoices.create(
        { customer: customer.id, pending_invoice_items_behavior: 'include', auto_advance: true, metadata: { statement_id: '9' } },
        { idempotencyKey: 'statement-9:invoice' },
      );
      const finalized = await stripe.invoices.finalizeInvoice(invoice.id, {}, { idempotencyKey: 'statement-9:finalize' });
      return { item, invoice, finalized };
    };
    const first = await bill();
    expect(first.finalized).toMatchObject({ status: 'paid', amount_paid: 700 });
    const events = fake.events().length;
    const requests = fake.requests.length;
    const again = await bill();
    expect(again.item.id).toBe(first.item.id);
    expect(again.invoice.id).toBe(first.invoice.id);
    expect(again.finalized).toEqual(first.finalized);
    expect(fake.requests.slice(requests).map((r) => r.replayed)).toEqual([true, true, true]);
    expect(fake.events().length).toBe(events);
    expect((await stripe.invoiceItems.list({ customer: customer.id })).data.map((i) => i.id)).toEqual([first.item.id]);
    expect((await stripe.invoices.list({ customer: customer.id })).data.map((i) => i.id)).toEqual([first.invoice.id]);
    expect((await stripe.paymentIntents.list({ customer: customer.id })).data).toHaveLength(1);
    expect(fake.events({ type: 'invoiceitem.created' })[0].request).toMatchObject({ idempotency_key: 'statement-9:item:1' });

    const [a, b] = await Promise.all([
      stripe.invoiceItems.create({ customer: customer.id, amount: 100, currency: 'eur' }, { idempotencyKey: 'statement-10:item:1' }),
      stripe.invoiceItems.create({ customer: customer.id, amount: 100, currency: 'eur' }, { idempotencyKey: 'statement-10:item:1' }),
    ]);
    expect(a.id).toBe(b.id);
    const [c, d] = await Promise.all([
      stripe.invoices.create({ customer: customer.id, pending_invoice_items_behavior: 'include' }, { idempotencyKey: 'statement-10:invoice' }),
      stripe.invoices.create({ customer: customer.id, pending_invoice_items_behavior: 'include' }, { idempotencyKey: 'statement-10:invoice' }),
    ]);
    expect(c.id).toBe(d.id);
    expect(c.lines.data.map((l) => l.parent!.invoice_item_details!.invoice_item)).toEqual([a.id]);
    expect(fake.events({ type: ['invoiceitem.created', 'invoice.created'] })).toHaveLength(4);
    await expect(stripe.invoiceItems.create({ customer: customer.id, amount: 101, currency: 'eur' }, { idempotencyKey: 'statement-10:item:1' }))
      .rejects.toBeInstanceOf(Stripe.errors.StripeIdempotencyError);
  });

  it('voids an open invoice: its PaymentIntent is canceled and it can no longer be paid', async () => {
    const customer = await stripe.customers.create({ email: 'void@example.test' });
    await stripe.invoiceItems.create({ customer: customer.id, amount: 1200, currency: 'eur' });
    const draft = await stripe.invoices.create({ customer: customer.id, collection_method: 'send_invoice', days_until_due: 30, pending_invoice_items_behavior: 'include' });
    await expect(stripe.invoices.voidInvoice(draft.id)).rejects.toMatchObject({ statusCode: 400, message: expect.stringContaining('this invoice is draft') });
    const open = await stripe.invoices.finalizeInvoice(draft.id, { expand: ['payments'] });
    const piId = open.payments!.data[0].payment.payment_intent as string;
    const before = fake.events().length;
    const voided = await stripe.invoices.voidInvoice(draft.id, { expand: ['payments'] });
    expect(types(fake.events().slice(before))).toEqual(['invoice.voided', 'payment_intent.canceled']);
    expect(voided).toMatchObject({ status: 'void', next_payment_attempt: null, amount_paid: 0, status_transitions: { voided_at: expect.any(Number), paid_at: null } });
    expect(voided.payments!.data[0].status).toBe('canceled');
    expect(await stripe.paymentIntents.retrieve(piId)).toMatchObject({ status: 'canceled', cancellation_reason: 'void_invoice' });
    await expect(stripe.invoices.pay(draft.id)).rejects.toMatchObject({ statusCode: 400, message: expect.stringContaining('voided') });
    await expect(stripe.invoices.voidInvoice(draft.id)).rejects.toMatchObject({ statusCode: 400 });
    await expect(stripe.invoices.sendInvoice(draft.id)).rejects.toMatchObject({ statusCode: 400 });
    expect(() => fake.payInvoice(draft.id)).toThrow(/void/);
    expect(await (await fetch(open.hosted_invoice_url!)).text()).not.toContain('<form');
  });

  it('lists and retrieves events', async () => {
    await catalogue(stripe);
    const listed = await stripe.events.list({ type: 'price.*', limit: 1 });
    expect(listed).toMatchObject({ object: 'list', has_more: true });
    expect(listed.data[0].type).toBe('price.created');
    const event = await stripe.events.retrieve(listed.data[0].id);
    expect(event).toMatchObject({ id: listed.data[0].id, object: 'event', api_version: STRIPE_API_VERSION, pending_webhooks: 0 });
    expect(event.request?.id).toMatch(/^req_/);
  });
});

describe('pages', () => {
  const stripe = () => clients.node();

  it('serves the checkout page, whose form completes the session and redirects to success_url', async () => {
    const { monthly } = await catalogue(stripe());
    const session = await stripe().checkout.sessions.create({
      mode: 'subscription', customer_email: 'page@example.test', line_items: [{ price: monthly.id, quantity: 1 }],
      success_url: 'https://app.test/done?cs={CHECKOUT_SESSION_ID}', cancel_url: 'https://app.test/cancel',
    });
    const page = await fetch(session.url!);
    const text = await page.text();
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toContain('text/html');
    expect(text).toContain(`action="/checkout/${session.id}/complete"`);
    expect(text).toContain('value="paid"');
    expect(text).toContain('value="declined"');
    expect(text).toContain('€49.00');

    const declined = await fetch(`${fake.url}/checkout/${session.id}/complete`, { method: 'POST', body: new URLSearchParams({ outcome: 'declined' }), redirect: 'manual' });
    expect(declined.status).toBe(303);
    expect(declined.headers.get('location')).toBe(`/checkout/${session.id}?error=generic_decline`);
    expect(await (await fetch(`${fake.url}${declined.headers.get('location')}`)).text()).toContain('Your card was declined.');

    const paid = await fetch(`${fake.url}/checkout/${session.id}/complete`, {
      method: 'POST', body: new URLSearchParams({ outcome: 'paid', card: 'visa', email: 'page@example.test', name: 'Page Owner' }), redirect: 'manual',
    });
    expect(paid.status).toBe(303);
    expect(paid.headers.get('location')).toBe(`https://app.test/done?cs=${session.id}`);
    const done = await stripe().checkout.sessions.retrieve(session.id, { expand: ['customer'] });
    expect(done).toMatchObject({ status: 'complete', customer: { email: 'page@example.test', name: 'Page Owner' } });
    expect(fake.events({ type: 'customer.created' })).toHaveLength(1);
    expect(done.url).toBeNull();
    expect(await (await fetch(`${fake.url}/checkout/${session.id}`)).text()).toContain('complete');
  });

  it('serves the invoice PDF and the hosted invoice page', async () => {
    const { monthly } = await catalogue(stripe());
    const customer = await stripe().customers.create({ email: 'pdf@example.test', name: 'PDF Org' });
    const session = await stripe().checkout.sessions.create({ mode: 'subscription', customer: customer.id, line_items: [{ price: monthly.id, quantity: 1 }] });
    const completed = fake.completeCheckout(session.id, 'paid').session;
    const invoice = await stripe().invoices.retrieve(completed.invoice as string);
    const pdf = await fetch(invoice.invoice_pdf!);
    expect(pdf.status).toBe(200);
    expect(pdf.headers.get('content-type')).toBe('application/pdf');
    const bytes = Buffer.from(await pdf.arrayBuffer());
    expect(bytes.subarray(0, 5).toString('latin1')).toBe('%PDF-');
    expect(bytes.toString('latin1')).toContain(invoice.number!);
    expect(bytes.toString('latin1').trimEnd().endsWith('%%EOF')).toBe(true);
    const hosted = await fetch(invoice.hosted_invoice_url!);
    expect(await hosted.text()).toContain(invoice.number!);

    const renewal = fake.renewSubscription(completed.subscription as string, { outcome: 'failed' });
    const pay = await fetch(`${fake.url}/invoices/${renewal.invoice!.id}/pay`, { method: 'POST', body: new URLSearchParams({ card: 'visa' }), redirect: 'manual' });
    expect(pay.status).toBe(303);
    expect((await stripe().invoices.retrieve(renewal.invoice!.id)).status).toBe('paid');
    expect((await fetch(`${fake.url}/invoices/in_missing/pdf`)).status).toBe(404);
  });

  it('serves a setup page that confirms a SetupIntent and returns like Stripe.js', async () => {
    const customer = await stripe().customers.create({ email: 'setup@example.test' });
    const si = await stripe().setupIntents.create({ customer: customer.id, automatic_payment_methods: { enabled: true } });
    const returnUrl = 'https://app.test/cards';
    const page = await fetch(`${fake.url}/setup_intents/${si.id}/confirm?return_url=${encodeURIComponent(returnUrl)}`);
    expect(await page.text()).toContain('Save card');
    const res = await fetch(`${fake.url}/setup_intents/${si.id}/confirm?return_url=${encodeURIComponent(returnUrl)}`, {
      method: 'POST', body: new URLSearchParams({ outcome: 'succeeded', card: 'visa' }), redirect: 'manual',
    });
    const location = new URL(res.headers.get('location')!);
    expect(`${location.origin}${location.pathname}`).toBe(returnUrl);
    expect(location.searchParams.get('setup_intent')).toBe(si.id);
    expect(location.searchParams.get('redirect_status')).toBe('succeeded');
    expect((await stripe().setupIntents.retrieve(si.id)).status).toBe('succeeded');
  });
});

describe('webhooks', () => {
  let receiver: Receiver;
  const verifier = new Stripe('sk_test_unused');

  beforeEach(async () => {
    receiver = await startReceiver();
    return () => receiver.close();
  });

  it('delivers every event in order, signed so that constructEventAsync verifies it', async () => {
    fake.setWebhookUrl(receiver.url);
    const stripe = clients.fetch();
    const { monthly } = await catalogue(stripe);
    const customer = await stripe.customers.create({ email: 'hook@example.test' });
    const session = await stripe.checkout.sessions.create({ mode: 'subscription', customer: customer.id, line_items: [{ price: monthly.id, quantity: 1 }] });
    fake.completeCheckout(session.id, 'paid');
    await fake.flush();
    expect(receiver.received.map((r) => r.error)).toEqual(fake.events().map(() => null));
    expect(receiver.received.map((r) => r.event!.id)).toEqual(fake.events().map((e) => e.id));
    const completed = receiver.received.find((r) => r.event!.type === 'checkout.session.completed')!;
    expect(completed.signature).toMatch(/^t=\d+,v1=[0-9a-f]{64}$/);
    // The exact bytes Stripe sends: pretty-printed JSON, as the event was when sent (one webhook pending).
    expect(completed.raw).toBe(JSON.stringify({ ...fake.events({ type: 'checkout.session.completed' })[0], pending_webhooks: 1 }, null, 2));
    const event = completed.event as Stripe.CheckoutSessionCompletedEvent;
    expect(event.data.object.subscription).toMatch(/^sub_/);
    expect(event.pending_webhooks).toBe(1);
    expect((await stripe.events.retrieve(event.id)).pending_webhooks).toBe(0);
    // A tampered body keeps its old signature: refused.
    await expect(verifier.webhooks.constructEventAsync(completed.raw.replace('"complete"', '"open"'), completed.signature!, DEFAULT_WEBHOOK_SECRET))
      .rejects.toBeInstanceOf(Stripe.errors.StripeSignatureVerificationError);
  });

  it("delivers a statement's events in order, signed, with the invoice's lines in the payloads", async () => {
    fake.setWebhookUrl(receiver.url);
    const stripe = clients.fetch();
    const customer = await stripe.customers.create({ email: 'hook-statement@example.test', payment_method: 'pm_card_visa', invoice_settings: { default_payment_method: 'pm_card_visa' } });
    const item = await stripe.invoiceItems.create({ customer: customer.id, amount: 4200, currency: 'eur', description: 'Storage, March' }, { idempotencyKey: 'hook-statement:item' });
    const invoice = await stripe.invoices.create({ customer: customer.id, pending_invoice_items_behavior: 'include', auto_advance: true }, { idempotencyKey: 'hook-statement:invoice' });
    await stripe.invoices.finalizeInvoice(invoice.id);
    await fake.flush();
    expect(types(fake.events())).toEqual([
      'customer.created', 'payment_method.attached', 'customer.updated', 'invoiceitem.created', 'invoice.created', 'invoice.finalized',
      'payment_intent.created', 'charge.succeeded', 'payment_intent.succeeded', 'invoice.paid', 'invoice.payment_succeeded', 'invoice_payment.paid',
    ]);
    expect(receiver.received.map((r) => r.error)).toEqual(fake.events().map(() => null));
    expect(receiver.received.map((r) => r.event!.id)).toEqual(fake.events().map((e) => e.id));
    const created = receiver.received.find((r) => r.event!.type === 'invoiceitem.created')!.event as Stripe.InvoiceItemCreatedEvent;
    expect(created.data.object).toMatchObject({ id: item.id, invoice: null, amount: 4200 });
    expect(created.request).toEqual({ id: expect.stringMatching(/^req_/), idempotency_key: 'hook-statement:item' });
    const paid = receiver.received.find((r) => r.event!.type === 'invoice.paid')!.event as Stripe.InvoicePaidEvent;
    expect(paid.data.object).toMatchObject({ id: invoice.id, status: 'paid', billing_reason: 'manual', parent: null, amount_paid: 4200 });
    expect(paid.data.object.lines.data[0].parent!.invoice_item_details!.invoice_item).toBe(item.id);
    expect(receiver.received.find((r) => r.event!.type === 'invoice.created')!.event!.data.object).toMatchObject({ status: 'draft', total: 4200 });
  });

  it('retries a delivery answered with 500, with backoff, until it succeeds', async () => {
    fake.setWebhookUrl(receiver.url);
    receiver.answer.push(500, 500);
    await clients.node().customers.create({ email: 'retry-hook@example.test' });
    await fake.flush();
    const attempts = fake.deliveries.filter((d) => d.type === 'customer.created');
    expect(attempts.map((d) => [d.attempt, d.status])).toEqual([[1, 500], [2, 500], [3, 200]]);
    expect(attempts[2].at.getTime() - attempts[0].at.getTime()).toBeGreaterThanOrEqual(50);
    expect(fake.events()[0].pending_webhooks).toBe(0);
  });

  it('gives up after the last retry and goes on with the next event', async () => {
    fake.setWebhookUrl(receiver.url);
    receiver.answer.push(503, 503, 503, 503);
    const stripe = clients.node();
    await stripe.customers.create({ email: 'a@example.test' });
    await stripe.customers.create({ email: 'b@example.test' });
    await fake.flush();
    expect(fake.deliveries.map((d) => d.status)).toEqual([503, 503, 503, 503, 200]);
    expect(fake.events().map((e) => e.pending_webhooks)).toEqual([1, 0]);
  });

  it('holds events while paused, for a test to deliver in any order, twice, or badly signed', async () => {
    fake.setWebhookUrl(receiver.url);
    fake.pauseDelivery();
    const stripe = clients.node();
    const { monthly } = await catalogue(stripe);
    const customer = await stripe.customers.create({ email: 'order@example.test' });
    const session = await stripe.checkout.sessions.create({ mode: 'subscription', customer: customer.id, line_items: [{ price: monthly.id, quantity: 1 }] });
    fake.completeCheckout(session.id, 'paid');
    await fake.flush();
    expect(receiver.received).toHaveLength(0);
    const held = fake.takePending();
    expect(held.map((e) => e.id)).toEqual(fake.events().map((e) => e.id));

    const created = held.find((e) => e.type === 'customer.subscription.created')!;
    const completed = held.find((e) => e.type === 'checkout.session.completed')!;
    expect(await fake.deliver(completed)).toBe(200);
    expect(await fake.deliver(created.id, { twice: true })).toBe(200);
    expect(receiver.received.map((r) => r.event!.type)).toEqual(['checkout.session.completed', 'customer.subscription.created', 'customer.subscription.created']);

    expect(await fake.deliver(created, { signature: 'bad' })).toBe(400);
    expect(receiver.received.at(-1)!.error).toContain('No signatures found matching the expected signature');
    expect(await fake.deliver(created, { signature: 'missing' })).toBe(400);
    expect(await fake.deliver(created, { timestamp: Math.floor(Date.now() / 1000) - 600 })).toBe(400);
    expect(receiver.received.at(-1)!.error).toContain('Timestamp outside the tolerance zone');

    fake.resumeDelivery();
    await stripe.customers.update(customer.id, { name: 'Resumed' });
    await fake.flush();
    expect(receiver.received.at(-1)!.event!.type).toBe('customer.updated');
  });

  it('signs like stripe.webhooks.generateTestHeaderString', async () => {
    const payload = JSON.stringify({ id: 'evt_test', object: 'event' });
    const timestamp = Math.floor(Date.now() / 1000);
    const ours = fake.signatureHeader(payload, { timestamp });
    const theirs = verifier.webhooks.generateTestHeaderString({ payload, secret: DEFAULT_WEBHOOK_SECRET, timestamp });
    expect(ours).toBe(theirs);
    await expect(verifier.webhooks.constructEventAsync(payload, ours, DEFAULT_WEBHOOK_SECRET)).resolves.toMatchObject({ id: 'evt_test' });
  });
});

describe('webhook fixtures', () => {
  const verifier = new Stripe('sk_test_unused');
  const wanted = [
    'checkout.session.completed.subscription', 'checkout.session.completed.payment', 'customer.subscription.created',
    'customer.subscription.updated', 'customer.subscription.deleted', 'invoice.paid', 'invoice.payment_failed', 'charge.refunded',
    'payment_method.attached', 'payment_method.detached', 'customer.updated',
  ];

  it('has one real event shape per type the billing code handles', () => {
    expect(stripeEventFixtures()).toEqual(expect.arrayContaining(wanted));
  });

  it.each(wanted)('%s loads with fresh ids, takes overrides, and verifies once signed', async (name) => {
    const a = loadStripeEvent(name);
    const b = loadStripeEvent(name);
    const type = name.replace(/\.(subscription|payment)$/, '');
    expect(a).toMatchObject({ object: 'event', type, api_version: STRIPE_API_VERSION, livemode: false });
    expect(a.id).toMatch(/^evt_/);
    expect(a.id).not.toBe(b.id);
    expect(a.data.object.id).not.toBe(b.data.object.id);
    const customer = (a.data.object.customer ?? a.data.object.id) as string;
    expect(typeof customer).toBe('string');
    const merged = loadStripeEvent(name, { id: 'evt_fixed', data: { object: { metadata: { organization_id: 'org-42' } } } }) as StripeEvent;
    expect(merged.id).toBe('evt_fixed');
    expect(merged.data.object.metadata).toMatchObject({ organization_id: 'org-42' });
    expect(merged.data.object.object).toBe(a.data.object.object);
    const payload = JSON.stringify(merged, null, 2);
    const header = verifier.webhooks.generateTestHeaderString({ payload, secret: DEFAULT_WEBHOOK_SECRET });
    await expect(verifier.webhooks.constructEventAsync(payload, header, DEFAULT_WEBHOOK_SECRET)).resolves.toMatchObject({ id: 'evt_fixed', type });
  });

  it('keeps the ids of one fixture consistent with each other', () => {
    const event = loadStripeEvent('checkout.session.completed.subscription');
    const session = event.data.object;
    expect(session.customer).toMatch(/^cus_/);
    expect(session.subscription).toMatch(/^sub_/);
    const invoice = loadStripeEvent('invoice.paid', { data: { object: { customer: session.customer } } });
    expect(invoice.data.object.customer).toBe(session.customer);
    expect(invoice.data.object.lines.data[0].invoice).toBe(invoice.data.object.id);
  });

  it('can be delivered through the fake like a recorded event', async () => {
    const receiver = await startReceiver();
    try {
      const status = await fake.deliver(loadStripeEvent('invoice.payment_failed'), { url: receiver.url });
      expect(status).toBe(200);
      expect(receiver.received[0].event).toMatchObject({ type: 'invoice.payment_failed', data: { object: { status: 'open', attempt_count: 1 } } });
    } finally {
      await receiver.close();
    }
  });
});

describe('the control API (connectFakeStripe), for a fake in another process', () => {
  it('drives checkout, renewals, failures, refunds and deliveries over HTTP', async () => {
    const control = connectFakeStripe(fake.url, fake.secretKey);
    const receiver = await startReceiver();
    try {
      fake.setWebhookUrl(receiver.url);
      const stripe = clients.fetch();
      const { monthly, pack } = await catalogue(stripe);
      const customer = await stripe.customers.create({ email: 'remote@example.test' });
      const session = await stripe.checkout.sessions.create({ mode: 'subscription', customer: customer.id, line_items: [{ price: monthly.id, quantity: 1 }] });
      const done = await control.completeCheckout(session.id, 'paid');
      expect(done.session.status).toBe('complete');
      const renewal = await control.renewSubscription(done.session.subscription as string, { outcome: 'failed' });
      expect(renewal.subscription.status).toBe('past_due');
      expect(await control.now()).toBe(fake.now());
      const paid = await control.payInvoice(renewal.invoice!.id);
      expect(paid.status).toBe('paid');
      const packSession = await stripe.checkout.sessions.create({ mode: 'payment', customer: customer.id, line_items: [{ price: pack.id, quantity: 1 }] });
      const packDone = await control.completeCheckout(packSession.id, 'paid');
      const pi = (await control.get(packDone.session.payment_intent as string))!;
      expect((await control.refund(pi.latest_charge, 700)).amount).toBe(700);
      await control.flush();
      expect(receiver.received.every((r) => r.error === null)).toBe(true);
      expect((await control.events({ type: 'charge.refunded' }))[0].data.object.amount_refunded).toBe(700);

      await control.pauseDelivery();
      await stripe.customers.update(customer.id, { name: 'Remote' });
      const held = await control.takePending();
      expect(held.map((e) => e.type)).toEqual(['customer.updated']);
      expect(await control.deliver(held[0].id, { signature: 'bad' })).toBe(400);
      expect(await control.deliver(held[0])).toBe(200);
      await control.resumeDelivery();
      await control.next({ match: 'POST /v1/customers', status: 500 });
      await expect(new Stripe(fake.secretKey, { host: fake.host, port: fake.port, protocol: 'http', maxNetworkRetries: 0 }).customers.create({}))
        .rejects.toBeInstanceOf(Stripe.errors.StripeAPIError);
      const refused = await fetch(`${fake.url}/_fake/state`);
      expect(refused.status).toBe(401);
      expect(await control.advanceClock(60)).toBe(fake.now());
    } finally {
      await receiver.close();
    }
  });

  it('pays and fails one-off invoices and finalizes due drafts over HTTP', async () => {
    const control = connectFakeStripe(fake.url, fake.secretKey);
    const stripe = clients.node();
    const customer = await stripe.customers.create({ email: 'remote-invoice@example.test' });
    await stripe.invoiceItems.create({ customer: customer.id, amount: 3100, currency: 'eur' });
    const sent = await stripe.invoices.create({ customer: customer.id, collection_method: 'send_invoice', days_until_due: 10, pending_invoice_items_behavior: 'include', auto_advance: true });
    const open = await stripe.invoices.finalizeInvoice(sent.id);
    expect(fake.events().at(-1)).toMatchObject({ type: 'invoice.sent', data: { object: { id: sent.id } } });
    expect(open).toMatchObject({ status: 'open', attempt_count: 0 });
    const failed = await control.failInvoice(sent.id);
    expect(failed).toMatchObject({ status: 'open', attempt_count: 1, next_payment_attempt: null });
    expect((await control.events({ type: 'invoice.payment_failed' })).map((e) => e.data.object.id)).toEqual([sent.id]);
    expect((await stripe.customers.retrieve(customer.id) as Stripe.Customer).delinquent).toBe(false);
    expect(await control.payInvoice(sent.id, { card: 'visa' })).toMatchObject({ status: 'paid', attempt_count: 2, amount_paid: 3100 });

    await stripe.customers.update(customer.id, { invoice_settings: { default_payment_method: (await stripe.paymentMethods.list({ customer: customer.id })).data[0].id } });
    await stripe.invoiceItems.create({ customer: customer.id, amount: 800, currency: 'eur' });
    const auto = await stripe.invoices.create({ customer: customer.id, pending_invoice_items_behavior: 'include', auto_advance: true });
    await control.advanceClock(3600);
    expect(await control.get(auto.id)).toMatchObject({ status: 'paid', amount_paid: 800, billing_reason: 'manual' });
    await expect(control.failInvoice(auto.id)).rejects.toMatchObject({ status: 400 });
  });
});
