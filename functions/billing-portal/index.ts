// POST /functions/v1/billing-portal {"organization_id", "return_url"}
// For owners, admins and billing members of an organization that has a Stripe customer: a
// customer portal session (change or cancel the plan, update cards, download invoices); answers
// {"url"}. The return URL must be on one of the billing_return_origins.
import { z } from 'zod';
import { requireUser } from '../_shared/auth.ts';
import { withUser } from '../_shared/db.ts';
import { createHandler, json } from '../_shared/handler.ts';
import { callStripe, stripe } from '../_shared/stripe.ts';
import { parseJson } from '../_shared/validate.ts';

const Body = z.object({ organization_id: z.uuid(), return_url: z.url().max(2000) }).strict();

export const handler = createHandler(async (req) => {
  const claims = await requireUser(req);
  const body = await parseJson(req, Body);
  const [{ customer }] = await withUser(claims, (tx) => tx<[{ customer: string }]>`
    select private.billing_customer_of(${body.organization_id}) as customer, private.check_billing_return_url(${body.return_url})`);
  const session = await callStripe(() => stripe().billingPortal.sessions.create({ customer, return_url: body.return_url }));
  return json({ url: session.url }, 201);
}, { name: 'billing-portal', methods: ['POST'] });

if (import.meta.main) Deno.serve(handler);
