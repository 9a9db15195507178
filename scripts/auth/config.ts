// The local Auth server's settings: supabase/config.toml's [auth], [auth.email], [auth.rate_limit]
// and [auth.hook.send_email], read the way the Supabase CLI hands them to GoTrue, then the
// environment's overrides (for tests that start a gateway of their own):
//   AUTH_SITE_URL, AUTH_JWT_EXPIRY (seconds), AUTH_ENABLE_SIGNUP, AUTH_ENABLE_CONFIRMATIONS,
//   AUTH_DOUBLE_CONFIRM_CHANGES, AUTH_EMAIL_MAX_FREQUENCY ("1s", "60s", or seconds),
//   AUTH_OTP_EXPIRY (seconds), AUTH_REFRESH_TOKEN_REUSE_INTERVAL (seconds),
//   AUTH_MINIMUM_PASSWORD_LENGTH, AUTH_RATE_LIMIT_EMAIL_SENT, AUTH_RATE_LIMIT_SIGN_IN_SIGN_UPS,
//   AUTH_RATE_LIMIT_TOKEN_VERIFICATIONS, AUTH_RATE_LIMIT_TOKEN_REFRESH,
//   AUTH_SEND_EMAIL_HOOK_URI, AUTH_HOOK_TIMEOUT_MS, AUTH_DB_URL.
// SUPABASE_URL (the gateway's own URL), JWT_SECRET, SUPABASE_DB_URL and SEND_EMAIL_HOOK_SECRET come
// from the gateway's environment (scripts/lib/config.mjs functionsEnv).
import { parse } from 'smol-toml';

export interface EmailConfig {
  /** [auth.email] enabled: the email provider (GoTrue's EXTERNAL_EMAIL_ENABLED). */
  enabled: boolean;
  /** enable_confirmations: a new address must be confirmed before signing in (GoTrue's !MAILER_AUTOCONFIRM). */
  enableConfirmations: boolean;
  /** double_confirm_changes: an email change is confirmed from the current and the new address. */
  doubleConfirmChanges: boolean;
  /** secure_password_change: not served locally (see the README); read so the setting is known. */
  securePasswordChange: boolean;
  /** max_frequency in seconds: the least time between two mails of a kind to one user. */
  maxFrequency: number;
  otpLength: number;
  /** otp_expiry in seconds. */
  otpExpiry: number;
}

export interface RateLimitConfig {
  /** Mails per hour, project-wide, as GoTrue counts them; null when not applied (see below). */
  emailSent: number | null;
  /** Sign-ups, OTP and magic-link, recovery and resend requests per 5 minutes and client address. */
  signInSignUps: number;
  /** OTP and link verifications per 5 minutes and client address. */
  tokenVerifications: number;
  /** Password sign-ins and refreshes (POST /token) per 5 minutes and client address. */
  tokenRefresh: number;
}

export interface HookConfig {
  enabled: boolean;
  uri: string;
  /** "v1,whsec_<base64>" secrets, each signs the call (Standard Webhooks). */
  secrets: string[];
  timeoutMs: number;
}

export interface AuthConfig {
  /** The API's public URL (http://127.0.0.1:54321). */
  apiUrl: string;
  /** `<API_URL>/auth/v1`: the issuer of access tokens and the base of the links in mails. */
  externalUrl: string;
  siteUrl: string;
  additionalRedirectUrls: string[];
  /** The `iss` of access tokens: [auth] jwt_issuer, else externalUrl (as the Supabase CLI sets it). */
  jwtIssuer: string;
  jwtSecret: string;
  /** The keys the gateway accepts as `apikey` (Kong's key-auth consumers): anon and service_role. */
  apiKeys: Set<string>;
  /** jwt_expiry in seconds. */
  jwtExpiry: number;
  adminRoles: string[];
  enableSignup: boolean;
  enableAnonymousSignIns: boolean;
  minimumPasswordLength: number;
  /** Character sets of password_requirements; a password needs one character of each. */
  passwordRequiredCharacters: string[];
  refreshTokenRotation: boolean;
  /** refresh_token_reuse_interval in seconds. */
  refreshTokenReuseInterval: number;
  /** How long a PKCE flow's auth code may be exchanged, in seconds (GoTrue's 5 minutes). */
  flowStateExpiry: number;
  email: EmailConfig;
  rateLimit: RateLimitConfig;
  hook: HookConfig;
  /** postgres.js URL as supabase_auth_admin (GoTrue's role). */
  dbUrl: string;
  /** postgres.js URL of a role that may call pgcrypto (extensions.crypt) to hash passwords. */
  cryptoDbUrl: string;
}

// The Supabase CLI's password_requirements values, as it hands them to GoTrue.
const PASSWORD_REQUIREMENTS: Record<string, string[]> = {
  '': [],
  letters_digits: ['abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ', '0123456789'],
  lower_upper_letters_digits: ['abcdefghijklmnopqrstuvwxyz', 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', '0123456789'],
  lower_upper_letters_digits_symbols: [
    'abcdefghijklmnopqrstuvwxyz', 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', '0123456789', '!@#$%^&*()_+-=[]{};\'\\\\:"|<>?,./`~',
  ],
};

type Table = Record<string, unknown>;

function table(value: unknown): Table {
  return value && typeof value === 'object' && !Array.isArray(value) ? value as Table : {};
}

/** A Go duration ("1s", "1m30s", "500ms") or a number of seconds, in seconds. */
export function parseDuration(value: unknown, fallback: number): number {
  if (typeof value === 'number') return value;
  if (typeof value !== 'string' || value.trim() === '') return fallback;
  const text = value.trim();
  if (/^\d+(\.\d+)?$/.test(text)) return Number(text);
  const units: Record<string, number> = { h: 3600, m: 60, s: 1, ms: 0.001 };
  let total = 0;
  let rest = text;
  const part = /^(\d+(?:\.\d+)?)(ms|h|m|s)/;
  while (rest) {
    const m = part.exec(rest);
    if (!m) throw new Error(`auth: cannot read the duration ${JSON.stringify(value)}`);
    total += Number(m[1]) * units[m[2]];
    rest = rest.slice(m[0].length);
  }
  return total;
}

function envBool(name: string, fallback: boolean): boolean {
  const v = Deno.env.get(name);
  if (v === undefined || v === '') return fallback;
  if (/^(1|true|yes|on)$/i.test(v)) return true;
  if (/^(0|false|no|off)$/i.test(v)) return false;
  throw new Error(`auth: ${name} must be true or false`);
}

function envNumber(name: string, fallback: number): number {
  const v = Deno.env.get(name);
  if (v === undefined || v === '') return fallback;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new Error(`auth: ${name} must be a non-negative number`);
  return n;
}

function num(value: unknown, fallback: number): number {
  return typeof value === 'number' && Number.isFinite(value) ? value : fallback;
}

function bool(value: unknown, fallback: boolean): boolean {
  return typeof value === 'boolean' ? value : fallback;
}

/** SUPABASE_DB_URL with another role (GoTrue's supabase_auth_admin; password `postgres` locally). */
function withRole(dbUrl: string, role: string, password: string): string {
  const url = new URL(dbUrl);
  url.username = role;
  url.password = password;
  return url.toString();
}

function requireEnv(name: string): string {
  const value = Deno.env.get(name);
  if (!value) throw new Error(`auth: ${name} is not set`);
  return value;
}

/** Reads supabase/config.toml (`configText`) and the environment. */
export function loadAuthConfig(configText: string): AuthConfig {
  const root = table(parse(configText));
  const auth = table(root.auth);
  const email = table(auth.email);
  const rateLimit = table(auth.rate_limit);
  const smtp = table(email.smtp);
  const hook = table(table(auth.hook).send_email);

  const apiUrl = requireEnv('SUPABASE_URL').replace(/\/+$/, '');
  const dbUrl = requireEnv('SUPABASE_DB_URL');
  const requirements = typeof auth.password_requirements === 'string' ? auth.password_requirements : '';
  if (!(requirements in PASSWORD_REQUIREMENTS)) throw new Error(`auth: unknown password_requirements ${requirements}`);

  // The Supabase CLI gives GoTrue [auth.rate_limit] email_sent only with [auth.email.smtp]
  // enabled (otherwise 360000 an hour, i.e. none): mails here go through the Send Email Hook
  // to the local mailbox, so the same holds unless AUTH_RATE_LIMIT_EMAIL_SENT asks for a limit.
  const emailSentEnv = Deno.env.get('AUTH_RATE_LIMIT_EMAIL_SENT');
  const emailSent = emailSentEnv !== undefined && emailSentEnv !== ''
    ? envNumber('AUTH_RATE_LIMIT_EMAIL_SENT', 0)
    : smtp.enabled === true ? num(rateLimit.email_sent, 2) : null;

  const hookSecretEnv = Deno.env.get('SEND_EMAIL_HOOK_SECRET');
  const hookSecrets = hookSecretEnv
    ? [hookSecretEnv]
    : typeof hook.secrets === 'string' ? hook.secrets.split('|').filter(Boolean) : [];

  return {
    apiUrl,
    externalUrl: `${apiUrl}/auth/v1`,
    siteUrl: Deno.env.get('AUTH_SITE_URL') || (typeof auth.site_url === 'string' ? auth.site_url : 'http://127.0.0.1:3000'),
    additionalRedirectUrls: Array.isArray(auth.additional_redirect_urls)
      ? auth.additional_redirect_urls.filter((u): u is string => typeof u === 'string')
      : [],
    jwtIssuer: typeof auth.jwt_issuer === 'string' && auth.jwt_issuer ? auth.jwt_issuer : `${apiUrl}/auth/v1`,
    jwtSecret: requireEnv('JWT_SECRET'),
    apiKeys: new Set([requireEnv('SUPABASE_ANON_KEY'), requireEnv('SUPABASE_SERVICE_ROLE_KEY')]),
    jwtExpiry: envNumber('AUTH_JWT_EXPIRY', num(auth.jwt_expiry, 3600)),
    adminRoles: ['service_role'],
    enableSignup: envBool('AUTH_ENABLE_SIGNUP', bool(auth.enable_signup, true)),
    enableAnonymousSignIns: bool(auth.enable_anonymous_sign_ins, false),
    // GoTrue never accepts fewer than 6.
    minimumPasswordLength: Math.max(6, envNumber('AUTH_MINIMUM_PASSWORD_LENGTH', num(auth.minimum_password_length, 6))),
    passwordRequiredCharacters: PASSWORD_REQUIREMENTS[requirements],
    refreshTokenRotation: bool(auth.enable_refresh_token_rotation, true),
    refreshTokenReuseInterval: envNumber('AUTH_REFRESH_TOKEN_REUSE_INTERVAL', num(auth.refresh_token_reuse_interval, 10)),
    flowStateExpiry: 300,
    email: {
      enabled: bool(email.enabled, true),
      enableConfirmations: envBool('AUTH_ENABLE_CONFIRMATIONS', bool(email.enable_confirmations, false)),
      doubleConfirmChanges: envBool('AUTH_DOUBLE_CONFIRM_CHANGES', bool(email.double_confirm_changes, true)),
      securePasswordChange: bool(email.secure_password_change, false),
      maxFrequency: parseDuration(Deno.env.get('AUTH_EMAIL_MAX_FREQUENCY') || email.max_frequency, 1),
      otpLength: num(email.otp_length, 6),
      otpExpiry: envNumber('AUTH_OTP_EXPIRY', num(email.otp_expiry, 3600)),
    },
    rateLimit: {
      emailSent,
      signInSignUps: envNumber('AUTH_RATE_LIMIT_SIGN_IN_SIGN_UPS', num(rateLimit.sign_in_sign_ups, 30)),
      tokenVerifications: envNumber('AUTH_RATE_LIMIT_TOKEN_VERIFICATIONS', num(rateLimit.token_verifications, 30)),
      tokenRefresh: envNumber('AUTH_RATE_LIMIT_TOKEN_REFRESH', num(rateLimit.token_refresh, 150)),
    },
    hook: {
      enabled: bool(hook.enabled, false),
      // config.toml's uri is the one `supabase start` uses from inside Docker; here Auth calls the
      // function through this same gateway, as hosted Auth calls the project's function.
      uri: Deno.env.get('AUTH_SEND_EMAIL_HOOK_URI') || `${apiUrl}/functions/v1/auth-send-email`,
      secrets: hookSecrets,
      timeoutMs: envNumber('AUTH_HOOK_TIMEOUT_MS', 5000),
    },
    dbUrl: Deno.env.get('AUTH_DB_URL') || withRole(dbUrl, 'supabase_auth_admin', 'postgres'),
    cryptoDbUrl: dbUrl,
  };
}
