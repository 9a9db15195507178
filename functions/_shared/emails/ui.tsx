// The pieces templates are written with, styled once so every mail reads alike.
import React from 'react';
import { Button, Heading, Link, Section, Text } from '@react-email/components';

export function Title({ children }: { children: React.ReactNode }) {
  return <Heading as="h1" style={title}>{children}</Heading>;
}

export function Paragraph({ children }: { children: React.ReactNode }) {
  return <Text style={paragraph}>{children}</Text>;
}

/** Smaller, grey: what to do if the mail was unexpected, how long a link lasts. */
export function Note({ children }: { children: React.ReactNode }) {
  return <Text style={note}>{children}</Text>;
}

/**
 * The button the mail is about, and its URL spelled out for clients that block buttons. The
 * spelled-out line is left out of the text version, which already shows the button's URL.
 */
export function Action({ href, children }: { href: string; children: React.ReactNode }) {
  return (
    <Section style={actionSection}>
      <Button href={href} style={button}>{children}</Button>
      <Text style={fallback} data-skip-in-text>
        Or open this link: <Link href={href} style={fallbackLink}>{href}</Link>
      </Text>
    </Section>
  );
}

/** A one-time code, large and spaced so it is easy to copy. */
export function Code({ code }: { code: string }) {
  return <Text style={codeBox}>{code}</Text>;
}

/** Label and value rows: a receipt's or an invoice's facts. A row whose value is null is left out. */
export function Facts({ rows }: { rows: [label: string, value: string | null][] }) {
  return (
    <table role="presentation" style={facts} data-text-format="dataTable">
      <tbody>
        {rows.filter(([, value]) => value !== null).map(([label, value]) => (
          <tr key={label}>
            <td style={factLabel}>{label}</td>
            <td style={factValue}>{value}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

const title: React.CSSProperties = { color: '#18181b', fontSize: '22px', fontWeight: 600, lineHeight: '30px', margin: '16px 0' };
const paragraph: React.CSSProperties = { color: '#3f3f46', fontSize: '15px', lineHeight: '24px', margin: '0 0 16px' };
const note: React.CSSProperties = { color: '#71717a', fontSize: '13px', lineHeight: '20px', margin: '0 0 16px' };
const actionSection: React.CSSProperties = { margin: '8px 0 24px' };
const button: React.CSSProperties = {
  backgroundColor: '#4f46e5',
  borderRadius: '6px',
  color: '#ffffff',
  fontSize: '15px',
  fontWeight: 600,
  padding: '12px 20px',
  textDecoration: 'none',
};
const fallback: React.CSSProperties = { color: '#71717a', fontSize: '12px', lineHeight: '18px', margin: '12px 0 0', wordBreak: 'break-all' };
const fallbackLink: React.CSSProperties = { color: '#4f46e5' };
const codeBox: React.CSSProperties = {
  backgroundColor: '#f4f4f5',
  borderRadius: '6px',
  color: '#18181b',
  fontFamily: "'SFMono-Regular', Menlo, Consolas, monospace",
  fontSize: '28px',
  fontWeight: 600,
  letterSpacing: '6px',
  margin: '0 0 24px',
  padding: '12px 0',
  textAlign: 'center',
};
const facts: React.CSSProperties = { borderCollapse: 'collapse', margin: '0 0 24px', width: '100%' };
const factLabel: React.CSSProperties = { borderBottom: '1px solid #f4f4f5', color: '#71717a', fontSize: '14px', padding: '8px 0' };
const factValue: React.CSSProperties = {
  borderBottom: '1px solid #f4f4f5',
  color: '#18181b',
  fontSize: '14px',
  fontWeight: 600,
  padding: '8px 0',
  textAlign: 'right',
};
