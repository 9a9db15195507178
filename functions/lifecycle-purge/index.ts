// POST /functions/v1/lifecycle-purge (service role; the lifecycle-purge job runs it every ten
// minutes): prepares scheduled purges (their organization export, built by gdpr-export) and
// executes the due ones: first the organization's files through Storage, then its rows one batch
// at a time (each batch its own short transaction), until the organization is gone; then the
// former owners are mailed. Stopped midway (a deadline, a crash), the next run goes on from there.
// Body (optional): {"batch_size": 5000, "max_batches": 1000} — tests use small values.
import { z } from 'zod';
import { requireServiceRole } from '../_shared/auth.ts';
import { withServiceRole } from '../_shared/db.ts';
import { env } from '../_shared/env.ts';
import { createHandler, json } from '../_shared/handler.ts';
import { removeObjects } from '../_shared/storage.ts';
import { parseJson } from '../_shared/validate.ts';

const Body = z.object({
  batch_size: z.int().min(1).max(50000).optional(),
  max_batches: z.int().min(1).max(100000).optional(),
  job: z.string().max(100).optional(),
}).strict();

// Leave room under the function's wall-clock limit; the next run resumes.
const DEADLINE_MS = 100_000;

export const handler = createHandler(async (req, { log }) => {
  await requireServiceRole(req);
  const body = await parseJson(req, Body, { emptyAs: {} });
  const batchSize = body.batch_size ?? 5000;
  let batchesLeft = body.max_batches ?? 100000;
  const deadline = Date.now() + DEADLINE_MS;
  // After each batch the purge rests for rest_ratio times as long as the batch took (setting
  // purge_rest_ratio), leaving the database to the organizations still using it (BENCHMARKS.md).
  const [{ prepared, started, rest_ratio: restRatio }] = await withServiceRole((tx) => tx<
    [{ prepared: number; started: number; rest_ratio: number }]
  >`select private.prepare_purges() as prepared, private.start_due_purges() as started,
      (private.setting('purge_rest_ratio') #>> '{}')::float8 as rest_ratio`);
  const purges = await withServiceRole((tx) => tx<{ id: string }[]>`select id from private.executing_purges() as id`);
  const completed: string[] = [];
  for (const { id } of purges) {
    let files = 0;
    // The stored objects first (files and exports) through Storage, then their records.
    for (;;) {
      const batch = await withServiceRole((tx) => tx<{ store: string; object_name: string }[]>`
        select store, object_name from private.purge_files(${id}, 500)`);
      if (batch.length === 0) break;
      for (const store of ['private', 'public']) {
        await removeObjects(env().serviceRoleKey, store, batch.filter((f) => f.store === store).map((f) => f.object_name));
      }
      await withServiceRole((tx) => tx`select private.forget_purged_objects(${id}, ${batch.map((f) => f.object_name)})`);
      files += batch.length;
    }
    let done = false;
    while (!done && batchesLeft > 0 && Date.now() < deadline) {
      const began = Date.now();
      const [{ step }] = await withServiceRole((tx) => tx<[{ step: { done?: boolean } }]>`
        select private.purge_batch(${id}, ${batchSize}) as step`);
      done = step.done === true;
      batchesLeft -= 1;
      if (!done && restRatio > 0) await new Promise((rest) => setTimeout(rest, (Date.now() - began) * restRatio));
    }
    if (!done) break;
    await withServiceRole((tx) => tx`select private.finish_purge(${id})`);
    completed.push(id);
    log.info('purge completed', { purge_id: id, files });
  }
  return json({ prepared, started, executing: purges.length, completed });
}, { name: 'lifecycle-purge', methods: ['POST'] });

if (import.meta.main) Deno.serve(handler);
