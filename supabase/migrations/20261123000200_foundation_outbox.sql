-- =============================================================================================
-- Foundation: the outbox, domain events every consumer reads
-- =============================================================================================

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

-- Business changes append an event in the same transaction as the change itself. Events are
-- immutable. Each consumer (the mailer, the outbound-webhook dispatcher, ...) is a row of
-- outbox_consumers and has its own delivery state per event, written by a trigger in the
-- event's own transaction (so no event is ever skipped, whatever order transactions commit in).
-- Workers of a consumer claim due deliveries with FOR UPDATE SKIP LOCKED under a lease, then
-- complete them or fail them into a retry with exponential backoff; after max_attempts a
-- delivery is dead until an operator requeues it. A new consumer starts from the events appended
-- after it registered. Processed events are purged after a retention period.
--
-- Everything here is private: payloads may carry secrets meant for one consumer (an invitation
-- token for the mail that delivers it), so no client role reads them. organization_id has no
-- foreign key on purpose: an event is history and outlives what it describes.

insert into private.settings (key, value, description) values
  ('domain_event_retention', '"30 days"', 'How long an event is kept after every consumer has processed (or given up on) it.');

insert into private.error_codes (code, class, meaning) values
  ('consumer_not_found', 'not_found', 'No outbox consumer has this name.');

-- ---------------------------------------------------------------------------------------------
-- Events
-- ---------------------------------------------------------------------------------------------
create table private.domain_events (
  id bigint generated always as identity primary key,
  event_id uuid not null default gen_random_uuid() unique,
  organization_id uuid,
  type text not null check (type ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$'),
  payload jsonb not null default '{}'::jsonb check (jsonb_typeof(payload) = 'object'),
  actor_id uuid,
  created_at timestamptz not null default now()
);
comment on table private.domain_events is
  'Immutable business events (member.invited, credits.low, ...), appended with private.append_domain_event; consumers read them through event_deliveries.';
comment on column private.domain_events.id is 'Monotonic position in the outbox; consumers process in this order.';
comment on column private.domain_events.event_id is 'Stable public identifier of the event (idempotency key for consumers and webhook receivers).';
comment on column private.domain_events.organization_id is 'The organization the event belongs to; null for platform events. No foreign key: events outlive their subject.';
comment on column private.domain_events.type is 'Dotted event type, e.g. member.invited.';
comment on column private.domain_events.payload is 'Event data as a JSON object.';
comment on column private.domain_events.actor_id is 'The user whose action caused the event (auth.uid() at append time), if any.';
comment on column private.domain_events.created_at is 'When the event was appended.';
alter table private.domain_events enable row level security;
-- Workers read events through the claim functions; operators read them in Studio or SQL.
grant select on private.domain_events to service_role;
create index domain_events_organization_id_idx on private.domain_events (organization_id, id);
create index domain_events_created_at_idx on private.domain_events (created_at);

-- ---------------------------------------------------------------------------------------------
-- Consumers and their deliveries
-- ---------------------------------------------------------------------------------------------
create table private.outbox_consumers (
  name text primary key check (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
  description text not null,
  event_types text[],
  max_attempts integer not null default 10 check (max_attempts between 1 and 100),
  registered_at timestamptz not null default now()
);
comment on table private.outbox_consumers is 'Who reads the outbox. Each gets a delivery row for every later event of the types it takes.';
comment on column private.outbox_consumers.name is 'The consumer''s name, e.g. email.';
comment on column private.outbox_consumers.description is 'What it does with the events.';
comment on column private.outbox_consumers.event_types is 'The event types it takes; null for all.';
comment on column private.outbox_consumers.max_attempts is 'After this many failed attempts a delivery is dead until requeued.';
comment on column private.outbox_consumers.registered_at is 'When it registered; it receives the events appended after.';
alter table private.outbox_consumers enable row level security;
grant select on private.outbox_consumers to service_role;

create table private.event_deliveries (
  consumer text not null references private.outbox_consumers (name) on delete cascade,
  event_id bigint not null references private.domain_events (id) on delete cascade,
  attempts integer not null default 0 check (attempts >= 0),
  next_attempt_at timestamptz not null,
  claimed_until timestamptz,
  processed_at timestamptz,
  dead_at timestamptz,
  last_error text check (char_length(last_error) <= 2000),
  primary key (consumer, event_id)
);
comment on table private.event_deliveries is 'The delivery state of each event for each consumer: claimed, retried, processed or dead.';
comment on column private.event_deliveries.consumer is 'The consumer.';
comment on column private.event_deliveries.event_id is 'The event (domain_events.id).';
comment on column private.event_deliveries.attempts is 'How many times a worker claimed it.';
comment on column private.event_deliveries.next_attempt_at is 'Not claimable before this time (retry backoff).';
comment on column private.event_deliveries.claimed_until is 'A worker''s lease: until then no other worker takes it; after, it may.';
comment on column private.event_deliveries.processed_at is 'When the consumer finished with it; null while pending.';
comment on column private.event_deliveries.dead_at is 'When the consumer gave up on it (max_attempts failures); private.requeue_event revives it.';
comment on column private.event_deliveries.last_error is 'The last failure the consumer reported.';
alter table private.event_deliveries enable row level security;
grant select on private.event_deliveries to service_role;
create index event_deliveries_due_idx on private.event_deliveries (consumer, next_attempt_at, event_id)
  where processed_at is null and dead_at is null;
create index event_deliveries_event_id_idx on private.event_deliveries (event_id);

-- ---------------------------------------------------------------------------------------------
-- Guards and triggers
-- ---------------------------------------------------------------------------------------------
create function private.guard_domain_events()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if tg_op = 'DELETE' and private.permitted('purge_events') then
    return old;
  end if;
  perform private.raise('append_only', 'Domain events never change; they leave only through private.purge_domain_events.');
  return null;
end
$$;
comment on function private.guard_domain_events() is 'Trigger: events are immutable; only the purge deletes them.';

create trigger domain_events_immutable
before update or delete on private.domain_events
for each row execute function private.guard_domain_events();

create trigger domain_events_no_truncate
before truncate on private.domain_events
for each statement execute function private.guard_domain_events();

-- Every consumer that takes the event's type gets a delivery, in the event's own transaction.
create function private.fan_out_domain_event()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  insert into private.event_deliveries (consumer, event_id, next_attempt_at)
  select c.name, new.id, new.created_at from private.outbox_consumers c
  where c.event_types is null or new.type = any (c.event_types);
  return null;
end
$$;
comment on function private.fan_out_domain_event() is 'Trigger: creates the delivery rows of a new event, one per consumer that takes its type.';

create trigger domain_events_fan_out
after insert on private.domain_events
for each row execute function private.fan_out_domain_event();

-- ---------------------------------------------------------------------------------------------
-- Appending and consuming
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
grant execute on function private.append_domain_event(uuid, text, jsonb) to service_role;

create function private.register_outbox_consumer(
  p_name text,
  p_description text,
  p_event_types text[] default null,
  p_max_attempts integer default 10
)
returns void
language sql
security definer
set search_path = ''
as $$
  insert into private.outbox_consumers (name, description, event_types, max_attempts)
  values (p_name, p_description, p_event_types, p_max_attempts)
  on conflict (name) do update
    set description = excluded.description, event_types = excluded.event_types, max_attempts = excluded.max_attempts
$$;
comment on function private.register_outbox_consumer(text, text, text[], integer) is
  'Registers a consumer (or updates one); it receives the events appended from now on.';
grant execute on function private.register_outbox_consumer(text, text, text[], integer) to service_role;

create function private.claim_events(
  p_consumer text,
  p_limit integer default 100,
  p_lease interval default interval '5 minutes',
  p_now timestamptz default now()
)
returns table (
  id bigint, event_id uuid, organization_id uuid, type text, payload jsonb, actor_id uuid,
  created_at timestamptz, attempts integer
)
language plpgsql
security definer
set search_path = ''
as $$
begin
  if not exists (select 1 from private.outbox_consumers c where c.name = p_consumer) then
    perform private.raise('consumer_not_found', format('No outbox consumer %L.', p_consumer));
  end if;
  -- skip locked: the consumer's workers take disjoint batches without waiting on each other.
  return query
  with due as (
    select d.event_id
    from private.event_deliveries d
    where d.consumer = p_consumer and d.processed_at is null and d.dead_at is null
      and d.next_attempt_at <= p_now and (d.claimed_until is null or d.claimed_until <= p_now)
    order by d.next_attempt_at, d.event_id
    limit least(greatest(p_limit, 1), 1000)
    for update skip locked
  ), claimed as (
    update private.event_deliveries d
    set claimed_until = p_now + p_lease, attempts = d.attempts + 1
    from due
    where d.consumer = p_consumer and d.event_id = due.event_id
    returning d.event_id, d.attempts
  )
  select e.id, e.event_id, e.organization_id, e.type, e.payload, e.actor_id, e.created_at, claimed.attempts
  from claimed join private.domain_events e on e.id = claimed.event_id
  order by e.id;
end
$$;
comment on function private.claim_events(text, integer, interval, timestamptz) is
  'Claims up to p_limit due events for one of a consumer''s workers, oldest first, leased for p_lease.';
grant execute on function private.claim_events(text, integer, interval, timestamptz) to service_role;

create function private.complete_event(p_consumer text, p_event_id bigint, p_now timestamptz default now())
returns boolean
language sql
security definer
set search_path = ''
as $$
  with done as (
    update private.event_deliveries
    set processed_at = p_now, claimed_until = null, last_error = null
    where consumer = p_consumer and event_id = p_event_id and processed_at is null
    returning 1
  )
  select exists (select 1 from done)
$$;
comment on function private.complete_event(text, bigint, timestamptz) is
  'Marks a consumer''s delivery processed; false when it was processed already.';
grant execute on function private.complete_event(text, bigint, timestamptz) to service_role;

-- Retries back off exponentially from 30 seconds to at most an hour, with up to 25% jitter so
-- a burst of failures does not come back at once; p_retry_in overrides it (Retry-After).
create function private.fail_event(
  p_consumer text,
  p_event_id bigint,
  p_error text,
  p_retry_in interval default null,
  p_now timestamptz default now()
)
returns void
language sql
security definer
set search_path = ''
as $$
  update private.event_deliveries d
  set claimed_until = null,
      last_error = left(p_error, 2000),
      dead_at = case when d.attempts >= c.max_attempts then p_now end,
      next_attempt_at = p_now + coalesce(p_retry_in,
        least(interval '1 hour', interval '30 seconds' * power(2, greatest(d.attempts - 1, 0))) * (1 + random() * 0.25))
  from private.outbox_consumers c
  where c.name = d.consumer and d.consumer = p_consumer and d.event_id = p_event_id and d.processed_at is null
$$;
comment on function private.fail_event(text, bigint, text, interval, timestamptz) is
  'Records a consumer''s failure on a delivery: retried later with backoff, or dead after max_attempts.';
grant execute on function private.fail_event(text, bigint, text, interval, timestamptz) to service_role;

create function private.requeue_event(p_consumer text, p_event_id bigint, p_now timestamptz default now())
returns boolean
language sql
security definer
set search_path = ''
as $$
  with revived as (
    update private.event_deliveries
    set dead_at = null, attempts = 0, next_attempt_at = p_now, claimed_until = null
    where consumer = p_consumer and event_id = p_event_id and dead_at is not null
    returning 1
  )
  select exists (select 1 from revived)
$$;
comment on function private.requeue_event(text, bigint, timestamptz) is 'An operator revives a dead delivery; false when it was not dead.';
grant execute on function private.requeue_event(text, bigint, timestamptz) to service_role;

-- ---------------------------------------------------------------------------------------------
-- Retention
-- ---------------------------------------------------------------------------------------------
create function private.purge_domain_events(p_now timestamptz default now())
returns bigint
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_deleted bigint;
begin
  perform private.permit('purge_events');
  delete from private.domain_events e
  where e.created_at < p_now - (private.setting('domain_event_retention') #>> '{}')::interval
    and not exists (
      select 1 from private.event_deliveries d
      where d.event_id = e.id and d.processed_at is null and d.dead_at is null);
  get diagnostics v_deleted = row_count;
  perform private.permit('purge_events', false);
  return v_deleted;
end
$$;
comment on function private.purge_domain_events(timestamptz) is
  'Deletes events older than the retention that no consumer still has pending (their deliveries go with them); pg_cron, daily.';
grant execute on function private.purge_domain_events(timestamptz) to service_role;

select cron.schedule('outbox-purge', '37 4 * * *', 'select private.purge_domain_events()');
