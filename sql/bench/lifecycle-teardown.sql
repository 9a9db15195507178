-- Removes what lifecycle-setup.sql made (run before credits-teardown.sql). The ledger rows
-- the export's organization leaves behind (money records outlive organizations) go by the
-- records purge's permit, as their retention would take them.
select private.permit('audit_skip');
delete from private.data_exports where subject_user_id = '00000000-0000-4000-9000-000000000001'
   or organization_id in ('00000000-0000-4000-9000-000000000010', '00000000-0000-4000-9000-000000000020');
select private.permit('purge_events');
delete from private.domain_events where organization_id in ('00000000-0000-4000-9000-000000000010', '00000000-0000-4000-9000-000000000020');
delete from public.organizations where id in ('00000000-0000-4000-9000-000000000010', '00000000-0000-4000-9000-000000000020');
select private.permit('purge');
delete from public.credit_ledger where organization_id in ('00000000-0000-4000-9000-000000000010', '00000000-0000-4000-9000-000000000020');
delete from public.purge_operations where organization_id in ('00000000-0000-4000-9000-000000000010', '00000000-0000-4000-9000-000000000020');
delete from private.deleted_organizations where organization_id in ('00000000-0000-4000-9000-000000000010', '00000000-0000-4000-9000-000000000020');
select private.permit('gdpr_erasure');
delete from public.consent_records where user_id = '00000000-0000-4000-9000-000000000001';
delete from private.email_messages where recipient = 'bench-subject@bench.test';
delete from auth.users where id = '00000000-0000-4000-9000-000000000001';
