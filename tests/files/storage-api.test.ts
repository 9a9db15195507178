// The local Storage API (/storage/v1 on the gateway, scripts/storage/) through supabase-js, as a
// frontend or a server calls it: objects under the storage.objects policies (here the suite's
// own: members of the organization named by an object's first folder may read and write it),
// bytes on disk with their rows, Storage's error shapes, signed and public URLs, the bucket API
// for the service role, and uploads streamed rather than held in memory.
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { SupabaseClient } from '@supabase/supabase-js';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ANON_KEY, JWT_SECRET, LOCAL_DIR } from '../../scripts/lib/config.mjs';
import { apiUrl, clientFor, serviceClient } from '../support/clients.ts';
import { sql } from '../support/db.ts';
import { deleteOrganizations, insertOrganization, type OrganizationRow } from '../support/organizations.ts';
import { createUser, deleteUsers, type TestUser } from '../support/users.ts';
import { peakRss, pidListeningOn, resetPeak, rss } from './process-memory.ts';

const MiB = 1024 * 1024;
const STORAGE_DIR = process.env.LOCAL_STORAGE_DIR ?? path.join(LOCAL_DIR, 'storage');
const run = randomUUID().slice(0, 8);
const PRIVATE = `sapi-private-${run}`; // 50 MiB, any type
const PUBLIC = `sapi-public-${run}`; // public
const SMALL = `sapi-small-${run}`; // 1 KiB, image/png and text/*
const BUCKETS = [PRIVATE, PUBLIC, SMALL];
const POLICY = `sapi ${run}`;

let alice: TestUser; // member of orgA
let bob: TestUser; // member of orgB only: a stranger to orgA's files
let orgA: OrganizationRow;
let orgB: OrganizationRow;
let service: SupabaseClient;
let asAlice: SupabaseClient;
let asBob: SupabaseClient;
/** Buckets tests create on the way, removed with the others. */
const extraBuckets: string[] = [];

const diskPath = (bucket: string, name: string) => path.join(STORAGE_DIR, bucket, name);
const md5 = (bytes: Buffer | Uint8Array) => `"${createHash('md5').update(bytes).digest('hex')}"`;
const text = (s: string) => Buffer.from(s, 'utf8');

/** The row of an object, read as the admin connection (RLS bypassed). */
async function objectRow(bucket: string, name: string) {
  const [row] = await sql<{ id: string; owner: string | null; owner_id: string | null; version: string | null;
    metadata: Record<string, unknown>; user_metadata: Record<string, unknown> | null }[]>`
    select id, owner, owner_id, version, metadata, user_metadata from storage.objects where bucket_id = ${bucket} and name = ${name}`;
  return row;
}

/** A storage-js error, with the parts Storage answers: HTTP status, statusCode and code of the body, message. */
function expectStorageError(error: unknown, expected: { status?: number; statusCode?: string; code?: string; message?: string | RegExp }) {
  expect(error).toBeTruthy();
  const e = error as { status?: number; statusCode?: string; code?: string; message: string };
  if (expected.status !== undefined) expect(e.status).toBe(expected.status);
  if (expected.statusCode !== undefined) expect(e.statusCode).toBe(expected.statusCode);
  if (expected.code !== undefined) expect(e.code).toBe(expected.code);
  if (expected.message instanceof RegExp) expect(e.message).toMatch(expected.message);
  else if (expected.message !== undefined) expect(e.message).toBe(expected.message);
}

const NOT_FOUND = { status: 400, statusCode: '404', code: 'NoSuchKey', message: 'Object not found' };
const RLS = { status: 400, statusCode: '403', code: 'AccessDenied', message: 'new row violates row-level security policy' };

/** Files left in the upload temp folder (none once every upload has finished). */
function tempFiles(): string[] {
  try {
    return fs.readdirSync(path.join(STORAGE_DIR, '.~uploads'));
  } catch {
    return [];
  }
}

beforeAll(async () => {
  alice = await createUser();
  bob = await createUser();
  orgA = await insertOrganization({ owner: alice, name: 'Storage A' });
  orgB = await insertOrganization({ owner: bob, name: 'Storage B' });
  service = serviceClient();
  asAlice = clientFor(alice.token);
  asBob = clientFor(bob.token);

  // The buckets, through the bucket API as the service role.
  const buckets: [string, { public: boolean; fileSizeLimit?: number; allowedMimeTypes?: string[] }][] = [
    [PRIVATE, { public: false, fileSizeLimit: 50 * MiB }],
    [PUBLIC, { public: true }],
    [SMALL, { public: false, fileSizeLimit: 1024, allowedMimeTypes: ['image/png', 'text/*'] }],
  ];
  for (const [id, options] of buckets) {
    const { data, error } = await service.storage.createBucket(id, options);
    expect(error).toBeNull();
    expect(data).toEqual({ name: id });
  }

  // This suite's policies: the first folder of a name is an organization; its members read,
  // write, replace and delete what is under it, in this suite's buckets only.
  // DDL takes no parameters: the names are this run's own, made of [a-z0-9-] only.
  const scope = `bucket_id in (${BUCKETS.map((b) => `'${b}'`).join(', ')})
    and (storage.foldername(name))[1] in (select m::text from private.member_organization_ids() as m)`;
  await sql.unsafe(`create policy "${POLICY} read" on storage.objects for select to authenticated using (${scope})`);
  await sql.unsafe(`create policy "${POLICY} add" on storage.objects for insert to authenticated with check (${scope})`);
  await sql.unsafe(`create policy "${POLICY} replace" on storage.objects for update to authenticated using (${scope}) with check (${scope})`);
  await sql.unsafe(`create policy "${POLICY} delete" on storage.objects for delete to authenticated using (${scope})`);
});

afterAll(async () => {
  for (const suffix of ['read', 'add', 'replace', 'delete']) {
    await sql.unsafe(`drop policy if exists "${POLICY} ${suffix}" on storage.objects`);
  }
  const buckets = [...BUCKETS, ...extraBuckets];
  await sql`delete from storage.objects where bucket_id = any(${buckets}::text[])`;
  await sql`delete from storage.buckets where id = any(${buckets}::text[])`;
  for (const bucket of buckets) fs.rmSync(path.join(STORAGE_DIR, bucket), { recursive: true, force: true });
  await deleteOrganizations([orgA.id, orgB.id]);
  await deleteUsers([alice.id, bob.id]);
});

describe('uploads', () => {
  it('uploads a raw body (a Node Buffer) as the caller: row with owner, metadata and version, bytes on disk', async () => {
    const name = `${orgA.id}/raw/hello.txt`;
    const body = text('hello, storage');
    const { data, error } = await asAlice.storage.from(PRIVATE).upload(name, body, { contentType: 'text/plain', cacheControl: '120' });
    expect(error).toBeNull();
    expect(data).toMatchObject({ path: name, fullPath: `${PRIVATE}/${name}` });
    expect(data!.id).toMatch(/^[0-9a-f-]{36}$/);

    const row = await objectRow(PRIVATE, name);
    expect(row.id).toBe(data!.id);
    expect(row.owner).toBe(alice.id);
    expect(row.owner_id).toBe(alice.id);
    expect(row.version).toMatch(/^[0-9a-f-]{36}$/);
    expect(row.metadata).toEqual({
      eTag: md5(body),
      size: body.length,
      mimetype: 'text/plain',
      cacheControl: 'max-age=120',
      lastModified: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z$/),
      contentLength: body.length,
      httpStatusCode: 200,
    });
    expect(fs.readFileSync(diskPath(PRIVATE, name))).toEqual(body);
  });

  it('uploads multipart/form-data as browsers send a Blob, with its type, cache control and user metadata', async () => {
    const name = `${orgA.id}/multipart/pixel.png`;
    const bytes = randomBytes(3000);
    const { data, error } = await asAlice.storage.from(PRIVATE).upload(name, new Blob([bytes], { type: 'image/png' }), {
      cacheControl: '60',
      metadata: { department: 'design' },
    });
    expect(error).toBeNull();
    expect(data).toMatchObject({ path: name, fullPath: `${PRIVATE}/${name}` });
    const row = await objectRow(PRIVATE, name);
    expect(row.metadata).toMatchObject({ mimetype: 'image/png', cacheControl: 'max-age=60', size: 3000, eTag: md5(bytes) });
    expect(row.user_metadata).toEqual({ department: 'design' });
    expect(fs.readFileSync(diskPath(PRIVATE, name))).toEqual(bytes);
  });

  it('streams a large multipart file to disk byte for byte, across chunk boundaries', async () => {
    const name = `${orgA.id}/multipart/large.bin`;
    const bytes = randomBytes(3 * MiB + 12345);
    const { error } = await asAlice.storage.from(PRIVATE).upload(name, new Blob([bytes], { type: 'application/octet-stream' }));
    expect(error).toBeNull();
    expect(md5(fs.readFileSync(diskPath(PRIVATE, name)))).toBe(md5(bytes));
    expect((await objectRow(PRIVATE, name)).metadata).toMatchObject({ size: bytes.length, eTag: md5(bytes) });
  });

  it('uploads a FormData a browser builds itself (file field first or after other fields)', async () => {
    const name = `${orgA.id}/multipart/form.txt`;
    const form = new FormData();
    form.append('cacheControl', '30');
    form.append('file', new Blob(['from a form'], { type: 'text/csv' }), 'form.csv');
    const { error } = await asAlice.storage.from(PRIVATE).upload(name, form);
    expect(error).toBeNull();
    expect(fs.readFileSync(diskPath(PRIVATE, name), 'utf8')).toBe('from a form');
    expect((await objectRow(PRIVATE, name)).metadata).toMatchObject({ mimetype: 'text/csv', cacheControl: 'max-age=30' });
  });

  it('uploads a stream sent chunked, without a content-length', async () => {
    const name = `${orgA.id}/raw/streamed.bin`;
    const bytes = randomBytes(300 * 1024);
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let i = 0; i < bytes.length; i += 16 * 1024) controller.enqueue(bytes.subarray(i, i + 16 * 1024));
        controller.close();
      },
    });
    const { error } = await asAlice.storage.from(PRIVATE).upload(name, stream, { contentType: 'application/octet-stream' });
    expect(error).toBeNull();
    expect(md5(fs.readFileSync(diskPath(PRIVATE, name)))).toBe(md5(bytes));
  });

  it('refuses an upload over an existing object without upsert (409, The resource already exists), replaces it with upsert', async () => {
    const name = `${orgA.id}/raw/conflict.txt`;
    expect((await asAlice.storage.from(PRIVATE).upload(name, text('first'))).error).toBeNull();
    const { data, error } = await asAlice.storage.from(PRIVATE).upload(name, text('second'));
    expect(data).toBeNull();
    expectStorageError(error, { status: 400, statusCode: '409', code: 'KeyAlreadyExists', message: 'The resource already exists' });
    expect(fs.readFileSync(diskPath(PRIVATE, name), 'utf8')).toBe('first');

    const before = await objectRow(PRIVATE, name);
    const upserted = await asAlice.storage.from(PRIVATE).upload(name, text('second'), { upsert: true });
    expect(upserted.error).toBeNull();
    expect(upserted.data!.id).toBe(before.id); // the same object, a new version
    const after = await objectRow(PRIVATE, name);
    expect(after.version).not.toBe(before.version);
    expect(fs.readFileSync(diskPath(PRIVATE, name), 'utf8')).toBe('second');
    expect(tempFiles()).toEqual([]);
  });

  it('orders concurrent writers of one name: one upload wins and the rest are conflicts; upserts leave one writer\'s row and bytes', async () => {
    const name = `${orgA.id}/race/first.txt`;
    const results = await Promise.all(['a', 'b', 'c', 'd'].map((c) =>
      asAlice.storage.from(PRIVATE).upload(name, Buffer.alloc(200 * 1024, c))));
    expect(results.filter((r) => r.error === null)).toHaveLength(1);
    for (const r of results.filter((r) => r.error !== null)) expectStorageError(r.error, { statusCode: '409', code: 'KeyAlreadyExists' });
    expect(md5(fs.readFileSync(diskPath(PRIVATE, name)))).toBe((await objectRow(PRIVATE, name)).metadata.eTag);

    const upserted = `${orgA.id}/race/last.txt`;
    const writes = await Promise.all(['a', 'b', 'c', 'd'].map((c) =>
      asAlice.storage.from(PRIVATE).upload(upserted, Buffer.alloc(200 * 1024, c), { upsert: true })));
    for (const w of writes) expect(w.error).toBeNull();
    expect(md5(fs.readFileSync(diskPath(PRIVATE, upserted)))).toBe((await objectRow(PRIVATE, upserted)).metadata.eTag);
    expect(tempFiles()).toEqual([]);
  });

  it('update() replaces an object (and creates one that is not there, as Storage\'s PUT upserts)', async () => {
    const name = `${orgA.id}/raw/updated.txt`;
    expect((await asAlice.storage.from(PRIVATE).upload(name, text('v1'))).error).toBeNull();
    const { data, error } = await asAlice.storage.from(PRIVATE).update(name, text('v2, longer'), { contentType: 'text/markdown' });
    expect(error).toBeNull();
    expect(data).toMatchObject({ path: name, fullPath: `${PRIVATE}/${name}` });
    expect(fs.readFileSync(diskPath(PRIVATE, name), 'utf8')).toBe('v2, longer');
    expect((await objectRow(PRIVATE, name)).metadata).toMatchObject({ mimetype: 'text/markdown', size: 10 });

    const fresh = `${orgA.id}/raw/updated-new.txt`;
    expect((await asAlice.storage.from(PRIVATE).update(fresh, text('new'))).error).toBeNull();
    expect(fs.readFileSync(diskPath(PRIVATE, fresh), 'utf8')).toBe('new');
  });

  it('refuses names Storage refuses (non-ASCII, dot segments) and, on the local disk only, a file where a folder is', async () => {
    const bucket = asAlice.storage.from(PRIVATE);
    expectStorageError((await bucket.upload(`${orgA.id}/names/März.txt`, text('x'))).error,
      { status: 400, statusCode: '400', code: 'InvalidKey', message: `Invalid key: ${orgA.id}/names/März.txt` });
    // A dot segment never reaches the disk (URLs resolve them; an encoded one is refused).
    const dots = await fetch(`${apiUrl}/storage/v1/object/${PRIVATE}/${orgA.id}%2F..%2F..%2Fescape.txt`, {
      method: 'POST', headers: { apikey: ANON_KEY, authorization: `Bearer ${alice.token}`, 'content-type': 'text/plain' }, body: 'x',
    });
    expect(dots.status).toBe(400);
    expect(await dots.json()).toMatchObject({ statusCode: '400', code: 'InvalidKey' });
    expect(fs.existsSync(path.join(STORAGE_DIR, 'escape.txt'))).toBe(false);
    expect((await bucket.upload(`${orgA.id}/names/folder/file.txt`, text('inside'))).error).toBeNull();
    // Hosted Storage keeps both; the local disk cannot have a file and a folder of one name.
    expectStorageError((await bucket.upload(`${orgA.id}/names/folder`, text('x'))).error, { statusCode: '400', code: 'InvalidKey', message: /collides/ });
    expectStorageError((await bucket.upload(`${orgA.id}/names/folder/file.txt/deeper`, text('x'))).error, { statusCode: '400', code: 'InvalidKey', message: /collides/ });
    expect(fs.readFileSync(diskPath(PRIVATE, `${orgA.id}/names/folder/file.txt`), 'utf8')).toBe('inside');
    expect(await objectRow(PRIVATE, `${orgA.id}/names/folder`)).toBeUndefined();
  });

  it('refuses an upload to a bucket that does not exist', async () => {
    const { error } = await asAlice.storage.from(`no-such-bucket-${run}`).upload(`${orgA.id}/x.txt`, text('x'));
    expectStorageError(error, { status: 400, statusCode: '404', code: 'NoSuchBucket', message: 'Bucket not found' });
  });
});

describe('limits', () => {
  it('refuses a file over the bucket\'s limit (413 Payload too large) and writes nothing: no row, no file', async () => {
    const name = `${orgA.id}/limits/too-big.txt`;
    const { data, error } = await asAlice.storage.from(SMALL).upload(name, Buffer.alloc(2048, 'a'), { contentType: 'text/plain' });
    expect(data).toBeNull();
    expectStorageError(error, { status: 400, statusCode: '413', code: 'EntityTooLarge', message: 'The object exceeded the maximum allowed size' });
    expect((error as unknown as { error?: string }).error ?? 'Payload too large').toBe('Payload too large');
    expect(await objectRow(SMALL, name)).toBeUndefined();
    expect(fs.existsSync(diskPath(SMALL, name))).toBe(false);
  });

  it('refuses a multipart file over the limit and a chunked body over it, counted as they stream', async () => {
    const multipart = `${orgA.id}/limits/too-big.png`;
    const { error } = await asAlice.storage.from(SMALL).upload(multipart, new Blob([Buffer.alloc(4096)], { type: 'image/png' }));
    expectStorageError(error, { statusCode: '413', code: 'EntityTooLarge' });
    expect(await objectRow(SMALL, multipart)).toBeUndefined();
    expect(fs.existsSync(diskPath(SMALL, multipart))).toBe(false);

    const chunked = `${orgA.id}/limits/too-big-stream.txt`;
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let i = 0; i < 8; i++) controller.enqueue(new Uint8Array(512).fill(98));
        controller.close();
      },
    });
    const res = await asAlice.storage.from(SMALL).upload(chunked, stream, { contentType: 'text/plain' });
    expectStorageError(res.error, { statusCode: '413', code: 'EntityTooLarge' });
    expect(await objectRow(SMALL, chunked)).toBeUndefined();
    expect(fs.existsSync(diskPath(SMALL, chunked))).toBe(false);
    expect(tempFiles()).toEqual([]);
  });

  it('refuses a type the bucket does not allow (415 invalid_mime_type), accepts the allowed ones', async () => {
    const name = `${orgA.id}/types/doc.pdf`;
    const { error } = await asAlice.storage.from(SMALL).upload(name, text('%PDF-1.4'), { contentType: 'application/pdf' });
    expectStorageError(error, { status: 400, statusCode: '415', code: 'InvalidMimeType', message: 'mime type application/pdf is not supported' });
    expect(await objectRow(SMALL, name)).toBeUndefined();

    expect((await asAlice.storage.from(SMALL).upload(`${orgA.id}/types/a.png`, new Blob([Buffer.alloc(10)], { type: 'image/png' }))).error).toBeNull();
    // text/* allows storage-js's default type (text/plain;charset=UTF-8).
    expect((await asAlice.storage.from(SMALL).upload(`${orgA.id}/types/a.txt`, text('ok'))).error).toBeNull();
  });
});

describe('reads', () => {
  const name = () => `${orgA.id}/read/report.csv`;
  const body = text('a,b\n1,2\n3,4\n');

  beforeAll(async () => {
    const { error } = await asAlice.storage.from(PRIVATE).upload(name(), body, { contentType: 'text/csv', cacheControl: '300' });
    expect(error).toBeNull();
  });

  it('downloads the bytes', async () => {
    const { data, error } = await asAlice.storage.from(PRIVATE).download(name());
    expect(error).toBeNull();
    expect(Buffer.from(await data!.arrayBuffer())).toEqual(body);
    expect(data!.type).toBe('text/csv');
  });

  it('serves Content-Type, Content-Length, Cache-Control, ETag, Last-Modified, and one Range (206)', async () => {
    const url = `${apiUrl}/storage/v1/object/${PRIVATE}/${name()}`;
    const headers = { apikey: ANON_KEY, authorization: `Bearer ${alice.token}` };
    const res = await fetch(url, { headers });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/csv');
    expect(res.headers.get('content-length')).toBe(String(body.length));
    expect(res.headers.get('cache-control')).toBe('max-age=300');
    expect(res.headers.get('etag')).toBe(md5(body));
    expect(new Date(res.headers.get('last-modified')!).getTime()).toBeGreaterThan(Date.now() - 120_000);
    await res.arrayBuffer();

    const partial = await fetch(url, { headers: { ...headers, range: 'bytes=4-7' } });
    expect(partial.status).toBe(206);
    expect(partial.headers.get('content-range')).toBe(`bytes 4-7/${body.length}`);
    expect(Buffer.from(await partial.arrayBuffer())).toEqual(body.subarray(4, 8));

    const fresh = await fetch(url, { headers: { ...headers, 'if-none-match': md5(body) } });
    expect(fresh.status).toBe(304);
  });

  it('answers HEAD with the headers only, and the public info route for public buckets only', async () => {
    const head = await fetch(`${apiUrl}/storage/v1/object/${PRIVATE}/${name()}`, {
      method: 'HEAD', headers: { apikey: ANON_KEY, authorization: `Bearer ${alice.token}` },
    });
    expect(head.status).toBe(200);
    expect(head.headers.get('etag')).toBe(md5(body));
    expect(head.headers.get('content-length')).toBe(String(body.length));
    const info = await fetch(`${apiUrl}/storage/v1/object/info/public/${PRIVATE}/${name()}`);
    expect(info.status).toBe(400);
    expect(await info.json()).toMatchObject({ statusCode: '404', code: 'NoSuchBucket' });
  });

  it('info() and exists()', async () => {
    const { data, error } = await asAlice.storage.from(PRIVATE).info(name());
    expect(error).toBeNull();
    expect(data).toMatchObject({
      name: name(),
      bucketId: PRIVATE,
      size: body.length,
      contentType: 'text/csv',
      cacheControl: 'max-age=300',
      etag: md5(body),
    });
    expect(data!.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(data!.version).toMatch(/^[0-9a-f-]{36}$/);

    expect(await asAlice.storage.from(PRIVATE).exists(name())).toMatchObject({ data: true, error: null });
    const missing = await asAlice.storage.from(PRIVATE).exists(`${orgA.id}/read/missing.csv`);
    expect(missing.data).toBe(false);
    expectStorageError(missing.error, NOT_FOUND);
  });

  it('answers Object not found for a download of what is not there', async () => {
    const { data, error } = await asAlice.storage.from(PRIVATE).download(`${orgA.id}/read/missing.csv`);
    expect(data).toBeNull();
    expectStorageError(error, NOT_FOUND);
  });
});

describe('list', () => {
  const base = () => `${orgA.id}/list`;
  beforeAll(async () => {
    // Uploaded one after another, so created_at orders them as listed here.
    for (const file of ['b.txt', 'a.txt', 'C.txt', 'docs/one.txt', 'docs/two.txt', 'Drafts/x.txt', 'apple.txt']) {
      const { error } = await asAlice.storage.from(PRIVATE).upload(`${base()}/${file}`, text(file));
      expect(error).toBeNull();
    }
  });

  it('lists one level: folders (id null) among files, case-insensitively by name, names relative to the prefix', async () => {
    const { data, error } = await asAlice.storage.from(PRIVATE).list(base());
    expect(error).toBeNull();
    expect(data!.map((o) => o.name)).toEqual(['a.txt', 'apple.txt', 'b.txt', 'C.txt', 'docs', 'Drafts']);
    const docs = data!.find((o) => o.name === 'docs')!;
    expect(docs).toEqual({ name: 'docs', id: null, updated_at: null, created_at: null, last_accessed_at: null, metadata: null });
    const a = data!.find((o) => o.name === 'a.txt')!;
    expect(a.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(a.metadata).toMatchObject({ size: 5, mimetype: 'text/plain;charset=UTF-8' });
    // A trailing slash on the prefix is the same folder; a sub-folder lists its own level.
    expect((await asAlice.storage.from(PRIVATE).list(`${base()}/`)).data!.length).toBe(6);
    expect((await asAlice.storage.from(PRIVATE).list(`${base()}/docs`)).data!.map((o) => o.name)).toEqual(['one.txt', 'two.txt']);
  });

  it('pages with limit and offset, sorts by a column and order, searches by name prefix', async () => {
    const page = await asAlice.storage.from(PRIVATE).list(base(), { limit: 2, offset: 1 });
    expect(page.data!.map((o) => o.name)).toEqual(['apple.txt', 'b.txt']);

    const desc = await asAlice.storage.from(PRIVATE).list(base(), { sortBy: { column: 'name', order: 'desc' } });
    expect(desc.data!.map((o) => o.name)).toEqual(['Drafts', 'docs', 'C.txt', 'b.txt', 'apple.txt', 'a.txt']);

    // By a date column, folders first, then files in that order.
    const byCreated = await asAlice.storage.from(PRIVATE).list(base(), { sortBy: { column: 'created_at', order: 'asc' } });
    expect(byCreated.data!.map((o) => o.name)).toEqual(['Drafts', 'docs', 'b.txt', 'a.txt', 'C.txt', 'apple.txt']);

    const search = await asAlice.storage.from(PRIVATE).list(base(), { search: 'a' });
    expect(search.data!.map((o) => o.name)).toEqual(['a.txt', 'apple.txt']);
    const folderSearch = await asAlice.storage.from(PRIVATE).list(base(), { search: 'D' });
    expect(folderSearch.data!.map((o) => o.name)).toEqual(['docs', 'Drafts']);
  });
});

describe('move, copy, remove', () => {
  it('moves an object: the row and the bytes, the old name gone', async () => {
    const from = `${orgA.id}/moves/from.txt`;
    const to = `${orgA.id}/moves/sub/to.txt`;
    expect((await asAlice.storage.from(PRIVATE).upload(from, text('moving'))).error).toBeNull();
    const { data, error } = await asAlice.storage.from(PRIVATE).move(from, to);
    expect(error).toBeNull();
    expect(data).toEqual({ message: 'Successfully moved' });
    expect((await asAlice.storage.from(PRIVATE).exists(from)).data).toBe(false);
    expect(fs.existsSync(diskPath(PRIVATE, from))).toBe(false);
    expect(fs.readFileSync(diskPath(PRIVATE, to), 'utf8')).toBe('moving');
    const downloaded = await asAlice.storage.from(PRIVATE).download(to);
    expect(await downloaded.data!.text()).toBe('moving');
  });

  it('refuses a move onto an existing object (409)', async () => {
    const a = `${orgA.id}/moves/a.txt`;
    const b = `${orgA.id}/moves/b.txt`;
    await asAlice.storage.from(PRIVATE).upload(a, text('a'));
    await asAlice.storage.from(PRIVATE).upload(b, text('b'));
    const { error } = await asAlice.storage.from(PRIVATE).move(a, b);
    expectStorageError(error, { status: 400, statusCode: '409', message: 'The resource already exists' });
    expect(fs.readFileSync(diskPath(PRIVATE, a), 'utf8')).toBe('a');
    expect(fs.readFileSync(diskPath(PRIVATE, b), 'utf8')).toBe('b');
  });

  it('copies an object, also into another bucket', async () => {
    const from = `${orgA.id}/copies/source.txt`;
    await asAlice.storage.from(PRIVATE).upload(from, text('copy me'), { contentType: 'text/plain' });
    const to = `${orgA.id}/copies/dest.txt`;
    const { data, error } = await asAlice.storage.from(PRIVATE).copy(from, to);
    expect(error).toBeNull();
    expect(data).toEqual({ path: `${PRIVATE}/${to}` });
    expect(fs.readFileSync(diskPath(PRIVATE, to), 'utf8')).toBe('copy me');
    expect(fs.readFileSync(diskPath(PRIVATE, from), 'utf8')).toBe('copy me');
    const row = await objectRow(PRIVATE, to);
    expect(row.owner).toBe(alice.id);
    expect(row.metadata).toMatchObject({ mimetype: 'text/plain', eTag: md5(text('copy me')), size: 7 });

    const other = await asAlice.storage.from(PRIVATE).copy(from, to, { destinationBucket: PUBLIC });
    expect(other.error).toBeNull();
    expect(fs.readFileSync(diskPath(PUBLIC, to), 'utf8')).toBe('copy me');

    const again = await asAlice.storage.from(PRIVATE).copy(from, to);
    expectStorageError(again.error, { statusCode: '409', message: 'The resource already exists' });
  });

  it('removes objects and their bytes, answering what it removed', async () => {
    const names = [`${orgA.id}/removes/1.txt`, `${orgA.id}/removes/2.txt`];
    for (const n of names) await asAlice.storage.from(PRIVATE).upload(n, text(n));
    const { data, error } = await asAlice.storage.from(PRIVATE).remove([...names, `${orgA.id}/removes/never-there.txt`]);
    expect(error).toBeNull();
    expect(data!.map((o) => o.name).sort()).toEqual(names);
    expect(data![0]).toMatchObject({ bucket_id: PRIVATE, owner: alice.id });
    for (const n of names) {
      expect(fs.existsSync(diskPath(PRIVATE, n))).toBe(false);
      expect(await objectRow(PRIVATE, n)).toBeUndefined();
    }
    // The emptied folders go too.
    expect(fs.existsSync(path.join(STORAGE_DIR, PRIVATE, orgA.id, 'removes'))).toBe(false);
  });
});

describe('signed URLs', () => {
  const name = () => `${orgA.id}/signed/contract.txt`;

  beforeAll(async () => {
    expect((await asAlice.storage.from(PRIVATE).upload(name(), text('signed content'), { contentType: 'text/plain' })).error).toBeNull();
  });

  it('createSignedUrl: the link downloads without any key or token, with Expires', async () => {
    const { data, error } = await asAlice.storage.from(PRIVATE).createSignedUrl(name(), 60);
    expect(error).toBeNull();
    expect(data!.signedUrl).toMatch(new RegExp(`^${apiUrl}/storage/v1/object/sign/${PRIVATE}/${name()}\\?token=`));
    const res = await fetch(data!.signedUrl);
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('signed content');
    expect(new Date(res.headers.get('expires')!).getTime()).toBeGreaterThan(Date.now());

    // The token is a JWT with the object's path, as Storage signs it.
    const token = new URL(data!.signedUrl).searchParams.get('token')!;
    const payload = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString());
    expect(payload).toMatchObject({ url: `${PRIVATE}/${name()}` });
    expect(payload.exp - payload.iat).toBe(60);

    const download = await asAlice.storage.from(PRIVATE).createSignedUrl(name(), 60, { download: 'mine.txt' });
    const attached = await fetch(download.data!.signedUrl);
    expect(attached.headers.get('content-disposition')).toBe("attachment; filename=mine.txt; filename*=UTF-8''mine.txt");
    await attached.arrayBuffer();
  });

  it('refuses an expired token, a forged one and one for another object', async () => {
    const key = new TextEncoder().encode(JWT_SECRET);
    const now = Math.floor(Date.now() / 1000);
    const url = `${apiUrl}/storage/v1/object/sign/${PRIVATE}/${name()}`;
    const expired = await new SignJWT({ url: `${PRIVATE}/${name()}`, scope: 'download' })
      .setProtectedHeader({ alg: 'HS256' }).setIssuedAt(now - 120).setExpirationTime(now - 60).sign(key);
    const res1 = await fetch(`${url}?token=${expired}`);
    expect(res1.status).toBe(400);
    expect(await res1.json()).toEqual({ statusCode: '400', code: 'InvalidJWT', error: 'InvalidJWT', message: '"exp" claim timestamp check failed' });

    const forged = await new SignJWT({ url: `${PRIVATE}/${name()}`, scope: 'download' })
      .setProtectedHeader({ alg: 'HS256' }).setIssuedAt().setExpirationTime('1h')
      .sign(new TextEncoder().encode('not-the-project-secret-but-just-as-long-as-it'));
    const res2 = await fetch(`${url}?token=${forged}`);
    expect(res2.status).toBe(400);
    expect(await res2.json()).toMatchObject({ statusCode: '400', code: 'InvalidJWT', message: 'signature verification failed' });

    const other = await asAlice.storage.from(PRIVATE).createSignedUrl(`${orgA.id}/read/report.csv`, 60);
    const otherToken = new URL(other.data!.signedUrl).searchParams.get('token');
    const res3 = await fetch(`${url}?token=${otherToken}`);
    expect(res3.status).toBe(400);
    expect(await res3.json()).toMatchObject({ code: 'InvalidSignature', message: 'Invalid signature' });

    const none = await fetch(url);
    expect(none.status).toBe(400);
    await none.arrayBuffer();
  });

  it('createSignedUrls: a link per visible object, an error for the others', async () => {
    const missing = `${orgA.id}/signed/missing.txt`;
    const { data, error } = await asAlice.storage.from(PRIVATE).createSignedUrls([name(), missing], 60);
    expect(error).toBeNull();
    expect(data![0]).toMatchObject({ path: name(), error: null });
    expect(await (await fetch(data![0].signedUrl!)).text()).toBe('signed content');
    expect(data![1]).toEqual({ path: missing, error: 'Either the object does not exist or you do not have access to it', signedURL: null, signedUrl: null });
  });

  it('createSignedUploadUrl + uploadToSignedUrl: anyone with the token uploads there once, as the signer', async () => {
    const target = `${orgA.id}/signed/uploaded.txt`;
    const { data, error } = await asAlice.storage.from(PRIVATE).createSignedUploadUrl(target);
    expect(error).toBeNull();
    expect(data!.signedUrl).toContain(`/storage/v1/object/upload/sign/${PRIVATE}/${target}?token=`);
    const payload = JSON.parse(Buffer.from(data!.token.split('.')[1], 'base64url').toString());
    expect(payload).toMatchObject({ url: `${PRIVATE}/${target}`, owner: alice.id, upsert: false, scope: 'upload' });

    // A client without a session (the anon key only) uses the token.
    const anonymous = clientFor();
    const up = await anonymous.storage.from(PRIVATE).uploadToSignedUrl(target, data!.token, new Blob(['via signed url'], { type: 'text/plain' }));
    expect(up.error).toBeNull();
    expect(up.data).toMatchObject({ path: target, fullPath: `${PRIVATE}/${target}` });
    expect(fs.readFileSync(diskPath(PRIVATE, target), 'utf8')).toBe('via signed url');
    expect((await objectRow(PRIVATE, target)).owner).toBe(alice.id);

    // Without upsert in the token, a second upload is a conflict; a download token is no upload token.
    const again = await anonymous.storage.from(PRIVATE).uploadToSignedUrl(target, data!.token, text('again'));
    expectStorageError(again.error, { statusCode: '409', message: 'The resource already exists' });
    const download = await asAlice.storage.from(PRIVATE).createSignedUrl(target, 60);
    const downloadToken = new URL(download.data!.signedUrl).searchParams.get('token')!;
    const misuse = await anonymous.storage.from(PRIVATE).uploadToSignedUrl(target, downloadToken, text('x'));
    expectStorageError(misuse.error, { statusCode: '400', code: 'InvalidSignature', message: 'Token is not scoped for upload' });
  });
});

describe('public URLs', () => {
  it('serves an object of a public bucket without any key or token', async () => {
    const name = `${orgA.id}/public/logo.png`;
    const bytes = randomBytes(500);
    expect((await asAlice.storage.from(PUBLIC).upload(name, new Blob([bytes], { type: 'image/png' }))).error).toBeNull();
    const { data } = asAlice.storage.from(PUBLIC).getPublicUrl(name);
    expect(data.publicUrl).toBe(`${apiUrl}/storage/v1/object/public/${PUBLIC}/${name}`);
    const res = await fetch(data.publicUrl);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('image/png');
    expect(Buffer.from(await res.arrayBuffer())).toEqual(bytes);
    // An anonymous supabase-js reads it too (public buckets are read past the policies).
    const anon = await clientFor().storage.from(PUBLIC).download(name);
    expect(anon.error).toBeNull();
  });

  it('refuses a private object through the public route and to a caller without a token', async () => {
    const name = `${orgA.id}/read/report.csv`;
    const res = await fetch(asAlice.storage.from(PRIVATE).getPublicUrl(name).data.publicUrl);
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ statusCode: '404', code: 'NoSuchBucket', error: 'Bucket not found', message: 'Bucket not found' });

    const bare = await fetch(`${apiUrl}/storage/v1/object/${PRIVATE}/${name}`, { headers: { apikey: ANON_KEY, authorization: '' } });
    expect(bare.status).toBe(400);
    expect(await bare.json()).toMatchObject({ statusCode: '404', code: 'NoSuchBucket' });

    const anon = await clientFor().storage.from(PRIVATE).download(name);
    expectStorageError(anon.error, NOT_FOUND);
  });
});

describe('a stranger (another organization\'s member)', () => {
  const name = () => `${orgA.id}/secret/plan.txt`;

  beforeAll(async () => {
    expect((await asAlice.storage.from(PRIVATE).upload(name(), text('secret plan'))).error).toBeNull();
  });

  it('is refused on every call, as the policies decide and Storage answers', async () => {
    const bucket = asBob.storage.from(PRIVATE);
    expectStorageError((await bucket.upload(`${orgA.id}/secret/bob.txt`, text('x'))).error, RLS);
    expectStorageError((await bucket.upload(name(), text('x'), { upsert: true })).error, RLS);
    expectStorageError((await bucket.update(name(), text('x'))).error, RLS);
    expectStorageError((await bucket.download(name())).error, NOT_FOUND);
    expectStorageError((await bucket.info(name())).error, NOT_FOUND);
    expect((await bucket.exists(name())).data).toBe(false);
    expect((await bucket.list(`${orgA.id}/secret`)).data).toEqual([]);
    expectStorageError((await bucket.move(name(), `${orgB.id}/stolen.txt`)).error, NOT_FOUND);
    expectStorageError((await bucket.copy(name(), `${orgB.id}/stolen.txt`)).error, NOT_FOUND);
    expectStorageError((await bucket.createSignedUrl(name(), 60)).error, NOT_FOUND);
    const many = await bucket.createSignedUrls([name()], 60);
    expect(many.data![0]).toMatchObject({ error: 'Either the object does not exist or you do not have access to it', signedURL: null });
    expectStorageError((await bucket.createSignedUploadUrl(`${orgA.id}/secret/bob.txt`)).error, RLS);
    // remove() deletes only what the policies let the caller delete: nothing here.
    expect((await bucket.remove([name()])).data).toEqual([]);

    // Nothing changed.
    expect(fs.readFileSync(diskPath(PRIVATE, name()), 'utf8')).toBe('secret plan');
    expect(await objectRow(PRIVATE, `${orgA.id}/secret/bob.txt`)).toBeUndefined();
    expect(await objectRow(PRIVATE, `${orgB.id}/stolen.txt`)).toBeUndefined();
    expect((await objectRow(PRIVATE, name())).owner).toBe(alice.id);
  });

  it('writes in their own organization\'s folder', async () => {
    const { error } = await asBob.storage.from(PRIVATE).upload(`${orgB.id}/mine.txt`, text('bob'));
    expect(error).toBeNull();
  });
});

describe('the bucket API', () => {
  it('works for the service role: create, get, list, update, empty, delete', async () => {
    const id = `sapi-managed-${run}`;
    extraBuckets.push(id);
    expect((await service.storage.createBucket(id, { public: false, fileSizeLimit: '1MB', allowedMimeTypes: ['text/plain'] })).error).toBeNull();
    const dup = await service.storage.createBucket(id);
    expectStorageError(dup.error, { statusCode: '409', code: 'BucketAlreadyExists', message: 'The resource already exists' });

    const got = await service.storage.getBucket(id);
    expect(got.error).toBeNull();
    expect(got.data).toMatchObject({ id, name: id, public: false, file_size_limit: 1000000, allowed_mime_types: ['text/plain'] });

    const listed = await service.storage.listBuckets({ search: `managed-${run}` });
    expect(listed.data!.map((b) => b.id)).toEqual([id]);

    const updated = await service.storage.updateBucket(id, { public: true, fileSizeLimit: 2048, allowedMimeTypes: null });
    expect(updated.error).toBeNull();
    expect(updated.data).toEqual({ message: 'Successfully updated' });
    expect((await service.storage.getBucket(id)).data).toMatchObject({ public: true, file_size_limit: 2048, allowed_mime_types: null });

    expect((await service.storage.from(id).upload('one/file.txt', text('1'))).error).toBeNull();
    const notEmpty = await service.storage.deleteBucket(id);
    expectStorageError(notEmpty.error, { statusCode: '409', code: 'ResourceNotEmpty', message: 'The bucket you tried to delete is not empty' });

    const emptied = await service.storage.emptyBucket(id);
    expect(emptied.error).toBeNull();
    expect(await objectRow(id, 'one/file.txt')).toBeUndefined();
    expect(fs.existsSync(diskPath(id, 'one/file.txt'))).toBe(false);

    const deleted = await service.storage.deleteBucket(id);
    expect(deleted.error).toBeNull();
    expect(deleted.data).toEqual({ message: 'Successfully deleted' });
    expectStorageError((await service.storage.getBucket(id)).error, { statusCode: '404', code: 'NoSuchBucket', message: 'Bucket not found' });
    expect(fs.existsSync(path.join(STORAGE_DIR, id))).toBe(false);
  });

  it('is refused for a user', async () => {
    // With no policy on storage.buckets a user sees no bucket; writes are refused by the grants
    // (locally: read only, 403 permission denied) or, where they are granted, by RLS (404).
    const created = await asAlice.storage.createBucket(`sapi-user-${run}`);
    expectStorageError(created.error, { status: 400, statusCode: '403', code: 'AccessDenied' });
    expect((await sql`select 1 from storage.buckets where id = ${`sapi-user-${run}`}`).length).toBe(0);
    expectStorageError((await asAlice.storage.getBucket(PRIVATE)).error, { statusCode: '404', message: 'Bucket not found' });
    const updated = await asAlice.storage.updateBucket(SMALL, { public: true });
    expectStorageError(updated.error, { status: 400 });
    expect((updated.error as unknown as { statusCode: string }).statusCode).toMatch(/^40[34]$/);

    const empty = `sapi-empty-${run}`;
    extraBuckets.push(empty);
    await sql`insert into storage.buckets (id, name) values (${empty}, ${empty})`;
    const deleted = await asAlice.storage.deleteBucket(empty);
    expectStorageError(deleted.error, { status: 400 });
    expect((deleted.error as unknown as { statusCode: string }).statusCode).toMatch(/^40[34]$/);
    expectStorageError((await asAlice.storage.emptyBucket(PRIVATE)).error, { status: 403, statusCode: '403', message: 'Access denied: Invalid role' });

    expect((await service.storage.getBucket(SMALL)).data).toMatchObject({ public: false });
    expect((await service.storage.getBucket(empty)).error).toBeNull();
  });
});

describe('the gateway', () => {
  it('requires an apikey like Kong, except on public and signed links; answers CORS preflights', async () => {
    const res = await fetch(`${apiUrl}/storage/v1/bucket`);
    expect(res.status).toBe(401);
    expect(await res.json()).toEqual({ message: 'No API key found in request' });
    const bad = await fetch(`${apiUrl}/storage/v1/object/list/${PRIVATE}`, { method: 'POST', headers: { apikey: 'nope' } });
    expect(bad.status).toBe(401);
    expect(await bad.json()).toEqual({ message: 'Invalid authentication credentials' });

    const preflight = await fetch(`${apiUrl}/storage/v1/object/${PRIVATE}/a.txt`, {
      method: 'OPTIONS',
      headers: {
        origin: 'http://localhost:3000',
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'authorization, apikey, x-client-info, x-upsert, content-type, cache-control',
      },
    });
    expect(preflight.status).toBeLessThan(300);
    expect(preflight.headers.get('access-control-allow-origin')).toBe('*');
    const allowed = preflight.headers.get('access-control-allow-headers') ?? '';
    for (const h of ['authorization', 'apikey', 'x-client-info', 'x-upsert', 'content-type', 'cache-control']) expect(allowed).toContain(h);
    expect(preflight.headers.get('access-control-allow-methods')).toContain('PUT');
  });

  it('answers an unknown route in Storage\'s shape', async () => {
    const res = await fetch(`${apiUrl}/storage/v1/nothing-here`, { headers: { apikey: ANON_KEY } });
    expect(res.status).toBe(404);
    expect(await res.json()).toMatchObject({ statusCode: '404', error: 'Not Found', code: 'InvalidRequest' });
  });
});

describe('streaming', () => {
  it('takes a 20 MiB upload (bucket limit 50 MiB) without holding it in the gateway\'s memory, and serves it back', async () => {
    const name = `${orgA.id}/big/twenty.bin`;
    const bytes = randomBytes(20 * MiB);
    const pid = pidListeningOn(Number(new URL(apiUrl).port || 80));
    let baseline = 0;
    let sampledPeak = 0;
    let sampler: NodeJS.Timeout | undefined;
    const canResetPeak = pid !== null && resetPeak(pid);
    if (pid !== null) {
      baseline = rss(pid);
      sampler = setInterval(() => {
        sampledPeak = Math.max(sampledPeak, rss(pid));
      }, 5);
    }
    const { error } = await asAlice.storage.from(PRIVATE).upload(name, bytes, { contentType: 'application/octet-stream' });
    if (sampler) clearInterval(sampler);
    expect(error).toBeNull();
    expect(md5(fs.readFileSync(diskPath(PRIVATE, name)))).toBe(md5(bytes));
    expect((await objectRow(PRIVATE, name)).metadata).toMatchObject({ size: 20 * MiB, eTag: md5(bytes) });

    if (pid !== null) {
      const peak = Math.max(sampledPeak, canResetPeak ? peakRss(pid) : 0);
      const growth = peak - baseline;
      console.log(`gateway ${pid}: RSS ${(baseline / MiB).toFixed(1)} MiB before, peak ${(peak / MiB).toFixed(1)} MiB during a 20 MiB upload (+${(growth / MiB).toFixed(1)} MiB)`);
      // Buffering the body would add 20 MiB; streaming through one reused buffer adds ~1-3 MiB.
      expect(growth).toBeLessThan(8 * MiB);
    }

    // And back, streamed from disk.
    const res = await fetch(`${apiUrl}/storage/v1/object/authenticated/${PRIVATE}/${name}`, {
      headers: { apikey: ANON_KEY, authorization: `Bearer ${alice.token}` },
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-length')).toBe(String(20 * MiB));
    const hash = createHash('md5');
    const reader = res.body!.getReader();
    for (let r = await reader.read(); !r.done; r = await reader.read()) hash.update(r.value);
    expect(`"${hash.digest('hex')}"`).toBe(md5(bytes));
  }, 60_000);
});
