// Users are rows of auth.users (no GoTrue locally); their tokens are minted with the local secret.
import { randomUUID } from 'node:crypto';
import { signUserToken } from '../../scripts/lib/config.mjs';
import { sql } from './db.ts';

export interface TestUser {
  id: string;
  email: string;
  token: string;
}

/** Inserts a user into auth.users (as Supabase allows: just id and email) and signs their token. */
export async function createUser(email?: string, appMetadata: Record<string, unknown> = {}): Promise<TestUser> {
  const id = randomUUID();
  const address = email ?? `user-${id}@example.test`;
  await sql`insert into auth.users (id, email) values (${id}, ${address})`;
  const token: string = await signUserToken({ id, email: address, appMetadata });
  return { id, email: address, token };
}
