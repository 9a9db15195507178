// The admin API (supabase.auth.admin with the service role key): /admin/users (list, create),
// /admin/users/{id} (get, update, delete), /admin/generate_link and /invite (GoTrue's admin.go,
// mail.go, invite.go). Every route needs a token with an admin role: 401 no_authorization
// without one, 403 not_admin for the anon key or a user's token.
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { audit, SERVICE_ROLE_ACTOR } from './audit.ts';
import { type Ctx, requestAud } from './context.ts';
import { authDb, transaction, type Tx } from './db.ts';
import { AuthError, badRequest, notFound, unprocessable } from './errors.ts';
import { requireAdmin } from './guards.ts';
import { generateOtp, sendInvite, tokenHash } from './mail.ts';
import { checkPasswordStrength, hashPassword, isBcryptHash, MAX_PASSWORD_LENGTH, randomPassword } from './passwords.ts';
import { isRedirectUrlValid, referrer } from './redirect.ts';
import { json } from './respond.ts';
import { logout } from './sessions.ts';
import {
  clearOneTimeTokens,
  confirmUser,
  createOneTimeToken,
  emailIdentityData,
  findUserByEmail,
  findUserById,
  identitiesOf,
  insertIdentity,
  insertUser,
  isDuplicatedEmail,
  loadUserJson,
  mergeMetadata,
  setAppMetadata,
  setUserMetadata,
  type UserRow,
  userJson,
} from './users.ts';
import { flag, jsonObject, optionalText, readBody, text, validateEmail, validatePhone } from './validation.ts';

const UserParams = z.object({
  id: text(64),
  aud: text(255),
  role: text(255),
  email: text(1024),
  phone: text(64),
  password: optionalText(1024),
  password_hash: text(1024),
  email_confirm: flag(),
  phone_confirm: flag(),
  user_metadata: jsonObject(),
  app_metadata: jsonObject(),
  ban_duration: text(64),
});
const DeleteParams = z.object({ should_soft_delete: flag() });
const LinkParams = z.object({
  type: text(32),
  email: text(1024),
  new_email: text(1024),
  password: text(1024),
  data: jsonObject(),
  redirect_to: text(4096),
});
const InviteParams = z.object({ email: text(1024), data: jsonObject() });

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const DUPLICATE_EMAIL = 'A user with this email address has already been registered';

/** A Go duration ("24h", "1h30m", "90s") in milliseconds; "none" lifts a ban. */
function banMillis(duration: string): number | null {
  if (duration === '') return null;
  if (duration === 'none') return 0;
  const units: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1, us: 0.001, 'µs': 0.001, ns: 0.000001 };
  let rest = duration;
  let total = 0;
  while (rest) {
    const m = /^(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)/.exec(rest);
    if (!m) throw badRequest('validation_failed', `invalid format for ban duration: time: invalid duration ${JSON.stringify(duration)}`);
    total += Number(m[1]) * units[m[2]];
    rest = rest.slice(m[0].length);
  }
  return total;
}

async function setBan(tx: Tx, userId: string, millis: number | null): Promise<void> {
  if (millis === null) return;
  const until = millis === 0 ? null : new Date(Date.now() + millis);
  await tx`update auth.users set banned_until = ${until}, updated_at = now() where id = ${userId}`;
}

async function userFromPath(ctx: Ctx, id: string): Promise<UserRow> {
  if (!UUID.test(id)) throw notFound('validation_failed', 'user_id must be an UUID');
  const user = await findUserById(authDb(ctx.config), id);
  if (!user) throw notFound('user_not_found', 'User not found');
  return user;
}

async function listUsers(ctx: Ctx): Promise<Response> {
  const q = ctx.url.searchParams;
  const parse = (v: string | null, fallback: number) => {
    if (!v) return fallback;
    if (!/^\d+$/.test(v)) throw badRequest('validation_failed', `Bad Pagination Parameters: strconv.ParseUint: parsing ${JSON.stringify(v)}: invalid syntax`);
    return Number(v);
  };
  const page = Math.max(1, parse(q.get('page'), 1));
  const perPage = Math.min(1000, Math.max(1, parse(q.get('per_page'), 50)));
  const aud = requestAud(ctx);
  const filter = q.get('filter') ?? '';
  const like = `%${filter}%`;
  const db = authDb(ctx.config);
  const [{ count }] = await db<{ count: number }[]>`
    select count(*)::int as count from auth.users
    where aud = ${aud} and (${filter} = '' or email like ${like} or raw_user_meta_data ->> 'full_name' ilike ${like})`;
  const rows = await db<UserRow[]>`
    select * from auth.users
    where aud = ${aud} and (${filter} = '' or email like ${like} or raw_user_meta_data ->> 'full_name' ilike ${like})
    order by created_at desc, id
    limit ${perPage} offset ${(page - 1) * perPage}`;
  const identities = rows.length === 0 ? [] : await db`select * from auth.identities where user_id = any(${rows.map((r) => r.id)}::uuid[]) order by created_at, id`;
  const users = rows.map((u) => userJson(u, identities.filter((i) => i.user_id === u.id) as never));
  // GoTrue's pagination headers: Link with next (when there is one) and last, X-Total-Count.
  const totalPages = Math.ceil(count / perPage);
  const link = (n: number) => {
    const u = new URL(ctx.url);
    u.searchParams.set('page', String(n));
    // The path as GoTrue sees it behind the gateway, without /auth/v1.
    return `<${u.pathname.replace(/^\/auth\/v1/, '')}${u.search}>`;
  };
  const links = [...(totalPages > page ? [`${link(page + 1)}; rel="next"`] : []), `${link(totalPages)}; rel="last"`];
  return json({ users, aud }, 200, { link: links.join(', '), 'x-total-count': String(count) });
}

async function createUser(ctx: Ctx): Promise<Response> {
  const p = await readBody(ctx.req, UserParams);
  const aud = p.aud || requestAud(ctx);
  if (p.email === '' && p.phone === '') throw badRequest('validation_failed', 'Cannot create a user without either an email or phone');
  const providers: string[] = [];
  const email = p.email !== '' ? validateEmail(p.email) : '';
  const db = authDb(ctx.config);
  if (email) {
    if (await isDuplicatedEmail(db, email, aud)) throw unprocessable('email_exists', DUPLICATE_EMAIL);
    providers.push('email');
  }
  const phone = p.phone !== '' ? validatePhone(p.phone) : '';
  if (phone) {
    const [taken] = await db`select 1 from auth.users where phone = ${phone} and aud = ${aud}`;
    if (taken) throw unprocessable('phone_exists', 'Phone number already registered by another user');
    providers.push('phone');
  }
  if (p.password !== undefined && p.password_hash !== '') {
    throw badRequest('validation_failed', 'Only a password or a password hash should be provided');
  }
  if (p.password_hash !== '' && !isBcryptHash(p.password_hash)) {
    throw badRequest('validation_failed', 'Only bcrypt password hashes are supported by the local Auth');
  }
  if (p.password && new TextEncoder().encode(p.password).byteLength > MAX_PASSWORD_LENGTH) {
    throw badRequest('validation_failed', 'bcrypt: password length exceeds 72 bytes');
  }
  if (p.id !== '' && !UUID.test(p.id)) throw badRequest('validation_failed', 'ID must conform to the uuid v4 format');
  if (p.id === '00000000-0000-0000-0000-000000000000') throw badRequest('validation_failed', 'ID cannot be a nil uuid');
  const ban = banMillis(p.ban_duration);
  // The admin sets what it likes: no strength rules here, as in GoTrue; a random password if none.
  const passwordHash = p.password_hash || await hashPassword(ctx.config, p.password || randomPassword(ctx.config));

  const user = await transaction(ctx.config, async (tx) => {
    let user: UserRow;
    try {
      user = await insertUser(tx, {
        id: p.id || undefined,
        aud,
        role: p.role || 'authenticated',
        email: email || null,
        phone: phone || null,
        encryptedPassword: passwordHash,
        appMetadata: mergeMetadata({ provider: providers[0], providers }, p.app_metadata ?? {}),
        userMetadata: p.user_metadata ?? {},
      });
    } catch (err) {
      throw new AuthError(500, 'unexpected_failure', 'Database error creating new user', {}, (err as Error).message);
    }
    if (email) await insertIdentity(tx, user.id, 'email', emailIdentityData(user.id, email));
    if (phone) await insertIdentity(tx, user.id, 'phone', { sub: user.id, phone, email_verified: false, phone_verified: false });
    await audit(tx, SERVICE_ROLE_ACTOR, 'user_signedup', { user_id: user.id, user_email: email, user_phone: phone, provider: providers[0] });
    if (p.email_confirm) await confirmUser(tx, user.id);
    if (p.phone_confirm) await tx`update auth.users set phone_confirmed_at = now(), updated_at = now() where id = ${user.id}`;
    await setBan(tx, user.id, ban);
    return await loadUserJson(tx, user.id);
  });
  return json(user);
}

async function updateUser(ctx: Ctx, id: string): Promise<Response> {
  const user = await userFromPath(ctx, id);
  const p = await readBody(ctx.req, UserParams);
  const email = p.email !== '' ? validateEmail(p.email) : '';
  const phone = p.phone !== '' ? validatePhone(p.phone) : '';
  const ban = banMillis(p.ban_duration);
  let passwordHash: string | undefined;
  if (p.password !== undefined) {
    checkPasswordStrength(ctx.config, p.password);
    passwordHash = p.password === '' ? '' : await hashPassword(ctx.config, p.password);
  }
  const updated = await transaction(ctx.config, async (tx) => {
    if (p.role !== '') await tx`update auth.users set role = ${p.role.trim()}, updated_at = now() where id = ${user.id}`;
    if (p.email_confirm) await confirmUser(tx, user.id);
    if (p.phone_confirm) await tx`update auth.users set phone_confirmed_at = now(), updated_at = now() where id = ${user.id}`;
    if (passwordHash !== undefined) {
      await tx`
        update auth.users set encrypted_password = ${passwordHash}, confirmation_token = '', recovery_token = '',
          email_change_token_current = '', email_change_token_new = '', updated_at = now()
        where id = ${user.id}`;
      await clearOneTimeTokens(tx, user.id);
      // An admin's password change signs the user out everywhere (GoTrue's UpdatePassword(nil)).
      await logout(tx, user.id, undefined, 'global');
    }
    const identities = await identitiesOf(tx, user.id);
    if (email) {
      const identity = identities.find((i) => i.provider === 'email');
      if (identity) {
        await tx`
          update auth.identities set identity_data = identity_data || ${tx.json({ email, email_verified: p.email_confirm } as never)}, updated_at = now()
          where id = ${identity.id}`;
      } else {
        await insertIdentity(tx, user.id, 'email', emailIdentityData(user.id, email, p.email_confirm));
      }
      await tx`update auth.users set email = ${email}, updated_at = now() where id = ${user.id}`;
    }
    if (phone) {
      const identity = identities.find((i) => i.provider === 'phone');
      if (identity) {
        await tx`
          update auth.identities set identity_data = identity_data || ${tx.json({ phone, phone_verified: p.phone_confirm } as never)}, updated_at = now()
          where id = ${identity.id}`;
      } else {
        await insertIdentity(tx, user.id, 'phone', { sub: user.id, phone, email_verified: false, phone_verified: p.phone_confirm });
      }
      await tx`update auth.users set phone = ${phone}, updated_at = now() where id = ${user.id}`;
    }
    const current = (await findUserById(tx, user.id))!;
    if (p.app_metadata !== undefined) await setAppMetadata(tx, user.id, mergeMetadata(current.raw_app_meta_data, p.app_metadata));
    if (p.user_metadata !== undefined) await setUserMetadata(tx, user.id, mergeMetadata(current.raw_user_meta_data, p.user_metadata));
    await setBan(tx, user.id, ban);
    await audit(tx, SERVICE_ROLE_ACTOR, 'user_modified', { user_id: user.id, user_email: current.email, user_phone: current.phone });
    return await loadUserJson(tx, user.id);
  }).catch((err) => {
    if (err instanceof AuthError) throw err;
    throw new AuthError(500, 'unexpected_failure', 'Error updating user', {}, (err as Error).message);
  });
  return json(updated);
}

/** GoTrue's obfuscateValue: base64url(sha256(id + value)), cut to `length`. */
function obfuscate(id: string, value: string, length?: number): string {
  return createHash('sha256').update(id + value).digest('base64url').slice(0, length);
}

async function deleteUser(ctx: Ctx, id: string): Promise<Response> {
  const user = await userFromPath(ctx, id);
  const p = await readBody(ctx.req, DeleteParams, { optional: true });
  await transaction(ctx.config, async (tx) => {
    await audit(tx, SERVICE_ROLE_ACTOR, 'user_deleted', { user_id: user.id, user_email: user.email, user_phone: user.phone });
    if (!p.should_soft_delete) {
      try {
        await tx`delete from auth.users where id = ${user.id}`;
      } catch (err) {
        // e.g. the tenancy rule: the only owner of an organization cannot be deleted.
        throw new AuthError(500, 'unexpected_failure', 'Database error deleting user', {}, (err as Error).message);
      }
      return;
    }
    if (user.deleted_at) return;
    // GoTrue's SoftDeleteUser: the row stays, unusable, with its personal data replaced by hashes.
    await tx`
      update auth.users set email = ${obfuscate(user.id, user.email ?? '')}, phone = ${obfuscate(user.id, user.phone ?? '', 15)},
        email_change = ${obfuscate(user.id, user.email_change ?? '')}, phone_change = ${obfuscate(user.id, user.phone_change ?? '', 15)},
        encrypted_password = null, confirmation_token = '', recovery_token = '', email_change_token_current = '',
        email_change_token_new = '', phone_change_token = '', raw_user_meta_data = '{}', raw_app_meta_data = '{}',
        deleted_at = now(), updated_at = now()
      where id = ${user.id}`;
    await clearOneTimeTokens(tx, user.id);
    for (const identity of await identitiesOf(tx, user.id)) {
      await tx`
        update auth.identities set identity_data = '{}', provider_id = ${obfuscate(user.id, `${identity.provider}:${identity.provider_id}`)}
        where id = ${identity.id}`;
    }
    await logout(tx, user.id, undefined, 'global');
  });
  return json({});
}

/** POST /admin/generate_link: the link and code a mail would carry, without sending the mail. */
async function generateLink(ctx: Ctx): Promise<Response> {
  const { config } = ctx;
  const p = await readBody(ctx.req, LinkParams);
  const email = validateEmail(p.email);
  const redirectTo = isRedirectUrlValid(config, p.redirect_to) ? p.redirect_to : referrer(config, ctx.req, ctx.url);
  const aud = requestAud(ctx);
  const db = authDb(config);
  let type = p.type;
  let user = await findUserByEmail(db, email, aud);
  let password = p.password;
  if (!user) {
    if (type === 'magiclink') {
      type = 'signup';
      password = randomPassword(config);
    } else if (['recovery', 'email_change_current', 'email_change_new'].includes(type)) {
      throw notFound('user_not_found', 'User with this email not found');
    }
  }
  if (!['signup', 'invite', 'magiclink', 'recovery', 'email_change_current', 'email_change_new'].includes(type)) {
    throw badRequest('validation_failed', `Invalid email action link type requested: ${type}`);
  }
  if ((type === 'signup' || type === 'invite') && user?.email_confirmed_at) throw unprocessable('email_exists', DUPLICATE_EMAIL);
  if (type === 'signup' && !user) {
    if (password === '') throw badRequest('validation_failed', 'Signup requires a valid password');
    checkPasswordStrength(config, password);
  }
  const newEmail = type.startsWith('email_change') ? validateEmail(p.new_email) : '';
  if (newEmail && user && await isDuplicatedEmail(db, newEmail, aud, user.id)) throw unprocessable('email_exists', DUPLICATE_EMAIL);
  if (type === 'email_change_current' && !config.email.doubleConfirmChanges) {
    throw badRequest('validation_failed', 'Enable secure email change to generate link for current email');
  }
  const passwordHash = type === 'signup' && !user ? await hashPassword(config, password) : '';

  const otp = generateOtp(config.email.otpLength);
  const hashed = tokenHash(email, otp);
  const result = await transaction(config, async (tx) => {
    if (!user) {
      user = await insertUser(tx, {
        aud, role: 'authenticated', email, phone: null, encryptedPassword: passwordHash,
        appMetadata: { provider: 'email', providers: ['email'] }, userMetadata: p.data ?? {},
      });
      await insertIdentity(tx, user.id, 'email', emailIdentityData(user.id, email));
    } else if (type === 'signup' && p.data) {
      await setUserMetadata(tx, user.id, mergeMetadata(user.raw_user_meta_data, p.data));
    }
    const target = user;
    let linkToken = hashed;
    let verifyType = type;
    switch (type) {
      case 'magiclink':
      case 'recovery':
        await audit(tx, target, 'user_recovery_requested');
        await tx`update auth.users set recovery_token = ${hashed}, recovery_sent_at = now(), updated_at = now() where id = ${target.id}`;
        await createOneTimeToken(tx, target.id, email, hashed, 'recovery_token');
        break;
      case 'invite':
        await audit(tx, SERVICE_ROLE_ACTOR, 'user_invited', { user_id: target.id, user_email: email });
        await tx`
          update auth.users set confirmation_token = ${hashed}, confirmation_sent_at = now(), invited_at = now(), updated_at = now()
          where id = ${target.id}`;
        await createOneTimeToken(tx, target.id, email, hashed, 'confirmation_token');
        break;
      case 'signup':
        await tx`update auth.users set confirmation_token = ${hashed}, confirmation_sent_at = now(), updated_at = now() where id = ${target.id}`;
        await createOneTimeToken(tx, target.id, email, hashed, 'confirmation_token');
        break;
      default: {
        // email_change_current / email_change_new: the link for one side of a change to new_email.
        const forNew = type === 'email_change_new';
        linkToken = forNew ? tokenHash(newEmail, otp) : hashed;
        verifyType = 'email_change';
        await tx`
          update auth.users set email_change = ${newEmail}, email_change_sent_at = now(), email_change_confirm_status = 0,
            email_change_token_current = ${forNew ? target.email_change_token_current ?? '' : linkToken},
            email_change_token_new = ${forNew ? linkToken : target.email_change_token_new ?? ''}, updated_at = now()
          where id = ${target.id}`;
        if (forNew) await createOneTimeToken(tx, target.id, newEmail, linkToken, 'email_change_token_new');
        else await createOneTimeToken(tx, target.id, email, linkToken, 'email_change_token_current');
      }
    }
    const link = new URL(`${config.externalUrl}/verify`);
    link.searchParams.set('token', linkToken);
    link.searchParams.set('type', verifyType);
    link.searchParams.set('redirect_to', redirectTo);
    return {
      ...await loadUserJson(tx, target.id),
      action_link: link.toString(),
      email_otp: otp,
      hashed_token: linkToken,
      verification_type: type,
      redirect_to: redirectTo,
    };
  });
  return json(result);
}

/** POST /invite (inviteUserByEmail): creates the user if new and sends the invitation mail. */
async function invite(ctx: Ctx): Promise<Response> {
  const p = await readBody(ctx.req, InviteParams);
  const email = validateEmail(p.email);
  const aud = requestAud(ctx);
  const existing = await findUserByEmail(authDb(ctx.config), email, aud);
  const result = await transaction(ctx.config, async (tx) => {
    let user = existing;
    if (user?.email_confirmed_at) throw unprocessable('email_exists', DUPLICATE_EMAIL);
    if (!user) {
      user = await insertUser(tx, {
        aud, role: 'authenticated', email, phone: null, encryptedPassword: '',
        appMetadata: { provider: 'email', providers: ['email'] }, userMetadata: p.data ?? {},
      });
      await insertIdentity(tx, user.id, 'email', emailIdentityData(user.id, email));
    }
    await audit(tx, SERVICE_ROLE_ACTOR, 'user_invited', { user_id: user.id, user_email: email });
    await sendInvite(tx, ctx, user);
    return await loadUserJson(tx, user.id);
  });
  return json(result);
}

/** Routes /admin/* and /invite; `path` is the part after /auth/v1. */
export async function handleAdmin(ctx: Ctx, path: string): Promise<Response | null> {
  const method = ctx.req.method;
  const user = /^\/admin\/users\/([^/]+)\/?$/.exec(path);
  let handler: (() => Promise<Response>) | null = null;
  if (/^\/admin\/users\/?$/.test(path) && method === 'GET') handler = () => listUsers(ctx);
  else if (/^\/admin\/users\/?$/.test(path) && method === 'POST') handler = () => createUser(ctx);
  else if (user && method === 'GET') handler = async () => json(userJson(await userFromPath(ctx, user[1]), await identitiesOf(authDb(ctx.config), user[1])));
  else if (user && method === 'PUT') handler = () => updateUser(ctx, user[1]);
  else if (user && method === 'DELETE') handler = () => deleteUser(ctx, user[1]);
  else if (/^\/admin\/generate_link\/?$/.test(path) && method === 'POST') handler = () => generateLink(ctx);
  else if (/^\/invite\/?$/.test(path) && method === 'POST') handler = () => invite(ctx);
  if (!handler && !path.startsWith('/admin/')) return null;
  await requireAdmin(ctx);
  if (!handler) return null;
  return await handler();
}
