#!/usr/bin/env node
// Prints a signed access token for a local user, creating the user (a confirmed row of
// auth.users with its email identity, as Auth's admin API would) when it does not exist yet, in a
// new session of auth.sessions, so the local Auth (/auth/v1/user, logout) accepts it too. The quick
// way for scripts and curl; frontends sign in with supabase.auth (see the README's "Auth locally").
// The token lives 24 hours, longer than [auth] jwt_expiry, and has no refresh token.
//   npm run token -- alice@example.com                 the JWT on stdout
//   npm run token -- admin@example.com --platform-admin  with app_metadata.platform_admin = true
//   TOKEN=$(npm run -s token -- alice@example.com)
import { connect } from './lib/db.mjs';
import { signUserToken } from './lib/config.mjs';

const args = process.argv.slice(2);
const email = args.find((a) => !a.startsWith('--'))?.trim().toLowerCase();
const platformAdmin = args.includes('--platform-admin');
if (!email || !/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(email)) {
  console.error('usage: npm run token -- <email> [--platform-admin]');
  process.exit(2);
}

const sql = connect();
try {
  const appMetadata = platformAdmin ? { platform_admin: true } : {};
  const sessionId = crypto.randomUUID();
  const user = await sql.begin(async (tx) => {
    let [user] = await tx`select id, raw_app_meta_data from auth.users where lower(email) = ${email} order by created_at limit 1`;
    if (!user) {
      [user] = await tx`
        insert into auth.users (instance_id, id, aud, role, email, email_confirmed_at, raw_app_meta_data, raw_user_meta_data)
        values ('00000000-0000-0000-0000-000000000000', gen_random_uuid(), 'authenticated', 'authenticated', ${email}, now(),
          ${tx.json({ provider: 'email', providers: ['email'], ...appMetadata })}, '{"email_verified": true}')
        returning id, raw_app_meta_data`;
      await tx`
        insert into auth.identities (provider_id, user_id, identity_data, provider, last_sign_in_at, created_at, updated_at)
        values (${user.id}, ${user.id},
          ${tx.json({ sub: user.id, email, email_verified: true, phone_verified: false })}, 'email', now(), now(), now())`;
      console.error(`created user ${email} (${user.id})`);
    } else if (platformAdmin && !user.raw_app_meta_data?.platform_admin) {
      [user] = await tx`
        update auth.users set raw_app_meta_data = coalesce(raw_app_meta_data, '{}'::jsonb) || ${tx.json(appMetadata)}
        where id = ${user.id} returning id, raw_app_meta_data`;
    }
    await tx`
      insert into auth.sessions (id, user_id, created_at, updated_at, aal, not_after)
      values (${sessionId}, ${user.id}, now(), now(), 'aal1', now() + interval '24 hours')`;
    await tx`
      insert into auth.mfa_amr_claims (id, session_id, created_at, updated_at, authentication_method)
      values (gen_random_uuid(), ${sessionId}, now(), now(), 'password')`;
    return user;
  });
  const { provider, providers, ...extra } = user.raw_app_meta_data ?? {};
  console.log(await signUserToken({ id: user.id, email, appMetadata: extra, expiresIn: '24h', sessionId }));
} catch (error) {
  const hint = error.code === 'ECONNREFUSED' ? ' (is the stack up? npm run stack:up)' : '';
  console.error(`token: ${error.message}${hint}`);
  process.exitCode = 1;
} finally {
  await sql.end();
}
