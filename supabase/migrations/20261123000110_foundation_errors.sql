-- =============================================================================================
-- Foundation: the error catalogue
-- =============================================================================================

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

-- Every error our SQL raises on purpose has a stable machine code, listed once here with its
-- class; the class fixes the SQLSTATE, and the SQLSTATE the HTTP status PostgREST answers with
-- (PTxyz answers xyz). SQL raises only through private.raise, which refuses a code missing from
-- the catalogue; the edge functions' status map, the SDK's code union and the README's error
-- table are generated from these rows (npm run gen:errors), and npm test fails when they are
-- stale or when a migration raises a code the catalogue does not list. Each chapter adds its own
-- codes next to the functions that raise them. Running out of credits is a result, not an error.

-- ---------------------------------------------------------------------------------------------
-- Classes: one SQLSTATE each
-- ---------------------------------------------------------------------------------------------
create table private.error_classes (
  class text primary key check (class ~ '^[a-z][a-z_]*$'),
  sqlstate text not null unique check (sqlstate ~ '^[0-9A-Z]{5}$'),
  http_status integer not null check (http_status between 400 and 599),
  meaning text not null
);
comment on table private.error_classes is 'Kinds of errors, each with one SQLSTATE and the HTTP status it answers with.';
comment on column private.error_classes.class is 'The class''s name.';
comment on column private.error_classes.sqlstate is 'The SQLSTATE every error of the class is raised with.';
comment on column private.error_classes.http_status is 'What PostgREST (and the edge functions) answer with.';
comment on column private.error_classes.meaning is 'What errors of the class have in common.';
alter table private.error_classes enable row level security;
grant select on private.error_classes to service_role;

insert into private.error_classes (class, sqlstate, http_status, meaning) values
  ('invalid_input', '22023', 400, 'The request is malformed or out of range; fix it before retrying.'),
  ('not_authenticated', 'PT401', 401, 'No signed-in user where one is needed.'),
  ('not_authorized', '42501', 403, 'The caller may not do this.'),
  ('not_found', 'PT404', 404, 'What the request names does not exist (or is not visible to the caller).'),
  ('conflict', 'PT409', 409, 'The request clashes with the current state (taken, used already, not active).'),
  ('rule', 'P0001', 400, 'A business rule refuses the request as it stands.'),
  ('rate_limited', 'PT429', 429, 'Too many requests of this kind; try again later.');

-- ---------------------------------------------------------------------------------------------
-- Codes
-- ---------------------------------------------------------------------------------------------
create table private.error_codes (
  code text primary key check (code ~ '^[a-z][a-z0-9_]*$'),
  class text not null references private.error_classes (class),
  meaning text not null check (char_length(meaning) between 1 and 200)
);
comment on table private.error_codes is 'Every stable error code the SQL raises (through private.raise), with its class and one line of meaning.';
comment on column private.error_codes.code is 'The code: the error''s message, and the SDK''s BackendError.code.';
comment on column private.error_codes.class is 'Its class, which fixes SQLSTATE and HTTP status.';
comment on column private.error_codes.meaning is 'One line on what it means.';
alter table private.error_codes enable row level security;
grant select on private.error_codes to service_role;
create index error_codes_class_idx on private.error_codes (class);

insert into private.error_codes (code, class, meaning) values
  ('not_authenticated', 'not_authenticated', 'Sign in to call this.'),
  ('not_authorized', 'not_authorized', 'The caller''s role (or lack of membership) does not allow this.'),
  ('append_only', 'not_authorized', 'The record is history: it cannot be changed or deleted, only corrected by a new one.'),
  ('rate_limited', 'rate_limited', 'Too many of these requests in the current window.');

-- ---------------------------------------------------------------------------------------------
-- Raising
-- ---------------------------------------------------------------------------------------------
create function private.raise(p_code text, p_detail text default null)
returns void
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_sqlstate text;
begin
  select c.sqlstate into v_sqlstate
  from private.error_codes e join private.error_classes c on c.class = e.class
  where e.code = p_code;
  if v_sqlstate is null then
    -- A bug in our SQL, not the caller's fault: it surfaces as a 500.
    raise exception 'private.raise: % is not in the error catalogue (private.error_codes)', p_code
      using errcode = 'XX000';
  end if;
  if p_detail is null then
    raise exception using errcode = v_sqlstate, message = p_code;
  end if;
  raise exception using errcode = v_sqlstate, message = p_code, detail = p_detail;
end
$$;
comment on function private.raise(text, text) is
  'Raises a catalogued error: the message is the code, the SQLSTATE its class''s, the detail the human text. Refuses unknown codes.';
-- Security-invoker functions and triggers run as the caller and raise too.
grant execute on function private.raise(text, text) to authenticated, service_role;
