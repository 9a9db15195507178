// To an organization's owners and admins when a pool falls below its low threshold (credits.low).
import React from 'react';
import { z } from 'zod';
import { creditCount, link, organizationName, poolKey, poolName } from '../fields.ts';
import { formatCount, formatCredits } from '../format.ts';
import { EmailLayout, type LayoutOptions } from '../layout.tsx';
import { Action, Paragraph, Title } from '../ui.tsx';

export const schema = z.object({
  organizationName,
  /** The pool's key, for the sender (tags, links); the mail shows poolName. */
  pool: poolKey,
  poolName,
  available: creditCount,
  threshold: creditCount,
  topUpUrl: link,
});
export type Props = z.infer<typeof schema>;

export const sample: Props = {
  organizationName: 'Northwind Traders',
  pool: 'ai',
  poolName: 'AI',
  available: 42,
  threshold: 1500,
  topUpUrl: 'https://app.example.com/northwind/billing/credits?pool=ai',
};

export function subject({ organizationName, poolName, available }: Props): string {
  return `${organizationName}: ${poolName} credits are running low (${formatCount(available)} left)`;
}

export function Component(props: Props & LayoutOptions) {
  const { organizationName, poolName, available, threshold, topUpUrl } = props;
  return (
    <EmailLayout
      organizationName={organizationName}
      preview={`${formatCredits(available, poolName)} left.`}
      unsubscribeUrl={props.unsubscribeUrl}
    >
      <Title>{poolName} credits are running low</Title>
      <Paragraph>
        {organizationName} has {formatCredits(available, poolName)} left, below the alert threshold of{' '}
        {formatCredits(threshold, poolName)}.
      </Paragraph>
      <Paragraph>
        When they run out, actions that use {poolName} credits are refused unless your plan allows overage. Top up
        to keep them going.
      </Paragraph>
      <Action href={topUpUrl}>Top up {poolName} credits</Action>
    </EmailLayout>
  );
}
