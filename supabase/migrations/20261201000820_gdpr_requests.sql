-- =============================================================================================
-- GDPR: data-subject requests, exports and erasure
-- =============================================================================================

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

-- A person asks for their data (access, portability), its erasure or its rectification: a
-- data_subject_requests row, filed by a signed-in user about themselves or by an organization's
-- owners and admins about a person the organization holds data about, with the legal deadline
-- (a month) a job watches. An export is a data_exports row the gdpr-export function turns into
-- a zip in the private store (one JSON file per table, found through the personal-data
-- registry, and a manifest), mailed as a signed link. Erasure (the gdpr-erase function) applies
-- every registered column's strategy, scrubs what remains anywhere in the database, removes the
-- subject's files and deletes the Auth user; the records the law makes us keep stay, anonymised.
-- Every step is in the audit log.

insert into private.error_codes (code, class, meaning, raised_by) values
  ('auth_unavailable', 'unavailable', 'Supabase Auth did not answer or failed; try again later.', 'functions');

insert into private.error_codes (code, class, meaning) values
  ('request_not_found', 'not_found', 'No data-subject request has this id (or it is not visible to the caller).'),
  ('invalid_request_kind', 'invalid_input', 'A request is access, portability, erasure or rectification.'),
  ('invalid_request_transition', 'rule', 'A data-subject request cannot move from its status to that one.'),
  ('invalid_subject', 'invalid_input', 'A request is about the caller, or (for an organization''s owners and admins) about an email address the organization holds.'),
  ('sole_owner', 'rule', 'The subject is the only owner of organizations: the request must say, for each, whether it is transferred or closed.'),
  ('export_not_found', 'not_found', 'No export has this id.');

create type public.data_subject_request_kind as enum ('access', 'portability', 'erasure', 'rectification');
comment on type public.data_subject_request_kind is 'What the person asks for (GDPR articles 15, 20, 17, 16).';

create type public.data_subject_request_status as enum ('received', 'verifying', 'in_progress', 'completed', 'rejected');
comment on type public.data_subject_request_status is 'received, verifying (who is asking), in_progress, completed, rejected.';

insert into private.settings (key, value, description) values
  ('gdpr_request_deadline', '"1 month"', 'How long the law gives to answer a data-subject request.'),
  ('gdpr_deadline_warning', '"7 days"', 'How long before a request''s deadline operators are warned.'),
  ('gdpr_export_link_validity', '604800', 'How long (seconds) the signed link of an export works: 7 days.');

-- ---------------------------------------------------------------------------------------------
-- Requests
-- ---------------------------------------------------------------------------------------------
create table public.data_subject_requests (
  id uuid primary key default gen_random_uuid(),
  kind public.data_subject_request_kind not null,
  status public.data_subject_request_status not null default 'received',
  subject_user_id uuid references auth.users (id) on delete set null,
  subject_email text check (char_length(subject_email) <= 320),
  organization_id uuid references public.organizations (id) on delete cascade,
  filed_by uuid references auth.users (id) on delete set null,
  details jsonb not null default '{}'::jsonb check (jsonb_typeof(details) = 'object'),
  received_at timestamptz not null default now(),
  due_at timestamptz not null,
  warned_at timestamptz,
  completed_at timestamptz,
  rejection_reason text check (char_length(rejection_reason) <= 500),
  export_id uuid,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table public.data_subject_requests is 'GDPR requests of a person: access, portability, erasure, rectification, with their legal deadline.';
comment on column public.data_subject_requests.id is 'The request.';
comment on column public.data_subject_requests.kind is 'access, portability, erasure or rectification.';
comment on column public.data_subject_requests.status is 'received, verifying, in_progress, completed or rejected (transitions enforced).';
comment on column public.data_subject_requests.subject_user_id is 'The person, when they are a user.';
comment on column public.data_subject_requests.subject_email is 'The person''s email (for someone an organization holds data about who is not a user).';
comment on column public.data_subject_requests.organization_id is 'The organization that filed it about a person it holds data about (null: the user filed it).';
comment on column public.data_subject_requests.filed_by is 'Who filed it.';
comment on column public.data_subject_requests.details is 'What the request says: for rectification the fields and values; for erasure what happens to organizations the subject alone owns ({"organizations": {"<id>": "close" | "transfer:<user id>"}}).';
comment on column public.data_subject_requests.received_at is 'When it was received.';
comment on column public.data_subject_requests.due_at is 'The legal deadline (received_at + gdpr_request_deadline).';
comment on column public.data_subject_requests.warned_at is 'When operators were warned the deadline is near.';
comment on column public.data_subject_requests.completed_at is 'When it was completed or rejected.';
comment on column public.data_subject_requests.rejection_reason is 'Why it was rejected.';
comment on column public.data_subject_requests.export_id is 'The export that answers an access or portability request.';
comment on column public.data_subject_requests.created_at is 'When the row was made.';
comment on column public.data_subject_requests.updated_at is 'When it last changed.';
grant select on public.data_subject_requests to authenticated;
grant select, insert, update on public.data_subject_requests to service_role;
alter table public.data_subject_requests enable row level security;
create policy "Subjects and their organizations read requests"
on public.data_subject_requests for select to authenticated
using (subject_user_id = (select auth.uid()) or filed_by = (select auth.uid())
       or organization_id in (select private.organization_ids_with_role('{owner,admin}')));
create index data_subject_requests_subject_user_id_idx on public.data_subject_requests (subject_user_id);
create index data_subject_requests_organization_id_idx on public.data_subject_requests (organization_id);
create index data_subject_requests_filed_by_idx on public.data_subject_requests (filed_by);
create index data_subject_requests_open_idx on public.data_subject_requests (due_at) where status not in ('completed', 'rejected');

create trigger data_subject_requests_set_updated_at
before update on public.data_subject_requests
for each row execute function private.set_updated_at();

create function private.guard_data_subject_request()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if new.status is distinct from old.status then
    if not (old.status, new.status) in (
      ('received', 'verifying'), ('received', 'in_progress'), ('received', 'rejected'),
      ('verifying', 'in_progress'), ('verifying', 'rejected'),
      ('in_progress', 'completed'), ('in_progress', 'rejected')) then
      perform private.raise('invalid_request_transition', format('A request cannot go from %s to %s.', old.status, new.status));
    end if;
    if new.status in ('completed', 'rejected') then
      new.completed_at := now();
    end if;
  end if;
  return new;
end
$$;
comment on function private.guard_data_subject_request() is 'Trigger: only the allowed transitions of a data-subject request.';

create trigger data_subject_requests_guard
before update of status on public.data_subject_requests
for each row execute function private.guard_data_subject_request();

-- Files a request: about the caller, or (owners and admins) about an email the organization holds.
create function private.file_data_subject_request(p_kind text, p_organization_id uuid, p_subject_email text, p_details jsonb)
returns public.data_subject_requests
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_user uuid := private.require_user();
  v_request public.data_subject_requests;
  v_kind public.data_subject_request_kind;
begin
  if p_kind is null or p_kind not in ('access', 'portability', 'erasure', 'rectification') then
    perform private.raise('invalid_request_kind', 'A request is access, portability, erasure or rectification.');
  end if;
  v_kind := p_kind::public.data_subject_request_kind;
  perform private.check_metadata(coalesce(p_details, '{}'::jsonb));
  if p_organization_id is null then
    if p_subject_email is not null then
      perform private.raise('invalid_subject', 'A request about someone else is filed by their organization (p_organization_id).');
    end if;
    insert into public.data_subject_requests (kind, subject_user_id, subject_email, filed_by, details, due_at)
    values (v_kind, v_user, (select email from auth.users where id = v_user), v_user, coalesce(p_details, '{}'::jsonb),
            now() + (private.setting('gdpr_request_deadline') #>> '{}')::interval)
    returning * into v_request;
  else
    perform private.require_member(p_organization_id, '{owner,admin}', 'Only owners and admins file requests for the people their organization holds data about.');
    if p_subject_email is null or not private.is_email(p_subject_email) then
      perform private.raise('invalid_subject', 'Give the person''s email address.');
    end if;
    insert into public.data_subject_requests (kind, subject_user_id, subject_email, organization_id, filed_by, details, due_at)
    values (v_kind, (select id from auth.users where lower(email) = lower(btrim(p_subject_email)) limit 1), lower(btrim(p_subject_email)),
            p_organization_id, v_user, coalesce(p_details, '{}'::jsonb), now() + (private.setting('gdpr_request_deadline') #>> '{}')::interval)
    returning * into v_request;
  end if;
  perform private.audit_action(v_request.organization_id, 'request_filed', 'public.data_subject_requests', v_request.id::text,
    jsonb_build_object('kind', v_kind, 'due_at', v_request.due_at));
  perform private.append_domain_event(v_request.organization_id, 'gdpr.request_filed',
    jsonb_build_object('request_id', v_request.id, 'kind', v_kind, 'due_at', v_request.due_at));
  return v_request;
end
$$;
comment on function private.file_data_subject_request(text, uuid, text, jsonb) is 'The body of file_data_subject_request.';
grant execute on function private.file_data_subject_request(text, uuid, text, jsonb) to authenticated;

create function public.file_data_subject_request(
  p_kind text, p_organization_id uuid default null, p_subject_email text default null, p_details jsonb default '{}'::jsonb
)
returns public.data_subject_requests
language sql
security invoker
set search_path = ''
as $$
  select private.file_data_subject_request(p_kind, p_organization_id, p_subject_email, p_details)
$$;
comment on function public.file_data_subject_request(text, uuid, text, jsonb) is
  'Files a GDPR request (access, portability, erasure, rectification): about yourself, or (owners and admins, with p_organization_id) about a person your organization holds data about, by email. Answered within a month.';
grant execute on function public.file_data_subject_request(text, uuid, text, jsonb) to authenticated;

-- Operators (and the service role) move requests along; each step is audited.
create function private.advance_data_subject_request(p_request_id uuid, p_status text, p_reason text)
returns public.data_subject_requests
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_request public.data_subject_requests;
begin
  perform private.require_operator();
  if p_status is null or p_status not in ('verifying', 'in_progress', 'completed', 'rejected') then
    perform private.raise('invalid_request_transition', 'The next status is verifying, in_progress, completed or rejected.');
  end if;
  update public.data_subject_requests set status = p_status::public.data_subject_request_status,
    rejection_reason = case when p_status = 'rejected' then private.check_reason(p_reason) else rejection_reason end
  where id = p_request_id
  returning * into v_request;
  if v_request.id is null then
    perform private.raise('request_not_found', 'No data-subject request has this id.');
  end if;
  perform private.audit_action(v_request.organization_id, 'request_' || p_status, 'public.data_subject_requests', v_request.id::text,
    jsonb_build_object('reason', p_reason));
  return v_request;
end
$$;
comment on function private.advance_data_subject_request(uuid, text, text) is 'The body of advance_data_subject_request.';
grant execute on function private.advance_data_subject_request(uuid, text, text) to authenticated, service_role;

create function public.advance_data_subject_request(p_request_id uuid, p_status text, p_reason text default null)
returns public.data_subject_requests
language sql
security invoker
set search_path = ''
as $$
  select private.advance_data_subject_request(p_request_id, p_status, p_reason)
$$;
comment on function public.advance_data_subject_request(uuid, text, text) is
  'Moves a data-subject request to verifying, in_progress, completed or rejected (with a reason) — platform admins and the service role.';
grant execute on function public.advance_data_subject_request(uuid, text, text) to authenticated, service_role;

-- The deadline watch (gdpr-deadlines, daily): operators are told, once, of every open request
-- whose deadline is within gdpr_deadline_warning.
create function private.warn_gdpr_deadlines(p_now timestamptz default now())
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_request public.data_subject_requests;
  v_count integer := 0;
begin
  for v_request in
    select * from public.data_subject_requests
    where status not in ('completed', 'rejected') and warned_at is null
      and due_at <= p_now + (private.setting('gdpr_deadline_warning') #>> '{}')::interval
    for update skip locked
  loop
    update public.data_subject_requests set warned_at = p_now where id = v_request.id;
    perform private.append_domain_event(v_request.organization_id, 'gdpr.deadline_near',
      jsonb_build_object('request_id', v_request.id, 'kind', v_request.kind, 'due_at', v_request.due_at, 'status', v_request.status));
    v_count := v_count + 1;
  end loop;
  return v_count;
end
$$;
comment on function private.warn_gdpr_deadlines(timestamptz) is 'Warns operators (a gdpr.deadline_near event) of open requests near their deadline; returns how many.';
grant execute on function private.warn_gdpr_deadlines(timestamptz) to service_role;

-- ---------------------------------------------------------------------------------------------
-- Exports
-- ---------------------------------------------------------------------------------------------
create table private.data_exports (
  id uuid primary key default gen_random_uuid(),
  scope text not null check (scope in ('subject', 'organization')),
  request_id uuid references public.data_subject_requests (id) on delete set null,
  organization_id uuid references public.organizations (id) on delete set null,
  subject_user_id uuid,
  subject_email text,
  status text not null default 'pending' check (status in ('pending', 'running', 'ready', 'failed')),
  store text not null default 'private' check (store = 'private'),
  object_name text check (char_length(object_name) <= 1024),
  manifest jsonb,
  attempts integer not null default 0,
  last_error text check (char_length(last_error) <= 2000),
  link_expires_at timestamptz,
  created_at timestamptz not null default now(),
  ready_at timestamptz,
  check (scope <> 'subject' or subject_user_id is not null or subject_email is not null),
  check (scope <> 'organization' or organization_id is not null)
);
comment on table private.data_exports is 'Exports the gdpr-export function builds: a subject''s data, or a whole organization''s before its purge.';
comment on column private.data_exports.id is 'The export.';
comment on column private.data_exports.scope is 'subject (one person''s data) or organization (everything of one organization).';
comment on column private.data_exports.request_id is 'The data-subject request it answers.';
comment on column private.data_exports.organization_id is 'The organization exported (scope organization), or whose store keeps the file.';
comment on column private.data_exports.subject_user_id is 'The person, when a user.';
comment on column private.data_exports.subject_email is 'The person''s email.';
comment on column private.data_exports.status is 'pending, running, ready or failed.';
comment on column private.data_exports.store is 'The store of the zip: always the private one.';
comment on column private.data_exports.object_name is 'The zip''s object: <organization>/data_export/<export id>/export.zip, or subjects/data_export/<export id>/export.zip for a person''s own data (readable by the service role only).';
comment on column private.data_exports.manifest is 'What is in it: per table the file, its row count and SHA-256.';
comment on column private.data_exports.attempts is 'How often building it was tried.';
comment on column private.data_exports.last_error is 'The last failure.';
comment on column private.data_exports.link_expires_at is 'When the mailed link stops working.';
comment on column private.data_exports.created_at is 'When it was asked for.';
comment on column private.data_exports.ready_at is 'When it was ready.';
alter table private.data_exports enable row level security;
grant select on private.data_exports to service_role;
create index data_exports_pending_idx on private.data_exports (created_at) where status in ('pending', 'failed');
create index data_exports_request_id_idx on private.data_exports (request_id);
create index data_exports_organization_id_idx on private.data_exports (organization_id);
insert into private.file_references values ('private.data_exports', 'store', 'object_name');

alter table public.data_subject_requests
  add constraint data_subject_requests_export_id_fkey foreign key (export_id) references private.data_exports (id) on delete set null;

-- An access or portability request moves to in_progress and gets its export.
create function private.request_subject_export(p_request_id uuid)
returns uuid
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_request public.data_subject_requests;
  v_export uuid;
begin
  perform private.require_operator();
  select * into v_request from public.data_subject_requests where id = p_request_id for update;
  if v_request.id is null or v_request.kind not in ('access', 'portability') then
    perform private.raise('request_not_found', 'No access or portability request has this id.');
  end if;
  if v_request.export_id is not null then
    return v_request.export_id;
  end if;
  insert into private.data_exports (scope, request_id, organization_id, subject_user_id, subject_email)
  values ('subject', v_request.id, v_request.organization_id, v_request.subject_user_id, v_request.subject_email)
  returning id into v_export;
  update public.data_subject_requests set export_id = v_export,
    status = case when status in ('received', 'verifying') then 'in_progress'::public.data_subject_request_status else status end
  where id = p_request_id;
  return v_export;
end
$$;
comment on function private.request_subject_export(uuid) is 'Starts the export that answers an access or portability request (operators, service role).';
grant execute on function private.request_subject_export(uuid) to service_role;

-- The tables and queries of an export: for a subject, every table the registry says how to find
-- them in; for an organization, every table with its organization_id (and the organization).
create function private.export_queries(p_export_id uuid)
returns table (table_name text, query text)
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_export private.data_exports;
begin
  select * into v_export from private.data_exports where id = p_export_id;
  if v_export.id is null then
    perform private.raise('export_not_found', 'No export has this id.');
  end if;
  if v_export.scope = 'subject' then
    -- Whole rows, but never a secret (password hashes, tokens); of Auth's users only the
    -- registered personal columns.
    return query
      select s.table_name, format('select %s as row from %s t where %s',
        case when s.table_name = 'auth.users'
          then format('jsonb_build_object(''id'', t.id, %s)', (select string_agg(format('%L, t.%I', c.column_name, c.column_name), ', ')
                      from private.personal_data_columns c where c.table_name = 'auth.users' and c.category <> 'credential'))
          else format('to_jsonb(t) - %L::text[]', (select coalesce(array_agg(a.attname::text), '{}') from pg_attribute a
                      where a.attrelid = s.table_name::regclass and a.attnum > 0 and not a.attisdropped
                        and a.attname ~ '(^|_)(token|hash|secret|password|key|signature)s?($|_)'))
        end, s.table_name,
        string_agg(case s.subject_kind
          when 'user_id' then format('t.%I = %L::uuid', s.subject_column, v_export.subject_user_id)
          else format('lower(t.%I::text) = lower(%L)', s.subject_column, v_export.subject_email) end, ' or '))
      from private.subject_tables() s
      where (s.subject_kind = 'user_id' and v_export.subject_user_id is not null)
         or (s.subject_kind = 'email' and v_export.subject_email is not null)
      group by s.table_name
      order by s.table_name;
  else
    return query
      select 'public.organizations', format('select to_jsonb(t) as row from public.organizations t where t.id = %L', v_export.organization_id)
      union all
      select format('%I.%I', c.table_schema, c.table_name),
             format('select to_jsonb(t) as row from %I.%I t where t.organization_id = %L', c.table_schema, c.table_name, v_export.organization_id)
      from information_schema.columns c
      join information_schema.tables tb on tb.table_schema = c.table_schema and tb.table_name = c.table_name and tb.table_type = 'BASE TABLE'
      where c.table_schema = 'public' and c.column_name = 'organization_id'
        and not exists (select 1 from pg_class k join pg_namespace n on n.oid = k.relnamespace
                        where n.nspname = c.table_schema and k.relname = c.table_name and k.relispartition)
      order by 1;
  end if;
end
$$;
comment on function private.export_queries(uuid) is 'Per table, the query that yields an export''s rows (as JSON).';
grant execute on function private.export_queries(uuid) to service_role;

-- One table's rows of an export, read with the definer's rights (the service role reads neither
-- Auth's users nor every private table). gdpr-export reads it through a cursor; what does not
-- fit in work_mem waits on disk, not in memory.
create function private.export_rows(p_export_id uuid, p_table text)
returns setof jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_query text := (select q.query from private.export_queries(p_export_id) q where q.table_name = p_table);
begin
  if v_query is null then
    perform private.raise('export_not_found', 'The export has no such table.');
  end if;
  return query execute v_query;
end
$$;
comment on function private.export_rows(uuid, text) is 'The rows (as JSON) of one table of an export, for gdpr-export.';
grant execute on function private.export_rows(uuid, text) to service_role;

create function private.claim_data_export(p_limit integer default 5)
returns setof private.data_exports
language sql
security definer
set search_path = ''
as $$
  update private.data_exports e set status = 'running', attempts = e.attempts + 1
  where e.id in (select id from private.data_exports where status in ('pending', 'failed') and attempts < 5
                 order by created_at limit p_limit for update skip locked)
  returning e.*
$$;
comment on function private.claim_data_export(integer) is 'Takes pending exports for gdpr-export.';
grant execute on function private.claim_data_export(integer) to service_role;

-- The export is in the store: its record, the request completed (access, portability), the mail.
create function private.finish_data_export(p_export_id uuid, p_object_name text, p_manifest jsonb, p_download_url text, p_expires_at timestamptz)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_export private.data_exports;
  v_recipient text;
  v_org_name text;
begin
  update private.data_exports set status = 'ready', object_name = p_object_name, manifest = p_manifest, ready_at = now(),
    link_expires_at = p_expires_at, last_error = null
  where id = p_export_id
  returning * into v_export;
  v_org_name := (select name from public.organizations where id = v_export.organization_id);
  if v_export.scope = 'subject' then
    v_recipient := coalesce((select email from auth.users where id = v_export.subject_user_id), v_export.subject_email);
    update public.data_subject_requests set status = 'completed' where id = v_export.request_id and status = 'in_progress';
    if v_recipient is not null then
      perform private.enqueue_email('data_export_ready', v_recipient,
        jsonb_build_object('organizationName', null, 'downloadUrl', p_download_url, 'expiresAt', p_expires_at),
        'export:' || p_export_id::text, v_export.organization_id);
    end if;
  else
    for v_recipient in select email from private.member_emails(v_export.organization_id, '{owner}') loop
      perform private.enqueue_email('data_export_ready', v_recipient,
        jsonb_build_object('organizationName', v_org_name, 'downloadUrl', p_download_url, 'expiresAt', p_expires_at),
        format('export:%s:%s', p_export_id, v_recipient), v_export.organization_id);
    end loop;
  end if;
  perform private.audit_action(v_export.organization_id, 'exported', 'private.data_exports', p_export_id::text,
    jsonb_build_object('scope', v_export.scope, 'request_id', v_export.request_id, 'tables', jsonb_array_length(coalesce(p_manifest -> 'files', '[]'))));
  perform private.append_domain_event(v_export.organization_id, 'gdpr.export_ready',
    jsonb_build_object('export_id', p_export_id, 'scope', v_export.scope, 'request_id', v_export.request_id));
end
$$;
comment on function private.finish_data_export(uuid, text, jsonb, text, timestamptz) is 'Records a built export, completes its request, mails the link.';
grant execute on function private.finish_data_export(uuid, text, jsonb, text, timestamptz) to service_role;

create function private.fail_data_export(p_export_id uuid, p_error text)
returns void
language sql
security definer
set search_path = ''
as $$
  update private.data_exports set status = 'failed', last_error = left(p_error, 2000) where id = p_export_id
$$;
comment on function private.fail_data_export(uuid, text) is 'Records a failed export attempt (tried again up to 5 times).';
grant execute on function private.fail_data_export(uuid, text) to service_role;

-- ---------------------------------------------------------------------------------------------
-- Erasure
-- ---------------------------------------------------------------------------------------------
-- Guards that let the erasure (and only it) rewrite append-only rows' personal data: the domain
-- events' payloads, the credit account transactions' descriptions and metadata.
create or replace function private.guard_domain_events()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if tg_op = 'DELETE' and private.permitted('purge_events') then
    return old;
  end if;
  if tg_op = 'UPDATE' and private.permitted('gdpr_erasure')
     and to_jsonb(new) - 'payload' = to_jsonb(old) - 'payload' then
    return new;
  end if;
  perform private.raise('append_only', 'Domain events never change; they leave only through private.purge_domain_events.');
  return null;
end
$$;

create or replace function private.guard_credit_transaction()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if tg_op = 'DELETE' then
    -- Only with their account, which goes only with a settled organization's deletion.
    if exists (select 1 from public.credit_accounts where organization_id = old.organization_id) then
      perform private.raise('append_only', 'Credit account transactions are never deleted.');
    end if;
    return old;
  end if;
  if private.permitted('gdpr_erasure')
     and to_jsonb(new) - 'description' - 'metadata' - 'created_by' = to_jsonb(old) - 'description' - 'metadata' - 'created_by' then
    return new;
  end if;
  if (new.organization_id, new.type, new.amount, new.currency, new.description, new.source_type, new.source_id, new.idempotency_key, new.created_at)
     is distinct from (old.organization_id, old.type, old.amount, old.currency, old.description, old.source_type, old.source_id, old.idempotency_key, old.created_at) then
    perform private.raise('append_only', 'A credit account transaction changes only its status and statement.');
  end if;
  return new;
end
$$;

-- Replaces the subject's identifying strings wherever they remain in text and JSON columns of
-- public and private (payloads, props, descriptions, metadata), with p_replacement. Returns how
-- many rows changed. Slow by design (every text column is searched); erasure is rare.
create function private.scrub_values(p_values text[], p_replacement text)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_col record;
  v_value text;
  v_rows integer;
  v_total integer := 0;
  v_patterns text[] := array(select '%' || replace(replace(v, '%', '\%'), '_', '\_') || '%' from unnest(p_values) v where char_length(v) >= 3);
begin
  if cardinality(v_patterns) = 0 then
    return 0;
  end if;
  perform private.permit('gdpr_erasure');
  perform private.permit('audit_pseudonymize');
  for v_col in
    select c.table_schema, c.table_name, c.column_name, c.data_type,
           case when c.data_type = 'ARRAY' then 'text[]' else c.data_type end as cast_type
    from information_schema.columns c
    join information_schema.tables t on t.table_schema = c.table_schema and t.table_name = c.table_name and t.table_type = 'BASE TABLE'
    where c.table_schema in ('public', 'private')
      and (c.data_type in ('text', 'character varying', 'jsonb', 'json') or (c.data_type = 'ARRAY' and c.udt_name = '_text'))
      and c.is_generated = 'NEVER'
      and not (c.table_schema = 'private' and c.table_name in ('error_codes', 'error_classes', 'settings', 'jobs', 'personal_data_columns',
                                                             'personal_data_subjects', 'non_personal_columns', 'email_templates'))
    order by 1, 2, 3
  loop
    foreach v_value in array p_values loop
      continue when char_length(v_value) < 3;
      execute format(
        case when v_col.data_type in ('jsonb', 'json', 'ARRAY')
          then 'update %1$I.%2$I set %3$I = replace(%3$I::text, %4$L, %5$L)::%6$s where %3$I::text ilike %7$L'
          else 'update %1$I.%2$I set %3$I = replace(%3$I, %4$L, %5$L) where %3$I ilike %7$L' end,
        v_col.table_schema, v_col.table_name, v_col.column_name, v_value, p_replacement, v_col.cast_type,
        '%' || replace(replace(v_value, '%', '\%'), '_', '\_') || '%');
      get diagnostics v_rows = row_count;
      v_total := v_total + v_rows;
      -- Case variants of an email (Alice@Example.com): lower-case both sides.
      if v_value ~ '@' then
        execute format(
          case when v_col.data_type in ('jsonb', 'json', 'ARRAY')
            then 'update %1$I.%2$I set %3$I = regexp_replace(%3$I::text, %4$L, %5$L, ''gi'')::%6$s where %3$I::text ilike %7$L'
            else 'update %1$I.%2$I set %3$I = regexp_replace(%3$I, %4$L, %5$L, ''gi'') where %3$I ilike %7$L' end,
          v_col.table_schema, v_col.table_name, v_col.column_name, regexp_replace(v_value, '([.+*?^$()\[\]{}|\\])', '\\\1', 'g'),
          p_replacement, v_col.cast_type, '%' || replace(replace(v_value, '%', '\%'), '_', '\_') || '%');
        get diagnostics v_rows = row_count;
        v_total := v_total + v_rows;
      end if;
    end loop;
  end loop;
  perform private.permit('gdpr_erasure', false);
  perform private.permit('audit_pseudonymize', false);
  return v_total;
end
$$;
comment on function private.scrub_values(text[], text) is 'Replaces the given strings (a subject''s email, name, phone) in every text and JSON column of public and private.';

-- Erases a user's personal data (the gdpr-erase function calls it, then removes the files it
-- returns and deletes the Auth user). Organizations the user alone owns are transferred or
-- closed first, as the request's details say. Every registered column of every row about the
-- user gets its strategy; what the law keeps stays, anonymised; what remains anywhere is scrubbed;
-- the audit log keeps the facts under a pseudonym.
create function private.erase_subject(p_request_id uuid)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_request public.data_subject_requests;
  v_user uuid;
  v_email text;
  v_values text[];
  v_pseudonym uuid := gen_random_uuid();
  v_org record;
  v_plan text;
  v_target uuid;
  v_subject record;
  v_col record;
  v_where text;
  v_sets text;
  v_deletes boolean;
  v_files jsonb;
  v_closed uuid[] := '{}';
  v_purge_id uuid;
  v_purge_status text;
  v_scrubbed integer;
begin
  perform private.require_operator();
  select * into v_request from public.data_subject_requests where id = p_request_id for update;
  if v_request.id is null or v_request.kind <> 'erasure' then
    perform private.raise('request_not_found', 'No erasure request has this id.');
  end if;
  v_user := v_request.subject_user_id;
  v_email := lower(coalesce((select email from auth.users where id = v_user), v_request.subject_email));
  v_values := array_remove(array[
    v_email,
    (select full_name from public.profiles where id = v_user),
    (select phone from auth.users where id = v_user),
    (select raw_user_meta_data ->> 'full_name' from auth.users where id = v_user),
    (select raw_user_meta_data ->> 'name' from auth.users where id = v_user)
  ], null);

  -- Organizations the subject alone owns: transferred or closed, as the request says.
  for v_org in
    select m.organization_id from public.organization_members m
    where m.user_id = v_user and m.role = 'owner'
      and not exists (select 1 from public.organization_members o where o.organization_id = m.organization_id and o.role = 'owner' and o.user_id <> v_user)
  loop
    v_plan := v_request.details #>> array['organizations', v_org.organization_id::text];
    if v_plan is null then
      perform private.raise('sole_owner', format('The subject is the only owner of %s: say whether it is transferred or closed.', v_org.organization_id));
    elsif v_plan like 'transfer:%' then
      v_target := substr(v_plan, 10)::uuid;
      update public.organization_members set role = 'owner' where organization_id = v_org.organization_id and user_id = v_target;
      if not found then
        perform private.raise('sole_owner', format('%s is not a member of %s to transfer it to.', v_target, v_org.organization_id));
      end if;
    elsif v_plan = 'close' then
      v_closed := v_closed || v_org.organization_id;
    else
      perform private.raise('sole_owner', format('%s: "close" or "transfer:<user id>".', v_plan));
    end if;
  end loop;

  -- Closed organizations are purged at once (their only owner chose it; lifecycle-purge carries
  -- it out, files included), so the subject's ownership may go now. The completion mail goes to
  -- the other owners, never to the erased address.
  for v_org in select unnest(v_closed) as organization_id loop
    -- A purge already under way (an inactivity one, say) is the one that goes ahead.
    select p.id, p.status::text into v_purge_id, v_purge_status from public.purge_operations p
    where p.organization_id = v_org.organization_id and p.status not in ('completed', 'cancelled');
    if v_purge_id is null then
      v_purge_id := (private.start_purge(v_org.organization_id, 'Its only owner asked for the erasure of their data', now(), now())).id;
    end if;
    if v_purge_status is distinct from 'executing' then
      perform private.move_purge(v_purge_id, 'executing', jsonb_build_object('forced', true, 'reason', 'erasure'), now());
    end if;
    update public.purge_operations set owner_emails = array(select e from unnest(owner_emails) e where lower(e) <> v_email)
    where id = v_purge_id;
  end loop;

  perform private.permit('audit_skip');
  -- The subject's own uploads (user_upload) go, objects and records (gdpr-erase removes the
  -- objects through Storage); the organizations' documents they uploaded stay, without their
  -- name on them. Closed organizations' files go with their purge.
  select coalesce(jsonb_agg(jsonb_build_object('store', f.store, 'object_name', f.object_name)), '[]'::jsonb) into v_files
  from public.files f where f.uploaded_by = v_user and f.context = 'user_upload';
  delete from public.files where uploaded_by = v_user and context = 'user_upload';
  update public.files set uploaded_by = null where uploaded_by = v_user;

  perform private.permit('gdpr_erasure');
  perform private.permit('detach');
  -- No row-by-row audit copies of what is being erased; the erasure is one audit action.
  perform private.permit('audit_skip');
  -- Every table the registry says how to find the subject in: its registered columns' strategies.
  for v_subject in
    select s.table_name, string_agg(case s.subject_kind
             when 'user_id' then format('%I = %L::uuid', s.subject_column, v_user)
             else format('lower(%I::text) = %L', s.subject_column, v_email) end, ' or ') as predicate
    from private.subject_tables() s
    where s.table_name not in ('auth.users', 'public.files')
      and ((s.subject_kind = 'user_id' and v_user is not null) or (s.subject_kind = 'email' and v_email is not null))
    group by s.table_name
  loop
    v_deletes := exists (select 1 from private.personal_data_columns c where c.table_name = v_subject.table_name and c.strategy = 'delete_row');
    if v_deletes then
      execute format('delete from %s where %s', v_subject.table_name, v_subject.predicate);
    else
      select string_agg(case c.strategy
               when 'set_null' then format('%I = null', c.column_name)
               when 'pseudonymize' then case when a.atttypid = 'uuid'::regtype then format('%I = %L::uuid', c.column_name, v_pseudonym)
                                             when a.atttypid in ('jsonb'::regtype, 'json'::regtype, 'text[]'::regtype) then format('%I = ''{}''', c.column_name)
                                             else format('%I = %L', c.column_name, 'erased-' || v_pseudonym) end
               when 'hash' then format('%I = encode(extensions.digest(%I::text, ''sha256''), ''hex'')', c.column_name, c.column_name)
             end, ', ')
      into v_sets
      from private.personal_data_columns c
      join pg_attribute a on a.attrelid = c.table_name::regclass and a.attname = c.column_name
      where c.table_name = v_subject.table_name and c.strategy in ('set_null', 'pseudonymize', 'hash');
      if v_sets is not null then
        execute format('update %s set %s where %s', v_subject.table_name, v_sets, v_subject.predicate);
      end if;
    end if;
  end loop;
  -- Auth's own audit trail of the subject (GoTrue keeps it after the user is deleted).
  begin
    delete from auth.audit_log_entries where payload ->> 'actor_id' = v_user::text or payload ->> 'actor_username' = v_email;
  exception when insufficient_privilege or undefined_table then
    null; -- a project where Auth's schema is out of reach: Supabase's retention of it applies
  end;
  -- The credit ledger keeps its rows; who made them goes (its own detach rule).
  update public.credit_ledger set actor_id = null, metadata = '{}'::jsonb where actor_id = v_user;
  -- The audit log keeps the facts under a pseudonym.
  perform private.pseudonymize_audit_subject(v_user, v_pseudonym);
  perform private.pseudonymize_audit_values(v_values, 'erased-' || v_pseudonym::text);
  -- Whatever is left anywhere (event payloads, mail props, webhooks' copies).
  v_scrubbed := private.scrub_values(v_values, 'erased-' || v_pseudonym::text);
  perform private.permit('gdpr_erasure', false);
  perform private.permit('detach', false);
  perform private.permit('audit_skip', false);

  update public.data_subject_requests set subject_email = null, details = details - 'organizations',
    status = case when status in ('received', 'verifying') then 'in_progress'::public.data_subject_request_status else status end
  where id = p_request_id;
  perform private.audit_action(v_request.organization_id, 'erased', 'public.data_subject_requests', p_request_id::text,
    jsonb_build_object('subject', v_pseudonym, 'closed_organizations', to_jsonb(v_closed), 'scrubbed_rows', v_scrubbed));
  return jsonb_build_object('pseudonym', v_pseudonym, 'user_id', v_user, 'files', v_files, 'closed_organizations', to_jsonb(v_closed));
end
$$;
comment on function private.erase_subject(uuid) is
  'Erases a subject''s personal data for an erasure request (operators, service role); returns the files to remove and the Auth user to delete.';
grant execute on function private.erase_subject(uuid) to service_role;

-- After gdpr-erase removed the files and the Auth user: the request is completed.
-- p_user_id: the Auth user erase_subject returned (the request itself no longer names them).
create function private.complete_erasure(p_request_id uuid, p_user_id uuid)
returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
  -- Auth records the deletion itself in its audit trail, with the address (traits.user_email).
  begin
    delete from auth.audit_log_entries where payload ->> 'actor_id' = p_user_id::text or payload #>> '{traits,user_id}' = p_user_id::text;
  exception when insufficient_privilege or undefined_table then
    null; -- as in erase_subject
  end;
  update public.data_subject_requests set status = 'completed', subject_user_id = null
  where id = p_request_id and status = 'in_progress';
end
$$;
comment on function private.complete_erasure(uuid, uuid) is 'Completes an erasure request once its files and Auth user are gone (and Auth''s record of the deletion).';
grant execute on function private.complete_erasure(uuid, uuid) to service_role;

select private.register_job('gdpr-deadlines', '45 6 * * *', 'sql', 'private.warn_gdpr_deadlines()',
  'Warns operators of data-subject requests whose legal deadline is near.');
select private.register_job('gdpr-exports', '*/5 * * * *', 'http', 'gdpr-export',
  'Builds pending data exports (edge function gdpr-export).');
