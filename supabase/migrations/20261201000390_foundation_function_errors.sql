-- =============================================================================================
-- Foundation: the codes the edge functions answer with, in the same catalogue
-- =============================================================================================

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

-- One catalogue for every code a caller can get: the SQL's (raised through private.raise) and
-- the edge functions' own (a bad signature, a missing token, Storage not answering). The SDK and
-- the README are generated from it either way; `raised_by` says where a code comes from, so the
-- check that every SQL code is raised somewhere (tests/db/foundation/03-errors) knows which to
-- look for in the SQL, and tests/foundation/function-errors which in functions/.
alter table private.error_codes
  add column raised_by text not null default 'sql' check (raised_by in ('sql', 'functions'));
comment on column private.error_codes.raised_by is 'Where the code is raised: sql (private.raise) or functions (an edge function''s answer).';

-- A service the backend depends on (Storage, Stripe) not answering is no fault of the caller's.
insert into private.error_classes (class, sqlstate, http_status, meaning) values
  ('unavailable', 'PT503', 503, 'A service the backend depends on did not answer; try again later.');

insert into private.error_codes (code, class, meaning, raised_by) values
  ('invalid_request', 'invalid_input', 'The request body or query is not what the function takes (details name the fields).', 'functions'),
  ('invalid_signature', 'invalid_input', 'A webhook''s signature is missing, malformed or does not match.', 'functions'),
  ('missing_authorization', 'not_authenticated', 'The request has no Authorization: Bearer token.', 'functions'),
  ('invalid_jwt', 'not_authenticated', 'The access token is malformed, forged or expired.', 'functions'),
  ('user_required', 'not_authenticated', 'A signed-in user''s token is needed (not the anon or service role key).', 'functions'),
  ('insufficient_privilege', 'not_authorized', 'The database refused the operation to the caller (grants or row-level security).', 'functions'),
  ('profile_not_found', 'not_found', 'The signed-in user has no profile.', 'functions');
