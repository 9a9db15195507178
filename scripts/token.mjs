#!/usr/bin/env node
// Prints a signed access token for a local user, creating the user (a row in auth.users, as
// GoTrue would) when it does not exist yet. GoTrue does not run locally; this is how you sign in.
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
  let [user] = await sql`select id, raw_app_meta_data from auth.users where email = ${email} order by created_at limit 1`;
  if (!user) {
    [user] = await sql`
      insert into auth.users (id, email, email_confirmed_at, raw_app_meta_data)
      values (gen_random_uuid(), ${email}, now(), ${sql.json({ provider: 'email', providers: ['email'], ...appMetadata })})
      returning id, raw_app_meta_data`;
    console.error(`created user ${email} (${user.id})`);
  } else if (platformAdmin && !user.raw_app_meta_data?.platform_admin) {
    [user] = await sql`
      update auth.users set raw_app_meta_data = coalesce(raw_app_meta_data, '{}'::jsonb) || ${sql.json(appMetadata)}
      where id = ${user.id} returning id, raw_app_meta_data`;
  }
  const { provider, providers, ...extra } = user.raw_app_meta_data ?? {};
  console.log(await signUserToken({ id: user.id, email, appMetadata: extra, expiresIn: '24h' }));
} catch (error) {
  const hint = error.code === 'ECONNREFUSED' ? ' (is the stack up? npm run stack:up)' : '';
  console.error(`token: ${error.message}${hint}`);
  process.exitCode = 1;
} finally {
  await sql.end();
}
