// To a user who signed up or joined an organization: where to start.
import React from 'react';
import { z } from 'zod';
import { link, organizationName, personName } from '../fields.ts';
import { EmailLayout, type LayoutOptions } from '../layout.tsx';
import { Action, Paragraph, Title } from '../ui.tsx';

export const schema = z.object({
  /** Null when the user has no organization yet. */
  organizationName: organizationName.nullable(),
  userName: personName.nullable(),
  dashboardUrl: link,
});
export type Props = z.infer<typeof schema>;

export const sample: Props = {
  organizationName: 'Northwind Traders',
  userName: 'Bruno Costa',
  dashboardUrl: 'https://app.example.com/northwind/dashboard',
};

export function subject({ organizationName }: Props): string {
  return organizationName ? `Welcome to ${organizationName}` : 'Welcome to your new account';
}

export function Component(props: Props & LayoutOptions) {
  const { organizationName, userName, dashboardUrl } = props;
  return (
    <EmailLayout organizationName={organizationName} preview="Your account is ready." unsubscribeUrl={props.unsubscribeUrl}>
      <Title>{userName ? `Welcome, ${userName}` : 'Welcome'}</Title>
      <Paragraph>
        {organizationName ? `You are all set: ${organizationName} is ready for you.` : 'You are all set: your account is ready.'}
      </Paragraph>
      <Paragraph>Your dashboard is the place to start.</Paragraph>
      <Action href={dashboardUrl}>Open your dashboard</Action>
    </EmailLayout>
  );
}
