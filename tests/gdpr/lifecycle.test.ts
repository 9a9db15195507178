// The data lifecycle end to end, through the stack's gateway: an export of a person's data
// compared with what was seeded (files, counts, checksums, the mailed signed link); the erasure of
// a person seeded across the tables, after which neither the database (every text and JSON
// column of every schema) nor the stored files hold their email, name or phone; an
// organization's purge prepared with its export, interrupted midway and resumed, files included.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { unzipSync } from 'fflate';
import { describe, expect, it } from 'vitest';
import { LOCAL_DIR, SERVICE_ROLE_KEY } from '../../scripts/lib/config.mjs';
import { apiUrl, backendFor } from '../support/clients.ts';
import { sql } from '../support/db.ts';
import { addMember, insertOrganization } from '../support/organizations.ts';
import { createUser, type TestUser } from '../support/users.ts';

async function call(fn: string, body: Record<string, unknown> = {}): Promise<any> {
  const res = await fetch(`${apiUrl}/functions/v1/${fn}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${SERVICE_ROLE_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  expect(res.status, text).toBe(200);
  return JSON.parse(text);
}

const pdf = (text: string) => new TextEncoder().encode(`%PDF-1.7\n${text}\n%%EOF\n`);

/** A person with data across the tables: a profile with a name, a phone, memberships, an
 * invitation, an uploaded file, consent, mail, consumption, audit rows and events. */
async function seedSubject(tag: string) {
  const unique = crypto.randomUUID().slice(0, 8);
  const subject = await createUser(`${tag}-${unique}@gdpr.test`);
  // Unique per run, so what earlier runs left in the local store is not mistaken for this one's.
  const name = `Zelda ${tag} Quartermain-${unique}`;
  const phone = `+4915${Math.floor(100000000 + Math.random() * 899999999)}`;
  await sql`update auth.users set phone = ${phone}, raw_user_meta_data = ${sql.json({ full_name: name })} where id = ${subject.id}`;
  await sql`update public.profiles set full_name = ${name} where id = ${subject.id}`;
  const owner = await createUser();
  const shared = await insertOrganization({ owner, name: `Shared ${tag}` });
  await backendFor(owner).organizations.invite({ organizationId: shared.id, email: subject.email, role: 'member' });
  await addMember(shared.id, subject, 'member');
  const own = await insertOrganization({ owner: subject, name: `Own ${tag}` });
  const file = await backendFor(subject).files.upload({
    organizationId: shared.id, context: 'user_upload', file: pdf(`CV of ${name}`), name: 'cv.pdf', contentType: 'application/pdf',
  });
  await backendFor(subject).supabase.rpc('record_consent', { p_purpose: 'marketing_email', p_status: 'given', p_source: 'settings' });
  await sql`select private.enqueue_email('welcome', ${subject.email}, ${sql.json({ organizationName: `Shared ${tag}`, userName: name, dashboardUrl: 'https://app.test' })}, ${`gdpr-${tag}-${subject.id}`}, ${shared.id})`;
  await backendFor(subject).credits.consume({ organizationId: shared.id, action: 'ai_chat', quantity: 3 });
  return { subject, name, phone, shared: shared.id, own: own.id, owner, file };
}

describe('an export of a person\'s data', () => {
  it('holds every row about them, one file per table, counted and checksummed, behind a signed link', async () => {
    const { subject, name } = await seedSubject('export');
    const { data: request, error } = await backendFor(subject).supabase.rpc('file_data_subject_request', { p_kind: 'access' });
    expect(error).toBeNull();
    expect((request as any).due_at).toBeTruthy();
    await sql`select private.request_subject_export(${(request as any).id})`;
    const built = await call('gdpr-export');
    expect(built.failed).toEqual([]);
    const [mail] = await sql`select props from private.email_messages where template = 'data_export_ready' and recipient = ${subject.email}`;
    const zipped = new Uint8Array(await (await fetch(mail.props.downloadUrl)).arrayBuffer());
    const files = unzipSync(zipped);
    const manifest = JSON.parse(new TextDecoder().decode(files['manifest.json']));
    expect(manifest.files.length).toBeGreaterThan(3);
    for (const entry of manifest.files) {
      const bytes = files[entry.file];
      expect(createHash('sha256').update(bytes).digest('hex')).toBe(entry.sha256);
      const rows = JSON.parse(new TextDecoder().decode(bytes));
      expect(rows).toHaveLength(entry.rows);
    }
    const byTable = Object.fromEntries(manifest.files.map((f: any) => [f.table, JSON.parse(new TextDecoder().decode(files[f.file]))]));
    expect(byTable['public.profiles']).toEqual([expect.objectContaining({ id: subject.id, full_name: name })]);
    expect(byTable['public.organization_members']).toHaveLength(2);
    expect(byTable['public.files'].map((f: any) => f.file_name)).toEqual(['cv.pdf']);
    // As seeded: the same rows as the registry's queries find now.
    const [{ n }] = await sql`select count(*)::int as n from public.organization_members where user_id = ${subject.id}`;
    expect(byTable['public.organization_members']).toHaveLength(n);
    const [{ status }] = await sql`select status from public.data_subject_requests where id = ${(request as any).id}`;
    expect(status).toBe('completed');
    // The link is signed and expires: without its token Storage refuses.
    const bare = await fetch(mail.props.downloadUrl.split('?')[0]);
    expect(bare.status).toBeGreaterThanOrEqual(400);
    await bare.arrayBuffer();
  }, 60_000);
});

describe('the erasure of a person', () => {
  it('leaves their email, name and phone nowhere in the database or the stored files', async () => {
    const seeded = await seedSubject('erase');
    const { subject, name, phone, own, shared } = seeded;
    // A sole owner must say what happens to their organization.
    const { data: bare } = await backendFor(subject).supabase.rpc('file_data_subject_request', { p_kind: 'erasure' });
    const refused = await fetch(`${apiUrl}/functions/v1/gdpr-erase`, {
      method: 'POST', headers: { authorization: `Bearer ${SERVICE_ROLE_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ request_id: (bare as any).id }),
    });
    expect(refused.status).toBe(400);
    expect((await refused.json()).error.code).toBe('sole_owner');
    await sql`select public.advance_data_subject_request(${(bare as any).id}, 'rejected', 'Filed again with the organization''s fate')`;

    const { data: request } = await backendFor(subject).supabase.rpc('file_data_subject_request', {
      p_kind: 'erasure', p_details: { organizations: { [own]: 'close' } },
    });
    const erased = await call('gdpr-erase', { request_id: (request as any).id });
    expect(erased.files_removed).toBe(1);
    expect(erased.closed_organizations).toEqual([own]);

    // Every text and JSON column of every schema, searched for the three strings.
    const hits = await sql`
      select * from (
        select c.table_schema, c.table_name, c.column_name
        from information_schema.columns c
        join information_schema.tables t on t.table_schema = c.table_schema and t.table_name = c.table_name and t.table_type = 'BASE TABLE'
        where c.table_schema in ('public', 'private', 'auth', 'storage')
          and c.data_type in ('text', 'character varying', 'jsonb', 'json', 'character')
      ) cols`;
    const found: string[] = [];
    for (const col of hits) {
      const [{ n }] = await sql.unsafe(
        `select count(*)::int as n from "${col.table_schema}"."${col.table_name}" where "${col.column_name}"::text ilike any($1)`,
        [[`%${subject.email}%`, `%${name}%`, `%${phone}%`]],
      );
      if (n > 0) found.push(`${col.table_schema}.${col.table_name}.${col.column_name} (${n})`);
    }
    expect(found).toEqual([]);
    // The stored files.
    const storage = path.join(LOCAL_DIR, 'storage');
    const offenders: string[] = [];
    const walk = (dir: string) => {
      for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
        const full = path.join(dir, entry.name);
        if (entry.isDirectory()) walk(full);
        else if (fs.readFileSync(full).includes(name)) offenders.push(full);
      }
    };
    if (fs.existsSync(storage)) walk(storage);
    expect(offenders).toEqual([]);
    // What the law keeps stays, anonymised; the facts stay in the audit log.
    const [{ entries }] = await sql`select count(*)::int as entries from public.credit_ledger where organization_id = ${shared} and kind = 'consumption' and quantity = 3`;
    expect(entries).toBe(1);
    const [{ actions }] = await sql`select count(*)::int as actions from public.audit_log where action = 'erased' and row_id = ${(request as any).id}`;
    expect(actions).toBe(1);
    expect(await sql`select 1 from auth.users where id = ${subject.id}`).toHaveLength(0);
    const [{ status }] = await sql`select status from public.data_subject_requests where id = ${(request as any).id}`;
    expect(status).toBe('completed');
    // The organization they closed is purged at once: executing, then gone with the next run.
    const [{ purge }] = await sql`select status as purge from public.purge_operations where organization_id = ${own}`;
    expect(purge).toBe('executing');
    await call('lifecycle-purge');
    expect(await sql`select 1 from public.organizations where id = ${own}`).toHaveLength(0);
    const [{ status: closed }] = await sql`select status from public.purge_operations where organization_id = ${own}`;
    expect(closed).toBe('completed');
  }, 120_000);
});

describe('the purge of an organization', () => {
  it('offers the export first, runs in batches that resume after an interruption, and removes the files', async () => {
    const owner: TestUser = await createUser();
    const org = await insertOrganization({ owner, name: 'Purged Co' });
    const file = await backendFor(owner).files.upload({
      organizationId: org.id, context: 'user_upload', file: pdf('purge me'), name: 'notes.pdf', contentType: 'application/pdf',
    });
    await backendFor(owner).credits.consume({ organizationId: org.id, action: 'ai_chat', quantity: 2 });
    const { data: purge, error } = await backendFor(owner).supabase.rpc('request_organization_purge', { p_organization_id: org.id, p_reason: 'Closing' });
    expect(error).toBeNull();
    await call('lifecycle-purge');
    await call('gdpr-export');
    await call('lifecycle-purge');
    const [{ status, export_id: exportId }] = await sql`select status, export_id from public.purge_operations where id = ${(purge as any).id}`;
    expect(status).toBe('export_ready');
    const [mail] = await sql`select props from private.email_messages where template = 'data_export_ready' and recipient = ${owner.email}
      and props ->> 'organizationName' = 'Purged Co'`;
    expect(unzipSync(new Uint8Array(await (await fetch(mail.props.downloadUrl)).arrayBuffer()))['manifest.json']).toBeTruthy();
    expect(exportId).toBeTruthy();

    // The grace period passes; the purge is interrupted after two batches, then resumed.
    await sql`update public.purge_operations set scheduled_for = now() - interval '1 minute' where id = ${(purge as any).id}`;
    const first = await call('lifecycle-purge', { batch_size: 1, max_batches: 2 });
    expect(first.completed).toEqual([]);
    expect((await sql`select status from public.purge_operations where id = ${(purge as any).id}`)[0].status).toBe('executing');
    expect(await sql`select 1 from public.organizations where id = ${org.id}`).toHaveLength(1);
    const second = await call('lifecycle-purge');
    expect(second.completed).toContain((purge as any).id);
    expect(await sql`select 1 from public.organizations where id = ${org.id}`).toHaveLength(0);
    expect(await sql`select 1 from storage.objects where name = ${file.object_name}`).toHaveLength(0);
    expect(fs.existsSync(path.join(LOCAL_DIR, 'storage', 'private', file.object_name))).toBe(false);
    const [{ kept }] = await sql`select count(*)::int as kept from public.credit_ledger where organization_id = ${org.id}`;
    expect(kept).toBeGreaterThan(0);
    const [done] = await sql`select status, progress from public.purge_operations where id = ${(purge as any).id}`;
    expect(done.status).toBe('completed');
    // The file and the export offered before the purge: both objects gone, both records too.
    expect(done.progress.files_removed).toBe(2);
    expect(await sql`select 1 from private.data_exports where id = ${exportId}`).toHaveLength(0);
    expect(await sql`select 1 from storage.objects where name like ${`${org.id}/%`}`).toHaveLength(0);
    expect(await sql`select 1 from private.email_messages where template = 'data_purge_completed' and recipient = ${owner.email}`).toHaveLength(1);
  }, 120_000);
});
