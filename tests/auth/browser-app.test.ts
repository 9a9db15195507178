// A frontend in a real browser against `npm start`'s gateway (54321, email confirmations on as in
// supabase/config.toml): a page of its own origin (a port of this test) loads supabase-js's UMD
// build and, in headless Chromium, signs up, confirms with the code from the local mailbox, signs
// in, creates an organization by RPC and reads it back under RLS, and signs out. supabase-js keeps
// its session in localStorage, and every call is cross-origin, so CORS is exercised too.
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHROMIUM_PATH } from '../../scripts/lib/chromium.mjs';
import { ANON_KEY, API_URL, ROOT } from '../../scripts/lib/config.mjs';
import { sql } from '../support/db.ts';
import { uniqueSlug } from '../support/organizations.ts';
import { codeOf, latestAuthMail, PASSWORD, uniqueEmail } from './support.ts';

const UMD = path.join(ROOT, 'node_modules/@supabase/supabase-js/dist/umd/supabase.js');
const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>Auth app</title><script src="/supabase.js"></script></head>
<body><p id="status">loading</p>
<script>
  window.app = window.supabase.createClient(${JSON.stringify(API_URL)}, ${JSON.stringify(ANON_KEY)});
  window.events = [];
  window.app.auth.onAuthStateChange((event) => window.events.push(event));
  document.getElementById('status').textContent = 'ready';
</script></body></html>`;

let server: http.Server;
let pageUrl: string;
let profileDir: string;
let browser: BrowserContext;
const organizations: string[] = [];

beforeAll(async () => {
  if (!fs.existsSync(CHROMIUM_PATH)) {
    throw new Error(`${CHROMIUM_PATH} is missing: install the Debian package chromium (apt-get install -y chromium); npm test does it as root`);
  }
  const umd = fs.readFileSync(UMD);
  server = http.createServer((req, res) => {
    if (req.url === '/supabase.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' }).end(umd);
    } else {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(PAGE);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  pageUrl = `http://127.0.0.1:${(server.address() as { port: number }).port}/`;
  profileDir = fs.mkdtempSync(path.join(os.tmpdir(), 'auth-browser-'));
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
  if (organizations.length > 0) await sql`delete from public.organizations where id = any(${organizations}::uuid[])`;
});

/** Runs `fn` in the page with `arg`; supabase-js's results come back as plain data. */
function inPage<T>(page: Page, fn: string, arg: unknown): Promise<T> {
  return page.evaluate(({ fn, arg }) => (0, eval)(fn)(arg), { fn, arg }) as Promise<T>;
}

describe('a browser app on supabase-js', () => {
  it('signs up, confirms from the mailbox, signs in, uses RLS and signs out', async () => {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(pageUrl);
    await expect.poll(() => page.locator('#status').innerText()).toBe('ready');
    const email = uniqueEmail('browser');

    const signUp = await inPage<{ user: { email: string } | null; session: unknown; error: unknown }>(page, `async ({ email, password }) => {
      const { data, error } = await window.app.auth.signUp({ email, password, options: { data: { full_name: 'Browser User' } } });
      return { user: data.user, session: data.session, error: error && { code: error.code, message: error.message } };
    }`, { email, password: PASSWORD });
    expect(signUp.error).toBeNull();
    expect(signUp.user?.email).toBe(email);
    expect(signUp.session).toBeNull();

    const code = codeOf(await latestAuthMail(email, 'signup'));
    const verified = await inPage<{ userEmail: string | null; error: unknown }>(page, `async ({ email, token }) => {
      const { data, error } = await window.app.auth.verifyOtp({ email, token, type: 'email' });
      return { userEmail: data.user && data.user.email, error: error && error.code };
    }`, { email, token: code });
    expect(verified).toEqual({ userEmail: email, error: null });

    // Out and in again with the password; the session lives in localStorage.
    const signIn = await inPage<{ error: unknown; stored: boolean }>(page, `async ({ email, password }) => {
      await window.app.auth.signOut();
      const { error } = await window.app.auth.signInWithPassword({ email, password });
      const stored = Object.keys(localStorage).some((k) => k.startsWith('sb-') && k.endsWith('-auth-token'));
      return { error: error && error.code, stored };
    }`, { email, password: PASSWORD });
    expect(signIn).toEqual({ error: null, stored: true });

    const slug = uniqueSlug('browser');
    const rls = await inPage<{ orgId: string; error: unknown; rows: { id: string; slug: string }[]; profile: unknown }>(page, `async ({ slug }) => {
      const created = await window.app.rpc('create_organization', { p_name: 'Browser Co', p_slug: slug });
      const read = await window.app.from('organizations').select('id, slug');
      const me = await window.app.auth.getUser();
      const profile = await window.app.from('profiles').select('full_name').eq('id', me.data.user.id).single();
      return { orgId: created.data, error: created.error || read.error, rows: read.data, profile: profile.data };
    }`, { slug });
    organizations.push(rls.orgId);
    expect(rls.error).toBeNull();
    expect(rls.rows).toEqual([{ id: rls.orgId, slug }]);
    expect(rls.profile).toEqual({ full_name: 'Browser User' });

    const signOut = await inPage<{ error: unknown; session: unknown; events: string[]; stored: boolean }>(page, `async () => {
      const { error } = await window.app.auth.signOut();
      const { data } = await window.app.auth.getSession();
      const stored = Object.keys(localStorage).some((k) => k.startsWith('sb-') && k.endsWith('-auth-token'));
      return { error: error && error.code, session: data.session, events: window.events, stored };
    }`, undefined);
    expect(signOut.error).toBeNull();
    expect(signOut.session).toBeNull();
    expect(signOut.stored).toBe(false);
    expect(signOut.events).toEqual(expect.arrayContaining(['SIGNED_IN', 'SIGNED_OUT']));
    const [{ n }] = await sql`select count(*)::int as n from auth.sessions s join auth.users u on u.id = s.user_id where u.email = ${email}`;
    expect(n).toBe(0);
    expect(errors).toEqual([]);
    await page.close();
  }, 90_000);
});
