// updateUser through supabase-js: user metadata (USER_UPDATED, into raw_user_meta_data and the
// profile), app_metadata refused to a user, and an email change confirmed from both addresses
// ([auth.email] double_confirm_changes = true): a mail to each, new_email pending until both are
// confirmed, then the new address on the user, its identity and its profile.
import { describe, expect, it } from 'vitest';
import { ANON_KEY } from '../../scripts/lib/config.mjs';
import { sql } from '../support/db.ts';
import {
  authClient, codeOf, createConfirmedUser, eventually, fragmentOf, latestMail, mailsTo, openLink, recordEvents, signedIn,
  uniqueEmail, useGateway, verifyLinkOf,
} from './support.ts';

const gateway = useGateway({ AUTH_ENABLE_CONFIRMATIONS: 'true', AUTH_DOUBLE_CONFIRM_CHANGES: 'true' });
const singleConfirm = useGateway({ AUTH_ENABLE_CONFIRMATIONS: 'true', AUTH_DOUBLE_CONFIRM_CHANGES: 'false' });

describe('updateUser', () => {
  it('merges user metadata (a null removes a key) and emits USER_UPDATED', async () => {
    const { client, user } = await signedIn(gateway.url);
    const events = recordEvents(client);
    const first = await client.auth.updateUser({ data: { full_name: 'Ada', theme: 'dark' } });
    expect(first.error).toBeNull();
    expect(first.data.user?.user_metadata).toMatchObject({ full_name: 'Ada', theme: 'dark' });
    const second = await client.auth.updateUser({ data: { theme: null, locale: 'en' } });
    expect(second.data.user?.user_metadata).toMatchObject({ full_name: 'Ada', locale: 'en' });
    expect(second.data.user?.user_metadata).not.toHaveProperty('theme');
    await eventually(() => events.includes('USER_UPDATED'));
    const [row] = await sql`select raw_user_meta_data from auth.users where id = ${user.id}`;
    expect(row.raw_user_meta_data).toMatchObject({ full_name: 'Ada', locale: 'en' });
    const [profile] = await sql`select full_name from public.profiles where id = ${user.id}`;
    expect(profile.full_name).toBe('Ada');
    // The next access token carries it.
    const { data } = await client.auth.refreshSession();
    expect(data.user?.user_metadata).toMatchObject({ full_name: 'Ada' });
  });

  it('refuses app_metadata from a user with not_admin', async () => {
    const { client } = await signedIn(gateway.url);
    const res = await fetch(`${gateway.url}/auth/v1/user`, {
      method: 'PUT',
      headers: {
        apikey: ANON_KEY,
        authorization: `Bearer ${(await client.auth.getSession()).data.session!.access_token}`,
        'content-type': 'application/json',
        'x-supabase-api-version': '2024-01-01',
      },
      body: JSON.stringify({ app_metadata: { platform_admin: true } }),
    });
    expect(res.status).toBe(403);
    expect((await res.json()).code).toBe('not_admin');
  });

  it('changes the email after both addresses confirmed it, mailing each of them', async () => {
    const { client, user } = await signedIn(gateway.url);
    const newEmail = uniqueEmail('moved');
    const { data, error } = await client.auth.updateUser({ email: newEmail }, { emailRedirectTo: 'http://127.0.0.1:3000/settings' });
    expect(error).toBeNull();
    expect(data.user).toMatchObject({ email: user.email, new_email: newEmail, email_change_sent_at: expect.any(String) });

    const toCurrent = await latestMail(user.email);
    const toNew = await latestMail(newEmail);
    expect(verifyLinkOf(toCurrent).searchParams.get('type')).toBe('email_change');
    expect(verifyLinkOf(toNew).searchParams.get('type')).toBe('email_change');
    expect(verifyLinkOf(toCurrent).searchParams.get('token')).not.toBe(verifyLinkOf(toNew).searchParams.get('token'));

    // The current address first: accepted, the change still pending.
    const first = await openLink(verifyLinkOf(toCurrent));
    expect(first.status).toBe(303);
    expect(fragmentOf(first.location).get('message')).toBe('Confirmation link accepted. Please proceed to confirm link sent to the other email');
    const [pending] = await sql`select email, email_change from auth.users where id = ${user.id}`;
    expect(pending).toEqual({ email: user.email, email_change: newEmail });

    // Then the new one, by its code: the address changes.
    const verified = await client.auth.verifyOtp({ email: newEmail, token: codeOf(toNew), type: 'email_change' });
    expect(verified.error).toBeNull();
    expect(verified.data.user).toMatchObject({ email: newEmail });
    expect(verified.data.user?.new_email).toBeUndefined();
    const [row] = await sql`select email, email_change from auth.users where id = ${user.id}`;
    expect(row).toEqual({ email: newEmail, email_change: '' });
    const [identity] = await sql`select email from auth.identities where user_id = ${user.id} and provider = 'email'`;
    expect(identity.email).toBe(newEmail);
    const [profile] = await sql`select email from public.profiles where id = ${user.id}`;
    expect(profile.email).toBe(newEmail);
    const signIn = await authClient(gateway.url).auth.signInWithPassword({ email: newEmail, password: user.password });
    expect(signIn.error).toBeNull();
  });

  it('changes the email from the new address alone without double_confirm_changes', async () => {
    const { client, user } = await signedIn(singleConfirm.url);
    const newEmail = uniqueEmail('single');
    await client.auth.updateUser({ email: newEmail });
    const mail = await latestMail(newEmail);
    expect(await mailsTo(user.email)).toEqual([]);
    const { data, error } = await client.auth.verifyOtp({ email: newEmail, token: codeOf(mail), type: 'email_change' });
    expect(error).toBeNull();
    expect(data.user?.email).toBe(newEmail);
  });

  it('refuses an address another user has with email_exists', async () => {
    const other = await createConfirmedUser(gateway.url);
    const { client } = await signedIn(gateway.url);
    const { error } = await client.auth.updateUser({ email: other.email });
    expect(error).toMatchObject({ status: 422, code: 'email_exists' });
  });
});
