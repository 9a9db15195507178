-- Removes what credits-setup.sql made (the ledger goes with its organizations).
delete from public.organizations where slug like 'bench-%';
delete from public.credit_actions where key = 'bench_ai_whatsapp_reply';
drop schema if exists bench cascade;
