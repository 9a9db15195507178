// The edge functions answer with codes of the one error catalogue: every code an HttpError in
// functions/ names is catalogued (but the few protocol answers no class fits), and every code
// the catalogue says the functions raise is raised by one of them.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../../scripts/lib/config.mjs';
import { ERROR_CATALOGUE } from '../../functions/_shared/error-codes.ts';
import { sql } from '../support/db.ts';

// HTTP-level answers with no class of the catalogue (405, 413, 500), and `conflict`, which the
// SDK knows as a generic code.
const PROTOCOL_CODES = ['method_not_allowed', 'payload_too_large', 'internal_error', 'conflict'];

function functionSources(): string {
  const dir = path.join(ROOT, 'functions');
  return (fs.readdirSync(dir, { recursive: true }) as string[])
    .filter((f) => f.endsWith('.ts') && !f.endsWith('error-codes.ts'))
    .map((f) => fs.readFileSync(path.join(dir, f), 'utf8'))
    .join('\n');
}

describe('the functions\' error codes', () => {
  const source = functionSources();
  const named = [...new Set([...source.matchAll(/HttpError\(\s*\d{3},\s*'([a-z_]+)'/g)].map((m) => m[1]))];

  it('are found in the sources (the check reads real code)', () => {
    expect(named).toEqual(expect.arrayContaining(['invalid_request', 'user_required', 'content_type_mismatch']));
  });

  it('are all in the catalogue, with the status of their class', () => {
    const answered = [...source.matchAll(/HttpError\(\s*(\d{3}),\s*'([a-z_]+)'/g)].map((m) => ({ status: Number(m[1]), code: m[2] }));
    for (const { status, code } of answered) {
      if (PROTOCOL_CODES.includes(code)) continue;
      expect(Object.hasOwn(ERROR_CATALOGUE, code), `${code} is not in the catalogue`).toBe(true);
      expect({ code, status }).toEqual({ code, status: ERROR_CATALOGUE[code as keyof typeof ERROR_CATALOGUE].status });
    }
  });

  it('the catalogue marks as raised by functions only codes some function raises', async () => {
    const rows = await sql<{ code: string }[]>`select code from private.error_codes where raised_by = 'functions' order by code`;
    expect(rows.length).toBeGreaterThan(5);
    for (const { code } of rows) expect(source, `${code} is raised by no function`).toContain(`'${code}'`);
  });
});
