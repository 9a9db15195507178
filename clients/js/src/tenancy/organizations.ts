// Organizations, members and invitations. Reads go to the tables (row-level security decides what
// the caller sees); writes that carry rules go through the SQL RPCs, which check the caller.
// Every method throws BackendError on failure.
import type { SupabaseClient } from '@supabase/supabase-js';
import type { Database } from '../database.types.ts';
import { BackendError } from '../errors.ts';
import { parseResult, run } from '../request.ts';
import { acceptedInvitationSchema, invitationTicketSchema } from './schemas.ts';
import type {
  AcceptedInvitation,
  Invitation,
  InvitationTicket,
  Member,
  MemberProfile,
  Organization,
  OrganizationWithRole,
  Role,
} from './types.ts';

export interface OrganizationsContext {
  supabase: SupabaseClient<Database>;
  /** The signed-in user's id; throws BackendError('not_authenticated') when there is none. */
  requireUserId(): Promise<string>;
}

// Every column but token_hash: the hash is of no use to a client.
const INVITATION_COLUMNS =
  'id, organization_id, email, role, invited_by, expires_at, accepted_at, accepted_by, created_at, updated_at';

export class Organizations {
  readonly #supabase: SupabaseClient<Database>;
  readonly #requireUserId: () => Promise<string>;

  constructor(context: OrganizationsContext) {
    this.#supabase = context.supabase;
    this.#requireUserId = context.requireUserId;
  }

  /**
   * Creates an organization with the caller as its owner. The slug is trimmed and lower-cased.
   * Errors: not_authenticated, invalid_name, invalid_slug, slug_taken.
   */
  async create(input: { name: string; slug: string }): Promise<Organization> {
    const id = await run(this.#supabase.rpc('create_organization', { p_name: input.name, p_slug: input.slug }));
    const organization = await this.get(id);
    if (!organization) throw new BackendError('unknown', `Organization ${id} was created but cannot be read back`);
    return organization;
  }

  /** The caller's organizations with the caller's role in each, by name. Errors: not_authenticated. */
  async list(): Promise<OrganizationWithRole[]> {
    const userId = await this.#requireUserId();
    const rows = await run(
      this.#supabase
        .from('organization_members')
        .select('role, organization:organizations(*)')
        .eq('user_id', userId),
    );
    return rows
      .flatMap(({ role, organization }) => (organization ? [{ ...organization, role }] : []))
      .sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
  }

  /** One organization, or null when it does not exist or the caller is not a member. */
  async get(id: string): Promise<Organization | null> {
    return run(this.#supabase.from('organizations').select('*').eq('id', id).maybeSingle());
  }

  /**
   * Renames an organization or changes its slug (owners and admins). The slug must already be
   * lower-case. Errors: not_authorized (also when the organization is not visible to the caller),
   * invalid_name, invalid_slug, slug_taken.
   */
  async update(id: string, changes: { name?: string; slug?: string }): Promise<Organization> {
    const patch: { name?: string; slug?: string } = {};
    if (changes.name !== undefined) patch.name = changes.name;
    if (changes.slug !== undefined) patch.slug = changes.slug;
    if (Object.keys(patch).length === 0) {
      const current = await this.get(id);
      if (!current) throw notAllowedToUpdate();
      return current;
    }
    const updated = await run(this.#supabase.from('organizations').update(patch).eq('id', id).select('*'));
    // RLS filters the rows an update sees: none means not an owner or admin there (or no such id).
    const [organization] = updated;
    if (!organization) throw notAllowedToUpdate();
    return organization;
  }

  /** The organization's members with their profiles, oldest first; empty for a non-member. */
  async members(organizationId: string): Promise<Member[]> {
    const rows = await run(
      this.#supabase
        .from('organization_members')
        .select('*')
        .eq('organization_id', organizationId)
        .order('created_at', { ascending: true })
        .order('user_id', { ascending: true }),
    );
    if (rows.length === 0) return [];
    const profiles = await run(
      this.#supabase
        .from('profiles')
        .select('id, email, full_name, avatar_url')
        .in(
          'id',
          rows.map((row) => row.user_id),
        ),
    );
    const byId = new Map<string, MemberProfile>(
      profiles.map(({ id, ...profile }) => [id, profile]),
    );
    return rows.map((row) => ({ ...row, profile: byId.get(row.user_id) ?? null }));
  }

  /**
   * Invites an email (owners and admins; only owners invite owners). Inviting a pending email
   * again re-sends the invitation with a new token. Returns the one-time token to deliver.
   * Errors: not_authenticated, not_authorized, invalid_role, invalid_email, already_member.
   */
  async invite(input: { organizationId: string; email: string; role?: Role }): Promise<InvitationTicket> {
    const result = await run(
      this.#supabase.rpc('invite_member', {
        p_organization_id: input.organizationId,
        p_email: input.email,
        ...(input.role === undefined ? {} : { p_role: input.role }),
      }),
    );
    return parseResult(invitationTicketSchema, result, 'invite_member');
  }

  /**
   * Accepts an invitation sent to the caller's email. Errors: not_authenticated,
   * invitation_not_found, invitation_already_accepted, invitation_expired, invitation_email_mismatch.
   */
  async accept(token: string): Promise<AcceptedInvitation> {
    const result = await run(this.#supabase.rpc('accept_invitation', { p_token: token }));
    return parseResult(acceptedInvitationSchema, result, 'accept_invitation');
  }

  /**
   * Changes a member's role. Owners change anyone; admins neither touch owners nor grant owner.
   * Errors: not_authenticated, not_authorized, invalid_role, member_not_found, last_owner.
   */
  async changeRole(input: { organizationId: string; userId: string; role: Role }): Promise<void> {
    await run(
      this.#supabase.rpc('update_member_role', {
        p_organization_id: input.organizationId,
        p_user_id: input.userId,
        p_role: input.role,
      }),
    );
  }

  /**
   * Removes a member (owners and admins; only owners remove owners; never the last owner).
   * Errors: not_authenticated, not_authorized, member_not_found, last_owner.
   */
  async remove(input: { organizationId: string; userId: string }): Promise<void> {
    await run(
      this.#supabase.rpc('remove_member', { p_organization_id: input.organizationId, p_user_id: input.userId }),
    );
  }

  /** The caller leaves the organization. Errors: not_authenticated, not_authorized, last_owner. */
  async leave(organizationId: string): Promise<void> {
    await run(this.#supabase.rpc('leave_organization', { p_organization_id: organizationId }));
  }

  /**
   * The organization's invitations, newest first (owners and admins; empty for anyone else).
   * `pending: true` keeps only those not yet accepted (expired ones included: see expires_at).
   */
  async invitations(organizationId: string, options: { pending?: boolean } = {}): Promise<Invitation[]> {
    let query = this.#supabase
      .from('organization_invitations')
      .select(INVITATION_COLUMNS)
      .eq('organization_id', organizationId);
    if (options.pending) query = query.is('accepted_at', null);
    return run(query.order('created_at', { ascending: false }).order('id', { ascending: true }));
  }

  /**
   * Revokes (deletes) a pending invitation, so its token no longer works (owners and admins).
   * Errors: invitation_not_found (no such pending invitation the caller may revoke).
   */
  async revokeInvitation(invitationId: string): Promise<void> {
    const deleted = await run(
      this.#supabase
        .from('organization_invitations')
        .delete()
        .eq('id', invitationId)
        .is('accepted_at', null)
        .select('id'),
    );
    if (deleted.length === 0) {
      throw new BackendError('invitation_not_found', 'No pending invitation with this id that you can revoke.', {
        status: 404,
      });
    }
  }
}

function notAllowedToUpdate(): BackendError {
  return new BackendError(
    'not_authorized',
    'Only owners and admins can change an organization (or it does not exist).',
    { status: 403 },
  );
}
