// The whole way on the local stack as `npm start` runs it (no RESEND_API_KEY): an owner invites
// someone through the SDK, the email-dispatch function turns the member.invited event into a
// message and delivers it into the local mailbox (.local/mail/), and the mailbox page on port
// 54324, loaded in headless Chromium, lists it; opening it shows the accept link.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { chromium, type BrowserContext } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { API_URL, LOCAL_DIR, PORTS } from '../../scripts/lib/config.mjs';
import { CHROMIUM_PATH } from '../../scripts/lib/chromium.mjs';
import { backendFor } from '../support/clients.ts';
import { createOrganization } from '../support/organizations.ts';
import { createUser } from '../support/users.ts';
import { dispatch, messagesTo, pauseScheduledDispatch, settleOutbox } from './support.ts';

const MAILBOX_URL = `http://127.0.0.1:${PORTS.mailbox}`;
let profile: string;
let browser: BrowserContext;

pauseScheduledDispatch();

beforeAll(async () => {
  if (!fs.existsSync(CHROMIUM_PATH)) throw new Error(`${CHROMIUM_PATH} is missing: install the Debian package chromium`);
  profile = fs.mkdtempSync(path.join(os.tmpdir(), 'invitation-mailbox-'));
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  await settleOutbox();
}, 120000);

afterAll(async () => {
  await browser?.close();
  if (profile) fs.rmSync(profile, { recursive: true, force: true });
});

describe('an invitation on the local stack', () => {
  it('lands in .local/mail and on the mailbox page, with its accept link', async () => {
    const owner = await createUser();
    const org = await createOrganization(owner, 'Mailbox Co');
    const invitee = `invitee-${randomUUID().slice(0, 8)}@mailbox.example.test`;
    const ticket = await backendFor(owner).organizations.invite({ organizationId: org.id, email: invitee, role: 'member' });

    expect(await dispatch(API_URL)).toMatchObject({ enqueued: 1, sent: 1 });
    const [message] = await messagesTo(invitee);
    expect(message).toMatchObject({ status: 'sent', provider: 'mailbox' });
    const dir = path.join(LOCAL_DIR, 'mail', message.id);
    expect(fs.readFileSync(path.join(dir, 'message.txt'), 'utf8')).toContain(`/invitations/accept?token=${ticket.token}`);
    expect(JSON.parse(fs.readFileSync(path.join(dir, 'message.json'), 'utf8'))).toMatchObject({ to: invitee });

    const page = await browser.newPage();
    await page.goto(MAILBOX_URL);
    const subject = JSON.parse(fs.readFileSync(path.join(dir, 'message.json'), 'utf8')).subject as string;
    expect(subject).toContain('Mailbox Co');
    const link = page.locator('tr.message', { hasText: invitee }).getByRole('link');
    await link.first().waitFor({ timeout: 15000 });
    await link.first().click();
    await page.waitForURL(`${MAILBOX_URL}/messages/${message.id}`);
    await expect.poll(() => page.locator('pre.text').innerText()).toContain(`/invitations/accept?token=${ticket.token}`);
    await page.close();
  }, 60000);
});
