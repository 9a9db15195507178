-- =============================================================================================
-- Tenancy: creating organizations and changing memberships
-- =============================================================================================

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

-- ---------------------------------------------------------------------------------------------
-- create_organization
-- ---------------------------------------------------------------------------------------------
create function private.create_organization(p_name text, p_slug text)
returns uuid
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_user_id uuid := private.require_user();
  v_name text := btrim(p_name);
  v_slug text := lower(btrim(p_slug));
  v_organization_id uuid;
begin
  if v_name is null or char_length(v_name) not between 1 and 200 then
    perform private.raise('invalid_name', 'Name must be 1 to 200 characters.');
  end if;
  if v_slug is null or not private.is_slug(v_slug) then
    perform private.raise('invalid_slug', 'Slug must be 1 to 63 lower-case letters, digits or inner hyphens.');
  end if;

  insert into public.organizations (name, slug, created_by)
  values (v_name, v_slug, v_user_id)
  on conflict (slug) do nothing
  returning id into v_organization_id;
  if v_organization_id is null then
    perform private.raise('slug_taken', format('The slug %L is taken.', v_slug));
  end if;

  insert into public.organization_members (organization_id, user_id, role)
  values (v_organization_id, v_user_id, 'owner');

  perform private.append_domain_event(v_organization_id, 'organization.created',
    jsonb_build_object('organization_id', v_organization_id, 'name', v_name, 'slug', v_slug, 'created_by', v_user_id));
  return v_organization_id;
end
$$;
comment on function private.create_organization(text, text) is 'Creates an organization with the current user as its owner.';
grant execute on function private.create_organization(text, text) to authenticated;

create function public.create_organization(p_name text, p_slug text)
returns uuid
language sql
security invoker
set search_path = ''
as $$
  select private.create_organization(p_name, p_slug)
$$;
comment on function public.create_organization(text, text) is
  'Creates an organization and makes the caller its owner. Errors: not_authenticated, invalid_name, invalid_slug, slug_taken, free_organization_limit.';
grant execute on function public.create_organization(text, text) to authenticated;

-- ---------------------------------------------------------------------------------------------
-- update_member_role, remove_member, leave_organization
-- ---------------------------------------------------------------------------------------------
-- Who may change whom: owners change anyone; admins change admins, members and billing but
-- neither touch owners nor make anyone owner.
create function private.update_member_role(p_organization_id uuid, p_user_id uuid, p_role text)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_caller_id uuid := private.require_user();
  v_caller_role public.organization_role :=
    private.require_member(p_organization_id, '{owner,admin}', 'Only owners and admins can change roles.');
  v_new_role public.organization_role := private.parse_organization_role(p_role);
  v_old_role public.organization_role;
begin
  select role into v_old_role from public.organization_members
  where organization_id = p_organization_id and user_id = p_user_id
  for update;
  if v_old_role is null then
    perform private.raise('member_not_found', 'That user is not a member of this organization.');
  end if;
  if v_caller_role <> 'owner' and ('owner' in (v_old_role, v_new_role)) then
    perform private.raise('not_authorized', 'Only owners can grant or take away the owner role.');
  end if;
  if v_old_role = v_new_role then
    return;
  end if;
  update public.organization_members set role = v_new_role
  where organization_id = p_organization_id and user_id = p_user_id;
  perform private.append_domain_event(p_organization_id, 'member.role_changed',
    jsonb_build_object('user_id', p_user_id, 'old_role', v_old_role, 'new_role', v_new_role, 'changed_by', v_caller_id));
end
$$;
comment on function private.update_member_role(uuid, uuid, text) is 'Changes a member''s role under the rules of the public function.';
grant execute on function private.update_member_role(uuid, uuid, text) to authenticated;

create function public.update_member_role(p_organization_id uuid, p_user_id uuid, p_role text)
returns void
language sql
security invoker
set search_path = ''
as $$
  select private.update_member_role(p_organization_id, p_user_id, p_role)
$$;
comment on function public.update_member_role(uuid, uuid, text) is
  'Changes a member''s role. Owners change anyone; admins cannot touch owners or grant owner. Errors: not_authenticated, not_authorized, invalid_role, member_not_found, last_owner.';
grant execute on function public.update_member_role(uuid, uuid, text) to authenticated;

create function private.remove_member(p_organization_id uuid, p_user_id uuid)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_caller_id uuid := private.require_user();
  v_caller_role public.organization_role :=
    private.require_member(p_organization_id, '{owner,admin}', 'Only owners and admins can remove members.');
  v_role public.organization_role;
begin
  select role into v_role from public.organization_members
  where organization_id = p_organization_id and user_id = p_user_id
  for update;
  if v_role is null then
    perform private.raise('member_not_found', 'That user is not a member of this organization.');
  end if;
  if v_role = 'owner' and v_caller_role <> 'owner' then
    perform private.raise('not_authorized', 'Only owners can remove owners.');
  end if;
  delete from public.organization_members where organization_id = p_organization_id and user_id = p_user_id;
  -- The row lock above makes a concurrent leave wait for us; should the member be gone anyway,
  -- nothing was removed and nothing is announced.
  if not found then
    perform private.raise('member_not_found', 'That user is not a member of this organization.');
  end if;
  perform private.append_domain_event(p_organization_id, 'member.removed',
    jsonb_build_object('user_id', p_user_id, 'role', v_role, 'removed_by', v_caller_id));
end
$$;
comment on function private.remove_member(uuid, uuid) is 'Removes a member under the rules of the public function.';
grant execute on function private.remove_member(uuid, uuid) to authenticated;

create function public.remove_member(p_organization_id uuid, p_user_id uuid)
returns void
language sql
security invoker
set search_path = ''
as $$
  select private.remove_member(p_organization_id, p_user_id)
$$;
comment on function public.remove_member(uuid, uuid) is
  'Removes a member (owners and admins; only owners remove owners; never the last owner). Errors: not_authenticated, not_authorized, member_not_found, last_owner.';
grant execute on function public.remove_member(uuid, uuid) to authenticated;

create function private.leave_organization(p_organization_id uuid)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_user_id uuid := private.require_user();
  v_role public.organization_role := private.require_member(p_organization_id);
begin
  delete from public.organization_members where organization_id = p_organization_id and user_id = v_user_id;
  -- Removed by someone else meanwhile (the delete waited for their commit and found nothing):
  -- that removal wrote its event; this call writes nothing.
  if not found then
    perform private.raise('not_authorized', 'You are not a member of this organization.');
  end if;
  perform private.append_domain_event(p_organization_id, 'member.left',
    jsonb_build_object('user_id', v_user_id, 'role', v_role));
end
$$;
comment on function private.leave_organization(uuid) is 'Removes the current user from an organization.';
grant execute on function private.leave_organization(uuid) to authenticated;

create function public.leave_organization(p_organization_id uuid)
returns void
language sql
security invoker
set search_path = ''
as $$
  select private.leave_organization(p_organization_id)
$$;
comment on function public.leave_organization(uuid) is
  'The caller leaves the organization (the last owner cannot). Errors: not_authenticated, not_authorized, last_owner.';
grant execute on function public.leave_organization(uuid) to authenticated;
