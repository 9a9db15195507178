// To the owners of an organization whose deletion is scheduled: when, how to keep a copy, how to
// stop it.
import React from 'react';
import { z } from 'zod';
import { link, organizationName, timestamp } from '../fields.ts';
import { formatDate, formatDateTime } from '../format.ts';
import { EmailLayout, type LayoutOptions } from '../layout.tsx';
import { Action, Paragraph, Title } from '../ui.tsx';

export const schema = z.object({
  organizationName,
  purgeAt: timestamp,
  /** Null when there is nothing to export or the reader may not export it. */
  exportUrl: link.nullable(),
  cancelUrl: link,
});
export type Props = z.infer<typeof schema>;

export const sample: Props = {
  organizationName: 'Northwind Traders',
  purgeAt: '2026-04-01T00:00:00Z',
  exportUrl: 'https://app.example.com/northwind/settings/export',
  cancelUrl: 'https://app.example.com/northwind/settings/deletion?cancel=1',
};

export function subject({ organizationName, purgeAt }: Props): string {
  return `${organizationName}: data deletion scheduled for ${formatDate(purgeAt)}`;
}

export function Component(props: Props & LayoutOptions) {
  const { organizationName, purgeAt, exportUrl, cancelUrl } = props;
  return (
    <EmailLayout
      organizationName={organizationName}
      preview={`Deletion on ${formatDateTime(purgeAt)}. It cannot be undone.`}
      unsubscribeUrl={props.unsubscribeUrl}
    >
      <Title>The data of {organizationName} will be deleted</Title>
      <Paragraph>
        All data of {organizationName} is scheduled to be permanently deleted on {formatDateTime(purgeAt)}. Once
        deleted, it cannot be recovered.
      </Paragraph>
      {exportUrl
        ? (
          <>
            <Paragraph>To keep a copy, download an export before then.</Paragraph>
            <Action href={exportUrl}>Export the data</Action>
          </>
        )
        : null}
      <Paragraph>If this is a mistake, cancel the deletion before then.</Paragraph>
      <Action href={cancelUrl}>Cancel the deletion</Action>
    </EmailLayout>
  );
}
