// The bucket routes (supabase/storage src/http/routes/bucket/*, src/storage/storage.ts): as the
// caller, so the service role manages buckets and a user gets what the policies and grants on
// storage.buckets allow (locally: read, where a policy lets them). Emptying is for the service
// role only, as Storage enforces.
import { type Caller, serviceCaller } from './auth.ts';
import { config } from './config.ts';
import { asCaller } from './db.ts';
import { ERRORS } from './errors.ts';
import { emptyBucketObjects, json } from './objects.ts';
import { removeBucketDir } from './store.ts';
import { isUuid, mustBeValidBucketName, parseFileSizeLimit, readJson, stringField, validateAllowedMimeTypes } from './validate.ts';

interface BucketRow {
  id: string;
  name: string;
  owner: string | null;
  public: boolean;
  file_size_limit: string | number | null;
  allowed_mime_types: string[] | null;
  created_at: Date;
  updated_at: Date;
}

/** A bucket as Storage answers it (bucketSchema; int8 as a number; the type hosted adds). */
function render(row: BucketRow): Record<string, unknown> {
  return {
    id: row.id,
    name: row.name,
    owner: row.owner ?? '',
    public: row.public,
    type: 'STANDARD',
    file_size_limit: row.file_size_limit === null ? null : Number(row.file_size_limit),
    allowed_mime_types: row.allowed_mime_types,
    created_at: row.created_at,
    updated_at: row.updated_at,
  };
}

const SORT_COLUMNS = new Set(['id', 'name', 'created_at', 'updated_at']);

function queryInteger(url: URL, name: string, minimum: number): number | undefined {
  const value = url.searchParams.get(name);
  if (value === null) return undefined;
  if (!/^-?\d+$/.test(value)) throw ERRORS.Validation(`querystring/${name} must be integer`);
  const n = Number(value);
  if (n < minimum) throw ERRORS.Validation(`querystring/${name} must be >= ${minimum}`);
  return n;
}

/** GET /bucket?limit&offset&sortColumn&sortOrder&search */
export async function listBuckets(url: URL, caller: Caller): Promise<Response> {
  const limit = queryInteger(url, 'limit', 1);
  const offset = queryInteger(url, 'offset', 0);
  const sortColumn = url.searchParams.get('sortColumn');
  const sortOrder = url.searchParams.get('sortOrder');
  const search = url.searchParams.get('search');
  if (sortColumn !== null && !SORT_COLUMNS.has(sortColumn)) {
    throw ERRORS.Validation('querystring/sortColumn must be equal to one of the allowed values');
  }
  if (sortOrder !== null && !['asc', 'desc'].includes(sortOrder)) {
    throw ERRORS.Validation('querystring/sortOrder must be equal to one of the allowed values');
  }
  const rows = await asCaller(caller, 'storage.bucket.list', (tx) => {
    const params: unknown[] = [];
    let where = '';
    if (search) {
      params.push(`%${search.replace(/\\/g, '\\\\').replace(/([%_])/g, '\\$1')}%`);
      where = `where name ilike $${params.length}::text`;
    }
    const order = sortColumn ? `order by ${sortColumn} ${sortOrder === 'desc' ? 'desc' : 'asc'}` : '';
    let page = '';
    if (limit !== undefined) {
      params.push(limit);
      page += ` limit $${params.length}::int`;
    }
    if (offset !== undefined) {
      params.push(offset);
      page += ` offset $${params.length}::int`;
    }
    return tx.unsafe(`
      select id, name, owner, public, file_size_limit, allowed_mime_types, created_at, updated_at
      from storage.buckets ${where} ${order} ${page}`, params as never[]);
  });
  return json((rows as unknown as BucketRow[]).map(render));
}

/** GET /bucket/:id */
export async function getBucket(caller: Caller, id: string): Promise<Response> {
  const [row] = await asCaller(caller, 'storage.bucket.get', (tx) =>
    tx<BucketRow[]>`
      select id, name, owner, public, file_size_limit, allowed_mime_types, created_at, updated_at
      from storage.buckets where id = ${id} limit 1`);
  if (!row) throw ERRORS.NoSuchBucket();
  const { type: _type, ...bucket } = render(row);
  return json(bucket);
}

/** A file_size_limit from a request: bytes or "20MB"; never over the global limit. */
function fileSizeLimit(value: unknown): number | null | undefined {
  if (value === undefined) return undefined;
  if (value === null) return null;
  if (typeof value !== 'number' && typeof value !== 'string') throw ERRORS.Validation('body/file_size_limit must be integer or string');
  const bytes = parseFileSizeLimit(value);
  if (bytes > config().maxFileBytes) throw ERRORS.EntityTooLarge();
  return bytes;
}

function allowedMimeTypes(value: unknown): string[] | null | undefined {
  if (value === undefined || value === null) return value as null | undefined;
  if (!Array.isArray(value)) throw ERRORS.Validation('body/allowed_mime_types must be array');
  const types = value.filter((t) => t);
  validateAllowedMimeTypes(types as string[]);
  return types as string[];
}

/** POST /bucket { id?, name, public?, file_size_limit?, allowed_mime_types? } → { name } */
export async function createBucket(req: Request, caller: Caller): Promise<Response> {
  const body = await readJson(req);
  const name = stringField(body, 'name')!;
  const id = stringField(body, 'id', { required: false }) || name;
  if (name.trim() !== name) throw ERRORS.InvalidBucketName();
  mustBeValidBucketName(name);
  mustBeValidBucketName(id);
  if (body.type === 'ANALYTICS') throw ERRORS.InvalidRequest('Analytics buckets are not served by the local stack');
  if (body.public !== undefined && typeof body.public !== 'boolean') throw ERRORS.Validation('body/public must be boolean');
  const limit = fileSizeLimit(body.file_size_limit);
  const types = allowedMimeTypes(body.allowed_mime_types);
  const owner = caller.owner;
  await asCaller(caller, 'storage.bucket.create', async (tx) => {
    try {
      await tx`
        insert into storage.buckets (id, name, owner, owner_id, public, file_size_limit, allowed_mime_types)
        values (${id}, ${name}, ${isUuid(owner) ? owner! : null}, ${owner ?? null}, ${body.public === true},
                ${limit ?? null}, ${types ?? null}::text[])`;
    } catch (err) {
      if ((err as { code?: string }).code === '23505') throw ERRORS.BucketAlreadyExists();
      throw err;
    }
  });
  return json({ name });
}

/** PUT /bucket/:id { public?, file_size_limit?, allowed_mime_types? } */
export async function updateBucket(req: Request, caller: Caller, id: string): Promise<Response> {
  mustBeValidBucketName(id);
  const body = await readJson(req);
  if (body.public !== undefined && typeof body.public !== 'boolean') throw ERRORS.Validation('body/public must be boolean');
  const fields: Record<string, unknown> = {};
  if (body.public !== undefined) fields.public = body.public;
  const limit = fileSizeLimit(body.file_size_limit);
  if (limit !== undefined) fields.file_size_limit = limit;
  const types = allowedMimeTypes(body.allowed_mime_types);
  if (types !== undefined) fields.allowed_mime_types = types;
  if (Object.keys(fields).length === 0) throw ERRORS.NoContentProvided();
  const updated = await asCaller(caller, 'storage.bucket.update', (tx) =>
    tx`update storage.buckets set ${tx(fields)}, updated_at = now() where id = ${id} returning id`);
  if (updated.length === 0) throw ERRORS.NoSuchBucket();
  return json({ message: 'Successfully updated' });
}

/** DELETE /bucket/:id: only an empty bucket (BucketNotEmpty otherwise, counted as Storage's superuser). */
export async function deleteBucket(req: Request, caller: Caller, id: string): Promise<Response> {
  mustBeValidBucketName(id);
  await req.body?.cancel();
  const [bucket] = await asCaller(serviceCaller(), 'storage.bucket.delete', (tx) =>
    tx`select id from storage.buckets where id = ${id}`);
  if (!bucket) throw ERRORS.NoSuchBucket();
  const [{ count }] = await asCaller(serviceCaller(), 'storage.bucket.delete', (tx) =>
    tx<{ count: number }[]>`select count(*)::int as count from (select 1 from storage.objects where bucket_id = ${id} limit 1) o`);
  if (count > 0) throw ERRORS.BucketNotEmpty();
  const deleted = await asCaller(caller, 'storage.bucket.delete', (tx) => tx`delete from storage.buckets where id = ${id} returning id`);
  if (deleted.length === 0) throw ERRORS.NoSuchBucket();
  await removeBucketDir(id);
  return json({ message: 'Successfully deleted' });
}

/** POST /bucket/:id/empty: the service role only (403 otherwise, as Storage's enforceJwtRole). */
export async function emptyBucket(req: Request, caller: Caller, id: string): Promise<Response> {
  if (caller.role !== 'service_role') throw ERRORS.AccessDeniedRole('Access denied: Invalid role');
  mustBeValidBucketName(id);
  await req.body?.cancel();
  const [bucket] = await asCaller(caller, 'storage.bucket.empty', (tx) => tx`select id from storage.buckets where id = ${id}`);
  if (!bucket) throw ERRORS.NoSuchBucket();
  await emptyBucketObjects(caller, id);
  return json({ message: 'Successfully emptied' });
}
