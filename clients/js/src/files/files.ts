// Files in two stores. Uploads, moves and deletes go through the files-* edge functions, which
// route a file to its store by its context, check its bytes and keep public.files in step with
// Storage; reads go to public.files (row-level security decides what the caller sees) and to
// Storage directly (its policies decide). A frontend never picks a bucket by hand.
// Every method throws BackendError on failure.
import type { SupabaseClient } from '@supabase/supabase-js';
import type { Database } from '../database.types.ts';
import { BackendError, type BackendErrorCode } from '../errors.ts';
import { invoke, run } from '../request.ts';
import type {
  BulkMoveResult,
  FileBody,
  FileContext,
  FileContextKey,
  FileRecord,
  FileStore,
  FileUsage,
  ListFilesInput,
  UploadInput,
} from './types.ts';

export interface FilesContext {
  supabase: SupabaseClient<Database>;
}

const MAX_LIST = 1000;

/** The BackendError for what supabase-js's storage client returned. */
function storageError(error: { message: string; status?: number; statusCode?: string }): BackendError {
  // Storage answers some errors with HTTP 400 and the real status in the body's statusCode.
  const status = Number(error.statusCode ?? error.status ?? 0) || (error.status ?? 0);
  const code: BackendErrorCode = status === 404 ? 'not_found'
    : status === 401 ? 'not_authenticated'
    : status === 403 ? 'not_authorized'
    : status === 413 ? 'file_too_large'
    : status === 415 ? 'file_type_not_allowed'
    : status === 409 ? 'conflict'
    : status === 400 ? 'invalid_input'
    : status >= 500 ? 'storage_unavailable'
    : 'unknown';
  return new BackendError(code, error.message, { status: error.status ?? status, cause: error });
}

/** Escapes the LIKE wildcards of a search text. */
const likeEscape = (text: string) => text.replace(/[\\%_]/g, (c) => `\\${c}`);

export class Files {
  readonly #supabase: SupabaseClient<Database>;

  constructor(context: FilesContext) {
    this.#supabase = context.supabase;
  }

  /**
   * Uploads a file for an organization (members; publishing needs owner or admin). Its context
   * decides its store; its first bytes must match its content type. Returns its record.
   * Errors: not_authenticated, not_authorized, invalid_context, invalid_file_name,
   * file_type_not_allowed, file_too_large, content_type_mismatch, not_publishable,
   * storage_unavailable.
   */
  async upload(input: UploadInput): Promise<FileRecord> {
    const blob = input.file instanceof Blob ? input.file : new Blob([input.file as FileBody as BlobPart]);
    const name = input.name ?? (typeof File !== 'undefined' && input.file instanceof File ? input.file.name : undefined);
    const contentType = input.contentType ?? (input.file instanceof Blob && input.file.type ? input.file.type : undefined);
    if (!name) throw new BackendError('invalid_file_name', 'Give the file a name (name).');
    if (!contentType) throw new BackendError('file_type_not_allowed', 'Give the file a content type (contentType).');
    const query = new URLSearchParams({ organization_id: input.organizationId, context: input.context, name });
    if (input.published) query.set('published', 'true');
    if (input.owner) {
      query.set('owner_table', input.owner.table);
      query.set('owner_id', input.owner.id);
    }
    return invoke<FileRecord>(this.#supabase, `files-upload?${query}`, {
      body: blob,
      headers: { 'content-type': contentType },
    });
  }

  /** Which store a file of this context goes to (what upload will do). Errors: not_authenticated. */
  async storeFor(context: FileContextKey, published = false): Promise<FileStore> {
    const store = await run(this.#supabase.rpc('file_store_for', { p_context: context, p_published: published }));
    return store === 'public' ? 'public' : 'private';
  }

  /** The contexts a file can have, with their types and size limits. */
  async contexts(): Promise<FileContext[]> {
    return run(this.#supabase.from('file_contexts').select('*').order('key'));
  }

  /** One file's record, or null when it does not exist or the caller may not see it. */
  async get(fileId: string): Promise<FileRecord | null> {
    return run(this.#supabase.from('files').select('*').eq('id', fileId).maybeSingle());
  }

  /**
   * An organization's files, filtered and paged (members; platform admins see every organization).
   * Errors: invalid_input (limit out of range).
   */
  async list(input: ListFilesInput): Promise<FileRecord[]> {
    const limit = input.limit ?? 100;
    const offset = input.offset ?? 0;
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIST || !Number.isInteger(offset) || offset < 0) {
      throw new BackendError('invalid_input', `limit is 1 to ${MAX_LIST} and offset 0 or more.`);
    }
    let query = this.#supabase.from('files').select('*').eq('organization_id', input.organizationId);
    if (input.context) query = query.eq('context', input.context);
    if (input.store) query = query.eq('store', input.store);
    if (input.status) query = query.eq('status', input.status);
    if (input.owner) query = query.eq('owner_table', input.owner.table).eq('owner_id', input.owner.id);
    if (input.search) query = query.ilike('file_name', `%${likeEscape(input.search.slice(0, 200))}%`);
    const order = input.order ?? 'newest';
    const sorted = order === 'name' ? query.order('file_name').order('id')
      : order === 'largest' ? query.order('size_bytes', { ascending: false, nullsFirst: false }).order('id')
      : query.order('created_at', { ascending: order === 'oldest' }).order('id');
    return run(sorted.range(offset, offset + limit - 1));
  }

  /** A file's bytes (members of its organization; anyone for a public file). Errors: not_found, not_authorized. */
  async download(file: FileRecord | string): Promise<Blob> {
    const record = await this.#record(file);
    const bucket = this.#supabase.storage.from(record.store);
    if (record.store === 'public') {
      // Storage routes GET /object/public/... to its public-object route, so `download()` cannot
      // reach a bucket named `public` (supabase/storage#119); its public URL serves the same bytes.
      let res: Response;
      try {
        res = await fetch(bucket.getPublicUrl(record.object_name).data.publicUrl);
      } catch (err) {
        throw BackendError.fromUnknown(err);
      }
      if (!res.ok) {
        const body = (await res.json().catch(() => ({}))) as { message?: string; statusCode?: string };
        throw storageError({ message: body.message ?? `Storage answered ${res.status}`, status: res.status, statusCode: body.statusCode });
      }
      return res.blob();
    }
    const { data, error } = await bucket.download(record.object_name);
    if (error) throw storageError(error as never);
    return data;
  }

  /**
   * A URL to fetch the file without a token: a signed URL valid for `expiresIn` seconds for a
   * private file, the permanent public URL for a public one. With `download` the browser saves
   * it (under that name, or the file's own). Errors: not_found, not_authorized.
   */
  async url(file: FileRecord | string, options: { expiresIn?: number; download?: boolean | string } = {}): Promise<string> {
    const record = await this.#record(file);
    const download = options.download === true ? record.file_name : options.download || undefined;
    const bucket = this.#supabase.storage.from(record.store);
    if (record.store === 'public') {
      return bucket.getPublicUrl(record.object_name, download ? { download } : undefined).data.publicUrl;
    }
    const expiresIn = options.expiresIn ?? 3600;
    if (!Number.isInteger(expiresIn) || expiresIn < 1 || expiresIn > 604800) {
      throw new BackendError('invalid_input', 'expiresIn is 1 to 604800 seconds (a week).');
    }
    const { data, error } = await bucket.createSignedUrl(record.object_name, expiresIn, download ? { download } : undefined);
    if (error) throw storageError(error as never);
    return data.signedUrl;
  }

  /**
   * Moves a file to the other store (publishing: to public; unpublishing: to private), owners and
   * admins; resumes a move a crash interrupted. Errors: file_not_found, not_authorized,
   * not_publishable, file_not_ready, storage_unavailable.
   */
  async move(fileId: string, store: FileStore): Promise<FileRecord> {
    return invoke<FileRecord>(this.#supabase, 'files-move', { body: { file_id: fileId, store } });
  }

  /** Moves every file of an organization to a store (platform admins, the service role). */
  async moveAll(organizationId: string, store: FileStore): Promise<BulkMoveResult> {
    return invoke<BulkMoveResult>(this.#supabase, 'files-move', { body: { organization_id: organizationId, store } });
  }

  /** Deletes a file: its object and its record (owners and admins). Errors: file_not_found, not_authorized. */
  async delete(fileId: string): Promise<void> {
    await invoke(this.#supabase, 'files-delete', { body: { file_id: fileId } });
  }

  /** Objects and bytes the organization keeps per store (owners, admins, platform admins). */
  async usage(organizationId: string): Promise<FileUsage[]> {
    const rows = await run(this.#supabase.rpc('get_file_usage', { p_organization_id: organizationId }));
    return rows.map((r) => ({ store: r.store as FileStore, objects: Number(r.objects), bytes: Number(r.bytes) }));
  }

  async #record(file: FileRecord | string): Promise<FileRecord> {
    if (typeof file !== 'string') return file;
    const record = await this.get(file);
    if (!record) throw new BackendError('file_not_found', 'No file has this id (or it is not visible to you).', { status: 404 });
    return record;
  }
}
