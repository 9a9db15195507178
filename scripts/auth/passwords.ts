// Passwords as GoTrue keeps them: bcrypt hashes ($2a$, cost 10, GoTrue's bcrypt.DefaultCost) in
// auth.users.encrypted_password, made and checked by pgcrypto so no bcrypt code is needed here.
// A password is never logged, never put in an error message and never stored in the clear.
import type { AuthConfig } from './config.ts';
import { cryptoDb } from './db.ts';
import { badRequest, weakPassword } from './errors.ts';

/** bcrypt reads at most 72 bytes; GoTrue refuses longer passwords rather than truncate them. */
export const MAX_PASSWORD_LENGTH = 72;
const BCRYPT_COST = 10;
const BCRYPT_HASH = /^\$2[abxy]\$\d\d\$[./A-Za-z0-9]{53}$/;

export async function hashPassword(config: AuthConfig, password: string): Promise<string> {
  const [row] = await cryptoDb(config)<{ hash: string }[]>`
    select extensions.crypt(${password}, extensions.gen_salt('bf', ${BCRYPT_COST})) as hash`;
  return row.hash;
}

/** True when `password` matches the bcrypt `hash` (false for no hash or one of another kind). */
export async function passwordMatches(config: AuthConfig, password: string, hash: string | null): Promise<boolean> {
  if (!hash || !BCRYPT_HASH.test(hash)) return false;
  const [row] = await cryptoDb(config)<{ ok: boolean }[]>`select extensions.crypt(${password}, ${hash}) = ${hash} as ok`;
  return row.ok;
}

export function isBcryptHash(hash: string): boolean {
  return BCRYPT_HASH.test(hash);
}

/** GoTrue's checkPasswordStrength: too long is validation_failed, too weak is weak_password with its reasons. */
export function checkPasswordStrength(config: AuthConfig, password: string): void {
  if (new TextEncoder().encode(password).byteLength > MAX_PASSWORD_LENGTH) {
    throw badRequest('validation_failed', `Password cannot be longer than ${MAX_PASSWORD_LENGTH} characters`);
  }
  const reasons: string[] = [];
  const messages: string[] = [];
  if ([...password].length < config.minimumPasswordLength) {
    reasons.push('length');
    messages.push(`Password should be at least ${config.minimumPasswordLength} characters.`);
  }
  const sets = config.passwordRequiredCharacters;
  if (sets.some((set) => set !== '' && ![...password].some((c) => set.includes(c)))) {
    reasons.push('characters');
    messages.push(`Password should contain at least one character of each: ${sets.join(', ')}.`);
  }
  if (reasons.length > 0) throw weakPassword(messages.join(' '), reasons);
}

const PASSWORD_ALPHABET = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';

/**
 * A random password nobody knows, for users made without one (magic link sign-ups, admin-created
 * users): one character of each required set, then random ones (GoTrue's GeneratePassword).
 */
export function randomPassword(config: AuthConfig, length = 64): string {
  const pick = (chars: string) => chars[crypto.getRandomValues(new Uint32Array(1))[0] % chars.length];
  const required = config.passwordRequiredCharacters.filter(Boolean).map(pick);
  const rest = Array.from({ length: Math.max(0, length - required.length) }, () => pick(PASSWORD_ALPHABET));
  return [...required, ...rest].join('');
}
