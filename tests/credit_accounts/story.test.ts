// The credit account story through the fake Stripe: an organization on premium with a credit
// account overdraws its ai pool, the overage is charged to the account, the statement is billed
// and paid through Stripe (once, even when billing runs twice or crashes midway); a later
// statement goes unpaid, the account is reminded, marked overdue, suspended and, once paid, active
// again with its limit lowered by the rules for paying late.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SERVICE_ROLE_KEY } from '../../scripts/lib/config.mjs';
import { backendFor } from '../support/clients.ts';
import { sql } from '../support/db.ts';
import { startGateway, type Gateway } from '../support/gateway.ts';
import { billingFor, createTeam, eventually, subscribe, useBilling, type Team } from '../billing/support.ts';

const b = useBilling();

async function billStatements(gatewayUrl: string): Promise<{ billed: string[]; failed: string[] }> {
  const res = await fetch(`${gatewayUrl}/functions/v1/credit-statements-bill`, {
    method: 'POST',
    headers: { authorization: `Bearer ${SERVICE_ROLE_KEY}`, 'content-type': 'application/json' },
    body: '{}',
  });
  expect(res.status).toBe(200);
  return res.json();
}

const statementInvoices = (statementId: string) =>
  b.fake.events({ type: 'invoice.created' }).map((e) => e.data.object as any).filter((i) => i.metadata?.credit_statement_id === statementId);

describe('a credit account through its statements', () => {
  let team: Team;
  let crashing: Gateway;

  beforeAll(async () => {
    crashing = await startGateway({
      STRIPE_API_BASE: b.fake.url,
      STRIPE_SECRET_KEY: b.fake.secretKey,
      STRIPE_WEBHOOK_SECRET: b.fake.webhookSecret,
      CREDIT_STATEMENTS_FAULT: 'after_items',
    });
  }, 90_000);
  afterAll(async () => {
    await crashing?.stop();
  });

  it('charges overage beyond the ai pool to the account', async () => {
    team = await createTeam('Account Co');
    await subscribe(b, team);
    await sql`select public.open_credit_account(${team.organizationId}, 5000, 'Approved for the story', 'eur', 1, 14)`;
    // The billing member saves a card and puts the account on it.
    const billing = billingFor(team.billing, b.gateway);
    const intent = await billing.setupIntent(team.organizationId);
    const card = b.fake.confirmSetupIntent(intent.id, 'succeeded', 'visa').payment_method as string;
    await b.fake.flush();
    await eventually(() => billing.paymentMethods(team.organizationId), (m) => m.some((x) => x.stripe_payment_method_id === card));
    expect((await billing.updateCreditAccount(team.organizationId, { paymentMethodId: card })).stripe_payment_method_id).toBe(card);

    const credits = backendFor(team.member, b.gateway.url).credits;
    expect(await credits.consume({ organizationId: team.organizationId, action: 'ai_chat', quantity: 1500 })).toMatchObject({ success: true });
    const over = await credits.consume({ organizationId: team.organizationId, action: 'ai_chat', quantity: 200, idempotencyKey: 'story-overage' });
    expect(over).toMatchObject({ success: true, overage: { ai: 200 } });
    // Retried: the same answer, charged once.
    expect(await credits.consume({ organizationId: team.organizationId, action: 'ai_chat', quantity: 200, idempotencyKey: 'story-overage' }))
      .toMatchObject({ overage: { ai: 200 } });
    const details = await billing.creditAccount(team.organizationId);
    expect(details?.account).toMatchObject({ amount_owed: 400, available_credit: 4600, status: 'active' });
    expect(details?.recent[0]).toMatchObject({ type: 'charge', amount: 400, source_type: 'overage' });
    // Plain members see no account.
    expect(await billingFor(team.member, b.gateway).creditAccount(team.organizationId)).toBeNull();
  });

  it('bills the statement once through Stripe, even after a crash midway and a second run', async () => {
    await sql`select private.close_credit_statements('2027-01-01 00:10+00')`;
    const [statement] = await sql`select id, total, status from public.credit_statements where organization_id = ${team.organizationId}`;
    expect(statement).toMatchObject({ total: '400', status: 'pending' });

    const crashed = await billStatements(crashing.url);
    expect(crashed.failed).toContain(statement.id);
    const [midway] = await sql`select status, stripe_invoice_id, bill_attempts from public.credit_statements where id = ${statement.id}`;
    expect(midway).toMatchObject({ status: 'pending', bill_attempts: 1 });
    expect(midway.stripe_invoice_id).toMatch(/^in_/);

    const done = await billStatements(b.gateway.url);
    expect(done.billed).toContain(statement.id);
    expect((await billStatements(b.gateway.url)).billed).not.toContain(statement.id);
    await b.fake.flush();

    const invoices = statementInvoices(statement.id);
    expect(invoices).toHaveLength(1);
    const invoice = b.fake.get(invoices[0].id)!;
    expect(invoice).toMatchObject({ status: 'paid', amount_paid: 400, collection_method: 'charge_automatically' });
    expect(invoice.lines.data.map((l: any) => [l.amount, l.description])).toEqual([[400, 'AI overage']]);

    const paid = await eventually(() => billingFor(team.owner, b.gateway).creditStatements(team.organizationId), (s) => s[0]?.status === 'paid');
    expect(paid[0].stripe_invoice_id).toBe(invoice.id);
    const details = await billingFor(team.owner, b.gateway).creditAccount(team.organizationId);
    expect(details?.account).toMatchObject({ amount_owed: 0, on_time_streak: 1 });
    expect(details?.recent[0]).toMatchObject({ type: 'payment', amount: -400, source_type: 'statement' });
  });

  it('reminds, marks overdue and suspends an account whose statement goes unpaid; paid late, it is active again with a lower limit', async () => {
    // The account moves to a card that declines.
    const billing = billingFor(team.billing, b.gateway);
    const intent = await billing.setupIntent(team.organizationId);
    const failing = b.fake.confirmSetupIntent(intent.id, 'succeeded', 'chargeCustomerFail').payment_method as string;
    await b.fake.flush();
    await eventually(() => billing.paymentMethods(team.organizationId), (m) => m.some((x) => x.stripe_payment_method_id === failing));
    await billing.updateCreditAccount(team.organizationId, { paymentMethodId: failing });
    const credits = backendFor(team.member, b.gateway.url).credits;
    expect(await credits.consume({ organizationId: team.organizationId, action: 'ai_chat', quantity: 100 })).toMatchObject({ overage: { ai: 100 } });

    await sql`select private.close_credit_statements('2027-02-01 00:10+00')`;
    const [statement] = await sql`select id, due_date from public.credit_statements
      where organization_id = ${team.organizationId} and status = 'pending'`;
    expect((await billStatements(b.gateway.url)).billed).toContain(statement.id);
    await b.fake.flush();
    await eventually(async () => (await sql`select status from public.credit_statements where id = ${statement.id}`)[0].status,
      (status) => status === 'failed');

    await sql`select private.advance_credit_dunning('2027-02-13 00:00+00')`;
    await sql`select private.advance_credit_dunning('2027-02-16 00:00+00')`;
    expect((await billing.creditAccount(team.organizationId))?.account.status).toBe('active');
    await sql`select private.advance_credit_dunning('2027-02-22 01:00+00')`;
    expect((await billing.creditAccount(team.organizationId))?.account.status).toBe('suspended');
    expect(await credits.consume({ organizationId: team.organizationId, action: 'ai_chat', quantity: 1 }))
      .toMatchObject({ success: false, error: 'insufficient_credits' });
    await sql`select private.email_from_events(100000)`;
    const mail = await sql<{ template: string; recipient: string }[]>`
      select template, recipient from private.email_messages
      where organization_id = ${team.organizationId} and template in ('payment_reminder', 'account_overdue') order by template, recipient`;
    expect(mail.map((m) => m.template)).toEqual(['account_overdue', 'account_overdue', 'payment_reminder', 'payment_reminder']);
    expect(new Set(mail.map((m) => m.recipient))).toEqual(new Set([team.owner.email, team.billing.email].map((e) => e.toLowerCase())));

    // Paid from the hosted invoice with a good card, after the due date.
    const [{ stripe_invoice_id: invoiceId }] = await sql`select stripe_invoice_id from public.credit_statements where id = ${statement.id}`;
    b.fake.advanceClock(Math.ceil((new Date(statement.due_date).getTime() - b.fake.now() * 1000) / 1000) + 86400);
    b.fake.payInvoice(invoiceId, { card: 'visa' });
    await b.fake.flush();
    const after = await eventually(() => billing.creditAccount(team.organizationId), (d) => d?.account.status === 'active');
    expect(after?.account).toMatchObject({ amount_owed: 0, credit_limit: 3750, on_time_streak: 0 });
    const page = await billing.creditTransactions(team.organizationId, { types: ['limit_change', 'status_change'] });
    expect(page.transactions.map((t) => t.description)).toEqual(expect.arrayContaining([
      'A statement was paid late: the limit falls by 25%',
      'The overdue statements are paid',
      'A statement is unpaid 7 days after its due date',
    ]));
    // Pages of the history, newest first, without gaps.
    const first = await billing.creditTransactions(team.organizationId, { limit: 3 });
    const rest = await billing.creditTransactions(team.organizationId, { limit: 200, after: first.next });
    const all = await billing.creditTransactions(team.organizationId, { limit: 200 });
    expect([...first.transactions, ...rest.transactions].map((t) => t.id)).toEqual(all.transactions.map((t) => t.id));
  });
});
