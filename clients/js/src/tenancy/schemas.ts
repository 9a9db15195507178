// zod schemas of the tenancy RPCs' JSON results. The result types (./types.ts) are derived from
// them, so what is checked at run time and what callers are told are one declaration.
import { z } from 'zod';
import { Constants } from '../database.types.ts';

export const roleSchema = z.enum(Constants.public.Enums.organization_role);

export const invitationTicketSchema = z.object({
  invitation_id: z.string(),
  email: z.string(),
  role: roleSchema,
  /** The one-time token to deliver to the invitee (only its hash is stored). */
  token: z.string(),
  expires_at: z.string(),
});

export const acceptedInvitationSchema = z.object({
  organization_id: z.string(),
  role: roleSchema,
});
