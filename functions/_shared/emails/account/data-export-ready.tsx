// To the user who asked for a data export (GDPR access and portability): the download link, and
// until when it works.
import React from 'react';
import { z } from 'zod';
import { link, organizationName, timestamp } from '../fields.ts';
import { formatDateTime } from '../format.ts';
import { EmailLayout, type LayoutOptions } from '../layout.tsx';
import { Action, Note, Paragraph, Title } from '../ui.tsx';

export const schema = z.object({
  /** The organization exported; null for an export of the user's own personal data. */
  organizationName: organizationName.nullable(),
  downloadUrl: link,
  expiresAt: timestamp,
});
export type Props = z.infer<typeof schema>;

export const sample: Props = {
  organizationName: 'Northwind Traders',
  downloadUrl: 'https://files.example.com/exports/2f1c7a9e.zip?expires=1774431000&signature=c0ffee',
  expiresAt: '2026-03-25T09:30:00Z',
};

export function subject({ organizationName }: Props): string {
  return organizationName ? `Your ${organizationName} data export is ready` : 'Your data export is ready';
}

export function Component(props: Props & LayoutOptions) {
  const { organizationName, downloadUrl, expiresAt } = props;
  return (
    <EmailLayout
      organizationName={organizationName}
      preview={`Download it before ${formatDateTime(expiresAt)}.`}
      unsubscribeUrl={props.unsubscribeUrl}
    >
      <Title>Your data export is ready</Title>
      <Paragraph>
        {organizationName
          ? `The export of the data of ${organizationName} you asked for is ready to download.`
          : 'The export of your personal data you asked for is ready to download.'}
      </Paragraph>
      <Action href={downloadUrl}>Download the export</Action>
      <Note>
        The link works until {formatDateTime(expiresAt)}; after that, ask for a new export. If you did not ask for
        one, reset your password: someone else may be signed in to your account.
      </Note>
    </EmailLayout>
  );
}
