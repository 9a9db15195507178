// To an organization's billing contacts before an invoice falls due.
import React from 'react';
import { z } from 'zod';
import { currency, invoiceNumber, link, minorAmount, organizationName, timestamp } from '../fields.ts';
import { formatDate, formatMoney } from '../format.ts';
import { EmailLayout, type LayoutOptions } from '../layout.tsx';
import { Action, Facts, Note, Paragraph, Title } from '../ui.tsx';

export const schema = z.object({
  organizationName,
  amount: minorAmount,
  currency,
  dueDate: timestamp,
  invoiceNumber: invoiceNumber.nullable(),
  payUrl: link,
});
export type Props = z.infer<typeof schema>;

export const sample: Props = {
  organizationName: 'Northwind Traders',
  amount: 123456,
  currency: 'usd',
  dueDate: '2026-03-31T00:00:00Z',
  invoiceNumber: 'NW-2026-0044',
  payUrl: 'https://invoice.stripe.com/i/acct_1Nv0FG/test_YWNjdF8xTnYw',
};

export function subject({ organizationName, amount, currency, dueDate }: Props): string {
  return `Reminder: ${formatMoney(amount, currency)} due on ${formatDate(dueDate)} for ${organizationName}`;
}

export function Component(props: Props & LayoutOptions) {
  const { organizationName, amount, currency, dueDate, invoiceNumber, payUrl } = props;
  const due = formatMoney(amount, currency);
  return (
    <EmailLayout
      organizationName={organizationName}
      preview={`${due} due on ${formatDate(dueDate)}.`}
      unsubscribeUrl={props.unsubscribeUrl}
    >
      <Title>Payment reminder</Title>
      <Paragraph>
        {invoiceNumber ? `Invoice ${invoiceNumber}` : 'An invoice'} of {organizationName} for {due} is due on{' '}
        {formatDate(dueDate)}.
      </Paragraph>
      <Facts
        rows={[
          ['Amount due', due],
          ['Due on', formatDate(dueDate)],
          ['Invoice', invoiceNumber],
        ]}
      />
      <Action href={payUrl}>Pay the invoice</Action>
      <Note>If you have paid already, thank you: you can ignore this reminder.</Note>
    </EmailLayout>
  );
}
