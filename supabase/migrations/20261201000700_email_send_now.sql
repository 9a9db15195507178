-- =============================================================================================
-- Email: sending a given message now (the Send Email Hook's mail, awaited by a person)
-- =============================================================================================

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

-- The Send Email Hook sends its mail at once, but claiming "the next due messages" served it
-- after every message other work had queued (a busy outbox kept a sign-up waiting for the
-- scheduled run). claim_emails takes the messages to claim, so the hook claims exactly its own.
drop function private.claim_emails(integer, interval, timestamptz);
create function private.claim_emails(
  p_limit integer default 20,
  p_lease interval default interval '2 minutes',
  p_now timestamptz default now(),
  p_ids uuid[] default null
)
returns table (
  id uuid, organization_id uuid, recipient text, user_id uuid, template text, props jsonb,
  category public.email_category, required boolean, attempts integer, created_at timestamptz
)
language plpgsql
security definer
set search_path = ''
as $$
#variable_conflict use_column
begin
  -- A message a dispatcher may not send is marked suppressed here, not claimed. A message left
  -- sending by a dispatcher whose lease ran out (it crashed) is due again.
  return query
    with due as (
      select m.id from private.email_messages m
      where m.next_attempt_at <= p_now
        and (m.status = 'queued' or (m.status = 'sending' and m.claimed_until <= p_now))
        and (p_ids is null or m.id = any (p_ids))
      order by m.next_attempt_at, m.id
      limit least(greatest(p_limit, 1), 500)
      for update skip locked
    ), judged as (
      select m.id, t.category, t.required, private.email_allowed(m.recipient, m.user_id, t.category, t.required) as allowed
      from due join private.email_messages m on m.id = due.id join private.email_templates t on t.name = m.template
    ), suppressed as (
      update private.email_messages m
      set status = 'suppressed', claimed_until = null, last_error = 'not sent: unsubscribed or suppressed'
      from judged where m.id = judged.id and not judged.allowed
    ), claimed as (
      update private.email_messages m
      set status = 'sending', claimed_until = p_now + p_lease, attempts = m.attempts + 1
      from judged where m.id = judged.id and judged.allowed
      returning m.id, m.organization_id, m.recipient, m.user_id, m.template, m.props, judged.category, judged.required,
                m.attempts, m.created_at, m.next_attempt_at
    )
    select c.id, c.organization_id, c.recipient, c.user_id, c.template, c.props, c.category, c.required, c.attempts, c.created_at
    from claimed c
    order by c.next_attempt_at, c.id;
end
$$;
comment on function private.claim_emails(integer, interval, timestamptz, uuid[]) is
  'Claims up to p_limit due messages (only p_ids, when given) for one dispatcher, leased for p_lease; marks the ones that may not go suppressed.';
grant execute on function private.claim_emails(integer, interval, timestamptz, uuid[]) to service_role;
