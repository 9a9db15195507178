// The mailbox page in a real browser: headless Chromium (Debian's `chromium`, which
// scripts/lib/chromium.mjs installs for `npm test`) driven by playwright-core. A message sent
// while the page is open shows up in the list without a reload by hand; clicking it shows its text
// and its HTML, whose scripts the sandbox keeps from running.
import fs from 'node:fs';
import path from 'node:path';
import { chromium, type BrowserContext } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHROMIUM_PATH } from '../../scripts/lib/chromium.mjs';
import { type MailboxServer, sendToMailbox, startMailboxServer, tempDir, testEmail } from './mailbox-support.ts';

let root: string;
let server: MailboxServer;
let browser: BrowserContext;

beforeAll(async () => {
  if (!fs.existsSync(CHROMIUM_PATH)) {
    throw new Error(`${CHROMIUM_PATH} is missing: install the Debian package chromium (apt-get install -y chromium); npm test does it as root`);
  }
  root = tempDir('mailbox-page-test');
  server = await startMailboxServer(path.join(root, 'mail'));
  // A fresh profile of its own, so nothing of another run (cache, cookies) leaks in.
  browser = await chromium.launchPersistentContext(path.join(root, 'profile'), {
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}, 120000);

afterAll(async () => {
  await browser?.close();
  await server?.stop();
  if (root) fs.rmSync(root, { recursive: true, force: true });
});

describe('the mailbox page in Chromium', () => {
  it('shows a message sent while it is open, and opens it on a click', async () => {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(server.url);
    await expect.poll(() => page.locator('main').innerText()).toContain('No mail yet');

    const email = testEmail({
      subject: `Your invitation to Acme ${Date.now()}`,
      text: 'Alice invited you to Acme.\nAccept: https://app.test/invite?t=xyz',
      html: '<p id="body">Alice invited you to <b>Acme</b>.</p><script>document.body.insertAdjacentHTML("beforeend", "<p id=ran>script ran</p>")</script>',
      headers: { 'List-Unsubscribe': '<https://app.test/unsubscribe>' },
    });
    expect(sendToMailbox(path.join(root, 'mail'), [{ email }])).toEqual([{ providerMessageId: `mailbox-${email.id}` }]);

    // The page polls the API and reloads itself once the list changed.
    const link = page.getByRole('link', { name: email.subject });
    await link.waitFor({ timeout: 15000 });
    await expect.poll(() => page.locator('tr.message').first().innerText()).toContain(email.to);

    await link.click();
    await page.waitForURL(`${server.url}/messages/${email.id}`);
    await expect.poll(() => page.locator('pre.text').innerText()).toBe(email.text);
    const headers = await page.locator('table.headers').innerText();
    expect(headers).toContain(email.subject);
    expect(headers).toContain('<https://app.test/unsubscribe>');

    const frame = page.frameLocator('iframe[title="HTML part"]');
    await expect.poll(() => frame.locator('#body').innerText()).toBe('Alice invited you to Acme.');
    expect(await frame.locator('#ran').count()).toBe(0);
    expect(errors).toEqual([]);
    await page.close();
  }, 60000);
});
