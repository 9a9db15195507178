// POST /functions/v1/credit-statements-bill (service role; the credit-statements-bill job runs it
// hourly): bills each pending credit statement as one Stripe invoice with an item per pool or
// purchase, charged to the account's card (charge_automatically) or sent with the payment terms
// (send_invoice). Never twice: one run at a time per statement (a transaction lock), the invoice
// remembered as soon as it exists, its items created with idempotency keys and skipped when
// already on the invoice, so a second run or one after a crash midway finishes the same invoice.
// What Stripe then says (paid, failed) reaches the statement through stripe-webhook.
import Stripe from 'stripe';
import { requireServiceRole } from '../_shared/auth.ts';
import { type BillingAccount, ensureCustomer } from '../_shared/billing.ts';
import { type Tx, withServiceRole } from '../_shared/db.ts';
import { createHandler, json } from '../_shared/handler.ts';
import { callStripe, stripe } from '../_shared/stripe.ts';

const BATCH = 20;
// A test stops the billing after the items, before the invoice is finalized, as a crash would.
const FAULT = Deno.env.get('CREDIT_STATEMENTS_FAULT');

interface Pending {
  statement_id: string;
  organization_id: string;
  total: number;
  currency: string;
  due_date: Date;
  stripe_invoice_id: string | null;
  payment_method: string | null;
  period_start: Date;
  period_end: Date;
}

interface Line {
  line: number;
  description: string;
  amount: string;
}

const day = (d: Date) => d.toISOString().slice(0, 10);

async function bill(tx: Tx, s: Pending): Promise<'billed' | 'busy'> {
  const [{ locked }] = await tx<[{ locked: boolean }]>`
    select pg_try_advisory_xact_lock(hashtextextended(${'credit-statement:' + s.statement_id}, 0)) as locked`;
  if (!locked) return 'busy';
  const api = stripe();
  const [{ account }] = await tx<[{ account: BillingAccount }]>`select private.billing_account_of(${s.organization_id}) as account`;
  const customer = await ensureCustomer(s.organization_id, account);
  const collection = s.payment_method ? 'charge_automatically' : 'send_invoice';
  const daysUntilDue = Math.max(1, Math.ceil((new Date(s.due_date).getTime() - Date.now()) / 86_400_000));
  const key = (part: string) => `credit-statement-${s.statement_id}-${part}`;

  let invoice: Stripe.Invoice = s.stripe_invoice_id
    ? await callStripe(() => api.invoices.retrieve(s.stripe_invoice_id!))
    : await callStripe(() =>
      api.invoices.create({
        customer,
        currency: s.currency,
        collection_method: collection,
        ...(collection === 'send_invoice' ? { days_until_due: daysUntilDue } : { default_payment_method: s.payment_method! }),
        auto_advance: false,
        pending_invoice_items_behavior: 'exclude',
        description: `Credit account statement ${day(new Date(s.period_start))} to ${day(new Date(s.period_end))}`,
        metadata: { credit_statement_id: s.statement_id, organization_id: s.organization_id },
      }, { idempotencyKey: key('invoice') })
    );
  // Remembered at once, outside this run's transaction: a crash later still leaves it found.
  await withServiceRole((own) => own`select private.record_statement_invoice(${s.statement_id}, ${invoice.id!})`);

  if (invoice.status === 'draft') {
    const lines = await tx<Line[]>`select * from private.credit_statement_lines(${s.statement_id})`;
    const present = new Set(
      (await callStripe(() => api.invoiceItems.list({ invoice: invoice.id!, limit: 100 }))).data.map((item) => item.metadata?.line),
    );
    for (const line of lines) {
      if (present.has(String(line.line))) continue;
      await callStripe(() =>
        api.invoiceItems.create({
          customer,
          invoice: invoice.id!,
          amount: Number(line.amount),
          currency: s.currency,
          description: line.description,
          metadata: { credit_statement_id: s.statement_id, line: String(line.line) },
        }, { idempotencyKey: key(`line-${line.line}`) })
      );
    }
    if (FAULT === 'after_items') throw new Error('credit-statements-bill: stopped after the items (CREDIT_STATEMENTS_FAULT)');
    invoice = await callStripe(() =>
      api.invoices.finalizeInvoice(invoice.id!, { auto_advance: collection === 'charge_automatically' }, { idempotencyKey: key('finalize') })
    );
  }
  if (collection === 'charge_automatically' && invoice.status === 'open') {
    // A declined card is an answer, not a failure to bill: stripe-webhook records the failed payment.
    try {
      invoice = await api.invoices.pay(invoice.id!, {}, { idempotencyKey: key('pay') });
    } catch (err) {
      if (!(err instanceof Stripe.errors.StripeCardError)) throw err;
    }
  } else if (collection === 'send_invoice' && invoice.status === 'open') {
    await callStripe(() => api.invoices.sendInvoice(invoice.id!, {}, { idempotencyKey: key('send') }));
  }
  await tx`select private.record_statement_billed(${s.statement_id}, ${collection}, ${invoice.hosted_invoice_url ?? null})`;
  return 'billed';
}

export const handler = createHandler(async (req, { log }) => {
  await requireServiceRole(req);
  const pending = await withServiceRole((tx) => tx<Pending[]>`select * from private.statements_to_bill(${BATCH})`);
  const billed: string[] = [];
  const failed: string[] = [];
  for (const statement of pending) {
    try {
      const outcome = await withServiceRole((tx) => bill(tx, statement));
      if (outcome === 'billed') billed.push(statement.statement_id);
    } catch (err) {
      failed.push(statement.statement_id);
      const message = (err as Error).message;
      await withServiceRole((tx) => tx`select private.record_statement_bill_failure(${statement.statement_id}, ${message})`);
      log.warn('statement not billed', { statement_id: statement.statement_id, error: message });
    }
  }
  return json({ billed, failed });
}, { name: 'credit-statements-bill', methods: ['POST'] });

if (import.meta.main) Deno.serve(handler);
