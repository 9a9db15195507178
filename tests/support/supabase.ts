// supabase-js clients against the local gateway, as a frontend or server would use them.
import { createClient, type SupabaseClient } from '@supabase/supabase-js';
import { ANON_KEY, API_URL } from '../../scripts/lib/config.mjs';

/** The gateway under test; TEST_API_URL points the suites at another one (e.g. a gateway on a spare port). */
export const apiUrl: string = process.env.TEST_API_URL ?? API_URL;

/**
 * A client with the anon key; with a token it acts as that user (supabase-js's `accessToken`
 * option: no GoTrue session, so `client.auth` is unavailable), without one it is anonymous.
 */
export function clientFor(token?: string): SupabaseClient {
  return createClient(apiUrl, ANON_KEY, {
    ...(token ? { accessToken: async () => token } : {}),
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
  });
}
