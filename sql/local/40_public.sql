-- Local stand-in: the public schema as a hosted project has it since 2026-10-30. The API roles
-- may use the schema, but nothing created in it is granted to them by default: every migration
-- grants, next to each table and function, exactly what each role needs.
grant usage on schema public to postgres, anon, authenticated, service_role;
grant all on schema public to postgres;
alter default privileges in schema public revoke all on tables from anon, authenticated, service_role;
alter default privileges in schema public revoke all on functions from anon, authenticated, service_role;
alter default privileges in schema public revoke all on sequences from anon, authenticated, service_role;
