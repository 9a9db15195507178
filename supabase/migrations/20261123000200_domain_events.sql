-- =============================================================================================
-- Domain events: an append-only outbox
-- =============================================================================================

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

-- Business changes append an event in the same transaction as the change itself; consumers
-- (email, outbound webhooks) claim batches, process them, and mark them processed or failed.
-- The table is private: payloads may carry secrets meant for one consumer (an invitation token
-- for the email that delivers it), so no client role reads it.
--
-- organization_id has no foreign key on purpose: an event is history and must outlive what it
-- describes (`organization.deleted`). The purge machinery removes an organization's events.

create table private.domain_events (
  id bigint generated always as identity primary key,
  event_id uuid not null default gen_random_uuid() unique,
  organization_id uuid,
  type text not null check (type ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$'),
  payload jsonb not null default '{}'::jsonb check (jsonb_typeof(payload) = 'object'),
  actor_id uuid,
  created_at timestamptz not null default now(),
  -- Delivery state, the only columns that change after the insert.
  available_at timestamptz not null default now(),
  claimed_at timestamptz,
  claimed_by text,
  attempts integer not null default 0 check (attempts >= 0),
  processed_at timestamptz,
  last_error text
);

comment on table private.domain_events is
  'Append-only outbox of business events (member.invited, credits.low, ...). Appended with private.append_domain_event, consumed with private.claim_domain_events.';
comment on column private.domain_events.id is 'Monotonic position in the outbox; consumers process in this order.';
comment on column private.domain_events.event_id is 'Stable public identifier of the event (idempotency key for consumers and webhook receivers).';
comment on column private.domain_events.organization_id is 'The organization the event belongs to; null for platform events. No foreign key: events outlive their subject.';
comment on column private.domain_events.type is 'Dotted event type, e.g. member.invited.';
comment on column private.domain_events.payload is 'Event data as a JSON object.';
comment on column private.domain_events.actor_id is 'The user whose action caused the event (auth.uid() at append time), if any.';
comment on column private.domain_events.available_at is 'Not claimable before this time (used for retry back-off).';
comment on column private.domain_events.claimed_at is 'When a consumer last claimed the event; a claim older than the lease may be taken over.';
comment on column private.domain_events.claimed_by is 'Name of the consumer holding the claim.';
comment on column private.domain_events.attempts is 'How many times the event has been claimed.';
comment on column private.domain_events.processed_at is 'When the event was processed; null while pending.';
comment on column private.domain_events.last_error is 'The last failure reported by a consumer.';

create index domain_events_pending_idx on private.domain_events (available_at, id) where processed_at is null;
create index domain_events_organization_id_idx on private.domain_events (organization_id, id);

alter table private.domain_events enable row level security;
-- No policies: only the owner (postgres, through security-definer functions) and service_role
-- (bypassing RLS) touch it.
grant select, insert, update, delete on private.domain_events to service_role;

-- Append-only: the event itself never changes; only delivery state does. Deletes are the purge
-- machinery's, which says so with a transaction-local setting.
create function private.guard_domain_events()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if tg_op = 'DELETE' then
    if coalesce(current_setting('private.allow_purge', true), '') <> 'on' then
      raise exception using errcode = '42501', message = 'append_only',
        detail = 'domain_events rows are deleted only by private.purge_domain_events';
    end if;
    return old;
  end if;
  if (new.id, new.event_id, new.organization_id, new.type, new.payload, new.actor_id, new.created_at)
     is distinct from
     (old.id, old.event_id, old.organization_id, old.type, old.payload, old.actor_id, old.created_at) then
    raise exception using errcode = '42501', message = 'append_only',
      detail = 'only the delivery columns of a domain event can change';
  end if;
  return new;
end
$$;

create trigger domain_events_append_only
before update or delete on private.domain_events
for each row execute function private.guard_domain_events();

-- ---------------------------------------------------------------------------------------------
-- Appending, claiming, completing
-- ---------------------------------------------------------------------------------------------
create function private.append_domain_event(
  p_organization_id uuid,
  p_type text,
  p_payload jsonb default '{}'::jsonb
)
returns bigint
language sql
security definer
set search_path = ''
as $$
  insert into private.domain_events (organization_id, type, payload, actor_id)
  values (p_organization_id, p_type, coalesce(p_payload, '{}'::jsonb), auth.uid())
  returning id
$$;
comment on function private.append_domain_event(uuid, text, jsonb) is
  'Appends one event to the outbox in the caller''s transaction; returns its id.';
revoke execute on function private.append_domain_event(uuid, text, jsonb) from public;
grant execute on function private.append_domain_event(uuid, text, jsonb) to service_role;

create function private.claim_domain_events(
  p_consumer text,
  p_limit integer default 100,
  p_lease interval default interval '5 minutes',
  p_now timestamptz default now()
)
returns setof private.domain_events
language sql
security definer
set search_path = ''
as $$
  -- skip locked: concurrent consumers take disjoint batches without waiting on each other.
  with next as (
    select id
    from private.domain_events
    where processed_at is null
      and available_at <= p_now
      and (claimed_at is null or claimed_at < p_now - p_lease)
    order by id
    limit least(greatest(p_limit, 1), 1000)
    for update skip locked
  )
  update private.domain_events e
  set claimed_at = p_now, claimed_by = p_consumer, attempts = e.attempts + 1
  from next
  where e.id = next.id
  returning e.*
$$;
comment on function private.claim_domain_events(text, integer, interval, timestamptz) is
  'Claims up to p_limit pending events for a consumer, oldest first. A claim older than p_lease is considered abandoned and may be claimed again.';
revoke execute on function private.claim_domain_events(text, integer, interval, timestamptz) from public;
grant execute on function private.claim_domain_events(text, integer, interval, timestamptz) to service_role;

create function private.complete_domain_event(p_id bigint, p_now timestamptz default now())
returns void
language sql
security definer
set search_path = ''
as $$
  update private.domain_events
  set processed_at = p_now, last_error = null
  where id = p_id and processed_at is null
$$;
comment on function private.complete_domain_event(bigint, timestamptz) is 'Marks a claimed event processed.';
revoke execute on function private.complete_domain_event(bigint, timestamptz) from public;
grant execute on function private.complete_domain_event(bigint, timestamptz) to service_role;

create function private.fail_domain_event(
  p_id bigint,
  p_error text,
  p_retry_in interval default interval '1 minute',
  p_now timestamptz default now()
)
returns void
language sql
security definer
set search_path = ''
as $$
  update private.domain_events
  set claimed_at = null, claimed_by = null, last_error = left(p_error, 2000), available_at = p_now + p_retry_in
  where id = p_id and processed_at is null
$$;
comment on function private.fail_domain_event(bigint, text, interval, timestamptz) is
  'Releases a claimed event after a failure; it becomes claimable again after p_retry_in.';
revoke execute on function private.fail_domain_event(bigint, text, interval, timestamptz) from public;
grant execute on function private.fail_domain_event(bigint, text, interval, timestamptz) to service_role;

create function private.purge_domain_events(p_older_than interval default interval '30 days', p_now timestamptz default now())
returns bigint
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_deleted bigint;
begin
  perform set_config('private.allow_purge', 'on', true);
  delete from private.domain_events where processed_at is not null and processed_at < p_now - p_older_than;
  get diagnostics v_deleted = row_count;
  perform set_config('private.allow_purge', '', true);
  return v_deleted;
end
$$;
comment on function private.purge_domain_events(interval, timestamptz) is
  'Deletes events processed longer ago than p_older_than; the only way rows leave the outbox.';
revoke execute on function private.purge_domain_events(interval, timestamptz) from public;
grant execute on function private.purge_domain_events(interval, timestamptz) to service_role;
