// BackendError: how PostgREST, Postgres, gateway and network failures become typed codes.
import { describe, expect, it } from 'vitest';
import {
  BackendError,
  ERROR_CATALOGUE,
  errorCodeOf,
  isBackendError,
  isServerErrorCode,
  SERVER_ERROR_CODES,
} from '../../clients/js/src/index.ts';
import { jwtSubject } from '../../clients/js/src/session.ts';
import { backendFor, rejection } from '../support/clients.ts';
import { uniqueSlug } from '../support/organizations.ts';

describe('errorCodeOf', () => {
  it('takes our codes from the message, whatever the SQLSTATE', () => {
    for (const code of SERVER_ERROR_CODES) {
      expect(errorCodeOf({ message: code, code: 'P0001', details: 'text' }, 400)).toBe(code);
    }
  });

  it.each([
    [{ message: 'permission denied for table organizations', code: '42501' }, 401, 'not_authenticated'],
    [{ message: 'permission denied for table organizations', code: '42501' }, 403, 'not_authorized'],
    [{ message: 'new row violates row-level security policy for table "x"', code: '42501' }, 403, 'not_authorized'],
    [{ message: 'JWT expired', code: 'PGRST301' }, 401, 'not_authenticated'],
    [{ message: 'JSON object requested, multiple (or no) rows returned', code: 'PGRST116' }, 406, 'not_found'],
    [{ message: 'duplicate key value violates unique constraint "organizations_slug_key"', code: '23505' }, 409, 'slug_taken'],
    [{ message: 'duplicate key value violates unique constraint "something_else_key"', code: '23505' }, 409, 'conflict'],
    [{ message: 'new row for relation "organizations" violates check constraint "organizations_slug_check"', code: '23514' }, 400, 'invalid_slug'],
    [{ message: 'new row for relation "organizations" violates check constraint "organizations_name_check"', code: '23514' }, 400, 'invalid_name'],
    [{ message: 'new row for relation "t" violates check constraint "t_check"', code: '23514' }, 400, 'invalid_input'],
    [{ message: 'invalid input syntax for type uuid: "x"', code: '22P02' }, 400, 'invalid_input'],
    [{ message: '"failed to parse filter"', code: 'PGRST100' }, 400, 'invalid_input'],
    [{ message: 'TypeError: fetch failed', code: '' }, 0, 'network_error'],
    [{ message: 'Invalid API key' }, 401, 'not_authenticated'],
    [{ message: 'Bad gateway' }, 502, 'unknown'],
    [{ message: 'Could not find the function public.nope in the schema cache', code: 'PGRST202' }, 404, 'unknown'],
  ] as const)('%o with HTTP %i -> %s', (error, status, code) => {
    expect(errorCodeOf(error, status)).toBe(code);
  });
});

describe('the error catalogue (clients/js/src/error-codes.ts)', () => {
  // Each class has one SQLSTATE, which picks the HTTP status PostgREST answers with.
  const CLASSES: Record<string, { sqlstate: string; status: number }> = {
    invalid_input: { sqlstate: '22023', status: 400 },
    not_authenticated: { sqlstate: 'PT401', status: 401 },
    not_authorized: { sqlstate: '42501', status: 403 },
    not_found: { sqlstate: 'PT404', status: 404 },
    conflict: { sqlstate: 'PT409', status: 409 },
    rule: { sqlstate: 'P0001', status: 400 },
    rate_limited: { sqlstate: 'PT429', status: 429 },
    unavailable: { sqlstate: 'PT503', status: 503 },
  };

  it('gives every code the SQLSTATE and status of its class, and a meaning', () => {
    expect(SERVER_ERROR_CODES).toEqual(Object.keys(ERROR_CATALOGUE));
    expect(SERVER_ERROR_CODES).toEqual(expect.arrayContaining(['append_only', 'membership_immutable']));
    for (const code of SERVER_ERROR_CODES) {
      const entry = ERROR_CATALOGUE[code];
      expect({ code, sqlstate: entry.sqlstate, status: entry.status }).toEqual({ code, ...CLASSES[entry.class] });
      expect(entry.meaning, code).toMatch(/\S/);
      expect(isServerErrorCode(code)).toBe(true);
    }
    expect(isServerErrorCode('toString')).toBe(false);
    expect(isServerErrorCode('insufficient_credits')).toBe(false);
  });

  it.each([
    [{ message: 'some text', code: 'PT401' }, 401, 'not_authenticated'],
    [{ message: 'some text', code: 'PT404' }, 404, 'not_found'],
    [{ message: 'some text', code: 'PT409' }, 409, 'conflict'],
    [{ message: 'some text', code: 'PT429' }, 429, 'rate_limited'],
    [{ message: 'some text', code: '22023' }, 400, 'invalid_input'],
    [{ message: 'Too many requests' }, 429, 'rate_limited'],
  ] as const)('maps the class SQLSTATE of an unnamed error %o with HTTP %i -> %s', (error, status, code) => {
    expect(errorCodeOf(error, status)).toBe(code);
  });
});

describe('BackendError', () => {
  it('keeps the human text as message and the raw fields alongside', () => {
    const err = BackendError.fromPostgrest(
      { message: 'slug_taken', code: '23505', details: "The slug 'acme' is taken.", hint: null },
      409,
    );
    expect(err).toBeInstanceOf(Error);
    expect(err).toMatchObject({
      name: 'BackendError',
      code: 'slug_taken',
      message: "The slug 'acme' is taken.",
      status: 409,
      sqlstate: '23505',
      details: "The slug 'acme' is taken.",
      hint: null,
    });
    expect(isBackendError(err)).toBe(true);
    expect(isBackendError(err, 'slug_taken', 'invalid_slug')).toBe(true);
    expect(isBackendError(err, 'invalid_slug')).toBe(false);
    expect(isBackendError(new Error('slug_taken'))).toBe(false);
  });

  it('is network_error when the API cannot be reached', async () => {
    // Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    const err = await rejection(
      backendFor(undefined, 'http://127.0.0.1:9').organizations.create({ name: 'x', slug: uniqueSlug() }),
      'network_error',
    );
    expect(err.status).toBe(0);
    expect(err.message).toMatch(/fetch failed/);
  });
});

describe('jwtSubject', () => {
  const encode = (payload: object) =>
    `e30.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.sig`;

  it('reads sub from a JWT, and nothing from tokens without one', () => {
    expect(jwtSubject(encode({ sub: '9f3c6c4e-1111-4a4a-8888-000000000000', role: 'authenticated' }))).toBe(
      '9f3c6c4e-1111-4a4a-8888-000000000000',
    );
    expect(jwtSubject(encode({ role: 'anon' }))).toBeNull();
    expect(jwtSubject(encode({ sub: '' }))).toBeNull();
    expect(jwtSubject('not-a-jwt')).toBeNull();
    expect(jwtSubject('a.!!!.c')).toBeNull();
    expect(jwtSubject(null)).toBeNull();
  });

  it('decodes base64url payloads that need padding and hold non-ASCII text', () => {
    expect(jwtSubject(encode({ sub: 'ü-user', name: 'Zoë' }))).toBe('ü-user');
  });
});
