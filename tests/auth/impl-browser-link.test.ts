// The other way a browser confirms: the link in the mail. Headless Chromium signs up on a page of
// its own origin (supabase-js's UMD build, detectSessionInUrl on, as apps have it), the test opens
// the confirmation link from the local mailbox in that tab, GET /auth/v1/verify redirects back to
// the page with the session in the fragment, and supabase-js picks it up: signed in, the user
// confirmed, the fragment cleared, PostgREST reading the user's profile under RLS.
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHROMIUM_PATH } from '../../scripts/lib/chromium.mjs';
import { ANON_KEY, API_URL, ROOT } from '../../scripts/lib/config.mjs';
import { latestAuthMail, PASSWORD, uniqueEmail, verifyLinkOf } from './support.ts';

const UMD = path.join(ROOT, 'node_modules/@supabase/supabase-js/dist/umd/supabase.js');
const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>Link app</title><script src="/supabase.js"></script></head>
<body><script>
  window.app = window.supabase.createClient(${JSON.stringify(API_URL)}, ${JSON.stringify(ANON_KEY)});
  window.events = [];
  window.app.auth.onAuthStateChange((event) => window.events.push(event));
</script></body></html>`;

let server: http.Server;
let pageUrl: string;
let profileDir: string;
let browser: BrowserContext;

beforeAll(async () => {
  if (!fs.existsSync(CHROMIUM_PATH)) throw new Error(`${CHROMIUM_PATH} is missing: install the Debian package chromium`);
  const umd = fs.readFileSync(UMD);
  server = http.createServer((req, res) => {
    if (req.url === '/supabase.js') res.writeHead(200, { 'content-type': 'text/javascript' }).end(umd);
    else res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(PAGE);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  pageUrl = `http://127.0.0.1:${(server.address() as { port: number }).port}/welcome`;
  profileDir = fs.mkdtempSync(path.join(os.tmpdir(), 'auth-link-'));
  browser = await chromium.launchPersistentContext(profileDir, {
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await new Promise((r) => server?.close(r));
  if (profileDir) fs.rmSync(profileDir, { recursive: true, force: true });
});

function inPage<T>(page: Page, fn: string, arg: unknown): Promise<T> {
  return page.evaluate(({ fn, arg }) => (0, eval)(fn)(arg), { fn, arg }) as Promise<T>;
}

describe('a browser following the confirmation link', () => {
  it('comes back to the app signed in, from the session in the fragment', async () => {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(pageUrl);
    const email = uniqueEmail('link');
    const signUp = await inPage<{ error: unknown; session: unknown }>(page, `async ({ email, password, to }) => {
      const { data, error } = await window.app.auth.signUp({ email, password, options: { emailRedirectTo: to } });
      return { error, session: data.session };
    }`, { email, password: PASSWORD, to: pageUrl });
    expect(signUp).toEqual({ error: null, session: null });

    const link = verifyLinkOf(await latestAuthMail(email, 'signup'));
    expect(link.searchParams.get('redirect_to')).toBe(pageUrl);
    await page.goto(link.toString());
    await page.waitForURL((url) => url.toString().startsWith(pageUrl));
    await page.waitForFunction(() => (window as unknown as { events: string[] }).events.includes('SIGNED_IN'), undefined, { timeout: 15_000 });

    const state = await inPage<{ email: string; confirmed: boolean; hash: string; profile: unknown; error: unknown }>(page, `async () => {
      const { data: { user } } = await window.app.auth.getUser();
      const { data: profile, error } = await window.app.from('profiles').select('email').eq('id', user.id).single();
      return { email: user.email, confirmed: !!user.email_confirmed_at, hash: location.hash, profile, error };
    }`, null);
    expect(state).toEqual({ email, confirmed: true, hash: '', profile: { email }, error: null });

    // The link is spent: opened again it redirects with the error in the fragment.
    const again = await fetch(link, { redirect: 'manual' });
    const fragment = new URLSearchParams(new URL(again.headers.get('location')!).hash.slice(1));
    expect(fragment.get('error_code')).toBe('otp_expired');
    expect(errors).toEqual([]);
    await page.close();
  }, 60_000);
});
