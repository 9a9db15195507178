// The whole story through the fake Stripe, the billing functions and the webhook: an
// organization subscribes to premium and its paid invoice brings 1,500 ai credits, once; a
// renewal grants the next period once; a failed payment mails the billing members and, after the
// grace period, suspends consumption but for purchased credits; a credit pack adds its credits;
// paying restores the organization; a refund takes back what is unused; the invoice's PDF lands
// in the private store.
import { describe, expect, it } from 'vitest';
import { renderEmail } from '../../functions/_shared/emails/index.ts';
import { SERVICE_ROLE_KEY } from '../../scripts/lib/config.mjs';
import { backendFor } from '../support/clients.ts';
import { sql } from '../support/db.ts';
import { balances, billingFor, createTeam, eventually, RETURN, subscribe, useBilling, type Team } from './support.ts';

const b = useBilling();

describe('an organization on premium, through Stripe', () => {
  let team: Team;
  let subscriptionId: string;
  let packCharge: string;

  it('subscribes: the paid invoice brings the premium allocation once', async () => {
    team = await createTeam();
    expect((await balances(team.organizationId)).ai).toBe(200);
    ({ subscriptionId } = await subscribe(b, team));
    expect(await balances(team.organizationId)).toMatchObject({ ai: 1500, whatsapp: 1200, email: 20000, sms: 500 });
    const status = await billingFor(team.billing, b.gateway).status(team.organizationId);
    expect(status).toMatchObject({ standing: 'good', subscription: { status: 'active', plan_key: 'premium', stripe_subscription_id: subscriptionId } });
    const [{ plan_key: plan }] = await sql`select plan_key from public.organization_plans where organization_id = ${team.organizationId}`;
    expect(plan).toBe('premium');
    // Every event again: nothing changes.
    for (const event of b.fake.events({ objectId: subscriptionId })) await b.fake.deliver(event);
    for (const event of b.fake.events({ type: 'invoice.paid' })) await b.fake.deliver(event);
    expect((await balances(team.organizationId)).ai).toBe(1500);
    const [{ grants }] = await sql`select count(*)::int as grants from public.credit_grants
      where organization_id = ${team.organizationId} and kind = 'plan_allocation' and pool_key = 'ai' and amount = 1500`;
    expect(grants).toBe(1);
  });

  it('renews: the next period is granted once', async () => {
    // A member spends some of this period's credits first; the next period starts afresh.
    const spend = await backendFor(team.member, b.gateway.url).credits.consume({ organizationId: team.organizationId, action: 'ai_chat', quantity: 100 });
    expect(spend.success).toBe(true);
    const renewal = b.fake.renewSubscription(subscriptionId, { outcome: 'paid' });
    await b.fake.flush();
    expect(renewal.invoice?.status).toBe('paid');
    expect((await balances(team.organizationId)).ai).toBe(1500);
    await b.fake.deliver(b.fake.events({ type: 'invoice.paid' }).at(-1)!, { twice: true });
    const [{ grants }] = await sql`select count(*)::int as grants from private.billing_invoice_grants where organization_id = ${team.organizationId}`;
    expect(grants).toBe(2);
    const [{ period_start: start }] = await sql`select period_start from public.organization_plans where organization_id = ${team.organizationId}`;
    expect(start.getTime() / 1000).toBe(b.fake.get(subscriptionId)!.items.data[0].current_period_start);
  });

  it('a failed payment mails the owner and billing members and puts the organization past due', async () => {
    const renewal = b.fake.renewSubscription(subscriptionId, { outcome: 'failed' });
    await b.fake.flush();
    expect(renewal.invoice?.status).toBe('open');
    const account = await eventually(
      () => billingFor(team.owner, b.gateway).status(team.organizationId),
      (s) => s.standing === 'past_due',
    );
    expect(account.account?.past_due_since).not.toBeNull();
    // The email consumer turns the event into mail: to the owner and the billing member only.
    await sql`select private.email_from_events(100000)`;
    const mail = await sql<{ recipient: string; props: unknown }[]>`
      select recipient, props from private.email_messages where template = 'payment_failed' and organization_id = ${team.organizationId} order by recipient`;
    expect(mail.map((m) => m.recipient).sort()).toEqual([team.billing.email, team.owner.email].map((e) => e.toLowerCase()).sort());
    // The template renders them: the amount and the invoice's page are in the mail.
    const rendered = await renderEmail('payment_failed', mail[0].props as Record<string, unknown>);
    expect(rendered.subject).toContain('Billing Co');
    expect(rendered.html).toContain('/invoices/');
    // Consumption goes on during the grace period.
    expect((await balances(team.organizationId)).ai).toBe(1500);
  });

  it('a credit pack adds its credits, drawn last and kept through a suspension', async () => {
    const session = await billingFor(team.admin, b.gateway).checkout({ organizationId: team.organizationId, pack: 'ai_1000', ...RETURN });
    const result = b.fake.completeCheckout(session.id, 'paid');
    await b.fake.flush();
    packCharge = b.fake.get(result.session.payment_intent as string)!.latest_charge as string;
    expect((await balances(team.organizationId)).ai).toBe(2500);
    await b.fake.deliver(b.fake.events({ type: 'checkout.session.completed', objectId: session.id })[0], { twice: true });
    expect((await balances(team.organizationId)).ai).toBe(2500);
  });

  it('after the grace period consumption is suspended, except from purchased credits', async () => {
    const [{ suspended }] = await sql`select private.advance_dunning(now() + interval '8 days') as suspended`;
    expect(suspended).toBeGreaterThanOrEqual(1);
    expect((await billingFor(team.owner, b.gateway).status(team.organizationId)).standing).toBe('suspended');
    expect((await balances(team.organizationId)).ai).toBe(1000);
    const member = backendFor(team.member, b.gateway.url).credits;
    expect(await member.consume({ organizationId: team.organizationId, action: 'ai_chat', quantity: 400 })).toMatchObject({ success: true });
    expect(await member.consume({ organizationId: team.organizationId, action: 'ai_chat', quantity: 601 }))
      .toMatchObject({ success: false, error: 'insufficient_credits', available: 600 });
    const [{ events }] = await sql`select array_agg(type order by id) as events from private.domain_events
      where organization_id = ${team.organizationId} and type in ('billing.payment_failed', 'billing.suspended', 'billing.restored')`;
    expect(events).toEqual(['billing.payment_failed', 'billing.suspended']);
    // The owner and billing member hear of it.
    await sql`select private.email_from_events(100000)`;
    const overdue = await sql<{ recipient: string; props: unknown }[]>`
      select recipient, props from private.email_messages where template = 'account_overdue' and organization_id = ${team.organizationId}`;
    expect(overdue).toHaveLength(2);
    expect((await renderEmail('account_overdue', overdue[0].props)).subject).toContain('Billing Co');
  });

  it('paying the invoice restores the organization', async () => {
    const [{ stripe_invoice_id: invoiceId }] = await sql`
      select stripe_invoice_id from public.invoices where organization_id = ${team.organizationId} and status = 'open'`;
    b.fake.payInvoice(invoiceId);
    await b.fake.flush();
    const status = await eventually(() => billingFor(team.owner, b.gateway).status(team.organizationId), (s) => s.standing === 'good');
    expect(status.subscription?.status).toBe('active');
    // The paid period's allocation and the 600 purchased credits left.
    expect((await balances(team.organizationId)).ai).toBe(2100);
  });

  it('a refund takes back what is unused of the pack, never more', async () => {
    b.fake.refund(packCharge, 950); // half the pack's price: 500 credits' worth
    await b.fake.flush();
    expect((await balances(team.organizationId)).ai).toBe(1600);
    b.fake.refund(packCharge); // the rest: all 1000 credits' worth, but only 100 more are left of it
    await b.fake.flush();
    expect((await balances(team.organizationId)).ai).toBe(1500);
    const [purchase] = await sql`select credits_revoked, refunded_amount from private.credit_pack_purchases
      where organization_id = ${team.organizationId}`;
    expect(purchase).toEqual({ credits_revoked: '600', refunded_amount: '1900' });
  });

  it('keeps each paid invoice\'s PDF in the private store, readable by billing managers', async () => {
    // Other suites' invoices may be waiting too (their fakes gone, so their copies fail): the
    // job runs until ours are done, as its schedule would.
    await eventually(async () => {
      const res = await fetch(`${b.gateway.url}/functions/v1/billing-invoice-pdfs`, {
        method: 'POST',
        headers: { authorization: `Bearer ${SERVICE_ROLE_KEY}`, 'content-type': 'application/json' },
        body: '{}',
      });
      expect(res.status).toBe(200);
      await res.arrayBuffer();
      return billingFor(team.billing, b.gateway).invoices(team.organizationId);
    }, (invoices) => invoices.filter((i) => i.status === 'paid').every((i) => i.pdf_file_id), 30_000);
    const invoices = await billingFor(team.billing, b.gateway).invoices(team.organizationId);
    const paid = invoices.filter((i) => i.status === 'paid');
    expect(paid.length).toBe(3);
    expect(paid.every((i) => i.pdf_file_id)).toBe(true);
    const files = backendFor(team.billing, b.gateway.url).files;
    const pdf = new Uint8Array(await (await files.download(paid[0].pdf_file_id!)).arrayBuffer());
    expect(new TextDecoder().decode(pdf.subarray(0, 5))).toBe('%PDF-');
    expect(await files.get(paid[0].pdf_file_id!)).toMatchObject({ context: 'invoice', store: 'private', owner_table: 'public.invoices' });
    // Plain members see no invoices.
    expect(await billingFor(team.member, b.gateway).invoices(team.organizationId)).toEqual([]);
  });

  it('canceling in the portal puts the organization back on starter at the period\'s end', async () => {
    const portal = await billingFor(team.owner, b.gateway).portal(team.organizationId, 'http://127.0.0.1:3000/billing');
    expect(portal.url).toMatch(/\/portal\//);
    b.fake.portalAction(portal.url.split('/').at(-1)!, { action: 'cancel_at_period_end', subscription: subscriptionId });
    await b.fake.flush();
    await eventually(() => billingFor(team.owner, b.gateway).status(team.organizationId), (s) => s.subscription?.cancel_at_period_end === true);
    b.fake.renewSubscription(subscriptionId);
    await b.fake.flush();
    const status = await eventually(() => billingFor(team.owner, b.gateway).status(team.organizationId), (s) => s.subscription?.status === 'canceled');
    expect(status.subscription?.ended_at).not.toBeNull();
    const [{ plan_key: plan }] = await sql`select plan_key from public.organization_plans where organization_id = ${team.organizationId}`;
    expect(plan).toBe('starter');
  });
});
