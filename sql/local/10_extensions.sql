-- Local stand-in: the extensions schema and the extensions a Supabase project has enabled.
create schema if not exists extensions;
grant usage on schema extensions to postgres, anon, authenticated, service_role;
alter default privileges in schema extensions grant all on tables to postgres, anon, authenticated, service_role;
alter default privileges in schema extensions grant all on functions to postgres, anon, authenticated, service_role;
alter default privileges in schema extensions grant all on sequences to postgres, anon, authenticated, service_role;

create extension if not exists "uuid-ossp" with schema extensions;
create extension if not exists pgcrypto with schema extensions;
-- pg_cron lives in its own `cron` schema and must be created in the database named by
-- cron.database_name (postgres), as on hosted Supabase.
create extension if not exists pg_cron with schema pg_catalog;
-- As on hosted: postgres schedules jobs; the API roles cannot reach the schema, and pg_cron's own
-- grants to PUBLIC (reading and deleting one's run history) are taken back.
grant usage on schema cron to postgres with grant option;
grant all privileges on all tables in schema cron to postgres with grant option;
revoke all on all tables in schema cron from public;
revoke all on all sequences in schema cron from public;

-- The default search path of a Supabase database.
alter database postgres set search_path = "$user", public, extensions;
