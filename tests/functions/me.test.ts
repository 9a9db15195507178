// GET or POST /functions/v1/me: the caller's profile and exactly the organizations they belong to.
import { randomUUID } from 'node:crypto';
import { SignJWT } from 'jose';
import { FunctionsHttpError } from '@supabase/supabase-js';
import { beforeAll, describe, expect, it } from 'vitest';
import { JWT_SECRET } from '../../scripts/lib/config.mjs';
import { sql } from '../support/db.ts';
import { apiUrl, clientFor } from '../support/supabase.ts';
import { createUser, type TestUser } from '../support/users.ts';

async function createOrganization(name: string, createdBy: string): Promise<{ id: string; name: string; slug: string }> {
  const slug = `${name.toLowerCase().replaceAll(' ', '-')}-${randomUUID().slice(0, 8)}`;
  const [org] = await sql`
    insert into public.organizations (name, slug, created_by)
    values (${name}, ${slug}, ${createdBy}) returning id, name, slug`;
  return org as { id: string; name: string; slug: string };
}

async function addMember(organizationId: string, userId: string, role: string): Promise<void> {
  // A trigger may already have made the creator the owner.
  await sql`
    insert into public.organization_members (organization_id, user_id, role)
    values (${organizationId}, ${userId}, ${role}) on conflict do nothing`;
}

async function errorOf(promise: Promise<{ error: unknown }>): Promise<{ status: number; body: unknown }> {
  const { error } = await promise;
  expect(error).toBeInstanceOf(FunctionsHttpError);
  const response = (error as FunctionsHttpError).context as Response;
  return { status: response.status, body: await response.json() };
}

describe('me', () => {
  let alice: TestUser;
  let bob: TestUser;
  let acme: { id: string; name: string; slug: string };
  let beta: { id: string; name: string; slug: string };

  beforeAll(async () => {
    alice = await createUser();
    bob = await createUser();
    acme = await createOrganization('Acme', alice.id);
    await addMember(acme.id, alice.id, 'owner');
    beta = await createOrganization('Beta', bob.id);
    await addMember(beta.id, bob.id, 'owner');
    await addMember(beta.id, alice.id, 'member');
    const gamma = await createOrganization('Gamma', bob.id); // alice is not a member
    await addMember(gamma.id, bob.id, 'owner');
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
