// Billing: checkout (plans and credit packs), the customer portal, saving a card, invoices,
// payment methods and the subscription's status.
export * from './billing.ts';
export * from './types.ts';
