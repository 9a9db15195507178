// What the billing functions share: the organization's Stripe customer, made on first need.
import { withServiceRole } from './db.ts';
import { callStripe, stripe } from './stripe.ts';

export interface BillingAccount {
  organization_name: string;
  customer_id: string | null;
  automatic_tax: boolean;
}

/**
 * The organization's Stripe customer: the stored one, or a new one. Two racing first calls send
 * the same idempotency key with the same parameters, so Stripe makes one customer and answers
 * both with it; the first to record it wins, and both return the recorded id.
 */
export async function ensureCustomer(organizationId: string, account: BillingAccount): Promise<string> {
  if (account.customer_id) return account.customer_id;
  const customer = await callStripe(() =>
    stripe().customers.create(
      { name: account.organization_name, metadata: { organization_id: organizationId } },
      { idempotencyKey: `organization-customer-${organizationId}` },
    )
  );
  const [{ id }] = await withServiceRole((tx) => tx<[{ id: string }]>`
    select private.record_billing_customer(${organizationId}, ${customer.id}, ${customer.email ?? null}) as id`);
  return id;
}
