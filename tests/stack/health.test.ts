import { describe, expect, it } from 'vitest';
import { apiUrl } from '../support/clients.ts';

describe('health', () => {
  it('answers 200 with every check ok, without authentication', async () => {
    const res = await fetch(`${apiUrl}/functions/v1/health`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: 'ok', checks: { database: 'ok', rest: 'ok', functions: 'ok' } });
    expect(res.headers.get('access-control-allow-origin')).toBe('*');
  });

  it('echoes a plain x-request-id and makes one up otherwise', async () => {
    const given = await fetch(`${apiUrl}/functions/v1/health`, { headers: { 'x-request-id': 'req-123' } });
    expect(given.headers.get('x-request-id')).toBe('req-123');
    const made = await fetch(`${apiUrl}/functions/v1/health`, { headers: { 'x-request-id': 'bad id\twith spaces' } });
    expect(made.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
  });
});
