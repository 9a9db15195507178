-- =============================================================================================
-- GDPR: the audit log (who changed what, when, from where), partitioned by month
-- =============================================================================================

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

-- One generic trigger, private.audit_row, records every insert, update and delete of an audited
-- table as a row of public.audit_log: the organization, the table, the row's id, the action, the
-- actor (user, service role, platform admin, API key, job or system), only the changed fields as
-- {field: {"old": ..., "new": ...}}, and the caller's IP address, user agent and request id from
-- the headers PostgREST passes. Secrets never get in: a column whose name looks like one (token,
-- hash, secret, password, key, signature) or that private.audit_excluded_columns lists is never
-- copied. RPCs record their own domain actions (exported, consent_given, erased, purge_*, ...)
-- with private.audit_action.
--
-- Opting in is one line per table, in the migration that creates it:
--     select private.enable_audit('public.x');
-- or, for a high-volume table that has its own history, one row of private.audit_exempt_tables
-- saying why. A pgTAP test (tests/db/gdpr/01-audit.test.sql) fails for a table in public with an
-- organization_id column that is neither audited nor exempt.
--
-- The log is append-only for everyone: the API roles may only read it (owners and admins their
-- organization's rows), and a guard refuses updates and deletes but for the pseudonymisation of
-- an erased subject. It is partitioned by month on occurred_at (native partitioning, so it runs
-- unchanged on hosted Supabase as the non-superuser owner); retention drops whole partitions
-- older than audit_retention, unless a legal hold stands.

insert into private.settings (key, value, description) values
  ('audit_retention', '"2 years"',
   'How long audit log rows are kept: whole monthly partitions older than this are dropped (not while any legal hold stands).');

-- ---------------------------------------------------------------------------------------------
-- The log
-- ---------------------------------------------------------------------------------------------
create table public.audit_log (
  -- Cached: every audited write of every session draws from this one sequence.
  id bigint generated always as identity (cache 50),
  occurred_at timestamptz not null default now(),
  organization_id uuid,
  table_name text,
  row_id text,
  action text not null check (action ~ '^[a-z_]{1,50}$'),
  actor_id uuid,
  actor_kind text not null check (actor_kind in ('user', 'service_role', 'platform_admin', 'api_key', 'job', 'system')),
  changes jsonb not null default '{}'::jsonb check (jsonb_typeof(changes) = 'object'),
  ip_address inet,
  user_agent text check (char_length(user_agent) <= 500),
  request_id text,
  primary key (id, occurred_at)
) partition by range (occurred_at);
comment on table public.audit_log is
  'Who changed what and when: every insert, update and delete of the audited tables, and the domain actions RPCs record. Append-only; partitioned by month (private.audit_log_yYYYYmMM); owners and admins read their organization''s rows.';
comment on column public.audit_log.id is 'The entry (unique with occurred_at; increasing within a session, roughly in time across sessions).';
comment on column public.audit_log.occurred_at is 'When it happened (the partition key).';
comment on column public.audit_log.organization_id is 'The organization it concerns (no foreign key: the log outlives the rows); null for actions of no organization.';
comment on column public.audit_log.table_name is 'The table, schema-qualified (public.customers); null for a domain action on no table.';
comment on column public.audit_log.row_id is 'The row''s id as text (its primary key; the values joined by commas when it has several columns; at most 1000 characters).';
comment on column public.audit_log.action is 'insert, update or delete for row changes; otherwise the domain action (exported, consent_given, erased, purge_scheduled, ...).';
comment on column public.audit_log.actor_id is 'Who did it: the user (auth.users.id), the API key or null (a job, the system, the service role on its own).';
comment on column public.audit_log.actor_kind is 'user, service_role, platform_admin, api_key, job or system (a direct database connection).';
comment on column public.audit_log.changes is 'Row changes: only the changed fields, {field: {"old": ..., "new": ...}} (insert: "new" only, delete: "old" only), never secrets. Domain actions: their details.';
comment on column public.audit_log.ip_address is 'The caller''s IP address (X-Forwarded-For, else X-Real-IP), when the request came through the API.';
comment on column public.audit_log.user_agent is 'The caller''s User-Agent (at most 500 characters).';
comment on column public.audit_log.request_id is 'The request''s X-Request-Id (at most 200 characters), or the job run (job:<name>:<run id>).';
-- Readers only: writes come from the security-definer trigger and functions below.
grant select on public.audit_log to authenticated, service_role;
alter table public.audit_log enable row level security;
-- Owners and admins read their organization's history. The rows of the tables only owners and
-- billing members may read (the credit account and its statements) stay with owners: the log
-- shows no admin what the table itself would not. A later owner-only table adds itself here.
create policy "Owners and admins read their organization's audit log"
on public.audit_log for select to authenticated
using (
  organization_id in (select private.organization_ids_with_role('{owner,admin}'))
  and (table_name is null
       or table_name not in ('public.credit_accounts', 'public.credit_statements')
       or organization_id in (select private.organization_ids_with_role('{owner}')))
);

-- On the parent, so every partition gets them: the organization's history by time, the history
-- of one row, what one actor did.
create index audit_log_organization_idx on public.audit_log (organization_id, occurred_at desc);
create index audit_log_row_idx on public.audit_log (table_name, row_id, occurred_at desc);
create index audit_log_actor_idx on public.audit_log (actor_id, occurred_at desc);

-- Where a row lands whose month has no partition yet (the partition job stopped for months):
-- writes never fail for want of one. private.ensure_audit_partitions moves such rows into their
-- month's partition when it creates it, so it stays empty. Built like the monthly ones: the
-- parent's columns with their comments, then attached.
create table private.audit_log_default (like public.audit_log including defaults including constraints including comments including storage);
comment on table private.audit_log_default is
  'The audit log''s catch-all partition: rows whose month has no partition yet. Normally empty; ensure_audit_partitions moves its rows out.';
alter table private.audit_log_default enable row level security;
alter table public.audit_log attach partition private.audit_log_default default;

-- ---------------------------------------------------------------------------------------------
-- Legal holds: while one stands, retention drops no audit partition (of any organization: the
-- partitions hold every organization's rows, so one hold keeps them all).
-- ---------------------------------------------------------------------------------------------
create table private.legal_holds (
  id uuid primary key default gen_random_uuid(),
  organization_id uuid,
  reason text not null check (char_length(btrim(reason)) between 1 and 500),
  placed_by uuid,
  placed_at timestamptz not null default now(),
  released_by uuid,
  released_at timestamptz,
  check (released_at is null or released_at >= placed_at)
);
comment on table private.legal_holds is
  'Legal holds: while one is unreleased, retention keeps what it covers (every audit partition; the organization''s records, or all with a null organization).';
comment on column private.legal_holds.id is 'The hold.';
comment on column private.legal_holds.organization_id is 'The organization it covers; null: every organization.';
comment on column private.legal_holds.reason is 'Why (the case, the authority), 1 to 500 characters.';
comment on column private.legal_holds.placed_by is 'The operator who placed it (auth.users.id; no foreign key: the hold outlives accounts).';
comment on column private.legal_holds.placed_at is 'When it was placed.';
comment on column private.legal_holds.released_by is 'The operator who released it.';
comment on column private.legal_holds.released_at is 'When it was released; null while it stands.';
alter table private.legal_holds enable row level security;
-- Operators place holds and release them; a hold is never deleted.
grant select, insert, update (released_by, released_at) on private.legal_holds to service_role;
create index legal_holds_standing_idx on private.legal_holds (organization_id) where released_at is null;

-- ---------------------------------------------------------------------------------------------
-- What is audited and what is not
-- ---------------------------------------------------------------------------------------------
create table private.audit_exempt_tables (
  table_name text primary key check (table_name ~ '^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$'),
  reason text not null check (char_length(reason) between 1 and 500)
);
comment on table private.audit_exempt_tables is
  'Tables with an organization_id that are deliberately not audited row by row, and why (a test fails for a tenant table neither audited nor listed here).';
comment on column private.audit_exempt_tables.table_name is 'The table, schema-qualified.';
comment on column private.audit_exempt_tables.reason is 'Why it is not audited.';
alter table private.audit_exempt_tables enable row level security;
grant select on private.audit_exempt_tables to service_role;

-- The credits hot path (consume_credits_rpc) updates credit_balances and credit_grants and
-- inserts credit_ledger rows on every call: a trigger on them would roughly double its cost, and
-- the ledger already is the append-only audit of credits (who, which action, how much, when).
insert into private.audit_exempt_tables (table_name, reason) values
  ('public.audit_log', 'The audit log itself: append-only, and auditing it would recurse.'),
  ('public.credit_balances', 'Credits hot path (updated by every consume); every movement is a credit_ledger entry.'),
  ('public.credit_grants', 'Credits hot path (remaining drawn down by every consume); grants and draws are credit_ledger entries.'),
  ('public.credit_ledger', 'The append-only ledger is itself the audit of credits (actor, action, amount, time).'),
  ('public.credit_reservations', 'Credits hot path (reserve, commit, release); each settlement is in credit_ledger.'),
  ('public.credit_overages', 'Written on the consume path; append-only money records tied to their ledger transaction.'),
  ('public.credit_account_transactions', 'The append-only history of a credit account (who, why, how much) is itself its audit.'),
  -- Private tables with an organization_id, listed so the choice is on record.
  ('private.credit_idempotency_keys', 'One row per consume call (hot path); purged after 7 days.'),
  ('private.domain_events', 'The immutable outbox: events are history already.'),
  ('private.email_messages', 'High-volume mail queue whose status changes per delivery attempt; delivery events record it.'),
  ('private.billing_invoice_grants', 'System bookkeeping of one allocation per paid invoice (the ledger records the grant).'),
  ('private.credit_pack_purchases', 'System bookkeeping of one grant per checkout session (the ledger records the grant).'),
  ('private.free_allocations', 'System bookkeeping of free-plan allocations (the ledger records them).'),
  ('private.deleted_organizations', 'Tombstones written once when an organization is deleted (the deletion itself is audited).');

create table private.audit_excluded_columns (
  table_name text not null check (table_name ~ '^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$'),
  column_name text not null check (char_length(column_name) between 1 and 63),
  reason text not null check (char_length(reason) between 1 and 500),
  primary key (table_name, column_name)
);
comment on table private.audit_excluded_columns is
  'Columns never copied into the audit log besides those whose names look secret (token, hash, secret, password, key, signature): bearer links, large or secret values.';
comment on column private.audit_excluded_columns.table_name is 'The table, schema-qualified.';
comment on column private.audit_excluded_columns.column_name is 'The column.';
comment on column private.audit_excluded_columns.reason is 'Why it stays out.';
alter table private.audit_excluded_columns enable row level security;
grant select on private.audit_excluded_columns to service_role;

-- Stripe's hosted invoice pages and PDFs open for anyone holding the link.
insert into private.audit_excluded_columns (table_name, column_name, reason) values
  ('public.invoices', 'hosted_invoice_url', 'A bearer link: anyone holding it sees and pays the invoice.'),
  ('public.invoices', 'invoice_pdf_url', 'A bearer link to the invoice PDF.'),
  ('public.credit_statements', 'hosted_invoice_url', 'A bearer link: anyone holding it sees and pays the statement''s invoice.');

create table private.audit_included_columns (
  table_name text not null check (table_name ~ '^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$'),
  column_name text not null check (char_length(column_name) between 1 and 63),
  reason text not null check (char_length(reason) between 1 and 500),
  primary key (table_name, column_name)
);
comment on table private.audit_included_columns is
  'Columns whose names look secret but are not (a catalogue key such as plan_key): the audit log copies them after all.';
comment on column private.audit_included_columns.table_name is 'The table, schema-qualified.';
comment on column private.audit_included_columns.column_name is 'The column.';
comment on column private.audit_included_columns.reason is 'Why it is no secret.';
alter table private.audit_included_columns enable row level security;
grant select on private.audit_included_columns to service_role;

insert into private.audit_included_columns (table_name, column_name, reason) values
  ('public.organization_plans', 'plan_key', 'The plan''s catalogue key, not a secret: plan changes belong in the log.'),
  ('public.subscriptions', 'plan_key', 'The plan''s catalogue key, not a secret.');

-- ---------------------------------------------------------------------------------------------
-- Guards
-- ---------------------------------------------------------------------------------------------
-- Append-only: no update or delete, whoever tries (the API roles have no privilege anyway).
-- Two permits let the system through: audit_pseudonymize (an erased subject's identity is
-- replaced; what happened, where and when stays) and audit_partition_move (rows leave the default
-- partition for their month's). Dropping a whole partition is DDL and fires nothing.
create function private.guard_audit_log()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if tg_op = 'DELETE' then
    if tg_table_name = 'audit_log_default' and private.permitted('audit_partition_move') then
      return old;
    end if;
  elsif tg_op = 'UPDATE' then
    if private.permitted('audit_pseudonymize')
       and (new.id, new.occurred_at, new.organization_id, new.table_name, new.action, new.actor_kind)
           is not distinct from (old.id, old.occurred_at, old.organization_id, old.table_name, old.action, old.actor_kind) then
      return new;
    end if;
  end if;
  perform private.raise('append_only', 'The audit log is append-only: entries are never changed or deleted (whole months are dropped after audit_retention).');
  return null;
end
$$;
comment on function private.guard_audit_log() is
  'Trigger: the audit log is append-only; only pseudonymisation (permit audit_pseudonymize) and the default partition''s move (audit_partition_move) pass.';

create trigger audit_log_append_only
before update or delete on public.audit_log
for each row execute function private.guard_audit_log();

create trigger audit_log_no_truncate
before truncate on public.audit_log
for each statement execute function private.guard_audit_log();

-- ---------------------------------------------------------------------------------------------
-- Who is acting, and from where
-- ---------------------------------------------------------------------------------------------
-- An IP address as PostgREST passes it in a header, or null: validated by pattern first, so a
-- malformed header never raises (and needs no exception block, a subtransaction per row).
create function private.parse_ip_address(p_text text)
returns inet
language sql
immutable
set search_path = ''
as $$
  select case
    when v ~ '^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$'
      or v ~ ('^('
        || '([0-9a-f]{1,4}:){7}[0-9a-f]{1,4}'
        || '|([0-9a-f]{1,4}:){1,7}:'
        || '|([0-9a-f]{1,4}:){1,6}:[0-9a-f]{1,4}'
        || '|([0-9a-f]{1,4}:){1,5}(:[0-9a-f]{1,4}){1,2}'
        || '|([0-9a-f]{1,4}:){1,4}(:[0-9a-f]{1,4}){1,3}'
        || '|([0-9a-f]{1,4}:){1,3}(:[0-9a-f]{1,4}){1,4}'
        || '|([0-9a-f]{1,4}:){1,2}(:[0-9a-f]{1,4}){1,5}'
        || '|[0-9a-f]{1,4}:(:[0-9a-f]{1,4}){1,6}'
        || '|:((:[0-9a-f]{1,4}){1,7}|:)'
        || '|::(ffff(:0{1,4})?:)?((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])'
        || ')$')
    then v::inet
  end
  from (select lower(btrim(p_text)) as v) t
$$;
comment on function private.parse_ip_address(text) is 'An IPv4 or IPv6 address from a header value, or null when it is not one (never raises).';

-- The actor and request of the current statement, for the audit log:
--   * app.actor_kind / app.actor_id (transaction-local settings) name it when a job or the API-key
--     path sets them (set_config('app.actor_kind', 'job', true)); trusted only from a session
--     that is not a signed-in user's or anon's, so nobody passes themselves off as a job;
--   * else the JWT claims PostgREST (and the edge functions) set: the service role; a platform
--     admin (app_metadata.platform_admin or private.platform_admins); another signed-in user; an
--     anonymous caller counts as a user without id;
--   * else 'system': a direct database connection (a migration, Studio, psql).
-- The switched role wins over the claims, as in private.caller_role. The IP address is the first
-- of X-Forwarded-For (else X-Real-IP), the user agent and request id their headers; a job's
-- request id is app.request_id (private.run_job sets job:<name>:<run id>).
-- private.audit_row inlines these steps for speed: change both together (a test compares them).
create function private.audit_context(
  out actor_id uuid, out actor_kind text, out ip_address inet, out user_agent text, out request_id text
)
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_role text := current_setting('role', true);
  v_claims jsonb;
  v_headers jsonb;
  v_text text;
  v_sub text;
begin
  v_text := current_setting('request.jwt.claims', true);
  if v_text like '{%' then
    v_claims := v_text::jsonb;
  end if;
  v_text := current_setting('request.headers', true);
  if v_text like '{%' then
    v_headers := v_text::jsonb;
  end if;
  if v_role is null or v_role not in ('anon', 'authenticated', 'service_role') then
    v_role := v_claims ->> 'role';
  end if;
  v_sub := v_claims ->> 'sub';
  if v_sub !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
    v_sub := null;
  end if;

  actor_kind := nullif(current_setting('app.actor_kind', true), '');
  if actor_kind in ('user', 'service_role', 'platform_admin', 'api_key', 'job', 'system')
     and v_role is distinct from 'anon' and v_role is distinct from 'authenticated' then
    v_text := current_setting('app.actor_id', true);
    actor_id := case when v_text ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then v_text::uuid
                     else v_sub::uuid end;
  else
    actor_id := v_sub::uuid;
    actor_kind := case
      when v_role = 'service_role' then 'service_role'
      when v_role = 'authenticated' then
        case when coalesce(v_claims -> 'app_metadata' -> 'platform_admin' = 'true'::jsonb, false)
               or exists (select 1 from private.platform_admins a where a.user_id = v_sub::uuid)
             then 'platform_admin' else 'user' end
      when v_role = 'anon' then 'user'
      else 'system'
    end;
  end if;

  if v_headers is not null then
    ip_address := coalesce(private.parse_ip_address(split_part(v_headers ->> 'x-forwarded-for', ',', 1)),
                           private.parse_ip_address(v_headers ->> 'x-real-ip'));
    user_agent := left(v_headers ->> 'user-agent', 500);
    request_id := left(v_headers ->> 'x-request-id', 200);
  end if;
  request_id := coalesce(request_id, left(nullif(current_setting('app.request_id', true), ''), 200));
end
$$;
comment on function private.audit_context() is
  'The current actor (id and kind: app.actor_kind, else the JWT claims, else system) and the request''s IP address, user agent and id, as the audit log records them.';
-- Other records of who did something (consent, requests) take the same answer.
grant execute on function private.audit_context() to service_role;

-- ---------------------------------------------------------------------------------------------
-- The trigger
-- ---------------------------------------------------------------------------------------------
-- One insert per audited row change, and as little else as possible: it runs on every write of
-- every audited table. Its arguments are what private.enable_audit read from the catalogue once,
-- so the trigger reads none: the primary key's columns (the row id when the row has no `id`), the
-- columns never to copy (private.audit_excluded_columns) and those to copy although their names
-- look secret (private.audit_included_columns). Column names are matched against the secret
-- pattern on every row, so a column added later is covered at once. The actor and request are
-- worked out inline, as private.audit_context does (a call would cost a sixth of the trigger);
-- a pgTAP test proves the two agree for every kind of caller.
-- A transaction-local permit audit_skip (private.permit('audit_skip')) silences it for a bulk
-- system operation that records itself instead (an organization's purge); signed-in users and
-- anon cannot use it.
create function private.audit_row()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_pk text[] := coalesce(tg_argv[0], '{}')::text[];
  v_excluded text[] := coalesce(tg_argv[1], '{}')::text[];
  v_included text[] := coalesce(tg_argv[2], '{}')::text[];
  v_table text := tg_table_schema || '.' || tg_table_name;
  v_role text := current_setting('role', true);
  v_old jsonb;
  v_row jsonb;
  v_changes jsonb;
  v_row_id text;
  v_column text;
  v_claims jsonb;
  v_headers jsonb;
  v_text text;
  v_sub text;
  v_actor_id uuid;
  v_actor_kind text;
  v_ip_address inet;
  v_user_agent text;
  v_request_id text;
begin
  if current_setting('private.permit_audit_skip', true) = 'on' and v_role is distinct from 'anon' and v_role is distinct from 'authenticated' then
    return null;
  end if;
  if tg_op = 'INSERT' then
    v_row := to_jsonb(new);
    select coalesce(jsonb_object_agg(e.key, jsonb_build_object('new', e.value)), '{}'::jsonb) into v_changes
    from jsonb_each(v_row) e
    where e.value <> 'null'::jsonb
      and (e.key !~ '(^|_)(token|hash|secret|password|key|signature)s?($|_)' or e.key = any (v_included))
      and e.key <> all (v_excluded);
  elsif tg_op = 'UPDATE' then
    v_old := to_jsonb(old);
    v_row := to_jsonb(new);
    select coalesce(jsonb_object_agg(e.key, jsonb_build_object('old', v_old -> e.key, 'new', e.value)), '{}'::jsonb) into v_changes
    from jsonb_each(v_row) e
    where e.value is distinct from v_old -> e.key
      and e.key <> 'updated_at'
      and (e.key !~ '(^|_)(token|hash|secret|password|key|signature)s?($|_)' or e.key = any (v_included))
      and e.key <> all (v_excluded);
    if v_changes = '{}'::jsonb then
      -- Only updated_at, secrets or excluded columns changed (or nothing): nothing to tell.
      return null;
    end if;
  else
    v_row := to_jsonb(old);
    select coalesce(jsonb_object_agg(e.key, jsonb_build_object('old', e.value)), '{}'::jsonb) into v_changes
    from jsonb_each(v_row) e
    where e.value <> 'null'::jsonb
      and (e.key !~ '(^|_)(token|hash|secret|password|key|signature)s?($|_)' or e.key = any (v_included))
      and e.key <> all (v_excluded);
  end if;

  v_row_id := v_row ->> 'id';
  if v_row_id is null then
    foreach v_column in array v_pk loop
      v_row_id := concat_ws(',', v_row_id, v_row ->> v_column);
    end loop;
  end if;

  -- The actor and the request: the same steps as private.audit_context.
  v_text := current_setting('request.jwt.claims', true);
  if v_text like '{%' then
    v_claims := v_text::jsonb;
  end if;
  if v_role is null or v_role not in ('anon', 'authenticated', 'service_role') then
    v_role := v_claims ->> 'role';
  end if;
  v_sub := v_claims ->> 'sub';
  if v_sub !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
    v_sub := null;
  end if;
  v_actor_kind := nullif(current_setting('app.actor_kind', true), '');
  if v_actor_kind in ('user', 'service_role', 'platform_admin', 'api_key', 'job', 'system')
     and v_role is distinct from 'anon' and v_role is distinct from 'authenticated' then
    v_text := current_setting('app.actor_id', true);
    v_actor_id := case when v_text ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then v_text::uuid
                       else v_sub::uuid end;
  else
    v_actor_id := v_sub::uuid;
    v_actor_kind := case
      when v_role = 'service_role' then 'service_role'
      when v_role = 'authenticated' then
        case when coalesce(v_claims -> 'app_metadata' -> 'platform_admin' = 'true'::jsonb, false)
               or exists (select 1 from private.platform_admins a where a.user_id = v_sub::uuid)
             then 'platform_admin' else 'user' end
      when v_role = 'anon' then 'user'
      else 'system'
    end;
  end if;
  v_text := current_setting('request.headers', true);
  if v_text like '{%' then
    v_headers := v_text::jsonb;
    v_ip_address := coalesce(private.parse_ip_address(split_part(v_headers ->> 'x-forwarded-for', ',', 1)),
                             private.parse_ip_address(v_headers ->> 'x-real-ip'));
    v_user_agent := left(v_headers ->> 'user-agent', 500);
    v_request_id := left(v_headers ->> 'x-request-id', 200);
  end if;
  v_request_id := coalesce(v_request_id, left(nullif(current_setting('app.request_id', true), ''), 200));

  insert into public.audit_log (organization_id, table_name, row_id, action, actor_id, actor_kind, changes, ip_address, user_agent, request_id)
  values (
    case when v_table = 'public.organizations' then (v_row ->> 'id')::uuid else (v_row ->> 'organization_id')::uuid end,
    v_table, left(v_row_id, 1000), lower(tg_op), v_actor_id, v_actor_kind, v_changes, v_ip_address, v_user_agent, v_request_id);
  return null;
end
$$;
comment on function private.audit_row() is
  'Trigger (after insert, update or delete, for each row; attach with private.enable_audit): records the change in public.audit_log, changed fields only, never secrets.';

-- Opts a table in (idempotent; run again after its primary key or column lists change, which
-- the column lists' own trigger does). Refuses the audit log itself.
create function private.enable_audit(p_table regclass)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_schema text;
  v_name text;
  v_kind "char";
  v_partition boolean;
  v_pk text[];
  v_excluded text[];
  v_included text[];
begin
  select n.nspname, c.relname, c.relkind, c.relispartition into v_schema, v_name, v_kind, v_partition
  from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
  where c.oid = p_table;
  if v_kind is null or v_kind not in ('r', 'p') or v_partition then
    perform private.raise('invalid_input', format('%s is not a table (nor the parent of partitions).', p_table));
  end if;
  if p_table = 'public.audit_log'::regclass then
    perform private.raise('invalid_input', 'The audit log is not audited.');
  end if;
  select coalesce(array_agg(a.attname::text order by k.ord), '{}') into v_pk
  from pg_catalog.pg_index i
  cross join lateral unnest(i.indkey::int2[]) with ordinality k (attnum, ord)
  join pg_catalog.pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
  where i.indrelid = p_table and i.indisprimary;
  select coalesce(array_agg(e.column_name order by e.column_name), '{}') into v_excluded
  from private.audit_excluded_columns e where e.table_name = v_schema || '.' || v_name;
  select coalesce(array_agg(e.column_name order by e.column_name), '{}') into v_included
  from private.audit_included_columns e where e.table_name = v_schema || '.' || v_name;
  execute format(
    'create or replace trigger audit_row after insert or update or delete on %I.%I for each row execute function private.audit_row(%L, %L, %L)',
    v_schema, v_name, v_pk::text, v_excluded::text, v_included::text);
end
$$;
comment on function private.enable_audit(regclass) is
  'Audits a table: creates (or refreshes) its audit_row trigger with its primary key and column lists. One line per table: select private.enable_audit(''public.x'');';

-- Keeps the triggers' column lists in step with the tables of excluded and included columns.
create function private.refresh_audit_columns()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_table text;
begin
  for v_table in
    select distinct t from unnest(array[
      case when tg_op in ('INSERT', 'UPDATE') then new.table_name end,
      case when tg_op in ('UPDATE', 'DELETE') then old.table_name end]) t
    where t is not null
  loop
    if exists (select 1 from pg_catalog.pg_trigger g
               where g.tgrelid = to_regclass(v_table) and g.tgname = 'audit_row' and g.tgparentid = 0) then
      perform private.enable_audit(to_regclass(v_table));
    end if;
  end loop;
  return null;
end
$$;
comment on function private.refresh_audit_columns() is
  'Trigger: re-runs enable_audit for an audited table whose excluded or included columns changed.';

create trigger audit_excluded_columns_refresh
after insert or update or delete on private.audit_excluded_columns
for each row execute function private.refresh_audit_columns();

create trigger audit_included_columns_refresh
after insert or update or delete on private.audit_included_columns
for each row execute function private.refresh_audit_columns();

-- ---------------------------------------------------------------------------------------------
-- Domain actions and pseudonymisation
-- ---------------------------------------------------------------------------------------------
-- What an RPC records of its own: exported, consent_given, consent_revoked, erased,
-- purge_scheduled, request_filed, ... with the same actor and request as the trigger.
create function private.audit_action(
  p_organization_id uuid, p_action text, p_table text default null, p_row_id text default null, p_details jsonb default '{}'::jsonb
)
returns bigint
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_ctx record;
  v_id bigint;
begin
  if p_action is null or p_action !~ '^[a-z_]{1,50}$' then
    perform private.raise('invalid_input', 'An audit action is 1 to 50 lower-case letters and underscores.');
  end if;
  if p_details is not null and jsonb_typeof(p_details) <> 'object' then
    perform private.raise('invalid_input', 'Audit details are a JSON object.');
  end if;
  v_ctx := private.audit_context();
  insert into public.audit_log (organization_id, table_name, row_id, action, actor_id, actor_kind, changes, ip_address, user_agent, request_id)
  values (p_organization_id, p_table, left(p_row_id, 1000), p_action, v_ctx.actor_id, v_ctx.actor_kind, coalesce(p_details, '{}'::jsonb),
          v_ctx.ip_address, v_ctx.user_agent, v_ctx.request_id)
  returning id into v_id;
  return v_id;
end
$$;
comment on function private.audit_action(uuid, text, text, text, jsonb) is
  'Records a domain action (exported, consent_given, erased, purge_scheduled, ...) in the audit log, with its details in changes; returns the entry''s id.';
grant execute on function private.audit_action(uuid, text, text, text, jsonb) to service_role;

-- A string with every occurrence of the given values replaced (case-insensitively); values shorter
-- than 4 characters only when they are the whole string, so a short name does not rewrite words.
create function private.scrub_text(p_text text, p_values text[], p_replacement text)
returns text
language plpgsql
immutable
set search_path = ''
as $$
declare
  v_value text;
  v_result text := p_text;
begin
  if p_text is null then
    return null;
  end if;
  foreach v_value in array p_values loop
    continue when v_value is null or v_value = '';
    if lower(v_result) = lower(v_value) then
      v_result := p_replacement;
    elsif char_length(v_value) >= 4 and strpos(lower(v_result), lower(v_value)) > 0 then
      v_result := regexp_replace(v_result, regexp_replace(v_value, '([^[:alnum:][:space:]])', '\\\1', 'g'),
                                 replace(p_replacement, '\', '\\'), 'gi');
    end if;
  end loop;
  return v_result;
end
$$;
comment on function private.scrub_text(text, text[], text) is
  'Replaces the given values in a string, case-insensitively (values under 4 characters only as the whole string).';

-- The same through a JSON value: every string in it, at any depth (keys stay).
create function private.scrub_jsonb(p_value jsonb, p_values text[], p_replacement text)
returns jsonb
language sql
immutable
set search_path = ''
as $$
  select case jsonb_typeof(p_value)
    when 'object' then (select coalesce(jsonb_object_agg(e.key, private.scrub_jsonb(e.value, p_values, p_replacement)), '{}'::jsonb)
                        from jsonb_each(p_value) e)
    when 'array' then (select coalesce(jsonb_agg(private.scrub_jsonb(e.value, p_values, p_replacement) order by e.ord), '[]'::jsonb)
                       from jsonb_array_elements(p_value) with ordinality e (value, ord))
    when 'string' then to_jsonb(private.scrub_text(p_value #>> '{}', p_values, p_replacement))
    else p_value
  end
$$;
comment on function private.scrub_jsonb(jsonb, text[], text) is 'Replaces the given values in every string of a JSON value (private.scrub_text), at any depth.';

-- The LIKE pattern that finds a string inside a jsonb column's text form: JSON-escaped as it
-- appears there, then LIKE-escaped; p_whole: only a whole string value (its quotes included).
create function private.jsonb_text_pattern(p_value text, p_whole boolean default false)
returns text
language sql
immutable
set search_path = ''
as $$
  select '%' || replace(replace(replace(case when p_whole then v else substr(v, 2, char_length(v) - 2) end,
                                        '\', '\\'), '%', '\%'), '_', '\_') || '%'
  from (select to_jsonb(p_value)::text as v) t
$$;
comment on function private.jsonb_text_pattern(text, boolean) is
  'A LIKE pattern matching a string (or, with p_whole, a whole string value) inside a jsonb value''s text form.';

-- Erasure: the subject's audit entries keep what happened, where and when, under a pseudonym.
-- Their actor id becomes the pseudonym and their IP address and user agent go; the user's id
-- is replaced wherever it appears in the row ids and changes of every entry. Scans the whole log
-- (erasures are rare); returns the entries changed.
create function private.pseudonymize_audit_subject(p_user_id uuid, p_pseudonym uuid)
returns bigint
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_user text := p_user_id::text;
  v_count bigint;
begin
  if p_user_id is null or p_pseudonym is null or p_user_id = p_pseudonym then
    perform private.raise('invalid_input', 'A subject and a different pseudonym are required.');
  end if;
  perform private.permit('audit_pseudonymize');
  update public.audit_log a set
    actor_id = case when a.actor_id = p_user_id then p_pseudonym else a.actor_id end,
    ip_address = case when a.actor_id = p_user_id then null else a.ip_address end,
    user_agent = case when a.actor_id = p_user_id then null else a.user_agent end,
    row_id = replace(a.row_id, v_user, p_pseudonym::text),
    changes = case when a.changes::text like '%' || v_user || '%'
                   then private.scrub_jsonb(a.changes, array[v_user], p_pseudonym::text) else a.changes end
  where a.actor_id = p_user_id
     or a.row_id like '%' || v_user || '%'
     or a.changes::text like '%' || v_user || '%';
  get diagnostics v_count = row_count;
  perform private.permit('audit_pseudonymize', false);
  return v_count;
end
$$;
comment on function private.pseudonymize_audit_subject(uuid, uuid) is
  'Erasure: replaces a user''s id by a pseudonym in the whole audit log (actor, row ids, changes) and drops the IP address and user agent of their entries.';
grant execute on function private.pseudonymize_audit_subject(uuid, uuid) to service_role;

-- Erasure: the subject's email, name, phone, ... out of every entry's changes and row id (any
-- string equal to or containing one, case-insensitively). Scans the whole log; returns the
-- entries changed.
create function private.pseudonymize_audit_values(p_values text[], p_replacement text)
returns bigint
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_values text[];
  v_patterns text[];
  v_row_patterns text[];
  v_count bigint;
begin
  -- Short values match only whole strings (private.scrub_text), so they are looked for as such.
  select array_agg(distinct v), array_agg(distinct private.jsonb_text_pattern(v, char_length(v) < 4)),
         array_agg(distinct case when char_length(v) >= 4 then '%' || replace(replace(replace(v, '\', '\\'), '%', '\%'), '_', '\_') || '%'
                                 else replace(replace(replace(v, '\', '\\'), '%', '\%'), '_', '\_') end)
  into v_values, v_patterns, v_row_patterns
  from unnest(p_values) v where v is not null and char_length(v) >= 2;
  if v_values is null or p_replacement is null then
    perform private.raise('invalid_input', 'Values of at least 2 characters and a replacement are required.');
  end if;
  perform private.permit('audit_pseudonymize');
  with scrubbed as (
    select a.id, a.occurred_at,
           private.scrub_jsonb(a.changes, v_values, p_replacement) as changes,
           private.scrub_text(a.row_id, v_values, p_replacement) as row_id
    from public.audit_log a
    where a.changes::text ilike any (v_patterns) or a.row_id ilike any (v_row_patterns)
  )
  update public.audit_log a set changes = s.changes, row_id = s.row_id
  from scrubbed s
  where a.id = s.id and a.occurred_at = s.occurred_at
    and (a.changes is distinct from s.changes or a.row_id is distinct from s.row_id);
  get diagnostics v_count = row_count;
  perform private.permit('audit_pseudonymize', false);
  return v_count;
end
$$;
comment on function private.pseudonymize_audit_values(text[], text) is
  'Erasure: replaces the given strings (an email, a name, a phone) in the changes and row ids of the whole audit log.';
grant execute on function private.pseudonymize_audit_values(text[], text) to service_role;

-- ---------------------------------------------------------------------------------------------
-- Partitions
-- ---------------------------------------------------------------------------------------------
create function private.audit_partition_name(p_month timestamp)
returns text
language sql
immutable
set search_path = ''
as $$
  select 'audit_log_y' || to_char(p_month, 'YYYY') || 'm' || to_char(p_month, 'MM')
$$;
comment on function private.audit_partition_name(timestamp) is 'The name of the audit log''s partition of a month (UTC): audit_log_yYYYYmMM.';

-- Creates the partitions of the current month (UTC) and the p_months_ahead after it, and of any
-- month with rows waiting in the default partition (moved in). Idempotent; returns how many it
-- made. Each is built apart and then attached, which locks the log only lightly (SHARE UPDATE
-- EXCLUSIVE: writers go on), as the table's owner (no superuser needed).
create function private.ensure_audit_partitions(p_now timestamptz default now(), p_months_ahead integer default 2)
returns integer
language plpgsql
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
declare
  v_month timestamp;
  v_name text;
  v_from timestamptz;
  v_to timestamptz;
  v_created integer := 0;
begin
  if p_now is null or p_months_ahead is null or p_months_ahead not between 0 and 24 then
    perform private.raise('invalid_input', 'p_months_ahead is 0 to 24.');
  end if;
  for v_month in
    select date_trunc('month', p_now at time zone 'UTC') + make_interval(months => i) from generate_series(0, p_months_ahead) i
    union
    select distinct date_trunc('month', d.occurred_at at time zone 'UTC') from private.audit_log_default d
    order by 1
  loop
    v_name := private.audit_partition_name(v_month);
    continue when to_regclass('private.' || v_name) is not null;
    v_from := v_month at time zone 'UTC';
    v_to := (v_month + interval '1 month') at time zone 'UTC';
    execute format('create table private.%I (like public.audit_log including defaults including constraints including comments including storage)', v_name);
    -- The bounds as a constraint: attaching then skips scanning the table.
    execute format('alter table private.%I add constraint %I check (occurred_at >= %L and occurred_at < %L)',
      v_name, v_name || '_bounds', v_from, v_to);
    execute format('alter table private.%I enable row level security', v_name);
    execute format('comment on table private.%I is %L', v_name,
      format('The audit log of %s (UTC): a partition of public.audit_log, dropped whole after audit_retention.', to_char(v_month, 'YYYY-MM')));
    if exists (select 1 from private.audit_log_default d where d.occurred_at >= v_from and d.occurred_at < v_to) then
      execute format('insert into private.%I select * from private.audit_log_default where occurred_at >= $1 and occurred_at < $2', v_name)
        using v_from, v_to;
      perform private.permit('audit_partition_move');
      delete from private.audit_log_default d where d.occurred_at >= v_from and d.occurred_at < v_to;
      perform private.permit('audit_partition_move', false);
    end if;
    execute format('alter table public.audit_log attach partition private.%I for values from (%L) to (%L)', v_name, v_from, v_to);
    v_created := v_created + 1;
  end loop;
  return v_created;
end
$$;
comment on function private.ensure_audit_partitions(timestamptz, integer) is
  'Creates the audit log''s partitions of this month and the next p_months_ahead (and of months waiting in the default partition); idempotent; returns how many it made.';
grant execute on function private.ensure_audit_partitions(timestamptz, integer) to service_role;

-- Retention: drops the partitions whose whole month is older than audit_retention, unless a legal
-- hold stands (any unreleased hold keeps every partition: each holds every organization's rows).
-- Each drop is recorded. Returns how many it dropped.
create function private.drop_audit_partitions(p_now timestamptz default now())
returns integer
language plpgsql
security definer
set search_path = ''
-- Dropping a partition locks the whole log for a moment: better to try again tomorrow than to
-- queue every audited write behind it.
set lock_timeout = '2s'
as $$
declare
  v_cutoff timestamptz := p_now - (private.setting('audit_retention') #>> '{}')::interval;
  v_partition record;
  v_dropped integer := 0;
begin
  if exists (select 1 from private.legal_holds where released_at is null) then
    return 0;
  end if;
  for v_partition in
    select c.relname::text as name,
           make_timestamp(substr(c.relname, 12, 4)::int, substr(c.relname, 17, 2)::int, 1, 0, 0, 0) as month
    from pg_catalog.pg_inherits i
    join pg_catalog.pg_class c on c.oid = i.inhrelid
    where i.inhparent = 'public.audit_log'::regclass and c.relname ~ '^audit_log_y[0-9]{4}m(0[1-9]|1[0-2])$'
    order by 2
  loop
    exit when (v_partition.month + interval '1 month') at time zone 'UTC' > v_cutoff;
    execute format('drop table private.%I', v_partition.name);
    perform private.audit_action(null, 'partition_dropped', 'public.audit_log', v_partition.name,
      jsonb_build_object('from', v_partition.month at time zone 'UTC', 'to', (v_partition.month + interval '1 month') at time zone 'UTC',
                         'retention', private.setting('audit_retention')));
    v_dropped := v_dropped + 1;
  end loop;
  return v_dropped;
end
$$;
comment on function private.drop_audit_partitions(timestamptz) is
  'Retention: drops the audit partitions older than audit_retention (none while a legal hold stands), recording each drop; returns how many.';
grant execute on function private.drop_audit_partitions(timestamptz) to service_role;

-- The daily job: partitions ahead, then retention. A drop that cannot get its lock in time waits
-- for tomorrow without undoing the partitions made.
create function private.maintain_audit_partitions(p_now timestamptz default now())
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_count integer := private.ensure_audit_partitions(p_now);
begin
  begin
    v_count := v_count + private.drop_audit_partitions(p_now);
  exception when lock_not_available then
    raise warning 'drop_audit_partitions: the audit log was busy; retention runs again tomorrow';
  end;
  return v_count;
end
$$;
comment on function private.maintain_audit_partitions(timestamptz) is
  'The audit-partitions job: creates the coming months'' partitions and drops those past retention; returns partitions created plus dropped.';
grant execute on function private.maintain_audit_partitions(timestamptz) to service_role;

select private.ensure_audit_partitions();

-- ---------------------------------------------------------------------------------------------
-- Jobs: audit rows written by a job say so
-- ---------------------------------------------------------------------------------------------
-- private.run_job as the jobs chapter made it, and now it names the job as the actor of what its
-- SQL changes (app.actor_kind 'job', app.request_id 'job:<name>:<run id>') and puts the caller's
-- settings back afterwards, so a run inside a longer transaction does not leak them.
create or replace function private.run_job(p_name text, p_now timestamptz default clock_timestamp())
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_job private.jobs;
  v_run bigint;
  v_rows bigint;
  v_outcome private.job_outcome := 'succeeded';
  v_error text;
  v_actor_kind text := coalesce(current_setting('app.actor_kind', true), '');
  v_actor_id text := coalesce(current_setting('app.actor_id', true), '');
  v_request_id text := coalesce(current_setting('app.request_id', true), '');
begin
  select * into v_job from private.jobs where name = p_name and kind = 'sql';
  if not found or not v_job.enabled then
    return;
  end if;
  if not pg_try_advisory_xact_lock(hashtextextended('job:' || p_name, 0)) then
    insert into private.job_runs (job_name, started_at, finished_at, outcome) values (p_name, p_now, p_now, 'skipped');
    return;
  end if;
  insert into private.job_runs (job_name, started_at) values (p_name, p_now) returning id into v_run;
  perform set_config('app.actor_kind', 'job', true);
  perform set_config('app.actor_id', '', true);
  perform set_config('app.request_id', format('job:%s:%s', p_name, v_run), true);
  begin
    execute format('select (%s)::bigint', v_job.command) into v_rows;
  exception when others then
    v_outcome := 'failed';
    v_error := left(sqlerrm, 2000);
  end;
  perform set_config('app.actor_kind', v_actor_kind, true);
  perform set_config('app.actor_id', v_actor_id, true);
  perform set_config('app.request_id', v_request_id, true);
  update private.job_runs set finished_at = clock_timestamp(), outcome = v_outcome, rows_affected = v_rows, error = v_error
  where id = v_run;
  update private.jobs set last_started_at = p_now, last_finished_at = clock_timestamp(), last_outcome = v_outcome, last_error = v_error
  where name = p_name;
end
$$;
comment on function private.run_job(text, timestamptz) is
  'Runs a SQL job and records the run (skipped when the previous run still holds the job''s lock); what it changes is audited as done by the job.';

select private.register_job('audit-partitions', '7 1 * * *', 'sql', 'private.maintain_audit_partitions()',
  'Creates the audit log''s partitions two months ahead and drops those older than audit_retention (not while a legal hold stands).');

-- ---------------------------------------------------------------------------------------------
-- Opting in: every table in public with an organization_id (organizations and their members
-- included) but the exempt ones above, as they stand now. Later tables opt in with one line:
--     select private.enable_audit('public.x');
-- ---------------------------------------------------------------------------------------------
select private.enable_audit(c.oid::regclass)
from pg_catalog.pg_class c
join pg_catalog.pg_namespace n on n.oid = c.relnamespace
where n.nspname = 'public' and c.relkind in ('r', 'p') and not c.relispartition
  and (c.relname in ('organizations', 'organization_members')
       or exists (select 1 from pg_catalog.pg_attribute a
                  where a.attrelid = c.oid and a.attname = 'organization_id' and a.attnum > 0 and not a.attisdropped))
  and format('%s.%s', n.nspname, c.relname) not in (select table_name from private.audit_exempt_tables)
order by c.relname;

-- Placing and releasing legal holds is audited too.
select private.enable_audit('private.legal_holds');
