// GET /user, PUT /user (updateUser: password, email change with confirmation, metadata) and
// POST /logout?scope=global|local|others, for a signed-in user (GoTrue's UserGet, UserUpdate,
// Logout).
import { z } from 'zod';
import { audit } from './audit.ts';
import { type Ctx, requestAud } from './context.ts';
import { authDb, transaction } from './db.ts';
import { badRequest, forbidden, unprocessable } from './errors.ts';
import { requireUser } from './guards.ts';
import { flowFromChallenge, sendEmailChange } from './mail.ts';
import { checkPasswordStrength, hashPassword, passwordMatches } from './passwords.ts';
import { createFlowState } from './pkce.ts';
import { limitAddress } from './ratelimit.ts';
import { json, noContent } from './respond.ts';
import { logout, type LogoutScope } from './sessions.ts';
import {
  clearOneTimeTokens,
  emailIdentityData,
  findUserById,
  identitiesOf,
  insertIdentity,
  isDuplicatedEmail,
  loadUserJson,
  mergeMetadata,
  refreshProviders,
  setAppMetadata,
  setUserMetadata,
  userJson,
} from './users.ts';
import { jsonObject, optionalText, pkceFields, readBody, text, validateEmail, validatePkceParams } from './validation.ts';

const UpdateBody = z.object({
  email: text(1024),
  password: optionalText(1024),
  current_password: optionalText(1024),
  nonce: text(64),
  data: jsonObject(),
  app_metadata: jsonObject(),
  phone: text(64),
  channel: text(32),
  ...pkceFields,
});

export async function handleGetUser(ctx: Ctx): Promise<Response> {
  const caller = await requireUser(ctx);
  const aud = typeof caller.claims.aud === 'string' ? caller.claims.aud : caller.claims.aud?.[0];
  if (!aud || aud !== requestAud(ctx)) throw badRequest('validation_failed', "Token audience doesn't match request audience");
  return json(userJson(caller.user, await identitiesOf(authDb(ctx.config), caller.user.id)));
}

/** GoTrue's UserUpdate: every change in one transaction; a new address only after its confirmation. */
export async function handleUpdateUser(ctx: Ctx): Promise<Response> {
  const { config } = ctx;
  const caller = await requireUser(ctx);
  limitAddress('user', ctx.ip, config.rateLimit.signInSignUps);
  const body = await readBody(ctx.req, UpdateBody);
  const user = caller.user;
  const email = body.email !== '' ? validateEmail(body.email) : '';
  if (body.phone !== '') throw badRequest('phone_provider_disabled', 'Phone logins are disabled');
  if (body.password !== undefined) checkPasswordStrength(config, body.password);
  validatePkceParams(body.code_challenge_method, body.code_challenge);
  // Only an admin user (role "admin" in the project's audience) may change its own app_metadata;
  // everyone else goes through the admin API with the service role key.
  if (body.app_metadata !== undefined && user.role !== 'admin') {
    throw forbidden('not_admin', 'Updating app_metadata requires admin privileges');
  }
  const changingEmail = email !== '' && email !== user.email;
  if (changingEmail && await isDuplicatedEmail(authDb(config), email, requestAud(ctx), user.id)) {
    throw unprocessable('email_exists', 'A user with this email address has already been registered');
  }
  let passwordHash: string | undefined;
  if (body.password !== undefined) {
    if (body.password !== '' && user.encrypted_password && await passwordMatches(config, body.password, user.encrypted_password)) {
      throw unprocessable('same_password', 'New password should be different from the old password.');
    }
    passwordHash = body.password === '' ? '' : await hashPassword(config, body.password);
  }

  const updated = await transaction(config, async (tx) => {
    if (passwordHash !== undefined) {
      // GoTrue's UpdatePassword: pending tokens are void, other sessions signed out.
      await tx`
        update auth.users set encrypted_password = ${passwordHash}, confirmation_token = '', confirmation_sent_at = null,
          recovery_token = '', recovery_sent_at = null, email_change_token_current = '', email_change_token_new = '',
          email_change_sent_at = null, phone_change_token = '', phone_change_sent_at = null,
          reauthentication_token = '', reauthentication_sent_at = null, updated_at = now()
        where id = ${user.id}`;
      await clearOneTimeTokens(tx, user.id);
      await logout(tx, user.id, caller.session?.id, 'others');
      await audit(tx, user, 'user_updated_password');
      if (!user.encrypted_password && passwordHash && user.email) {
        const identities = await identitiesOf(tx, user.id);
        if (!identities.some((i) => i.provider === 'email')) {
          await insertIdentity(tx, user.id, 'email', emailIdentityData(user.id, user.email, !!user.email_confirmed_at));
          await refreshProviders(tx, user.id);
        }
      }
    }
    if (body.data !== undefined) {
      const current = await findUserById(tx, user.id);
      await setUserMetadata(tx, user.id, mergeMetadata(current!.raw_user_meta_data, body.data));
    }
    if (body.app_metadata !== undefined) {
      const current = await findUserById(tx, user.id);
      await setAppMetadata(tx, user.id, mergeMetadata(current!.raw_app_meta_data, body.app_metadata));
    }
    if (changingEmail) {
      const flow = flowFromChallenge(body.code_challenge);
      if (flow === 'pkce') {
        await createFlowState(tx, {
          providerType: 'email_change', method: 'email_change',
          codeChallenge: body.code_challenge, codeChallengeMethod: body.code_challenge_method, userId: user.id,
        });
      }
      await sendEmailChange(tx, ctx, (await findUserById(tx, user.id))!, email, flow);
    }
    await audit(tx, user, 'user_modified');
    return await loadUserJson(tx, user.id);
  });
  return json(updated);
}

export async function handleLogout(ctx: Ctx): Promise<Response> {
  const caller = await requireUser(ctx);
  const raw = ctx.url.searchParams.get('scope') ?? '';
  const scopes: Record<string, LogoutScope> = { '': 'global', global: 'global', local: 'local', others: 'others' };
  const scope = scopes[raw];
  if (!scope) throw badRequest('validation_failed', `Unsupported logout scope ${JSON.stringify(raw)}`);
  await transaction(ctx.config, async (tx) => {
    await audit(tx, caller.user, 'logout');
    await logout(tx, caller.user.id, caller.session?.id, scope);
  });
  return noContent();
}
