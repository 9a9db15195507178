// Sign-up through supabase-js, with email confirmations on (as supabase/config.toml has them) and
// off (a gateway with AUTH_ENABLE_CONFIRMATIONS=false): the confirmation mail from the Send Email
// Hook in the local mailbox, confirmed by its code (verifyOtp) or its link (GET /verify and its
// 303 with the session in the fragment), the metadata in raw_user_meta_data and the profile,
// repeated sign-ups, and GoTrue's error codes.
import { describe, expect, it } from 'vitest';
import { sql } from '../support/db.ts';
import {
  authClient, codeOf, fragmentOf, latestMail, mailsTo, openLink, PASSWORD, recordEvents, sleep, uniqueEmail, useGateway,
  verifyLinkOf, decodeJwt, eventually, waitForMails,
} from './support.ts';

const confirming = useGateway({ AUTH_ENABLE_CONFIRMATIONS: 'true' });
const autoconfirm = useGateway({ AUTH_ENABLE_CONFIRMATIONS: 'false' });
const noSignups = useGateway({ AUTH_ENABLE_SIGNUP: 'false' });

describe('with email confirmations on', () => {
  it('signs up without a session, mails a code and a link, and refuses to sign in until confirmed', async () => {
    const client = authClient(confirming.url);
    const email = uniqueEmail('confirm');
    const { data, error } = await client.auth.signUp({
      email, password: PASSWORD, options: { data: { full_name: 'Ada Lovelace', plan: 'pro' } },
    });
    expect(error).toBeNull();
    expect(data.session).toBeNull();
    expect(data.user).toMatchObject({
      email, aud: 'authenticated', role: 'authenticated', confirmation_sent_at: expect.any(String),
      user_metadata: expect.objectContaining({ full_name: 'Ada Lovelace', plan: 'pro', email, email_verified: false, sub: data.user!.id }),
      app_metadata: { provider: 'email', providers: ['email'] },
      identities: [expect.objectContaining({ provider: 'email', id: data.user!.id, user_id: data.user!.id, identity_data: expect.objectContaining({ email, sub: data.user!.id }) })],
    });
    expect(data.user!.email_confirmed_at).toBeUndefined();

    const [row] = await sql`select raw_user_meta_data, encrypted_password, email_confirmed_at, instance_id from auth.users where id = ${data.user!.id}`;
    expect(row.raw_user_meta_data).toMatchObject({ full_name: 'Ada Lovelace', plan: 'pro' });
    expect(row.encrypted_password).toMatch(/^\$2[aby]\$10\$/);
    expect(row.email_confirmed_at).toBeNull();
    const [profile] = await sql`select email, full_name from public.profiles where id = ${data.user!.id}`;
    expect(profile).toEqual({ email, full_name: 'Ada Lovelace' });

    const mail = await latestMail(email);
    expect(codeOf(mail)).toMatch(/^\d{6}$/);
    const link = verifyLinkOf(mail);
    expect(link.origin).toBe(confirming.url);
    expect(link.searchParams.get('type')).toBe('signup');
    // The link carries a hash of the code, never the code itself; the database keeps only hashes.
    expect(link.searchParams.get('token')).not.toContain(codeOf(mail));
    const [ott] = await sql`select token_type::text, token_hash, relates_to from auth.one_time_tokens where user_id = ${data.user!.id}`;
    expect(ott).toEqual({ token_type: 'confirmation_token', token_hash: link.searchParams.get('token'), relates_to: email });

    const signIn = await client.auth.signInWithPassword({ email, password: PASSWORD });
    expect(signIn.error).toMatchObject({ name: 'AuthApiError', status: 400, code: 'email_not_confirmed' });
  });

  it('confirms by the code with verifyOtp, which signs in (SIGNED_IN)', async () => {
    const client = authClient(confirming.url);
    const events = recordEvents(client);
    const email = uniqueEmail('code');
    await client.auth.signUp({ email, password: PASSWORD });
    const code = codeOf(await latestMail(email));

    const wrong = await client.auth.verifyOtp({ email, token: code === '000000' ? '111111' : '000000', type: 'email' });
    expect(wrong.error).toMatchObject({ status: 403, code: 'otp_expired' });

    const { data, error } = await client.auth.verifyOtp({ email, token: code, type: 'email' });
    expect(error).toBeNull();
    expect(data.session).toMatchObject({ token_type: 'bearer', refresh_token: expect.any(String) });
    expect(data.user).toMatchObject({ email, email_confirmed_at: expect.any(String), confirmed_at: expect.any(String) });
    expect(data.user!.user_metadata).toMatchObject({ email_verified: true });
    await eventually(() => events.includes('SIGNED_IN'));
    expect((await client.auth.getUser()).data.user?.id).toBe(data.user!.id);

    // A code works once.
    const again = await authClient(confirming.url).auth.verifyOtp({ email, token: code, type: 'email' });
    expect(again.error).toMatchObject({ status: 403, code: 'otp_expired' });
    // Now the password works.
    const signIn = await authClient(confirming.url).auth.signInWithPassword({ email, password: PASSWORD });
    expect(signIn.error).toBeNull();
  });

  it('confirms by the link: GET /verify redirects (303) to redirect_to with the session in the fragment', async () => {
    const client = authClient(confirming.url);
    const email = uniqueEmail('link');
    await client.auth.signUp({ email, password: PASSWORD, options: { emailRedirectTo: 'http://127.0.0.1:3000/welcome' } });
    const link = verifyLinkOf(await latestMail(email));
    expect(link.searchParams.get('redirect_to')).toBe('http://127.0.0.1:3000/welcome');

    const { status, location } = await openLink(link);
    expect(status).toBe(303);
    expect(`${location.origin}${location.pathname}`).toBe('http://127.0.0.1:3000/welcome');
    const session = fragmentOf(location);
    expect(session.get('token_type')).toBe('bearer');
    expect(session.get('type')).toBe('signup');
    expect(Number(session.get('expires_in'))).toBeGreaterThan(0);
    expect(Number(session.get('expires_at'))).toBeGreaterThan(Date.now() / 1000);
    const claims = decodeJwt(session.get('access_token')!);
    expect(claims).toMatchObject({ email, role: 'authenticated', aud: 'authenticated' });

    // The session from the link is a real one: supabase-js takes it as setSession does.
    const { data, error } = await client.auth.setSession({
      access_token: session.get('access_token')!, refresh_token: session.get('refresh_token')!,
    });
    expect(error).toBeNull();
    expect(data.user).toMatchObject({ email, email_confirmed_at: expect.any(String) });

    // The same link again: an error in the fragment, as GoTrue redirects it.
    const reused = await openLink(link);
    expect(reused.status).toBe(303);
    const failure = fragmentOf(reused.location);
    expect(failure.get('error')).toBe('access_denied');
    expect(failure.get('error_code')).toBe('otp_expired');
    expect(failure.get('error_description')).toBe('Email link is invalid or has expired');
  });

  it('confirms by the token hash with verifyOtp', async () => {
    const client = authClient(confirming.url);
    const email = uniqueEmail('hash');
    await client.auth.signUp({ email, password: PASSWORD });
    const tokenHash = verifyLinkOf(await latestMail(email)).searchParams.get('token')!;
    const { data, error } = await client.auth.verifyOtp({ token_hash: tokenHash, type: 'signup' });
    expect(error).toBeNull();
    expect(data.user?.email).toBe(email);
  });

  it('falls back to site_url for a redirect_to that is not allowed', async () => {
    const client = authClient(confirming.url);
    const email = uniqueEmail('redirect');
    await client.auth.signUp({ email, password: PASSWORD, options: { emailRedirectTo: 'https://evil.example.com/steal' } });
    const link = verifyLinkOf(await latestMail(email));
    expect(link.searchParams.get('redirect_to')).toBe('http://127.0.0.1:3000');
    const { location } = await openLink(link);
    expect(location.origin).toBe('http://127.0.0.1:3000');
    expect(fragmentOf(location).get('access_token')).toBeTruthy();
  });

  it('answers a repeated sign-up of a confirmed address with a made-up user and sends nothing', async () => {
    const email = uniqueEmail('again');
    const first = authClient(confirming.url);
    const { data: signedUp } = await first.auth.signUp({ email, password: PASSWORD });
    await first.auth.verifyOtp({ email, token: codeOf(await latestMail(email)), type: 'email' });
    const before = (await mailsTo(email)).length;

    const { data, error } = await authClient(confirming.url).auth.signUp({ email, password: 'another-password-1' });
    expect(error).toBeNull();
    expect(data.session).toBeNull();
    expect(data.user?.id).not.toBe(signedUp.user!.id);
    expect(data.user?.identities).toEqual([]);
    await sleep(500);
    expect((await mailsTo(email)).length).toBe(before);
    const [{ n }] = await sql`select count(*)::int as n from auth.users where email = ${email}`;
    expect(n).toBe(1);
  });

  it('sends the confirmation again for an unconfirmed address, to the same user', async () => {
    const email = uniqueEmail('unconfirmed');
    const { data: first } = await authClient(confirming.url).auth.signUp({ email, password: PASSWORD });
    await latestMail(email);
    await sleep(1100); // [auth.email] max_frequency = "1s"
    const { data: second, error } = await authClient(confirming.url).auth.signUp({ email, password: PASSWORD });
    expect(error).toBeNull();
    expect(second.user?.id).toBe(first.user!.id);
    const mails = await waitForMails(email, 2);
    // The second code replaces the first.
    const { error: stale } = await authClient(confirming.url).auth.verifyOtp({ email, token: codeOf(mails[0]), type: 'email' });
    if (codeOf(mails[0]) !== codeOf(mails[1])) expect(stale).toMatchObject({ code: 'otp_expired' });
    const { error: fresh } = await authClient(confirming.url).auth.verifyOtp({ email, token: codeOf(mails[1]), type: 'email' });
    expect(fresh).toBeNull();
  });
});

describe('with email confirmations off', () => {
  it('signs up with a session at once', async () => {
    const client = authClient(autoconfirm.url);
    const events = recordEvents(client);
    const email = uniqueEmail('auto');
    const { data, error } = await client.auth.signUp({ email, password: PASSWORD, options: { data: { full_name: 'Grace Hopper' } } });
    expect(error).toBeNull();
    expect(data.session).toMatchObject({ access_token: expect.any(String), refresh_token: expect.any(String), token_type: 'bearer' });
    expect(data.user).toMatchObject({ email, email_confirmed_at: expect.any(String), last_sign_in_at: expect.any(String) });
    await eventually(() => events.includes('SIGNED_IN'));
    expect(await mailsTo(email)).toEqual([]);
    const [profile] = await sql`select full_name from public.profiles where id = ${data.user!.id}`;
    expect(profile.full_name).toBe('Grace Hopper');
  });

  it('refuses a repeated sign-up with user_already_exists', async () => {
    const email = uniqueEmail('exists');
    await authClient(autoconfirm.url).auth.signUp({ email, password: PASSWORD });
    const { error } = await authClient(autoconfirm.url).auth.signUp({ email, password: PASSWORD });
    expect(error).toMatchObject({ name: 'AuthApiError', status: 422, code: 'user_already_exists', message: 'User already registered' });
  });

  it('refuses a weak password with weak_password and its reasons', async () => {
    const { error } = await authClient(autoconfirm.url).auth.signUp({ email: uniqueEmail('weak'), password: 'abc' });
    expect(error).toMatchObject({ name: 'AuthWeakPasswordError', status: 422, code: 'weak_password', reasons: ['length'] });
  });

  it('refuses a malformed address and a missing password with validation_failed', async () => {
    const bad = await authClient(autoconfirm.url).auth.signUp({ email: 'not-an-address', password: PASSWORD });
    expect(bad.error).toMatchObject({ status: 400, code: 'validation_failed' });
    const noPassword = await authClient(autoconfirm.url).auth.signUp({ email: uniqueEmail('nopw'), password: '' });
    expect(noPassword.error).toMatchObject({ status: 400, code: 'validation_failed' });
  });
});

describe('with sign-ups disabled', () => {
  it('refuses them with signup_disabled', async () => {
    const { error } = await authClient(noSignups.url).auth.signUp({ email: uniqueEmail('closed'), password: PASSWORD });
    expect(error).toMatchObject({ status: 422, code: 'signup_disabled' });
  });
});
