// Users are rows of auth.users with a session, each with an access token for the API.
import { randomUUID } from 'node:crypto';
import { sql } from './db.ts';
import { userToken } from './tokens.ts';

export interface TestUser {
  id: string;
  email: string;
  /** Their access token (./tokens.ts): `backendFor(user)`, `clientFor(user.token)` in ./clients.ts. */
  token: string;
}

/**
 * Inserts a user into auth.users (as Supabase allows: just id and email) with a session of
 * auth.sessions, and signs their token for that session: signed in, as far as PostgREST's
 * session check (public.check_request) and the local Auth can tell. Faster than signing in through
 * /auth/v1, and clear of its rate limits; tests/auth signs in for real.
 */
export async function createUser(email?: string, appMetadata: Record<string, unknown> = {}): Promise<TestUser> {
  const id = randomUUID();
  const sessionId = randomUUID();
  const address = email ?? `user-${id}@example.test`;
  await sql.begin(async (tx) => {
    await tx`insert into auth.users (id, email) values (${id}, ${address})`;
    await tx`insert into auth.sessions (id, user_id, created_at, updated_at, aal) values (${sessionId}, ${id}, now(), now(), 'aal1')`;
  });
  const token = await userToken({ id, email: address, appMetadata, sessionId });
  return { id, email: address, token };
}

/** Deletes users (delete their organizations first: an only owner cannot be deleted). */
export async function deleteUsers(ids: readonly string[]): Promise<void> {
  if (ids.length > 0) await sql`delete from auth.users where id = any(${ids as string[]}::uuid[])`;
}
