// The billing types: the mirror's rows from the generated `Database` types, and the inputs and
// results of the Billing methods.
import type { Database, Tables } from '../database.types.ts';

/** A row of public.billing_accounts: the organization's Stripe customer and standing. */
export type BillingAccount = Tables<'billing_accounts'>;
export type BillingStanding = Database['public']['Enums']['billing_standing'];
/** A row of public.subscriptions, as Stripe last said. */
export type Subscription = Tables<'subscriptions'>;
export type SubscriptionStatus = Database['public']['Enums']['subscription_status'];
/** A row of public.invoices. */
export type Invoice = Tables<'invoices'>;
export type InvoiceStatus = Database['public']['Enums']['invoice_status'];
/** A row of public.payment_methods (brand, last four, expiry; never a card number). */
export type PaymentMethod = Tables<'payment_methods'>;
/** A row of public.credit_packs. */
export type CreditPack = Tables<'credit_packs'>;

export type CheckoutInput =
  & { organizationId: string; successUrl: string; cancelUrl: string }
  & ({ plan: string; pack?: never; quantity?: never } | { pack: string; quantity?: number; plan?: never });

/** A Checkout session: send the customer to `url`. */
export interface CheckoutSession {
  id: string;
  url: string;
}

/** A SetupIntent: confirm it with Stripe.js and its client secret to save a card. */
export interface SetupIntent {
  id: string;
  clientSecret: string;
}

/** Where an organization stands: its account (null before its first checkout) and live subscription. */
export interface BillingStatus {
  account: BillingAccount | null;
  subscription: Subscription | null;
  standing: BillingStanding;
}

/** A row of public.credit_accounts: the line of credit, what is owed, its terms and status. */
export type CreditAccount = Tables<'credit_accounts'>;
export type CreditAccountStatus = Database['public']['Enums']['credit_account_status'];
/** A row of public.credit_account_transactions. */
export type CreditTransaction = Tables<'credit_account_transactions'>;
export type CreditTransactionType = Database['public']['Enums']['credit_transaction_type'];
export type CreditTransactionStatus = Database['public']['Enums']['credit_transaction_status'];
/** A row of public.credit_statements. */
export type CreditStatement = Tables<'credit_statements'>;

/** The credit account and its latest transactions. */
export interface CreditAccountDetails {
  account: CreditAccount;
  recent: CreditTransaction[];
}

export interface CreditTransactionFilters {
  types?: CreditTransactionType[];
  statuses?: CreditTransactionStatus[];
  /** From this time (inclusive) to `to` (exclusive). */
  from?: string;
  to?: string;
  sourceType?: string;
  /** 1 to 200 (default 50). */
  limit?: number;
  /** The cursor of the previous page (its `next`). */
  after?: string | null;
}

export interface CreditTransactionPage {
  transactions: CreditTransaction[];
  /** Pass as `after` for the next page; null on the last one. */
  next: string | null;
}
