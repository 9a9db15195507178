// To the former owners of an organization once its data is gone: when, and what the law makes us keep.
import React from 'react';
import { z } from 'zod';
import { organizationName, timestamp } from '../fields.ts';
import { formatDateTime } from '../format.ts';
import { EmailLayout, type LayoutOptions } from '../layout.tsx';
import { Paragraph, Title } from '../ui.tsx';

export const schema = z.object({
  organizationName,
  purgedAt: timestamp,
});
export type Props = z.infer<typeof schema>;

export const sample: Props = {
  organizationName: 'Northwind Traders',
  purgedAt: '2026-04-01T00:12:00Z',
};

export function subject({ organizationName }: Props): string {
  return `${organizationName}: your data has been deleted`;
}

export function Component(props: Props & LayoutOptions) {
  const { organizationName, purgedAt } = props;
  return (
    <EmailLayout
      organizationName={organizationName}
      preview={`Deleted on ${formatDateTime(purgedAt)}.`}
      unsubscribeUrl={props.unsubscribeUrl}
    >
      <Title>The data of {organizationName} has been deleted</Title>
      <Paragraph>
        As scheduled, all data of {organizationName} was permanently deleted on {formatDateTime(purgedAt)}. It cannot
        be recovered.
      </Paragraph>
      <Paragraph>
        Records the law requires us to keep, such as invoices and payments, are kept only as long as it requires.
      </Paragraph>
    </EmailLayout>
  );
}
