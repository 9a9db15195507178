// Billing through Stripe. Checkout, the portal and saving a card go through the billing-*
// edge functions (they hold the Stripe key); what Stripe confirmed is read from the mirror
// tables, which owners, admins and billing members of the organization see under RLS.
// Every method throws BackendError on failure.
import type { SupabaseClient } from '@supabase/supabase-js';
import type { Database } from '../database.types.ts';
import { invoke, run } from '../request.ts';
import type {
  BillingStatus,
  CheckoutInput,
  CheckoutSession,
  CreditPack,
  Invoice,
  PaymentMethod,
  SetupIntent,
} from './types.ts';

export interface BillingContext {
  supabase: SupabaseClient<Database>;
}

export class Billing {
  readonly #supabase: SupabaseClient<Database>;

  constructor(context: BillingContext) {
    this.#supabase = context.supabase;
  }

  /**
   * A Checkout session for a subscription to a plan, or for `quantity` of a credit pack (owners,
   * admins, billing members). Send the customer to its `url`. Errors: not_authorized,
   * plan_not_found, plan_not_billable, pack_not_found, pack_not_billable, subscription_exists,
   * invalid_return_url, invalid_checkout, stripe_unavailable.
   */
  async checkout(input: CheckoutInput): Promise<CheckoutSession> {
    return invoke<CheckoutSession>(this.#supabase, 'billing-checkout', {
      body: {
        organization_id: input.organizationId,
        ...(input.plan !== undefined ? { plan: input.plan } : { pack: input.pack, quantity: input.quantity ?? 1 }),
        success_url: input.successUrl,
        cancel_url: input.cancelUrl,
      },
    });
  }

  /** A customer portal session (change or cancel the plan, cards, invoices). Errors: no_billing_account, invalid_return_url. */
  async portal(organizationId: string, returnUrl: string): Promise<{ url: string }> {
    return invoke<{ url: string }>(this.#supabase, 'billing-portal', {
      body: { organization_id: organizationId, return_url: returnUrl },
    });
  }

  /** A SetupIntent to save a card without paying. */
  async setupIntent(organizationId: string): Promise<SetupIntent> {
    const intent = await invoke<{ id: string; client_secret: string }>(this.#supabase, 'billing-setup-intent', {
      body: { organization_id: organizationId },
    });
    return { id: intent.id, clientSecret: intent.client_secret };
  }

  /** The credit packs for sale. */
  async packs(): Promise<CreditPack[]> {
    return run(this.#supabase.from('credit_packs').select('*').eq('is_active', true).order('sort_order'));
  }

  /** The organization's invoices, newest first (owners, admins, billing members; others get none). */
  async invoices(organizationId: string, options: { limit?: number } = {}): Promise<Invoice[]> {
    const limit = Math.min(Math.max(options.limit ?? 50, 1), 500);
    return run(this.#supabase.from('invoices').select('*').eq('organization_id', organizationId)
      .order('stripe_created', { ascending: false }).limit(limit));
  }

  /** The organization's saved payment methods, the default first. */
  async paymentMethods(organizationId: string): Promise<PaymentMethod[]> {
    return run(this.#supabase.from('payment_methods').select('*').eq('organization_id', organizationId)
      .order('is_default', { ascending: false }).order('created_at'));
  }

  /** The organization's billing account, its newest subscription and its standing. */
  async status(organizationId: string): Promise<BillingStatus> {
    const [account, subscriptions] = await Promise.all([
      run(this.#supabase.from('billing_accounts').select('*').eq('organization_id', organizationId).maybeSingle()),
      run(this.#supabase.from('subscriptions').select('*').eq('organization_id', organizationId)
        .order('stripe_created', { ascending: false }).limit(1)),
    ]);
    return { account, subscription: subscriptions[0] ?? null, standing: account?.standing ?? 'good' };
  }
}
