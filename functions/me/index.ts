// GET or POST /functions/v1/me: the caller's profile and the organizations they belong to, read as
// the caller so RLS decides what is visible. POST too because supabase-js `functions.invoke('me')`
// posts unless told otherwise; the function reads no body.
import { requireUser } from '../_shared/auth.ts';
import { withUser } from '../_shared/db.ts';
import { HttpError } from '../_shared/errors.ts';
import { createHandler, json } from '../_shared/handler.ts';

interface Profile {
  id: string;
  email: string | null;
  full_name: string | null;
  avatar_url: string | null;
  created_at: Date;
  updated_at: Date;
}

interface Membership {
  id: string;
  name: string;
  slug: string;
  role: string;
}

export const handler = createHandler(async (req) => {
  const claims = await requireUser(req);

  const { profile, organizations } = await withUser(claims, async (tx) => {
    const [profile] = await tx<Profile[]>`
      select id, email, full_name, avatar_url, created_at, updated_at
      from public.profiles
      where id = ${claims.sub}`;
    const organizations = await tx<Membership[]>`
      select o.id, o.name, o.slug, m.role::text as role
      from public.organization_members m
      join public.organizations o on o.id = m.organization_id
      where m.user_id = ${claims.sub}
      order by o.name, o.id`;
    return { profile, organizations: [...organizations] };
  });

  if (!profile) throw new HttpError(404, 'profile_not_found', 'No profile exists for this user');
  return json({ user: profile, organizations });
}, { name: 'me', methods: ['GET', 'POST'] });

if (import.meta.main) Deno.serve(handler);
