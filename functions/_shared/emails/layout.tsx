// The frame of every mail: the organization's name as the header, the message, a footer with an
// unsubscribe link for mail the reader may opt out of. Inline styles and tables only (what
// @react-email/components renders), since mail clients ignore stylesheets and most of CSS.

// React ships no types; @types/react does. Locally Deno finds it in node_modules, but a deployed
// function is checked from its uploaded files alone, where JSX would then be untyped. Deno applies
// this to npm:react throughout the module graph, and every template imports this file. The import
// map pins its version, like every other (tests/hosted/deploy-bundle.test.ts checks them).
// @ts-types="@types/react"
import React from 'react';
import { Body, Container, Head, Hr, Html, Link, Preview, Section, Text } from '@react-email/components';

/** What the sender adds to a template's props. */
export interface LayoutOptions {
  /**
   * One-click unsubscribe for mail a preference may turn off; the dispatcher leaves it out for
   * required mail (and the footer then has no link).
   */
  unsubscribeUrl?: string;
}

interface LayoutProps extends LayoutOptions {
  /** Whose mail this is. Null for mail about the reader's own account (sign-up, password). */
  organizationName: string | null;
  /** The line inbox lists show next to the subject. */
  preview: string;
  children: React.ReactNode;
}

export function EmailLayout({ organizationName, preview, unsubscribeUrl, children }: LayoutProps) {
  return (
    <Html lang="en">
      <Head />
      <Preview>{preview}</Preview>
      <Body style={body}>
        <Container style={container}>
          <Section style={header}>
            {organizationName ? <Text style={brand}>{organizationName}</Text> : null}
          </Section>
          <Section style={content}>{children}</Section>
          <Hr style={rule} />
          <Section style={footer}>
            <Text style={footerText}>
              {organizationName
                ? `This is an automated message about ${organizationName}.`
                : 'This is an automated message about your account.'}
            </Text>
            {unsubscribeUrl
              ? (
                <Text style={footerText}>
                  Don't want these emails? <Link href={unsubscribeUrl} style={footerLink}>Unsubscribe</Link>
                </Text>
              )
              : null}
          </Section>
        </Container>
      </Body>
    </Html>
  );
}

const FONT = "-apple-system, BlinkMacSystemFont, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif";

const body: React.CSSProperties = { backgroundColor: '#f4f4f5', fontFamily: FONT, margin: 0, padding: '32px 0' };
const container: React.CSSProperties = {
  backgroundColor: '#ffffff',
  border: '1px solid #e4e4e7',
  borderRadius: '8px',
  borderTop: '4px solid #4f46e5',
  maxWidth: '560px',
  margin: '0 auto',
};
const header: React.CSSProperties = { padding: '20px 32px 0' };
const brand: React.CSSProperties = { color: '#18181b', fontSize: '16px', fontWeight: 600, lineHeight: '24px', margin: 0 };
const content: React.CSSProperties = { padding: '8px 32px 16px' };
const rule: React.CSSProperties = { borderColor: '#e4e4e7', margin: 0 };
const footer: React.CSSProperties = { padding: '16px 32px 20px' };
const footerText: React.CSSProperties = { color: '#71717a', fontSize: '12px', lineHeight: '18px', margin: '0 0 4px' };
const footerLink: React.CSSProperties = { color: '#71717a', textDecoration: 'underline' };
