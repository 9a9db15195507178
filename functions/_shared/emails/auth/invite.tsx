// Supabase Auth's invitation to create an account (Send Email Hook, email_action_type `invite`).
import React from 'react';
import { z } from 'zod';
import { link } from '../fields.ts';
import { EmailLayout, type LayoutOptions } from '../layout.tsx';
import { Action, Note, Paragraph, Title } from '../ui.tsx';

export const schema = z.object({
  acceptUrl: link,
});
export type Props = z.infer<typeof schema>;

export const sample: Props = {
  acceptUrl:
    'https://project.supabase.co/auth/v1/verify?token=pkce_3a9f60&type=invite&redirect_to=https%3A%2F%2Fapp.example.com',
};

export function subject(): string {
  return 'You have been invited';
}

export function Component({ acceptUrl, unsubscribeUrl }: Props & LayoutOptions) {
  return (
    <EmailLayout organizationName={null} preview="Accept the invitation to set up your account." unsubscribeUrl={unsubscribeUrl}>
      <Title>You have been invited</Title>
      <Paragraph>You have been invited to create an account. Accept the invitation to set it up.</Paragraph>
      <Action href={acceptUrl}>Accept the invitation</Action>
      <Note>If you were not expecting this invitation, you can ignore this email.</Note>
    </EmailLayout>
  );
}
