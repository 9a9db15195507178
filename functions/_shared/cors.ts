// CORS for browser callers. A preflight fails unless every header supabase-js may send is allowed.

/**
 * The headers supabase-js sends, as `@supabase/supabase-js/cors` exports them. A copy: importing
 * that module would add supabase-js and its dependencies (about 10 MB of npm packages) to every
 * deployed function for one list. tests/foundation/functions-shared.test.ts fails when the
 * installed supabase-js sends a header missing here.
 */
const SUPABASE_CLIENT_HEADERS = [
  'authorization',
  'x-client-info',
  'apikey',
  'content-type',
  'x-retry-count',
  'traceparent',
  'tracestate',
  'baggage',
];

export const corsHeaders: Record<string, string> = {
  'access-control-allow-origin': '*',
  'access-control-allow-headers': [...SUPABASE_CLIENT_HEADERS, 'x-request-id'].join(', '),
  'access-control-allow-methods': 'GET, POST, PUT, PATCH, DELETE, OPTIONS',
  'access-control-expose-headers': 'x-request-id',
  'access-control-max-age': '86400',
};

/** The answer to a preflight (OPTIONS) request. */
export function preflight(): Response {
  return new Response(null, { status: 204, headers: corsHeaders });
}
