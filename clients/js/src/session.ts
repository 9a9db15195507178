// Who the caller is. Without GoTrue (a custom `accessToken`) supabase-js has no session object, so
// the user id is read from the access token itself: its `sub` claim. The token is not verified
// here; the server verifies it on every request, this only decides which rows are "mine".

/** The `sub` claim of a JWT, or null when the token has none (e.g. the anon key) or is not a JWT. */
export function jwtSubject(token: string | null | undefined): string | null {
  const payload = token?.split('.')[1];
  if (!payload) return null;
  try {
    const base64 = payload.replace(/-/g, '+').replace(/_/g, '/');
    const binary = atob(base64.padEnd(Math.ceil(base64.length / 4) * 4, '='));
    const json: unknown = JSON.parse(new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0))));
    const sub = typeof json === 'object' && json !== null ? (json as { sub?: unknown }).sub : undefined;
    return typeof sub === 'string' && sub !== '' ? sub : null;
  } catch {
    return null;
  }
}
