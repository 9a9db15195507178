// The environment a function gets from hosted Supabase (and from the local gateway, which passes
// the same names). Read once, validated together, so a misconfigured deploy names every missing
// variable in one error. Values are never logged; only names appear in errors.

export interface Env {
  supabaseUrl: string;
  anonKey: string;
  serviceRoleKey: string;
  dbUrl: string;
  /** Set locally (HS256 tokens). Unset on hosted projects that sign with asymmetric keys (JWKS). */
  jwtSecret?: string;
}

const REQUIRED = {
  supabaseUrl: 'SUPABASE_URL',
  anonKey: 'SUPABASE_ANON_KEY',
  serviceRoleKey: 'SUPABASE_SERVICE_ROLE_KEY',
  dbUrl: 'SUPABASE_DB_URL',
} as const;

let cached: Env | undefined;

export function env(): Env {
  if (cached) return cached;
  const values: Partial<Env> = {};
  const missing: string[] = [];
  for (const [key, name] of Object.entries(REQUIRED) as [keyof typeof REQUIRED, string][]) {
    const value = Deno.env.get(name);
    if (value) values[key] = value;
    else missing.push(name);
  }
  if (missing.length > 0) {
    throw new Error(`Missing required environment variable(s): ${missing.join(', ')}`);
  }
  cached = { ...(values as Env), jwtSecret: Deno.env.get('JWT_SECRET') || undefined };
  return cached;
}
