// The outbox with several consumers: two consumers with three workers each race over the same
// events, on real parallel connections, while more events are appended. Every event is processed
// exactly once per consumer, whatever the interleaving, and a worker's failure only delays the
// event for its own consumer.
import { randomUUID } from 'node:crypto';
import postgres from 'postgres';
import { afterAll, describe, expect, it } from 'vitest';
import { DB_URL } from '../../scripts/lib/config.mjs';

const RUN = randomUUID().slice(0, 8);
const TYPE = `test.race_${RUN}`;
const CONSUMERS = [`mailer-${RUN}`, `hooks-${RUN}`];
const EVENTS = 300;
// 6 workers and an appender at once.
const sql = postgres(DB_URL, { max: 8, onnotice: () => {}, connection: { statement_timeout: 20000 } });

afterAll(async () => {
  await sql`delete from private.outbox_consumers where name = any(${CONSUMERS})`;
  await sql.end({ timeout: 5 });
});

interface Claimed { id: string; attempts: number }

/** One worker: claims small batches, fails every seventh first attempt, completes the rest. */
async function worker(consumer: string, processed: Map<string, number>, appending: () => boolean): Promise<void> {
  for (let idle = 0; idle < 20;) {
    const claimed = await sql<Claimed[]>`
      select id::text, attempts from private.claim_events(${consumer}, 5, interval '1 minute')`;
    if (claimed.length === 0) {
      // Nothing due: stop once the appender is done and a few polls in a row came back empty.
      if (!appending()) idle++;
      await new Promise((r) => setTimeout(r, 5));
      continue;
    }
    idle = 0;
    for (const event of claimed) {
      if (event.attempts === 1 && Number(event.id) % 7 === 0) {
        await sql`select private.fail_event(${consumer}, ${event.id}, 'transient', interval '0 seconds')`;
        continue;
      }
      // Processing happens here, between claim and completion: a second worker claiming the same
      // event at the same time would count it twice.
      processed.set(event.id, (processed.get(event.id) ?? 0) + 1);
      const [{ done }] = await sql<{ done: boolean }[]>`select private.complete_event(${consumer}, ${event.id}) as done`;
      expect(done, `${consumer} completes ${event.id}, which it holds the claim on`).toBe(true);
    }
  }
}

describe('two consumers, three workers each', () => {
  it('process every event exactly once per consumer', async () => {
    for (const name of CONSUMERS) {
      await sql`select private.register_outbox_consumer(${name}, 'vitest outbox race', ${[TYPE]}::text[], 5)`;
    }
    const ids: string[] = [];
    let appending = true;
    const appender = (async () => {
      // Appended in small transactions while the workers already run.
      for (let i = 0; i < EVENTS; i += 10) {
        const rows = await sql.begin((tx) =>
          Promise.all(Array.from({ length: 10 }, (_, k) =>
            tx<{ id: string }[]>`select private.append_domain_event(null, ${TYPE}, ${sql.json({ n: i + k })})::text as id`)));
        ids.push(...rows.map(([r]) => r.id));
      }
      appending = false;
    })();

    const processed = new Map(CONSUMERS.map((c) => [c, new Map<string, number>()]));
    await Promise.all([
      appender,
      ...CONSUMERS.flatMap((c) => [1, 2, 3].map(() => worker(c, processed.get(c)!, () => appending))),
    ]);

    expect(ids).toHaveLength(EVENTS);
    for (const consumer of CONSUMERS) {
      const counts = processed.get(consumer)!;
      expect([...counts.keys()].sort(), `${consumer} processed every event`).toEqual([...ids].sort());
      expect([...counts.values()].filter((n) => n !== 1), `${consumer} processed none twice`).toEqual([]);
      const [state] = await sql<{ pending: number; retried: number }[]>`
        select count(*) filter (where processed_at is null)::int as pending,
               count(*) filter (where attempts > 1)::int as retried
        from private.event_deliveries where consumer = ${consumer}`;
      expect(state.pending).toBe(0);
      // Every seventh event failed once and was retried: the failures really happened.
      expect(state.retried).toBeGreaterThanOrEqual(ids.filter((id) => Number(id) % 7 === 0).length);
    }
  }, 60000);
});
