// POST /functions/v1/gdpr-export (service role; the gdpr-exports job runs it every five minutes):
// builds the pending data exports. An export is a zip in the private store: one JSON file per
// table (an array of its rows about the subject, found through the personal-data registry, or of
// the organization's rows) and manifest.json (per file its rows and SHA-256). It is streamed: rows
// come from a cursor a few hundred at a time, are deflated as they come and uploaded as they are
// deflated, so an export is never built whole in memory. The owner of the data gets a signed link
// that expires (gdpr_export_link_validity) by the data_export_ready mail.
import { createHash } from 'node:crypto';
import { Zip, ZipDeflate } from 'fflate';
import { requireServiceRole } from '../_shared/auth.ts';
import { type Tx, withServiceRole } from '../_shared/db.ts';
import { env } from '../_shared/env.ts';
import { createHandler, json } from '../_shared/handler.ts';
import { uploadObject } from '../_shared/storage.ts';

const CURSOR_ROWS = 500;

interface Export {
  id: string;
  scope: 'subject' | 'organization';
  organization_id: string | null;
}

interface ManifestFile {
  file: string;
  table: string;
  rows: number;
  sha256: string;
}

const encoder = new TextEncoder();

/** Streams the export's zip into `sink`, table by table; returns the manifest. */
async function writeZip(tx: Tx, exportId: string, sink: WritableStreamDefaultWriter<Uint8Array>): Promise<ManifestFile[]> {
  const out: Uint8Array[] = [];
  let failed: Error | null = null;
  const zip = new Zip((err, chunk) => {
    if (err) failed = err;
    else out.push(chunk);
  });
  // Hands what the zip produced to the upload, waiting for it (backpressure).
  const drain = async () => {
    if (failed) throw failed;
    while (out.length > 0) await sink.write(out.shift()!);
  };
  const manifest: ManifestFile[] = [];
  const tables = await tx<{ table_name: string }[]>`select table_name from private.export_queries(${exportId})`;
  for (const { table_name: table } of tables) {
    const file = `${table}.json`;
    const entry = new ZipDeflate(file, { level: 6 });
    zip.add(entry);
    const hash = createHash('sha256');
    const push = (text: string, final = false) => {
      const bytes = encoder.encode(text);
      hash.update(bytes);
      entry.push(bytes, final);
    };
    let rows = 0;
    push('[');
    for await (const batch of tx`select r as row from private.export_rows(${exportId}, ${table}) r`.cursor(CURSOR_ROWS)) {
      for (const { row } of batch as unknown as { row: unknown }[]) {
        push(`${rows === 0 ? '\n' : ',\n'}${JSON.stringify(row)}`);
        rows += 1;
      }
      await drain();
    }
    push(rows === 0 ? ']' : '\n]\n', true);
    await drain();
    manifest.push({ file, table, rows, sha256: hash.digest('hex') });
  }
  const manifestEntry = new ZipDeflate('manifest.json', { level: 6 });
  zip.add(manifestEntry);
  manifestEntry.push(encoder.encode(JSON.stringify({ export_id: exportId, created_at: new Date().toISOString(), files: manifest }, null, 2)), true);
  zip.end();
  await drain();
  return manifest;
}

async function build(exp: Export): Promise<void> {
  const objectName = `${exp.scope === 'organization' ? exp.organization_id : 'subjects'}/data_export/${exp.id}/export.zip`;
  const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>(undefined, undefined, { highWaterMark: 8 });
  const writer = writable.getWriter();
  const upload = uploadObject(env().serviceRoleKey, 'private', objectName, readable, 'application/zip');
  let manifest: ManifestFile[];
  try {
    manifest = await withServiceRole((tx) => writeZip(tx, exp.id, writer));
    await writer.close();
  } catch (err) {
    await writer.abort(err).catch(() => {});
    await upload.catch(() => {});
    throw err;
  }
  await upload;
  const [{ seconds }] = await withServiceRole((tx) => tx<[{ seconds: number }]>`
    select (private.setting('gdpr_export_link_validity') #>> '{}')::integer as seconds`);
  const signed = await fetch(`${env().supabaseUrl}/storage/v1/object/sign/private/${objectName}`, {
    method: 'POST',
    headers: { apikey: env().anonKey, authorization: `Bearer ${env().serviceRoleKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ expiresIn: seconds }),
  });
  if (!signed.ok) throw new Error(`Storage did not sign the export (${signed.status})`);
  const { signedURL } = await signed.json() as { signedURL: string };
  const expiresAt = new Date(Date.now() + seconds * 1000).toISOString();
  await withServiceRole((tx) => tx`
    select private.finish_data_export(${exp.id}, ${objectName}, ${tx.json({ files: manifest } as never)},
      ${`${env().supabaseUrl}/storage/v1${signedURL}`}, ${expiresAt})`);
}

export const handler = createHandler(async (req, { log }) => {
  await requireServiceRole(req);
  const exports = await withServiceRole((tx) => tx<Export[]>`select id, scope, organization_id from private.claim_data_export(5)`);
  const built: string[] = [];
  const failed: string[] = [];
  for (const exp of exports) {
    try {
      await build(exp);
      built.push(exp.id);
    } catch (err) {
      failed.push(exp.id);
      await withServiceRole((tx) => tx`select private.fail_data_export(${exp.id}, ${(err as Error).message})`);
      log.warn('export failed', { export_id: exp.id, error: (err as Error).message });
    }
  }
  return json({ built, failed });
}, { name: 'gdpr-export', methods: ['POST'] });

if (import.meta.main) Deno.serve(handler);
