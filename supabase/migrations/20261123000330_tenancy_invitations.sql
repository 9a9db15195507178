-- =============================================================================================
-- Tenancy: invitations
-- =============================================================================================

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

insert into private.error_codes (code, class, meaning) values
  ('invalid_email', 'invalid_input', 'Not an email address (at most 320 characters).'),
  ('invalid_expiry', 'invalid_input', 'The expiry is out of range.'),
  ('already_member', 'conflict', 'That email already belongs to a member.'),
  ('invitation_not_found', 'not_found', 'No invitation matches this token.'),
  ('invitation_already_accepted', 'rule', 'The invitation has been used.'),
  ('invitation_expired', 'rule', 'The invitation has expired: ask for a new one.'),
  ('invitation_email_mismatch', 'not_authorized', 'The invitation was sent to another email address.');

insert into private.settings (key, value, description) values
  ('invitations_per_email_per_hour', '3', 'Invitations (and re-sends) an organization may send one address per hour.'),
  ('invitations_per_inviter_per_hour', '50', 'Invitations one user may send per hour, across organizations.');

-- The email rule, once: the table's check and invite_member both ask it.
create function private.is_email(p_email text)
returns boolean
language sql
immutable
set search_path = ''
as $$
  select p_email ~ '^[^@\s]+@[^@\s]+\.[^@\s]+$' and char_length(p_email) <= 320
$$;
comment on function private.is_email(text) is 'Whether a text looks like an email address (and is at most 320 characters).';
grant execute on function private.is_email(text) to authenticated, service_role;

create table public.organization_invitations (
  id uuid primary key default gen_random_uuid(),
  organization_id uuid not null references public.organizations (id) on delete cascade,
  email text not null check (email = lower(email) and private.is_email(email)),
  role public.organization_role not null default 'member',
  token_hash text not null unique check (token_hash ~ '^[0-9a-f]{64}$'),
  invited_by uuid references auth.users (id) on delete set null,
  expires_at timestamptz not null,
  accepted_at timestamptz,
  accepted_by uuid references auth.users (id) on delete set null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table public.organization_invitations is 'Invitations to join an organization. The token is sent to the invitee and stored here only as a SHA-256 hash.';
comment on column public.organization_invitations.id is 'The invitation''s id.';
comment on column public.organization_invitations.organization_id is 'The organization the invitee joins.';
comment on column public.organization_invitations.email is 'The invitee''s email, lower-case; only a user with this email can accept.';
comment on column public.organization_invitations.role is 'The role the invitee gets on accepting.';
comment on column public.organization_invitations.token_hash is 'Hex SHA-256 of the invitation token; the token itself is never stored.';
comment on column public.organization_invitations.invited_by is 'Who sent the invitation.';
comment on column public.organization_invitations.expires_at is 'After this time the invitation can no longer be accepted.';
comment on column public.organization_invitations.accepted_at is 'When the invitation was accepted; null while pending.';
comment on column public.organization_invitations.accepted_by is 'The user who accepted it.';
comment on column public.organization_invitations.created_at is 'When the invitation was first sent.';
comment on column public.organization_invitations.updated_at is 'When it was last re-sent or accepted.';

-- Owners and admins read and revoke (delete) invitations; sending and accepting are RPCs, since
-- only they make and check the token.
grant select, delete on public.organization_invitations to authenticated;
grant select, delete on public.organization_invitations to service_role;
alter table public.organization_invitations enable row level security;

-- One pending invitation per (organization, email); inviting again re-sends it.
create unique index organization_invitations_one_pending_idx
  on public.organization_invitations (organization_id, email) where accepted_at is null;
create index organization_invitations_organization_id_idx on public.organization_invitations (organization_id, created_at desc);
create index organization_invitations_invited_by_idx on public.organization_invitations (invited_by);
create index organization_invitations_accepted_by_idx on public.organization_invitations (accepted_by);

create trigger organization_invitations_set_updated_at
before update on public.organization_invitations
for each row execute function private.set_updated_at();

-- ---------------------------------------------------------------------------------------------
-- Row-level security
-- ---------------------------------------------------------------------------------------------
create policy "Owners and admins can read their organization's invitations"
on public.organization_invitations for select to authenticated
using (organization_id in (select private.organization_ids_with_role('{owner,admin}')));

create policy "Owners and admins can revoke pending invitations"
on public.organization_invitations for delete to authenticated
using (accepted_at is null and organization_id in (select private.organization_ids_with_role('{owner,admin}')));

-- ---------------------------------------------------------------------------------------------
-- invite_member
-- ---------------------------------------------------------------------------------------------
create function private.invite_member(
  p_organization_id uuid,
  p_email text,
  p_role text default 'member',
  p_expires_in interval default interval '7 days'
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_user_id uuid := private.require_user();
  v_caller_role public.organization_role :=
    private.require_member(p_organization_id, '{owner,admin}', 'Only owners and admins can invite members.');
  v_role public.organization_role := private.parse_organization_role(p_role);
  v_email text := lower(btrim(p_email));
  v_token text := encode(extensions.gen_random_bytes(32), 'hex');
  v_expires_at timestamptz;
  v_invitation_id uuid;
begin
  if v_role = 'owner' and v_caller_role <> 'owner' then
    perform private.raise('not_authorized', 'Only owners can invite owners.');
  end if;
  if v_email is null or not private.is_email(v_email) then
    perform private.raise('invalid_email', format('%L is not an email address.', p_email));
  end if;
  if p_expires_in is null or p_expires_in < interval '1 minute' or p_expires_in > interval '30 days' then
    perform private.raise('invalid_expiry', 'An invitation expires after 1 minute to 30 days.');
  end if;
  if exists (
    select 1 from public.organization_members m join public.profiles p on p.id = m.user_id
    where m.organization_id = p_organization_id and lower(p.email) = v_email
  ) then
    perform private.raise('already_member', format('%s is already a member.', v_email));
  end if;

  -- Every invitation becomes a mail: throttled per address and per inviter, so nobody can
  -- mail-bomb an address with an organization name of their choosing.
  perform private.hit_rate_limit('invitation_email', p_organization_id::text || ':' || v_email,
    (private.setting('invitations_per_email_per_hour') #>> '{}')::integer, interval '1 hour');
  perform private.hit_rate_limit('invitation_inviter', v_user_id::text,
    (private.setting('invitations_per_inviter_per_hour') #>> '{}')::integer, interval '1 hour');

  v_expires_at := now() + p_expires_in;
  -- Inviting the same email again re-sends the pending invitation with a fresh token.
  insert into public.organization_invitations (organization_id, email, role, token_hash, invited_by, expires_at)
  values (p_organization_id, v_email, v_role, encode(sha256(convert_to(v_token, 'UTF8')), 'hex'), v_user_id, v_expires_at)
  on conflict (organization_id, email) where accepted_at is null do update
    set role = excluded.role, token_hash = excluded.token_hash, invited_by = excluded.invited_by, expires_at = excluded.expires_at
  returning id into v_invitation_id;

  -- The token travels in the event for the email that delivers it; the outbox is private.
  perform private.append_domain_event(p_organization_id, 'member.invited',
    jsonb_build_object('invitation_id', v_invitation_id, 'email', v_email, 'role', v_role,
                       'token', v_token, 'expires_at', v_expires_at, 'invited_by', v_user_id));

  return jsonb_build_object('invitation_id', v_invitation_id, 'email', v_email, 'role', v_role,
                            'token', v_token, 'expires_at', v_expires_at);
end
$$;
comment on function private.invite_member(uuid, text, text, interval) is
  'Creates (or re-sends) an invitation; returns its id and the one-time token.';
grant execute on function private.invite_member(uuid, text, text, interval) to authenticated;

create function public.invite_member(p_organization_id uuid, p_email text, p_role text default 'member')
returns jsonb
language sql
security invoker
set search_path = ''
as $$
  select private.invite_member(p_organization_id, p_email, p_role)
$$;
comment on function public.invite_member(uuid, text, text) is
  'Invites an email to the organization (owners and admins; only owners invite owners). Returns {invitation_id, email, role, token, expires_at}; the token is shown once. Sends are limited per address and per inviter each hour. Errors: not_authenticated, not_authorized, invalid_role, invalid_email, already_member, rate_limited.';
grant execute on function public.invite_member(uuid, text, text) to authenticated;

-- ---------------------------------------------------------------------------------------------
-- accept_invitation
-- ---------------------------------------------------------------------------------------------
-- No p_now here: authenticated may execute this function, and a caller-chosen clock would
-- let an expired invitation through. Tests move expires_at instead.
create function private.accept_invitation(p_token text)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_user_id uuid := private.require_user();
  v_email text;
  v_invitation public.organization_invitations;
  v_role public.organization_role;
begin
  if p_token is null or p_token !~ '^[0-9a-f]{64}$' then
    perform private.raise('invitation_not_found', 'No invitation matches this token.');
  end if;
  select * into v_invitation from public.organization_invitations
  where token_hash = encode(sha256(convert_to(p_token, 'UTF8')), 'hex')
  for update;
  if not found then
    perform private.raise('invitation_not_found', 'No invitation matches this token.');
  end if;
  if v_invitation.accepted_at is not null then
    perform private.raise('invitation_already_accepted', 'This invitation has been used.');
  end if;
  if v_invitation.expires_at <= now() then
    perform private.raise('invitation_expired', 'This invitation has expired: ask for a new one.');
  end if;
  select lower(email) into v_email from auth.users where id = v_user_id;
  if v_email is distinct from v_invitation.email then
    perform private.raise('invitation_email_mismatch', 'This invitation was sent to another email address.');
  end if;

  insert into public.organization_members (organization_id, user_id, role, invited_by)
  values (v_invitation.organization_id, v_user_id, v_invitation.role, v_invitation.invited_by)
  on conflict (organization_id, user_id) do nothing;
  if found then
    perform private.append_domain_event(v_invitation.organization_id, 'member.joined',
      jsonb_build_object('user_id', v_user_id, 'role', v_invitation.role, 'invitation_id', v_invitation.id));
  end if;
  -- Already a member (joined another way): the invitation is used up, the role stays as it is.
  select role into v_role from public.organization_members
  where organization_id = v_invitation.organization_id and user_id = v_user_id;

  update public.organization_invitations set accepted_at = now(), accepted_by = v_user_id where id = v_invitation.id;
  return jsonb_build_object('organization_id', v_invitation.organization_id, 'role', v_role);
end
$$;
comment on function private.accept_invitation(text) is 'Accepts an invitation for the current user.';
grant execute on function private.accept_invitation(text) to authenticated;

create function public.accept_invitation(p_token text)
returns jsonb
language sql
security invoker
set search_path = ''
as $$
  select private.accept_invitation(p_token)
$$;
comment on function public.accept_invitation(text) is
  'Joins the organization of an invitation sent to the caller''s email. Returns {organization_id, role}. Errors: not_authenticated, invitation_not_found, invitation_already_accepted, invitation_expired, invitation_email_mismatch.';
grant execute on function public.accept_invitation(text) to authenticated;

