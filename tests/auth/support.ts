// The Auth suites' fixtures: a gateway of their own (tests/support/gateway.ts) with the
// environment a suite needs (AUTH_ENABLE_CONFIRMATIONS, AUTH_JWT_EXPIRY, ...; a fresh process also
// means fresh in-memory rate limits), supabase-js clients against it as a frontend holds them,
// and the auth mails read back from the local mailbox's JSON API (port 54324), as a person would
// read them: the 6-digit code and the /auth/v1/verify link.
import { randomUUID } from 'node:crypto';
import { createClient, type SupabaseClient, type SupportedStorage } from '@supabase/supabase-js';
import { afterAll, beforeAll } from 'vitest';
import { ANON_KEY, PORTS, SERVICE_ROLE_KEY } from '../../scripts/lib/config.mjs';
import { startGateway, type Gateway } from '../support/gateway.ts';

export const MAILBOX_URL = `http://127.0.0.1:${PORTS.mailbox}`;

/** A fresh address for one test (lower case, as Auth stores it). */
export function uniqueEmail(label = 'user'): string {
  return `${label}-${randomUUID().slice(0, 8)}@auth.example.test`;
}

/** A password that meets the default requirements (6+ characters). */
export const PASSWORD = 'correct-horse-battery-9';

/**
 * Starts a gateway with `env` before the file's tests and stops it after them; the returned
 * object's `url` is set once it is up.
 */
export function useGateway(env: Record<string, string> = {}): { url: string } {
  const holder = { url: '' };
  let gateway: Gateway | undefined;
  beforeAll(async () => {
    gateway = await startGateway(env);
    holder.url = gateway.url;
  }, 90_000);
  afterAll(async () => {
    await gateway?.stop();
  });
  return holder;
}

/** An in-memory storage, so each client keeps its own session (as one browser tab would). */
export function memoryStorage(): SupportedStorage & { items: Map<string, string> } {
  const items = new Map<string, string>();
  return {
    items,
    getItem: (k: string) => items.get(k) ?? null,
    setItem: (k: string, v: string) => void items.set(k, v),
    removeItem: (k: string) => void items.delete(k),
  };
}

export interface ClientOptions {
  autoRefreshToken?: boolean;
  flowType?: 'implicit' | 'pkce';
}

/** supabase-js with the anon key, holding its session in memory as a frontend holds it. */
export function authClient(url: string, options: ClientOptions = {}): SupabaseClient {
  return createClient(url, ANON_KEY, {
    auth: {
      storage: memoryStorage(),
      persistSession: true,
      autoRefreshToken: options.autoRefreshToken ?? false,
      detectSessionInUrl: false,
      flowType: options.flowType ?? 'implicit',
    },
  });
}

/** supabase-js with the service role key: what a backend uses for the admin API. */
export function adminClient(url: string): SupabaseClient {
  return createClient(url, SERVICE_ROLE_KEY, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
  });
}

/** Creates a confirmed user with a password through the admin API. */
export async function createConfirmedUser(
  url: string,
  email = uniqueEmail(),
  extra: Record<string, unknown> = {},
): Promise<{ id: string; email: string; password: string }> {
  const { data, error } = await adminClient(url).auth.admin.createUser({ email, password: PASSWORD, email_confirm: true, ...extra });
  if (error) throw error;
  return { id: data.user!.id, email, password: PASSWORD };
}

/** A client signed in as a new confirmed user. */
export async function signedIn(url: string, options: ClientOptions = {}, email = uniqueEmail()) {
  const user = await createConfirmedUser(url, email);
  const client = authClient(url, options);
  const { data, error } = await client.auth.signInWithPassword({ email: user.email, password: user.password });
  if (error) throw error;
  return { client, user, session: data.session! };
}

/** The claims of a JWT (no verification: the server under test signed it). */
export function decodeJwt(token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'));
}

// ---------------------------------------------------------------------------------------------
// The mailbox
// ---------------------------------------------------------------------------------------------
export interface Mail {
  id: string;
  to: string;
  subject: string;
  text: string;
  html: string;
  sent_at: string;
}

async function listMailbox(): Promise<{ id: string; to: string; subject: string; sent_at: string }[]> {
  const res = await fetch(`${MAILBOX_URL}/api/messages`);
  if (!res.ok) throw new Error(`mailbox answered ${res.status}`);
  return (await res.json()).messages;
}

/** Every mail to `address`, oldest first. */
export async function mailsTo(address: string): Promise<Mail[]> {
  const listed = (await listMailbox()).filter((m) => m.to.toLowerCase() === address.toLowerCase());
  const mails: Mail[] = [];
  for (const m of listed) {
    const res = await fetch(`${MAILBOX_URL}/api/messages/${encodeURIComponent(m.id)}`);
    if (res.ok) mails.push(await res.json());
  }
  return mails.sort((a, b) => a.sent_at.localeCompare(b.sent_at));
}

/** Waits until `address` has received `count` mails (default 1) and returns them, oldest first. */
export async function waitForMails(address: string, count = 1, timeoutMs = 15_000): Promise<Mail[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const mails = await mailsTo(address);
    if (mails.length >= count) return mails;
    if (Date.now() > deadline) throw new Error(`expected ${count} mail(s) to ${address}, got ${mails.length}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** The latest mail to `address`, once there are `count` of them. */
export async function latestMail(address: string, count = 1): Promise<Mail> {
  const mails = await waitForMails(address, count);
  return mails[mails.length - 1];
}

/**
 * The latest auth mail to `address` whose link is of `type` (signup, magiclink, recovery, invite,
 * email_change), once there are `count` of them: other mail (an invitation to an organization)
 * may arrive at the same address.
 */
export async function latestAuthMail(address: string, type: string, count = 1, timeoutMs = 15_000): Promise<Mail> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const mails = (await mailsTo(address)).filter((m) => {
      try {
        return verifyLinkOf(m).searchParams.get('type') === type;
      } catch {
        return false;
      }
    });
    if (mails.length >= count) return mails[mails.length - 1];
    if (Date.now() > deadline) throw new Error(`expected ${count} ${type} mail(s) to ${address}, got ${mails.length}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** The 6-digit code of a mail. */
export function codeOf(mail: Mail): string {
  const m = /\b(\d{6})\b/.exec(mail.text);
  if (!m) throw new Error(`no code in the mail "${mail.subject}":\n${mail.text}`);
  return m[1];
}

/** The /auth/v1/verify link of a mail. */
export function verifyLinkOf(mail: Mail): URL {
  const m = /https?:\/\/[^\s<>"')\]]+\/auth\/v1\/verify\?[^\s<>"')\]]+/.exec(mail.text);
  if (!m) throw new Error(`no verify link in the mail "${mail.subject}":\n${mail.text}`);
  return new URL(m[0].replaceAll('&amp;', '&'));
}

/** Follows a verify link without following its redirect; answers the Location as a URL. */
export async function openLink(link: URL | string): Promise<{ status: number; location: URL }> {
  const res = await fetch(link, { redirect: 'manual' });
  await res.arrayBuffer();
  const location = res.headers.get('location');
  if (!location) throw new Error(`no redirect from ${link} (status ${res.status})`);
  return { status: res.status, location: new URL(location) };
}

/** The parameters of a redirect's fragment (the implicit flow's session or error). */
export function fragmentOf(url: URL): URLSearchParams {
  return new URLSearchParams(url.hash.replace(/^#/, ''));
}

/** Collects the auth events a client emits. */
export function recordEvents(client: SupabaseClient): string[] {
  const events: string[] = [];
  client.auth.onAuthStateChange((event) => {
    events.push(event);
  });
  return events;
}

/** Waits until `predicate` holds (polling), or fails after `timeoutMs`. */
export async function eventually(predicate: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 100));
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
