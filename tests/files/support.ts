// What the files suites share: file bodies whose first bytes are what they claim (or not), and an
// organization with an owner, an admin, a plain member and a stranger from another organization.
import { addMember, insertOrganization } from '../support/organizations.ts';
import { createUser, type TestUser } from '../support/users.ts';
import { sql } from '../support/db.ts';

/** A minimal PDF of about `bytes` bytes (a real header, padding, the end marker). */
export function pdf(bytes = 2048, seed = 'x'): Uint8Array<ArrayBuffer> {
  const head = '%PDF-1.7\n%\u00e2\u00e3\u00cf\u00d3\n';
  const tail = '\n%%EOF\n';
  const body = seed.repeat(Math.max(0, bytes - head.length - tail.length)).slice(0, Math.max(0, bytes - head.length - tail.length));
  return new TextEncoder().encode(head + body + tail);
}

/** A PNG signature followed by padding: enough for the content check. */
export function png(bytes = 512): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(bytes);
  out.set([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return out;
}

/** A Windows program (MZ header): what must never pass as a PDF. */
export function windowsProgram(bytes = 1024): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(bytes);
  out.set([0x4d, 0x5a, 0x90, 0x00, 0x03]);
  return out;
}

export interface Team {
  organizationId: string;
  owner: TestUser;
  admin: TestUser;
  member: TestUser;
  /** The owner of another organization, nothing in this one. */
  stranger: TestUser;
  strangerOrganizationId: string;
}

/** A fresh organization with its cast, and another one for the stranger. */
export async function createTeam(): Promise<Team> {
  const [owner, admin, member, stranger] = await Promise.all([createUser(), createUser(), createUser(), createUser()]);
  const org = await insertOrganization({ owner, name: 'Files Co' });
  const other = await insertOrganization({ owner: stranger, name: 'Other Co' });
  await addMember(org.id, admin, 'admin');
  await addMember(org.id, member, 'member');
  return { organizationId: org.id, owner, admin, member, stranger, strangerOrganizationId: other.id };
}

/** The storage.objects rows of a bucket under a name prefix (as the database sees them). */
export async function objectsUnder(bucket: string, prefix: string): Promise<string[]> {
  const rows = await sql<{ name: string }[]>`
    select name from storage.objects where bucket_id = ${bucket} and name like ${`${prefix}%`} order by name`;
  return rows.map((r) => r.name);
}
