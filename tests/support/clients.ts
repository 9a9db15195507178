// Clients against the local gateway, as a frontend or a server would use them: supabase-js and the
// SDK (clients/js), each as a user (their token), anonymous, or with the service role key.
import { createClient, type SupabaseClient } from '@supabase/supabase-js';
import { expect } from 'vitest';
import { ANON_KEY, API_URL, SERVICE_ROLE_KEY } from '../../scripts/lib/config.mjs';
import {
  BackendError,
  createBackendClient,
  type BackendClient,
  type BackendErrorCode,
} from '../../clients/js/src/index.ts';
import type { TestUser } from './users.ts';

/** The gateway under test; TEST_API_URL points the suites at another one (e.g. a gateway on a spare port). */
export const apiUrl: string = process.env.TEST_API_URL ?? API_URL;

// No GoTrue session to keep: tokens come from tests/support/tokens.ts.
const auth = { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false };

/**
 * supabase-js with the anon key; with a token it acts as that user (supabase-js's `accessToken`
 * option: no GoTrue session, so `client.auth` is unavailable), without one it is anonymous.
 */
export function clientFor(token?: string): SupabaseClient {
  return createClient(apiUrl, ANON_KEY, { ...(token ? { accessToken: async () => token } : {}), auth });
}

/** supabase-js with the service role key and no user: what a backend server uses (RLS bypassed). */
export function serviceClient(): SupabaseClient {
  return createClient(apiUrl, SERVICE_ROLE_KEY, { auth });
}

/** The SDK acting as `user` (their token), or anonymous without one. */
export function backendFor(user?: TestUser, url: string = apiUrl): BackendClient {
  return createBackendClient({
    url,
    anonKey: ANON_KEY,
    ...(user ? { accessToken: async () => user.token } : {}),
    options: { auth },
  });
}

/** The SDK with the service role key and no user: what billing or a webhook handler uses. */
export function serviceBackend(url: string = apiUrl): BackendClient {
  return createBackendClient({ url, anonKey: SERVICE_ROLE_KEY, options: { auth } });
}

/** Awaits an SDK call expected to fail with a BackendError of `code`, and returns the error. */
export async function rejection(promise: Promise<unknown>, code: BackendErrorCode): Promise<BackendError> {
  const err = await promise.then(
    (value) => {
      throw new Error(`expected BackendError(${code}), got a result: ${JSON.stringify(value)}`);
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(BackendError);
  expect((err as BackendError).code).toBe(code);
  return err as BackendError;
}
