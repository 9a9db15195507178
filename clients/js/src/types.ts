// The SDK's data types, derived from the generated `Database` types so they follow the schema.
import { Constants, type Database, type Tables } from './database.types.ts';

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
export interface InvitationTicket {
  invitation_id: string;
  email: string;
  role: Role;
  token: string;
  expires_at: string;
}

/** What `accept` returns: the organization joined and the caller's role in it. */
export interface AcceptedInvitation {
  organization_id: string;
  role: Role;
}

// ---------------------------------------------------------------------------------------------
// Credits
// ---------------------------------------------------------------------------------------------

/** The pools seeded by the migrations; pools are data, so others may exist. */
export type KnownCreditPool = 'ai' | 'whatsapp' | 'email' | 'sms';
/** A pool key: one of the known pools, or any other key of public.credit_pools. */
export type CreditPoolKey = KnownCreditPool | (string & {});
/** Credits per pool, e.g. `{ ai: 5 }`. */
export type CreditAmounts = Record<string, number>;

export type CreditGrantKind = Database['public']['Enums']['credit_grant_kind'];
export type CreditEntryKind = Database['public']['Enums']['credit_entry_kind'];
export type CreditReservationStatus = Database['public']['Enums']['credit_reservation_status'];

/** A row of public.credit_pools. */
export type CreditPool = Tables<'credit_pools'>;
/** A row of public.credit_plans with its allocations per pool (by pool key). */
export type CreditPlan = Tables<'credit_plans'> & { allocations: Tables<'credit_plan_allocations'>[] };
/** A row of public.credit_actions with its cost per pool (by pool key). */
export type CreditAction = Tables<'credit_actions'> & { costs: Tables<'credit_action_costs'>[] };
/** A row of public.credit_ledger: one movement of one pool (amount signed: + in, - out). */
export type CreditLedgerEntry = Tables<'credit_ledger'>;
/** A row of public.credit_reservations. */
export type CreditReservationRow = Tables<'credit_reservations'>;
