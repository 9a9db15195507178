// Users are rows of auth.users (no GoTrue locally), each with an access token for the API.
import { randomUUID } from 'node:crypto';
import { sql } from './db.ts';
import { userToken } from './tokens.ts';

export interface TestUser {
  id: string;
  email: string;
  /** Their access token (./tokens.ts): `backendFor(user)`, `clientFor(user.token)` in ./clients.ts. */
  token: string;
}

/** Inserts a user into auth.users (as Supabase allows: just id and email) and signs their token. */
export async function createUser(email?: string, appMetadata: Record<string, unknown> = {}): Promise<TestUser> {
  const id = randomUUID();
  const address = email ?? `user-${id}@example.test`;
  await sql`insert into auth.users (id, email) values (${id}, ${address})`;
  const token = await userToken({ id, email: address, appMetadata });
  return { id, email: address, token };
}

/** Deletes users (delete their organizations first: an only owner cannot be deleted). */
export async function deleteUsers(ids: readonly string[]): Promise<void> {
  if (ids.length > 0) await sql`delete from auth.users where id = any(${ids as string[]}::uuid[])`;
}
