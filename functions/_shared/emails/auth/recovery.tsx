// Supabase Auth's password reset (Send Email Hook, email_action_type `recovery`).
import React from 'react';
import { z } from 'zod';
import { link, otpCode } from '../fields.ts';
import { EmailLayout, type LayoutOptions } from '../layout.tsx';
import { Action, Code, Note, Paragraph, Title } from '../ui.tsx';

export const schema = z.object({
  resetUrl: link,
  code: otpCode,
});
export type Props = z.infer<typeof schema>;

export const sample: Props = {
  resetUrl:
    'https://project.supabase.co/auth/v1/verify?token=pkce_e0a4d9&type=recovery&redirect_to=https%3A%2F%2Fapp.example.com%2Freset',
  code: '905182',
};

export function subject(): string {
  return 'Reset your password';
}

export function Component({ resetUrl, code, unsubscribeUrl }: Props & LayoutOptions) {
  return (
    <EmailLayout organizationName={null} preview={`Your code is ${code}.`} unsubscribeUrl={unsubscribeUrl}>
      <Title>Reset your password</Title>
      <Paragraph>Someone asked to reset the password of your account. If it was you, choose a new one:</Paragraph>
      <Action href={resetUrl}>Choose a new password</Action>
      <Paragraph>Or enter this code where you asked for the reset:</Paragraph>
      <Code code={code} />
      <Note>If you did not ask for it, you can ignore this email: your password stays as it is.</Note>
    </EmailLayout>
  );
}
