// The files types: the record of a file and its context, from the generated `Database` types,
// and the inputs of the Files methods.
import type { Database, Tables } from '../database.types.ts';

/** A row of public.files: what a file is, where its object is, who uploaded it. */
export type FileRecord = Tables<'files'>;
/** A row of public.file_contexts: what a file can be, its types and size. */
export type FileContext = Tables<'file_contexts'>;
export type FileStatus = Database['public']['Enums']['file_status'];

/** The two stores: `private` (the default, sensitive documents) and `public` (published assets). */
export type FileStore = 'private' | 'public';

/** The contexts the migrations seed; contexts are data, so others may exist. */
export type KnownFileContext =
  | 'invoice'
  | 'receipt'
  | 'legal_doc'
  | 'user_upload'
  | 'customer_document'
  | 'data_export'
  | 'kb_article'
  | 'public_asset';
export type FileContextKey = KnownFileContext | (string & {});

/** What a file's bytes can be given as. */
export type FileBody = Blob | ArrayBuffer | Uint8Array;

export interface UploadInput {
  organizationId: string;
  /** What the file is; it decides the store (private unless a published kb_article or public_asset). */
  context: FileContextKey;
  /** The bytes. A File or Blob carries its own name and type; give them for other bodies. */
  file: FileBody;
  /** The file's name; defaults to a File's own name. */
  name?: string;
  /** Its content type; defaults to a Blob's own type. Checked against the file's first bytes. */
  contentType?: string;
  /** Whether what it belongs to is public (publishing: owners and admins only). */
  published?: boolean;
  /** The row it belongs to, e.g. `{ table: 'public.customers', id }`. */
  owner?: { table: string; id: string };
}

export interface ListFilesInput {
  organizationId: string;
  context?: FileContextKey;
  store?: FileStore;
  status?: FileStatus;
  owner?: { table: string; id: string };
  /** Matches the file name (case-insensitive, anywhere in it). */
  search?: string;
  /** Newest first by default. */
  order?: 'newest' | 'oldest' | 'name' | 'largest';
  /** 1 to 1000 (default 100). */
  limit?: number;
  offset?: number;
}

/** Objects and bytes an organization keeps in one store, as Storage counts them. */
export interface FileUsage {
  store: FileStore;
  objects: number;
  bytes: number;
}

export interface BulkMoveResult {
  moved: number;
  files: FileRecord[];
}
