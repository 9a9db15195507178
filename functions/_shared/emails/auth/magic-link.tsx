// Supabase Auth's passwordless sign-in (Send Email Hook, email_action_type `magiclink`).
import React from 'react';
import { z } from 'zod';
import { link, otpCode } from '../fields.ts';
import { EmailLayout, type LayoutOptions } from '../layout.tsx';
import { Action, Code, Note, Paragraph, Title } from '../ui.tsx';

export const schema = z.object({
  magicLinkUrl: link,
  code: otpCode,
});
export type Props = z.infer<typeof schema>;

export const sample: Props = {
  magicLinkUrl:
    'https://project.supabase.co/auth/v1/verify?token=pkce_51b7c2&type=magiclink&redirect_to=https%3A%2F%2Fapp.example.com',
  code: '130577',
};

export function subject(): string {
  return 'Your sign-in link';
}

export function Component({ magicLinkUrl, code, unsubscribeUrl }: Props & LayoutOptions) {
  return (
    <EmailLayout organizationName={null} preview={`Your code is ${code}.`} unsubscribeUrl={unsubscribeUrl}>
      <Title>Sign in</Title>
      <Paragraph>Use this link to sign in. It works once and expires shortly.</Paragraph>
      <Action href={magicLinkUrl}>Sign in</Action>
      <Paragraph>Or enter this code where you asked to sign in:</Paragraph>
      <Code code={code} />
      <Note>If you did not try to sign in, you can ignore this email: nobody can sign in without it.</Note>
    </EmailLayout>
  );
}
