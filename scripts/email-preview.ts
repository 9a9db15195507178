// npm run email:preview: every email template rendered with its sample props into
// .local/mail/preview/ (<name>.html, <name>.txt and an index.html linking them), to look at in a
// browser without a mail provider. Optional mail is shown as readers get it, with an unsubscribe link.
import { EMAIL_TEMPLATES, renderSample, type TemplateName } from '../functions/_shared/emails/index.ts';

const PREVIEW_DIR = new URL('../.local/mail/preview/', import.meta.url);
const SAMPLE_UNSUBSCRIBE_URL = 'https://app.example.com/email-preferences/unsubscribe?token=sample';

function escapeHtml(value: string): string {
  return value.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;').replaceAll('"', '&quot;');
}

// Start empty, so a renamed or removed template leaves no stale preview behind.
await Deno.remove(PREVIEW_DIR, { recursive: true }).catch((err) => {
  if (!(err instanceof Deno.errors.NotFound)) throw err;
});
await Deno.mkdir(PREVIEW_DIR, { recursive: true });

const rows: string[] = [];
for (const name of Object.keys(EMAIL_TEMPLATES) as TemplateName[]) {
  const { category, required } = EMAIL_TEMPLATES[name];
  const email = await renderSample(name, required ? {} : { unsubscribeUrl: SAMPLE_UNSUBSCRIBE_URL });
  await Deno.writeTextFile(new URL(`${name}.html`, PREVIEW_DIR), email.html);
  await Deno.writeTextFile(new URL(`${name}.txt`, PREVIEW_DIR), email.text);
  rows.push(
    `<tr><td><a href="${name}.html">${name}</a></td><td>${category}</td><td>${required ? 'required' : 'optional'}</td>` +
      `<td>${escapeHtml(email.subject)}</td><td><a href="${name}.txt">text</a></td></tr>`,
  );
}

await Deno.writeTextFile(
  new URL('index.html', PREVIEW_DIR),
  `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Email previews</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 2rem; color: #18181b; }
  table { border-collapse: collapse; }
  th, td { text-align: left; padding: 0.4rem 1rem 0.4rem 0; border-bottom: 1px solid #e4e4e7; }
</style>
</head>
<body>
<h1>Email previews</h1>
<p>Every template rendered with its sample props.</p>
<table>
<thead><tr><th>Template</th><th>Category</th><th>Preferences</th><th>Subject</th><th>Text</th></tr></thead>
<tbody>
${rows.join('\n')}
</tbody>
</table>
</body>
</html>
`,
);

const dir = decodeURIComponent(PREVIEW_DIR.pathname);
console.log(`Rendered ${rows.length} email templates into ${dir}`);
console.log(`Open ${dir}index.html in a browser.`);
