// GoTrue's request rate limits (tollbooth), kept in this process's memory as GoTrue keeps them in
// its own: per limiter and client address a token bucket that holds `burst` requests (GoTrue's
// fixed 30) and refills at the configured number of events per window, e.g. sign_in_sign_ups per
// 5 minutes. Each endpoint has its own limiter, as in GoTrue (signups, otp, recover, ...).
// Refused: 429 over_request_rate_limit.
import { tooManyRequests } from './errors.ts';

interface Bucket {
  tokens: number;
  updatedAt: number;
}

const buckets = new Map<string, Bucket>();
const MAX_BUCKETS = 50_000;
/** GoTrue's SetBurst(30) on its per-address limiters. */
export const BURST = 30;

/** Forgets buckets that have refilled completely, so the map does not grow without bound. */
function prune(now: number): void {
  for (const [k, b] of buckets) if (now - b.updatedAt > 3_600_000) buckets.delete(k);
}

export interface Limit {
  /** Events refilled per window. 0 refuses everything once the burst is spent. */
  events: number;
  windowSeconds: number;
  burst?: number;
  code?: string;
  message?: string;
}

/** Takes one request from the bucket of (`limiter`, `key`), or throws 429. */
export function takeToken(limiter: string, key: string, limit: Limit): void {
  const now = Date.now();
  if (buckets.size > MAX_BUCKETS) prune(now);
  const burst = limit.burst ?? BURST;
  const id = `${limiter}\u0000${key}`;
  const bucket = buckets.get(id) ?? { tokens: burst, updatedAt: now };
  const refilled = Math.min(burst, bucket.tokens + ((now - bucket.updatedAt) / 1000) * (limit.events / limit.windowSeconds));
  if (refilled < 1) {
    buckets.set(id, { tokens: refilled, updatedAt: now });
    throw tooManyRequests(limit.code ?? 'over_request_rate_limit', limit.message ?? 'Request rate limit reached');
  }
  buckets.set(id, { tokens: refilled - 1, updatedAt: now });
}

/** GoTrue's window for the per-address limits (sign_in_sign_ups, token_refresh, token_verifications). */
export const FIVE_MINUTES = 300;
export const ONE_HOUR = 3600;

/** A per-address limiter of GoTrue's: `events` per 5 minutes, burst 30. */
export function limitAddress(limiter: string, ip: string, events: number): void {
  takeToken(limiter, ip, { events, windowSeconds: FIVE_MINUTES });
}
