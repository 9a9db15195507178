-- A database with hosted Supabase's roles and defaults (tests/hosted): the cluster's superuser is
-- supabase_admin, and `postgres`, the role migrations and the dashboard run as, is not a
-- superuser. It has the attributes a hosted project gives it and may create in the database;
-- everything else it may do comes from the platform stand-in (sql/local), applied after this by
-- supabase_admin, exactly as the local stack applies it. Since 2026-10-30 hosted projects grant
-- nothing in public to the API roles by default, which sql/local/40_public.sql already mirrors.
do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'postgres') then
    create role postgres login password 'postgres' createdb createrole replication bypassrls;
  end if;
end
$$;
grant all on database postgres to postgres;
