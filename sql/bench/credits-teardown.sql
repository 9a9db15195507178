-- Removes what credits-setup.sql made, the money records its organizations leave behind
-- (ledger, overage, tombstones) included, so the next run starts from nothing.
delete from public.organizations where slug like 'bench-%';
delete from auth.users where email like 'bench-user-%@bench.test';
select private.permit('purge');
delete from public.credit_ledger where organization_id in (select organization_id from bench.orgs);
delete from public.credit_overages where organization_id in (select organization_id from bench.orgs);
delete from private.deleted_organizations where organization_id in (select organization_id from bench.orgs);
select private.permit('purge', false);
delete from public.credit_actions where key = 'bench_ai_whatsapp_reply';
drop function if exists public.bench_consume_floor(uuid);
drop schema if exists bench cascade;
notify pgrst, 'reload schema';
