-- =============================================================================================
-- Lifecycle: activity, inactivity policies, purges of organizations, retention
-- =============================================================================================

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

-- An organization that stops using the product has its data removed on a schedule it was told
-- about, with an export offered first:
--   activity     activity_events (sign-ins, API calls, anything a caller records) and the credit
--                ledger (consumption) are folded into inactivity_trackers.last_activity_at;
--   inactivity   lifecycle-inactivity (daily): warned after the policy's warn_after, a purge
--                scheduled after purge_after (to run after grace_period), both mailed to owners;
--   purges       purge_operations: requested → scheduled → export_ready (an export of the whole
--                organization, mailed) → acknowledged → executing → completed, or cancelled
--                (new activity or an owner's request cancels a scheduled purge); lifecycle-purge
--                executes due purges in batches (files included), each batch its own transaction,
--                resumable, leaving the tombstone and money records the tenancy chapter keeps;
--   retention    deleted organizations' money records, audit partitions, sent mail and job runs
--                each go after their retention, never while a legal hold stands.
-- Deleting an organization by hand (request_organization_purge) takes the same path.

insert into private.error_codes (code, class, meaning) values
  ('purge_not_found', 'not_found', 'No purge operation has this id.'),
  ('invalid_purge_transition', 'rule', 'A purge cannot move from its status to that one.'),
  ('purge_in_progress', 'conflict', 'The organization has a purge under way already.');

create type public.purge_status as enum ('requested', 'scheduled', 'export_ready', 'acknowledged', 'executing', 'completed', 'cancelled');
comment on type public.purge_status is
  'requested, scheduled (to run after the grace period), export_ready (the export was offered), acknowledged (an owner saw it), executing, completed, cancelled.';

-- ---------------------------------------------------------------------------------------------
-- Activity
-- ---------------------------------------------------------------------------------------------
create table private.activity_events (
  id bigint generated always as identity primary key,
  organization_id uuid not null references public.organizations (id) on delete cascade,
  user_id uuid references auth.users (id) on delete set null,
  kind text not null check (kind in ('sign_in', 'api_call', 'consumption', 'other')),
  occurred_at timestamptz not null default now()
);
comment on table private.activity_events is 'Activity callers record (sign-ins, API calls); folded into inactivity_trackers and deleted by lifecycle-inactivity.';
comment on column private.activity_events.id is 'The event.';
comment on column private.activity_events.organization_id is 'The organization.';
comment on column private.activity_events.user_id is 'Who, when known.';
comment on column private.activity_events.kind is 'sign_in, api_call, consumption, other.';
comment on column private.activity_events.occurred_at is 'When.';
alter table private.activity_events enable row level security;
grant select on private.activity_events to service_role;
create index activity_events_organization_id_idx on private.activity_events (organization_id, occurred_at);
create index activity_events_user_id_idx on private.activity_events (user_id);

create function private.record_activity(p_organization_id uuid, p_user_id uuid, p_kind text, p_now timestamptz default now())
returns void
language sql
security definer
set search_path = ''
as $$
  insert into private.activity_events (organization_id, user_id, kind, occurred_at) values (p_organization_id, p_user_id, p_kind, p_now)
$$;
comment on function private.record_activity(uuid, uuid, text, timestamptz) is 'Records that an organization was used (one cheap insert).';
grant execute on function private.record_activity(uuid, uuid, text, timestamptz) to service_role;

create table public.inactivity_policies (
  id uuid primary key default gen_random_uuid(),
  plan_key text unique references public.credit_plans (key) on update cascade on delete cascade,
  warn_after interval not null check (warn_after >= interval '1 day'),
  purge_after interval not null,
  grace_period interval not null check (grace_period >= interval '1 day'),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  check (purge_after > warn_after)
);
comment on table public.inactivity_policies is 'When an inactive organization is warned and when its purge is scheduled: the default (plan_key null) and per-plan overrides.';
comment on column public.inactivity_policies.id is 'The policy.';
comment on column public.inactivity_policies.plan_key is 'The plan it applies to; null for the default.';
comment on column public.inactivity_policies.warn_after is 'Inactive this long: the owners are warned.';
comment on column public.inactivity_policies.purge_after is 'Inactive this long: a purge is scheduled.';
comment on column public.inactivity_policies.grace_period is 'How long after scheduling the purge runs.';
comment on column public.inactivity_policies.created_at is 'When it was added.';
comment on column public.inactivity_policies.updated_at is 'When it last changed.';
grant select on public.inactivity_policies to authenticated;
grant select, insert, update, delete on public.inactivity_policies to service_role;
alter table public.inactivity_policies enable row level security;
create policy "Signed-in users read the inactivity policies"
on public.inactivity_policies for select to authenticated using (true);
create unique index inactivity_policies_default_key on public.inactivity_policies ((plan_key is null)) where plan_key is null;

create trigger inactivity_policies_set_updated_at
before update on public.inactivity_policies
for each row execute function private.set_updated_at();

insert into public.inactivity_policies (plan_key, warn_after, purge_after, grace_period) values
  (null, interval '90 days', interval '180 days', interval '30 days'),
  ('premium', interval '180 days', interval '365 days', interval '30 days');

create table public.inactivity_trackers (
  organization_id uuid primary key references public.organizations (id) on delete cascade,
  last_activity_at timestamptz not null default now(),
  state text not null default 'active' check (state in ('active', 'warned', 'purge_scheduled')),
  warnings_sent integer not null default 0 check (warnings_sent >= 0),
  warned_at timestamptz,
  updated_at timestamptz not null default now()
);
comment on table public.inactivity_trackers is 'Per organization: its last activity and where it is in the inactivity policy.';
comment on column public.inactivity_trackers.organization_id is 'The organization.';
comment on column public.inactivity_trackers.last_activity_at is 'Its last activity (sign-in, API call, consumption).';
comment on column public.inactivity_trackers.state is 'active, warned or purge_scheduled.';
comment on column public.inactivity_trackers.warnings_sent is 'How many inactivity warnings went out.';
comment on column public.inactivity_trackers.warned_at is 'When the last warning went out.';
comment on column public.inactivity_trackers.updated_at is 'When it last changed.';
grant select on public.inactivity_trackers to authenticated;
grant select on public.inactivity_trackers to service_role;
alter table public.inactivity_trackers enable row level security;
create policy "Owners and admins read their inactivity tracker"
on public.inactivity_trackers for select to authenticated
using (organization_id in (select private.organization_ids_with_role('{owner,admin}')));

-- Every organization is tracked from its creation.
create function private.track_new_organization()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  insert into public.inactivity_trackers (organization_id, last_activity_at) values (new.id, now()) on conflict do nothing;
  return null;
end
$$;
comment on function private.track_new_organization() is 'Trigger: starts an organization''s inactivity tracker.';
create trigger organizations_track_activity
after insert on public.organizations
for each row execute function private.track_new_organization();
insert into public.inactivity_trackers (organization_id, last_activity_at)
select id, created_at from public.organizations on conflict do nothing;

-- ---------------------------------------------------------------------------------------------
-- Purge operations
-- ---------------------------------------------------------------------------------------------
create table public.purge_operations (
  id uuid primary key default gen_random_uuid(),
  organization_id uuid not null,
  organization_name text not null,
  status public.purge_status not null default 'requested',
  reason text not null check (char_length(reason) between 1 and 500),
  forced boolean not null default false,
  requested_by uuid references auth.users (id) on delete set null,
  requested_at timestamptz not null default now(),
  scheduled_for timestamptz,
  export_id uuid references private.data_exports (id) on delete set null,
  acknowledged_by uuid references auth.users (id) on delete set null,
  acknowledged_at timestamptz,
  started_at timestamptz,
  completed_at timestamptz,
  cancelled_by uuid references auth.users (id) on delete set null,
  cancelled_at timestamptz,
  cancel_reason text check (char_length(cancel_reason) <= 500),
  owner_emails text[] not null default '{}',
  progress jsonb not null default '{}'::jsonb,
  status_changed_at timestamptz not null default now(),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table public.purge_operations is 'Purges of organizations (inactivity or by request): each step, who moved it and when.';
comment on column public.purge_operations.id is 'The purge.';
comment on column public.purge_operations.organization_id is 'The organization (no foreign key: the purge outlives it).';
comment on column public.purge_operations.organization_name is 'Its name when the purge was requested (for the mails and the record).';
comment on column public.purge_operations.status is 'requested, scheduled, export_ready, acknowledged, executing, completed, cancelled.';
comment on column public.purge_operations.reason is 'Why (inactivity, the owners'' request, an operator''s).';
comment on column public.purge_operations.forced is 'An operator forced it past the grace period.';
comment on column public.purge_operations.requested_by is 'Who requested it (null: the inactivity policy).';
comment on column public.purge_operations.requested_at is 'When.';
comment on column public.purge_operations.scheduled_for is 'When it runs (after the grace period).';
comment on column public.purge_operations.export_id is 'The export of the organization offered before it.';
comment on column public.purge_operations.acknowledged_by is 'The owner who acknowledged the export.';
comment on column public.purge_operations.acknowledged_at is 'When.';
comment on column public.purge_operations.started_at is 'When execution began.';
comment on column public.purge_operations.completed_at is 'When it finished.';
comment on column public.purge_operations.cancelled_by is 'Who cancelled it (null: new activity).';
comment on column public.purge_operations.cancelled_at is 'When.';
comment on column public.purge_operations.cancel_reason is 'Why.';
comment on column public.purge_operations.owner_emails is 'Where the completion mail goes (the owners when it began).';
comment on column public.purge_operations.progress is 'What execution has done: per table the rows deleted, files removed.';
comment on column public.purge_operations.status_changed_at is 'When its status last changed.';
comment on column public.purge_operations.created_at is 'When the row was made.';
comment on column public.purge_operations.updated_at is 'When it last changed.';
grant select on public.purge_operations to authenticated;
grant select on public.purge_operations to service_role;
alter table public.purge_operations enable row level security;
create policy "Owners and admins read their organization's purges"
on public.purge_operations for select to authenticated
using (organization_id in (select private.organization_ids_with_role('{owner,admin}')) or (select private.is_platform_admin()));
create index purge_operations_organization_id_idx on public.purge_operations (organization_id);
create unique index purge_operations_one_open_idx on public.purge_operations (organization_id)
  where status not in ('completed', 'cancelled');
create index purge_operations_due_idx on public.purge_operations (scheduled_for) where status in ('scheduled', 'export_ready', 'acknowledged', 'executing');
create index purge_operations_requested_by_idx on public.purge_operations (requested_by);
create index purge_operations_acknowledged_by_idx on public.purge_operations (acknowledged_by);
create index purge_operations_cancelled_by_idx on public.purge_operations (cancelled_by);
create index purge_operations_export_id_idx on public.purge_operations (export_id);

create trigger purge_operations_set_updated_at
before update on public.purge_operations
for each row execute function private.set_updated_at();

create function private.guard_purge_operation()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if new.status is distinct from old.status then
    if not (old.status, new.status) in (
      ('requested', 'scheduled'), ('requested', 'cancelled'),
      ('scheduled', 'export_ready'), ('scheduled', 'executing'), ('scheduled', 'cancelled'),
      ('export_ready', 'acknowledged'), ('export_ready', 'executing'), ('export_ready', 'cancelled'),
      ('acknowledged', 'executing'), ('acknowledged', 'cancelled'),
      ('executing', 'completed')) then
      perform private.raise('invalid_purge_transition', format('A purge cannot go from %s to %s.', old.status, new.status));
    end if;
    -- Only a forced purge skips the export.
    if old.status = 'scheduled' and new.status = 'executing' and not new.forced then
      perform private.raise('invalid_purge_transition', 'A purge runs only after its export was offered, unless forced.');
    end if;
    new.status_changed_at := now();
  end if;
  return new;
end
$$;
comment on function private.guard_purge_operation() is 'Trigger: only the allowed transitions of a purge.';

create trigger purge_operations_guard
before update of status on public.purge_operations
for each row execute function private.guard_purge_operation();

-- The policy of an organization: its plan's, else the default.
create function private.inactivity_policy_of(p_organization_id uuid)
returns public.inactivity_policies
language sql
stable
security definer
set search_path = ''
as $$
  select p.* from public.inactivity_policies p
  left join public.organization_plans op on op.organization_id = p_organization_id
  where p.plan_key = op.plan_key or p.plan_key is null
  order by p.plan_key is null
  limit 1
$$;
comment on function private.inactivity_policy_of(uuid) is 'The inactivity policy that applies to an organization.';

-- Moves a purge, audited and evented.
create function private.move_purge(p_purge_id uuid, p_status public.purge_status, p_detail jsonb, p_now timestamptz)
returns public.purge_operations
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_purge public.purge_operations;
begin
  update public.purge_operations set status = p_status,
    scheduled_for = case when p_status = 'scheduled' then coalesce((p_detail ->> 'scheduled_for')::timestamptz, scheduled_for) else scheduled_for end,
    started_at = case when p_status = 'executing' then coalesce(started_at, p_now) else started_at end,
    completed_at = case when p_status = 'completed' then p_now else completed_at end,
    cancelled_at = case when p_status = 'cancelled' then p_now else cancelled_at end,
    cancelled_by = case when p_status = 'cancelled' then auth.uid() else cancelled_by end,
    cancel_reason = case when p_status = 'cancelled' then p_detail ->> 'reason' else cancel_reason end,
    acknowledged_at = case when p_status = 'acknowledged' then p_now else acknowledged_at end,
    acknowledged_by = case when p_status = 'acknowledged' then auth.uid() else acknowledged_by end,
    forced = forced or coalesce((p_detail ->> 'forced')::boolean, false),
    -- Whom to tell at the end: the owners as it begins (their memberships go with the batches).
    owner_emails = case when p_status = 'executing' and owner_emails = '{}'
                        then array(select email from private.member_emails(organization_id, '{owner}')) else owner_emails end
  where id = p_purge_id
  returning * into v_purge;
  if v_purge.id is null then
    perform private.raise('purge_not_found', 'No purge operation has this id.');
  end if;
  if p_status = 'cancelled' then
    update public.inactivity_trackers set state = 'active', warnings_sent = 0, warned_at = null
    where organization_id = v_purge.organization_id;
  end if;
  perform private.audit_action(v_purge.organization_id, 'purge_' || p_status::text, 'public.purge_operations', v_purge.id::text,
    coalesce(p_detail, '{}'::jsonb));
  if exists (select 1 from public.organizations where id = v_purge.organization_id) then
    perform private.append_domain_event(v_purge.organization_id, 'lifecycle.purge_' || p_status::text,
      jsonb_build_object('purge_id', v_purge.id, 'scheduled_for', v_purge.scheduled_for) || coalesce(p_detail, '{}'::jsonb));
  end if;
  return v_purge;
end
$$;
comment on function private.move_purge(uuid, public.purge_status, jsonb, timestamptz) is 'Moves a purge to a status (the trigger checks the transition), with its audit row and event.';

-- Starts a purge: requested and, at once, scheduled after the grace period; the owners are mailed.
create function private.start_purge(p_organization_id uuid, p_reason text, p_now timestamptz, p_scheduled_for timestamptz default null)
returns public.purge_operations
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_purge public.purge_operations;
  v_org public.organizations;
  v_when timestamptz;
  v_recipient text;
begin
  select * into v_org from public.organizations where id = p_organization_id;
  if v_org.id is null then
    perform private.raise('organization_not_found', 'No organization has this id.');
  end if;
  if exists (select 1 from public.purge_operations where organization_id = p_organization_id and status not in ('completed', 'cancelled')) then
    perform private.raise('purge_in_progress', 'The organization has a purge under way already.');
  end if;
  v_when := coalesce(p_scheduled_for, p_now + (private.inactivity_policy_of(p_organization_id)).grace_period);
  insert into public.purge_operations (organization_id, organization_name, reason, requested_by, requested_at)
  values (p_organization_id, v_org.name, p_reason, auth.uid(), p_now)
  returning * into v_purge;
  perform private.audit_action(p_organization_id, 'purge_requested', 'public.purge_operations', v_purge.id::text, jsonb_build_object('reason', p_reason));
  v_purge := private.move_purge(v_purge.id, 'scheduled', jsonb_build_object('scheduled_for', v_when), p_now);
  update public.inactivity_trackers set state = 'purge_scheduled' where organization_id = p_organization_id;
  for v_recipient in select email from private.member_emails(p_organization_id, '{owner}') loop
    perform private.enqueue_email('data_purge_scheduled', v_recipient, jsonb_build_object(
      'organizationName', v_org.name, 'purgeAt', v_when, 'exportUrl', null,
      'cancelUrl', private.site_url() || '/settings/organization?cancel_purge=' || v_purge.id),
      format('purge:%s:scheduled:%s', v_purge.id, v_recipient), p_organization_id);
  end loop;
  return v_purge;
end
$$;
comment on function private.start_purge(uuid, text, timestamptz, timestamptz) is 'Requests and schedules a purge of an organization, mailing its owners.';

-- ---------------------------------------------------------------------------------------------
-- RPCs: owners and platform admins
-- ---------------------------------------------------------------------------------------------
-- Owners ask for their organization's deletion (the same path as inactivity); platform admins
-- request, schedule (p_scheduled_for) and force.
create function private.request_organization_purge(p_organization_id uuid, p_reason text, p_scheduled_for timestamptz)
returns public.purge_operations
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_reason text := private.check_reason(p_reason);
begin
  if not (private.caller_role() = 'service_role' or private.is_platform_admin()) then
    perform private.require_member(p_organization_id, '{owner}', 'Only owners ask for their organization''s deletion.');
    if p_scheduled_for is not null then
      perform private.raise('not_authorized', 'Only platform admins schedule a purge for a given time.');
    end if;
  end if;
  return private.start_purge(p_organization_id, v_reason, now(), p_scheduled_for);
end
$$;
comment on function private.request_organization_purge(uuid, text, timestamptz) is 'The body of request_organization_purge.';
grant execute on function private.request_organization_purge(uuid, text, timestamptz) to authenticated, service_role;

create function public.request_organization_purge(p_organization_id uuid, p_reason text, p_scheduled_for timestamptz default null)
returns public.purge_operations
language sql
security invoker
set search_path = ''
as $$
  select private.request_organization_purge(p_organization_id, p_reason, p_scheduled_for)
$$;
comment on function public.request_organization_purge(uuid, text, timestamptz) is
  'Deletes an organization the careful way (owners; platform admins may give the time): a purge scheduled after the grace period, an export offered first, money records kept.';
grant execute on function public.request_organization_purge(uuid, text, timestamptz) to authenticated, service_role;

create function private.cancel_organization_purge(p_purge_id uuid, p_reason text)
returns public.purge_operations
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_purge public.purge_operations;
  v_reason text := private.check_reason(p_reason);
begin
  select * into v_purge from public.purge_operations where id = p_purge_id for update;
  if v_purge.id is null then
    perform private.raise('purge_not_found', 'No purge operation has this id.');
  end if;
  if not (private.caller_role() = 'service_role' or private.is_platform_admin()) then
    perform private.require_member(v_purge.organization_id, '{owner}', 'Only owners cancel their organization''s purge.');
  end if;
  return private.move_purge(p_purge_id, 'cancelled', jsonb_build_object('reason', v_reason), now());
end
$$;
comment on function private.cancel_organization_purge(uuid, text) is 'The body of cancel_organization_purge.';
grant execute on function private.cancel_organization_purge(uuid, text) to authenticated, service_role;

create function public.cancel_organization_purge(p_purge_id uuid, p_reason text)
returns public.purge_operations
language sql
security invoker
set search_path = ''
as $$
  select private.cancel_organization_purge(p_purge_id, p_reason)
$$;
comment on function public.cancel_organization_purge(uuid, text) is 'Cancels a purge not yet executing (owners, platform admins), with the reason.';
grant execute on function public.cancel_organization_purge(uuid, text) to authenticated, service_role;

create function private.acknowledge_organization_purge(p_purge_id uuid)
returns public.purge_operations
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_purge public.purge_operations;
begin
  select * into v_purge from public.purge_operations where id = p_purge_id for update;
  if v_purge.id is null then
    perform private.raise('purge_not_found', 'No purge operation has this id.');
  end if;
  perform private.require_member(v_purge.organization_id, '{owner}', 'Only owners acknowledge the export.');
  return private.move_purge(p_purge_id, 'acknowledged', '{}'::jsonb, now());
end
$$;
comment on function private.acknowledge_organization_purge(uuid) is 'The body of acknowledge_organization_purge.';
grant execute on function private.acknowledge_organization_purge(uuid) to authenticated;

create function public.acknowledge_organization_purge(p_purge_id uuid)
returns public.purge_operations
language sql
security invoker
set search_path = ''
as $$
  select private.acknowledge_organization_purge(p_purge_id)
$$;
comment on function public.acknowledge_organization_purge(uuid) is 'An owner acknowledges the export offered before a purge.';
grant execute on function public.acknowledge_organization_purge(uuid) to authenticated;

create function private.force_organization_purge(p_purge_id uuid, p_reason text)
returns public.purge_operations
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_reason text := private.check_reason(p_reason);
begin
  perform private.require_operator();
  perform 1 from public.purge_operations where id = p_purge_id for update;
  update public.purge_operations set scheduled_for = now(), forced = true where id = p_purge_id;
  return private.move_purge(p_purge_id, 'executing', jsonb_build_object('forced', true, 'reason', v_reason), now());
end
$$;
comment on function private.force_organization_purge(uuid, text) is 'The body of force_organization_purge.';
grant execute on function private.force_organization_purge(uuid, text) to authenticated, service_role;

create function public.force_organization_purge(p_purge_id uuid, p_reason text)
returns public.purge_operations
language sql
security invoker
set search_path = ''
as $$
  select private.force_organization_purge(p_purge_id, p_reason)
$$;
comment on function public.force_organization_purge(uuid, text) is 'Runs a purge now, past its grace period and export (platform admins, service role), with the reason.';
grant execute on function public.force_organization_purge(uuid, text) to authenticated, service_role;

-- ---------------------------------------------------------------------------------------------
-- The jobs' SQL
-- ---------------------------------------------------------------------------------------------
-- Folds activity into the trackers, cancels scheduled purges of organizations used again, warns
-- the inactive and schedules purges of the long inactive (lifecycle-inactivity, daily).
create function private.check_inactivity(p_now timestamptz default now())
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_tracker record;
  v_policy public.inactivity_policies;
  v_purge public.purge_operations;
  v_recipient text;
  v_count integer := 0;
begin
  -- Activity since the trackers last looked: recorded events, consumption, sign-ins.
  with recent as (
    select organization_id, max(occurred_at) as at from private.activity_events where occurred_at <= p_now group by organization_id
    union all
    select l.organization_id, max(l.created_at) from public.credit_ledger l
    join public.inactivity_trackers t on t.organization_id = l.organization_id
    where l.kind = 'consumption' and l.created_at > t.last_activity_at and l.created_at <= p_now group by l.organization_id
    union all
    select m.organization_id, max(u.last_sign_in_at) from public.organization_members m join auth.users u on u.id = m.user_id
    where u.last_sign_in_at <= p_now group by m.organization_id
  ), latest as (select organization_id, max(at) as at from recent group by organization_id)
  update public.inactivity_trackers t set last_activity_at = latest.at, updated_at = p_now
  from latest where latest.organization_id = t.organization_id and latest.at > t.last_activity_at;
  delete from private.activity_events where occurred_at <= p_now;

  for v_tracker in select t.*, o.name from public.inactivity_trackers t join public.organizations o on o.id = t.organization_id
                   for update of t skip locked loop
    v_policy := private.inactivity_policy_of(v_tracker.organization_id);
    select * into v_purge from public.purge_operations
    where organization_id = v_tracker.organization_id and status in ('requested', 'scheduled', 'export_ready', 'acknowledged');
    -- Used again after the purge was requested: cancelled.
    if v_purge.id is not null and v_purge.requested_by is null and v_tracker.last_activity_at > v_purge.requested_at then
      perform private.move_purge(v_purge.id, 'cancelled', jsonb_build_object('reason', 'The organization was used again'), p_now);
      v_count := v_count + 1;
    elsif v_purge.id is null and v_tracker.state = 'warned' and v_tracker.last_activity_at > v_tracker.warned_at then
      update public.inactivity_trackers set state = 'active', warnings_sent = 0, warned_at = null where organization_id = v_tracker.organization_id;
    elsif v_purge.id is null and v_tracker.last_activity_at <= p_now - v_policy.purge_after and v_tracker.state = 'warned' then
      perform private.start_purge(v_tracker.organization_id, format('Inactive since %s', to_char(v_tracker.last_activity_at, 'YYYY-MM-DD')), p_now);
      v_count := v_count + 1;
    elsif v_purge.id is null and v_tracker.last_activity_at <= p_now - v_policy.warn_after and v_tracker.state = 'active' then
      update public.inactivity_trackers set state = 'warned', warnings_sent = warnings_sent + 1, warned_at = p_now
      where organization_id = v_tracker.organization_id;
      for v_recipient in select email from private.member_emails(v_tracker.organization_id, '{owner}') loop
        perform private.enqueue_email('inactivity_warning', v_recipient, jsonb_build_object(
          'organizationName', v_tracker.name, 'lastActiveAt', v_tracker.last_activity_at,
          'purgeScheduledAt', v_tracker.last_activity_at + v_policy.purge_after, 'signInUrl', private.site_url()),
          format('inactivity:%s:%s:%s', v_tracker.organization_id, v_tracker.warnings_sent + 1, v_recipient), v_tracker.organization_id);
      end loop;
      perform private.audit_action(v_tracker.organization_id, 'inactivity_warned', 'public.inactivity_trackers', v_tracker.organization_id::text,
        jsonb_build_object('last_activity_at', v_tracker.last_activity_at));
      v_count := v_count + 1;
    end if;
  end loop;
  return v_count;
end
$$;
comment on function private.check_inactivity(timestamptz) is 'The daily inactivity check: activity folded in, warnings, scheduled purges, cancellations; returns how many steps.';
grant execute on function private.check_inactivity(timestamptz) to service_role;

-- Purge preparation (lifecycle-purge, before execution): a scheduled purge gets an export of
-- the whole organization; once it is ready, the purge is export_ready (its mail went with it).
create function private.prepare_purges(p_now timestamptz default now())
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_purge public.purge_operations;
  v_export private.data_exports;
  v_count integer := 0;
begin
  for v_purge in select * from public.purge_operations where status = 'scheduled' for update skip locked loop
    if v_purge.export_id is null then
      insert into private.data_exports (scope, organization_id) values ('organization', v_purge.organization_id) returning * into v_export;
      update public.purge_operations set export_id = v_export.id where id = v_purge.id;
      v_count := v_count + 1;
    elsif (select status from private.data_exports where id = v_purge.export_id) = 'ready' then
      perform private.move_purge(v_purge.id, 'export_ready', jsonb_build_object('export_id', v_purge.export_id), p_now);
      v_count := v_count + 1;
    end if;
  end loop;
  return v_count;
end
$$;
comment on function private.prepare_purges(timestamptz) is 'Gives scheduled purges their organization export, and marks them export_ready once it is.';
grant execute on function private.prepare_purges(timestamptz) to service_role;

-- Purges due now (past their grace period, export offered): executing. Returns how many began.
create function private.start_due_purges(p_now timestamptz default now())
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_purge public.purge_operations;
  v_count integer := 0;
begin
  for v_purge in
    select * from public.purge_operations
    where status in ('export_ready', 'acknowledged') and scheduled_for <= p_now
    for update skip locked
  loop
    perform private.move_purge(v_purge.id, 'executing', '{}'::jsonb, p_now);
    v_count := v_count + 1;
  end loop;
  return v_count;
end
$$;
comment on function private.start_due_purges(timestamptz) is 'Moves due purges to executing; returns how many.';
grant execute on function private.start_due_purges(timestamptz) to service_role;

-- Every purge executing (begun now, forced, or interrupted before).
create function private.executing_purges()
returns setof uuid
language sql
stable
security definer
set search_path = ''
as $$
  select id from public.purge_operations where status = 'executing' order by started_at
$$;
comment on function private.executing_purges() is 'The purges executing, for lifecycle-purge.';
grant execute on function private.executing_purges() to service_role;

-- One batch of a purge: up to p_batch rows of one table of the organization, the table with the
-- most dependents first; the organization itself once nothing else is left. Each call is its own
-- transaction, so no lock is held long and an interrupted purge resumes where it stopped.
-- Returns the table it worked on and the rows deleted, or 'done' when the organization is gone.
create function private.purge_batch(p_purge_id uuid, p_batch integer default 5000)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_purge public.purge_operations;
  v_table record;
  v_rows integer;
  -- Money records stay (the tenancy chapter's tombstone keeps the ledger and overage); the
  -- organization's own row goes last, its cascade taking what little is left.
  v_kept text[] := array['public.credit_ledger', 'public.credit_overages'];
begin
  perform private.require_service_role('Only the lifecycle job purges.');
  -- The rows go without a copy of each into the audit log (that would keep the data the purge
  -- removes); the purge's steps are audit actions of their own.
  perform private.permit('audit_skip');
  -- Its outbox events go too: their payloads are its data, and no one is left to deliver them to.
  perform private.permit('purge_events');
  select * into v_purge from public.purge_operations where id = p_purge_id for update;
  if v_purge.id is null or v_purge.status <> 'executing' then
    perform private.raise('purge_not_found', 'No executing purge has this id.');
  end if;
  for v_table in
    select format('%I.%I', c.table_schema, c.table_name) as name
    from information_schema.columns c
    join information_schema.tables t on t.table_schema = c.table_schema and t.table_name = c.table_name and t.table_type = 'BASE TABLE'
    where c.table_schema in ('public', 'private') and c.column_name = 'organization_id'
      and format('%I.%I', c.table_schema, c.table_name) <> all (v_kept)
      and not exists (select 1 from pg_class k join pg_namespace n on n.oid = k.relnamespace
                      where n.nspname = c.table_schema and k.relname = c.table_name and k.relispartition)
      -- The memberships go with the organization (an organization keeps an owner while it exists).
      and c.table_name not in ('audit_log', 'purge_operations', 'deleted_organizations', 'data_exports', 'organization_members')
    -- Leaves first: a table nothing references goes before the tables it references.
    order by (select count(*) from pg_constraint k where k.confrelid = format('%I.%I', c.table_schema, c.table_name)::regclass), 1
  loop
    begin
      execute format('delete from %s where ctid = any (array(select ctid from %s where organization_id = %L limit %s))',
        v_table.name, v_table.name, v_purge.organization_id, p_batch);
      get diagnostics v_rows = row_count;
    exception when foreign_key_violation then
      -- Rows of another table still reference these: that table's turn comes first.
      v_rows := 0;
    end;
    if v_rows > 0 then
      update public.purge_operations set progress = jsonb_set(progress, array[v_table.name],
        to_jsonb(coalesce((progress ->> v_table.name)::bigint, 0) + v_rows)) where id = p_purge_id;
      return jsonb_build_object('table', v_table.name, 'rows', v_rows);
    end if;
  end loop;
  if exists (select 1 from public.organizations where id = v_purge.organization_id) then
    -- Unbilled overage and an unsettled credit account still refuse (unsettled_balance): the
    -- purge waits for billing, it never loses money.
    -- Its exports that never got an archive (the others left with their objects).
    delete from private.data_exports where organization_id = v_purge.organization_id and object_name is null;
    delete from public.organizations where id = v_purge.organization_id;
    return jsonb_build_object('table', 'public.organizations', 'rows', 1);
  end if;
  return jsonb_build_object('done', true);
end
$$;
comment on function private.purge_batch(uuid, integer) is 'Deletes one batch of a purge (one table, up to p_batch rows); done when the organization is gone.';
grant execute on function private.purge_batch(uuid, integer) to service_role;

-- Completes a purge (its objects counted in progress.files_removed by forget_purged_objects,
-- across every run that worked on it) and mails its former owners.
create function private.finish_purge(p_purge_id uuid)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_purge public.purge_operations := private.move_purge(p_purge_id, 'completed',
    jsonb_build_object('files_removed', coalesce((select (progress ->> 'files_removed')::bigint from public.purge_operations
                                                  where id = p_purge_id), 0)), now());
  v_recipient text;
begin
  foreach v_recipient in array v_purge.owner_emails loop
    perform private.enqueue_email('data_purge_completed', v_recipient,
      jsonb_build_object('organizationName', v_purge.organization_name, 'purgedAt', now()),
      format('purge:%s:completed:%s', p_purge_id, v_recipient));
  end loop;
end
$$;
comment on function private.finish_purge(uuid) is 'Completes a purge and mails its former owners.';
grant execute on function private.finish_purge(uuid) to service_role;

-- The files of the organization being purged (the function removes the objects first).
create function private.purge_files(p_purge_id uuid, p_limit integer default 500)
returns table (file_id uuid, store text, object_name text)
language sql
stable
security definer
set search_path = ''
as $$
  select id, store, object_name from (
    select f.id, f.store, f.object_name from public.files f
    join public.purge_operations p on p.organization_id = f.organization_id
    where p.id = p_purge_id
    union all
    -- Its exports too (the one offered before the purge included): they are its data.
    select e.id, e.store, e.object_name from private.data_exports e
    join public.purge_operations p on p.organization_id = e.organization_id
    where p.id = p_purge_id and e.object_name is not null
  ) o
  order by id
  limit p_limit
$$;
comment on function private.purge_files(uuid, integer) is 'The next stored objects of a purged organization to remove: its files and its exports.';
grant execute on function private.purge_files(uuid, integer) to service_role;

-- After lifecycle-purge removed a batch of objects from Storage: their records go.
create function private.forget_purged_objects(p_purge_id uuid, p_object_names text[])
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_org uuid;
  v_files integer;
  v_exports integer;
begin
  perform private.require_service_role('Only the lifecycle job purges.');
  perform private.permit('audit_skip');
  select organization_id into v_org from public.purge_operations where id = p_purge_id and status = 'executing';
  if v_org is null then
    perform private.raise('purge_not_found', 'No executing purge has this id.');
  end if;
  delete from public.files where organization_id = v_org and object_name = any (p_object_names);
  get diagnostics v_files = row_count;
  delete from private.data_exports where organization_id = v_org and object_name = any (p_object_names);
  get diagnostics v_exports = row_count;
  update public.purge_operations set progress = jsonb_set(progress, '{files_removed}',
    to_jsonb(coalesce((progress ->> 'files_removed')::bigint, 0) + v_files + v_exports)) where id = p_purge_id;
  return v_files + v_exports;
end
$$;
comment on function private.forget_purged_objects(uuid, text[]) is 'Deletes the records (files, exports) of objects a purge removed from Storage; returns how many.';
grant execute on function private.forget_purged_objects(uuid, text[]) to service_role;

-- Retention respects legal holds: a deleted organization's money records stay while one stands.
create or replace function private.purge_deleted_organization_records(p_now timestamptz default now(), p_limit integer default 100)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_org uuid;
  v_count integer := 0;
begin
  perform private.permit('purge');
  for v_org in
    select d.organization_id from private.deleted_organizations d
    where d.records_purged_at is null and d.records_retained_until <= p_now
      and not exists (select 1 from private.legal_holds h where h.released_at is null
                      and (h.organization_id is null or h.organization_id = d.organization_id))
    order by d.records_retained_until
    limit p_limit
    for update skip locked
  loop
    delete from public.credit_ledger where organization_id = v_org;
    delete from public.credit_overages where organization_id = v_org;
    update private.deleted_organizations set records_purged_at = p_now where organization_id = v_org;
    v_count := v_count + 1;
  end loop;
  perform private.permit('purge', false);
  return v_count;
end
$$;

select private.register_job('lifecycle-inactivity', '20 2 * * *', 'sql', 'private.check_inactivity()',
  'Folds activity into the trackers; warns inactive organizations, schedules purges, cancels those used again.');
select private.register_job('lifecycle-purge', '*/10 * * * *', 'http', 'lifecycle-purge',
  'Prepares scheduled purges (exports) and executes due ones in batches (edge function lifecycle-purge).');

-- ---------------------------------------------------------------------------------------------
-- The personal-data registry and the audit log know this chapter's and the requests' tables
-- ---------------------------------------------------------------------------------------------
insert into private.personal_data_columns (table_name, column_name, category, strategy, note) values
  ('public.data_subject_requests', 'subject_user_id', 'identifier', 'set_null', 'The request stays as the record that it was answered.'),
  ('public.data_subject_requests', 'subject_email', 'contact_email', 'set_null', null),
  ('public.data_subject_requests', 'filed_by', 'identifier', 'set_null', null),
  ('public.data_subject_requests', 'details', 'free_text', 'pseudonymize', 'What the person asked (rectified values).'),
  ('public.data_subject_requests', 'rejection_reason', 'free_text', 'pseudonymize', null),
  ('private.data_exports', 'subject_user_id', 'identifier', 'set_null', null),
  ('private.data_exports', 'subject_email', 'contact_email', 'set_null', null),
  ('private.data_exports', 'manifest', 'metadata', 'pseudonymize', 'Table names, counts and checksums of the export.'),
  ('private.data_exports', 'object_name', 'file', 'set_null', 'The zip; it expires with its link and the orphan cleanup.'),
  ('private.data_exports', 'last_error', 'free_text', 'set_null', null),
  ('private.activity_events', 'user_id', 'identifier', 'delete_row', 'Deleted by the next inactivity check anyway.'),
  ('public.purge_operations', 'requested_by', 'identifier', 'set_null', null),
  ('public.purge_operations', 'acknowledged_by', 'identifier', 'set_null', null),
  ('public.purge_operations', 'cancelled_by', 'identifier', 'set_null', null),
  ('public.purge_operations', 'owner_emails', 'contact_email', 'pseudonymize', 'Where the completion mail went.'),
  ('public.purge_operations', 'reason', 'free_text', 'pseudonymize', null),
  ('public.purge_operations', 'cancel_reason', 'free_text', 'pseudonymize', null);

insert into private.personal_data_subjects (table_name, subject_column, subject_kind) values
  ('public.data_subject_requests', 'subject_user_id', 'user_id'),
  ('private.data_exports', 'subject_user_id', 'user_id'),
  ('private.activity_events', 'user_id', 'user_id');

insert into private.personal_data_indirect_tables (table_name, reached_by, reason) values
  ('public.purge_operations', 'organization', 'A purge''s people are its organization''s owners and operators; the erasure''s scrub reaches their emails.');

insert into private.non_personal_columns (table_name, column_name, reason) values
  ('public.data_subject_requests', 'kind', 'An enum.'), ('public.data_subject_requests', 'status', 'An enum.'),
  ('private.data_exports', 'scope', 'subject or organization.'), ('private.data_exports', 'status', 'A status.'),
  ('private.data_exports', 'store', 'Always private.'),
  ('private.activity_events', 'kind', 'What kind of activity.'),
  ('public.inactivity_policies', 'plan_key', 'A plan key.'),
  ('public.inactivity_trackers', 'state', 'A state.'),
  ('public.purge_operations', 'organization_name', 'The business''s name, kept as the record of its purge.'),
  ('public.purge_operations', 'progress', 'Table names and counts.');

insert into private.audit_exempt_tables (table_name, reason) values
  ('public.data_subject_requests', 'Every step is an audit action (request_filed, request_<status>, erased, exported).'),
  ('public.purge_operations', 'Every step is an audit action (purge_<status>).'),
  ('public.inactivity_trackers', 'Activity bookkeeping rewritten daily; its warnings are audit actions.');

-- An organization being purged needs no owner any more: its memberships go with it, and the
-- erasure of a sole owner who closes their organization removes theirs while the purge runs.
-- (An executing purge cannot be cancelled, so no ownerless organization is left behind.)
create or replace function private.keep_an_owner()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  -- A membership is (organization, user): moving it elsewhere is a remove and an add.
  if tg_op = 'UPDATE' and (new.organization_id <> old.organization_id or new.user_id <> old.user_id) then
    perform private.raise('membership_immutable', 'A membership cannot move to another organization or user: remove it and add a new one.');
  end if;
  if old.role <> 'owner' or (tg_op = 'UPDATE' and new.role = 'owner') then
    return null;
  end if;
  -- Deleting the organization itself cascades here; nothing to keep then.
  perform 1 from public.organizations where id = old.organization_id for update;
  if not found then
    return null;
  end if;
  if exists (select 1 from public.purge_operations where organization_id = old.organization_id and status = 'executing') then
    return null;
  end if;
  if not exists (
    select 1 from public.organization_members
    where organization_id = old.organization_id and role = 'owner'
  ) then
    perform private.raise('last_owner', 'An organization must keep at least one owner: make someone else owner first.');
  end if;
  return null;
end
$$;
comment on function private.keep_an_owner() is
  'Trigger: refuses any change that would leave an organization without an owner (unless it is being purged).';
