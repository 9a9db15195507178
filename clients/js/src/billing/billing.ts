// Billing through Stripe. Checkout, the portal and saving a card go through the billing-*
// edge functions (they hold the Stripe key); what Stripe confirmed is read from the mirror
// tables, which owners, admins and billing members of the organization see under RLS.
// Every method throws BackendError on failure.
import type { SupabaseClient } from '@supabase/supabase-js';
import type { Database } from '../database.types.ts';
import { invoke, run } from '../request.ts';
import { BackendError } from '../errors.ts';
import type {
  BillingStatus,
  CreditAccount,
  CreditAccountDetails,
  CreditStatement,
  CreditTransactionFilters,
  CreditTransactionPage,
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

  /**
   * The organization's credit account with its latest transactions (owners, billing members), or
   * null when it has none.
   */
  async creditAccount(organizationId: string, options: { recent?: number } = {}): Promise<CreditAccountDetails | null> {
    const account = await run(this.#supabase.from('credit_accounts').select('*').eq('organization_id', organizationId).maybeSingle());
    if (!account) return null;
    const { transactions } = await this.creditTransactions(organizationId, { limit: options.recent ?? 10 });
    return { account, recent: transactions };
  }

  /**
   * Sets the account's payment method (one of the saved ones: see `setupIntent` and
   * `paymentMethods`) and billing contact; omitted fields stay. Owners and billing members.
   */
  async updateCreditAccount(organizationId: string, settings: { paymentMethodId?: string; billingEmail?: string; billingName?: string }): Promise<CreditAccount> {
    return run(this.#supabase.rpc('update_credit_account_settings', {
      p_organization_id: organizationId,
      ...(settings.paymentMethodId !== undefined ? { p_payment_method: settings.paymentMethodId } : {}),
      ...(settings.billingEmail !== undefined ? { p_billing_email: settings.billingEmail } : {}),
      ...(settings.billingName !== undefined ? { p_billing_name: settings.billingName } : {}),
    }));
  }

  /** The account's history, newest first, filtered, a page at a time (keyset: pass `next` as `after`). */
  async creditTransactions(organizationId: string, filters: CreditTransactionFilters = {}): Promise<CreditTransactionPage> {
    const limit = filters.limit ?? 50;
    let after: { createdAt: string; id: string } | null = null;
    if (filters.after) {
      const [createdAt, id] = filters.after.split('|');
      if (!createdAt || !id) throw new BackendError('invalid_input', 'after is the `next` cursor of a previous page.');
      after = { createdAt, id };
    }
    const rows = await run(this.#supabase.rpc('list_credit_account_transactions', {
      p_organization_id: organizationId,
      ...(filters.types ? { p_types: filters.types } : {}),
      ...(filters.statuses ? { p_statuses: filters.statuses } : {}),
      ...(filters.from ? { p_from: filters.from } : {}),
      ...(filters.to ? { p_to: filters.to } : {}),
      ...(filters.sourceType ? { p_source_type: filters.sourceType } : {}),
      ...(after ? { p_after_created_at: after.createdAt, p_after_id: after.id } : {}),
      p_limit: limit,
    }));
    const last = rows.at(-1);
    return { transactions: rows, next: rows.length === limit && last ? `${last.created_at}|${last.id}` : null };
  }

  /** The account's statements, newest first. */
  async creditStatements(organizationId: string): Promise<CreditStatement[]> {
    return run(this.#supabase.from('credit_statements').select('*').eq('organization_id', organizationId)
      .order('period_end', { ascending: false }));
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
