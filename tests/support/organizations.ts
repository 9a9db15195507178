// Organizations and their members, made two ways: as a user through the SDK (the real path: the
// RPC's checks, events and limits apply), or directly through SQL as the admin connection, for
// suites that need many of them fast or a shape no RPC makes (SQL bypasses RLS; organizations it
// inserts count as the service role's, so the free-organization limit does not apply).
import { randomUUID } from 'node:crypto';
import type { Organization, Role } from '../../clients/js/src/index.ts';
import { backendFor } from './clients.ts';
import { sql } from './db.ts';
import type { TestUser } from './users.ts';

/** A slug no other suite or run uses. */
export function uniqueSlug(prefix = 'org'): string {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

function slugFor(name: string): string {
  return uniqueSlug(name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 40) || 'org');
}

/** `owner` creates an organization through the SDK (create_organization), and becomes its owner. */
export async function createOrganization(owner: TestUser, name = 'Acme'): Promise<Organization> {
  return backendFor(owner).organizations.create({ name, slug: slugFor(name) });
}

/** What insertOrganization returns: the columns a suite compares against. */
export interface OrganizationRow {
  id: string;
  name: string;
  slug: string;
}

/**
 * Inserts an organization directly (the admin connection), with `owner`, when given, as its
 * creator and owner. The triggers still run: it starts on the starter plan with its allocation.
 */
export async function insertOrganization(
  options: { owner?: TestUser; name?: string; slug?: string } = {},
): Promise<OrganizationRow> {
  const name = options.name ?? 'Test organization';
  const slug = options.slug ?? slugFor(name);
  const [row] = await sql<OrganizationRow[]>`
    insert into public.organizations (name, slug, created_by)
    values (${name}, ${slug}, ${options.owner?.id ?? null}) returning id, name, slug`;
  if (options.owner) await addMember(row.id, options.owner, 'owner');
  return { id: row.id, name: row.name, slug: row.slug };
}

/** Deletes organizations (their members, grants and ledger go with them). */
export async function deleteOrganizations(ids: readonly string[]): Promise<void> {
  if (ids.length > 0) await sql`delete from public.organizations where id = any(${ids as string[]}::uuid[])`;
}

/** `inviter` invites `user` with `role` and `user` accepts, all through the SDK. */
export async function join(organizationId: string, inviter: TestUser, user: TestUser, role: Role): Promise<void> {
  const ticket = await backendFor(inviter).organizations.invite({ organizationId, email: user.email, role });
  await backendFor(user).organizations.accept(ticket.token);
}

/** Makes `user` a member with `role` directly (no invitation, no event); a no-op if they already are. */
export async function addMember(organizationId: string, user: Pick<TestUser, 'id'>, role: Role): Promise<void> {
  await sql`
    insert into public.organization_members (organization_id, user_id, role)
    values (${organizationId}, ${user.id}, ${role}) on conflict do nothing`;
}
