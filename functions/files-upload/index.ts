// POST /functions/v1/files-upload?organization_id=&context=&name=[&published=true][&owner_table=&owner_id=]
// The file's bytes are the body, its declared type the Content-Type. For a member of the
// organization: routes the file to its store by context (private unless a published kb_article
// or public_asset), checks name, type and size for the context, checks the first bytes against
// the declared type (a program named .pdf is refused: content_type_mismatch), then streams the
// bytes to Storage with the caller's own token, so the bucket's policies and limits apply too.
// Nothing is left behind by a refused or failed upload.
import { z } from 'zod';
import { bearerToken, requireUser } from '../_shared/auth.ts';
import { withServiceRole, withUser } from '../_shared/db.ts';
import { HttpError } from '../_shared/errors.ts';
import { createHandler, json } from '../_shared/handler.ts';
import { contentMatches, SNIFF_BYTES } from '../_shared/sniff.ts';
import { StorageError, uploadObject } from '../_shared/storage.ts';
import { parseQuery } from '../_shared/validate.ts';

const Query = z.object({
  organization_id: z.uuid(),
  context: z.string().min(1).max(32),
  name: z.string().min(1).max(255),
  published: z.enum(['true', 'false']).optional(),
  owner_table: z.string().max(127).optional(),
  owner_id: z.uuid().optional(),
}).strict();

interface Begun { file_id: string; store: string; object_name: string }

/** The first `SNIFF_BYTES` of the body, and the whole body again as one stream. */
async function peek(body: ReadableStream<Uint8Array>): Promise<{ head: Uint8Array; stream: ReadableStream<Uint8Array> }> {
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let length = 0;
  while (length < SNIFF_BYTES) {
    const { value, done } = await reader.read();
    if (done) break;
    chunks.push(value);
    length += value.byteLength;
  }
  const head = new Uint8Array(length);
  let offset = 0;
  for (const chunk of chunks) {
    head.set(chunk, offset);
    offset += chunk.byteLength;
  }
  const stream = new ReadableStream<Uint8Array>({
    start(controller) {
      if (head.byteLength > 0) controller.enqueue(head);
    },
    async pull(controller) {
      const { value, done } = await reader.read();
      if (done) controller.close();
      else controller.enqueue(value);
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
  return { head: head.subarray(0, SNIFF_BYTES), stream };
}

/** Counts the bytes that go through. */
function counted(stream: ReadableStream<Uint8Array>): { stream: ReadableStream<Uint8Array>; size: () => number } {
  let size = 0;
  const counter = new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      size += chunk.byteLength;
      controller.enqueue(chunk);
    },
  });
  return { stream: stream.pipeThrough(counter), size: () => size };
}

function storageRefusal(err: StorageError): HttpError {
  const status = err.storageStatus;
  if (status === 413) return new HttpError(400, 'file_too_large', 'The file is larger than its store allows');
  if (status === 415) return new HttpError(400, 'file_type_not_allowed', 'The store does not accept this content type');
  if (status === 403 || status === 401) return new HttpError(403, 'not_authorized', 'Storage refused the upload');
  if (status === 409) return new HttpError(409, 'file_not_ready', 'An object of this name exists already');
  return err;
}

export const handler = createHandler(async (req, { log }) => {
  const claims = await requireUser(req);
  const query = parseQuery(req, Query);
  const contentType = (req.headers.get('content-type') ?? '').split(';')[0].trim().toLowerCase();
  const declaredSize = req.headers.has('content-length') ? Number(req.headers.get('content-length')) : null;
  if (!req.body) throw new HttpError(400, 'invalid_input', 'The body is the file');

  const [begun] = await withUser(claims, (tx) => tx<[{ upload: Begun }]>`
    select private.begin_file_upload(${query.organization_id}, ${query.context}, ${query.name}, ${contentType},
      ${declaredSize}, ${query.published === 'true'}, ${query.owner_table ?? null}, ${query.owner_id ?? null}) as upload`);
  const { file_id: fileId, store, object_name: objectName } = begun.upload;
  try {
    const { head, stream } = await peek(req.body);
    if (!contentMatches(contentType, head)) {
      await stream.cancel();
      throw new HttpError(400, 'content_type_mismatch', `The file is not ${contentType}`);
    }
    const body = counted(stream);
    try {
      await uploadObject(bearerToken(req), store, objectName, body.stream, contentType);
    } catch (err) {
      if (err instanceof StorageError) throw storageRefusal(err);
      throw err;
    }
    await withServiceRole((tx) => tx`select private.finish_file_upload(${fileId}, ${body.size()})`);
    // As JSON from the database, so sizes are numbers, as PostgREST answers them.
    const [{ file }] = await withServiceRole((tx) => tx`select to_jsonb(f) as file from public.files f where id = ${fileId}`);
    log.info('file uploaded', { file_id: fileId, store, size: body.size() });
    return json(file, 201);
  } catch (err) {
    await withServiceRole((tx) => tx`select private.abandon_file_upload(${fileId})`);
    throw err;
  }
}, { name: 'files-upload', methods: ['POST'] });

if (import.meta.main) Deno.serve(handler);
