// POST /functions/v1/files-move {"file_id", "store"} (owners and admins) or
// {"organization_id", "store"} (platform admins and the service role: every file of the
// organization). Publishing (to public) and unpublishing (to private) is one operation that never
// leaves a file in neither store: the record is marked moving, the object copied to the other
// store and verified, the record switched to the copy, the old object deleted. Run again after a
// crash, it resumes where it stopped; an old object a crash left behind is an orphan the cleanup
// job removes.
import { z } from 'zod';
import { requireUser, authenticate } from '../_shared/auth.ts';
import { withServiceRole, withServiceRoleFor, withUser } from '../_shared/db.ts';
import { env } from '../_shared/env.ts';
import { HttpError } from '../_shared/errors.ts';
import { createHandler, json } from '../_shared/handler.ts';
import { copyObject, objectSize, removeObjects } from '../_shared/storage.ts';
import { parseJson } from '../_shared/validate.ts';
import type { Claims } from '../_shared/auth.ts';

const Body = z.union([
  z.object({ file_id: z.uuid(), store: z.enum(['private', 'public']) }).strict(),
  z.object({ organization_id: z.uuid(), store: z.enum(['private', 'public']) }).strict(),
]);

interface FileRow {
  id: string;
  store: string;
  object_name: string;
  status: string;
  size_bytes: number | null;
  move_to_store: string | null;
  move_to_object_name: string | null;
}

// A test stops the move right after the copy (FILES_MOVE_FAULT=after_copy), as a crash would.
const FAULT = Deno.env.get('FILES_MOVE_FAULT');

async function moveOne(claims: Claims, fileId: string, store: string): Promise<FileRow> {
  // As the caller (a user's claims or the service role's), so private.manageable_file decides.
  const [{ file }] = await withUser(claims, (tx) => tx<[{ file: FileRow }]>`
    select to_jsonb(private.begin_file_move(${fileId}, ${store})) as file`);
  if (file.status !== 'moving') return file;
  const serviceKey = env().serviceRoleKey;
  const from = { bucket: file.store, name: file.object_name };
  const to = { bucket: file.move_to_store!, name: file.move_to_object_name! };
  if ((await objectSize(serviceKey, to.bucket, to.name)) === null) await copyObject(serviceKey, from, to);
  if (FAULT === 'after_copy') throw new Error('files-move: stopped after the copy (FILES_MOVE_FAULT)');
  const copied = await objectSize(serviceKey, to.bucket, to.name);
  if (copied === null || (file.size_bytes !== null && copied !== Number(file.size_bytes))) {
    throw new HttpError(503, 'storage_unavailable', 'The copy in the other store does not match the file');
  }
  // The mover is recorded in the file.moved event.
  const [{ moved }] = await withServiceRoleFor(claims, (tx) => tx<[{ moved: FileRow }]>`
    select to_jsonb(private.switch_file_store(${fileId})) as moved`);
  await removeObjects(serviceKey, from.bucket, [from.name]);
  return moved;
}

export const handler = createHandler(async (req) => {
  const claims = await authenticate(req);
  const body = await parseJson(req, Body);
  if ('file_id' in body) {
    if (claims.role !== 'service_role') await requireUser(req);
    return json(await moveOne(claims, body.file_id, body.store));
  }
  // In bulk: operators only.
  const [{ allowed }] = await (claims.role === 'service_role'
    ? Promise.resolve([{ allowed: true }])
    : withUser(claims, (tx) => tx<[{ allowed: boolean }]>`select private.is_platform_admin() as allowed`));
  if (!allowed) throw new HttpError(403, 'not_authorized', "Only platform admins move an organization's files in bulk");
  // Every file not yet in the store (and every move under way), of the contexts that may go
  // there: to public only what is publishable.
  const files = await withServiceRole((tx) => tx<{ id: string }[]>`
    select f.id from public.files f join public.file_contexts c on c.key = f.context
    where f.organization_id = ${body.organization_id} and f.status in ('ready', 'moving')
      and (f.store <> ${body.store} or f.status = 'moving') and (${body.store} = 'private' or c.publishable)
    order by f.created_at`);
  const moved: FileRow[] = [];
  for (const { id } of files) moved.push(await moveOne(claims, id, body.store));
  return json({ moved: moved.length, files: moved });
}, { name: 'files-move', methods: ['POST'] });

if (import.meta.main) Deno.serve(handler);
