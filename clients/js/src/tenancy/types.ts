// The tenancy types: rows derived from the generated `Database` types so they follow the schema,
// RPC results derived from the zod schemas that check them (./schemas.ts).
import type { z } from 'zod';
import { Constants, type Database, type Tables } from '../database.types.ts';
import type { acceptedInvitationSchema, invitationTicketSchema } from './schemas.ts';

/** A member's role in an organization. */
export type Role = Database['public']['Enums']['organization_role'];
/** Every role, in the enum's order: owner, admin, member, billing. */
export const ROLES: readonly Role[] = Constants.public.Enums.organization_role;

/** A row of public.organizations. */
export type Organization = Tables<'organizations'>;
/** One of the caller's organizations, with the caller's role in it. */
export type OrganizationWithRole = Organization & { role: Role };

/** A row of public.profiles. */
export type Profile = Tables<'profiles'>;
/** The public face of a member: what a teammate may see of their profile. */
export type MemberProfile = Pick<Profile, 'email' | 'full_name' | 'avatar_url'>;
/** A row of public.organization_members with the member's profile (null if it cannot be read). */
export type Member = Tables<'organization_members'> & { profile: MemberProfile | null };

/** A row of public.organization_invitations, without the token hash (the token is never stored). */
export type Invitation = Omit<Tables<'organization_invitations'>, 'token_hash'>;

/** What `invite` returns: the one-time token to deliver to the invitee (shown only this once). */
export type InvitationTicket = z.output<typeof invitationTicketSchema>;

/** What `accept` returns: the organization joined and the caller's role in it. */
export type AcceptedInvitation = z.output<typeof acceptedInvitationSchema>;
