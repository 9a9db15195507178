// POST /functions/v1/billing-invoice-pdfs (service role; the billing-invoice-pdfs job runs it
// every ten minutes): copies the PDF of each paid invoice from Stripe into the private store
// (context invoice, owned by its row of public.invoices), so it stays available to the
// organization whatever happens to the Stripe account. One failing invoice does not stop the
// others; it is tried again on later runs, after the fresh ones, up to 8 times.
import { requireServiceRole } from '../_shared/auth.ts';
import { withServiceRole } from '../_shared/db.ts';
import { env } from '../_shared/env.ts';
import { createHandler, json } from '../_shared/handler.ts';
import { contentMatches, SNIFF_BYTES } from '../_shared/sniff.ts';
import { uploadObject } from '../_shared/storage.ts';

const BATCH = 20;
// The invoice context's limit; a PDF from Stripe is far smaller.
const MAX_PDF_BYTES = 10 * 1024 * 1024;

interface Pending {
  invoice_id: string;
  organization_id: string;
  number: string;
  invoice_pdf_url: string;
}

async function copyPdf(invoice: Pending): Promise<string> {
  const res = await fetch(invoice.invoice_pdf_url, { redirect: 'follow', signal: AbortSignal.timeout(30_000) });
  if (!res.ok) throw new Error(`the PDF answered ${res.status}`);
  const bytes = new Uint8Array(await res.arrayBuffer());
  if (bytes.byteLength > MAX_PDF_BYTES) throw new Error('the PDF is larger than the invoice context takes');
  if (!contentMatches('application/pdf', bytes.subarray(0, SNIFF_BYTES))) throw new Error('the invoice PDF is not a PDF');
  const name = `${invoice.number.replace(/[^A-Za-z0-9._-]+/g, '_')}.pdf`;
  const [{ upload }] = await withServiceRole((tx) => tx<[{ upload: { file_id: string; store: string; object_name: string } }]>`
    select private.begin_file_upload(${invoice.organization_id}, 'invoice', ${name}, 'application/pdf', ${bytes.byteLength},
      false, 'public.invoices', ${invoice.invoice_id}) as upload`);
  try {
    await uploadObject(env().serviceRoleKey, upload.store, upload.object_name, new Blob([bytes]).stream(), 'application/pdf');
    await withServiceRole((tx) => tx`
      select private.finish_file_upload(${upload.file_id}, ${bytes.byteLength}),
             private.attach_invoice_pdf(${invoice.invoice_id}, ${upload.file_id})`);
  } catch (err) {
    await withServiceRole((tx) => tx`select private.abandon_file_upload(${upload.file_id})`);
    throw err;
  }
  return upload.file_id;
}

export const handler = createHandler(async (req, { log }) => {
  await requireServiceRole(req);
  const pending = await withServiceRole((tx) => tx<Pending[]>`select * from private.invoices_missing_pdf(${BATCH})`);
  let copied = 0;
  const failed: string[] = [];
  for (const invoice of pending) {
    try {
      await copyPdf(invoice);
      copied += 1;
    } catch (err) {
      failed.push(invoice.invoice_id);
      await withServiceRole((tx) => tx`select private.record_invoice_pdf_failure(${invoice.invoice_id})`);
      log.warn('invoice PDF not copied', { invoice_id: invoice.invoice_id, error: (err as Error).message });
    }
  }
  return json({ copied, failed });
}, { name: 'billing-invoice-pdfs', methods: ['POST'] });

if (import.meta.main) Deno.serve(handler);
