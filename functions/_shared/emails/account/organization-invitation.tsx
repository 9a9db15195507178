// To someone a member invited (member.invited): who invites them, to which organization, in which
// role, until when the link works.
import React from 'react';
import { z } from 'zod';
import { link, organizationName, personName, timestamp } from '../fields.ts';
import { formatDateTime } from '../format.ts';
import { EmailLayout, type LayoutOptions } from '../layout.tsx';
import { Action, Note, Paragraph, Title } from '../ui.tsx';

export const schema = z.object({
  organizationName,
  /** Null when the inviter's profile has no name (or the service role invited). */
  inviterName: personName.nullable(),
  role: z.enum(['owner', 'admin', 'member', 'billing']),
  acceptUrl: link,
  expiresAt: timestamp,
});
export type Props = z.infer<typeof schema>;

export const sample: Props = {
  organizationName: 'Northwind Traders',
  inviterName: 'Alice Martin',
  role: 'admin',
  acceptUrl: 'https://app.example.com/invitations/accept?token=9f86d081884c7d65&source=email',
  expiresAt: '2026-03-21T09:30:00Z',
};

const ROLES: Record<Props['role'], string> = {
  owner: 'an owner',
  admin: 'an admin',
  member: 'a member',
  billing: 'a billing manager',
};

export function subject({ organizationName, inviterName }: Props): string {
  return inviterName
    ? `${inviterName} invited you to join ${organizationName}`
    : `You're invited to join ${organizationName}`;
}

export function Component(props: Props & LayoutOptions) {
  const { organizationName, inviterName, role, acceptUrl, expiresAt } = props;
  const invitation = `to join ${organizationName} as ${ROLES[role]}`;
  return (
    <EmailLayout
      organizationName={organizationName}
      preview={`Accept before ${formatDateTime(expiresAt)}.`}
      unsubscribeUrl={props.unsubscribeUrl}
    >
      <Title>Join {organizationName}</Title>
      <Paragraph>{inviterName ? `${inviterName} invited you ${invitation}.` : `You have been invited ${invitation}.`}</Paragraph>
      <Action href={acceptUrl}>Accept invitation</Action>
      <Note>
        The invitation expires on {formatDateTime(expiresAt)}. If you were not expecting it, you can ignore this email.
      </Note>
    </EmailLayout>
  );
}
