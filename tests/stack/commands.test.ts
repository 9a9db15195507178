// The stack's commands against the running stack: a second `up` only reports, `status` tells
// the truth, `token` mints a JWT the API accepts.
import { spawnSync } from 'node:child_process';
import { jwtVerify } from 'jose';
import { describe, expect, it } from 'vitest';
import { API_URL, ANON_KEY, JWT_SECRET, ROOT } from '../../scripts/lib/config.mjs';

function node(...args: string[]) {
  return spawnSync(process.execPath, args, { cwd: ROOT, encoding: 'utf8', timeout: 60000 });
}

describe('npm run stack:up while the stack runs', () => {
  it('only prints the status', () => {
    const r = node('scripts/stack.mjs', 'up');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('already running');
    expect(r.stdout).toContain('health: ok');
    expect(r.stdout).not.toContain('starting');
  });
});

describe('npm run stack:status', () => {
  it('lists every service as running, with the URLs and keys', () => {
    const r = node('scripts/stack.mjs', 'status');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/Postgres\s+running/);
    expect(r.stdout).toMatch(/PostgREST\s+running/);
    expect(r.stdout).toMatch(/Gateway\s+running/);
    expect(r.stdout).toMatch(/Mailbox\s+running/);
    for (const secret of ['SEND_EMAIL_HOOK_SECRET', 'RESEND_WEBHOOK_SECRET', 'EMAIL_UNSUBSCRIBE_SECRET']) {
      expect(r.stdout).toMatch(new RegExp(`^\\s*${secret}\\s+\\S+`, 'm'));
    }
    expect(r.stdout).toContain(ANON_KEY);
  });
});

describe('npm run token', () => {
  it('creates the user once and prints a JWT that the API accepts', async () => {
    const email = `token-${Date.now()}@example.com`;
    const first = node('scripts/token.mjs', email);
    expect(first.status).toBe(0);
    expect(first.stderr).toContain(`created user ${email}`);
    const token = first.stdout.trim();
    const { payload } = await jwtVerify(token, new TextEncoder().encode(JWT_SECRET));
    expect(payload).toMatchObject({ role: 'authenticated', email });

    const second = node('scripts/token.mjs', email.toUpperCase());
    expect(second.status).toBe(0);
    expect(second.stderr).not.toContain('created user');
    const again = await jwtVerify(second.stdout.trim(), new TextEncoder().encode(JWT_SECRET));
    expect(again.payload.sub).toBe(payload.sub);

    const res = await fetch(`${API_URL}/functions/v1/me`, { headers: { Authorization: `Bearer ${token}` } });
    expect(res.status).toBe(200);
    expect((await res.json()).user.email).toBe(email);
  });

  it('marks platform admins in app_metadata', async () => {
    const r = node('scripts/token.mjs', `ops-${Date.now()}@example.com`, '--platform-admin');
    expect(r.status).toBe(0);
    const { payload } = await jwtVerify(r.stdout.trim(), new TextEncoder().encode(JWT_SECRET));
    expect(payload.app_metadata).toMatchObject({ platform_admin: true });
  });

  it('refuses a missing or malformed email with usage', () => {
    const r = node('scripts/token.mjs', 'not-an-email');
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('usage: npm run token -- <email>');
  });
});
