// The local mailbox page, the Inbucket/Mailpit of the Supabase CLI's stack: shows the mail the
// mailbox provider (functions/_shared/email-providers/mailbox.ts) wrote under LOCAL_MAIL_DIR.
//   GET /                      the messages, newest first; reloads itself when new mail arrives
//   GET /messages/<id>         headers, the text part, the HTML part in a sandboxed iframe
//   GET /messages/<id>/html    the HTML part alone, under a CSP that sandboxes it
//   GET /api/messages          {"messages": [{id, from, to, subject, sent_at}, ...]}, newest first
//   GET /api/messages/<id>     the message: json fields plus html and text
// Anything else is a JSON 404; an id that is not a plain token is a JSON 400. Read-only.
// Run: deno run --allow-net --allow-read --allow-env --config deno.json scripts/mailbox-server.ts
// Env: MAILBOX_PORT (54324), LOCAL_MAIL_DIR (.local/mail next to this checkout's scripts/).
import {
  isSafeMailboxId,
  listMailbox,
  type MailboxMessage,
  type MailboxSummary,
  readMailboxMessage,
} from '../functions/_shared/email-providers/mailbox.ts';

const PORT = Number(Deno.env.get('MAILBOX_PORT') ?? 54324);
const MAIL_DIR = Deno.env.get('LOCAL_MAIL_DIR') || new URL('../.local/mail', import.meta.url).pathname;
const POLL_SECONDS = 3;

function log(fields: Record<string, unknown>): void {
  console.log(JSON.stringify({ time: new Date().toISOString(), ...fields }));
}

function escapeHtml(value: unknown): string {
  return String(value ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'content-type': 'application/json', 'cache-control': 'no-store' },
  });
}

const notFound = (message = 'Not found') => json({ error: { code: 'not_found', message } }, 404);
const invalidId = () => json({ error: { code: 'invalid_id', message: 'A message id is a plain token' } }, 400);

// The list page's one script: polls the API and reloads when the messages change.
const POLL_SCRIPT = `(() => {
  const shown = document.body.dataset.ids;
  setInterval(async () => {
    try {
      const res = await fetch('/api/messages', { cache: 'no-store' });
      const { messages } = await res.json();
      if (messages.map((m) => m.id).join(',') !== shown) location.reload();
    } catch { /* the server is restarting */ }
  }, ${POLL_SECONDS * 1000});
})();`;
const POLL_SCRIPT_HASH = btoa(String.fromCharCode(
  ...new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(POLL_SCRIPT))),
));

const STYLE = `
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1f2328; }
header { padding: 12px 20px; background: #24292f; color: #fff; }
header a { color: #fff; text-decoration: none; font-weight: 600; }
main { padding: 16px 20px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid #d0d7de; vertical-align: top; }
th { color: #57606a; font-weight: 600; white-space: nowrap; }
tr.message:hover { background: #f6f8fa; }
td.time { white-space: nowrap; color: #57606a; }
pre { white-space: pre-wrap; background: #f6f8fa; padding: 12px; border-radius: 6px; }
iframe { width: 100%; height: 70vh; border: 1px solid #d0d7de; border-radius: 6px; background: #fff; }
.empty { color: #57606a; }
h2 { font-size: 16px; margin: 24px 0 8px; }
`;

/** A page of ours: no scripts but the poller, styles inline, frames only from here. */
function page(title: string, body: string, { ids }: { ids?: string } = {}): Response {
  const script = ids === undefined ? '' : `<script>${POLL_SCRIPT}</script>`;
  const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${escapeHtml(title)}</title>
<style>${STYLE}</style>
${ids === undefined ? '' : `<noscript><meta http-equiv="refresh" content="${POLL_SECONDS}"></noscript>`}
</head>
<body${ids === undefined ? '' : ` data-ids="${escapeHtml(ids)}"`}>
<header><a href="/">Local mailbox</a> <small>${escapeHtml(MAIL_DIR)}</small></header>
<main>
${body}
</main>
${script}
</body>
</html>
`;
  return new Response(html, {
    headers: {
      'content-type': 'text/html; charset=utf-8',
      'cache-control': 'no-store',
      'content-security-policy': [
        "default-src 'none'",
        "style-src 'unsafe-inline'",
        `script-src 'sha256-${POLL_SCRIPT_HASH}'`,
        "connect-src 'self'",
        "frame-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'none'",
      ].join('; '),
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'no-referrer',
    },
  });
}

/** 2026-01-02T03:04:05.678Z -> 2026-01-02 03:04:05 UTC */
function showTime(iso: string): string {
  const m = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})/.exec(iso);
  return m ? `${m[1]} ${m[2]} UTC` : iso;
}

const messageHref = (id: string) => `/messages/${encodeURIComponent(id)}`;

function listPage(messages: MailboxSummary[]): Response {
  const rows = messages.map((m) => `<tr class="message">
<td class="time"><time datetime="${escapeHtml(m.sent_at)}">${escapeHtml(showTime(m.sent_at))}</time></td>
<td>${escapeHtml(m.to)}</td>
<td><a href="${escapeHtml(messageHref(m.id))}">${escapeHtml(m.subject || '(no subject)')}</a></td>
</tr>`).join('\n');
  const body = messages.length === 0
    ? '<p class="empty">No mail yet. Mail sent without RESEND_API_KEY shows up here.</p>'
    : `<table>
<thead><tr><th>Time</th><th>To</th><th>Subject</th></tr></thead>
<tbody>
${rows}
</tbody>
</table>`;
  return page(`Local mailbox (${messages.length})`, body, { ids: messages.map((m) => m.id).join(',') });
}

function messagePage(m: MailboxMessage): Response {
  const headers: [string, string][] = [
    ['From', m.from],
    ['To', m.to],
    ['Subject', m.subject],
    ['Date', m.sent_at],
    ...Object.entries(m.headers),
    ...m.tags.map((t): [string, string] => [`Tag ${t.name}`, t.value]),
  ];
  const rows = headers.map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(v)}</td></tr>`).join('\n');
  const body = `<p><a href="/">&larr; All messages</a></p>
<table class="headers">
${rows}
</table>
<h2>Text</h2>
<pre class="text">${escapeHtml(m.text)}</pre>
<h2>HTML</h2>
<iframe title="HTML part" sandbox="allow-popups allow-popups-to-escape-sandbox" referrerpolicy="no-referrer" src="${
    escapeHtml(`${messageHref(m.id)}/html`)
  }"></iframe>`;
  return page(m.subject || '(no subject)', body);
}

/** The message's own HTML: sandboxed even when opened directly (CSP sandbox), no scripts, no forms. */
function htmlPart(m: MailboxMessage): Response {
  return new Response(m.html, {
    headers: {
      'content-type': 'text/html; charset=utf-8',
      'cache-control': 'no-store',
      'content-security-policy': [
        "default-src 'none'",
        'img-src data: http: https:',
        "style-src 'unsafe-inline' http: https:",
        'font-src data: http: https:',
        "frame-ancestors 'self'",
        "form-action 'none'",
        'sandbox allow-popups allow-popups-to-escape-sandbox',
      ].join('; '),
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'no-referrer',
    },
  });
}

/** The id in a path segment, or null when it is malformed or not a plain token. */
function idFrom(segment: string): string | null {
  let id: string;
  try {
    id = decodeURIComponent(segment);
  } catch {
    return null;
  }
  return isSafeMailboxId(id) ? id : null;
}

async function route(req: Request): Promise<Response> {
  const { pathname } = new URL(req.url);
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    const res = json({ error: { code: 'method_not_allowed', message: 'Use GET' } }, 405);
    res.headers.set('allow', 'GET, HEAD');
    return res;
  }
  if (pathname === '/') return listPage(await listMailbox(MAIL_DIR));
  if (pathname === '/api/messages') return json({ messages: await listMailbox(MAIL_DIR) });

  const match = /^\/(api\/messages|messages)\/([^/]+)(\/html)?$/.exec(pathname);
  if (!match || (match[3] && match[1] !== 'messages')) return notFound();
  const id = idFrom(match[2]);
  if (id === null) return invalidId();
  const message = await readMailboxMessage(MAIL_DIR, id);
  if (!message) return notFound('No message has this id');
  if (match[1] === 'api/messages') return json(message);
  return match[3] ? htmlPart(message) : messagePage(message);
}

const server = Deno.serve({
  port: PORT,
  hostname: '127.0.0.1',
  onListen: ({ hostname, port }) =>
    log({ level: 'info', msg: 'mailbox listening', url: `http://${hostname}:${port}`, dir: MAIL_DIR }),
}, async (req) => {
  const started = performance.now();
  let res: Response;
  try {
    res = await route(req);
  } catch (err) {
    log({ level: 'error', msg: 'mailbox error', error: (err as Error).message });
    res = json({ error: { code: 'internal_error', message: 'Internal error' } }, 500);
  }
  // The list page polls the API every few seconds: those answers are not worth a line each.
  const path = new URL(req.url).pathname;
  if (path === '/api/messages' && res.status === 200) return res;
  log({
    level: 'info',
    msg: 'request',
    method: req.method,
    path,
    status: res.status,
    ms: Math.round(performance.now() - started),
  });
  return res;
});

let stopping = false;
async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  log({ level: 'info', msg: 'mailbox stopping', signal });
  await Promise.race([server.shutdown(), new Promise((r) => setTimeout(r, 3000))]);
  Deno.exit(0);
}
Deno.addSignalListener('SIGINT', () => void shutdown('SIGINT'));
Deno.addSignalListener('SIGTERM', () => void shutdown('SIGTERM'));
