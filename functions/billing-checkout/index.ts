// POST /functions/v1/billing-checkout {"organization_id", "plan" | "pack", "quantity"?, "success_url", "cancel_url"}
// For owners, admins and billing members: a Stripe Checkout session for a subscription to a plan
// or a one-time credit pack; answers {"id", "url"} (send the customer to url). The URLs must be
// on one of the billing_return_origins; Stripe Tax applies when billing_automatic_tax is on. What
// the payment buys arrives through stripe-webhook once Stripe confirms it.
import { z } from 'zod';
import { requireUser } from '../_shared/auth.ts';
import { type BillingAccount, ensureCustomer } from '../_shared/billing.ts';
import { withUser } from '../_shared/db.ts';
import { createHandler, json } from '../_shared/handler.ts';
import { callStripe, stripe } from '../_shared/stripe.ts';
import { parseJson } from '../_shared/validate.ts';

const Body = z.object({
  organization_id: z.uuid(),
  plan: z.string().min(1).max(32).optional(),
  pack: z.string().min(1).max(32).optional(),
  quantity: z.int().min(1).max(100).optional(),
  success_url: z.url().max(2000),
  cancel_url: z.url().max(2000),
}).strict();

interface Target extends BillingAccount {
  mode: 'subscription' | 'payment';
  price_id: string;
  quantity: number;
  plan_key?: string;
  pack_key?: string;
}

export const handler = createHandler(async (req, { log }) => {
  const claims = await requireUser(req);
  const body = await parseJson(req, Body);
  const [{ target }] = await withUser(claims, (tx) => tx<[{ target: Target }]>`
    select private.billing_checkout_target(${body.organization_id}, ${body.plan ?? null}, ${body.pack ?? null},
      ${body.quantity ?? 1}) as target,
      private.check_billing_return_url(${body.success_url}), private.check_billing_return_url(${body.cancel_url})`);
  const customer = await ensureCustomer(body.organization_id, target);
  const metadata: Record<string, string> = {
    organization_id: body.organization_id,
    ...(target.plan_key ? { plan_key: target.plan_key } : {}),
    ...(target.pack_key ? { pack_key: target.pack_key, quantity: String(target.quantity) } : {}),
  };
  const session = await callStripe(() =>
    stripe().checkout.sessions.create({
      mode: target.mode,
      customer,
      client_reference_id: body.organization_id,
      line_items: [{ price: target.price_id, quantity: target.quantity }],
      success_url: body.success_url,
      cancel_url: body.cancel_url,
      metadata,
      ...(target.mode === 'subscription'
        ? { subscription_data: { metadata } }
        : { payment_intent_data: { metadata } }),
      ...(target.automatic_tax ? { automatic_tax: { enabled: true }, customer_update: { address: 'auto' } } : {}),
    })
  );
  log.info('checkout created', { organization_id: body.organization_id, mode: target.mode, session: session.id });
  return json({ id: session.id, url: session.url }, 201);
}, { name: 'billing-checkout', methods: ['POST'] });

if (import.meta.main) Deno.serve(handler);
