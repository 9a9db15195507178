// The local mailbox: what the provider writes (functions/_shared/email-providers/mailbox.ts, run
// in Deno) and what the page and its JSON API (scripts/mailbox-server.ts) show of it, against a
// server of this suite's own over a temp dir (never the stack's .local/mail).
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type MailboxServer,
  sendToMailbox,
  snapshot,
  startMailboxServer,
  tempDir,
  testEmail,
} from './mailbox-support.ts';

let root: string; // the temp dir; the mailbox is root/mail, so anything written beside it shows
let dir: string;
let server: MailboxServer;

const older = testEmail({ id: 'msg-older', subject: 'Older message' });
const newest = testEmail({
  id: 'msg-newest',
  to: 'ada@example.com',
  subject: 'Welcome <script>alert("subject")</script> & more',
  text: 'Hi Ada,\n\nConfirm your address: https://app.test/confirm?t=1&u=2\n<not a tag>',
  html: '<h1 id="greeting">Hi Ada</h1><script>parent.document.title = "pwned"</script>',
  headers: {
    'List-Unsubscribe': '<https://app.test/unsubscribe?t=abc>, <mailto:unsubscribe@app.test>',
    'List-Unsubscribe-Post': 'List-Unsubscribe=One-Click',
  },
  tags: [{ name: 'template', value: 'welcome' }],
});
const middle = testEmail({ id: 'msg-middle', subject: 'Middle message' });

async function get(p: string): Promise<{ status: number; type: string | null; body: string; headers: Headers }> {
  const res = await fetch(`${server.url}${p}`);
  return { status: res.status, type: res.headers.get('content-type'), body: await res.text(), headers: res.headers };
}

beforeAll(async () => {
  root = tempDir('mailbox-test');
  dir = path.join(root, 'mail');
  // Sent out of order: the list goes by sent_at, not by when the folder was written.
  const results = sendToMailbox(dir, [
    { email: middle, sentAt: '2026-03-01T10:00:02.000Z' },
    { email: newest, sentAt: '2026-03-01T10:00:03.000Z' },
    { email: older, sentAt: '2026-03-01T10:00:01.000Z' },
  ]);
  expect(results).toEqual([
    { providerMessageId: 'mailbox-msg-middle' },
    { providerMessageId: 'mailbox-msg-newest' },
    { providerMessageId: 'mailbox-msg-older' },
  ]);
  // What `npm run email:preview` writes, and a temp folder of a send in progress: neither is mail.
  fs.mkdirSync(path.join(dir, 'preview'));
  fs.writeFileSync(path.join(dir, 'preview', 'welcome.html'), '<p>preview</p>');
  fs.writeFileSync(path.join(dir, 'preview', 'message.json'), JSON.stringify({ id: 'preview', subject: 'Preview', sent_at: '2030-01-01T00:00:00.000Z' }));
  fs.cpSync(path.join(dir, 'msg-older'), path.join(dir, '.tmp-half-written'), { recursive: true });
  server = await startMailboxServer(dir);
}, 120000);

afterAll(async () => {
  await server?.stop();
  if (root) fs.rmSync(root, { recursive: true, force: true });
});

describe('the mailbox provider', () => {
  it('writes message.html, message.txt and message.json into <dir>/<id>/', () => {
    const folder = path.join(dir, newest.id);
    expect(fs.readdirSync(folder).sort()).toEqual(['message.html', 'message.json', 'message.txt']);
    expect(fs.readFileSync(path.join(folder, 'message.html'), 'utf8')).toBe(newest.html);
    expect(fs.readFileSync(path.join(folder, 'message.txt'), 'utf8')).toBe(newest.text);
    expect(JSON.parse(fs.readFileSync(path.join(folder, 'message.json'), 'utf8'))).toEqual({
      id: newest.id,
      from: newest.from,
      to: newest.to,
      subject: newest.subject,
      headers: newest.headers,
      tags: newest.tags,
      sent_at: '2026-03-01T10:00:03.000Z',
    });
  });

  it('writes nothing new for an id it has sent, and answers the same providerMessageId', () => {
    const before = snapshot(dir);
    const [again] = sendToMailbox(dir, [{ email: { ...newest, subject: 'A retry', html: '<p>other</p>', text: 'other' } }]);
    expect(again).toEqual({ providerMessageId: 'mailbox-msg-newest' });
    expect(snapshot(dir)).toEqual(before);
    expect(JSON.parse(fs.readFileSync(path.join(dir, newest.id, 'message.json'), 'utf8')).subject).toBe(newest.subject);
  });

  it('refuses an id that is not a plain token, permanently, and writes nothing anywhere', () => {
    const before = snapshot(root);
    const outcomes = sendToMailbox(dir, ['../escaped', 'a/b', '..', '.hidden', 'preview', ''].map((id) => ({ email: testEmail({ id }) })));
    for (const outcome of outcomes) expect(outcome).toMatchObject({ kind: 'permanent' });
    expect(snapshot(root)).toEqual(before);
    expect(fs.existsSync(path.join(root, 'escaped'))).toBe(false);
  });

  it('creates the mailbox folder on first send', () => {
    const fresh = path.join(root, 'fresh', 'mail');
    expect(sendToMailbox(fresh, [{ email: testEmail({ id: 'first' }) }])).toEqual([{ providerMessageId: 'mailbox-first' }]);
    expect(fs.readdirSync(fresh)).toEqual(['first']);
  });
});

describe('GET /api/messages', () => {
  it('lists the messages newest first by sent_at, without preview/ or temp folders', async () => {
    const res = await get('/api/messages');
    expect(res.status).toBe(200);
    expect(res.type).toContain('application/json');
    expect(JSON.parse(res.body)).toEqual({
      messages: [newest, middle, older].map((m, i) => ({
        id: m.id,
        from: m.from,
        to: m.to,
        subject: m.subject,
        sent_at: `2026-03-01T10:00:0${3 - i}.000Z`,
      })),
    });
  });

  it('answers one message with its headers, tags and both parts', async () => {
    const res = await get(`/api/messages/${newest.id}`);
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toEqual({
      id: newest.id,
      from: newest.from,
      to: newest.to,
      subject: newest.subject,
      headers: newest.headers,
      tags: newest.tags,
      sent_at: '2026-03-01T10:00:03.000Z',
      html: newest.html,
      text: newest.text,
    });
  });

  it('answers an empty list for a mailbox nobody has written to yet', async () => {
    const empty = await startMailboxServer(path.join(root, 'nothing-here'));
    try {
      const res = await fetch(`${empty.url}/api/messages`);
      expect(await res.json()).toEqual({ messages: [] });
      const page = await (await fetch(`${empty.url}/`)).text();
      expect(page).toContain('No mail yet');
    } finally {
      await empty.stop();
    }
  }, 60000);
});

describe('GET /', () => {
  it('lists time, recipient and subject, newest first, each linking to its message, all escaped', async () => {
    const res = await get('/');
    expect(res.status).toBe(200);
    expect(res.type).toContain('text/html');
    const rows = [...res.body.matchAll(/<tr class="message">([\s\S]*?)<\/tr>/g)].map((m) => m[1]);
    expect(rows).toHaveLength(3);
    expect(rows[0]).toContain('2026-03-01 10:00:03 UTC');
    expect(rows[0]).toContain('ada@example.com');
    expect(rows[0]).toContain('<a href="/messages/msg-newest">Welcome &#60;script&#62;alert(&#34;subject&#34;)&#60;/script&#62; &#38; more</a>');
    expect(rows[1]).toContain('<a href="/messages/msg-middle">Middle message</a>');
    expect(rows[2]).toContain('<a href="/messages/msg-older">Older message</a>');
    expect(res.body).not.toContain('<script>alert');
    expect(res.body).not.toContain('Preview');
  });

  it('refreshes itself: a poller allowed by hash in its CSP, a meta refresh without scripts', async () => {
    const res = await get('/');
    expect(res.body).toContain("fetch('/api/messages'");
    expect(res.body).toMatch(/<noscript><meta http-equiv="refresh" content="\d+"><\/noscript>/);
    const csp = res.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("default-src 'none'");
    expect(csp).toMatch(/script-src 'sha256-[A-Za-z0-9+/=]+'/);
    expect(csp).not.toContain("'unsafe-inline' 'unsafe-eval'");
  });
});

describe('GET /messages/<id>', () => {
  it('shows from, to, subject, date and every extra header and tag, escaped', async () => {
    const res = await get(`/messages/${newest.id}`);
    expect(res.status).toBe(200);
    expect(res.type).toContain('text/html');
    const header = (name: string, value: string) => `<tr><th>${name}</th><td>${value}</td></tr>`;
    expect(res.body).toContain(header('From', 'Acme &#60;no-reply@acme.test&#62;'));
    expect(res.body).toContain(header('To', 'ada@example.com'));
    expect(res.body).toContain(header('Subject', 'Welcome &#60;script&#62;alert(&#34;subject&#34;)&#60;/script&#62; &#38; more'));
    expect(res.body).toContain(header('Date', '2026-03-01T10:00:03.000Z'));
    expect(res.body).toContain(header('List-Unsubscribe', '&#60;https://app.test/unsubscribe?t=abc&#62;, &#60;mailto:unsubscribe@app.test&#62;'));
    expect(res.body).toContain(header('List-Unsubscribe-Post', 'List-Unsubscribe=One-Click'));
    expect(res.body).toContain(header('Tag template', 'welcome'));
    expect(res.body).not.toContain('<script>alert');
  });

  it('shows the text part, escaped', async () => {
    const { body } = await get(`/messages/${newest.id}`);
    expect(body).toContain('<pre class="text">Hi Ada,\n\nConfirm your address: https://app.test/confirm?t=1&#38;u=2\n&#60;not a tag&#62;</pre>');
  });

  it('shows the HTML part in a sandboxed iframe, served under a CSP that sandboxes it too', async () => {
    const { body } = await get(`/messages/${newest.id}`);
    const iframe = /<iframe [^>]*>/.exec(body)?.[0] ?? '';
    expect(iframe).toContain(`src="/messages/${newest.id}/html"`);
    const sandbox = /sandbox="([^"]*)"/.exec(iframe)?.[1];
    expect(sandbox).toBeDefined();
    expect(sandbox).not.toContain('allow-scripts');
    expect(sandbox).not.toContain('allow-same-origin');
    // The page itself never inlines the message's HTML.
    expect(body).not.toContain('<h1 id="greeting">');

    const html = await get(`/messages/${newest.id}/html`);
    expect(html.status).toBe(200);
    expect(html.type).toContain('text/html');
    expect(html.body).toBe(newest.html);
    const csp = html.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("default-src 'none'");
    expect(csp).toMatch(/(^|; )sandbox( |;|$)/);
    expect(csp).not.toContain('allow-scripts');
    expect(csp).not.toContain('allow-same-origin');
    expect(html.headers.get('x-content-type-options')).toBe('nosniff');
  });
});

describe('what the mailbox refuses', () => {
  it('answers 404 JSON for unknown paths and unknown messages', async () => {
    for (const p of ['/nope', '/api', '/api/messages/msg-newest/html', '/messages/msg-newest/raw', '/messages',
      '/api/messages/no-such-message', '/messages/no-such-message', '/messages/no-such-message/html']) {
      const res = await get(p);
      expect(res.status, p).toBe(404);
      expect(res.type, p).toContain('application/json');
      expect(JSON.parse(res.body), p).toMatchObject({ error: { code: 'not_found' } });
    }
  });

  it('refuses ids that are not a plain token (path traversal, hidden folders, preview/) with 400 JSON', async () => {
    for (const id of ['..%2F..%2Fetc%2Fpasswd', '..%2Fmail%2Fmsg-newest', '.tmp-half-written', 'preview', '%2e%2e%2f', 'a%00b', '%E0%A4%A']) {
      for (const p of [`/api/messages/${id}`, `/messages/${id}`, `/messages/${id}/html`]) {
        const res = await get(p);
        expect(res.status, p).toBe(400);
        expect(JSON.parse(res.body), p).toEqual({ error: { code: 'invalid_id', message: 'A message id is a plain token' } });
        expect(res.body, p).not.toContain('root:');
      }
    }
  });

  it('answers 405 to anything but GET', async () => {
    const res = await fetch(`${server.url}/api/messages`, { method: 'POST', body: '{}' });
    expect(res.status).toBe(405);
    expect(res.headers.get('allow')).toBe('GET, HEAD');
    expect(await res.json()).toMatchObject({ error: { code: 'method_not_allowed' } });
  });
});
