// POST /functions/v1/billing-setup-intent {"organization_id"}
// For owners, admins and billing members: a SetupIntent to save a card without paying (confirm
// it in the browser with Stripe.js and its client_secret); answers {"id", "client_secret"}. The
// saved card reaches payment_methods through stripe-webhook.
import { z } from 'zod';
import { requireUser } from '../_shared/auth.ts';
import { type BillingAccount, ensureCustomer } from '../_shared/billing.ts';
import { withUser } from '../_shared/db.ts';
import { createHandler, json } from '../_shared/handler.ts';
import { callStripe, stripe } from '../_shared/stripe.ts';
import { parseJson } from '../_shared/validate.ts';

const Body = z.object({ organization_id: z.uuid() }).strict();

export const handler = createHandler(async (req) => {
  const claims = await requireUser(req);
  const body = await parseJson(req, Body);
  const [{ account }] = await withUser(claims, (tx) => tx<[{ account: BillingAccount }]>`
    select private.billing_account_of(${body.organization_id}) as account`);
  const customer = await ensureCustomer(body.organization_id, account);
  const intent = await callStripe(() =>
    stripe().setupIntents.create({
      customer,
      usage: 'off_session',
      automatic_payment_methods: { enabled: true },
      metadata: { organization_id: body.organization_id },
    })
  );
  return json({ id: intent.id, client_secret: intent.client_secret }, 201);
}, { name: 'billing-setup-intent', methods: ['POST'] });

if (import.meta.main) Deno.serve(handler);
