// POST /functions/v1/files-delete {"file_id"}: owners and admins of the file's organization,
// platform admins and the service role delete a file: the object first (through Storage), then
// the record, with a file.deleted event naming who did it.
import { z } from 'zod';
import { authenticate, type Claims } from '../_shared/auth.ts';
import { withServiceRoleFor, withUser } from '../_shared/db.ts';
import { env } from '../_shared/env.ts';
import { createHandler, json } from '../_shared/handler.ts';
import { removeObjects } from '../_shared/storage.ts';
import { parseJson } from '../_shared/validate.ts';

const Body = z.object({ file_id: z.uuid() }).strict();

export const handler = createHandler(async (req) => {
  const claims: Claims = await authenticate(req);
  const { file_id: fileId } = await parseJson(req, Body);
  const [{ file }] = await withUser(claims, (tx) => tx<[{ file: { store: string; object_name: string } }]>`
    select to_jsonb(private.manageable_file(${fileId})) as file`);
  await removeObjects(env().serviceRoleKey, file.store, [file.object_name]);
  // The deleting caller is recorded in the event.
  await withServiceRoleFor(claims, (tx) => tx`select private.forget_file(${fileId})`);
  return json({ deleted: fileId });
}, { name: 'files-delete', methods: ['POST'] });

if (import.meta.main) Deno.serve(handler);
