// The PKCE flow (supabase-js's flowType: 'pkce', what server-side frameworks use): the mail's link
// redirects with ?code= instead of a session in the fragment, and exchangeCodeForSession trades
// the code and the verifier the client kept for a session; a code works once.
import { describe, expect, it } from 'vitest';
import { authClient, createConfirmedUser, latestAuthMail, openLink, PASSWORD, uniqueEmail, useGateway, verifyLinkOf } from './support.ts';

const gateway = useGateway({ AUTH_ENABLE_CONFIRMATIONS: 'true' });

describe('the PKCE flow', () => {
  it('confirms a sign-up by a link that redirects with a code the client exchanges', async () => {
    const client = authClient(gateway.url, { flowType: 'pkce' });
    const email = uniqueEmail('pkce');
    const { error } = await client.auth.signUp({ email, password: PASSWORD, options: { emailRedirectTo: 'http://127.0.0.1:3000/callback' } });
    expect(error).toBeNull();
    const link = verifyLinkOf(await latestAuthMail(email, 'signup'));
    expect(link.searchParams.get('token')).toMatch(/^pkce_/);
    const { status, location } = await openLink(link);
    expect(status).toBe(303);
    expect(location.pathname).toBe('/callback');
    expect(location.hash).toBe('');
    const code = location.searchParams.get('code');
    expect(code).toBeTruthy();

    const { data, error: exchangeError } = await client.auth.exchangeCodeForSession(code!);
    expect(exchangeError).toBeNull();
    expect(data.session?.user.email).toBe(email);
    expect(data.user?.email_confirmed_at).toEqual(expect.any(String));

    const again = await authClient(gateway.url, { flowType: 'pkce' }).auth.exchangeCodeForSession(code!);
    expect(again.error).not.toBeNull();
  });

  it('signs in by a magic link the same way', async () => {
    const user = await createConfirmedUser(gateway.url);
    const client = authClient(gateway.url, { flowType: 'pkce' });
    await client.auth.signInWithOtp({ email: user.email, options: { emailRedirectTo: 'http://127.0.0.1:3000/callback' } });
    const { location } = await openLink(verifyLinkOf(await latestAuthMail(user.email, 'magiclink')));
    const { data, error } = await client.auth.exchangeCodeForSession(location.searchParams.get('code')!);
    expect(error).toBeNull();
    expect(data.user?.id).toBe(user.id);
  });
});
