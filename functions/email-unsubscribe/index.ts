// /functions/v1/email-unsubscribe?token=... (verify_jwt = false): the one-click unsubscribe link of
// every non-required mail, which works without signing in. The token (signed, expiring; see
// functions/_shared/signing.ts) says which address leaves which category.
//   GET   a page that asks to confirm (a link scanner opening the link unsubscribes nobody)
//   POST  unsubscribes: the page's button, or a mailbox provider's RFC 8058 one-click POST
//         (body List-Unsubscribe=One-Click)
import { withServiceRole } from '../_shared/db.ts';
import { emailEnv, requireSecret } from '../_shared/env.ts';
import { createHandler } from '../_shared/handler.ts';
import { verifyToken } from '../_shared/signing.ts';

const CATEGORY_NAMES: Record<string, string> = {
  account: 'account notices (invitations, welcome messages)',
  billing: 'billing notices',
  usage_alerts: 'usage alerts (low and depleted credits)',
  product_news: 'product news',
  marketing: 'marketing',
};

const escape = (s: string) =>
  s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

function page(status: number, title: string, body: string): Response {
  return new Response(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;color:#1f2937}
button{font-size:1rem;padding:.6rem 1.2rem;border-radius:.4rem;border:0;background:#111827;color:#fff;cursor:pointer}</style>
</head><body><h1>${escape(title)}</h1>${body}</body></html>`, {
    status,
    headers: {
      'content-type': 'text/html; charset=utf-8',
      'content-security-policy': "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
      'cache-control': 'no-store',
    },
  });
}

export const handler = createHandler(async (req) => {
  const url = new URL(req.url);
  const token = url.searchParams.get('token') ?? '';
  const claims = await verifyToken(token, requireSecret(emailEnv().unsubscribeSecret, 'EMAIL_UNSUBSCRIBE_SECRET'));
  const email = typeof claims?.e === 'string' ? claims.e : null;
  const category = typeof claims?.c === 'string' && claims.c in CATEGORY_NAMES ? claims.c : null;
  if (!email || !category) {
    return page(400, 'This link does not work', '<p>The unsubscribe link is invalid or has expired. Use the link in a newer mail, or change your mail preferences in your account settings.</p>');
  }
  const what = CATEGORY_NAMES[category];
  if (req.method === 'GET') {
    return page(200, 'Unsubscribe?', `<p>Stop sending ${escape(what)} to <strong>${escape(email)}</strong>?</p>
<form method="post" action="?token=${encodeURIComponent(token)}"><input type="hidden" name="List-Unsubscribe" value="One-Click"><button type="submit">Unsubscribe</button></form>
<p>Mail you must receive (sign-in links, receipts, notices the law requires) keeps coming.</p>`);
  }
  await withServiceRole((tx) => tx`select private.unsubscribe_email(${email}, ${category}::public.email_category)`);
  return page(200, 'You are unsubscribed', `<p>We will send no more ${escape(what)} to <strong>${escape(email)}</strong>.</p>`);
}, { name: 'email-unsubscribe', methods: ['GET', 'POST'] });

if (import.meta.main) Deno.serve(handler);
