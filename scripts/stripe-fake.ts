// The local Stripe: tests/fakes/stripe.ts as a standalone server for the local stack, started when
// STRIPE_SECRET_KEY is not set (or is this fake's key), so Checkout works offline. The billing
// functions reach it through the stripe SDK's host/port/protocol options; the Checkout, portal,
// setup and hosted-invoice URLs it hands out open its own pages, and every event is POSTed, signed,
// to the stripe-webhook function, as `stripe listen --forward-to` would. It seeds nothing: prices
// are created through the API. State lives in memory and is gone when it stops.
// Run: deno run --allow-net --allow-env --config deno.json scripts/stripe-fake.ts
// Env: STRIPE_FAKE_PORT (54325), STRIPE_FAKE_HOST (127.0.0.1), STRIPE_FAKE_PUBLIC_URL (the URL
//      browsers use for its pages; default http://127.0.0.1:<port>), STRIPE_WEBHOOK_URL
//      (http://127.0.0.1:54321/functions/v1/stripe-webhook; "off" records events without sending
//      them), STRIPE_WEBHOOK_SECRET, STRIPE_SECRET_KEY (the one key it accepts; default
//      sk_test_fake_local), STRIPE_FAKE_TAX_PERCENT (automatic tax rate, default 0),
//      STRIPE_FAKE_RETRY_DELAYS_MS (waits before a failed delivery's retries, default "1000,5000,15000").
import { DEFAULT_SECRET_KEY, DEFAULT_WEBHOOK_SECRET, startFakeStripe } from '../tests/fakes/stripe.ts';

const env = (name: string) => Deno.env.get(name) || undefined;
const port = Number(env('STRIPE_FAKE_PORT') ?? 54325);
const webhookUrl = env('STRIPE_WEBHOOK_URL') ?? 'http://127.0.0.1:54321/functions/v1/stripe-webhook';

function log(fields: Record<string, unknown>): void {
  console.log(JSON.stringify({ time: new Date().toISOString(), service: 'stripe-fake', ...fields }));
}

const fake = await startFakeStripe({
  port,
  hostname: env('STRIPE_FAKE_HOST') ?? '127.0.0.1',
  publicUrl: env('STRIPE_FAKE_PUBLIC_URL'),
  webhookUrl: webhookUrl === 'off' ? undefined : webhookUrl,
  webhookSecret: env('STRIPE_WEBHOOK_SECRET') ?? DEFAULT_WEBHOOK_SECRET,
  secretKey: env('STRIPE_SECRET_KEY') ?? DEFAULT_SECRET_KEY,
  taxRatePercent: Number(env('STRIPE_FAKE_TAX_PERCENT') ?? 0),
  // Longer than the tests' waits: a function's first call compiles it, and the gateway may restart.
  retryDelaysMs: (env('STRIPE_FAKE_RETRY_DELAYS_MS') ?? '1000,5000,15000').split(',').map(Number).filter((n) => n >= 0),
  log,
});
log({ event: 'listening', url: fake.url, api_version: fake.apiVersion, webhook_url: fake.webhookUrl });

let stopping = false;
async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  log({ event: 'stopping', signal });
  await fake.stop();
  Deno.exit(0);
}
Deno.addSignalListener('SIGINT', () => void shutdown('SIGINT'));
Deno.addSignalListener('SIGTERM', () => void shutdown('SIGTERM'));
