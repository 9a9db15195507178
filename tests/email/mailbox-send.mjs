// Sends messages through the real mailbox provider, for the vitest suites (which run on Node and
// cannot import a Deno module). A Deno script in JavaScript so that tsc (tests/**/*.ts) leaves it
// to Deno.
//   deno run --allow-read=<dir> --allow-write=<dir> --config deno.json tests/email/mailbox-send.mjs
// stdin:  {"dir": "...", "messages": [{"email": OutgoingEmail, "sentAt"?: ISO string}, ...]}
// stdout: [{"providerMessageId": "..."} | {"error": "...", "kind": "permanent" | "temporary"}, ...]
import { mailboxProvider } from '../../functions/_shared/email-providers/mailbox.ts';

const input = JSON.parse(await new Response(Deno.stdin.readable).text());
const results = [];
for (const { email, sentAt } of input.messages) {
  const provider = mailboxProvider(input.dir, sentAt ? { now: () => new Date(sentAt) } : {});
  try {
    results.push(await provider.send(email));
  } catch (err) {
    results.push({ error: err.message, kind: err.kind });
  }
}
console.log(JSON.stringify(results));
