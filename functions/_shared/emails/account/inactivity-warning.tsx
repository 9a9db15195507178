// To the owners of an organization nobody has used for a long time: its data will be deleted
// unless someone signs in before the date.
import React from 'react';
import { z } from 'zod';
import { link, organizationName, timestamp } from '../fields.ts';
import { formatDate, formatDateTime } from '../format.ts';
import { EmailLayout, type LayoutOptions } from '../layout.tsx';
import { Action, Paragraph, Title } from '../ui.tsx';

export const schema = z.object({
  organizationName,
  lastActiveAt: timestamp,
  purgeScheduledAt: timestamp,
  signInUrl: link,
});
export type Props = z.infer<typeof schema>;

export const sample: Props = {
  organizationName: 'Northwind Traders',
  lastActiveAt: '2025-03-02T16:05:00Z',
  purgeScheduledAt: '2026-04-01T00:00:00Z',
  signInUrl: 'https://app.example.com/login?next=%2Fnorthwind',
};

export function subject({ organizationName, purgeScheduledAt }: Props): string {
  return `Action needed: ${organizationName} will be deleted on ${formatDate(purgeScheduledAt)}`;
}

export function Component(props: Props & LayoutOptions) {
  const { organizationName, lastActiveAt, purgeScheduledAt, signInUrl } = props;
  return (
    <EmailLayout
      organizationName={organizationName}
      preview={`Sign in before ${formatDateTime(purgeScheduledAt)} to keep it.`}
      unsubscribeUrl={props.unsubscribeUrl}
    >
      <Title>{organizationName} will be deleted for inactivity</Title>
      <Paragraph>
        Nobody has used {organizationName} since {formatDate(lastActiveAt)}. We do not keep data nobody uses: all of
        its data will be permanently deleted on {formatDateTime(purgeScheduledAt)}.
      </Paragraph>
      <Paragraph>To keep it, sign in before then.</Paragraph>
      <Action href={signInUrl}>Sign in to keep {organizationName}</Action>
    </EmailLayout>
  );
}
