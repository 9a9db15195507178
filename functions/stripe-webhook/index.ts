// POST /functions/v1/stripe-webhook (verify_jwt = false): Stripe's events, signed with the
// endpoint's secret (STRIPE_WEBHOOK_SECRET) in the Stripe-Signature header.
//   - A missing or bad signature, or a body that is no event: 400, nothing written.
//   - Every verified event is stored once by its id (private.stripe_events); a replay of one
//     handled before is acknowledged (200) and changes nothing.
//   - Handling: in one transaction the event and the Stripe object it is about are locked, the
//     object's current state is fetched from Stripe and applied by the SQL (see
//     20261201000520_billing_engine.sql). Events come out of order and twice; applying Stripe's
//     newest state under the object's lock makes the order not matter, and two events of the same
//     second never let the older state win.
//   - 200 for handled and for ignored types; 503 when Stripe did not answer and 500 on our own
//     failure, nothing half-written (the transaction rolls back), so Stripe's retry can succeed.
import Stripe from 'stripe';
import { withServiceRole, type Tx } from '../_shared/db.ts';
import { requireSecret, stripeEnv } from '../_shared/env.ts';
import { HttpError } from '../_shared/errors.ts';
import { createHandler, json } from '../_shared/handler.ts';
import { callStripe, stripe } from '../_shared/stripe.ts';

// Stripe's events are at most a few hundred kilobytes.
const MAX_BODY = 1024 * 1024;

type Outcome = 'processed' | 'ignored';

/** Locks another Stripe object this event leads to (a session's subscription), then fetches it. */
async function lockAndFetch<T>(tx: Tx, id: string, fetch: () => Promise<T>): Promise<T> {
  await tx`select pg_advisory_xact_lock(hashtextextended(${'stripe:' + id}, 0))`;
  return await callStripe(fetch);
}

/** The outcome an apply function of the SQL answered with. */
async function outcomeOf(query: PromiseLike<readonly { outcome: Outcome }[]>): Promise<Outcome> {
  const [{ outcome }] = await query;
  return outcome;
}

/** Applies an event: the current state of its object, fetched from Stripe. */
async function apply(tx: Tx, event: Stripe.Event): Promise<Outcome> {
  const api = stripe();
  const id = (event.data.object as { id: string }).id;
  switch (event.type) {
    case 'checkout.session.completed': {
      const session = await callStripe(() => api.checkout.sessions.retrieve(id));
      if (session.mode === 'payment') {
        return outcomeOf(tx`select private.apply_pack_checkout(${tx.json(session as never)}) as outcome`);
      }
      if (session.mode === 'subscription' && session.subscription) {
        const subscriptionId = typeof session.subscription === 'string' ? session.subscription : session.subscription.id;
        const subscription = await lockAndFetch(tx, subscriptionId, () => api.subscriptions.retrieve(subscriptionId));
        return outcomeOf(tx`select private.sync_stripe_subscription(${tx.json(subscription as never)}) as outcome`);
      }
      if (session.mode === 'setup' && session.setup_intent) {
        const intentId = typeof session.setup_intent === 'string' ? session.setup_intent : session.setup_intent.id;
        const intent = await callStripe(() => api.setupIntents.retrieve(intentId));
        const methodId = typeof intent.payment_method === 'string' ? intent.payment_method : intent.payment_method?.id;
        if (!methodId) return 'ignored';
        const method = await lockAndFetch(tx, methodId, () => api.paymentMethods.retrieve(methodId));
        return outcomeOf(tx`select private.sync_stripe_payment_method(${tx.json(method as never)}) as outcome`);
      }
      return 'ignored';
    }
    case 'customer.subscription.created':
    case 'customer.subscription.updated':
    case 'customer.subscription.deleted': {
      const subscription = await callStripe(() => api.subscriptions.retrieve(id));
      return outcomeOf(tx`select private.sync_stripe_subscription(${tx.json(subscription as never)}) as outcome`);
    }
    case 'invoice.paid':
    case 'invoice.payment_failed': {
      const invoice = await callStripe(() => api.invoices.retrieve(id));
      return outcomeOf(tx`
        select private.sync_stripe_invoice(${tx.json(invoice as never)}, ${event.type === 'invoice.payment_failed'}) as outcome`);
    }
    case 'charge.refunded': {
      const charge = await callStripe(() => api.charges.retrieve(id));
      const intentId = typeof charge.payment_intent === 'string' ? charge.payment_intent : charge.payment_intent?.id;
      if (intentId) {
        // The refund may come before its pack's checkout.session.completed: apply the checkout
        // first (as Stripe has it now), so the refund finds the credits it takes back.
        const [{ known }] = await tx<[{ known: boolean }]>`
          select exists (select 1 from private.credit_pack_purchases where payment_intent_id = ${intentId}) as known`;
        if (!known) {
          const sessions = await callStripe(() => api.checkout.sessions.list({ payment_intent: intentId, limit: 1 }));
          const session = sessions.data[0];
          if (session?.mode === 'payment') {
            await lockAndFetch(tx, session.id, () => Promise.resolve(session));
            await tx`select private.apply_pack_checkout(${tx.json(session as never)})`;
          }
        }
      }
      return outcomeOf(tx`select private.apply_charge_refund(${tx.json(charge as never)}) as outcome`);
    }
    case 'payment_method.attached':
    case 'payment_method.detached': {
      const method = await callStripe(() => api.paymentMethods.retrieve(id));
      return outcomeOf(tx`select private.sync_stripe_payment_method(${tx.json(method as never)}) as outcome`);
    }
    case 'customer.updated': {
      const customer = await callStripe(() => api.customers.retrieve(id));
      if ((customer as Stripe.DeletedCustomer).deleted) return 'ignored';
      return outcomeOf(tx`select private.sync_stripe_customer(${tx.json(customer as never)}) as outcome`);
    }
    default:
      return 'ignored';
  }
}

export const handler = createHandler(async (req, { log }) => {
  const secret = requireSecret(stripeEnv().webhookSecret, 'STRIPE_WEBHOOK_SECRET');
  const body = await req.text();
  if (body.length > MAX_BODY) throw new HttpError(413, 'payload_too_large', 'The webhook body is too large');
  const signature = req.headers.get('stripe-signature');
  if (!signature) throw new HttpError(400, 'invalid_signature', 'The Stripe-Signature header is missing');
  let event: Stripe.Event;
  try {
    // Checks the signature and the timestamp (older than five minutes is refused).
    event = await stripe().webhooks.constructEventAsync(body, signature, secret, undefined, Stripe.createSubtleCryptoProvider());
  } catch (err) {
    if (err instanceof Stripe.errors.StripeSignatureVerificationError) {
      throw new HttpError(400, 'invalid_signature', 'The Stripe signature does not match');
    }
    throw new HttpError(400, 'invalid_request', 'The webhook body is not a Stripe event');
  }
  if (typeof event?.id !== 'string' || typeof event.type !== 'string' || typeof (event.data?.object as { id?: unknown })?.id !== 'string') {
    throw new HttpError(400, 'invalid_request', 'The webhook body is not a Stripe event');
  }

  const [{ state }] = await withServiceRole((tx) => tx<[{ state: string }]>`
    select private.record_stripe_event(${tx.json(event as never)}) as state`);
  if (state === 'done') return json({ received: true, duplicate: true });

  try {
    const outcome = await withServiceRole(async (tx) => {
      const [{ claimed }] = await tx<[{ claimed: boolean }]>`select private.claim_stripe_event(${event.id}) as claimed`;
      if (!claimed) return 'duplicate' as const;
      const outcome = await apply(tx, event);
      await tx`select private.finish_stripe_event(${event.id}, ${outcome})`;
      return outcome;
    });
    log.info('stripe event', { event: event.id, type: event.type, outcome });
    return json({ received: true, ...(outcome === 'duplicate' ? { duplicate: true } : { outcome }) });
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    await withServiceRole((tx) => tx`select private.finish_stripe_event(${event.id}, 'failed', ${message})`);
    log.warn('stripe event failed', { event: event.id, type: event.type, error: message });
    throw err;
  }
}, { name: 'stripe-webhook', methods: ['POST'] });

if (import.meta.main) Deno.serve(handler);
