// CORS for browser callers (supabase-js sends authorization, apikey, x-client-info).

export const corsHeaders: Record<string, string> = {
  'access-control-allow-origin': '*',
  'access-control-allow-headers': 'authorization, x-client-info, apikey, content-type, x-request-id',
  'access-control-allow-methods': 'GET, POST, PUT, PATCH, DELETE, OPTIONS',
  'access-control-expose-headers': 'x-request-id',
  'access-control-max-age': '86400',
};

/** The answer to a preflight (OPTIONS) request. */
export function preflight(): Response {
  return new Response(null, { status: 204, headers: corsHeaders });
}
