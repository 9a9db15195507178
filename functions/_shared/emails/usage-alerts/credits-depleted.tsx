// To an organization's owners and admins when a pool reaches zero (credits.depleted).
import React from 'react';
import { z } from 'zod';
import { link, organizationName, poolKey, poolName } from '../fields.ts';
import { EmailLayout, type LayoutOptions } from '../layout.tsx';
import { Action, Paragraph, Title } from '../ui.tsx';

export const schema = z.object({
  organizationName,
  /** The pool's key, for the sender (tags, links); the mail shows poolName. */
  pool: poolKey,
  poolName,
  topUpUrl: link,
});
export type Props = z.infer<typeof schema>;

export const sample: Props = {
  organizationName: 'Northwind Traders',
  pool: 'whatsapp',
  poolName: 'WhatsApp',
  topUpUrl: 'https://app.example.com/northwind/billing/credits?pool=whatsapp',
};

export function subject({ organizationName, poolName }: Props): string {
  return `${organizationName}: you are out of ${poolName} credits`;
}

export function Component(props: Props & LayoutOptions) {
  const { organizationName, poolName, topUpUrl } = props;
  return (
    <EmailLayout
      organizationName={organizationName}
      preview={`Top up to keep using ${poolName} credits.`}
      unsubscribeUrl={props.unsubscribeUrl}
    >
      <Title>You are out of {poolName} credits</Title>
      <Paragraph>
        {organizationName} has used all of its {poolName} credits. Unless your plan allows overage, actions that use
        them are refused until you top up or the next billing period's credits arrive.
      </Paragraph>
      <Action href={topUpUrl}>Top up {poolName} credits</Action>
    </EmailLayout>
  );
}
