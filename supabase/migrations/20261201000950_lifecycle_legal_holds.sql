-- =============================================================================================
-- Lifecycle: a legal hold stops an organization's purge and the retention of its mail
-- =============================================================================================
-- Legal holds (private.legal_holds, per organization or for every one) already kept audit
-- partitions and deleted organizations' money records past their retention. An organization
-- under a hold must not be purged either, nor lose its sent mail to the retention job: the
-- records may be evidence. (Job runs hold no organization's data; their retention goes on.)

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

insert into private.error_codes (code, class, meaning) values
  ('legal_hold', 'rule', 'A legal hold stands on the organization: it is not purged until the hold is released.');

create function private.under_legal_hold(p_organization_id uuid)
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select exists (select 1 from private.legal_holds h
                 where h.released_at is null and (h.organization_id is null or h.organization_id = p_organization_id))
$$;
comment on function private.under_legal_hold(uuid) is 'Whether a legal hold stands on the organization (its own, or one on every organization).';

-- No purge begins executing under a hold, forced or not (the trigger), the due ones wait
-- (start_due_purges passes them over), and one that was executing when the hold was placed stops
-- (executing_purges leaves it out) until the hold is released.
create function private.refuse_purge_under_hold()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if new.status = 'executing' and old.status is distinct from 'executing' and private.under_legal_hold(new.organization_id) then
    perform private.raise('legal_hold', 'A legal hold stands on this organization: release it before the purge can run.');
  end if;
  return new;
end
$$;
comment on function private.refuse_purge_under_hold() is 'Trigger: a purge does not start executing while a legal hold stands on its organization.';

create trigger purge_operations_refuse_under_hold
before update of status on public.purge_operations
for each row execute function private.refuse_purge_under_hold();

create or replace function private.start_due_purges(p_now timestamptz default now())
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
      and not private.under_legal_hold(organization_id)
    for update skip locked
  loop
    perform private.move_purge(v_purge.id, 'executing', '{}'::jsonb, p_now);
    v_count := v_count + 1;
  end loop;
  return v_count;
end
$$;

create or replace function private.executing_purges()
returns setof uuid
language sql
stable
security definer
set search_path = ''
as $$
  select id from public.purge_operations
  where status = 'executing' and not private.under_legal_hold(organization_id)
  order by started_at
$$;
comment on function private.executing_purges() is 'The purges executing, for lifecycle-purge (not those a legal hold stopped).';

create or replace function private.purge_sent_emails(p_now timestamptz default now())
returns bigint
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_deleted bigint;
  v_before timestamptz := p_now - (private.setting('sent_email_retention') #>> '{}')::interval;
begin
  delete from private.email_messages m
  where m.status not in ('queued', 'sending') and m.created_at < v_before
    and not exists (select 1 from private.legal_holds h
                    where h.released_at is null and (h.organization_id is null or h.organization_id = m.organization_id));
  get diagnostics v_deleted = row_count;
  delete from private.webhook_receipts where received_at < v_before;
  return v_deleted;
end
$$;
comment on function private.purge_sent_emails(timestamptz) is
  'Deletes finished messages (not an organization''s under a legal hold) and webhook receipts older than sent_email_retention.';
