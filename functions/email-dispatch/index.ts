// POST /functions/v1/email-dispatch (service role): turns due domain events into mail and sends
// due messages (functions/_shared/email-dispatch.ts). The scheduled job calls it every minute with
// {"job": "email-dispatch"} (pg_cron + pg_net on hosted, the gateway's scheduler locally); such a
// run is recorded in private.job_runs and skipped while the previous one still runs. Called
// without a job, it just dispatches (several dispatchers at once are safe).
import { z } from 'zod';
import { requireServiceRole } from '../_shared/auth.ts';
import { withServiceRole } from '../_shared/db.ts';
import { dispatchConfigFromEnv, dispatchDueEmails } from '../_shared/email-dispatch.ts';
import { createHandler, json } from '../_shared/handler.ts';
import { parseJson } from '../_shared/validate.ts';

const Body = z.object({
  job: z.literal('email-dispatch').optional(),
  limit: z.number().int().min(1).max(1000).optional(),
}).strict();

export const handler = createHandler(async (req, { log }) => {
  await requireServiceRole(req);
  const body = await parseJson(req, Body, { emptyAs: {} });
  const config = dispatchConfigFromEnv(log);

  if (!body.job) return json(await dispatchDueEmails(config, { limit: body.limit }));

  const [{ run }] = await withServiceRole((tx) => tx<{ run: number | null }[]>`select private.start_job_run('email-dispatch') as run`);
  if (run === null) return json({ skipped: true });
  try {
    const summary = await dispatchDueEmails(config, { limit: body.limit });
    await withServiceRole((tx) => tx`select private.finish_job_run(${run}, ${summary.sent})`);
    return json(summary);
  } catch (err) {
    await withServiceRole((tx) => tx`select private.finish_job_run(${run}, null, ${(err as Error).message})`);
    throw err;
  }
}, { name: 'email-dispatch', methods: ['POST'] });

if (import.meta.main) Deno.serve(handler);
