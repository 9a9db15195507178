-- =============================================================================================
-- Tenancy: every API request of a signed-in user is checked against Auth's own records
-- =============================================================================================

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

-- An access token stays valid until it expires (an hour), whatever happens to its user or its
-- session meanwhile. PostgREST calls this function before every request (its db-pre-request,
-- set on the authenticator role below), and the edge functions before every query they run as a
-- user (functions/_shared/db.ts), so a token is refused at once when its user was deleted or
-- banned, or its session signed out (auth.sessions has no row for its session_id): what
-- signOut and deleting a user promise. Tokens without a session_id (none that Auth issues) are
-- checked for their user only. Anonymous and service-role requests pass untouched.

insert into private.error_codes (code, class, meaning) values
  ('session_ended', 'not_authenticated', 'The access token''s session or user is gone (signed out, deleted or banned): sign in again.');

-- The check itself: security definer, since only Auth's roles read auth.users and auth.sessions.
create function private.check_session()
returns void
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_claims jsonb := nullif(current_setting('request.jwt.claims', true), '')::jsonb;
  v_user_id uuid;
  v_session_id uuid;
begin
  if v_claims is null or v_claims ->> 'role' is distinct from 'authenticated' then
    return;
  end if;
  begin
    v_user_id := (v_claims ->> 'sub')::uuid;
    v_session_id := (v_claims ->> 'session_id')::uuid;
  exception when invalid_text_representation then
    perform private.raise('session_ended', 'The token names no valid user or session.');
  end;
  if v_user_id is null or not exists (
    select 1 from auth.users u
    where u.id = v_user_id and u.deleted_at is null and (u.banned_until is null or u.banned_until <= now())
  ) then
    perform private.raise('session_ended', 'The user of this token no longer exists or is banned.');
  end if;
  if v_session_id is not null and not exists (
    select 1 from auth.sessions s
    where s.id = v_session_id and s.user_id = v_user_id and (s.not_after is null or s.not_after > now())
  ) then
    perform private.raise('session_ended', 'This session was signed out.');
  end if;
end
$$;
comment on function private.check_session() is
  'Raises session_ended unless the signed-in caller''s user exists (not banned) and their token''s session is live.';
grant execute on function private.check_session() to authenticated;

-- What PostgREST calls: in public, because it runs for anonymous requests too and anon has no
-- business in the private schema; it reaches private only for signed-in callers. Calling it as
-- an RPC does nothing but the same check.
create function public.check_request()
returns void
language plpgsql
stable
security invoker
set search_path = ''
as $$
begin
  if current_user = 'authenticated' then
    perform private.check_session();
  end if;
end
$$;
comment on function public.check_request() is
  'PostgREST''s pre-request hook: refuses a signed-in user''s request once their user is deleted or banned, or their session signed out.';
grant execute on function public.check_request() to anon, authenticated, service_role;

-- PostgREST reads its settings from the authenticator role (in-database configuration); the
-- notification makes a running PostgREST pick the setting up without a restart.
alter role authenticator set pgrst.db_pre_request = 'public.check_request';
notify pgrst, 'reload config';
