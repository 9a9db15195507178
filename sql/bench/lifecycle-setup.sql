-- Benchmark fixtures for `npm run bench:lifecycle` (scripts/bench-lifecycle.mjs), in the local
-- database only, after sql/bench/credits-setup.sql (whose 1,000 organizations the consuming
-- clients use). Everything here is in the `bench` schema, in organizations whose slug starts
-- with `bench-`, or belongs to the user bench-subject@bench.test; lifecycle-teardown.sql
-- removes it.
--
-- The export: one person with 100,000 rows about them across four tables (activity, mail,
-- consent, the credit ledger's consumptions they made), in one organization.
-- The purge: an organization with 1,000,000 rows across three tables.
delete from auth.users where email = 'bench-subject@bench.test';
insert into auth.users (id, email, raw_app_meta_data, raw_user_meta_data)
values ('00000000-0000-4000-9000-000000000001', 'bench-subject@bench.test',
        '{"provider": "email", "providers": ["email"]}', '{"full_name": "Bench Subject"}');
insert into public.organizations (id, name, slug, created_by)
values ('00000000-0000-4000-9000-000000000010', 'Bench Export', 'bench-export', '00000000-0000-4000-9000-000000000001'),
       ('00000000-0000-4000-9000-000000000020', 'Bench Purge', 'bench-purge', null);
insert into public.organization_members (organization_id, user_id, role)
values ('00000000-0000-4000-9000-000000000010', '00000000-0000-4000-9000-000000000001', 'owner');

-- The bench rows are fixtures, not history: no audit copies of them.
select private.permit('audit_skip');

insert into private.activity_events (organization_id, user_id, kind, occurred_at)
select '00000000-0000-4000-9000-000000000010', '00000000-0000-4000-9000-000000000001',
       (array['sign_in', 'api_call', 'consumption'])[1 + g % 3], now() - make_interval(secs => g)
from generate_series(1, 55000) g;
insert into private.email_messages (recipient, user_id, organization_id, template, props, idempotency_key, status)
select 'bench-subject@bench.test', '00000000-0000-4000-9000-000000000001', '00000000-0000-4000-9000-000000000010',
       'welcome', jsonb_build_object('organizationName', 'Bench Export', 'userName', 'Bench Subject', 'dashboardUrl', 'https://app.test/' || g),
       'bench-export-' || g, 'sent'
from generate_series(1, 20000) g;
insert into public.consent_records (organization_id, user_id, email, purpose, status, source, policy_version, recorded_at)
select null, '00000000-0000-4000-9000-000000000001', 'bench-subject@bench.test', 'marketing_email',
       (array['given', 'revoked'])[1 + g % 2], 'settings', '2026-01', now() - make_interval(secs => g)
from generate_series(1, 15000) g;
insert into public.credit_ledger (transaction_id, organization_id, pool_key, kind, amount, action_key, quantity, actor_id, actor_role, metadata)
select gen_random_uuid(), '00000000-0000-4000-9000-000000000010', 'ai', 'consumption', -1, 'ai_chat', 1, '00000000-0000-4000-9000-000000000001',
       'authenticated', jsonb_build_object('request', g)
from generate_series(1, 10000) g;

-- The organization to purge: 1,000,000 rows.
insert into private.activity_events (organization_id, user_id, kind, occurred_at)
select '00000000-0000-4000-9000-000000000020', null, 'api_call', now() - make_interval(secs => g)
from generate_series(1, 700000) g;
insert into private.email_messages (recipient, organization_id, template, props, idempotency_key, status)
select 'person' || g || '@purge.bench.test', '00000000-0000-4000-9000-000000000020', 'welcome',
       jsonb_build_object('organizationName', 'Bench Purge', 'userName', 'Person ' || g, 'dashboardUrl', 'https://app.test/'),
       'bench-purge-' || g, 'sent'
from generate_series(1, 200000) g;
insert into private.domain_events (organization_id, type, payload)
select '00000000-0000-4000-9000-000000000020', 'bench.happened', jsonb_build_object('n', g)
from generate_series(1, 100000) g;

select private.permit('audit_skip', false);
analyze;
