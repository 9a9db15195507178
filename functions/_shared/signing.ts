// Signed, expiring tokens for links that must work without signing in (one-click unsubscribe):
// base64url(JSON payload with `exp`) "." base64url(HMAC-SHA256 of that part). Pure module: Web
// Crypto only, so node tests can import it too.

const encoder = new TextEncoder();

function base64url(bytes: Uint8Array): string {
  let binary = '';
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replaceAll('+', '-').replaceAll('/', '_').replace(/=+$/, '');
}

function fromBase64url(text: string): Uint8Array<ArrayBuffer> | null {
  if (!/^[A-Za-z0-9_-]*$/.test(text)) return null;
  const binary = atob(text.replaceAll('-', '+').replaceAll('_', '/'));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

function hmacKey(secret: string): Promise<CryptoKey> {
  return crypto.subtle.importKey('raw', encoder.encode(secret), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign', 'verify']);
}

/** A token carrying `payload` until `expiresAt` (epoch seconds). The same arguments make the same token. */
export async function signToken(payload: Record<string, unknown>, secret: string, expiresAt: number): Promise<string> {
  const body = base64url(encoder.encode(JSON.stringify({ ...payload, exp: Math.floor(expiresAt) })));
  const signature = new Uint8Array(await crypto.subtle.sign('HMAC', await hmacKey(secret), encoder.encode(body)));
  return `${body}.${base64url(signature)}`;
}

/** The payload of a token signed with `secret` and not expired, or null (forged, altered, expired, malformed). */
export async function verifyToken(token: string, secret: string): Promise<Record<string, unknown> | null> {
  const [body, signature, extra] = token.split('.');
  if (!body || !signature || extra !== undefined || token.length > 4096) return null;
  const signatureBytes = fromBase64url(signature);
  if (!signatureBytes) return null;
  // crypto.subtle.verify compares in constant time.
  const valid = await crypto.subtle.verify('HMAC', await hmacKey(secret), signatureBytes, encoder.encode(body));
  if (!valid) return null;
  try {
    const payload = JSON.parse(new TextDecoder().decode(fromBase64url(body)!));
    if (typeof payload !== 'object' || payload === null || typeof payload.exp !== 'number') return null;
    return payload.exp > Date.now() / 1000 ? payload : null;
  } catch {
    return null;
  }
}
