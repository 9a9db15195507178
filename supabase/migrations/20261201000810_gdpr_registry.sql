-- =============================================================================================
-- GDPR: the personal-data registry, and consent
-- =============================================================================================

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

-- The registry. Every column of every table in public and private that could hold personal data
-- (text, varchar, char, citext, json, jsonb, xml, inet, cidr, macaddr, bytea, arrays of them, and
-- a uuid that names a user: a foreign key to auth.users or public.profiles, or a name such as
-- user_id, actor_id, *_user_id, *_by) is either in private.personal_data_columns (its category,
-- and the erasure strategy applied to it in the rows found about a data subject) or in
-- private.non_personal_columns (checked, with the reason). private.personal_data_subjects says
-- how the rows about a person are found in each table (a user id or an email column); a table
-- with personal columns but no such column is in private.personal_data_indirect_tables, with the
-- way its rows are reached instead (through their organization, by the erasure's scrub, by a
-- short retention). private.legal_retention lists the tables whose rows the law makes us keep:
-- erasure never deletes them, only clears the personal fields inside.
--
-- >>> A later migration that adds a table or column in public or private adds its rows here  <<<
-- >>> (personal_data_columns or non_personal_columns, and a subject or indirect entry):       <<<
-- >>> tests/db/gdpr/02-registry.test.sql fails while private.personal_data_problems() lists   <<<
-- >>> anything (an unregistered column, a stale entry, a table nobody can find a subject in). <<<
--
-- How the erasure reads it: in every table of private.subject_tables(), the rows whose subject
-- columns match the person are deleted when any of the table's columns is delete_row; otherwise
-- each personal column gets its strategy (set_null; pseudonymize: a uuid becomes the erasure's
-- pseudonym, a JSON document '{}'; hash: private.personal_data_hash; keep: unchanged, for the
-- reason in legal_basis). So all subject columns of one table denote the same person: the one the
-- row is about. Columns that only say who did something (invited_by, opened_by, recorded_by) are
-- no subject columns where the row is about someone else; their foreign keys clear them when the
-- Auth user is deleted. auth.users is GoTrue's: its personal columns are registered with
-- delete_row, meaning the Auth admin API deletes the user (identities, sessions and factors go
-- with it by their foreign keys).
--
-- Consent. public.consent_records is the append-only history of a person's consent per purpose
-- (public.consent_purposes): given or revoked, when, how (source, policy version), by a user for
-- themselves, or by an organization's owners and admins for a contact who is no user (an email).
-- The current state per purpose is one query (private.consent_state, public.get_consents,
-- public.current_consents); a purpose never recorded has its default. The mail preferences of
-- the email chapter read from it: non-required mail of a category a purpose names
-- (consent_purposes.email_category: usage_alerts, account, marketing) goes only with consent;
-- every write of public.email_preferences and every one-click unsubscribe records consent, and
-- recording consent for such a purpose sets the preference, so the two never disagree.

insert into private.error_codes (code, class, meaning) values
  ('invalid_purpose', 'invalid_input', 'No consent purpose has this key.'),
  ('invalid_consent', 'invalid_input', 'A consent is given or revoked, from a source (1 to 50 of a-z, 0-9, _), with a policy version of at most 100 characters.');

create type private.personal_data_category as enum (
  'contact_email', 'name', 'phone', 'address', 'ip_address', 'user_agent', 'free_text', 'file', 'payment_detail',
  'identifier', 'preference', 'metadata', 'credential');
comment on type private.personal_data_category is
  'What kind of personal data a column holds: contact_email, name, phone, address, ip_address, user_agent, free_text (typed by people), file (stored files and their names), payment_detail (cards, Stripe customers and payments), identifier (a user id or an id that leads to a person elsewhere), preference (choices, consent), metadata (JSON documents that may carry any of these), credential (password hashes).';

create type private.erasure_strategy as enum ('delete_row', 'set_null', 'pseudonymize', 'hash', 'keep');
comment on type private.erasure_strategy is
  'What erasure does to a column in the rows about a person: delete_row (the whole row goes), set_null, pseudonymize (a uuid becomes the erasure''s pseudonym, JSON and text arrays become empty, text erased-<pseudonym>), hash (private.personal_data_hash: still matchable, no longer readable), keep (for the legal reason given).';

-- ---------------------------------------------------------------------------------------------
-- The registry
-- ---------------------------------------------------------------------------------------------
create table private.personal_data_columns (
  table_name text not null check (table_name ~ '^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$'),
  column_name text not null check (column_name ~ '^[a-z_][a-z0-9_]*$'),
  category private.personal_data_category not null,
  strategy private.erasure_strategy not null,
  retention interval check (retention > interval '0'),
  legal_basis text check (char_length(legal_basis) between 1 and 500),
  note text check (char_length(note) between 1 and 500),
  primary key (table_name, column_name),
  check (strategy <> 'keep' or legal_basis is not null)
);
comment on table private.personal_data_columns is
  'Every column that holds personal data: its category and what erasure does to it. Later migrations add their own (tests/db/gdpr/02-registry.test.sql).';
comment on column private.personal_data_columns.table_name is 'The table, schema-qualified (public.profiles).';
comment on column private.personal_data_columns.column_name is 'The column.';
comment on column private.personal_data_columns.category is 'What kind of personal data it holds.';
comment on column private.personal_data_columns.strategy is 'What erasure does to it in the rows about the person.';
comment on column private.personal_data_columns.retention is 'For keep: how long the law makes us keep it (null: as long as the row exists).';
comment on column private.personal_data_columns.legal_basis is 'For keep: why it is kept.';
comment on column private.personal_data_columns.note is 'What is in it, when that is not obvious.';
alter table private.personal_data_columns enable row level security;
grant select on private.personal_data_columns to service_role;

create table private.personal_data_subjects (
  table_name text not null,
  subject_column text not null,
  subject_kind text not null check (subject_kind in ('user_id', 'email')),
  primary key (table_name, subject_column),
  foreign key (table_name, subject_column) references private.personal_data_columns (table_name, column_name)
);
comment on table private.personal_data_subjects is
  'How the rows about a person are found in each table: the columns holding their user id or email. All subject columns of a table denote the same person.';
comment on column private.personal_data_subjects.table_name is 'The table, schema-qualified.';
comment on column private.personal_data_subjects.subject_column is 'The column that names the person (a registered personal column).';
comment on column private.personal_data_subjects.subject_kind is 'user_id (auth.users.id) or email (compared lower-case).';
alter table private.personal_data_subjects enable row level security;
grant select on private.personal_data_subjects to service_role;

create table private.non_personal_columns (
  table_name text not null check (table_name ~ '^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$'),
  column_name text not null check (column_name ~ '^[a-z_][a-z0-9_]*$'),
  reason text not null check (char_length(reason) between 1 and 500),
  primary key (table_name, column_name)
);
comment on table private.non_personal_columns is
  'Columns of a personal-looking type (text, JSON, a user-ish uuid) checked and found to hold no personal data, with the reason.';
comment on column private.non_personal_columns.table_name is 'The table, schema-qualified.';
comment on column private.non_personal_columns.column_name is 'The column.';
comment on column private.non_personal_columns.reason is 'Why it holds no personal data.';
alter table private.non_personal_columns enable row level security;
grant select on private.non_personal_columns to service_role;

create table private.personal_data_indirect_tables (
  table_name text primary key check (table_name ~ '^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$'),
  reached_by text not null check (char_length(reached_by) between 1 and 200),
  reason text not null check (char_length(reason) between 1 and 500)
);
comment on table private.personal_data_indirect_tables is
  'Tables with personal columns but no subject column: how their rows are reached instead (their organization, the erasure''s scrub, a short retention).';
comment on column private.personal_data_indirect_tables.table_name is 'The table, schema-qualified.';
comment on column private.personal_data_indirect_tables.reached_by is 'What finds its rows: organization_id, the scrub of the subject''s values, a purge job.';
comment on column private.personal_data_indirect_tables.reason is 'Why no person''s erasure needs a subject column here.';
alter table private.personal_data_indirect_tables enable row level security;
grant select on private.personal_data_indirect_tables to service_role;

create table private.legal_retention (
  table_name text primary key check (table_name ~ '^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$'),
  retention interval not null check (retention > interval '0'),
  legal_basis text not null check (char_length(legal_basis) between 1 and 500)
);
comment on table private.legal_retention is
  'Records the law makes us keep: erasure never deletes their rows (it clears the personal fields inside); retention removes them after this long.';
comment on column private.legal_retention.table_name is 'The table, schema-qualified.';
comment on column private.legal_retention.retention is 'How long its rows are kept (from their creation, or from their organization''s deletion).';
comment on column private.legal_retention.legal_basis is 'The law that makes us keep them.';
alter table private.legal_retention enable row level security;
grant select on private.legal_retention to service_role;

-- ---------------------------------------------------------------------------------------------
-- Consent: purposes and records
-- ---------------------------------------------------------------------------------------------
create table public.consent_purposes (
  key text primary key check (key ~ '^[a-z][a-z0-9_]{0,62}$'),
  name text not null check (char_length(name) between 1 and 200),
  description text not null check (char_length(description) between 1 and 1000),
  default_granted boolean not null default false,
  email_category public.email_category unique,
  created_at timestamptz not null default now()
);
comment on table public.consent_purposes is 'What a person may consent to (marketing email, product analytics, ...), and the state assumed before they chose.';
comment on column public.consent_purposes.key is 'Stable identifier passed as p_purpose.';
comment on column public.consent_purposes.name is 'Display name.';
comment on column public.consent_purposes.description is 'What the person agrees to, in the words shown to them.';
comment on column public.consent_purposes.default_granted is 'The state of a person who never recorded a choice (false: opt-in).';
comment on column public.consent_purposes.email_category is 'The mail category whose non-required mail follows this consent, if any.';
comment on column public.consent_purposes.created_at is 'When the purpose was added.';
grant select on public.consent_purposes to authenticated;
grant select, insert, update, delete on public.consent_purposes to service_role;
alter table public.consent_purposes enable row level security;
create policy "Signed-in users read the consent purposes"
on public.consent_purposes for select to authenticated using (true);

insert into public.consent_purposes (key, name, description, default_granted, email_category) values
  ('marketing_email', 'Marketing email', 'News, offers and invitations to events by email.', false, 'marketing'),
  ('product_analytics', 'Product analytics', 'How you use the product is measured to improve it.', false, null),
  ('usage_alert_email', 'Usage alerts', 'Mail when your organization''s credits run low or out.', true, 'usage_alerts'),
  ('account_email', 'Account email', 'Mail about your account and organizations that is not required: welcomes, invitations.', true, 'account');

create table public.consent_records (
  id uuid primary key default gen_random_uuid(),
  seq bigint generated always as identity,
  user_id uuid references auth.users (id) on delete set null,
  email text check (email = lower(email) and char_length(email) between 3 and 320),
  organization_id uuid references public.organizations (id) on delete cascade,
  purpose text not null references public.consent_purposes (key),
  status text not null check (status in ('given', 'revoked')),
  source text not null check (source ~ '^[a-z][a-z0-9_]{0,49}$'),
  policy_version text check (char_length(policy_version) between 1 and 100),
  recorded_at timestamptz not null default now(),
  recorded_by uuid references auth.users (id) on delete set null,
  check (user_id is not null or email is not null)
);
comment on table public.consent_records is
  'The history of consent: one row each time a person gave or revoked consent to a purpose. Append-only; the latest row per person and purpose is the current state.';
comment on column public.consent_records.id is 'The record.';
comment on column public.consent_records.seq is 'The order records were written in (breaks ties of recorded_at).';
comment on column public.consent_records.user_id is 'The person, when they are a user (null after their account is deleted).';
comment on column public.consent_records.email is 'The person''s address, lower-case (a user''s at the time); a SHA-256 hex digest once erased, so a revocation still applies.';
comment on column public.consent_records.organization_id is 'The organization the consent was given to (a contact of its CRM); null: given to us, the platform.';
comment on column public.consent_records.purpose is 'What it is consent to.';
comment on column public.consent_records.status is 'given or revoked.';
comment on column public.consent_records.source is 'How it was recorded: signup_form, settings, import, api, email_preferences, unsubscribe_link, ...';
comment on column public.consent_records.policy_version is 'The version of the privacy policy or consent text shown.';
comment on column public.consent_records.recorded_at is 'When.';
comment on column public.consent_records.recorded_by is 'Who recorded it: the person, an organization''s owner or admin; null for the system.';
grant select on public.consent_records to authenticated;
grant select, insert on public.consent_records to service_role;
alter table public.consent_records enable row level security;
create policy "Users read their consent, owners and admins their contacts'"
on public.consent_records for select to authenticated
using (user_id = (select auth.uid()) or organization_id in (select private.organization_ids_with_role('{owner,admin}')));
create index consent_records_user_state_idx on public.consent_records (user_id, purpose, recorded_at desc, seq desc);
create index consent_records_email_state_idx on public.consent_records (lower(email), purpose, recorded_at desc, seq desc);
create index consent_records_organization_id_idx on public.consent_records (organization_id, recorded_at desc);
create index consent_records_purpose_idx on public.consent_records (purpose);
create index consent_records_recorded_by_idx on public.consent_records (recorded_by);

-- The digest a hash strategy leaves (what the erasure writes: hex SHA-256 of the value).
create function private.personal_data_hash(p_value text)
returns text
language sql
immutable
set search_path = ''
as $$
  select encode(extensions.digest(p_value, 'sha256'), 'hex')
$$;
comment on function private.personal_data_hash(text) is 'The hash strategy''s digest of a value: hex SHA-256 (matchable, not readable).';
grant execute on function private.personal_data_hash(text) to service_role;

-- History is never rewritten. What may change: the person's identity leaving (user_id and
-- recorded_by cleared by their foreign keys when the Auth user goes, the email replaced by its
-- digest on erasure; under the erasure's permit gdpr_erasure, its scrub may rewrite anything but
-- what was consented to, when, to whom); rows leave only with their organization or by the
-- retention machinery (permit purge).
create function private.guard_consent_records()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if tg_op = 'DELETE' then
    if private.permitted('purge')
       or (old.organization_id is not null and not exists (select 1 from public.organizations where id = old.organization_id)) then
      return old;
    end if;
  elsif tg_op = 'UPDATE'
     and (new.id, new.seq, new.organization_id, new.purpose, new.status, new.recorded_at)
         is not distinct from (old.id, old.seq, old.organization_id, old.purpose, old.status, old.recorded_at)
     and (private.permitted('gdpr_erasure') or (
       (new.source, new.policy_version) is not distinct from (old.source, old.policy_version)
       and (new.user_id is not distinct from old.user_id or new.user_id is null)
       and (new.recorded_by is not distinct from old.recorded_by or new.recorded_by is null)
       and (new.email is not distinct from old.email or new.email = private.personal_data_hash(old.email)))) then
    if new.user_id is null and new.email is null then
      -- A user without an address leaves: the record keeps a pseudonym of them.
      new.email := private.personal_data_hash(old.user_id::text);
    end if;
    return new;
  end if;
  perform private.raise('append_only', 'Consent records are history: record a new one instead.');
  return null;
end
$$;
comment on function private.guard_consent_records() is
  'Trigger: consent records are append-only; only the person''s identity may leave (user_id, recorded_by cleared, email hashed; the erasure''s scrub).';

create trigger consent_records_append_only
before update or delete on public.consent_records
for each row execute function private.guard_consent_records();

create trigger consent_records_no_truncate
before truncate on public.consent_records
for each statement execute function private.guard_consent_records();

-- ---------------------------------------------------------------------------------------------
-- The current state: one query
-- ---------------------------------------------------------------------------------------------
-- Per purpose, the latest record about the person (by user id or by address, the address also
-- as its digest), given to the organization (null: to the platform); else the purpose's default.
create function private.consent_state(p_user_id uuid, p_email text, p_organization_id uuid default null)
returns table (purpose text, granted boolean, recorded_at timestamptz, source text, policy_version text)
language sql
stable
security definer
set search_path = ''
as $$
  select p.key, coalesce(r.status = 'given', p.default_granted), r.recorded_at, r.source, r.policy_version
  from public.consent_purposes p
  left join lateral (
    select c.status, c.recorded_at, c.source, c.policy_version
    from public.consent_records c
    where c.purpose = p.key
      and ((p_organization_id is null and c.organization_id is null) or c.organization_id = p_organization_id)
      and ((p_user_id is not null and c.user_id = p_user_id)
           or (p_email is not null and lower(c.email) in (lower(btrim(p_email)), private.personal_data_hash(lower(btrim(p_email))))))
    order by c.recorded_at desc, c.seq desc
    limit 1
  ) r on true
  order by p.key
$$;
comment on function private.consent_state(uuid, text, uuid) is
  'A person''s current consent per purpose (by user id or address; for an organization, or the platform when null), defaults where never recorded.';
grant execute on function private.consent_state(uuid, text, uuid) to service_role;

create function private.has_consent(p_user_id uuid, p_email text, p_purpose text, p_organization_id uuid default null)
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select coalesce(
    (select c.status = 'given'
     from public.consent_records c
     where c.purpose = p_purpose
       and ((p_organization_id is null and c.organization_id is null) or c.organization_id = p_organization_id)
       and ((p_user_id is not null and c.user_id = p_user_id)
            or (p_email is not null and lower(c.email) in (lower(btrim(p_email)), private.personal_data_hash(lower(btrim(p_email))))))
     order by c.recorded_at desc, c.seq desc
     limit 1),
    (select p.default_granted from public.consent_purposes p where p.key = p_purpose),
    false)
$$;
comment on function private.has_consent(uuid, text, text, uuid) is
  'Whether a person (user id or address) consents to a purpose now: their latest record, else the purpose''s default (false for an unknown purpose).';
grant execute on function private.has_consent(uuid, text, text, uuid) to service_role;

-- Every record goes through here: written, audited, and mirrored into the mail preferences when
-- the purpose governs a mail category (a user's consent to the platform).
create function private.insert_consent(
  p_user_id uuid, p_email text, p_organization_id uuid, p_purpose text, p_status text, p_source text,
  p_policy_version text, p_recorded_by uuid
)
returns public.consent_records
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_record public.consent_records;
  v_category public.email_category;
begin
  insert into public.consent_records (user_id, email, organization_id, purpose, status, source, policy_version, recorded_by, recorded_at)
  values (p_user_id, lower(btrim(p_email)), p_organization_id, p_purpose, p_status, p_source, p_policy_version, p_recorded_by, clock_timestamp())
  returning * into v_record;

  if to_regprocedure('private.audit_action(uuid, text, text, text, jsonb)') is not null then
    perform private.audit_action(v_record.organization_id, 'consent_' || v_record.status, 'public.consent_records', v_record.id::text,
      jsonb_build_object('purpose', v_record.purpose, 'source', v_record.source, 'policy_version', v_record.policy_version));
  end if;

  if v_record.user_id is not null and v_record.organization_id is null then
    select email_category into v_category from public.consent_purposes where key = v_record.purpose;
    if v_category is not null then
      insert into public.email_preferences (user_id, category, subscribed)
      values (v_record.user_id, v_category, v_record.status = 'given')
      on conflict (user_id, category) do update set subscribed = excluded.subscribed
      where public.email_preferences.subscribed is distinct from excluded.subscribed;
    end if;
  end if;
  return v_record;
end
$$;
comment on function private.insert_consent(uuid, text, uuid, text, text, text, text, uuid) is
  'Writes a consent record (no checks: callers check), audits it, and mirrors a mail purpose into the user''s preference.';

-- ---------------------------------------------------------------------------------------------
-- RPCs
-- ---------------------------------------------------------------------------------------------
-- A signed-in user records their own consent (p_email null; with p_organization_id, consent to an
-- organization they belong to); an organization's owners and admins record a contact's
-- (p_email and p_organization_id); the service role either, and an address's consent to the
-- platform (p_email alone). An address that belongs to a user is linked to them.
create function private.record_consent(
  p_purpose text, p_status text, p_source text, p_policy_version text, p_organization_id uuid, p_email text
)
returns public.consent_records
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_role text := private.caller_role();
  v_caller uuid := auth.uid();
  v_user uuid;
  v_email text;
begin
  if p_purpose is null or not exists (select 1 from public.consent_purposes where key = p_purpose) then
    perform private.raise('invalid_purpose', format('No consent purpose has the key %L.', p_purpose));
  end if;
  if p_status is null or p_status not in ('given', 'revoked') then
    perform private.raise('invalid_consent', 'A consent is given or revoked.');
  end if;
  if p_source is null or p_source !~ '^[a-z][a-z0-9_]{0,49}$' then
    perform private.raise('invalid_consent', 'A source is 1 to 50 lower-case letters, digits and underscores (signup_form, settings, import, api).');
  end if;
  if p_policy_version is not null and char_length(btrim(p_policy_version)) not between 1 and 100 then
    perform private.raise('invalid_consent', 'A policy version is 1 to 100 characters.');
  end if;

  if p_email is null then
    if v_caller is null then
      if v_role = 'service_role' then
        perform private.raise('invalid_consent', 'Name the person: pass p_email, or call with their token.');
      end if;
      perform private.require_user();
    end if;
    if p_organization_id is not null then
      perform private.authorize(p_organization_id);
    end if;
    v_user := v_caller;
    v_email := (select lower(u.email) from auth.users u where u.id = v_caller);
  else
    v_email := lower(btrim(p_email));
    if not private.is_email(v_email) then
      perform private.raise('invalid_email', 'Not an email address (at most 320 characters).');
    end if;
    if v_role <> 'service_role' then
      perform private.require_user();
      if p_organization_id is null then
        perform private.raise('invalid_consent', 'A contact''s consent is recorded for an organization: pass p_organization_id.');
      end if;
      perform private.require_member(p_organization_id, '{owner,admin}', 'Only owners and admins record the consent of the organization''s contacts.');
    elsif p_organization_id is not null then
      perform private.require_organization(p_organization_id);
    end if;
    v_user := (select u.id from auth.users u where lower(u.email) = v_email order by u.created_at limit 1);
  end if;

  return private.insert_consent(v_user, v_email, p_organization_id, p_purpose, p_status, p_source,
    nullif(btrim(p_policy_version), ''), v_caller);
end
$$;
comment on function private.record_consent(text, text, text, text, uuid, text) is 'The body of record_consent.';
grant execute on function private.record_consent(text, text, text, text, uuid, text) to authenticated, service_role;

create function public.record_consent(
  p_purpose text, p_status text, p_source text, p_policy_version text default null,
  p_organization_id uuid default null, p_email text default null
)
returns public.consent_records
language sql
security invoker
set search_path = ''
as $$
  select private.record_consent(p_purpose, p_status, p_source, p_policy_version, p_organization_id, p_email)
$$;
comment on function public.record_consent(text, text, text, text, uuid, text) is
  'Records consent given or revoked to a purpose: the caller''s own (p_email null), or an organization''s contact''s (p_email, p_organization_id; owners and admins). Errors: invalid_purpose, invalid_consent, invalid_email, not_authorized, not_authenticated.';
grant execute on function public.record_consent(text, text, text, text, uuid, text) to authenticated, service_role;

-- A user's current consent to the platform, per purpose (their own; the service role anyone's).
create function private.get_consents(p_user_id uuid)
returns table (purpose text, granted boolean, recorded_at timestamptz, source text, policy_version text)
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
  if p_user_id is null then
    if private.caller_role() <> 'service_role' then
      perform private.require_user();
    end if;
    perform private.raise('invalid_input', 'p_user_id is required.');
  end if;
  if private.caller_role() <> 'service_role' and p_user_id is distinct from auth.uid() then
    perform private.raise('not_authorized', 'Only your own consent can be read here.');
  end if;
  return query
    select s.purpose, s.granted, s.recorded_at, s.source, s.policy_version
    from private.consent_state(p_user_id, (select u.email from auth.users u where u.id = p_user_id)) s;
end
$$;
comment on function private.get_consents(uuid) is 'The body of get_consents.';
grant execute on function private.get_consents(uuid) to authenticated, service_role;

create function public.get_consents(p_user_id uuid default auth.uid())
returns table (purpose text, granted boolean, recorded_at timestamptz, source text, policy_version text)
language sql
stable
security invoker
set search_path = ''
as $$
  select * from private.get_consents(p_user_id)
$$;
comment on function public.get_consents(uuid) is
  'One row per purpose: whether the user consents now, and when, how and under which policy version they last chose (null: the default). Their own; the service role anyone''s.';
grant execute on function public.get_consents(uuid) to authenticated, service_role;

-- The latest record per person, organization and purpose, as far as the caller may read them
-- (their own; their organization's contacts for owners and admins).
create view public.current_consents
with (security_invoker = true)
as
select distinct on (coalesce(c.user_id::text, c.email), c.organization_id, c.purpose)
       c.id, c.user_id, c.email, c.organization_id, c.purpose, c.status = 'given' as granted, c.source, c.policy_version,
       c.recorded_at, c.recorded_by
from public.consent_records c
order by coalesce(c.user_id::text, c.email), c.organization_id, c.purpose, c.recorded_at desc, c.seq desc;
comment on view public.current_consents is 'The current consent per person, organization and purpose (the latest record), under the records'' row-level security.';
grant select on public.current_consents to authenticated, service_role;

-- ---------------------------------------------------------------------------------------------
-- Mail follows consent
-- ---------------------------------------------------------------------------------------------
-- Required mail always goes. Mail of a category a purpose governs goes with that consent; other
-- categories follow the preference as before; a suppressed address (or its digest, once erased)
-- gets none of it.
create or replace function private.email_allowed(p_recipient text, p_user_id uuid, p_category public.email_category, p_required boolean)
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select p_required or (
    coalesce(
      (select private.has_consent(p_user_id, p_recipient, cp.key) from public.consent_purposes cp where cp.email_category = p_category),
      not exists (select 1 from public.email_preferences p
                  where p.user_id = p_user_id and p.category = p_category and not p.subscribed))
    and not exists (select 1 from private.email_suppressions s
                    where s.email in (p_recipient, private.personal_data_hash(p_recipient))
                      and (s.category is null or s.category = p_category)))
$$;
comment on function private.email_allowed(text, uuid, public.email_category, boolean) is
  'Whether a message may be sent: required, or consented to (the category''s purpose; else the preference) and not suppressed.';

-- A preference written (by the user, an operator, an unsubscribe) that differs from the consent
-- it mirrors is a choice: recorded as consent.
create function private.record_preference_consent()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_purpose text := (select key from public.consent_purposes where email_category = new.category);
  v_email text;
begin
  if v_purpose is null then
    return null;
  end if;
  v_email := (select lower(u.email) from auth.users u where u.id = new.user_id);
  if private.has_consent(new.user_id, v_email, v_purpose) is distinct from new.subscribed then
    perform private.insert_consent(new.user_id, v_email, null, v_purpose,
      case when new.subscribed then 'given' else 'revoked' end, 'email_preferences', null, auth.uid());
  end if;
  return null;
end
$$;
comment on function private.record_preference_consent() is 'Trigger: a mail preference that changes the consent of its purpose records it.';

create trigger email_preferences_record_consent
after insert or update of subscribed on public.email_preferences
for each row execute function private.record_preference_consent();

-- The one-click link: a revocation of the category's purpose (which turns a user's preference
-- off), and for an address without a user, a suppression as before.
create or replace function private.unsubscribe_email(p_email text, p_category public.email_category)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_email text := lower(btrim(p_email));
  v_user uuid;
  v_purpose text := (select key from public.consent_purposes where email_category = p_category);
begin
  select id into v_user from auth.users where lower(email) = v_email order by created_at limit 1;
  if v_purpose is not null then
    perform private.insert_consent(v_user, v_email, null, v_purpose, 'revoked', 'unsubscribe_link', null, null);
  end if;
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
  'Turns a category of non-required mail off for an address: consent revoked, and its user''s preference or a suppression.';

-- The choices made before consent existed become its first records.
insert into public.consent_records (user_id, email, purpose, status, source, recorded_at)
select p.user_id, lower(u.email), cp.key, case when p.subscribed then 'given' else 'revoked' end, 'email_preferences', p.updated_at
from public.email_preferences p
join public.consent_purposes cp on cp.email_category = p.category
join auth.users u on u.id = p.user_id;
insert into public.consent_records (email, purpose, status, source, recorded_at)
select s.email, cp.key, 'revoked', 'unsubscribe_link', s.created_at
from private.email_suppressions s
join public.consent_purposes cp on cp.email_category = s.category
where s.reason = 'unsubscribed';

-- ---------------------------------------------------------------------------------------------
-- Registering: what the tables hold
-- ---------------------------------------------------------------------------------------------
insert into private.legal_retention (table_name, retention, legal_basis) values
  ('public.invoices', '10 years', 'Invoices: commercial and tax law (e.g. HGB 257, AO 147; EU VAT Directive art. 247).'),
  ('public.credit_ledger', '10 years', 'Accounting records of the credits sold and used: commercial and tax law (HGB 257, AO 147).'),
  ('public.credit_account_transactions', '10 years', 'Accounting records of the postpaid account: commercial and tax law (HGB 257, AO 147).'),
  ('public.credit_overages', '10 years', 'The usage billed as overage: accounting records (HGB 257, AO 147).'),
  ('private.credit_pack_purchases', '10 years', 'Payments for credit packs: accounting records (HGB 257, AO 147).'),
  ('public.credit_statements', '10 years', 'Statements billed as invoices: commercial and tax law (HGB 257, AO 147).'),
  ('public.consent_records', '3 years', 'GDPR art. 7(1): we must be able to show consent was given, and honour its revocation; kept with the address hashed after erasure.');

-- The money records keep these as they are.
insert into private.personal_data_columns (table_name, column_name, category, strategy, retention, legal_basis, note) values
  ('public.invoices', 'stripe_invoice_id', 'identifier', 'keep', '10 years', 'Identifies a kept invoice (tax law).', 'Leads to the invoice and its customer in Stripe.'),
  ('public.invoices', 'stripe_subscription_id', 'identifier', 'keep', '10 years', 'Part of a kept invoice (tax law).', null),
  ('public.invoices', 'number', 'identifier', 'keep', '10 years', 'The invoice number (tax law).', null),
  ('public.invoices', 'hosted_invoice_url', 'payment_detail', 'keep', '10 years', 'The invoice as Stripe shows it, with the customer''s details (tax law).', null),
  ('public.invoices', 'invoice_pdf_url', 'file', 'keep', '10 years', 'The invoice document (tax law).', null),
  ('public.credit_statements', 'stripe_invoice_id', 'identifier', 'keep', '10 years', 'Identifies the invoice that billed a statement (tax law).', null),
  ('public.credit_statements', 'hosted_invoice_url', 'payment_detail', 'keep', '10 years', 'The invoice as Stripe shows it (tax law).', null),
  ('public.credit_account_transactions', 'description', 'free_text', 'keep', '10 years', 'What a transaction on account was for (accounting records).', 'The erasure''s scrub replaces a subject''s name or address inside it.'),
  ('public.credit_account_transactions', 'source_id', 'identifier', 'keep', '10 years', 'The entry, checkout or invoice a transaction came from (accounting records).', null),
  ('private.credit_pack_purchases', 'checkout_session_id', 'identifier', 'keep', '10 years', 'The payment of a credit pack (accounting records).', null),
  ('private.credit_pack_purchases', 'payment_intent_id', 'payment_detail', 'keep', '10 years', 'The payment of a credit pack, which refunds name (accounting records).', null),
  ('public.billing_accounts', 'stripe_customer_id', 'payment_detail', 'keep', '10 years', 'Links the kept invoices to the customer in Stripe (tax law); the customer''s own fields are erased in Stripe.', 'The organization''s Stripe customer: pseudonymous payment data.'),
  ('private.billing_invoice_grants', 'stripe_invoice_id', 'identifier', 'keep', '10 years', 'Grants a plan''s allocation once per paid invoice (the organization''s billing records).', null),
  ('public.credit_grants', 'source', 'free_text', 'keep', null, 'The organization''s record of why credits were granted (art. 6(1)(f)).', 'A plan period, a payment id or an operator''s reason; the erasure''s scrub replaces a subject''s values inside it.'),
  ('public.consent_records', 'recorded_by', 'identifier', 'keep', '3 years', 'Who recorded a consent is part of its proof (GDPR art. 7(1)); cleared when that user''s account is deleted.', null);

-- Users and what is about them.
insert into private.personal_data_columns (table_name, column_name, category, strategy, note) values
  -- GoTrue's users: the Auth admin API deletes them (identities, sessions, factors go with them).
  ('auth.users', 'id', 'identifier', 'delete_row', 'Deleted through the Auth admin API, last.'),
  ('auth.users', 'email', 'contact_email', 'delete_row', null),
  ('auth.users', 'phone', 'phone', 'delete_row', null),
  ('auth.users', 'email_change', 'contact_email', 'delete_row', 'The address a change goes to.'),
  ('auth.users', 'phone_change', 'phone', 'delete_row', 'The number a change goes to.'),
  ('auth.users', 'raw_user_meta_data', 'metadata', 'delete_row', 'Sign-up metadata: full name, avatar.'),
  ('auth.users', 'raw_app_meta_data', 'metadata', 'delete_row', 'Providers, the platform admin flag.'),
  ('auth.users', 'encrypted_password', 'credential', 'delete_row', 'A bcrypt hash.'),
  ('public.profiles', 'id', 'identifier', 'delete_row', null),
  ('public.profiles', 'email', 'contact_email', 'delete_row', null),
  ('public.profiles', 'full_name', 'name', 'delete_row', null),
  ('public.profiles', 'avatar_url', 'file', 'delete_row', 'A link to their picture.'),
  ('public.organizations', 'created_by', 'identifier', 'set_null', null),
  ('public.organization_members', 'user_id', 'identifier', 'delete_row', null),
  ('public.organization_members', 'invited_by', 'identifier', 'set_null', 'Who invited the member; cleared with that user.'),
  ('public.organization_invitations', 'email', 'contact_email', 'delete_row', 'The invitee.'),
  ('public.organization_invitations', 'accepted_by', 'identifier', 'delete_row', 'The invitee, once a user.'),
  ('public.organization_invitations', 'invited_by', 'identifier', 'set_null', 'Who invited; cleared with that user.'),
  ('public.email_preferences', 'user_id', 'identifier', 'delete_row', null),
  ('public.files', 'uploaded_by', 'identifier', 'delete_row', 'Their files go, objects included (gdpr-erase removes them).'),
  ('public.files', 'object_name', 'file', 'delete_row', 'Ends in the uploaded file''s name.'),
  ('public.files', 'file_name', 'free_text', 'delete_row', null),
  ('public.files', 'move_to_object_name', 'file', 'delete_row', null),
  ('public.billing_accounts', 'email', 'contact_email', 'set_null', 'Stripe''s billing email; the organization keeps its account.'),
  ('public.billing_accounts', 'default_payment_method_id', 'payment_detail', 'set_null', null),
  ('public.payment_methods', 'stripe_payment_method_id', 'payment_detail', 'delete_row', null),
  ('public.payment_methods', 'brand', 'payment_detail', 'delete_row', null),
  ('public.payment_methods', 'last4', 'payment_detail', 'delete_row', null),
  ('public.subscriptions', 'stripe_subscription_id', 'identifier', 'delete_row', null),
  ('public.credit_accounts', 'billing_email', 'contact_email', 'set_null', 'Who statements go to; the organization keeps its account.'),
  ('public.credit_accounts', 'billing_name', 'name', 'set_null', null),
  ('public.credit_accounts', 'stripe_payment_method_id', 'payment_detail', 'set_null', null),
  ('public.credit_accounts', 'opened_by', 'identifier', 'set_null', 'The operator; cleared with that user.'),
  ('public.credit_account_transactions', 'created_by', 'identifier', 'set_null', 'The row stays (money record), who made it goes.'),
  ('public.credit_account_transactions', 'metadata', 'metadata', 'pseudonymize', 'Caller-supplied details.'),
  ('public.credit_ledger', 'actor_id', 'identifier', 'set_null', 'The row stays (money record), who caused it goes (the ledger''s detach rule).'),
  ('public.credit_ledger', 'metadata', 'metadata', 'pseudonymize', 'Caller-supplied details; {} as the detach rule requires.'),
  ('public.credit_grants', 'granted_by', 'identifier', 'set_null', null),
  ('public.credit_grants', 'metadata', 'metadata', 'pseudonymize', 'Caller-supplied details.'),
  ('public.credit_reservations', 'created_by', 'identifier', 'set_null', null),
  ('public.credit_reservations', 'metadata', 'metadata', 'pseudonymize', 'Caller-supplied details.'),
  ('public.consent_records', 'user_id', 'identifier', 'set_null', 'The record stays as proof (legal_retention).'),
  ('public.consent_records', 'email', 'contact_email', 'hash', 'Hashed, a revocation still applies to the address and the proof can be matched.'),
  ('private.domain_events', 'payload', 'metadata', 'pseudonymize', 'Event data: invitees'' addresses, names; the erasure''s scrub replaces the subject''s values.'),
  ('private.domain_events', 'actor_id', 'identifier', 'pseudonymize', 'No foreign key: left as a dangling id until the event''s retention ends.'),
  ('private.email_messages', 'recipient', 'contact_email', 'delete_row', null),
  ('private.email_messages', 'user_id', 'identifier', 'delete_row', null),
  ('private.email_messages', 'props', 'metadata', 'delete_row', 'Names, links, codes.'),
  ('private.email_messages', 'idempotency_key', 'contact_email', 'delete_row', 'Some keys embed the recipient.'),
  ('private.email_messages', 'last_error', 'free_text', 'delete_row', 'The provider''s errors may quote the address.'),
  ('private.email_messages', 'provider_message_id', 'identifier', 'delete_row', 'Leads to the message at Resend.'),
  ('private.email_suppressions', 'email', 'contact_email', 'hash', 'Hashed, the address stays suppressed (private.email_allowed compares the digest).'),
  ('private.free_allocations', 'user_id', 'identifier', 'delete_row', null),
  ('private.platform_admins', 'user_id', 'identifier', 'delete_row', null),
  ('private.platform_admins', 'note', 'free_text', 'delete_row', null),
  ('private.rate_limit_counters', 'subject', 'identifier', 'delete_row', '<organization>:<email> or a user id; counters last one window.'),
  ('private.stripe_events', 'object_id', 'identifier', 'delete_row', 'A Stripe customer, invoice, subscription, ...'),
  ('private.stripe_events', 'payload', 'payment_detail', 'delete_row', 'The event as Stripe sent it: customers'' names, addresses, emails.');

insert into private.personal_data_subjects (table_name, subject_column, subject_kind) values
  ('auth.users', 'id', 'user_id'),
  ('auth.users', 'email', 'email'),
  ('public.profiles', 'id', 'user_id'),
  ('public.profiles', 'email', 'email'),
  ('public.organizations', 'created_by', 'user_id'),
  ('public.organization_members', 'user_id', 'user_id'),
  ('public.organization_invitations', 'email', 'email'),
  ('public.organization_invitations', 'accepted_by', 'user_id'),
  ('public.email_preferences', 'user_id', 'user_id'),
  ('public.files', 'uploaded_by', 'user_id'),
  ('public.billing_accounts', 'email', 'email'),
  ('public.credit_accounts', 'billing_email', 'email'),
  ('public.credit_account_transactions', 'created_by', 'user_id'),
  ('public.credit_ledger', 'actor_id', 'user_id'),
  ('public.credit_grants', 'granted_by', 'user_id'),
  ('public.credit_reservations', 'created_by', 'user_id'),
  ('public.consent_records', 'user_id', 'user_id'),
  ('public.consent_records', 'email', 'email'),
  ('private.email_messages', 'recipient', 'email'),
  ('private.email_messages', 'user_id', 'user_id'),
  ('private.email_suppressions', 'email', 'email'),
  ('private.free_allocations', 'user_id', 'user_id'),
  ('private.platform_admins', 'user_id', 'user_id');

insert into private.personal_data_indirect_tables (table_name, reached_by, reason) values
  ('public.invoices', 'organization_id', 'The organization''s invoices, about no one person; kept by law (legal_retention).'),
  ('public.credit_statements', 'organization_id', 'The organization''s statements; kept by law (legal_retention).'),
  ('private.credit_pack_purchases', 'organization_id', 'The organization''s payments; kept by law (legal_retention).'),
  ('private.billing_invoice_grants', 'organization_id', 'The organization''s billing records; they go with it.'),
  ('public.payment_methods', 'organization_id', 'The organization''s cards as Stripe has them; they go with it, or when detached in Stripe.'),
  ('public.subscriptions', 'organization_id', 'The organization''s subscription; it goes with it.'),
  ('private.domain_events', 'the erasure''s scrub; domain_event_retention', 'The outbox: payloads are scrubbed of the subject''s values (the guard allows only payload changes) and events leave after 30 days.'),
  ('private.rate_limit_counters', 'rate-limits-purge', 'The subject is embedded in a key; counters last one window and are purged hourly.'),
  ('private.stripe_events', 'the Stripe object id; stripe-events-purge', 'Stripe''s notifications about the organization''s customer; scrubbed of the subject''s values, purged after stripe_event_retention.');

-- Checked: nothing personal in these.
insert into private.non_personal_columns (table_name, column_name, reason) values
  ('public.organizations', 'name', 'The organization''s (a business''s) name: its data, not a person''s; it goes with the organization''s purge (a sole owner''s erasure closes or transfers it first).'),
  ('public.organizations', 'slug', 'The organization''s handle.'),
  ('public.organization_invitations', 'token_hash', 'SHA-256 of a random token.'),
  ('public.organization_plans', 'plan_key', 'A catalogue key.'),
  ('public.credit_pools', 'key', 'Catalogue.'), ('public.credit_pools', 'name', 'Catalogue.'), ('public.credit_pools', 'description', 'Catalogue.'),
  ('public.credit_plans', 'key', 'Catalogue.'), ('public.credit_plans', 'name', 'Catalogue.'), ('public.credit_plans', 'description', 'Catalogue.'),
  ('public.credit_plans', 'stripe_lookup_key', 'Our price in Stripe.'), ('public.credit_plans', 'stripe_price_id', 'Our price in Stripe.'),
  ('public.credit_plans', 'price_currency', 'A currency code.'),
  ('public.credit_plan_allocations', 'plan_key', 'Catalogue.'), ('public.credit_plan_allocations', 'pool_key', 'Catalogue.'),
  ('public.credit_actions', 'key', 'Catalogue.'), ('public.credit_actions', 'name', 'Catalogue.'), ('public.credit_actions', 'description', 'Catalogue.'),
  ('public.credit_action_costs', 'action_key', 'Catalogue.'), ('public.credit_action_costs', 'pool_key', 'Catalogue.'),
  ('public.credit_packs', 'key', 'Catalogue.'), ('public.credit_packs', 'name', 'Catalogue.'), ('public.credit_packs', 'pool_key', 'Catalogue.'),
  ('public.credit_packs', 'price_currency', 'A currency code.'), ('public.credit_packs', 'stripe_lookup_key', 'Our price in Stripe.'),
  ('public.credit_packs', 'stripe_price_id', 'Our price in Stripe.'),
  ('public.credit_balances', 'pool_key', 'Catalogue key.'),
  ('public.credit_grants', 'pool_key', 'Catalogue key.'),
  ('public.credit_ledger', 'pool_key', 'Catalogue key.'), ('public.credit_ledger', 'action_key', 'Catalogue key.'),
  ('public.credit_ledger', 'actor_role', 'authenticated, service_role or system.'),
  ('public.credit_overages', 'pool_key', 'Catalogue key.'),
  ('public.credit_reservations', 'action_key', 'Catalogue key.'),
  ('public.credit_reservations', 'amounts', 'Credits per pool.'), ('public.credit_reservations', 'holds', 'Pools, grant ids and amounts.'),
  ('public.credit_reservations', 'charged', 'Credits per pool.'),
  ('public.credit_reservations', 'idempotency_key', 'Letters, digits and _ . : - only (no address fits); an opaque retry token.'),
  ('public.credit_reservations', 'actor_role', 'The caller''s role.'),
  ('public.credit_accounts', 'currency', 'A currency code.'),
  ('public.credit_account_transactions', 'currency', 'A currency code.'),
  ('public.credit_account_transactions', 'source_type', 'A closed set (overage, pack, ...).'),
  ('public.credit_account_transactions', 'idempotency_key', 'Letters, digits and _ . : - only; an opaque retry token.'),
  ('public.credit_statements', 'currency', 'A currency code.'),
  ('public.credit_statements', 'collection_method', 'charge_automatically or send_invoice.'),
  ('public.credit_statements', 'last_error', 'Our or Stripe''s error billing it; names no person.'),
  ('public.invoices', 'billing_reason', 'Stripe''s reason code.'), ('public.invoices', 'currency', 'A currency code.'),
  ('public.subscriptions', 'stripe_price_id', 'Our price in Stripe.'), ('public.subscriptions', 'plan_key', 'Catalogue key.'),
  ('public.payment_methods', 'type', 'card, sepa_debit, ...'),
  ('public.file_contexts', 'key', 'Catalogue.'), ('public.file_contexts', 'description', 'Catalogue.'),
  ('public.file_contexts', 'allowed_mime_types', 'Catalogue.'),
  ('public.files', 'context', 'Catalogue key.'), ('public.files', 'store', 'private or public.'),
  ('public.files', 'content_type', 'A media type.'), ('public.files', 'owner_table', 'A table name.'),
  ('public.files', 'move_to_store', 'private or public.'),
  ('public.consent_purposes', 'key', 'Catalogue.'), ('public.consent_purposes', 'name', 'Catalogue.'),
  ('public.consent_purposes', 'description', 'Catalogue.'),
  ('public.consent_records', 'purpose', 'Catalogue key.'), ('public.consent_records', 'status', 'given or revoked.'),
  ('public.consent_records', 'source', 'A closed vocabulary of how (signup_form, settings, ...).'),
  ('public.consent_records', 'policy_version', 'The version of our text.'),
  ('private.billing_invoice_grants', 'plan_key', 'Catalogue key.'),
  ('private.credit_idempotency_keys', 'key', 'Letters, digits and _ . : - only; an opaque retry token.'),
  ('private.credit_idempotency_keys', 'request_hash', 'A digest of the request.'),
  ('private.credit_idempotency_keys', 'result', 'Amounts, balances and ids.'),
  ('private.credit_pack_purchases', 'pack_key', 'Catalogue key.'), ('private.credit_pack_purchases', 'pool_key', 'Catalogue key.'),
  ('private.credit_pack_purchases', 'currency', 'A currency code.'),
  ('private.domain_events', 'type', 'An event type.'),
  ('private.email_messages', 'template', 'A template name.'), ('private.email_messages', 'provider', 'resend or mailbox.'),
  ('private.email_templates', 'name', 'Catalogue.'), ('private.email_templates', 'description', 'Catalogue.'),
  ('private.error_classes', 'class', 'Catalogue.'), ('private.error_classes', 'sqlstate', 'Catalogue.'),
  ('private.error_classes', 'meaning', 'Catalogue.'),
  ('private.error_codes', 'code', 'Catalogue.'), ('private.error_codes', 'class', 'Catalogue.'),
  ('private.error_codes', 'meaning', 'Catalogue.'), ('private.error_codes', 'raised_by', 'sql or functions.'),
  ('private.event_deliveries', 'consumer', 'A consumer name.'),
  ('private.event_deliveries', 'last_error', 'The consumer''s error; names no person.'),
  ('private.file_references', 'table_name', 'Schema.'), ('private.file_references', 'store_column', 'Schema.'),
  ('private.file_references', 'object_column', 'Schema.'),
  ('private.free_allocations', 'slug', 'The organization''s handle.'),
  ('private.job_runs', 'job_name', 'A job name.'), ('private.job_runs', 'error', 'A job''s error; names no person.'),
  ('private.jobs', 'name', 'Configuration.'), ('private.jobs', 'description', 'Configuration.'),
  ('private.jobs', 'schedule', 'Configuration.'), ('private.jobs', 'command', 'Configuration.'),
  ('private.jobs', 'last_error', 'A job''s error; names no person.'),
  ('private.outbox_consumers', 'name', 'Configuration.'), ('private.outbox_consumers', 'description', 'Configuration.'),
  ('private.outbox_consumers', 'event_types', 'Configuration.'),
  ('private.rate_limit_counters', 'bucket', 'What is limited.'),
  ('private.settings', 'key', 'Configuration.'), ('private.settings', 'value', 'Configuration.'),
  ('private.settings', 'description', 'Configuration.'),
  ('private.stripe_events', 'id', 'The id of a Stripe notification (its data is in payload).'),
  ('private.stripe_events', 'type', 'An event type.'), ('private.stripe_events', 'api_version', 'A version.'),
  ('private.stripe_events', 'outcome', 'A closed set.'), ('private.stripe_events', 'last_error', 'Our error handling it; names no person.'),
  ('private.webhook_receipts', 'source', 'resend or stripe.'), ('private.webhook_receipts', 'receipt_id', 'A delivery id.'),
  ('private.personal_data_columns', 'table_name', 'The registry.'), ('private.personal_data_columns', 'column_name', 'The registry.'),
  ('private.personal_data_columns', 'legal_basis', 'The registry.'), ('private.personal_data_columns', 'note', 'The registry.'),
  ('private.personal_data_subjects', 'table_name', 'The registry.'), ('private.personal_data_subjects', 'subject_column', 'The registry.'),
  ('private.personal_data_subjects', 'subject_kind', 'The registry.'),
  ('private.non_personal_columns', 'table_name', 'The registry.'), ('private.non_personal_columns', 'column_name', 'The registry.'),
  ('private.non_personal_columns', 'reason', 'The registry.'),
  ('private.personal_data_indirect_tables', 'table_name', 'The registry.'),
  ('private.personal_data_indirect_tables', 'reached_by', 'The registry.'),
  ('private.personal_data_indirect_tables', 'reason', 'The registry.'),
  ('private.legal_retention', 'table_name', 'The registry.'), ('private.legal_retention', 'legal_basis', 'The registry.');

-- ---------------------------------------------------------------------------------------------
-- Reading the registry
-- ---------------------------------------------------------------------------------------------
create function private.subject_tables()
returns table (table_name text, subject_column text, subject_kind text)
language sql
stable
set search_path = ''
as $$
  select s.table_name, s.subject_column, s.subject_kind from private.personal_data_subjects s order by 1, 2
$$;
comment on function private.subject_tables() is 'Every table the rows about a person are found in, with the columns that name them (user_id or email).';
grant execute on function private.subject_tables() to service_role;

create function private.personal_columns_of(p_table text)
returns table (column_name text, category private.personal_data_category, strategy private.erasure_strategy, retention interval, legal_basis text)
language sql
stable
set search_path = ''
as $$
  select c.column_name, c.category, c.strategy, c.retention, c.legal_basis
  from private.personal_data_columns c where c.table_name = p_table order by 1
$$;
comment on function private.personal_columns_of(text) is 'The personal columns of a table (schema-qualified) with their category and erasure strategy.';
grant execute on function private.personal_columns_of(text) to service_role;

-- Every column of public and private that could hold personal data: text-like, JSON, network
-- and binary types (and arrays and domains of them), and uuids that name a user.
create function private.personal_data_candidates()
returns table (table_name text, column_name text, data_type text)
language sql
stable
set search_path = ''
as $$
  select n.nspname || '.' || c.relname, a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod)
  from pg_catalog.pg_class c
  join pg_catalog.pg_namespace n on n.oid = c.relnamespace
  join pg_catalog.pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
  join pg_catalog.pg_type t on t.oid = a.atttypid
  left join pg_catalog.pg_type d on d.oid = t.typbasetype and t.typtype = 'd'
  cross join lateral (select coalesce(d.oid, t.oid) as oid) base
  join pg_catalog.pg_type bt on bt.oid = base.oid
  left join pg_catalog.pg_type et on et.oid = bt.typelem and bt.typcategory = 'A'
  cross join lateral (select coalesce(et.typname, bt.typname) as typname) eff
  where n.nspname in ('public', 'private')
    and c.relkind in ('r', 'p')
    and not c.relispartition
    and (eff.typname in ('text', 'varchar', 'bpchar', 'citext', 'name', 'json', 'jsonb', 'xml', 'inet', 'cidr', 'macaddr', 'macaddr8', 'bytea')
         or (eff.typname = 'uuid' and (
              a.attname ~ '(^|_)user_ids?$' or a.attname ~ '_by$' or a.attname ~ '^actor_id' or a.attname = 'subject_id'
              or exists (select 1 from pg_catalog.pg_constraint k
                         where k.conrelid = c.oid and k.contype = 'f' and a.attnum = any (k.conkey)
                           and k.confrelid in ('auth.users'::regclass, 'public.profiles'::regclass)))))
$$;
comment on function private.personal_data_candidates() is
  'Every column in public and private that could hold personal data (text, JSON, network, binary, or a uuid naming a user).';
grant execute on function private.personal_data_candidates() to service_role;

-- What is wrong with the registry; empty when every migration registered its columns.
create function private.personal_data_problems()
returns table (problem text, table_name text, column_name text)
language sql
stable
set search_path = ''
as $$
  with existing as (
    select n.nspname || '.' || c.relname as table_name, a.attname::text as column_name, a.attnotnull as not_null, a.atttypid as type_oid
    from pg_catalog.pg_class c
    join pg_catalog.pg_namespace n on n.oid = c.relnamespace
    join pg_catalog.pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
    where c.relkind in ('r', 'p') and n.nspname in ('public', 'private', 'auth')
  ),
  tables as (select distinct e.table_name from existing e),
  personal_tables as (select distinct p.table_name from private.personal_data_columns p)
  -- a column that could hold personal data, in neither list
  select 'unregistered', k.table_name, k.column_name from private.personal_data_candidates() k
  where not exists (select 1 from private.personal_data_columns p where p.table_name = k.table_name and p.column_name = k.column_name)
    and not exists (select 1 from private.non_personal_columns x where x.table_name = k.table_name and x.column_name = k.column_name)
  union all
  -- entries naming columns or tables that do not exist (any more)
  select 'stale', p.table_name, p.column_name from private.personal_data_columns p
  where not exists (select 1 from existing e where e.table_name = p.table_name and e.column_name = p.column_name)
  union all
  select 'stale', x.table_name, x.column_name from private.non_personal_columns x
  where not exists (select 1 from existing e where e.table_name = x.table_name and e.column_name = x.column_name)
  union all
  select 'stale', i.table_name, null from private.personal_data_indirect_tables i where i.table_name not in (select t.table_name from tables t)
  union all
  select 'stale', r.table_name, null from private.legal_retention r where r.table_name not in (select t.table_name from tables t)
  union all
  -- in both lists
  select 'both_lists', p.table_name, p.column_name from private.personal_data_columns p
  join private.non_personal_columns x on x.table_name = p.table_name and x.column_name = p.column_name
  union all
  -- a table with personal columns that nobody can find a subject in, or that claims both
  select 'no_subject', pt.table_name, null from personal_tables pt
  where not exists (select 1 from private.personal_data_subjects s where s.table_name = pt.table_name)
    and not exists (select 1 from private.personal_data_indirect_tables i where i.table_name = pt.table_name)
  union all
  select 'subject_and_indirect', i.table_name, null from private.personal_data_indirect_tables i
  where exists (select 1 from private.personal_data_subjects s where s.table_name = i.table_name)
  union all
  -- strategies the columns cannot take
  select 'set_null_on_not_null', p.table_name, p.column_name from private.personal_data_columns p
  join existing e on e.table_name = p.table_name and e.column_name = p.column_name
  where p.strategy = 'set_null' and e.not_null
  union all
  select 'strategy_for_type', p.table_name, p.column_name from private.personal_data_columns p
  join existing e on e.table_name = p.table_name and e.column_name = p.column_name
  where (p.strategy = 'pseudonymize' and e.type_oid not in ('uuid'::regtype, 'json'::regtype, 'jsonb'::regtype, 'text'::regtype, 'varchar'::regtype, 'text[]'::regtype))
     or (p.strategy = 'hash' and e.type_oid not in ('text'::regtype, 'varchar'::regtype))
  union all
  -- a record the law keeps, deleted by erasure
  select 'deletes_retained', p.table_name, p.column_name from private.personal_data_columns p
  join private.legal_retention r on r.table_name = p.table_name
  where p.strategy = 'delete_row'
$$;
comment on function private.personal_data_problems() is
  'What the personal-data registry misses or gets wrong (unregistered, stale, both_lists, no_subject, subject_and_indirect, set_null_on_not_null, strategy_for_type, deletes_retained); empty when complete.';
grant execute on function private.personal_data_problems() to service_role;

-- ---------------------------------------------------------------------------------------------
-- The audit chapter's tables (20261201000800, which runs before this one)
-- ---------------------------------------------------------------------------------------------
-- Consent records are an append-only history whose every record record_consent audits as
-- consent_given or consent_revoked: no row trigger besides.
insert into private.audit_exempt_tables (table_name, reason) values
  ('public.consent_records', 'Append-only history of consent; every record is audited as consent_given or consent_revoked when written.');

insert into private.legal_retention (table_name, retention, legal_basis) values
  ('public.audit_log', '2 years', 'Accountability and security of processing (GDPR art. 5(2), 32): the facts stay, an erased subject pseudonymised; audit_retention drops whole months.');

insert into private.personal_data_columns (table_name, column_name, category, strategy, retention, legal_basis, note) values
  ('public.audit_log', 'actor_id', 'identifier', 'pseudonymize', null, null, 'private.pseudonymize_audit_subject replaces the subject''s id.'),
  ('public.audit_log', 'row_id', 'identifier', 'pseudonymize', null, null, 'A profile''s row id is a user id; replaced like actor_id.'),
  ('public.audit_log', 'changes', 'metadata', 'pseudonymize', null, null, 'Old and new values: the subject''s values are scrubbed (pseudonymize_audit_values).'),
  ('public.audit_log', 'ip_address', 'ip_address', 'set_null', null, null, 'Dropped from the subject''s entries.'),
  ('public.audit_log', 'user_agent', 'user_agent', 'set_null', null, null, 'Dropped from the subject''s entries.'),
  ('private.legal_holds', 'reason', 'free_text', 'keep', null, 'A legal hold is a record for legal claims (GDPR art. 17(3)(e)), kept while it matters.', 'The case or authority; may name people.'),
  ('private.legal_holds', 'placed_by', 'identifier', 'keep', null, 'Who placed a hold is part of its record (art. 17(3)(e)).', 'An operator; no foreign key.'),
  ('private.legal_holds', 'released_by', 'identifier', 'keep', null, 'Who released a hold is part of its record (art. 17(3)(e)).', 'An operator; no foreign key.');

insert into private.personal_data_indirect_tables (table_name, reached_by, reason) values
  ('public.audit_log', 'private.pseudonymize_audit_subject, pseudonymize_audit_values', 'The facts stay: the erasure replaces the subject''s id and values in every entry (the guard lets only that through).'),
  ('private.legal_holds', 'organization_id', 'Holds are about an organization''s records and kept as legal records; the operators in them are no subject of the hold.');

insert into private.non_personal_columns (table_name, column_name, reason) values
  ('public.audit_log', 'table_name', 'A table name.'), ('public.audit_log', 'action', 'An action name.'),
  ('public.audit_log', 'actor_kind', 'A closed set.'), ('public.audit_log', 'request_id', 'A random id of the request.'),
  ('private.audit_exempt_tables', 'table_name', 'Configuration.'), ('private.audit_exempt_tables', 'reason', 'Configuration.'),
  ('private.audit_excluded_columns', 'table_name', 'Configuration.'), ('private.audit_excluded_columns', 'column_name', 'Configuration.'),
  ('private.audit_excluded_columns', 'reason', 'Configuration.'),
  ('private.audit_included_columns', 'table_name', 'Configuration.'), ('private.audit_included_columns', 'column_name', 'Configuration.'),
  ('private.audit_included_columns', 'reason', 'Configuration.');
