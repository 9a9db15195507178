// POST /signup (GoTrue's Signup) with email and password, and the sign-up the magic link and the
// admin's generate_link share. With [auth.email] enable_confirmations the user gets a
// confirmation mail and no session; without, a session at once. Signing up again with the address
// of a confirmed user answers a look-alike user (confirmations on: nobody learns who is
// registered) or 422 user_already_exists (confirmations off).
import { z } from 'zod';
import { audit } from './audit.ts';
import { type Ctx, requestAud } from './context.ts';
import { authDb, transaction, type Tx } from './db.ts';
import { badRequest, unprocessable } from './errors.ts';
import { flowFromChallenge, sendConfirmation } from './mail.ts';
import { checkPasswordStrength, hashPassword } from './passwords.ts';
import { createFlowState } from './pkce.ts';
import { limitAddress } from './ratelimit.ts';
import { json } from './respond.ts';
import { issueSession } from './sessions.ts';
import {
  confirmUser,
  emailIdentityData,
  findUserById,
  identitiesOf,
  insertIdentity,
  insertUser,
  isDuplicatedEmail,
  loadUserJson,
  type Metadata,
  refreshProviders,
  setUserMetadata,
  type UserRow,
} from './users.ts';
import { jsonObject, pkceFields, readBody, text, validateEmail, validatePkceParams } from './validation.ts';

const SignupBody = z.object({
  email: text(1024),
  phone: text(64),
  password: text(1024),
  data: jsonObject(),
  channel: text(32),
  ...pkceFields,
});

export interface SignupParams {
  email: string;
  phone: string;
  password: string;
  data: Metadata;
  codeChallenge: string;
  codeChallengeMethod: string;
}

export type SignupOutcome =
  | { kind: 'session'; body: Record<string, unknown> }
  | { kind: 'user'; body: Record<string, unknown> };

/** The checks GoTrue's validateSignupParams and Signup make before touching the database. */
function validateSignup(ctx: Ctx, p: SignupParams): string {
  const { config } = ctx;
  if (!config.enableSignup) throw unprocessable('signup_disabled', 'Signups not allowed for this instance');
  if (p.password === '') throw badRequest('validation_failed', 'Signup requires a valid password');
  checkPasswordStrength(config, p.password);
  if (p.email !== '' && p.phone !== '') {
    throw badRequest('validation_failed', 'Only an email address or phone number should be provided on signup.');
  }
  validatePkceParams(p.codeChallengeMethod, p.codeChallenge);
  // Phone sign-ups need an SMS provider: the local stack has none ([auth.sms] is off).
  if (p.phone !== '') throw badRequest('phone_provider_disabled', 'Phone signups are disabled');
  if (!config.email.enabled) throw badRequest('email_provider_disabled', 'Email signups are disabled');
  return validateEmail(p.email);
}

/** GoTrue's sanitizeUser: what a repeated sign-up sees instead of the real user. */
function lookAlikeUser(ctx: Ctx, email: string, p: SignupParams): Record<string, unknown> {
  const now = new Date().toISOString();
  return {
    id: crypto.randomUUID(),
    aud: requestAud(ctx),
    role: '',
    email,
    phone: '',
    confirmation_sent_at: now,
    app_metadata: { provider: 'email', providers: ['email'] },
    user_metadata: p.data,
    identities: [],
    created_at: now,
    updated_at: now,
    is_anonymous: false,
  };
}

/**
 * Creates the user with its email identity (or finds an unconfirmed one) in `tx`, then confirms
 * it or sends the confirmation. Returns the user, or 'exists' for a confirmed address.
 */
async function createOrResume(
  tx: Tx,
  ctx: Ctx,
  email: string,
  existing: UserRow | undefined,
  passwordHash: string,
  p: SignupParams,
): Promise<UserRow | 'exists'> {
  let user: UserRow;
  if (existing) {
    if (existing.email_confirmed_at) return 'exists';
    // An unconfirmed user keeps what it has: nobody has proved this address yet.
    user = existing;
  } else {
    user = await insertUser(tx, {
      aud: requestAud(ctx),
      role: 'authenticated',
      email,
      phone: null,
      encryptedPassword: passwordHash,
      appMetadata: { provider: 'email', providers: ['email'] },
      userMetadata: p.data,
    });
  }
  const identities = await identitiesOf(tx, user.id);
  if (!identities.some((i) => i.provider === 'email')) {
    const identityData: Metadata = emailIdentityData(user.id, email);
    for (const [k, v] of Object.entries(p.data)) if (!(k in identityData)) identityData[k] = v;
    const identity = await insertIdentity(tx, user.id, 'email', identityData);
    // GoTrue's RemoveUnconfirmedIdentities: an unconfirmed user's metadata and identities are
    // replaced by this identity's.
    await setUserMetadata(tx, user.id, Object.fromEntries(Object.entries(identity.identity_data).filter(([, v]) => v !== null)));
    await tx`delete from auth.identities where user_id = ${user.id} and id <> ${identity.id}`;
    await refreshProviders(tx, user.id);
  }
  user = (await findUserById(tx, user.id))!;
  if (!ctx.config.email.enableConfirmations) {
    await audit(tx, user, 'user_signedup', { provider: 'email' });
    await confirmUser(tx, user.id);
  } else {
    await audit(tx, user, 'user_confirmation_requested', { provider: 'email' });
    const flow = flowFromChallenge(p.codeChallenge);
    if (flow === 'pkce') {
      await createFlowState(tx, {
        providerType: 'email',
        method: 'email/signup',
        codeChallenge: p.codeChallenge,
        codeChallengeMethod: p.codeChallengeMethod,
        userId: user.id,
      });
    }
    await sendConfirmation(tx, ctx, user, flow);
  }
  return (await findUserById(tx, user.id))!;
}

/** A sign-up with email and password, everything written in one transaction. */
export async function signUp(ctx: Ctx, p: SignupParams): Promise<SignupOutcome> {
  const email = validateSignup(ctx, p);
  const db = authDb(ctx.config);
  const existing = await isDuplicatedEmail(db, email, requestAud(ctx));
  // Hashing is slow on purpose: done before the transaction, as GoTrue does.
  const passwordHash = existing ? '' : await hashPassword(ctx.config, p.password);

  const result = await transaction(ctx.config, async (tx) => {
    const user = await createOrResume(tx, ctx, email, existing, passwordHash, p);
    if (user === 'exists') {
      await audit(tx, existing!, 'user_repeated_signup', { provider: 'email' });
      return 'exists' as const;
    }
    if (user.email_confirmed_at) {
      await audit(tx, user, 'login', { provider: 'email' });
      return { kind: 'session' as const, body: { ...await issueSession(tx, ctx, user.id, 'password') } };
    }
    const body = await loadUserJson(tx, user.id);
    // An invited user's sign-up shows nothing of the invitation.
    if (user.invited_at) return { kind: 'user' as const, body: { ...body, user_metadata: {}, identities: [] } };
    return { kind: 'user' as const, body };
  });
  if (result === 'exists') {
    if (!ctx.config.email.enableConfirmations) throw unprocessable('user_already_exists', 'User already registered');
    return { kind: 'user', body: lookAlikeUser(ctx, email, p) };
  }
  return result;
}

export async function handleSignup(ctx: Ctx): Promise<Response> {
  const body = await readBody(ctx.req, SignupBody);
  if (body.email === '' && body.phone === '') {
    // Anonymous sign-ins are not served locally (see the README), whatever config.toml says.
    throw unprocessable('anonymous_provider_disabled', ctx.config.enableAnonymousSignIns
      ? 'Anonymous sign-ins are not served by the local Auth: use supabase start or a hosted project'
      : 'Anonymous sign-ins are disabled');
  }
  limitAddress('signups', ctx.ip, ctx.config.rateLimit.signInSignUps);
  const outcome = await signUp(ctx, {
    email: body.email,
    phone: body.phone,
    password: body.password,
    data: body.data ?? {},
    codeChallenge: body.code_challenge,
    codeChallengeMethod: body.code_challenge_method,
  });
  return json(outcome.body);
}
