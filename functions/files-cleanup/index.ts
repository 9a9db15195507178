// POST /functions/v1/files-cleanup (service role; the files-cleanup job runs it hourly): removes
// the objects of both stores that no registered column references and that are older than the
// grace period (orphans: a crashed move's old object, an upload whose record is gone), through
// Storage so their bytes go too; and reports the files whose object is gone, which it never
// deletes. Nothing referenced is ever removed: private.orphan_objects excludes every reference.
import { requireServiceRole } from '../_shared/auth.ts';
import { withServiceRole } from '../_shared/db.ts';
import { env } from '../_shared/env.ts';
import { createHandler, json } from '../_shared/handler.ts';
import { removeObjects } from '../_shared/storage.ts';

export const handler = createHandler(async (req, { log }) => {
  await requireServiceRole(req);
  const text = await req.text();
  const job = text ? (JSON.parse(text) as { job?: string }).job : undefined;
  const [{ run }] = job === 'files-cleanup'
    ? await withServiceRole((tx) => tx<[{ run: number | null }]>`select private.start_job_run('files-cleanup') as run`)
    : [{ run: undefined }];
  if (run === null) return json({ skipped: true });
  try {
    const orphans = await withServiceRole((tx) => tx<{ bucket_id: string; name: string }[]>`
      select bucket_id, name from private.orphan_objects()`);
    for (const bucket of ['private', 'public']) {
      await removeObjects(env().serviceRoleKey, bucket, orphans.filter((o) => o.bucket_id === bucket).map((o) => o.name));
    }
    const missing = await withServiceRole((tx) => tx<{ file_id: string }[]>`select file_id from private.files_missing_objects()`);
    if (missing.length > 0) log.warn('files whose object is gone', { files: missing.map((m) => m.file_id) });
    if (run) await withServiceRole((tx) => tx`select private.finish_job_run(${run}, ${orphans.length})`);
    return json({ removed: orphans.length, missing: missing.map((m) => m.file_id) });
  } catch (err) {
    if (run) await withServiceRole((tx) => tx`select private.finish_job_run(${run}, null, ${(err as Error).message})`);
    throw err;
  }
}, { name: 'files-cleanup', methods: ['POST'] });

if (import.meta.main) Deno.serve(handler);
