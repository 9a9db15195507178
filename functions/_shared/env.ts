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

/**
 * What the email functions read besides the Supabase variables. Secrets come only from here and
 * never reach a log. Without RESEND_API_KEY mail goes to the local mailbox (LOCAL_MAIL_DIR, which
 * only the local stack sets); on hosted Supabase set RESEND_API_KEY and EMAIL_FROM.
 */
export interface EmailEnv {
  from: string;
  resendApiKey?: string;
  /** The Resend API's base URL (tests point it at a local fake). */
  resendBaseUrl?: string;
  localMailDir?: string;
  /** Signs the one-click unsubscribe links. */
  unsubscribeSecret?: string;
  /** Verifies Resend's (Svix-signed) delivery webhooks: whsec_... */
  resendWebhookSecret?: string;
  /** Verifies Supabase Auth's Send Email Hook (Standard Webhooks): v1,whsec_... */
  sendEmailHookSecret?: string;
}

export function emailEnv(): EmailEnv {
  const get = (name: string) => Deno.env.get(name) || undefined;
  return {
    from: get('EMAIL_FROM') ?? 'SaaS Backend <no-reply@example.com>',
    resendApiKey: get('RESEND_API_KEY'),
    resendBaseUrl: get('RESEND_BASE_URL'),
    localMailDir: get('LOCAL_MAIL_DIR'),
    unsubscribeSecret: get('EMAIL_UNSUBSCRIBE_SECRET'),
    resendWebhookSecret: get('RESEND_WEBHOOK_SECRET'),
    sendEmailHookSecret: get('SEND_EMAIL_HOOK_SECRET'),
  };
}

/** The value of an optional secret a function cannot work without: a 500 naming only the variable. */
export function requireSecret(value: string | undefined, name: string): string {
  if (!value) throw new Error(`Missing required environment variable: ${name}`);
  return value;
}

/**
 * What the billing functions read. STRIPE_SECRET_KEY (sk_test_... or sk_live_...) and, for the
 * webhook, STRIPE_WEBHOOK_SECRET (whsec_...) come from `supabase secrets set`. STRIPE_API_BASE
 * points the SDK at another host (the local stack's fake Stripe: http://127.0.0.1:54325); unset,
 * it talks to api.stripe.com.
 */
export interface StripeEnv {
  secretKey?: string;
  webhookSecret?: string;
  apiBase?: string;
}

export function stripeEnv(): StripeEnv {
  const get = (name: string) => Deno.env.get(name) || undefined;
  return { secretKey: get('STRIPE_SECRET_KEY'), webhookSecret: get('STRIPE_WEBHOOK_SECRET'), apiBase: get('STRIPE_API_BASE') };
}
