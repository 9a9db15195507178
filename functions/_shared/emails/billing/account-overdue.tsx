// To an organization's billing contacts once an invoice is past due: how much, how late, and when
// the organization will be suspended.
import React from 'react';
import { z } from 'zod';
import { currency, link, minorAmount, organizationName, timestamp } from '../fields.ts';
import { formatCount, formatDate, formatDateTime, formatDays, formatMoney } from '../format.ts';
import { EmailLayout, type LayoutOptions } from '../layout.tsx';
import { Action, Facts, Paragraph, Title } from '../ui.tsx';

export const schema = z.object({
  organizationName,
  amount: minorAmount,
  currency,
  dueDate: timestamp,
  daysOverdue: z.int().positive(),
  /** When the organization will be suspended; null when no date is set. */
  suspendAt: timestamp.nullable(),
  payUrl: link,
});
export type Props = z.infer<typeof schema>;

export const sample: Props = {
  organizationName: 'Northwind Traders',
  amount: 150000,
  currency: 'jpy',
  dueDate: '2026-03-01T00:00:00Z',
  daysOverdue: 14,
  suspendAt: '2026-03-29T00:00:00Z',
  payUrl: 'https://invoice.stripe.com/i/acct_1Nv0FG/test_b3ZlcmR1ZQ',
};

export function subject({ organizationName, amount, currency, daysOverdue }: Props): string {
  return `${organizationName}: payment of ${formatMoney(amount, currency)} is ${formatDays(daysOverdue)} overdue`;
}

export function Component(props: Props & LayoutOptions) {
  const { organizationName, amount, currency, dueDate, daysOverdue, suspendAt, payUrl } = props;
  const owed = formatMoney(amount, currency);
  return (
    <EmailLayout
      organizationName={organizationName}
      preview={suspendAt ? `Pay before ${formatDate(suspendAt)} to avoid a suspension.` : `${owed} is overdue.`}
      unsubscribeUrl={props.unsubscribeUrl}
    >
      <Title>Your account is overdue</Title>
      <Paragraph>
        {organizationName} owes {owed}, due on {formatDate(dueDate)} and now {formatDays(daysOverdue)} overdue.
      </Paragraph>
      <Paragraph>
        {suspendAt
          ? `Unless it is paid, ${organizationName} will be suspended on ${formatDateTime(suspendAt)}.`
          : `Please pay as soon as possible to keep ${organizationName} running.`}
      </Paragraph>
      <Facts
        rows={[
          ['Amount overdue', owed],
          ['Was due on', formatDate(dueDate)],
          ['Days overdue', formatCount(daysOverdue)],
          ['Suspension on', suspendAt ? formatDateTime(suspendAt) : null],
        ]}
      />
      <Action href={payUrl}>Pay now</Action>
    </EmailLayout>
  );
}
