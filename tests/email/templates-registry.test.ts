// The two halves of the template registry agree: what the database knows of each template (its
// category and whether it is required: private.email_templates, which decides at claim time) and
// the rendering side (functions/_shared/emails).
import { describe, expect, it } from 'vitest';
import { EMAIL_TEMPLATES } from '../../functions/_shared/emails/index.ts';
import { sql } from '../support/db.ts';

describe('the template registry', () => {
  it('lists the same templates, categories and required flags in SQL and in the renderer', async () => {
    const rows = await sql<{ name: string; category: string; required: boolean }[]>`
      select name, category::text as category, required from private.email_templates order by name`;
    const rendered = Object.entries(EMAIL_TEMPLATES)
      .map(([name, t]) => ({ name, category: t.category, required: t.required }))
      .sort((a, b) => a.name.localeCompare(b.name));
    expect(rows.map((r) => ({ ...r }))).toEqual(rendered);
  });

  it('knows the same categories', async () => {
    const [{ labels }] = await sql<{ labels: string[] }[]>`select enum_range(null::public.email_category)::text[] as labels`;
    const { EMAIL_CATEGORIES } = await import('../../functions/_shared/emails/index.ts');
    expect(labels).toEqual([...EMAIL_CATEGORIES]);
  });
});
