// The pure parts of functions/_shared (no Deno APIs), checked directly in node.
import { corsHeaders as supabaseCorsHeaders } from '@supabase/supabase-js/cors';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { corsHeaders, preflight } from '../../functions/_shared/cors.ts';
import { ERROR_CATALOGUE } from '../../functions/_shared/error-codes.ts';
import { errorResponse, HttpError, toHttpError } from '../../functions/_shared/errors.ts';
import { parse, parseJson } from '../../functions/_shared/validate.ts';

function pgError(code: string, message: string, detail?: string): Error {
  return Object.assign(new Error(message), { name: 'PostgresError', code, detail });
}

describe('toHttpError', () => {
  // PostgREST's status for a SQLSTATE: PTxyz answers xyz; the other classes' SQLSTATEs as below.
  const postgrestStatus = (sqlstate: string) =>
    /^PT\d{3}$/.test(sqlstate) ? Number(sqlstate.slice(2)) : ({ '22023': 400, '42501': 403, P0001: 400 } as Record<string, number>)[sqlstate];

  it.each(Object.entries(ERROR_CATALOGUE))('answers %s with the status PostgREST gives its SQLSTATE', (code, entry) => {
    const err = toHttpError(pgError(entry.sqlstate, code));
    expect(err.code).toBe(code);
    expect(err.status).toBe(postgrestStatus(entry.sqlstate));
  });

  it.each([
    ['PT409', 'slug_taken', 409],
    ['PT401', 'not_authenticated', 401],
    ['42501', 'not_authorized', 403],
    ['PT404', 'organization_not_found', 404],
    ['P0001', 'last_owner', 400],
    ['PT429', 'rate_limited', 429],
  ])('maps %s %s to %i (the catalogue, not the name, decides)', (sqlstate, code, status) => {
    expect(toHttpError(pgError(sqlstate, code)).status).toBe(status);
  });

  it.each([
    ['P0001', 'some_uncatalogued_code', 500, 'internal_error'],
    ['42501', 'permission denied for table organizations', 403, 'insufficient_privilege'],
    ['23505', 'duplicate key value violates unique constraint "x"', 409, 'conflict'],
    ['22P02', 'invalid input syntax for type uuid: "x"', 400, 'invalid_request'],
    ['42P01', 'relation "public.x" does not exist', 500, 'internal_error'],
  ])('maps SQLSTATE %s "%s" (no catalogue code) to %i %s', (sqlstate, message, status, code) => {
    const err = toHttpError(pgError(sqlstate, message));
    expect(err.status).toBe(status);
    expect(err.code).toBe(code);
    expect(err.message).not.toMatch(/"|public\.|for table/); // Postgres' own text (names) does not leak
  });

  it("uses the SQL's detail as the message, else the catalogue's meaning", () => {
    expect(toHttpError(pgError('PT409', 'slug_taken', 'The slug acme is taken.')).message).toBe('The slug acme is taken.');
    expect(toHttpError(pgError('PT409', 'slug_taken')).message).toBe(ERROR_CATALOGUE.slug_taken.meaning);
  });

  it('turns unknown errors into a 500 without a stack trace', async () => {
    const res = errorResponse(new TypeError('x is undefined'));
    expect(res.status).toBe(500);
    expect(await res.json()).toEqual({ error: { code: 'internal_error', message: 'Internal error' } });
  });

  it('keeps an HttpError as it is, details included', async () => {
    const res = errorResponse(new HttpError(422, 'bad_thing', 'Bad thing', { a: 1 }));
    expect(res.status).toBe(422);
    expect(await res.json()).toEqual({ error: { code: 'bad_thing', message: 'Bad thing', details: { a: 1 } } });
  });
});

describe('validate', () => {
  const schema = z.object({ name: z.string().min(1), quantity: z.number().int().positive() });

  it('returns the parsed value', () => {
    expect(parse(schema, { name: 'a', quantity: 2 })).toEqual({ name: 'a', quantity: 2 });
  });

  it('throws 400 invalid_request with the zod issues', () => {
    try {
      parse(schema, { name: '', quantity: -1 });
      expect.unreachable();
    } catch (err) {
      const e = err as HttpError;
      expect(e.status).toBe(400);
      expect(e.code).toBe('invalid_request');
      const issues = (e.details as { issues: { path: string }[] }).issues;
      expect(issues.map((i) => i.path).sort()).toEqual(['name', 'quantity']);
    }
  });

  it('rejects a body that is not JSON', async () => {
    const req = new Request('http://x/', { method: 'POST', body: '{nope' });
    await expect(parseJson(req, schema)).rejects.toMatchObject({ status: 400, code: 'invalid_request' });
  });
});

describe('cors', () => {
  const headerList = (value: string | null | undefined) => (value ?? '').split(',').map((h) => h.trim().toLowerCase());

  it('allows every header the installed supabase-js sends, and x-request-id', () => {
    expect(headerList(corsHeaders['access-control-allow-headers']).sort())
      .toEqual([...headerList(supabaseCorsHeaders['Access-Control-Allow-Headers']), 'x-request-id'].sort());
  });

  it('answers a preflight with the tracing and retry headers supabase-js adds', () => {
    const allowed = headerList(preflight().headers.get('access-control-allow-headers'));
    const sentBySupabaseJs = ['authorization', 'apikey', 'x-client-info', 'content-type', 'x-retry-count',
      'traceparent', 'tracestate', 'baggage'];
    for (const h of sentBySupabaseJs) expect(allowed).toContain(h);
  });

  it('lets browsers read x-request-id', () => {
    expect(preflight().headers.get('access-control-expose-headers')).toBe('x-request-id');
  });
});
