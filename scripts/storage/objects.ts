// The object routes (supabase/storage src/http/routes/object/*, src/storage/object.ts and
// uploader.ts), each as Storage runs it: buckets looked up as the service role (Storage's
// superuser), objects read and written as the caller so the storage.objects policies decide;
// the public and signed routes read (and the signed upload writes) as the service role.
import { type Caller, SCOPE_DOWNLOAD, SCOPE_UPLOAD, serviceCaller, signUrlToken, verifyUrlToken } from './auth.ts';
import { config } from './config.ts';
import { asCaller, testPermission, type Tx, withObjectLocks } from './db.ts';
import { ERRORS } from './errors.ts';
import { MAX_FIELD_BYTES, multipartBoundary, readMultipart, reusedChunks } from './multipart.ts';
import { assertPlaceable, copyToTemp, discard, FileChanges, objectFile, openObject, type Received, receive } from './store.ts';
import {
  integerField,
  isEmptyFolder,
  isUuid,
  mustBeValidBucketName,
  mustBeValidKey,
  parseUserMetadata,
  readJson,
  stringField,
  validateMimeType,
} from './validate.ts';

interface BucketRow {
  id: string;
  public: boolean;
  file_size_limit: string | number | null;
  allowed_mime_types: string[] | null;
}

interface ObjectRow {
  id: string;
  name: string;
  bucket_id: string;
  version: string | null;
  owner: string | null;
  owner_id: string | null;
  metadata: Record<string, unknown> | null;
  user_metadata: Record<string, unknown> | null;
  created_at: Date | null;
  updated_at: Date | null;
  last_accessed_at: Date | null;
}

/** Room for the multipart envelope and fields around a file, when judging a content-length. */
const MULTIPART_OVERHEAD = MAX_FIELD_BYTES + 64 * 1024;
/** Storage's MAX_OBJECTS_PER_REQUEST: paths per sign-many and prefixes per delete-many call. */
const MAX_OBJECTS_PER_REQUEST = 1000;
const EMPTY_BUCKET_MAX = 200000;

export function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json', ...headers } });
}

/** A jsonb parameter (postgres.js serializes it); null for none. */
function jsonb(tx: Tx, value: Record<string, unknown> | null | undefined) {
  return value === undefined || value === null ? null : tx.json(value as never);
}

function ownerColumns(owner: string | undefined): { owner: string | null; owner_id: string | null } {
  return { owner: isUuid(owner) ? owner! : null, owner_id: owner ?? null };
}

async function findBucket(bucketId: string, operation: string): Promise<BucketRow | undefined> {
  const [bucket] = await asCaller(serviceCaller(), operation, (tx) =>
    tx<BucketRow[]>`
      select id, public, file_size_limit, allowed_mime_types from storage.buckets where id = ${bucketId} limit 1`);
  return bucket;
}

async function selectObject(tx: Tx, bucketId: string, name: string): Promise<ObjectRow | undefined> {
  const [row] = await tx<ObjectRow[]>`
    select id, name, bucket_id, version, owner, owner_id, metadata, user_metadata, created_at, updated_at, last_accessed_at
    from storage.objects where name = ${name} and bucket_id = ${bucketId} limit 1`;
  return row;
}

/** An object as `caller` sees it; NoSuchKey when there is none or the policies hide it. */
async function findObject(caller: Caller, operation: string, bucketId: string, name: string): Promise<ObjectRow> {
  mustBeValidKey(name);
  const row = await asCaller(caller, operation, (tx) => selectObject(tx, bucketId, name));
  if (!row) throw ERRORS.NoSuchKey();
  return row;
}

// ---------------------------------------------------------------------------------------------
// Uploads
// ---------------------------------------------------------------------------------------------
interface IncomingFile {
  mimeType: string;
  cacheControl: string;
  userMetadata?: Record<string, unknown>;
  /** The request's content-length, for the policies' metadata.contentLength while checking. */
  declaredLength?: number;
  body: AsyncIterable<Uint8Array>;
  /** Reads what follows the file in a multipart body. */
  finish?: () => Promise<void>;
}

const EMPTY_BODY: AsyncIterable<Uint8Array> = { async *[Symbol.asyncIterator]() {} };

/**
 * The file of an upload request (Storage's fileUploadFromRequest): multipart/form-data as
 * browsers and storage-js send a Blob/File/FormData, or the raw body as storage-js sends a
 * Buffer/stream. The type and the declared size are checked before a byte of the file is read.
 */
async function incomingFile(req: Request, name: string, bucket: BucketRow, maxFileSize: number): Promise<IncomingFile> {
  const contentType = req.headers.get('content-type');
  const lengthHeader = req.headers.get('content-length');
  const declaredLength = lengthHeader !== null && /^\d+$/.test(lengthHeader) ? Number(lengthHeader) : undefined;
  const allowed = bucket.allowed_mime_types ?? [];
  const checkType = (mimeType: string) => {
    if (allowed.length > 0 && !isEmptyFolder(name)) validateMimeType(mimeType, allowed);
  };

  if (contentType && /^multipart\/form-data/i.test(contentType)) {
    const boundary = multipartBoundary(contentType);
    if (!boundary || !req.body) throw ERRORS.NoContentProvided();
    // The envelope is larger than the file, so only a body far over the limit is refused unread.
    if (declaredLength !== undefined && declaredLength > maxFileSize + MULTIPART_OVERHEAD) throw ERRORS.EntityTooLarge();
    const form = await readMultipart(req.body, boundary);
    if (!form.file) throw ERRORS.NoContentProvided();
    const mimeType = form.fields.contentType || form.file.mimeType;
    checkType(mimeType);
    const cacheTime = form.fields.cacheControl;
    let userMetadata: Record<string, unknown> | undefined;
    const customMd = form.fields.metadata ?? form.fields.userMetadata;
    if (typeof customMd === 'string') {
      try {
        const parsed = JSON.parse(customMd);
        if (parsed && typeof parsed === 'object') userMetadata = parsed;
      } catch { /* as Storage: ignored */ }
    }
    return {
      mimeType,
      cacheControl: cacheTime ? `max-age=${cacheTime}` : 'no-cache',
      userMetadata,
      declaredLength,
      body: form.file.body,
      finish: form.finish,
    };
  }

  const mimeType = contentType || 'application/octet-stream';
  checkType(mimeType);
  // Refused before reading: the size the client says it sends is over the limit.
  if (declaredLength !== undefined && declaredLength > maxFileSize) throw ERRORS.EntityTooLarge();
  return {
    mimeType,
    cacheControl: req.headers.get('cache-control') ?? 'no-cache',
    userMetadata: parseUserMetadata(req.headers.get('x-metadata')),
    declaredLength,
    body: req.body ? reusedChunks(req.body) : EMPTY_BODY,
  };
}

interface WriteRow {
  bucketId: string;
  name: string;
  owner: string | undefined;
  version: string;
  metadata: Record<string, unknown>;
  userMetadata: Record<string, unknown> | null | undefined;
}

/** Storage's createObject: a plain insert (no RETURNING: insert-only policies are enough). */
async function insertObject(tx: Tx, row: WriteRow, id?: string): Promise<void> {
  const { owner, owner_id } = ownerColumns(row.owner);
  try {
    await tx`
      insert into storage.objects (id, bucket_id, name, owner, owner_id, version, metadata, user_metadata)
      values (${id ?? crypto.randomUUID()}, ${row.bucketId}, ${row.name}, ${owner}, ${owner_id}, ${row.version},
              ${jsonb(tx, row.metadata)}, ${jsonb(tx, row.userMetadata)})`;
  } catch (err) {
    if ((err as { code?: string }).code === '23505') throw ERRORS.KeyAlreadyExists();
    throw err;
  }
}

/** Storage's upsertObject: insert or replace by (bucket, name); returns the row's id. */
async function upsertObject(tx: Tx, row: WriteRow): Promise<string> {
  const { owner, owner_id } = ownerColumns(row.owner);
  const [result] = await tx<{ id: string }[]>`
    insert into storage.objects (bucket_id, name, owner, owner_id, version, metadata, user_metadata)
    values (${row.bucketId}, ${row.name}, ${owner}, ${owner_id}, ${row.version},
            ${jsonb(tx, row.metadata)}, ${jsonb(tx, row.userMetadata)})
    on conflict (name, bucket_id) do update set
      metadata = excluded.metadata,
      user_metadata = coalesce(excluded.user_metadata, storage.objects.user_metadata),
      version = excluded.version,
      updated_at = now()
      ${row.owner === undefined ? tx`` : tx`, owner = excluded.owner, owner_id = excluded.owner_id`}
    returning id`;
  return result.id;
}

/**
 * Storage's canUpload: the insert (or upsert) the upload will make, tried as the writer and
 * rolled back, so a refused upload is refused before its body is read.
 */
function canUpload(writer: Caller, operation: string, row: Omit<WriteRow, 'version'>, isUpsert: boolean): Promise<void> {
  return testPermission(writer, operation, (tx) =>
    isUpsert ? upsertObject(tx, { ...row, version: '1' }) : insertObject(tx, { ...row, version: '1' }));
}

/** The metadata Storage keeps for an object (what its backend reports after the upload). */
function objectMetadata(received: Pick<Received, 'size' | 'eTag'>, mimeType: string, cacheControl: string): Record<string, unknown> {
  const lastModified = new Date();
  lastModified.setMilliseconds(0); // Last-Modified has seconds, as S3 reports it
  return {
    eTag: received.eTag,
    size: received.size,
    mimetype: mimeType,
    cacheControl,
    lastModified: lastModified.toISOString(),
    contentLength: received.size,
    httpStatusCode: 200,
  };
}

/**
 * Writes the row and puts the bytes in place in one transaction as `writer`: the row commits
 * only with the bytes at their path, and a failure leaves the previous row and bytes (or none).
 */
async function commitObject(writer: Caller, operation: string, row: WriteRow, received: Received, isUpsert: boolean): Promise<string> {
  return await withObjectLocks([`${row.bucketId}/${row.name}`], async () => {
    const changes = new FileChanges();
    try {
      const id = await asCaller(writer, operation, async (tx) => {
        let objectId: string;
        if (isUpsert) {
          objectId = await upsertObject(tx, row);
        } else {
          objectId = crypto.randomUUID();
          await insertObject(tx, row, objectId);
        }
        await changes.place(received.path, objectFile(row.bucketId, row.name), row.name);
        return objectId;
      });
      await changes.commit();
      return id;
    } catch (err) {
      await changes.rollback();
      await discard(received.path);
      throw err;
    }
  });
}

interface UploadOptions {
  /** Who the policies see for the write: the caller, or the service role on the signed route. */
  writer: Caller;
  owner: string | undefined;
  isUpsert: boolean;
  operation: string;
}

/** Storage's uploadFromRequest + uploadNewObject; answers { Id, Key }. */
async function uploadFromRequest(req: Request, bucketId: string, name: string, options: UploadOptions): Promise<Response> {
  mustBeValidBucketName(bucketId);
  const bucket = await findBucket(bucketId, options.operation);
  if (!bucket) throw ERRORS.NoSuchBucket();
  const bucketLimit = bucket.file_size_limit === null ? Infinity : Number(bucket.file_size_limit);
  const maxFileSize = isEmptyFolder(name) ? 0 : Math.min(bucketLimit, config().maxFileBytes);
  const file = await incomingFile(req, name, bucket, maxFileSize);
  mustBeValidKey(name);
  await assertPlaceable(bucketId, name); // a name that cannot be a file is refused before the body is read

  await canUpload(options.writer, options.operation, {
    bucketId,
    name,
    owner: options.owner,
    metadata: { mimetype: file.mimeType, ...(file.declaredLength === undefined ? {} : { contentLength: file.declaredLength }) },
    userMetadata: file.userMetadata,
  }, options.isUpsert);

  const received = await receive(file.body, maxFileSize);
  try {
    await file.finish?.();
  } catch (err) {
    await discard(received.path);
    throw err;
  }
  const id = await commitObject(options.writer, options.operation, {
    bucketId,
    name,
    owner: options.owner,
    version: crypto.randomUUID(),
    metadata: objectMetadata(received, file.mimeType, file.cacheControl),
    userMetadata: { ...file.userMetadata },
  }, received, options.isUpsert);
  return json({ Id: id, Key: `${bucketId}/${name}` });
}

/** POST /object/:bucket/* (x-upsert: true to replace) and PUT /object/:bucket/* (always replaces). */
export function uploadObject(req: Request, caller: Caller, bucketId: string, name: string, method: 'POST' | 'PUT'): Promise<Response> {
  return uploadFromRequest(req, bucketId, name, {
    writer: caller,
    owner: caller.owner,
    isUpsert: method === 'PUT' || req.headers.get('x-upsert') === 'true',
    operation: method === 'PUT' ? 'storage.object.upload_update' : 'storage.object.upload',
  });
}

/** POST /object/upload/sign/:bucket/*: checks the caller may upload there, then signs. */
export async function createSignedUploadUrl(req: Request, caller: Caller, bucketId: string, name: string): Promise<Response> {
  mustBeValidBucketName(bucketId);
  mustBeValidKey(name);
  const upsert = req.headers.get('x-upsert') === 'true';
  const contentLength = Number(req.headers.get('content-length'));
  await canUpload(caller, 'storage.object.sign_upload_url', {
    bucketId,
    name,
    owner: caller.owner,
    metadata: {
      ...(req.headers.get('content-type') ? { mimetype: req.headers.get('content-type') } : {}),
      ...(Number.isFinite(contentLength) && req.headers.has('content-length') ? { contentLength } : {}),
    },
    userMetadata: parseUserMetadata(req.headers.get('x-metadata')),
  }, upsert);
  await req.body?.cancel();
  const url = `${bucketId}/${name}`;
  const token = await signUrlToken({ owner: caller.owner, url, upsert, scope: SCOPE_UPLOAD }, config().signedUploadExpiresIn);
  return json({ url: `/object/upload/sign/${url}?token=${token}`, token });
}

/** PUT /object/upload/sign/:bucket/*?token=: the upload the token allows, as the service role. */
export async function uploadToSignedUrl(req: Request, url: URL, bucketId: string, name: string): Promise<Response> {
  const token = url.searchParams.get('token');
  if (!token) throw ERRORS.Validation("querystring must have required property 'token'");
  mustBeValidBucketName(bucketId);
  const { owner, upsert } = await verifyUrlToken(token, bucketId, name, SCOPE_UPLOAD);
  const res = await uploadFromRequest(req, bucketId, name, {
    writer: serviceCaller(),
    owner: typeof owner === 'string' ? owner : undefined,
    isUpsert: upsert === true,
    operation: 'storage.object.upload_signed',
  });
  const { Key } = await res.json();
  return json({ Key });
}

// ---------------------------------------------------------------------------------------------
// Reads
// ---------------------------------------------------------------------------------------------
/**
 * The bucket and object a read route serves (getObject / getObjectInfo): an anonymous caller
 * only reaches public buckets; objects of public buckets are read as the service role, others
 * as the caller.
 */
async function objectForRead(caller: Caller, operation: string, bucketId: string, name: string): Promise<ObjectRow> {
  mustBeValidBucketName(bucketId);
  const bucket = await findBucket(bucketId, operation);
  if (!bucket || (!caller.authenticated && !bucket.public)) throw ERRORS.NoSuchBucket();
  return await findObject(bucket.public ? serviceCaller() : caller, operation, bucketId, name);
}

function normalizeContentType(contentType: string | undefined): string {
  if (!contentType) return 'application/octet-stream';
  // As Storage serves it: never as HTML from the API's origin.
  return contentType.includes('text/html') ? 'text/plain' : contentType;
}

function lastModifiedOf(row: ObjectRow, mtime: Date | null): Date | undefined {
  const raw = row.metadata?.lastModified;
  const date = typeof raw === 'string' || typeof raw === 'number' ? new Date(raw) : mtime ?? undefined;
  return date && !Number.isNaN(date.getTime()) ? date : undefined;
}

function contentDisposition(download: string | null): Record<string, string> {
  if (download === null) return {};
  if (download === '') return { 'content-disposition': 'attachment;' };
  const encoded = encodeURIComponent(download);
  return { 'content-disposition': `attachment; filename=${encoded}; filename*=UTF-8''${encoded}` };
}

interface AssetOptions {
  /** The signed route's Expires instead of the object's Cache-Control. */
  expires?: string;
  head?: boolean;
}

/** The object's bytes from disk with Storage's headers; one Range honoured (206), 304 when fresh. */
async function serveAsset(req: Request, url: URL, row: ObjectRow, options: AssetOptions = {}): Promise<Response> {
  const metadata = row.metadata ?? {};
  const eTag = typeof metadata.eTag === 'string' ? metadata.eTag : undefined;
  const path = objectFile(row.bucket_id, row.name);
  const ifNoneMatch = req.headers.get('if-none-match');
  const ifModifiedSince = req.headers.get('if-modified-since');
  const recorded = lastModifiedOf(row, null);
  if ((ifNoneMatch && eTag && ifNoneMatch === eTag) ||
      (ifModifiedSince && recorded && recorded.getTime() <= new Date(ifModifiedSince).getTime())) {
    return new Response(null, { status: 304, headers: { ...(eTag ? { etag: eTag } : {}) } });
  }
  const range = req.headers.get('range');
  const opened = await openObject(path, { range, withBody: !options.head && req.method !== 'HEAD' });
  const lastModified = lastModifiedOf(row, opened.mtime);
  const headers: Record<string, string> = {
    'accept-ranges': 'bytes',
    'content-type': normalizeContentType(typeof metadata.mimetype === 'string' ? metadata.mimetype : undefined),
    'x-robots-tag': 'none',
    'content-length': String(opened.size),
    ...(eTag ? { etag: eTag } : {}),
    ...(lastModified ? { 'last-modified': lastModified.toUTCString() } : {}),
    ...(opened.range ? { 'content-range': opened.range.contentRange } : {}),
    ...contentDisposition(url.searchParams.get('download')),
  };
  if (options.expires) headers.expires = options.expires;
  else if (typeof metadata.cacheControl === 'string' && metadata.cacheControl) headers['cache-control'] = metadata.cacheControl;
  return new Response(opened.body, { status: opened.range ? 206 : 200, headers });
}

/** GET|HEAD /object/:bucket/* and /object/authenticated/:bucket/*. */
export async function getObject(req: Request, url: URL, caller: Caller, bucketId: string, name: string): Promise<Response> {
  const row = await objectForRead(caller, 'storage.object.get_authenticated', bucketId, name);
  return serveAsset(req, url, row, { head: req.method === 'HEAD' });
}

/** GET|HEAD /object/public/:bucket/*: public buckets only, no token needed. */
export async function getPublicObject(req: Request, url: URL, bucketId: string, name: string): Promise<Response> {
  mustBeValidBucketName(bucketId);
  const bucket = await findBucket(bucketId, 'storage.object.get_public');
  if (!bucket || !bucket.public) throw ERRORS.NoSuchBucket();
  const row = await findObject(serviceCaller(), 'storage.object.get_public', bucketId, name);
  return serveAsset(req, url, row, { head: req.method === 'HEAD' });
}

/** GET /object/sign/:bucket/*?token=: what a signed URL gives, with Expires. */
export async function getSignedObject(req: Request, url: URL, bucketId: string, name: string): Promise<Response> {
  const token = url.searchParams.get('token');
  if (!token) throw ERRORS.Validation("querystring must have required property 'token'");
  mustBeValidBucketName(bucketId);
  const { exp } = await verifyUrlToken(token, bucketId, name, SCOPE_DOWNLOAD);
  const row = await findObject(serviceCaller(), 'storage.object.get_signed', bucketId, name);
  return serveAsset(req, url, row, { expires: new Date(exp * 1000).toUTCString() });
}

/** GET /object/info/[authenticated/|public/]:bucket/*: the object's details (storage-js info/exists). */
export async function getObjectInfo(caller: Caller, bucketId: string, name: string, { publicRoute = false } = {}): Promise<Response> {
  mustBeValidBucketName(bucketId);
  const operation = publicRoute ? 'storage.object.info_public' : 'object.get_authenticated_info';
  const bucket = await findBucket(bucketId, operation);
  if (!bucket || (!caller.authenticated && !bucket.public)) throw ERRORS.NoSuchBucket();
  const row = await findObject(bucket.public || publicRoute ? serviceCaller() : caller, operation, bucketId, name);
  const metadata = row.metadata ?? {};
  const eTag = typeof metadata.eTag === 'string' ? metadata.eTag : null;
  const headers: Record<string, string> = { ...(eTag ? { etag: eTag } : {}) };
  const lastModified = lastModifiedOf(row, null);
  if (lastModified) headers['last-modified'] = lastModified.toUTCString();
  if (typeof metadata.cacheControl === 'string') headers['cache-control'] = metadata.cacheControl;
  return json({
    id: row.id,
    name: row.name,
    version: row.version,
    bucket_id: row.bucket_id,
    size: typeof metadata.size === 'number' ? metadata.size : null,
    content_type: typeof metadata.mimetype === 'string' ? metadata.mimetype : null,
    cache_control: typeof metadata.cacheControl === 'string' ? metadata.cacheControl : null,
    etag: eTag,
    metadata: row.user_metadata,
    last_modified: row.updated_at,
    created_at: row.created_at,
  }, 200, headers);
}

// ---------------------------------------------------------------------------------------------
// Listing
// ---------------------------------------------------------------------------------------------
const SORT_COLUMNS = new Set(['name', 'updated_at', 'created_at', 'last_accessed_at']);

function escapeLike(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/([%_])/g, '\\$1');
}

/**
 * POST /object/list/:bucket: one level under a prefix as storage.search lists it
 * (migrations/tenant/0063): folders (id null) and files, names relative to the prefix, `search`
 * a case-insensitive prefix of the names at that level; by name (case-insensitively, folders
 * among files) or by a date column (folders first); as the caller, so only what the policies
 * let them see.
 */
export async function listObjects(req: Request, caller: Caller, bucketId: string): Promise<Response> {
  mustBeValidBucketName(bucketId);
  const body = await readJson(req);
  let prefix = stringField(body, 'prefix')!;
  const limit = Math.min(integerField(body, 'limit', 1) ?? 100, 1500);
  const offset = integerField(body, 'offset', 0) ?? 0;
  const search = stringField(body, 'search', { required: false }) ?? '';
  const sortBy = (body.sortBy ?? {}) as { column?: unknown; order?: unknown };
  const column = typeof sortBy.column === 'string' ? sortBy.column : 'name';
  if (!SORT_COLUMNS.has(column)) throw ERRORS.Validation('body/sortBy/column must be equal to one of the allowed values');
  if (sortBy.order !== undefined && !['asc', 'desc'].includes(String(sortBy.order).toLowerCase())) {
    throw ERRORS.Validation('body/sortBy/order must be equal to one of the allowed values');
  }
  const desc = String(sortBy.order ?? 'asc').toLowerCase() === 'desc';
  if (prefix.length > 0 && !prefix.endsWith('/')) prefix = `${prefix}/`; // a prefix is a folder

  const rows = await asCaller(caller, 'storage.object.list', async (tx) => {
    const levelPrefix = prefix + search;
    if (column === 'name') {
      const dir = desc ? 'desc' : 'asc';
      return await tx.unsafe(`
        with matched as (
          select o.name, o.id, o.updated_at, o.created_at, o.last_accessed_at, o.metadata,
                 position('/' in substring(o.name from length($2::text) + 1)) as slash
          from storage.objects o
          where o.bucket_id = $1::text and left(lower(o.name), length($2::text)) = lower($2::text)
        ),
        folders as (
          select distinct on (lower(left(name, length($2::text) + slash)))
                 lower(left(name, length($2::text) + slash)) as sort_key,
                 substring(rtrim(left(name, length($2::text) + slash), '/') from length($3::text) + 1) as name
          from matched where slash > 0
          order by lower(left(name, length($2::text) + slash)), lower(name) collate "C"
        ),
        entries as (
          select sort_key, name, null::uuid as id, null::timestamptz as updated_at, null::timestamptz as created_at,
                 null::timestamptz as last_accessed_at, null::jsonb as metadata
          from folders
          union all
          select lower(name), substring(name from length($3::text) + 1), id, updated_at, created_at, last_accessed_at, metadata
          from matched where slash = 0
        )
        select name, id, updated_at, created_at, last_accessed_at, metadata from entries
        order by sort_key collate "C" ${dir}
        limit $4::int offset $5::int`, [bucketId, levelPrefix, prefix, limit, offset]);
    }
    const dir = desc ? 'desc' : 'asc';
    const start = prefix.split('/').length;
    const levels = levelPrefix.split('/').length;
    return await tx.unsafe(`
      with matching as (
        select path_tokens, id, updated_at, created_at, last_accessed_at, metadata
        from storage.objects
        where name ilike $1::text and bucket_id = $2::text
      ),
      entries as (
        select 0 as grp, folder as name, null::uuid as id, null::timestamptz as updated_at,
               null::timestamptz as created_at, null::timestamptz as last_accessed_at, null::jsonb as metadata
        from (select distinct array_to_string(path_tokens[$3::int:$4::int], '/') as folder from matching
              where array_length(path_tokens, 1) <> $4::int) f
        union all
        select 1, array_to_string(path_tokens[$3::int:$4::int], '/'), id, updated_at, created_at, last_accessed_at, metadata
        from matching where array_length(path_tokens, 1) = $4::int
      )
      select name, id, updated_at, created_at, last_accessed_at, metadata from entries
      order by grp, case when grp = 0 then name end ${dir}, ${column} ${dir}
      limit $5::int offset $6::int`, [`${escapeLike(levelPrefix)}%`, bucketId, start, levels, limit, offset]);
  });
  return json(rows);
}

// ---------------------------------------------------------------------------------------------
// Deletes, moves, copies
// ---------------------------------------------------------------------------------------------
/** Deletes rows (as the caller) and their files together; returns the deleted rows. */
async function deleteRows(caller: Caller, operation: string, bucketId: string, names: string[]): Promise<ObjectRow[]> {
  return await withObjectLocks(names.map((n) => `${bucketId}/${n}`), async () => {
    const changes = new FileChanges();
    try {
      const rows = await asCaller(caller, operation, async (tx) => {
        const deleted = await tx<ObjectRow[]>`
          delete from storage.objects where bucket_id = ${bucketId} and name = any(${names}::text[]) returning *`;
        for (const row of deleted) {
          let path: string;
          try {
            path = objectFile(bucketId, row.name);
          } catch {
            continue; // a row whose name is no path (inserted by SQL) has no file
          }
          await changes.remove(path);
        }
        return deleted;
      });
      await changes.commit();
      return rows;
    } catch (err) {
      await changes.rollback();
      throw err;
    }
  });
}

function publicRow(row: ObjectRow): Record<string, unknown> {
  const { name, bucket_id, owner, owner_id, version, id, updated_at, created_at, last_accessed_at, metadata, user_metadata } = row;
  return { name, bucket_id, owner, owner_id, version, id, updated_at, created_at, last_accessed_at, metadata, user_metadata };
}

/** DELETE /object/:bucket { prefixes }: removes what the caller may delete; answers what went. */
export async function deleteObjects(req: Request, caller: Caller, bucketId: string): Promise<Response> {
  mustBeValidBucketName(bucketId);
  const body = await readJson(req);
  const prefixes = body.prefixes;
  if (!Array.isArray(prefixes)) throw ERRORS.Validation("body must have required property 'prefixes'");
  if (prefixes.length < 1) throw ERRORS.Validation('body/prefixes must NOT have fewer than 1 items');
  if (prefixes.some((p) => typeof p !== 'string')) throw ERRORS.Validation('body/prefixes/0 must be string');
  if (prefixes.length > MAX_OBJECTS_PER_REQUEST) {
    throw ERRORS.InvalidRequest(`Bulk object requests are limited to ${MAX_OBJECTS_PER_REQUEST} objects per request.`);
  }
  const rows = await deleteRows(caller, 'storage.object.delete_many', bucketId, prefixes as string[]);
  return json(rows.map(publicRow));
}

/** DELETE /object/:bucket/*: one object; AccessDenied when it exists but the caller may not delete it. */
export async function deleteObject(caller: Caller, bucketId: string, name: string): Promise<Response> {
  mustBeValidBucketName(bucketId);
  await findObject(serviceCaller(), 'storage.object.delete', bucketId, name);
  const rows = await deleteRows(caller, 'storage.object.delete', bucketId, [name]);
  if (rows.length === 0) throw ERRORS.AccessDenied('Access denied');
  return json({ message: 'Successfully deleted' });
}

interface MoveCopyBody {
  bucketId: string;
  sourceKey: string;
  destinationKey: string;
  destinationBucket: string;
}

async function moveCopyBody(req: Request): Promise<MoveCopyBody & { body: Record<string, unknown> }> {
  const body = await readJson(req);
  const bucketId = stringField(body, 'bucketId')!;
  const sourceKey = stringField(body, 'sourceKey')!;
  const destinationKey = stringField(body, 'destinationKey')!;
  const destinationBucket = stringField(body, 'destinationBucket', { required: false }) || bucketId;
  mustBeValidBucketName(bucketId);
  mustBeValidBucketName(destinationBucket);
  return { bucketId, sourceKey, destinationKey, destinationBucket, body };
}

/**
 * POST /object/move: renames the row as the caller (the update policies decide; a taken
 * destination is 409) and the file with it, in one transaction. The mover becomes the owner.
 */
export async function moveObject(req: Request, caller: Caller): Promise<Response> {
  const { bucketId, sourceKey, destinationKey, destinationBucket } = await moveCopyBody(req);
  mustBeValidKey(destinationKey);
  const operation = 'storage.object.move';
  await findObject(caller, operation, bucketId, sourceKey);
  if (bucketId === destinationBucket && sourceKey === destinationKey) {
    return json({ message: 'Successfully moved' });
  }
  const from = objectFile(bucketId, sourceKey);
  const to = objectFile(destinationBucket, destinationKey);
  await assertPlaceable(destinationBucket, destinationKey);
  await withObjectLocks([`${bucketId}/${sourceKey}`, `${destinationBucket}/${destinationKey}`], async () => {
    const changes = new FileChanges();
    try {
      await asCaller(caller, operation, async (tx) => {
        const source = await selectObject(tx, bucketId, sourceKey);
        if (!source) throw ERRORS.NoSuchKey();
        const lastModified = new Date();
        lastModified.setMilliseconds(0);
        const metadata = { ...(source.metadata ?? {}), lastModified: lastModified.toISOString() };
        const { owner, owner_id } = ownerColumns(caller.owner);
        const moved = await tx`
          update storage.objects set
            name = ${destinationKey}, bucket_id = ${destinationBucket}, version = ${crypto.randomUUID()},
            owner = ${owner}, owner_id = ${owner_id}, metadata = ${jsonb(tx, metadata)}, updated_at = now()
          where bucket_id = ${bucketId} and name = ${sourceKey}
          returning id`;
        if (moved.length === 0) throw ERRORS.NoSuchKey();
        await changes.move(from, to, destinationKey);
      });
      await changes.commit();
    } catch (err) {
      await changes.rollback();
      throw err;
    }
  });
  return json({ message: 'Successfully moved' });
}

/**
 * POST /object/copy: reads the source as the caller, checks the destination write as the
 * caller (x-upsert: true to replace), copies the bytes and writes the destination row with
 * them. Answers { Id, Key: <bucket>/<key>, ...the new row }.
 */
export async function copyObject(req: Request, caller: Caller): Promise<Response> {
  const { bucketId, sourceKey, destinationKey, destinationBucket, body } = await moveCopyBody(req);
  mustBeValidKey(destinationKey);
  const operation = 'storage.object.copy';
  const upsert = req.headers.get('x-upsert') === 'true';
  const source = await findObject(caller, operation, bucketId, sourceKey);
  const copyMetadata = body.copyMetadata === undefined ? true : body.copyMetadata === true;
  const requested = (body.metadata ?? {}) as { cacheControl?: unknown; mimetype?: unknown };
  const metadata: Record<string, unknown> = { ...(source.metadata ?? {}) };
  if (!copyMetadata) {
    if (typeof requested.cacheControl === 'string') metadata.cacheControl = requested.cacheControl;
    if (typeof requested.mimetype === 'string') metadata.mimetype = requested.mimetype;
  }
  const userMetadata = copyMetadata ? source.user_metadata : parseUserMetadata(req.headers.get('x-metadata'));
  await assertPlaceable(destinationBucket, destinationKey);
  await canUpload(caller, operation, {
    bucketId: destinationBucket,
    name: destinationKey,
    owner: caller.owner,
    metadata,
    userMetadata: userMetadata ?? undefined,
  }, upsert);

  const received = await copyToTemp(objectFile(bucketId, sourceKey));
  const lastModified = new Date();
  lastModified.setMilliseconds(0);
  const id = await commitObject(caller, operation, {
    bucketId: destinationBucket,
    name: destinationKey,
    owner: caller.owner,
    version: crypto.randomUUID(),
    metadata: { ...metadata, eTag: received.eTag, size: received.size, contentLength: received.size, lastModified: lastModified.toISOString() },
    userMetadata: userMetadata ?? null,
  }, received, upsert);
  const row = await asCaller(serviceCaller(), operation, (tx) => selectObject(tx, destinationBucket, destinationKey));
  return json({ Id: id, Key: `${destinationBucket}/${destinationKey}`, ...(row ? publicRow(row) : {}) });
}

// ---------------------------------------------------------------------------------------------
// Signed URLs
// ---------------------------------------------------------------------------------------------
function expiresInOf(body: Record<string, unknown>): number {
  const expiresIn = body.expiresIn;
  if (expiresIn === undefined || expiresIn === null) throw ERRORS.Validation("body must have required property 'expiresIn'");
  if (typeof expiresIn !== 'number' || !Number.isInteger(expiresIn)) throw ERRORS.Validation('body/expiresIn must be integer');
  if (expiresIn < 1) throw ERRORS.Validation('body/expiresIn must be >= 1');
  if (!Number.isSafeInteger(expiresIn) || expiresIn > Math.floor(Number.MAX_SAFE_INTEGER / 1000) - Math.floor(Date.now() / 1000)) {
    throw ERRORS.InvalidParameter('expiresIn');
  }
  return expiresIn;
}

/** POST /object/sign/:bucket/* { expiresIn }: a download link for an object the caller can see. */
export async function createSignedUrl(req: Request, caller: Caller, bucketId: string, name: string): Promise<Response> {
  mustBeValidBucketName(bucketId);
  const expiresIn = expiresInOf(await readJson(req));
  await findObject(caller, 'storage.object.sign', bucketId, name);
  const url = `${bucketId}/${name}`;
  const token = await signUrlToken({ url, scope: SCOPE_DOWNLOAD }, expiresIn);
  return json({ signedURL: `/object/sign/${url}?token=${token}` });
}

/** POST /object/sign/:bucket { expiresIn, paths }: one link per path the caller can see. */
export async function createSignedUrls(req: Request, caller: Caller, bucketId: string): Promise<Response> {
  mustBeValidBucketName(bucketId);
  const body = await readJson(req);
  const expiresIn = expiresInOf(body);
  const paths = body.paths;
  if (!Array.isArray(paths)) throw ERRORS.Validation("body must have required property 'paths'");
  if (paths.length < 1) throw ERRORS.Validation('body/paths must NOT have fewer than 1 items');
  if (paths.length > MAX_OBJECTS_PER_REQUEST) throw ERRORS.Validation(`body/paths must NOT have more than ${MAX_OBJECTS_PER_REQUEST} items`);
  if (paths.some((p) => typeof p !== 'string')) throw ERRORS.Validation('body/paths/0 must be string');
  const found = await asCaller(caller, 'storage.object.sign_many', (tx) =>
    tx<{ name: string }[]>`select name from storage.objects where bucket_id = ${bucketId} and name = any(${paths as string[]}::text[])`);
  const visible = new Set(found.map((r) => r.name));
  const results = await Promise.all((paths as string[]).map(async (path) => {
    if (!visible.has(path)) {
      return { error: 'Either the object does not exist or you do not have access to it', path, signedURL: null };
    }
    const url = `${bucketId}/${path}`;
    const token = await signUrlToken({ url, scope: SCOPE_DOWNLOAD }, expiresIn);
    return { error: null, path, signedURL: `/object/sign/${url}?token=${token}` };
  }));
  return json(results);
}

// ---------------------------------------------------------------------------------------------
// Emptying a bucket (the bucket routes call this)
// ---------------------------------------------------------------------------------------------
/** Deletes every object of a bucket (rows and files), in batches, as `caller`. */
export async function emptyBucketObjects(caller: Caller, bucketId: string): Promise<void> {
  const [{ count }] = await asCaller(caller, 'storage.bucket.empty', (tx) =>
    tx<{ count: number }[]>`select count(*)::int as count from (select 1 from storage.objects where bucket_id = ${bucketId} limit ${EMPTY_BUCKET_MAX + 1}) o`);
  if (count > EMPTY_BUCKET_MAX) throw ERRORS.UnableToEmptyBucket('Unable to empty the bucket because it contains too many objects');
  for (;;) {
    const batch = await asCaller(caller, 'storage.bucket.empty', (tx) =>
      tx<{ name: string }[]>`select name from storage.objects where bucket_id = ${bucketId} order by name limit 500`);
    if (batch.length === 0) return;
    const deleted = await deleteRows(caller, 'storage.bucket.empty', bucketId, batch.map((r) => r.name));
    if (deleted.length === 0) return; // what is left, the caller may not delete
  }
}
