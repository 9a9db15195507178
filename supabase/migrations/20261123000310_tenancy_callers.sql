-- =============================================================================================
-- Tenancy: who is calling, and may they (one set of caller checks for every RPC)
-- =============================================================================================

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

-- Every RPC asks these, and only these, who its caller is and what the caller may do:
--   private.caller_role()         service_role, authenticated or anon (later: an API key, a job)
--   private.require_user()        the signed-in user's id, or not_authenticated
--   private.require_member(org, roles, why)
--                                 the user's role in the organization, or not_authorized
--   private.authorize(org, roles) the service role, or a member with one of the roles
--   private.require_operator()    the service role or a platform admin
--   private.require_service_role()
-- caller_role, require_member and authorize are granted to the API roles (security-invoker RPCs
-- call authorize); the rest run inside security-definer functions. The credits hot path inlines
-- copies of caller_role and authorize for speed; a pgTAP test (tests/db/credits/20-inlined-rules.test.sql)
-- proves the copies agree with these for every role.

insert into private.error_codes (code, class, meaning) values
  ('invalid_organization', 'invalid_input', 'p_organization_id is required.');

-- PostgREST (and the edge functions) switch to the caller's role and set its JWT claims; that
-- switched role wins over the claims, so a session that became `authenticated` is never trusted
-- more, whatever its claims say. A direct database connection that switched to no API role
-- (another backend, a job) is trusted like the service role, since only holders of database
-- credentials can open one.
create function private.caller_role()
returns text
language sql
stable
set search_path = ''
as $$
  select case
    when current_setting('role', true) in ('anon', 'authenticated', 'service_role') then current_setting('role', true)
    else coalesce(nullif(auth.role(), ''), 'service_role')
  end
$$;
comment on function private.caller_role() is 'The caller''s role: the switched API role, else the JWT''s, else service_role (direct connections).';
grant execute on function private.caller_role() to authenticated, service_role;

create function private.require_user()
returns uuid
language plpgsql
stable
set search_path = ''
as $$
declare
  v_user_id uuid := auth.uid();
begin
  if v_user_id is null then
    perform private.raise('not_authenticated', 'Sign in to call this function.');
  end if;
  return v_user_id;
end
$$;
comment on function private.require_user() is 'The current user''s id; raises not_authenticated when there is none.';

-- The calling user's role in an organization. Not a member, or not one of p_roles: not_authorized,
-- with p_why as the detail for the second case. The same answer whether the organization exists
-- or not, so nobody probes other tenants' ids.
create function private.require_member(
  p_organization_id uuid,
  p_roles public.organization_role[] default null,
  p_why text default null
)
returns public.organization_role
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_user_id uuid := private.require_user();
  v_role public.organization_role;
begin
  select role into v_role from public.organization_members
  where organization_id = p_organization_id and user_id = v_user_id;
  if v_role is null then
    perform private.raise('not_authorized', 'You are not a member of this organization.');
  end if;
  if p_roles is not null and not (v_role = any (p_roles)) then
    perform private.raise('not_authorized', coalesce(p_why, format('This needs one of the roles %s.', array_to_string(p_roles, ', '))));
  end if;
  return v_role;
end
$$;
comment on function private.require_member(uuid, public.organization_role[], text) is
  'The calling user''s role in the organization; raises not_authenticated or not_authorized (not a member, or not one of p_roles).';
grant execute on function private.require_member(uuid, public.organization_role[], text) to authenticated, service_role;

-- For RPCs other backends call too: the service role passes; a user must be a member (with one
-- of p_roles, when given). Returns the caller's role.
create function private.authorize(p_organization_id uuid, p_roles public.organization_role[] default null)
returns text
language plpgsql
stable
set search_path = ''
as $$
declare
  v_role text := private.caller_role();
begin
  if p_organization_id is null then
    perform private.raise('invalid_organization', 'p_organization_id is required.');
  end if;
  if v_role = 'service_role' then
    return v_role;
  end if;
  if v_role <> 'authenticated' then
    perform private.raise('not_authorized', 'You are not a member of this organization.');
  end if;
  perform private.require_member(p_organization_id, p_roles);
  return v_role;
end
$$;
comment on function private.authorize(uuid, public.organization_role[]) is
  'Raises unless the caller is the service role or a member of the organization (with one of p_roles); returns the role.';
grant execute on function private.authorize(uuid, public.organization_role[]) to authenticated, service_role;

-- Platform operators and the service role administer across organizations (grants, refunds).
create function private.require_operator()
returns text
language plpgsql
stable
set search_path = ''
as $$
declare
  v_role text := private.caller_role();
begin
  if v_role = 'service_role' or (v_role = 'authenticated' and private.is_platform_admin()) then
    return v_role;
  end if;
  perform private.raise('not_authorized', 'Only the service role and platform admins can do this.');
  return null;
end
$$;
comment on function private.require_operator() is 'Raises not_authorized unless the caller is the service role or a platform admin.';

create function private.require_service_role(p_why text default null)
returns void
language plpgsql
stable
set search_path = ''
as $$
begin
  if private.caller_role() <> 'service_role' then
    perform private.raise('not_authorized', coalesce(p_why, 'Only the service role can do this.'));
  end if;
end
$$;
comment on function private.require_service_role(text) is 'Raises not_authorized unless the caller is the service role.';

create function private.require_organization(p_organization_id uuid)
returns void
language plpgsql
stable
set search_path = ''
as $$
begin
  if not exists (select 1 from public.organizations where id = p_organization_id) then
    perform private.raise('organization_not_found', 'No organization has this id.');
  end if;
end
$$;
comment on function private.require_organization(uuid) is 'Raises organization_not_found for an unknown organization.';

create function private.parse_organization_role(p_role text)
returns public.organization_role
language plpgsql
immutable
set search_path = ''
as $$
begin
  if p_role is null or p_role not in ('owner', 'admin', 'member', 'billing') then
    perform private.raise('invalid_role', format('Role must be one of owner, admin, member, billing (got %L).', p_role));
  end if;
  return p_role::public.organization_role;
end
$$;
comment on function private.parse_organization_role(text) is 'Validates a role name; raises invalid_role.';
