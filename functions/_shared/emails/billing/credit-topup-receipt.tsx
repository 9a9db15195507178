// To an organization's billing contacts after a credit purchase is paid: what was bought, for how
// much, when, and where the receipt is.
import React from 'react';
import { z } from 'zod';
import {
  creditCount,
  currency,
  invoiceNumber,
  link,
  minorAmount,
  organizationName,
  poolName,
  timestamp,
} from '../fields.ts';
import { formatCredits, formatDateTime, formatMoney } from '../format.ts';
import { EmailLayout, type LayoutOptions } from '../layout.tsx';
import { Action, Facts, Paragraph, Title } from '../ui.tsx';

export const schema = z.object({
  organizationName,
  poolName,
  credits: creditCount.positive(),
  amount: minorAmount,
  currency,
  invoiceNumber: invoiceNumber.nullable(),
  /** Stripe's hosted receipt, when there is one. */
  receiptUrl: link.nullable(),
  paidAt: timestamp,
});
export type Props = z.infer<typeof schema>;

export const sample: Props = {
  organizationName: 'Northwind Traders',
  poolName: 'AI',
  credits: 1000,
  amount: 1250,
  currency: 'eur',
  invoiceNumber: 'NW-2026-0042',
  receiptUrl: 'https://pay.stripe.com/receipts/acct_1Nv0FG/ch_3Pq/rcpt_QwErTy',
  paidAt: '2026-03-14T10:02:00Z',
};

export function subject({ organizationName, poolName, credits }: Props): string {
  return `Receipt for ${organizationName}: ${formatCredits(credits, poolName)}`;
}

export function Component(props: Props & LayoutOptions) {
  const { organizationName, poolName, credits, amount, currency, invoiceNumber, receiptUrl, paidAt } = props;
  const paid = formatMoney(amount, currency);
  return (
    <EmailLayout
      organizationName={organizationName}
      preview={`${paid} paid for ${formatCredits(credits, poolName)}.`}
      unsubscribeUrl={props.unsubscribeUrl}
    >
      <Title>Thank you for your purchase</Title>
      <Paragraph>
        We received the payment of {paid} for {organizationName}. The credits are in its {poolName} pool and ready to
        use.
      </Paragraph>
      <Facts
        rows={[
          ['Organization', organizationName],
          ['Credits', formatCredits(credits, poolName)],
          ['Amount paid', paid],
          ['Paid on', formatDateTime(paidAt)],
          ['Invoice', invoiceNumber],
        ]}
      />
      {receiptUrl ? <Action href={receiptUrl}>View the receipt</Action> : null}
    </EmailLayout>
  );
}
