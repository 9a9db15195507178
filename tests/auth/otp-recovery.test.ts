// Passwordless sign-in and password recovery through supabase-js: signInWithOtp's mail (a magic
// link and a 6-digit code) for known and new addresses, verifyOtp by code or token hash,
// shouldCreateUser: false, resetPasswordForEmail and the recovery flow (PASSWORD_RECOVERY, a new
// password, the old one refused), the link's errors, and the codes' expiry.
import { describe, expect, it } from 'vitest';
import { sql } from '../support/db.ts';
import {
  authClient, codeOf, createConfirmedUser, eventually, fragmentOf, latestMail, mailsTo, openLink, PASSWORD, recordEvents, sleep,
  uniqueEmail, useGateway, verifyLinkOf,
} from './support.ts';

const gateway = useGateway({ AUTH_ENABLE_CONFIRMATIONS: 'true' });
const quickExpiry = useGateway({ AUTH_ENABLE_CONFIRMATIONS: 'true', AUTH_OTP_EXPIRY: '1' });

describe('signInWithOtp', () => {
  it('mails a known user a magic link and a code; the code signs in', async () => {
    const user = await createConfirmedUser(gateway.url);
    const client = authClient(gateway.url);
    const events = recordEvents(client);
    const { data, error } = await client.auth.signInWithOtp({ email: user.email });
    expect(error).toBeNull();
    expect(data).toEqual({ user: null, session: null });
    const mail = await latestMail(user.email);
    expect(verifyLinkOf(mail).searchParams.get('type')).toBe('magiclink');
    const verified = await client.auth.verifyOtp({ email: user.email, token: codeOf(mail), type: 'email' });
    expect(verified.error).toBeNull();
    expect(verified.data.session?.user.id).toBe(user.id);
    await eventually(() => events.includes('SIGNED_IN'));
    const { data: claims } = await client.auth.getClaims();
    expect(claims?.claims.amr).toEqual([expect.objectContaining({ method: 'otp' })]);
  });

  it('signs in by the magic link (GET /verify)', async () => {
    const user = await createConfirmedUser(gateway.url);
    await authClient(gateway.url).auth.signInWithOtp({ email: user.email, options: { emailRedirectTo: 'http://127.0.0.1:3000/app' } });
    const { status, location } = await openLink(verifyLinkOf(await latestMail(user.email)));
    expect(status).toBe(303);
    expect(location.pathname).toBe('/app');
    const fragment = fragmentOf(location);
    expect(fragment.get('type')).toBe('magiclink');
    expect(fragment.get('refresh_token')).toBeTruthy();
  });

  it('signs in by the token hash with type magiclink', async () => {
    const user = await createConfirmedUser(gateway.url);
    await authClient(gateway.url).auth.signInWithOtp({ email: user.email });
    const tokenHash = verifyLinkOf(await latestMail(user.email)).searchParams.get('token')!;
    const { data, error } = await authClient(gateway.url).auth.verifyOtp({ token_hash: tokenHash, type: 'magiclink' });
    expect(error).toBeNull();
    expect(data.user?.id).toBe(user.id);
  });

  it('signs a new address up, its confirmation being the sign-in mail', async () => {
    const email = uniqueEmail('otp-new');
    const client = authClient(gateway.url);
    const { error } = await client.auth.signInWithOtp({ email, options: { data: { full_name: 'New Person' } } });
    expect(error).toBeNull();
    const [row] = await sql`select id, raw_user_meta_data, email_confirmed_at from auth.users where email = ${email}`;
    expect(row.email_confirmed_at).toBeNull();
    expect(row.raw_user_meta_data).toMatchObject({ full_name: 'New Person' });
    const mail = await latestMail(email);
    expect(verifyLinkOf(mail).searchParams.get('type')).toBe('signup');
    const { data, error: verifyError } = await client.auth.verifyOtp({ email, token: codeOf(mail), type: 'email' });
    expect(verifyError).toBeNull();
    expect(data.user).toMatchObject({ id: row.id, email_confirmed_at: expect.any(String) });
  });

  it('refuses an unknown address with otp_disabled when shouldCreateUser is false', async () => {
    const email = uniqueEmail('otp-nocreate');
    const { error } = await authClient(gateway.url).auth.signInWithOtp({ email, options: { shouldCreateUser: false } });
    expect(error).toMatchObject({ status: 422, code: 'otp_disabled' });
    expect(await sql`select 1 from auth.users where email = ${email}`).toHaveLength(0);
  });

  it('refuses a wrong code with otp_expired', async () => {
    const user = await createConfirmedUser(gateway.url);
    await authClient(gateway.url).auth.signInWithOtp({ email: user.email });
    const code = codeOf(await latestMail(user.email));
    const { error } = await authClient(gateway.url).auth.verifyOtp({ email: user.email, token: code === '123456' ? '654321' : '123456', type: 'email' });
    expect(error).toMatchObject({ name: 'AuthApiError', status: 403, code: 'otp_expired' });
  });

  it('lets a code expire after [auth.email] otp_expiry', async () => {
    const user = await createConfirmedUser(quickExpiry.url);
    await authClient(quickExpiry.url).auth.signInWithOtp({ email: user.email });
    const mail = await latestMail(user.email);
    await sleep(1500);
    const byCode = await authClient(quickExpiry.url).auth.verifyOtp({ email: user.email, token: codeOf(mail), type: 'email' });
    expect(byCode.error).toMatchObject({ status: 403, code: 'otp_expired' });
    const byLink = await openLink(verifyLinkOf(mail));
    expect(fragmentOf(byLink.location).get('error_code')).toBe('otp_expired');
  });
});

describe('password recovery', () => {
  it('mails a link and a code; verifying it is a PASSWORD_RECOVERY sign-in that may set a new password', async () => {
    const user = await createConfirmedUser(gateway.url);
    const client = authClient(gateway.url);
    const events = recordEvents(client);
    const { error } = await client.auth.resetPasswordForEmail(user.email, { redirectTo: 'http://127.0.0.1:3000/reset' });
    expect(error).toBeNull();
    const mail = await latestMail(user.email);
    const link = verifyLinkOf(mail);
    expect(link.searchParams.get('type')).toBe('recovery');
    expect(link.searchParams.get('redirect_to')).toBe('http://127.0.0.1:3000/reset');

    const { data, error: verifyError } = await client.auth.verifyOtp({ email: user.email, token: codeOf(mail), type: 'recovery' });
    expect(verifyError).toBeNull();
    expect(data.session?.user.id).toBe(user.id);
    await eventually(() => events.includes('PASSWORD_RECOVERY'));

    const same = await client.auth.updateUser({ password: user.password });
    expect(same.error).toMatchObject({ status: 422, code: 'same_password' });
    const weak = await client.auth.updateUser({ password: '123' });
    expect(weak.error).toMatchObject({ status: 422, code: 'weak_password', reasons: ['length'] });

    const updated = await client.auth.updateUser({ password: 'a-brand-new-password-7' });
    expect(updated.error).toBeNull();
    await eventually(() => events.includes('USER_UPDATED'));
    const old = await authClient(gateway.url).auth.signInWithPassword({ email: user.email, password: user.password });
    expect(old.error).toMatchObject({ code: 'invalid_credentials' });
    const fresh = await authClient(gateway.url).auth.signInWithPassword({ email: user.email, password: 'a-brand-new-password-7' });
    expect(fresh.error).toBeNull();
  });

  it('redirects the recovery link with the session and type=recovery', async () => {
    const user = await createConfirmedUser(gateway.url);
    await authClient(gateway.url).auth.resetPasswordForEmail(user.email);
    const { location } = await openLink(verifyLinkOf(await latestMail(user.email)));
    expect(location.origin).toBe('http://127.0.0.1:3000');
    expect(fragmentOf(location).get('type')).toBe('recovery');
    expect(fragmentOf(location).get('access_token')).toBeTruthy();
  });

  it('answers an unknown address as a known one, and sends nothing', async () => {
    const email = uniqueEmail('nobody');
    const { data, error } = await authClient(gateway.url).auth.resetPasswordForEmail(email);
    expect(error).toBeNull();
    expect(data).toEqual({});
    await sleep(300);
    expect(await mailsTo(email)).toEqual([]);
  });

  it('ends the user\'s other sessions when the password changes', async () => {
    const user = await createConfirmedUser(gateway.url);
    const elsewhere = authClient(gateway.url);
    await elsewhere.auth.signInWithPassword({ email: user.email, password: user.password });
    const here = authClient(gateway.url);
    await here.auth.signInWithPassword({ email: user.email, password: user.password });
    const { error } = await here.auth.updateUser({ password: 'yet-another-password-3' });
    expect(error).toBeNull();
    expect((await here.auth.getUser()).data.user?.id).toBe(user.id);
    expect((await elsewhere.auth.getUser()).error?.name).toBe('AuthSessionMissingError');
  });
});

describe('resend', () => {
  it('sends the sign-up confirmation again', async () => {
    const email = uniqueEmail('resend');
    await authClient(gateway.url).auth.signUp({ email, password: PASSWORD });
    await latestMail(email);
    await sleep(1100);
    const { error } = await authClient(gateway.url).auth.resend({ type: 'signup', email });
    expect(error).toBeNull();
    const second = await latestMail(email, 2);
    const { error: verifyError } = await authClient(gateway.url).auth.verifyOtp({ email, token: codeOf(second), type: 'signup' });
    expect(verifyError).toBeNull();
  });
});
