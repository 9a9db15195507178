-- Local stand-in: the public schema's default grants on a Supabase project. Everything created by
-- postgres in public is granted to the API roles; row-level security is what protects the rows.
-- (Our first migration narrows the default for functions: execute is granted per function.)
grant usage on schema public to postgres, anon, authenticated, service_role;
grant all on schema public to postgres;
alter default privileges in schema public grant all on tables to postgres, anon, authenticated, service_role;
alter default privileges in schema public grant all on functions to postgres, anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to postgres, anon, authenticated, service_role;
