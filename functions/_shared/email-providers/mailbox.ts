// The local mailbox: without RESEND_API_KEY, mail is written to disk (LOCAL_MAIL_DIR, .local/mail/
// in the stack) and read back by the mailbox page on port 54324 (scripts/mailbox-server.ts), as
// the Supabase CLI's local stack has Inbucket/Mailpit. One folder per message:
//
//   <dir>/<id>/message.json   id, from, to, subject, headers, tags, sent_at (ISO)
//   <dir>/<id>/message.html
//   <dir>/<id>/message.txt
//
// A message is written into a temporary folder and renamed into place, so a reader sees all of it
// or none. Sending an id that is already there writes nothing and answers the same id: the outbox
// retries with its message id as the idempotency key. Deno APIs: runs in the gateway and the page.
import { type EmailProvider, type OutgoingEmail, SendError, type SendResult } from './types.ts';

/** What the list shows of a message. */
export interface MailboxSummary {
  id: string;
  from: string;
  to: string;
  subject: string;
  sent_at: string;
}

/** message.json. */
export interface MailboxRecord extends MailboxSummary {
  headers: Record<string, string>;
  tags: { name: string; value: string }[];
}

/** A whole message: message.json plus both parts. */
export interface MailboxMessage extends MailboxRecord {
  html: string;
  text: string;
}

// A folder name that is one plain path segment: no separators, no dot-only names, no hidden ones.
const SAFE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
/** Written by `npm run email:preview`; not a message. */
const PREVIEW_DIR = 'preview';

/** True when `id` can name a message folder: a plain token, never a path, never `preview`. */
export function isSafeMailboxId(id: string): boolean {
  return SAFE_ID.test(id) && id !== PREVIEW_DIR;
}

function assertSafeId(id: string): void {
  if (!isSafeMailboxId(id)) throw new Error(`not a mailbox message id: ${JSON.stringify(id).slice(0, 80)}`);
}

const join = (dir: string, ...parts: string[]) => [dir.replace(/\/+$/, ''), ...parts].join('/');

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

export interface MailboxOptions {
  /** The clock for sent_at (tests). */
  now?: () => Date;
}

export function mailboxProvider(dir: string, { now = () => new Date() }: MailboxOptions = {}): EmailProvider {
  return {
    name: 'mailbox',
    async send(email: OutgoingEmail): Promise<SendResult> {
      if (!isSafeMailboxId(email.id)) throw new SendError('the message id is not a plain token', 'permanent');
      const result = { providerMessageId: `mailbox-${email.id}` };
      const target = join(dir, email.id);
      try {
        if (await exists(target)) return result; // sent before: a retry
        await Deno.mkdir(dir, { recursive: true });
        // Hidden (a dot first), so the page never lists it; unique, so two senders never share it.
        const tmp = join(dir, `.tmp-${email.id}-${crypto.randomUUID()}`);
        await Deno.mkdir(tmp);
        try {
          const record: MailboxRecord = {
            id: email.id,
            from: email.from,
            to: email.to,
            subject: email.subject,
            headers: { ...email.headers },
            tags: email.tags ?? [],
            sent_at: now().toISOString(),
          };
          await Deno.writeTextFile(join(tmp, 'message.html'), email.html);
          await Deno.writeTextFile(join(tmp, 'message.txt'), email.text);
          await Deno.writeTextFile(join(tmp, 'message.json'), `${JSON.stringify(record, null, 2)}\n`);
          try {
            await Deno.rename(tmp, target);
          } catch (err) {
            // A concurrent send of the same id got there first (rename onto a non-empty folder fails).
            if (await exists(target)) return result;
            throw err;
          }
        } finally {
          await Deno.remove(tmp, { recursive: true }).catch(() => {});
        }
        return result;
      } catch (err) {
        if (err instanceof SendError) throw err;
        throw new SendError(`mailbox: cannot write the message: ${(err as Error).message}`, 'temporary');
      }
    },
  };
}

async function readRecord(dir: string, id: string): Promise<MailboxRecord | null> {
  try {
    const record = JSON.parse(await Deno.readTextFile(join(dir, id, 'message.json')));
    return record && typeof record === 'object' && record.id === id ? record as MailboxRecord : null;
  } catch {
    return null; // not a message folder, or not readable
  }
}

/** Every message in `dir`, newest first (by sent_at). A missing folder is an empty mailbox. */
export async function listMailbox(dir: string): Promise<MailboxSummary[]> {
  const ids: string[] = [];
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (entry.isDirectory && isSafeMailboxId(entry.name)) ids.push(entry.name);
    }
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return [];
    throw err;
  }
  const records = (await Promise.all(ids.map((id) => readRecord(dir, id)))).filter((r) => r !== null);
  return records
    .map(({ id, from, to, subject, sent_at }) => ({ id, from, to, subject, sent_at }))
    .sort((a, b) => (a.sent_at === b.sent_at ? b.id.localeCompare(a.id) : a.sent_at < b.sent_at ? 1 : -1));
}

/** One message with both parts, or null when there is none by that id. Throws for an id that is not a plain token. */
export async function readMailboxMessage(dir: string, id: string): Promise<MailboxMessage | null> {
  assertSafeId(id);
  const record = await readRecord(dir, id);
  if (!record) return null;
  const read = (name: string) => Deno.readTextFile(join(dir, id, name)).catch(() => '');
  const [html, text] = await Promise.all([read('message.html'), read('message.txt')]);
  return { ...record, headers: record.headers ?? {}, tags: record.tags ?? [], html, text };
}
