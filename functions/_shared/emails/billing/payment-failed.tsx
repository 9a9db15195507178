// To an organization's billing contacts when Stripe could not charge an invoice: how much, which
// invoice, when it tries again, where to fix the payment method.
import React from 'react';
import { z } from 'zod';
import { currency, invoiceNumber, link, minorAmount, organizationName, timestamp } from '../fields.ts';
import { formatDateTime, formatMoney } from '../format.ts';
import { EmailLayout, type LayoutOptions } from '../layout.tsx';
import { Action, Facts, Paragraph, Title } from '../ui.tsx';

export const schema = z.object({
  organizationName,
  amount: minorAmount,
  currency,
  invoiceNumber,
  updatePaymentUrl: link,
  /** Stripe's next automatic attempt; null when it will not try again. */
  nextAttemptAt: timestamp.nullable(),
});
export type Props = z.infer<typeof schema>;

export const sample: Props = {
  organizationName: 'Northwind Traders',
  amount: 4900,
  currency: 'eur',
  invoiceNumber: 'NW-2026-0043',
  updatePaymentUrl: 'https://billing.stripe.com/p/session/test_YWNjdF8xTnYw',
  nextAttemptAt: '2026-03-17T10:00:00Z',
};

export function subject({ organizationName, amount, currency }: Props): string {
  return `Payment of ${formatMoney(amount, currency)} failed for ${organizationName}`;
}

export function Component(props: Props & LayoutOptions) {
  const { organizationName, amount, currency, invoiceNumber, updatePaymentUrl, nextAttemptAt } = props;
  const due = formatMoney(amount, currency);
  return (
    <EmailLayout
      organizationName={organizationName}
      preview={`Update the payment method to pay invoice ${invoiceNumber}.`}
      unsubscribeUrl={props.unsubscribeUrl}
    >
      <Title>Your payment failed</Title>
      <Paragraph>
        We could not charge {due} for invoice {invoiceNumber} of {organizationName}.
      </Paragraph>
      <Paragraph>
        {nextAttemptAt
          ? `We will try again on ${formatDateTime(nextAttemptAt)}. Update the payment method before then to avoid an interruption.`
          : 'We will not try again automatically: update the payment method and pay the invoice to avoid an interruption.'}
      </Paragraph>
      <Facts
        rows={[
          ['Amount due', due],
          ['Invoice', invoiceNumber],
          ['Next attempt', nextAttemptAt ? formatDateTime(nextAttemptAt) : null],
        ]}
      />
      <Action href={updatePaymentUrl}>Update the payment method</Action>
    </EmailLayout>
  );
}
