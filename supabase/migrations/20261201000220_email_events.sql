-- =============================================================================================
-- Email: the outbox consumer that turns domain events into mail, and the email jobs
-- =============================================================================================

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

-- The consumer `email` takes the events that mean mail and enqueues one message per event and
-- recipient (the idempotency key is the event's and the recipient's), in the same transaction as
-- it completes its delivery of the event: each event becomes mail exactly once. The email-dispatch
-- function runs it before sending; later areas add their events to event_types and to the case
-- below.

select private.register_outbox_consumer('email', 'Turns domain events into mail (private.email_from_events).',
  array['member.invited', 'credits.low', 'credits.depleted']);

-- The link base of mail: the frontend's address (setting site_url), without a trailing slash.
create function private.site_url()
returns text
language sql
stable
security definer
set search_path = ''
as $$
  select rtrim(private.setting('site_url') #>> '{}', '/')
$$;
comment on function private.site_url() is 'The frontend''s address mail links point to (setting site_url).';

-- The addresses of an organization's members with one of the roles (credit alerts go to owners,
-- admins and billing members).
create function private.member_emails(p_organization_id uuid, p_roles public.organization_role[])
returns table (email text)
language sql
stable
security definer
set search_path = ''
as $$
  select distinct lower(p.email) from public.organization_members m join public.profiles p on p.id = m.user_id
  where m.organization_id = p_organization_id and m.role = any (p_roles) and p.email is not null
$$;
comment on function private.member_emails(uuid, public.organization_role[]) is 'The email addresses of an organization''s members with one of the roles.';

-- One event's mail.
create function private.enqueue_event_email(p_event private.domain_events)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_organization text := (select name from public.organizations where id = p_event.organization_id);
  v_pool text := p_event.payload ->> 'pool';
  v_pool_name text := coalesce((select name from public.credit_pools where key = v_pool), v_pool);
  v_recipient text;
  v_count integer := 0;
begin
  if p_event.type = 'member.invited' then
    perform private.enqueue_email('organization_invitation', p_event.payload ->> 'email',
      jsonb_build_object(
        'organizationName', v_organization,
        'inviterName', (select coalesce(p.full_name, p.email) from public.profiles p where p.id = (p_event.payload ->> 'invited_by')::uuid),
        'role', p_event.payload ->> 'role',
        'acceptUrl', private.site_url() || '/invitations/accept?token=' || (p_event.payload ->> 'token'),
        'expiresAt', p_event.payload ->> 'expires_at'),
      format('event:%s:%s', p_event.event_id, lower(p_event.payload ->> 'email')), p_event.organization_id);
    return 1;
  end if;
  -- credits.low and credits.depleted: to the organization's owners, admins and billing members.
  if v_organization is null then
    return 0;
  end if;
  for v_recipient in select email from private.member_emails(p_event.organization_id, '{owner,admin,billing}') loop
    perform private.enqueue_email(
      case p_event.type when 'credits.low' then 'low_credits' else 'credits_depleted' end,
      v_recipient,
      jsonb_strip_nulls(jsonb_build_object(
        'organizationName', v_organization, 'pool', v_pool, 'poolName', v_pool_name,
        'available', case when p_event.type = 'credits.low' then (p_event.payload ->> 'available')::bigint end,
        'threshold', case when p_event.type = 'credits.low' then (p_event.payload ->> 'threshold')::bigint end,
        'topUpUrl', private.site_url() || '/billing')),
      format('event:%s:%s', p_event.event_id, v_recipient), p_event.organization_id);
    v_count := v_count + 1;
  end loop;
  return v_count;
end
$$;
comment on function private.enqueue_event_email(private.domain_events) is 'Enqueues the mail one domain event means; returns how many messages.';

-- Claims the consumer's due events and turns each into mail in its own subtransaction, so one
-- bad event fails (and is retried) alone. Returns how many messages it enqueued.
create function private.email_from_events(p_limit integer default 100, p_now timestamptz default now())
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_claimed record;
  v_event private.domain_events;
  v_count integer := 0;
begin
  for v_claimed in select id from private.claim_events('email', p_limit, interval '2 minutes', p_now) loop
    begin
      select * into v_event from private.domain_events where id = v_claimed.id;
      v_count := v_count + private.enqueue_event_email(v_event);
      perform private.complete_event('email', v_claimed.id, p_now);
    exception when others then
      perform private.fail_event('email', v_claimed.id, sqlerrm, null, p_now);
    end;
  end loop;
  return v_count;
end
$$;
comment on function private.email_from_events(integer, timestamptz) is
  'The email consumer: enqueues the mail of due events and completes them, once each.';
grant execute on function private.email_from_events(integer, timestamptz) to service_role;

-- ---------------------------------------------------------------------------------------------
-- Jobs
-- ---------------------------------------------------------------------------------------------
select private.register_job('email-dispatch', '* * * * *', 'http', 'email-dispatch',
  'Turns due domain events into mail and sends due messages (edge function email-dispatch).');
select private.register_job('emails-purge', '11 5 * * *', 'sql', 'private.purge_sent_emails()',
  'Deletes finished messages and webhook receipts older than sent_email_retention.');
