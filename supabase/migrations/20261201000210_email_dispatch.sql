-- =============================================================================================
-- Email: enqueuing, claiming and settling messages; delivery events; unsubscribing; cleanup
-- =============================================================================================

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

-- ---------------------------------------------------------------------------------------------
-- Enqueuing
-- ---------------------------------------------------------------------------------------------
create function private.enqueue_email(
  p_template text,
  p_recipient text,
  p_props jsonb,
  p_idempotency_key text,
  p_organization_id uuid default null
)
returns uuid
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_recipient text := lower(btrim(p_recipient));
  v_id uuid;
begin
  if not exists (select 1 from private.email_templates where name = p_template) then
    perform private.raise('unknown_template', format('No email template %L.', p_template));
  end if;
  if v_recipient is null or not private.is_email(v_recipient) then
    perform private.raise('invalid_recipient', format('%L is not an email address.', p_recipient));
  end if;
  if p_props is null or jsonb_typeof(p_props) <> 'object' or octet_length(p_props::text) > 65536 then
    perform private.raise('invalid_props', 'Template props are a JSON object of at most 64 KB.');
  end if;
  -- Any text: callers key mail by what causes it (an event and a recipient, a webhook id).
  if p_idempotency_key is null or char_length(p_idempotency_key) not between 1 and 255 then
    perform private.raise('invalid_idempotency_key', 'Every message needs an idempotency key of 1 to 255 characters.');
  end if;

  insert into private.email_messages (organization_id, recipient, user_id, template, props, idempotency_key)
  values (p_organization_id, v_recipient,
          (select u.id from auth.users u where lower(u.email) = v_recipient order by u.created_at limit 1),
          p_template, p_props, p_idempotency_key)
  on conflict (idempotency_key) do nothing
  returning id into v_id;
  if v_id is null then
    select id into v_id from private.email_messages where idempotency_key = p_idempotency_key;
  end if;
  return v_id;
end
$$;
comment on function private.enqueue_email(text, text, jsonb, text, uuid) is
  'Queues a message in the caller''s transaction; the same idempotency key returns the same message.';
grant execute on function private.enqueue_email(text, text, jsonb, text, uuid) to service_role;

-- ---------------------------------------------------------------------------------------------
-- Claiming: due messages, after preferences and suppressions
-- ---------------------------------------------------------------------------------------------
-- Whether a message may go: required mail always; other mail unless its recipient turned its
-- category off, or the address is suppressed for it (or for everything).
create function private.email_allowed(p_recipient text, p_user_id uuid, p_category public.email_category, p_required boolean)
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select p_required or (
    not exists (select 1 from public.email_preferences p
                where p.user_id = p_user_id and p.category = p_category and not p.subscribed)
    and not exists (select 1 from private.email_suppressions s
                    where s.email = p_recipient and (s.category is null or s.category = p_category)))
$$;
comment on function private.email_allowed(text, uuid, public.email_category, boolean) is
  'Whether a message may be sent: required, or neither unsubscribed nor suppressed.';

create function private.claim_emails(
  p_limit integer default 20,
  p_lease interval default interval '2 minutes',
  p_now timestamptz default now()
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
comment on function private.claim_emails(integer, interval, timestamptz) is
  'Claims up to p_limit due messages for one dispatcher, leased for p_lease; marks the ones that may not go suppressed.';
grant execute on function private.claim_emails(integer, interval, timestamptz) to service_role;

create function private.mark_email_sent(p_id uuid, p_provider text, p_provider_message_id text, p_now timestamptz default now())
returns boolean
language sql
security definer
set search_path = ''
as $$
  with sent as (
    update private.email_messages
    set status = 'sent', sent_at = p_now, claimed_until = null, last_error = null,
        provider = p_provider, provider_message_id = p_provider_message_id
    where id = p_id and status = 'sending'
    returning 1
  )
  select exists (select 1 from sent)
$$;
comment on function private.mark_email_sent(uuid, text, text, timestamptz) is 'Records that the provider accepted a claimed message.';
grant execute on function private.mark_email_sent(uuid, text, text, timestamptz) to service_role;

-- Temporary failures back off exponentially from 30 seconds to an hour, with up to 25% jitter,
-- or wait what the provider asked (Retry-After) when that is longer; permanent ones fail at once.
create function private.fail_email(
  p_id uuid,
  p_error text,
  p_permanent boolean default false,
  p_retry_after interval default null,
  p_now timestamptz default now()
)
returns private.email_status
language sql
security definer
set search_path = ''
as $$
  update private.email_messages m
  set claimed_until = null,
      last_error = left(p_error, 2000),
      status = case
        when p_permanent then 'failed'
        when m.attempts >= (private.setting('email_max_attempts') #>> '{}')::integer then 'dead'
        else 'queued' end::private.email_status,
      next_attempt_at = p_now + greatest(coalesce(p_retry_after, interval '0'),
        least(interval '1 hour', interval '30 seconds' * power(2, greatest(m.attempts - 1, 0))) * (1 + random() * 0.25))
  where m.id = p_id and m.status = 'sending'
  returning m.status
$$;
comment on function private.fail_email(uuid, text, boolean, interval, timestamptz) is
  'Records a failed send: queued again after a backoff, failed (permanent), or dead (out of attempts).';
grant execute on function private.fail_email(uuid, text, boolean, interval, timestamptz) to service_role;

create function private.requeue_email(p_id uuid, p_now timestamptz default now())
returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
  update private.email_messages
  set status = 'queued', attempts = 0, next_attempt_at = p_now, claimed_until = null
  where id = p_id and status in ('failed', 'dead');
  if not found then
    if not exists (select 1 from private.email_messages where id = p_id) then
      perform private.raise('message_not_found', 'No email message has this id.');
    end if;
    perform private.raise('not_requeueable', 'Only failed and dead messages can be requeued.');
  end if;
end
$$;
comment on function private.requeue_email(uuid, timestamptz) is 'An operator sends a failed or dead message again.';
grant execute on function private.requeue_email(uuid, timestamptz) to service_role;

insert into private.error_codes (code, class, meaning) values
  ('not_requeueable', 'conflict', 'Only failed and dead messages can be requeued.');

-- ---------------------------------------------------------------------------------------------
-- What the provider reports afterwards (Resend's webhooks)
-- ---------------------------------------------------------------------------------------------
-- True the first time a signed delivery with this id arrives; false for a replay.
create function private.receive_webhook(p_source text, p_receipt_id text)
returns boolean
language sql
security definer
set search_path = ''
as $$
  with fresh as (
    insert into private.webhook_receipts (source, receipt_id) values (p_source, p_receipt_id)
    on conflict do nothing
    returning 1
  )
  select exists (select 1 from fresh)
$$;
comment on function private.receive_webhook(text, text) is 'Records a webhook delivery''s id; false when it arrived before (a replay).';
grant execute on function private.receive_webhook(text, text) to service_role;

-- A delivery event for a sent message: delivered; bounced (a permanent bounce suppresses the
-- address for non-required mail); complained (suppresses it too). Events for messages we do not
-- know are ignored (false).
create function private.record_email_event(
  p_provider_message_id text, p_event text, p_permanent_bounce boolean default true, p_now timestamptz default now()
)
returns boolean
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_recipient text;
begin
  select recipient into v_recipient from private.email_messages where provider_message_id = p_provider_message_id;
  if v_recipient is null then
    return false;
  end if;
  if p_event = 'delivered' then
    update private.email_messages set status = 'delivered', delivered_at = p_now
    where provider_message_id = p_provider_message_id and status = 'sent';
  elsif p_event = 'bounced' then
    update private.email_messages set status = 'bounced', last_error = 'bounced'
    where provider_message_id = p_provider_message_id and status in ('sent', 'delivered');
    if p_permanent_bounce then
      insert into private.email_suppressions (email, category, reason) values (v_recipient, null, 'hard_bounce')
      on conflict (email, category) do nothing;
    end if;
  elsif p_event = 'complained' then
    update private.email_messages set status = 'complained'
    where provider_message_id = p_provider_message_id;
    insert into private.email_suppressions (email, category, reason) values (v_recipient, null, 'complaint')
    on conflict (email, category) do nothing;
  end if;
  return true;
end
$$;
comment on function private.record_email_event(text, text, boolean, timestamptz) is
  'Records a provider''s delivered, bounced or complained event; bounces and complaints suppress the address.';
grant execute on function private.record_email_event(text, text, boolean, timestamptz) to service_role;

-- ---------------------------------------------------------------------------------------------
-- Unsubscribing (the one-click link; the token is checked by the email-unsubscribe function)
-- ---------------------------------------------------------------------------------------------
-- A user's preference when the address belongs to one (they see it in their settings), else a
-- suppression of the address for the category.
create function private.unsubscribe_email(p_email text, p_category public.email_category)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_email text := lower(btrim(p_email));
  v_user uuid;
begin
  select id into v_user from auth.users where lower(email) = v_email order by created_at limit 1;
  if v_user is not null then
    insert into public.email_preferences (user_id, category, subscribed) values (v_user, p_category, false)
    on conflict (user_id, category) do update set subscribed = false;
  else
    insert into private.email_suppressions (email, category, reason) values (v_email, p_category, 'unsubscribed')
    on conflict (email, category) do nothing;
  end if;
end
$$;
comment on function private.unsubscribe_email(text, public.email_category) is
  'Turns a category of non-required mail off for an address: its user''s preference, or a suppression.';
grant execute on function private.unsubscribe_email(text, public.email_category) to service_role;

-- ---------------------------------------------------------------------------------------------
-- Cleanup: finished messages (they hold personal data) and old webhook receipts
-- ---------------------------------------------------------------------------------------------
create function private.purge_sent_emails(p_now timestamptz default now())
returns bigint
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_deleted bigint;
  v_before timestamptz := p_now - (private.setting('sent_email_retention') #>> '{}')::interval;
begin
  delete from private.email_messages
  where status not in ('queued', 'sending') and created_at < v_before;
  get diagnostics v_deleted = row_count;
  delete from private.webhook_receipts where received_at < v_before;
  return v_deleted;
end
$$;
comment on function private.purge_sent_emails(timestamptz) is
  'Deletes finished messages and webhook receipts older than sent_email_retention.';
grant execute on function private.purge_sent_emails(timestamptz) to service_role;
