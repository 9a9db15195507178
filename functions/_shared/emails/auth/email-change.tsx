// Supabase Auth's email change confirmation (Send Email Hook, email_action_type `email_change`).
import React from 'react';
import { z } from 'zod';
import { link, otpCode } from '../fields.ts';
import { EmailLayout, type LayoutOptions } from '../layout.tsx';
import { Action, Code, Note, Paragraph, Title } from '../ui.tsx';

export const schema = z.object({
  confirmUrl: link,
  newEmail: z.email(),
  code: otpCode,
});
export type Props = z.infer<typeof schema>;

export const sample: Props = {
  confirmUrl:
    'https://project.supabase.co/auth/v1/verify?token=pkce_77c1e3&type=email_change&redirect_to=https%3A%2F%2Fapp.example.com',
  newEmail: 'bruno.costa@northwind.example',
  code: '664020',
};

export function subject(): string {
  return 'Confirm your new email address';
}

export function Component({ confirmUrl, newEmail, code, unsubscribeUrl }: Props & LayoutOptions) {
  return (
    <EmailLayout organizationName={null} preview={`Change your email address to ${newEmail}.`} unsubscribeUrl={unsubscribeUrl}>
      <Title>Confirm your new email address</Title>
      <Paragraph>Confirm that you want to change the email address of your account to {newEmail}.</Paragraph>
      <Action href={confirmUrl}>Confirm the change</Action>
      <Paragraph>Or enter this code where you asked for the change:</Paragraph>
      <Code code={code} />
      <Note>
        If you did not ask for this change, reset your password right away: someone else may be signed in to your
        account.
      </Note>
    </EmailLayout>
  );
}
