// GET or POST /functions/v1/me: the caller's profile and exactly the organizations they belong to.
import { SignJWT } from 'jose';
import { FunctionsHttpError } from '@supabase/supabase-js';
import { beforeAll, describe, expect, it } from 'vitest';
import { JWT_SECRET } from '../../scripts/lib/config.mjs';
import { sql } from '../support/db.ts';
import { apiUrl, clientFor } from '../support/clients.ts';
import { addMember, insertOrganization, type OrganizationRow } from '../support/organizations.ts';
import { createUser, type TestUser } from '../support/users.ts';

async function errorOf(promise: Promise<{ error: unknown }>): Promise<{ status: number; body: unknown }> {
  const { error } = await promise;
  expect(error).toBeInstanceOf(FunctionsHttpError);
  const response = (error as FunctionsHttpError).context as Response;
  return { status: response.status, body: await response.json() };
}

describe('me', () => {
  let alice: TestUser;
  let bob: TestUser;
  let acme: OrganizationRow;
  let beta: OrganizationRow;

  beforeAll(async () => {
    alice = await createUser();
    bob = await createUser();
    acme = await insertOrganization({ name: 'Acme', owner: alice });
    beta = await insertOrganization({ name: 'Beta', owner: bob });
    await addMember(beta.id, alice, 'member');
    await insertOrganization({ name: 'Gamma', owner: bob }); // alice is not a member
  });

  it("returns the caller's profile and exactly their organizations, through supabase-js", async () => {
    const { data, error } = await clientFor(alice.token).functions.invoke('me', { method: 'GET' });
    expect(error).toBeNull();
    expect(data.user).toMatchObject({ id: alice.id, email: alice.email });
    expect(Object.keys(data.user).sort()).toEqual(['avatar_url', 'created_at', 'email', 'full_name', 'id', 'updated_at']);
    expect(data.organizations).toHaveLength(2);
    expect(data.organizations).toEqual(expect.arrayContaining([
      { ...acme, role: 'owner' },
      { ...beta, role: 'member' },
    ]));
  });

  it('answers 401 from the gateway without a token', async () => {
    const res = await fetch(`${apiUrl}/functions/v1/me`);
    expect(res.status).toBe(401);
    expect(await res.json()).toEqual({ code: 401, message: 'Missing authorization header' });
  });

  it('answers 401 from the gateway with a bad, forged or expired token', async () => {
    const forged = await new SignJWT({ sub: alice.id, role: 'authenticated' })
      .setProtectedHeader({ alg: 'HS256' })
      .setExpirationTime('1h')
      .sign(new TextEncoder().encode('not-the-secret-not-the-secret-not-the-secret'));
    const expired = await new SignJWT({ sub: alice.id, role: 'authenticated' })
      .setProtectedHeader({ alg: 'HS256' })
      .setExpirationTime(Math.floor(Date.now() / 1000) - 60)
      .sign(new TextEncoder().encode(JWT_SECRET));
    for (const token of ['not-a-jwt', forged, expired]) {
      const res = await fetch(`${apiUrl}/functions/v1/me`, { headers: { authorization: `Bearer ${token}` } });
      expect(res.status).toBe(401);
      expect(await res.json()).toEqual({ code: 401, message: 'Invalid JWT' });
    }
  });

  it('answers 401 user_required to the anon key (a valid JWT, but no user)', async () => {
    const { status, body } = await errorOf(clientFor().functions.invoke('me', { method: 'GET' }));
    expect(status).toBe(401);
    expect(body).toMatchObject({ error: { code: 'user_required' } });
  });

  it("answers POST, functions.invoke's default method, as GET", async () => {
    const { data, error } = await clientFor(alice.token).functions.invoke('me');
    expect(error).toBeNull();
    expect(data.user).toMatchObject({ id: alice.id, email: alice.email });
    expect(data.organizations).toHaveLength(2);
  });

  it('answers 405 to anything but GET and POST', async () => {
    for (const method of ['PUT', 'PATCH', 'DELETE'] as const) {
      const { status, body } = await errorOf(clientFor(alice.token).functions.invoke('me', { method, body: {} }));
      expect(status).toBe(405);
      expect(body).toMatchObject({ error: { code: 'method_not_allowed' } });
    }
  });

  it('answers 404 profile_not_found when the profile row is missing', async () => {
    const ghost = await createUser();
    await sql`delete from public.profiles where id = ${ghost.id}`;
    const { status, body } = await errorOf(clientFor(ghost.token).functions.invoke('me', { method: 'GET' }));
    expect(status).toBe(404);
    expect(body).toEqual({ error: { code: 'profile_not_found', message: 'No profile exists for this user' } });
  });

  it('shows a user without organizations an empty list', async () => {
    const carol = await createUser();
    const { data, error } = await clientFor(carol.token).functions.invoke('me', { method: 'GET' });
    expect(error).toBeNull();
    expect(data.organizations).toEqual([]);
  });
});
