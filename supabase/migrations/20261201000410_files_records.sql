-- =============================================================================================
-- Files: the record of every file, uploads, moves, deletion, usage, orphans
-- =============================================================================================

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

-- public.files is the record of every file: what it is, where its object is, who uploaded it,
-- what it belongs to. The edge functions (files-upload, files-move, files-delete, files-cleanup)
-- change it through the functions below, which check the caller; members read their
-- organization's records under RLS, and the SDK lists them with PostgREST filters.

create type public.file_status as enum ('uploading', 'ready', 'moving');
comment on type public.file_status is 'uploading (its bytes are on their way), ready, moving (between the stores).';

insert into private.settings (key, value, description) values
  ('orphan_file_grace', '"1 day"', 'An object no row references is removed only once it is this old (an upload in progress has no row yet).');

create table public.files (
  id uuid primary key default gen_random_uuid(),
  organization_id uuid not null references public.organizations (id) on delete cascade,
  context text not null references public.file_contexts (key),
  store text not null check (store in ('private', 'public')),
  object_name text not null check (char_length(object_name) <= 1024),
  file_name text not null check (char_length(file_name) between 1 and 255),
  content_type text not null check (char_length(content_type) <= 255),
  size_bytes bigint check (size_bytes >= 0),
  status public.file_status not null default 'uploading',
  owner_table text check (owner_table ~ '^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$'),
  owner_id uuid,
  uploaded_by uuid references auth.users (id) on delete set null,
  move_to_store text check (move_to_store in ('private', 'public')),
  move_to_object_name text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (store, object_name),
  check ((status = 'moving') = (move_to_store is not null and move_to_object_name is not null))
);
comment on table public.files is 'Every file: its context, its store and object, its uploader and what it belongs to. Changed through the files functions.';
comment on column public.files.id is 'The file.';
comment on column public.files.organization_id is 'The organization it belongs to (the first folder of its object).';
comment on column public.files.context is 'What it is (public.file_contexts).';
comment on column public.files.store is 'The bucket: private or public.';
comment on column public.files.object_name is 'The object''s name in the bucket: <organization>/<context>/<file id>/<file name, with only safe characters>.';
comment on column public.files.file_name is 'The name it was uploaded with.';
comment on column public.files.content_type is 'Its content type, checked against its first bytes on upload.';
comment on column public.files.size_bytes is 'Its size.';
comment on column public.files.status is 'uploading, ready or moving.';
comment on column public.files.owner_table is 'The table of the row it belongs to (a knowledge-base article, a customer, an invoice), if any.';
comment on column public.files.owner_id is 'That row''s id.';
comment on column public.files.uploaded_by is 'Who uploaded it.';
comment on column public.files.move_to_store is 'While moving: the store it goes to.';
comment on column public.files.move_to_object_name is 'While moving: its object name there.';
comment on column public.files.created_at is 'When it was uploaded.';
comment on column public.files.updated_at is 'When it last changed.';
grant select on public.files to authenticated;
grant select, insert, update, delete on public.files to service_role;
alter table public.files enable row level security;
-- Platform admins manage every organization's files, so they list them all.
create policy "Members and platform admins read files"
on public.files for select to authenticated
using (organization_id in (select private.member_organization_ids()) or (select private.is_platform_admin()));
create index files_organization_id_idx on public.files (organization_id, created_at desc);
create index files_owner_idx on public.files (owner_table, owner_id) where owner_id is not null;
create index files_uploaded_by_idx on public.files (uploaded_by);
create index files_context_idx on public.files (context);

create trigger files_set_updated_at
before update on public.files
for each row execute function private.set_updated_at();

-- Which tables reference objects, so the orphan cleanup never removes a referenced one. Later
-- areas add their rows (an invoice's PDF, an export) if they keep object names of their own.
create table private.file_references (
  table_name text not null check (table_name ~ '^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$'),
  store_column text not null,
  object_column text not null,
  primary key (table_name, store_column, object_column)
);
comment on table private.file_references is 'The columns that name Storage objects (store and object name); an object none of them names is an orphan.';
comment on column private.file_references.table_name is 'The table, schema-qualified.';
comment on column private.file_references.store_column is 'Its column holding the bucket.';
comment on column private.file_references.object_column is 'Its column holding the object name.';
alter table private.file_references enable row level security;
grant select on private.file_references to service_role;
insert into private.file_references values
  ('public.files', 'store', 'object_name'),
  ('public.files', 'move_to_store', 'move_to_object_name');

-- ---------------------------------------------------------------------------------------------
-- Uploading (files-upload calls these as the uploader, then settles as the service role)
-- ---------------------------------------------------------------------------------------------
create function private.begin_file_upload(
  p_organization_id uuid, p_context text, p_file_name text, p_content_type text, p_size_bytes bigint,
  p_published boolean default false, p_owner_table text default null, p_owner_id uuid default null
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_role public.organization_role := private.require_member(p_organization_id);
  v_context public.file_contexts;
  v_store text;
  v_name text := btrim(p_file_name);
  v_id uuid := gen_random_uuid();
  v_object text;
begin
  select * into v_context from public.file_contexts where key = p_context;
  if not found then
    perform private.raise('invalid_context', format('No file context %L.', p_context));
  end if;
  if v_name is null or char_length(v_name) not between 1 and 255 or v_name ~ '[/\\\x00-\x1f]' or v_name in ('.', '..') then
    perform private.raise('invalid_file_name', 'A file name is 1 to 255 characters, without slashes or control characters.');
  end if;
  if p_content_type is null or not (lower(p_content_type) = any (v_context.allowed_mime_types)) then
    perform private.raise('file_type_not_allowed', format('%s files are %s only.', p_context, array_to_string(v_context.allowed_mime_types, ', ')));
  end if;
  if p_size_bytes is not null and (p_size_bytes < 0 or p_size_bytes > v_context.max_bytes) then
    perform private.raise('file_too_large', format('%s files are at most %s bytes.', p_context, v_context.max_bytes));
  end if;
  if p_published and not v_context.publishable then
    perform private.raise('not_publishable', format('%s files are never public.', p_context));
  end if;
  v_store := private.file_store_for(p_context, p_published);
  -- Publishing is for owners and admins, as the public bucket's policies say.
  if v_store = 'public' and v_role not in ('owner', 'admin') then
    perform private.raise('not_authorized', 'Only owners and admins publish files.');
  end if;
  -- The object's name keeps only characters every Storage key accepts (the record keeps the
  -- name as given, for downloads): 'Résumé 2026.pdf' is stored as 'R_sum_2026.pdf'.
  v_object := format('%s/%s/%s/%s', p_organization_id, p_context, v_id,
    left(regexp_replace(v_name, '[^A-Za-z0-9._-]+', '_', 'g'), 100));
  insert into public.files (id, organization_id, context, store, object_name, file_name, content_type, size_bytes,
                            owner_table, owner_id, uploaded_by)
  values (v_id, p_organization_id, p_context, v_store, v_object, v_name, lower(p_content_type), p_size_bytes,
          p_owner_table, p_owner_id, auth.uid());
  return jsonb_build_object('file_id', v_id, 'store', v_store, 'object_name', v_object);
end
$$;
comment on function private.begin_file_upload(uuid, text, text, text, bigint, boolean, text, uuid) is
  'Records an upload for a member: routes it to its store, checks name, type and size for its context; returns where its bytes go.';
grant execute on function private.begin_file_upload(uuid, text, text, text, bigint, boolean, text, uuid) to authenticated;

insert into private.error_codes (code, class, meaning) values
  ('invalid_context', 'invalid_input', 'No file context has this key.');

-- The outcome of an upload (service role): ready with its size, or gone.
create function private.finish_file_upload(p_file_id uuid, p_size_bytes bigint)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_file public.files;
begin
  update public.files set status = 'ready', size_bytes = p_size_bytes
  where id = p_file_id and status = 'uploading'
  returning * into v_file;
  if v_file.id is null then
    perform private.raise('file_not_found', 'No upload in progress has this id.');
  end if;
  perform private.append_domain_event(v_file.organization_id, 'file.uploaded',
    jsonb_build_object('file_id', v_file.id, 'context', v_file.context, 'store', v_file.store, 'size_bytes', p_size_bytes,
                       'uploaded_by', v_file.uploaded_by));
end
$$;
comment on function private.finish_file_upload(uuid, bigint) is 'Marks an upload done (service role, files-upload).';
grant execute on function private.finish_file_upload(uuid, bigint) to service_role;

create function private.abandon_file_upload(p_file_id uuid)
returns void
language sql
security definer
set search_path = ''
as $$
  delete from public.files where id = p_file_id and status = 'uploading'
$$;
comment on function private.abandon_file_upload(uuid) is 'Forgets an upload that was refused or failed (service role, files-upload).';
grant execute on function private.abandon_file_upload(uuid) to service_role;

-- ---------------------------------------------------------------------------------------------
-- Moving between the stores: one operation, resumable (files-move does the Storage side)
-- ---------------------------------------------------------------------------------------------
-- Who may manage a file (move, delete): the organization's owners and admins, platform admins,
-- the service role. Returns the file.
create function private.manageable_file(p_file_id uuid)
returns public.files
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_file public.files;
begin
  select * into v_file from public.files where id = p_file_id;
  if v_file.id is null then
    perform private.raise('file_not_found', 'No file has this id.');
  end if;
  if not (private.caller_role() = 'service_role' or private.is_platform_admin()) then
    if not exists (select 1 from public.organization_members
                   where organization_id = v_file.organization_id and user_id = auth.uid()) then
      perform private.raise('file_not_found', 'No file has this id.');
    end if;
    perform private.require_member(v_file.organization_id, '{owner,admin}', 'Only owners and admins manage files.');
  end if;
  return v_file;
end
$$;
comment on function private.manageable_file(uuid) is 'The file, if the caller may manage it (owners, admins, platform admins, service role).';
grant execute on function private.manageable_file(uuid) to authenticated, service_role;

-- Starts (or, for a move already under way to the same store, resumes) a move. Returns the file
-- with where it moves; a move to the store it is in is a no-op (status ready, nothing to do).
create function private.begin_file_move(p_file_id uuid, p_store text)
returns public.files
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_file public.files := private.manageable_file(p_file_id);
  v_context public.file_contexts;
begin
  if p_store is null or p_store not in ('private', 'public') then
    perform private.raise('invalid_input', 'The store is private or public.');
  end if;
  select * into v_context from public.file_contexts where key = v_file.context;
  if p_store = 'public' and not v_context.publishable then
    perform private.raise('not_publishable', format('%s files are never public.', v_file.context));
  end if;
  if v_file.status = 'moving' then
    if v_file.move_to_store = p_store then
      return v_file;
    end if;
    perform private.raise('file_not_ready', 'The file is moving to the other store already.');
  end if;
  if v_file.status <> 'ready' then
    perform private.raise('file_not_ready', 'The file is still being uploaded.');
  end if;
  if v_file.store = p_store then
    return v_file;
  end if;
  update public.files set status = 'moving', move_to_store = p_store, move_to_object_name = object_name
  where id = p_file_id
  returning * into v_file;
  return v_file;
end
$$;
comment on function private.begin_file_move(uuid, text) is 'Marks a file moving to the other store (or returns the move under way), for files-move.';
grant execute on function private.begin_file_move(uuid, text) to authenticated, service_role;

insert into private.error_codes (code, class, meaning) values
  ('invalid_input', 'invalid_input', 'A parameter is missing or out of range.');

-- Switches the record to the copy (service role, after files-move copied and verified it).
create function private.switch_file_store(p_file_id uuid)
returns public.files
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_before public.files;
  v_file public.files;
begin
  select * into v_before from public.files where id = p_file_id for update;
  if v_before.status <> 'moving' then
    return v_before;
  end if;
  update public.files set store = move_to_store, object_name = move_to_object_name, status = 'ready',
    move_to_store = null, move_to_object_name = null
  where id = p_file_id
  returning * into v_file;
  perform private.append_domain_event(v_file.organization_id, 'file.moved',
    jsonb_build_object('file_id', v_file.id, 'from', v_before.store, 'to', v_file.store, 'moved_by', auth.uid()));
  return v_file;
end
$$;
comment on function private.switch_file_store(uuid) is 'Points a moving file at its copy in the other store; the old object is then deleted.';
grant execute on function private.switch_file_store(uuid) to service_role;

-- ---------------------------------------------------------------------------------------------
-- Deleting (files-delete removes the object, then the record)
-- ---------------------------------------------------------------------------------------------
create function private.forget_file(p_file_id uuid)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_file public.files;
begin
  delete from public.files where id = p_file_id returning * into v_file;
  if v_file.id is not null then
    perform private.append_domain_event(v_file.organization_id, 'file.deleted',
      jsonb_build_object('file_id', v_file.id, 'store', v_file.store, 'object_name', v_file.object_name, 'deleted_by', auth.uid()));
  end if;
end
$$;
comment on function private.forget_file(uuid) is 'Deletes a file''s record (service role, after its object is gone) and records who did it.';
grant execute on function private.forget_file(uuid) to service_role;

-- ---------------------------------------------------------------------------------------------
-- Usage, orphans, missing objects
-- ---------------------------------------------------------------------------------------------
create function public.get_file_usage(p_organization_id uuid)
returns table (store text, objects bigint, bytes bigint)
language plpgsql
stable
security invoker
set search_path = ''
as $$
begin
  if not private.is_platform_admin() then
    perform private.authorize(p_organization_id, '{owner,admin}');
  end if;
  return query select * from private.file_usage(p_organization_id);
end
$$;
comment on function public.get_file_usage(uuid) is
  'Objects and bytes an organization keeps per store (owners, admins, platform admins, service role), as Storage counts them.';
grant execute on function public.get_file_usage(uuid) to authenticated, service_role;

create function private.file_usage(p_organization_id uuid)
returns table (store text, objects bigint, bytes bigint)
language sql
stable
security definer
set search_path = ''
as $$
  select s.store, count(o.id), coalesce(sum((o.metadata ->> 'size')::bigint), 0)::bigint
  from (values ('private'), ('public')) as s (store)
  left join storage.objects o on o.bucket_id = s.store and o.name like p_organization_id::text || '/%'
  group by s.store
  order by s.store
$$;
comment on function private.file_usage(uuid) is 'The body of get_file_usage.';
grant execute on function private.file_usage(uuid) to authenticated, service_role;

-- Objects in the two stores that no referencing column names and that are older than the grace
-- period: what the cleanup job removes (through Storage, so the bytes go too).
create function private.orphan_objects(p_now timestamptz default now(), p_limit integer default 1000)
returns table (bucket_id text, name text, created_at timestamptz)
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_referenced text := '';
  v_ref record;
begin
  -- One anti-join per registered reference: nothing any of them names is ever returned.
  for v_ref in select * from private.file_references loop
    v_referenced := v_referenced || format(
      ' and not exists (select 1 from %s r where r.%I = o.bucket_id and r.%I = o.name)',
      v_ref.table_name, v_ref.store_column, v_ref.object_column);
  end loop;
  return query execute format(
    'select o.bucket_id, o.name, o.created_at from storage.objects o
     where o.bucket_id in (''private'', ''public'') and o.created_at < $1 %s
     order by o.created_at limit $2', v_referenced)
    using p_now - (private.setting('orphan_file_grace') #>> '{}')::interval, p_limit;
end
$$;
comment on function private.orphan_objects(timestamptz, integer) is 'Objects no registered column references, older than orphan_file_grace.';
grant execute on function private.orphan_objects(timestamptz, integer) to service_role;

create function private.files_missing_objects()
returns table (file_id uuid, organization_id uuid, store text, object_name text)
language sql
stable
security definer
set search_path = ''
as $$
  select f.id, f.organization_id, f.store, f.object_name from public.files f
  where f.status = 'ready'
    and not exists (select 1 from storage.objects o where o.bucket_id = f.store and o.name = f.object_name)
  order by f.created_at
$$;
comment on function private.files_missing_objects() is 'Files whose object is gone: reported by the cleanup job, never deleted by it.';
grant execute on function private.files_missing_objects() to service_role;

select private.register_job('files-cleanup', '27 * * * *', 'http', 'files-cleanup',
  'Removes objects no row references after orphan_file_grace, and reports files whose object is gone.');
