// The local gateway behaves like a hosted project's edge: Kong's key auth on /rest/v1 and its
// request size limit on both paths, the relay's JWT check on /functions/v1, CORS for browsers,
// JSON 404s.
import { randomUUID } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { ANON_KEY, SERVICE_ROLE_KEY } from '../../scripts/lib/config.mjs';
import { apiUrl, clientFor } from '../support/clients.ts';
import { insertOrganization } from '../support/organizations.ts';
import { createUser, type TestUser } from '../support/users.ts';

// The shared stack's gateway runs with the default limits: 2 MiB for /rest/v1
// (GATEWAY_MAX_BODY_BYTES), 50 MiB for /functions/v1 (GATEWAY_MAX_FUNCTION_BODY_BYTES, files).
const MiB = 1024 * 1024;
const OVER_LIMIT = 3 * MiB;
const UNDER_LIMIT = 2 * MiB - 1024;
const OVER_FUNCTION_LIMIT = 50 * MiB + 1;
const UNDER_FUNCTION_LIMIT = 3 * MiB;
const TOO_LARGE = { message: 'Request size limit exceeded' };

/** A JSON object of exactly `bytes` bytes: one string argument, `p_padding`. */
function paddedJson(bytes: number): string {
  return JSON.stringify({ p_padding: 'x'.repeat(bytes - '{"p_padding":""}'.length) });
}

/** POSTs `body` as a stream, so fetch sends it chunked, without a content-length. */
function postChunked(url: string, body: string, headers: Record<string, string> = {}): Promise<Response> {
  const bytes = new TextEncoder().encode(body);
  const stream = new ReadableStream<Uint8Array>({
    start(controller) {
      for (let i = 0; i < bytes.length; i += 64 * 1024) controller.enqueue(bytes.subarray(i, i + 64 * 1024));
      controller.close();
    },
  });
  // Node's fetch needs `duplex` for a stream body; the DOM typings do not know it yet.
  return fetch(url, { method: 'POST', headers, body: stream, duplex: 'half' } as RequestInit);
}

describe('/functions/v1', () => {
  it('answers 404 JSON for an unknown function', async () => {
    const res = await fetch(`${apiUrl}/functions/v1/no-such-function`);
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ code: 'NOT_FOUND', message: 'Requested function was not found' });
  });

  it('answers a CORS preflight without a JWT, even where verify_jwt is on', async () => {
    const res = await fetch(`${apiUrl}/functions/v1/me`, {
      method: 'OPTIONS',
      headers: {
        origin: 'http://localhost:3000',
        'access-control-request-method': 'GET',
        'access-control-request-headers': 'authorization, apikey, x-client-info, content-type',
      },
    });
    expect(res.status).toBeLessThan(300);
    expect(res.headers.get('access-control-allow-origin')).toBe('*');
    const allowed = res.headers.get('access-control-allow-headers') ?? '';
    for (const h of ['authorization', 'apikey', 'x-client-info', 'content-type', 'x-request-id']) {
      expect(allowed).toContain(h);
    }
  });

  it('answers 400 JSON, not 500, for a function name with a malformed percent-escape', async () => {
    const res = await fetch(`${apiUrl}/functions/v1/%E0%A4%A`);
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ code: 'BAD_REQUEST', message: 'Malformed function name' });
  });

  it('refuses a body whose content-length is over the size limit with 413', async () => {
    const res = await fetch(`${apiUrl}/functions/v1/health`, { method: 'POST', body: paddedJson(OVER_FUNCTION_LIMIT) });
    expect(res.status).toBe(413);
    expect(await res.json()).toEqual(TOO_LARGE);
  });

  it('refuses a streamed body over the size limit with 413, even where the function never reads it', async () => {
    // health answers POST with 405 without reading the body: the gateway counts it all the same.
    const res = await postChunked(`${apiUrl}/functions/v1/health`, paddedJson(OVER_FUNCTION_LIMIT));
    expect(res.status).toBe(413);
    expect(await res.json()).toEqual(TOO_LARGE);
  });

  it('passes a streamed body under the size limit to the function', async () => {
    const res = await postChunked(`${apiUrl}/functions/v1/health`, paddedJson(UNDER_FUNCTION_LIMIT));
    expect(res.status).toBe(405);
    expect((await res.json()).error.code).toBe('method_not_allowed');
  });

  it('answers 404 JSON for a path outside /rest/v1 and /functions/v1', async () => {
    const res = await fetch(`${apiUrl}/nowhere`);
    expect(res.status).toBe(404);
    expect(res.headers.get('content-type')).toContain('application/json');
  });
});

describe('/rest/v1', () => {
  let user: TestUser;
  let ownOrg: string;
  let otherOrg: string;

  beforeAll(async () => {
    user = await createUser();
    const other = await createUser();
    const tag = randomUUID().slice(0, 8);
    ({ id: ownOrg } = await insertOrganization({ name: `Gateway Own ${tag}`, slug: `gw-own-${tag}`, owner: user }));
    ({ id: otherOrg } = await insertOrganization({ name: `Gateway Other ${tag}`, slug: `gw-other-${tag}`, owner: other }));
  });

  it('refuses a request with no API key, as Kong does', async () => {
    const res = await fetch(`${apiUrl}/rest/v1/organizations?select=id`);
    expect(res.status).toBe(401);
    expect(await res.json()).toEqual({ message: 'No API key found in request' });
  });

  it('refuses a request with only an Authorization header, as Kong does', async () => {
    const res = await fetch(`${apiUrl}/rest/v1/organizations?select=id`, {
      headers: { authorization: `Bearer ${user.token}` },
    });
    expect(res.status).toBe(401);
    expect(await res.json()).toEqual({ message: 'No API key found in request' });
  });

  it('refuses an unknown API key', async () => {
    const res = await fetch(`${apiUrl}/rest/v1/organizations?select=id`, { headers: { apikey: 'not-a-key' } });
    expect(res.status).toBe(401);
  });

  it('lets preflights through without a key', async () => {
    const res = await fetch(`${apiUrl}/rest/v1/organizations`, {
      method: 'OPTIONS',
      headers: { origin: 'http://localhost:3000', 'access-control-request-method': 'GET' },
    });
    expect(res.status).toBeLessThan(300);
    expect(res.headers.get('access-control-allow-origin')).toBe('*');
  });

  it('serves supabase-js as the caller, so RLS applies', async () => {
    const { data, error } = await clientFor(user.token).from('organizations').select('id');
    expect(error).toBeNull();
    const ids = (data ?? []).map((r) => r.id);
    expect(ids).toContain(ownOrg);
    expect(ids).not.toContain(otherOrg);
  });

  it('acts with the apikey role when there is no Authorization header (apikey as header or query)', async () => {
    const byHeader = await fetch(`${apiUrl}/rest/v1/organizations?select=id&id=eq.${otherOrg}`, {
      headers: { apikey: SERVICE_ROLE_KEY },
    });
    expect(byHeader.status).toBe(200);
    expect(await byHeader.json()).toEqual([{ id: otherOrg }]);

    // The key is removed from the query string, so PostgREST does not read it as a filter.
    const byQuery = await fetch(`${apiUrl}/rest/v1/organizations?select=id&id=eq.${otherOrg}&apikey=${SERVICE_ROLE_KEY}`);
    expect(byQuery.status).toBe(200);
    expect(await byQuery.json()).toEqual([{ id: otherOrg }]);

    const anonRoot = await fetch(`${apiUrl}/rest/v1/?apikey=${ANON_KEY}`);
    expect(anonRoot.status).toBe(200);
    await anonRoot.body?.cancel();
  });

  it('passes writes through with their body and status', async () => {
    const res = await fetch(`${apiUrl}/rest/v1/organizations?id=eq.${ownOrg}`, {
      method: 'PATCH',
      headers: {
        apikey: SERVICE_ROLE_KEY,
        authorization: `Bearer ${SERVICE_ROLE_KEY}`,
        'content-type': 'application/json',
        prefer: 'return=representation',
      },
      body: JSON.stringify({ name: 'Renamed through the gateway' }),
    });
    expect(res.status).toBe(200);
    expect((await res.json())[0]).toMatchObject({ id: ownOrg, name: 'Renamed through the gateway' });
  });

  describe('request size limit', () => {
    // No such RPC: PostgREST reads the whole body for the argument names, then answers 404.
    const url = `${apiUrl}/rest/v1/rpc/gateway_size_probe`;
    const headers = { apikey: ANON_KEY, 'content-type': 'application/json' };

    it('refuses a body whose content-length is over the limit with 413', async () => {
      const res = await fetch(url, { method: 'POST', headers, body: paddedJson(OVER_LIMIT) });
      expect(res.status).toBe(413);
      expect(await res.json()).toEqual(TOO_LARGE);
    });

    it('refuses a streamed body over the limit with 413', async () => {
      const res = await postChunked(url, paddedJson(OVER_LIMIT), headers);
      expect(res.status).toBe(413);
      expect(await res.json()).toEqual(TOO_LARGE);
    });

    it('passes a body under the limit to PostgREST, with or without a content-length', async () => {
      for (const res of [
        await fetch(url, { method: 'POST', headers, body: paddedJson(UNDER_LIMIT) }),
        await postChunked(url, paddedJson(UNDER_LIMIT), headers),
      ]) {
        expect(res.status).toBe(404);
        expect(await res.json()).toMatchObject({ code: 'PGRST202', details: expect.stringContaining('p_padding') });
      }
    });
  });
});
