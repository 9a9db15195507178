// The registry of transactional mail: every template by name, with its preference category,
// whether it goes regardless of preferences, its props schema, a sample and how it renders. The
// email-dispatch function renders through renderEmail; `npm run email:preview` through renderSample.
// Pure module (no Deno APIs), so node tests import it too.
import React from 'react';
import { render, toPlainText } from '@react-email/render';
import { z } from 'zod';
import { link } from './fields.ts';
import type { LayoutOptions } from './layout.tsx';
import * as dataExportReady from './account/data-export-ready.tsx';
import * as dataPurgeCompleted from './account/data-purge-completed.tsx';
import * as dataPurgeScheduled from './account/data-purge-scheduled.tsx';
import * as inactivityWarning from './account/inactivity-warning.tsx';
import * as organizationInvitation from './account/organization-invitation.tsx';
import * as welcome from './account/welcome.tsx';
import * as authConfirmSignup from './auth/confirm-signup.tsx';
import * as authEmailChange from './auth/email-change.tsx';
import * as authInvite from './auth/invite.tsx';
import * as authMagicLink from './auth/magic-link.tsx';
import * as authRecovery from './auth/recovery.tsx';
import * as accountOverdue from './billing/account-overdue.tsx';
import * as creditTopupReceipt from './billing/credit-topup-receipt.tsx';
import * as paymentFailed from './billing/payment-failed.tsx';
import * as paymentReminder from './billing/payment-reminder.tsx';
import * as creditsDepleted from './usage-alerts/credits-depleted.tsx';
import * as lowCredits from './usage-alerts/low-credits.tsx';

/** What a reader's email preferences are kept by. */
export const EMAIL_CATEGORIES = ['auth', 'account', 'billing', 'usage_alerts', 'product_news', 'marketing'] as const;
export type EmailCategory = (typeof EMAIL_CATEGORIES)[number];

/** What each template module exports. */
interface TemplateModule<P> {
  schema: z.ZodType<P>;
  sample: P;
  subject(props: P): string;
  Component(props: P & LayoutOptions): React.ReactElement;
}

export interface EmailTemplate<P> extends TemplateModule<P> {
  category: EmailCategory;
  /** Sent whatever the reader's preferences say (security, money, their data), so sent without an unsubscribe URL. */
  required: boolean;
}

function template<P>(category: EmailCategory, required: boolean, module: TemplateModule<P>): EmailTemplate<P> {
  return {
    category,
    required,
    schema: module.schema,
    sample: module.sample,
    subject: module.subject,
    Component: module.Component,
  };
}

export const EMAIL_TEMPLATES = {
  organization_invitation: template('account', false, organizationInvitation),
  welcome: template('account', false, welcome),
  data_export_ready: template('account', true, dataExportReady),
  inactivity_warning: template('account', true, inactivityWarning),
  data_purge_scheduled: template('account', true, dataPurgeScheduled),
  data_purge_completed: template('account', true, dataPurgeCompleted),
  low_credits: template('usage_alerts', false, lowCredits),
  credits_depleted: template('usage_alerts', false, creditsDepleted),
  credit_topup_receipt: template('billing', true, creditTopupReceipt),
  payment_failed: template('billing', true, paymentFailed),
  payment_reminder: template('billing', true, paymentReminder),
  account_overdue: template('billing', true, accountOverdue),
  auth_confirm_signup: template('auth', true, authConfirmSignup),
  auth_magic_link: template('auth', true, authMagicLink),
  auth_recovery: template('auth', true, authRecovery),
  auth_email_change: template('auth', true, authEmailChange),
  auth_invite: template('auth', true, authInvite),
};

export type TemplateName = keyof typeof EMAIL_TEMPLATES;

export function isTemplateName(name: string): name is TemplateName {
  return Object.hasOwn(EMAIL_TEMPLATES, name);
}

/**
 * Mail that cannot be rendered: props that do not fit the template's schema (their zod issues),
 * or no such template. renderEmail's message names the fields and what is wrong with them, never
 * their values (props carry names and email addresses), so it may be logged and stored.
 */
export class EmailTemplateError extends Error {
  constructor(
    message: string,
    readonly issues: z.core.$ZodIssue[] = [],
  ) {
    super(message);
    this.name = 'EmailTemplateError';
  }
}

export interface RenderedEmail {
  subject: string;
  html: string;
  text: string;
}

const optionsSchema = z.object({ unsubscribeUrl: link.optional() });

// html-to-text writes headings in capitals by default; the text version keeps their case.
const TEXT_OPTIONS = {
  selectors: ['h1', 'h2', 'h3'].map((selector) => ({ selector, options: { uppercase: false } })),
};

async function renderTemplate<P>(
  name: string,
  { schema, subject, Component }: EmailTemplate<P>,
  props: unknown,
  options: LayoutOptions,
): Promise<RenderedEmail> {
  const parsedProps = schema.safeParse(props);
  const parsedOptions = optionsSchema.safeParse(options);
  if (!parsedProps.success || !parsedOptions.success) {
    const issues = [...(parsedProps.error?.issues ?? []), ...(parsedOptions.error?.issues ?? [])];
    const problems = issues.map((issue) => `${issue.path.map(String).join('.') || '(props)'}: ${issue.message}`);
    throw new EmailTemplateError(`Invalid props for email template ${name}: ${problems.join('; ')}`, issues);
  }
  const element = React.createElement(Component, { ...parsedProps.data, ...parsedOptions.data });
  const html = await render(element);
  return { subject: subject(parsedProps.data), html, text: toPlainText(html, TEXT_OPTIONS) };
}

/** Subject, HTML and text of a mail; throws EmailTemplateError when props (or options) are invalid. */
export function renderEmail(name: TemplateName, props: unknown, options: LayoutOptions = {}): Promise<RenderedEmail> {
  // Each template's own props type is checked where it is defined; here props are unknown until parsed.
  return renderTemplate<object>(name, EMAIL_TEMPLATES[name], props, options);
}

/** A template rendered with its sample props, for previews and tests. */
export function renderSample(name: TemplateName, options: LayoutOptions = {}): Promise<RenderedEmail> {
  return renderEmail(name, EMAIL_TEMPLATES[name].sample, options);
}
