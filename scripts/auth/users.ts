// Users and identities in GoTrue's auth schema, and the user object GoTrue answers with (the
// JSON of its models.User: token columns never leave the server, timestamps only when set).
import type { Db, Tx } from './db.ts';

/** GoTrue stores uuid.Nil as every row's instance_id; rows made with SQL may have null. */
export const NIL_UUID = '00000000-0000-0000-0000-000000000000';

export interface UserRow {
  id: string;
  aud: string | null;
  role: string | null;
  email: string | null;
  encrypted_password: string | null;
  email_confirmed_at: Date | null;
  invited_at: Date | null;
  confirmation_token: string | null;
  confirmation_sent_at: Date | null;
  recovery_token: string | null;
  recovery_sent_at: Date | null;
  email_change_token_new: string | null;
  email_change: string | null;
  email_change_sent_at: Date | null;
  email_change_token_current: string | null;
  email_change_confirm_status: number | null;
  last_sign_in_at: Date | null;
  raw_app_meta_data: Record<string, unknown> | null;
  raw_user_meta_data: Record<string, unknown> | null;
  created_at: Date | null;
  updated_at: Date | null;
  phone: string | null;
  phone_confirmed_at: Date | null;
  phone_change: string | null;
  phone_change_sent_at: Date | null;
  confirmed_at: Date | null;
  banned_until: Date | null;
  reauthentication_sent_at: Date | null;
  is_sso_user: boolean;
  deleted_at: Date | null;
  is_anonymous: boolean;
}

export interface IdentityRow {
  id: string;
  provider_id: string;
  user_id: string;
  identity_data: Record<string, unknown>;
  provider: string;
  last_sign_in_at: Date | null;
  created_at: Date | null;
  updated_at: Date | null;
  email: string | null;
}

export type Metadata = Record<string, unknown>;

export async function findUserById(db: Db, id: string): Promise<UserRow | undefined> {
  const [user] = await db<UserRow[]>`select * from auth.users where id = ${id}`;
  return user;
}

/** The user with this email in `aud`, as GoTrue's FindUserByEmailAndAudience (SSO users excluded). */
export async function findUserByEmail(db: Db, email: string, aud: string): Promise<UserRow | undefined> {
  const [user] = await db<UserRow[]>`
    select * from auth.users
    where lower(email) = ${email.toLowerCase()} and aud = ${aud} and is_sso_user = false
    order by created_at limit 1`;
  return user;
}

export async function identitiesOf(db: Db, userId: string): Promise<IdentityRow[]> {
  return await db<IdentityRow[]>`select * from auth.identities where user_id = ${userId} order by created_at, id`;
}

/**
 * GoTrue's IsDuplicatedEmail: another user of `aud` already has this address, through an
 * identity or the users table.
 */
export async function isDuplicatedEmail(db: Db, email: string, aud: string, currentUserId?: string): Promise<UserRow | undefined> {
  const [user] = await db<UserRow[]>`
    select u.* from auth.users u
    where u.aud = ${aud}
      and u.id is distinct from ${currentUserId ?? null}::uuid
      and (lower(u.email) = ${email.toLowerCase()} and u.is_sso_user = false
           or exists (select 1 from auth.identities i where i.user_id = u.id and i.email = ${email.toLowerCase()}))
    order by u.created_at limit 1`;
  return user;
}

const iso = (d: Date | null | undefined) => (d ? new Date(d).toISOString() : undefined);

export function identityJson(i: IdentityRow): Record<string, unknown> {
  return {
    identity_id: i.id,
    id: i.provider_id,
    user_id: i.user_id,
    identity_data: i.identity_data,
    provider: i.provider,
    last_sign_in_at: iso(i.last_sign_in_at),
    created_at: iso(i.created_at),
    updated_at: iso(i.updated_at),
    email: i.email || undefined,
  };
}

/** The user as GoTrue serializes models.User (omitempty fields left out when unset). */
export function userJson(u: UserRow, identities: IdentityRow[]): Record<string, unknown> {
  return {
    id: u.id,
    aud: u.aud ?? '',
    role: u.role ?? '',
    email: u.email ?? '',
    email_confirmed_at: iso(u.email_confirmed_at),
    invited_at: iso(u.invited_at),
    phone: u.phone ?? '',
    phone_confirmed_at: iso(u.phone_confirmed_at),
    confirmation_sent_at: iso(u.confirmation_sent_at),
    confirmed_at: iso(u.confirmed_at),
    recovery_sent_at: iso(u.recovery_sent_at),
    new_email: u.email_change || undefined,
    email_change_sent_at: iso(u.email_change_sent_at),
    new_phone: u.phone_change || undefined,
    phone_change_sent_at: iso(u.phone_change_sent_at),
    reauthentication_sent_at: iso(u.reauthentication_sent_at),
    last_sign_in_at: iso(u.last_sign_in_at),
    app_metadata: u.raw_app_meta_data ?? {},
    user_metadata: u.raw_user_meta_data ?? {},
    identities: identities.map(identityJson),
    created_at: iso(u.created_at),
    updated_at: iso(u.updated_at),
    banned_until: iso(u.banned_until),
    deleted_at: iso(u.deleted_at),
    is_anonymous: u.is_anonymous,
  };
}

/** The user JSON read back from the database (after writes: triggers may have changed the row). */
export async function loadUserJson(db: Db, id: string): Promise<Record<string, unknown>> {
  const user = await findUserById(db, id);
  if (!user) throw new Error(`user ${id} vanished`);
  return userJson(user, await identitiesOf(db, id));
}

/**
 * Merges `updates` into metadata as GoTrue's UpdateUserMetaData/UpdateAppMetaData: a key set to
 * null is removed, every other key replaced.
 */
export function mergeMetadata(current: Metadata | null, updates: Metadata): Metadata {
  const merged: Metadata = { ...(current ?? {}) };
  for (const [k, v] of Object.entries(updates)) {
    if (v === null) delete merged[k];
    else merged[k] = v;
  }
  return merged;
}

export interface NewUser {
  id?: string;
  aud: string;
  role: string;
  email: string | null;
  phone: string | null;
  encryptedPassword: string;
  appMetadata: Metadata;
  userMetadata: Metadata;
}

/** Inserts a user the way GoTrue's models.NewUser + tx.Create leave the row (empty token strings). */
export async function insertUser(tx: Tx, u: NewUser): Promise<UserRow> {
  const [row] = await tx<UserRow[]>`
    insert into auth.users (
      instance_id, id, aud, role, email, encrypted_password, raw_app_meta_data, raw_user_meta_data,
      confirmation_token, recovery_token, email_change_token_new, email_change, email_change_token_current,
      phone, phone_change, phone_change_token, reauthentication_token, email_change_confirm_status,
      is_sso_user, is_anonymous, created_at, updated_at)
    values (
      ${NIL_UUID}, ${u.id ?? crypto.randomUUID()}, ${u.aud}, ${u.role}, ${u.email}, ${u.encryptedPassword},
      ${tx.json(u.appMetadata as never)}, ${tx.json(u.userMetadata as never)},
      '', '', '', '', '', ${u.phone}, '', '', '', 0, false, false, now(), now())
    returning *`;
  return row;
}

/** An identity for `provider`; identity_data needs `sub` (its provider_id), as GoTrue's NewIdentity. */
export async function insertIdentity(tx: Tx, userId: string, provider: string, data: Metadata): Promise<IdentityRow> {
  const identityData = { ...data };
  if (typeof identityData.email === 'string') identityData.email = identityData.email.toLowerCase();
  const [row] = await tx<IdentityRow[]>`
    insert into auth.identities (id, provider_id, user_id, identity_data, provider, last_sign_in_at, created_at, updated_at)
    values (gen_random_uuid(), ${String(identityData.sub)}, ${userId}, ${tx.json(identityData as never)}, ${provider}, now(), now(), now())
    returning *`;
  return row;
}

/** GoTrue's provider.Claims for an email identity: sub, email and the two verified flags. */
export function emailIdentityData(userId: string, email: string, emailVerified = false): Metadata {
  return { sub: userId, email, email_verified: emailVerified, phone_verified: false };
}

export async function updateIdentityData(tx: Tx, identity: IdentityRow, updates: Metadata): Promise<void> {
  await tx`
    update auth.identities set identity_data = ${tx.json(mergeMetadata(identity.identity_data, updates) as never)}, updated_at = now()
    where id = ${identity.id}`;
}

export async function setUserMetadata(tx: Tx, userId: string, metadata: Metadata): Promise<void> {
  await tx`update auth.users set raw_user_meta_data = ${tx.json(metadata as never)}, updated_at = now() where id = ${userId}`;
}

export async function setAppMetadata(tx: Tx, userId: string, metadata: Metadata): Promise<void> {
  await tx`update auth.users set raw_app_meta_data = ${tx.json(metadata as never)}, updated_at = now() where id = ${userId}`;
}

/** GoTrue's UpdateAppMetaDataProviders: app_metadata.providers (and provider) from the identities. */
export async function refreshProviders(tx: Tx, userId: string): Promise<void> {
  await tx`
    update auth.users u set raw_app_meta_data = coalesce(u.raw_app_meta_data, '{}'::jsonb) || jsonb_build_object(
        'providers', p.providers) || case when jsonb_array_length(p.providers) > 0
          then jsonb_build_object('provider', p.providers -> 0) else '{}'::jsonb end,
      updated_at = now()
    from (
      select coalesce(jsonb_agg(provider order by first_at), '[]'::jsonb) as providers
      from (select provider, min(created_at) as first_at from auth.identities where user_id = ${userId} group by provider) x
    ) p
    where u.id = ${userId}`;
}

export type OneTimeTokenType =
  | 'confirmation_token'
  | 'reauthentication_token'
  | 'recovery_token'
  | 'email_change_token_new'
  | 'email_change_token_current';

/** One outstanding token per user and type (GoTrue's CreateOneTimeToken replaces the previous one). */
export async function createOneTimeToken(tx: Tx, userId: string, relatesTo: string, tokenHash: string, type: OneTimeTokenType) {
  await tx`delete from auth.one_time_tokens where user_id = ${userId} and token_type = ${type}`;
  await tx`
    insert into auth.one_time_tokens (id, user_id, token_type, token_hash, relates_to)
    values (gen_random_uuid(), ${userId}, ${type}, ${tokenHash}, ${relatesTo.toLowerCase()})`;
}

export async function clearOneTimeTokens(tx: Tx, userId: string, type?: OneTimeTokenType): Promise<void> {
  if (type) await tx`delete from auth.one_time_tokens where user_id = ${userId} and token_type = ${type}`;
  else await tx`delete from auth.one_time_tokens where user_id = ${userId}`;
}

/** The user an outstanding one-time token of one of `types` belongs to. */
export async function findUserByOneTimeToken(db: Db, tokenHash: string, types: OneTimeTokenType[]): Promise<UserRow | undefined> {
  const [user] = await db<UserRow[]>`
    select u.* from auth.one_time_tokens t join auth.users u on u.id = t.user_id
    where t.token_hash = ${tokenHash} and t.token_type = any(${types}::auth.one_time_token_type[])
    limit 1`;
  return user;
}

/**
 * GoTrue's User.Confirm: the address is confirmed, user_metadata.email_verified set, and every
 * outstanding one-time token dropped.
 */
export async function confirmUser(tx: Tx, userId: string): Promise<void> {
  await tx`
    update auth.users set confirmation_token = '', email_confirmed_at = now(),
      raw_user_meta_data = coalesce(raw_user_meta_data, '{}'::jsonb) || '{"email_verified": true}'::jsonb,
      updated_at = now()
    where id = ${userId}`;
  await clearOneTimeTokens(tx, userId);
}

export function isBanned(u: UserRow): boolean {
  return u.banned_until !== null && new Date(u.banned_until).getTime() > Date.now();
}
