// The transactional email templates (functions/_shared/emails): every sample renders and says its
// key facts in both the HTML and the text version, the registry is complete, bad props are refused.
import React from 'react';
import { render } from '@react-email/render';
import { describe, expect, it } from 'vitest';
import {
  EMAIL_CATEGORIES,
  EMAIL_TEMPLATES,
  EmailTemplateError,
  isTemplateName,
  renderEmail,
  renderSample,
  type TemplateName,
} from '../../functions/_shared/emails/index.ts';
import { formatDateTime, formatMoney } from '../../functions/_shared/emails/format.ts';
import { EmailLayout } from '../../functions/_shared/emails/layout.tsx';

const TEMPLATE_NAMES = Object.keys(EMAIL_TEMPLATES) as TemplateName[];
const UNSUBSCRIBE_URL = 'https://app.example.com/email-preferences/unsubscribe?token=u1&list=alerts';

/** How React writes a text or attribute value into HTML. */
function escapeHtml(value: string): string {
  return value
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#x27;');
}

function sampleOf(name: TemplateName): Record<string, unknown> {
  return EMAIL_TEMPLATES[name].sample as Record<string, unknown>;
}

/** Every link of a template's sample (the props that are URLs). */
function sampleLinks(name: TemplateName): string[] {
  return Object.values(sampleOf(name)).filter((v): v is string => typeof v === 'string' && v.startsWith('https://'));
}

/** The facts each sample's mail must state, written as a reader sees them (not computed by the code under test). */
const KEY_FACTS: Record<TemplateName, string[]> = {
  organization_invitation: ['Northwind Traders', 'Alice Martin', 'as an admin', 'March 21, 2026 at 09:30 UTC'],
  welcome: ['Northwind Traders', 'Welcome, Bruno Costa'],
  data_export_ready: ['Northwind Traders', 'March 25, 2026 at 09:30 UTC'],
  inactivity_warning: ['Northwind Traders', 'March 2, 2025', 'April 1, 2026 at 00:00 UTC'],
  data_purge_scheduled: ['Northwind Traders', 'April 1, 2026 at 00:00 UTC'],
  data_purge_completed: ['Northwind Traders', 'April 1, 2026 at 00:12 UTC'],
  low_credits: ['Northwind Traders', '42 AI credits', '1,500 AI credits'],
  credits_depleted: ['Northwind Traders', 'WhatsApp'],
  credit_topup_receipt: ['Northwind Traders', '1,000 AI credits', '€12.50', 'March 14, 2026 at 10:02 UTC', 'NW-2026-0042'],
  payment_failed: ['Northwind Traders', '€49.00', 'NW-2026-0043', 'March 17, 2026 at 10:00 UTC'],
  payment_reminder: ['Northwind Traders', '$1,234.56', 'March 31, 2026', 'NW-2026-0044'],
  account_overdue: ['Northwind Traders', '¥150,000', 'March 1, 2026', '14 days', 'March 29, 2026 at 00:00 UTC'],
  auth_confirm_signup: ['482913'],
  auth_magic_link: ['130577'],
  auth_recovery: ['905182'],
  auth_email_change: ['bruno.costa@northwind.example', '664020'],
  auth_invite: ['You have been invited'],
};

/** Every template: its preference category and whether it goes regardless of preferences. */
const REGISTRY: Record<TemplateName, { category: string; required: boolean }> = {
  organization_invitation: { category: 'account', required: false },
  welcome: { category: 'account', required: false },
  data_export_ready: { category: 'account', required: true },
  inactivity_warning: { category: 'account', required: true },
  data_purge_scheduled: { category: 'account', required: true },
  data_purge_completed: { category: 'account', required: true },
  low_credits: { category: 'usage_alerts', required: false },
  credits_depleted: { category: 'usage_alerts', required: false },
  credit_topup_receipt: { category: 'billing', required: true },
  payment_failed: { category: 'billing', required: true },
  payment_reminder: { category: 'billing', required: true },
  account_overdue: { category: 'billing', required: true },
  auth_confirm_signup: { category: 'auth', required: true },
  auth_magic_link: { category: 'auth', required: true },
  auth_recovery: { category: 'auth', required: true },
  auth_email_change: { category: 'auth', required: true },
  auth_invite: { category: 'auth', required: true },
};

describe('the registry', () => {
  it('lists exactly the 17 templates, with their categories and required flags', () => {
    expect([...TEMPLATE_NAMES].sort()).toEqual(Object.keys(REGISTRY).sort());
    expect(TEMPLATE_NAMES).toHaveLength(17);
    for (const name of TEMPLATE_NAMES) {
      const { category, required } = EMAIL_TEMPLATES[name];
      expect({ name, category, required }).toEqual({ name, ...REGISTRY[name] });
    }
  });

  it('has the preference categories, and every template is in one', () => {
    expect([...EMAIL_CATEGORIES]).toEqual(['auth', 'account', 'billing', 'usage_alerts', 'product_news', 'marketing']);
    for (const name of TEMPLATE_NAMES) expect(EMAIL_CATEGORIES).toContain(EMAIL_TEMPLATES[name].category);
  });

  it('knows template names, and only its own (not inherited properties)', () => {
    expect(isTemplateName('welcome')).toBe(true);
    expect(isTemplateName('auth_recovery')).toBe(true);
    expect(isTemplateName('newsletter')).toBe(false);
    expect(isTemplateName('toString')).toBe(false);
    expect(isTemplateName('__proto__')).toBe(false);
  });

  it.each(TEMPLATE_NAMES)('%s: the sample fits its own schema', (name) => {
    expect(EMAIL_TEMPLATES[name].schema.safeParse(EMAIL_TEMPLATES[name].sample).success).toBe(true);
  });
});

describe.each(TEMPLATE_NAMES)('%s with its sample', (name) => {
  it('renders a complete HTML document and a text version', async () => {
    const { subject, html, text } = await renderSample(name);
    expect(html).toMatch(/^<!DOCTYPE html/);
    expect(html).toContain('<html dir="ltr" lang="en">');
    expect(text.length).toBeGreaterThan(50);
    expect(text).not.toMatch(/<[a-z]/i); // no markup left in the text version
    expect(subject.trim()).not.toBe('');
    for (const output of [subject, html, text]) expect(output).not.toMatch(/\b(undefined|null|NaN|Invalid Date)\b/);
  });

  it('states its key facts in both the HTML and the text', async () => {
    const { html, text } = await renderSample(name);
    for (const fact of KEY_FACTS[name]) {
      expect(html, fact).toContain(escapeHtml(fact));
      expect(text, fact).toContain(fact);
    }
  });

  it('links every URL of its props, in the HTML and spelled out in the text', async () => {
    const { html, text } = await renderSample(name);
    const links = sampleLinks(name);
    // Every mail but the last word on a deletion gives the reader something to do.
    if (name !== 'data_purge_completed') expect(links.length).toBeGreaterThan(0);
    for (const url of links) {
      expect(html, url).toContain(`href="${escapeHtml(url)}"`);
      expect(text, url).toContain(url);
    }
  });

  it('has a subject that names the organization when there is one', async () => {
    const { subject } = await renderSample(name);
    const organizationName = sampleOf(name).organizationName;
    if (typeof organizationName === 'string') expect(subject).toContain(organizationName);
  });

  it('shows the organization name in the layout header, first thing in the mail', async () => {
    const { text } = await renderSample(name);
    const organizationName = sampleOf(name).organizationName;
    if (typeof organizationName === 'string') expect(text.trimStart().startsWith(organizationName)).toBe(true);
    else expect(name.startsWith('auth_')).toBe(true); // only auth mail has no organization in its sample
  });

  it('has an unsubscribe link exactly when an unsubscribe URL is given', async () => {
    const plain = await renderSample(name);
    expect(plain.html).not.toMatch(/unsubscribe/i);
    expect(plain.text).not.toMatch(/unsubscribe/i);

    const optional = await renderSample(name, { unsubscribeUrl: UNSUBSCRIBE_URL });
    expect(optional.html).toContain(`href="${escapeHtml(UNSUBSCRIBE_URL)}"`);
    expect(optional.html).toMatch(/>Unsubscribe<\/a>/);
    expect(optional.text).toContain(`Unsubscribe ${UNSUBSCRIBE_URL}`);
  });
});

describe('the layout', () => {
  const renderLayout = (organizationName: string | null, unsubscribeUrl?: string) => {
    const element = React.createElement(EmailLayout, {
      organizationName,
      preview: 'Preview line',
      unsubscribeUrl,
      children: 'The message body.',
    });
    return Promise.all([render(element), render(element, { plainText: true })]);
  };

  it("carries the organization's name, the message and the footer", async () => {
    const [html, text] = await renderLayout('Contoso Labs');
    expect(html).toContain('Contoso Labs');
    expect(text.trimStart().startsWith('Contoso Labs')).toBe(true);
    expect(text).toContain('The message body.');
    expect(text).toContain('This is an automated message about Contoso Labs.');
    expect(text).not.toContain('Preview line'); // inbox preview only, hidden in the HTML and left out of the text
    expect(html).toMatch(/display:none[^>]*>Preview line/);
  });

  it('has no organization name in the header when there is none', async () => {
    const [, text] = await renderLayout(null);
    expect(text.trimStart().startsWith('The message body.')).toBe(true);
    expect(text).toContain('This is an automated message about your account.');
  });

  it('has an unsubscribe link only when given the URL', async () => {
    const [withLink] = await renderLayout('Contoso Labs', UNSUBSCRIBE_URL);
    const [withoutLink] = await renderLayout('Contoso Labs');
    expect(withLink).toContain(`href="${escapeHtml(UNSUBSCRIBE_URL)}"`);
    expect(withoutLink).not.toMatch(/unsubscribe/i);
  });
});

describe('optional props left out', () => {
  const variant = (name: TemplateName, changes: Record<string, unknown>) => renderEmail(name, { ...sampleOf(name), ...changes });

  it('organization_invitation without an inviter name', async () => {
    const { subject, text } = await variant('organization_invitation', { inviterName: null });
    expect(subject).toBe("You're invited to join Northwind Traders");
    expect(text).toContain('You have been invited to join Northwind Traders as an admin.');
    expect(text).not.toContain('Alice Martin');
  });

  it('welcome without an organization or a user name', async () => {
    const { subject, text } = await variant('welcome', { organizationName: null, userName: null });
    expect(subject).toBe('Welcome to your new account');
    expect(text.trimStart().startsWith('Welcome')).toBe(true);
    expect(text).not.toContain('Northwind');
    expect(text).toContain(sampleOf('welcome').dashboardUrl);
  });

  it('data_export_ready of personal data (no organization)', async () => {
    const { subject, text } = await variant('data_export_ready', { organizationName: null });
    expect(subject).toBe('Your data export is ready');
    expect(text).toContain('personal data');
    expect(text).not.toContain('Northwind');
  });

  it('data_purge_scheduled without an export link', async () => {
    const { html, text } = await variant('data_purge_scheduled', { exportUrl: null });
    expect(html).not.toContain('settings/export');
    expect(text).not.toMatch(/export/i);
    expect(text).toContain(sampleOf('data_purge_scheduled').cancelUrl);
  });

  it('credit_topup_receipt without an invoice number or a receipt link', async () => {
    const { html, text } = await variant('credit_topup_receipt', { invoiceNumber: null, receiptUrl: null });
    expect(text).not.toMatch(/invoice|receipt/i);
    expect(html).not.toContain('pay.stripe.com');
    expect(text).toContain('€12.50');
  });

  it('payment_failed with no further attempt', async () => {
    const { text } = await variant('payment_failed', { nextAttemptAt: null });
    expect(text).toContain('We will not try again automatically');
    expect(text).not.toContain('Next attempt');
  });

  it('payment_reminder without an invoice number', async () => {
    const { text } = await variant('payment_reminder', { invoiceNumber: null });
    expect(text).toContain('An invoice of Northwind Traders for $1,234.56 is due on March 31, 2026.');
  });

  it('account_overdue without a suspension date', async () => {
    const { text } = await variant('account_overdue', { suspendAt: null });
    expect(text).not.toMatch(/suspen/i);
    expect(text).toContain('¥150,000');
  });
});

describe('money and dates', () => {
  it.each([
    [1250, 'eur', '€12.50'],
    [1250, 'EUR', '€12.50'],
    [0, 'eur', '€0.00'],
    [123456, 'usd', '$1,234.56'],
    [1250, 'jpy', '¥1,250'], // no minor unit
    [1250, 'kwd', 'KWD\u00a01.250'], // three digits
    [1250, 'huf', 'HUF\u00a012.50'], // Stripe's two digits, whatever the runtime's ICU displays
    [1250, 'idr', 'IDR\u00a012.50'],
  ])('formats %i minor units of %s as %s', (amount, currency, formatted) => {
    expect(formatMoney(amount, currency)).toBe(formatted);
  });

  it('formats an amount in the mail with the currency of the props', async () => {
    const { subject, html, text } = await renderEmail('payment_failed', { ...sampleOf('payment_failed'), amount: 4900, currency: 'jpy' });
    expect(subject).toBe('Payment of ¥4,900 failed for Northwind Traders');
    expect(html).toContain('¥4,900');
    expect(text).toContain('¥4,900');
  });

  it('takes timestamps with an offset, as Postgres writes them, and shows them in UTC', async () => {
    expect(formatDateTime('2026-03-21T11:30:00.123456+02:00')).toBe('March 21, 2026 at 09:30 UTC');
    const { text } = await renderEmail('organization_invitation', {
      ...sampleOf('organization_invitation'),
      expiresAt: '2026-03-21T23:30:00-02:00',
    });
    expect(text).toContain('March 22, 2026 at 01:30 UTC');
  });
});

describe('invalid props', () => {
  it.each<[TemplateName, Record<string, unknown>, string]>([
    ['organization_invitation', { acceptUrl: 'javascript:alert(1)' }, 'acceptUrl'],
    ['organization_invitation', { acceptUrl: 'not a url' }, 'acceptUrl'],
    ['organization_invitation', { role: 'superuser' }, 'role'],
    ['organization_invitation', { expiresAt: 'next week' }, 'expiresAt'],
    ['organization_invitation', { organizationName: '' }, 'organizationName'],
    ['welcome', { dashboardUrl: undefined }, 'dashboardUrl'],
    ['low_credits', { available: -1 }, 'available'],
    ['low_credits', { organizationName: undefined }, 'organizationName'],
    ['credit_topup_receipt', { amount: -1 }, 'amount'],
    ['credit_topup_receipt', { amount: 12.5 }, 'amount'],
    ['credit_topup_receipt', { amount: '1250' }, 'amount'],
    ['credit_topup_receipt', { currency: 'euro' }, 'currency'],
    ['credit_topup_receipt', { paidAt: '2026-03-14' }, 'paidAt'],
    ['account_overdue', { daysOverdue: 0 }, 'daysOverdue'],
    ['auth_confirm_signup', { code: '12345' }, 'code'],
    ['auth_magic_link', { code: '12345a' }, 'code'],
    ['auth_email_change', { newEmail: 'bruno at northwind' }, 'newEmail'],
  ])('%s refuses %o (%s)', async (name, changes, path) => {
    const error = await renderEmail(name, { ...sampleOf(name), ...changes }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(EmailTemplateError);
    const issues = (error as EmailTemplateError).issues;
    expect(issues.map((issue) => issue.path.join('.'))).toContain(path);
    // The message names the field, never the value (props carry names and addresses).
    expect((error as Error).message).toContain(path);
    for (const value of Object.values(changes)) {
      if (typeof value === 'string' && value !== '') expect((error as Error).message).not.toContain(value);
    }
  });

  it('refuses props that are not an object', async () => {
    await expect(renderEmail('welcome', null)).rejects.toBeInstanceOf(EmailTemplateError);
    await expect(renderEmail('auth_invite', 'https://example.com')).rejects.toBeInstanceOf(EmailTemplateError);
  });

  it('refuses an unsubscribe URL that is not http(s)', async () => {
    const error = await renderSample('low_credits', { unsubscribeUrl: 'javascript:alert(1)' }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(EmailTemplateError);
    expect((error as EmailTemplateError).issues.map((issue) => issue.path.join('.'))).toEqual(['unsubscribeUrl']);
  });
});
