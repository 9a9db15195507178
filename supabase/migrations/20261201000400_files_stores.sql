-- =============================================================================================
-- Files: two stores (the private and the public bucket), what goes where, and who may do what
-- =============================================================================================

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

-- Every file is a row of public.files and an object in one of two Storage buckets:
--   private  sensitive documents and user uploads, the default; members read their
--            organization's folder, write it as their role allows;
--   public   published assets (knowledge-base articles, downloads); anyone reads, owners and
--            admins of the organization write.
-- Object names are <organization_id>/<context>/<file_id>/<file name>. What a file is (its
-- context) decides its store: public.file_contexts says, and private.file_store_for applies it.
-- Uploads go through the files-upload function, which checks the declared content type against
-- the first bytes; moves between the stores go through files-move, one resumable operation.

-- What the files functions answer with themselves.
insert into private.error_codes (code, class, meaning, raised_by) values
  ('storage_unavailable', 'unavailable', 'Storage did not take or give the file; try again later.', 'functions'),
  ('content_type_mismatch', 'invalid_input', 'The file''s bytes are not what its declared content type says (or are a program).', 'functions');

insert into private.error_codes (code, class, meaning) values
  ('invalid_file_name', 'invalid_input', 'A file name is 1 to 255 characters, without slashes or control characters.'),
  ('file_type_not_allowed', 'invalid_input', 'Files of this content type are not accepted for this context.'),
  ('file_too_large', 'invalid_input', 'The file is larger than its context allows.'),
  ('file_not_found', 'not_found', 'No file has this id (or it is not visible to the caller).'),
  ('file_not_ready', 'conflict', 'The file is still being uploaded or moved.'),
  ('not_publishable', 'rule', 'Files of this context are never public.');

-- ---------------------------------------------------------------------------------------------
-- Contexts: what a file is, and so where it goes
-- ---------------------------------------------------------------------------------------------
create table public.file_contexts (
  key text primary key check (key ~ '^[a-z][a-z0-9_]{0,31}$'),
  description text not null,
  publishable boolean not null default false,
  allowed_mime_types text[] not null check (cardinality(allowed_mime_types) > 0),
  max_bytes bigint not null check (max_bytes between 1 and 52428800)
);
comment on table public.file_contexts is 'What a file can be: its store (private unless publishable and published), the content types and size it may have.';
comment on column public.file_contexts.key is 'The context (invoice, receipt, kb_article, ...).';
comment on column public.file_contexts.description is 'What such files are.';
comment on column public.file_contexts.publishable is 'Whether a file of this context goes to the public store when what it belongs to is public.';
comment on column public.file_contexts.allowed_mime_types is 'The content types accepted.';
comment on column public.file_contexts.max_bytes is 'The largest file accepted.';
grant select on public.file_contexts to authenticated;
grant select, insert, update, delete on public.file_contexts to service_role;
alter table public.file_contexts enable row level security;
create policy "Signed-in users can read the file contexts"
on public.file_contexts for select to authenticated using (true);

insert into public.file_contexts (key, description, publishable, allowed_mime_types, max_bytes) values
  ('invoice', 'Invoices (PDF)', false, '{application/pdf}', 10485760),
  ('receipt', 'Receipts (PDF or image)', false, '{application/pdf,image/png,image/jpeg}', 10485760),
  ('legal_doc', 'Contracts and other legal documents', false,
   '{application/pdf,application/vnd.openxmlformats-officedocument.wordprocessingml.document}', 26214400),
  ('user_upload', 'Files members upload', false,
   '{application/pdf,image/png,image/jpeg,image/gif,image/webp,text/plain,text/csv,application/json,application/zip,application/vnd.openxmlformats-officedocument.wordprocessingml.document,application/vnd.openxmlformats-officedocument.spreadsheetml.sheet}', 26214400),
  ('customer_document', 'Documents about a customer (CRM)', false,
   '{application/pdf,image/png,image/jpeg,text/plain,application/vnd.openxmlformats-officedocument.wordprocessingml.document,application/vnd.openxmlformats-officedocument.spreadsheetml.sheet}', 26214400),
  ('data_export', 'Data exports (GDPR, purges)', false, '{application/zip,application/json}', 52428800),
  ('kb_article', 'Attachments of knowledge-base articles', true, '{image/png,image/jpeg,image/gif,image/webp,application/pdf}', 10485760),
  ('public_asset', 'Published downloads and shared content', true, '{image/png,image/jpeg,image/gif,image/webp,application/pdf,text/plain,text/csv}', 10485760);

-- The one routing rule: private, unless the context is publishable and the thing the file
-- belongs to is public. Unknown contexts are refused by the caller (file_contexts has no row).
create function private.file_store_for(p_context text, p_published boolean default false)
returns text
language sql
stable
security definer
set search_path = ''
as $$
  select case when c.publishable and coalesce(p_published, false) then 'public' else 'private' end
  from public.file_contexts c where c.key = p_context
$$;
comment on function private.file_store_for(text, boolean) is 'The store (bucket) a file of a context goes to: private unless publishable and published.';
grant execute on function private.file_store_for(text, boolean) to authenticated, service_role;

create function public.file_store_for(p_context text, p_published boolean default false)
returns text
language sql
stable
security invoker
set search_path = ''
as $$
  select coalesce(private.file_store_for(p_context, p_published), 'private')
$$;
comment on function public.file_store_for(text, boolean) is
  'Which store a file goes to: private (invoice, receipt, legal_doc, user_upload, customer_document, data_export, and anything unpublished) or public (a published kb_article or public_asset).';
grant execute on function public.file_store_for(text, boolean) to authenticated, service_role;

-- ---------------------------------------------------------------------------------------------
-- The buckets
-- ---------------------------------------------------------------------------------------------
-- Storage enforces these limits on every upload (the contexts narrow them further).
insert into storage.buckets (id, name, public, file_size_limit, allowed_mime_types)
select 'private', 'private', false, 52428800, array(select distinct unnest(allowed_mime_types) from public.file_contexts order by 1)
on conflict (id) do update set public = excluded.public, file_size_limit = excluded.file_size_limit,
  allowed_mime_types = excluded.allowed_mime_types;
insert into storage.buckets (id, name, public, file_size_limit, allowed_mime_types)
select 'public', 'public', true, 10485760, array(select distinct unnest(allowed_mime_types) from public.file_contexts where publishable order by 1)
on conflict (id) do update set public = excluded.public, file_size_limit = excluded.file_size_limit,
  allowed_mime_types = excluded.allowed_mime_types;

-- ---------------------------------------------------------------------------------------------
-- Who may touch which object: the first folder of a name is its organization
-- ---------------------------------------------------------------------------------------------
-- private.member_organization_ids and organization_ids_with_role (tenancy) give the caller's
-- organizations (with one of the roles); compared as text with the folder, once per statement.
create policy "Members read their organization's private files"
on storage.objects for select to authenticated
using (bucket_id = 'private'
  and (storage.foldername(name))[1] in (select o::text from private.member_organization_ids() as o));

create policy "Members add files to their private folder"
on storage.objects for insert to authenticated
with check (bucket_id = 'private'
  and (storage.foldername(name))[1] in (select o::text from private.member_organization_ids() as o));

create policy "Members replace files in their private folder"
on storage.objects for update to authenticated
using (bucket_id = 'private'
  and (storage.foldername(name))[1] in (select o::text from private.member_organization_ids() as o))
with check (bucket_id = 'private'
  and (storage.foldername(name))[1] in (select o::text from private.member_organization_ids() as o));

create policy "Owners and admins delete their private files"
on storage.objects for delete to authenticated
using (bucket_id = 'private'
  and (storage.foldername(name))[1] in (select o::text from private.organization_ids_with_role('{owner,admin}') as o));

create policy "Anyone reads public files"
on storage.objects for select to anon, authenticated
using (bucket_id = 'public');

create policy "Owners and admins publish into their public folder"
on storage.objects for insert to authenticated
with check (bucket_id = 'public'
  and (storage.foldername(name))[1] in (select o::text from private.organization_ids_with_role('{owner,admin}') as o));

create policy "Owners and admins replace their public files"
on storage.objects for update to authenticated
using (bucket_id = 'public'
  and (storage.foldername(name))[1] in (select o::text from private.organization_ids_with_role('{owner,admin}') as o))
with check (bucket_id = 'public'
  and (storage.foldername(name))[1] in (select o::text from private.organization_ids_with_role('{owner,admin}') as o));

create policy "Owners and admins delete their public files"
on storage.objects for delete to authenticated
using (bucket_id = 'public'
  and (storage.foldername(name))[1] in (select o::text from private.organization_ids_with_role('{owner,admin}') as o));
