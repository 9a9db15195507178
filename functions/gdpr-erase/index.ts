// POST /functions/v1/gdpr-erase {"request_id"} (platform admins and the service role): carries out
// an erasure request. The SQL (private.erase_subject) applies every registered column's strategy,
// keeps what the law keeps anonymised, pseudonymises the audit log and scrubs what remains; then
// the subject's files are removed from Storage and the Auth user is deleted through the Auth admin
// API, and the request is completed. Run again after a failure, it picks up where it stopped.
import { z } from 'zod';
import { authenticate } from '../_shared/auth.ts';
import { withServiceRole, withServiceRoleFor, withUser } from '../_shared/db.ts';
import { env } from '../_shared/env.ts';
import { HttpError } from '../_shared/errors.ts';
import { createHandler, json } from '../_shared/handler.ts';
import { removeObjects } from '../_shared/storage.ts';
import { parseJson } from '../_shared/validate.ts';

const Body = z.object({ request_id: z.uuid() }).strict();

interface Erased {
  pseudonym: string;
  user_id: string | null;
  files: { store: string; object_name: string }[];
  closed_organizations: string[];
}

export const handler = createHandler(async (req, { log }) => {
  const claims = await authenticate(req);
  const { request_id: requestId } = await parseJson(req, Body);
  if (claims.role !== 'service_role') {
    const [{ admin }] = await withUser(claims, (tx) => tx<[{ admin: boolean }]>`select private.is_platform_admin() as admin`);
    if (!admin) throw new HttpError(403, 'not_authorized', 'Only platform admins and the service role carry out erasures');
  }
  // As the service role (so the erasure's own permits apply), on behalf of the caller.
  const [{ erased }] = await withServiceRoleFor(claims, (tx) => tx<[{ erased: Erased }]>`
    select private.erase_subject(${requestId}) as erased`);
  for (const store of ['private', 'public']) {
    await removeObjects(env().serviceRoleKey, store, erased.files.filter((f) => f.store === store).map((f) => f.object_name));
  }
  if (erased.user_id) {
    const res = await fetch(`${env().supabaseUrl}/auth/v1/admin/users/${erased.user_id}`, {
      method: 'DELETE',
      headers: { apikey: env().serviceRoleKey, authorization: `Bearer ${env().serviceRoleKey}` },
    });
    await res.body?.cancel();
    // Gone already (a retry) is fine.
    if (!res.ok && res.status !== 404) throw new HttpError(503, 'auth_unavailable', `Auth did not delete the user (${res.status})`);
  }
  await withServiceRole((tx) => tx`select private.complete_erasure(${requestId}, ${erased.user_id})`);
  log.info('subject erased', { request_id: requestId, files: erased.files.length, closed: erased.closed_organizations.length });
  return json({ request_id: requestId, pseudonym: erased.pseudonym, files_removed: erased.files.length,
    closed_organizations: erased.closed_organizations });
}, { name: 'gdpr-erase', methods: ['POST'] });

if (import.meta.main) Deno.serve(handler);
