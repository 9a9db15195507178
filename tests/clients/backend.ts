// The SDK under test, pointed at the local gateway as a frontend would use it.
import { randomUUID } from 'node:crypto';
import { expect } from 'vitest';
import { ANON_KEY } from '../../scripts/lib/config.mjs';
import { apiUrl } from '../support/supabase.ts';
import type { TestUser } from '../support/users.ts';
import {
  BackendError,
  createBackendClient,
  type BackendClient,
  type BackendErrorCode,
  type Organization,
  type Role,
} from '../../clients/js/src/index.ts';

/** An SDK client acting as `user` (their minted JWT), or anonymous without one. */
export function backendFor(user?: TestUser, url: string = apiUrl): BackendClient {
  return createBackendClient({
    url,
    anonKey: ANON_KEY,
    ...(user ? { accessToken: async () => user.token } : {}),
    options: {
      auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    },
  });
}

/** A slug no other suite or run uses. */
export function uniqueSlug(prefix = 'org'): string {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

/** `owner` creates an organization through the SDK. */
export async function createOrganization(owner: TestUser, name = 'Acme'): Promise<Organization> {
  return backendFor(owner).organizations.create({ name, slug: uniqueSlug(name.toLowerCase().replaceAll(' ', '-')) });
}

/** `inviter` invites `user` with `role` and `user` accepts, all through the SDK. */
export async function join(organizationId: string, inviter: TestUser, user: TestUser, role: Role): Promise<void> {
  const ticket = await backendFor(inviter).organizations.invite({ organizationId, email: user.email, role });
  await backendFor(user).organizations.accept(ticket.token);
}

/** Awaits a call expected to fail with a BackendError of `code`, and returns the error. */
export async function rejection(promise: Promise<unknown>, code: BackendErrorCode): Promise<BackendError> {
  const err = await promise.then(
    (value) => {
      throw new Error(`expected BackendError(${code}), got a result: ${JSON.stringify(value)}`);
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(BackendError);
  expect((err as BackendError).code).toBe(code);
  return err as BackendError;
}
