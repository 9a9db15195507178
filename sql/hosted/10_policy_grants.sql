-- Applied after the platform stand-in. Hosted Supabase lets `postgres` create policies on
-- storage.objects (and triggers on auth.users) although supabase_storage_admin owns the table:
-- supautils' policy_grants allow it. This test database has no supautils, so membership in the
-- owning role stands in for that one permission.
grant supabase_storage_admin to postgres;

-- Hosted lets `postgres` set PostgREST's in-database settings on the authenticator role (Supabase's
-- troubleshooting guides have users run `alter role authenticator set pgrst.db_schemas = ...`);
-- a plain Postgres 15 refuses a non-superuser any placeholder setting, so the test database grants
-- the ones the migrations set.
grant set on parameter "pgrst.db_pre_request" to postgres;
