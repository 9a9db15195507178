// Users who signed up through /auth/v1 in the tenancy: each gets a profile from the trigger on
// auth.users (as GoTrue's inserts fire it on hosted), creates an organization through the SDK on
// their supabase-js session, invites someone who is not a user yet, and the invitee signs up
// with the invited address, confirms it and accepts the invitation with their own session.
import { describe, expect, it } from 'vitest';
import { createBackendClient, type TypedSupabaseClient } from '../../clients/js/src/index.ts';
import { sql } from '../support/db.ts';
import { uniqueSlug } from '../support/organizations.ts';
import { authClient, codeOf, latestAuthMail, PASSWORD, uniqueEmail, useGateway } from './support.ts';

const gateway = useGateway({ AUTH_ENABLE_CONFIRMATIONS: 'true' });

/** Signs up and confirms by the mailed code, as a person would; answers the signed-in client. */
async function signUpAndConfirm(email: string, fullName: string) {
  const client = authClient(gateway.url);
  const { data, error } = await client.auth.signUp({ email, password: PASSWORD, options: { data: { full_name: fullName } } });
  if (error) throw error;
  const verified = await client.auth.verifyOtp({ email, token: codeOf(await latestAuthMail(email, 'signup')), type: 'email' });
  if (verified.error) throw verified.error;
  return { client, id: data.user!.id };
}

describe('a user signed up through /auth/v1', () => {
  it('has a profile, and joins an organization through an invitation', async () => {
    const ownerEmail = uniqueEmail('owner');
    const owner = await signUpAndConfirm(ownerEmail, 'Olivia Owner');
    const [profile] = await sql`select email, full_name from public.profiles where id = ${owner.id}`;
    expect(profile).toEqual({ email: ownerEmail, full_name: 'Olivia Owner' });

    const ownerSdk = createBackendClient({ supabase: owner.client as unknown as TypedSupabaseClient });
    const org = await ownerSdk.organizations.create({ name: 'Signed Up Co', slug: uniqueSlug('signed-up') });
    try {
      const inviteeEmail = uniqueEmail('invitee');
      const ticket = await ownerSdk.organizations.invite({ organizationId: org.id, email: inviteeEmail, role: 'member' });

      const invitee = await signUpAndConfirm(inviteeEmail, 'Ivan Invitee');
      const inviteeSdk = createBackendClient({ supabase: invitee.client as unknown as TypedSupabaseClient });
      const accepted = await inviteeSdk.organizations.accept(ticket.token);
      expect(accepted).toMatchObject({ organization_id: org.id, role: 'member' });

      const [member] = await sql`select role::text from public.organization_members where organization_id = ${org.id} and user_id = ${invitee.id}`;
      expect(member.role).toBe('member');
      // Through RLS, on the invitee's session: the organization and the teammate's profile.
      const { data: orgs } = await invitee.client.from('organizations').select('id, name').eq('id', org.id);
      expect(orgs).toEqual([{ id: org.id, name: 'Signed Up Co' }]);
      const { data: teammates } = await invitee.client.from('profiles').select('full_name').eq('id', owner.id);
      expect(teammates).toEqual([{ full_name: 'Olivia Owner' }]);
    } finally {
      await sql`delete from public.organizations where id = ${org.id}`;
    }
  });
});
