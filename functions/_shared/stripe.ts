// The Stripe SDK as the billing functions use it: one client from the environment (the fetch
// HTTP client, which Deno has; the host of STRIPE_API_BASE when set, as the local fake needs),
// and Stripe's failures mapped to our error codes: a request Stripe refused is a 400 with its
// message; Stripe not answering (network, 5xx, rate limits) is 503 stripe_unavailable, so a
// caller (or Stripe's own webhook retry) tries again later.
import Stripe from 'stripe';
import { requireSecret, stripeEnv } from './env.ts';
import { HttpError } from './errors.ts';

let client: Stripe | undefined;

export function stripe(): Stripe {
  if (client) return client;
  const { secretKey, apiBase } = stripeEnv();
  const base = apiBase ? new URL(apiBase) : undefined;
  client = new Stripe(requireSecret(secretKey, 'STRIPE_SECRET_KEY'), {
    httpClient: Stripe.createFetchHttpClient(),
    maxNetworkRetries: 2,
    timeout: 20_000,
    ...(base
      ? {
        host: base.hostname,
        port: Number(base.port || (base.protocol === 'https:' ? 443 : 80)),
        protocol: base.protocol === 'https:' ? 'https' : 'http',
      }
      : {}),
  });
  return client;
}

/** Whether an error from the SDK is Stripe not answering (worth retrying) rather than a refusal. */
export function isStripeUnavailable(err: unknown): boolean {
  if (!(err instanceof Stripe.errors.StripeError)) return false;
  return err instanceof Stripe.errors.StripeConnectionError || err instanceof Stripe.errors.StripeAPIError ||
    err instanceof Stripe.errors.StripeRateLimitError || (err.statusCode ?? 0) >= 500;
}

/** Runs a Stripe call; its failures become our HTTP errors (see the top). */
export async function callStripe<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    if (isStripeUnavailable(err)) throw new HttpError(503, 'stripe_unavailable', 'Stripe did not answer; try again later');
    if (err instanceof Stripe.errors.StripeError) {
      throw new HttpError(400, 'invalid_request', `Stripe refused the request: ${err.message}`, { stripe_code: err.code ?? null });
    }
    throw err;
  }
}
