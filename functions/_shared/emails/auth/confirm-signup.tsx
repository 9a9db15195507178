// Supabase Auth's signup confirmation (Send Email Hook, email_action_type `signup`).
import React from 'react';
import { z } from 'zod';
import { link, otpCode } from '../fields.ts';
import { EmailLayout, type LayoutOptions } from '../layout.tsx';
import { Action, Code, Note, Paragraph, Title } from '../ui.tsx';

export const schema = z.object({
  confirmUrl: link,
  code: otpCode,
});
export type Props = z.infer<typeof schema>;

export const sample: Props = {
  confirmUrl:
    'https://project.supabase.co/auth/v1/verify?token=pkce_8d3f0a&type=signup&redirect_to=https%3A%2F%2Fapp.example.com',
  code: '482913',
};

export function subject(): string {
  return 'Confirm your email address';
}

export function Component({ confirmUrl, code, unsubscribeUrl }: Props & LayoutOptions) {
  return (
    <EmailLayout organizationName={null} preview={`Your code is ${code}.`} unsubscribeUrl={unsubscribeUrl}>
      <Title>Confirm your email address</Title>
      <Paragraph>Thanks for signing up. Confirm your email address to finish creating your account.</Paragraph>
      <Action href={confirmUrl}>Confirm my email address</Action>
      <Paragraph>Or enter this code where you signed up:</Paragraph>
      <Code code={code} />
      <Note>If you did not sign up, you can ignore this email: no account is created without the confirmation.</Note>
    </EmailLayout>
  );
}
