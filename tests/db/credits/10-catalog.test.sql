-- 10 Credits catalogue: pools, plans and actions are data. The seeded pools, plans (with their
-- allocations and overage flags) and actions match the contract; a new organization starts on
-- starter with its allocation granted; a new pool or a multi-pool action is just rows; unknown
-- and disabled actions are refused; the credit jobs are scheduled.
--
-- Cast: alice owns Acme; bob creates Beta after a pool was added; the service role plays the
-- admin who edits the catalogue.
begin;
select plan(31);

select tests.create_user('alice@catalog.test');
select tests.create_user('bob@catalog.test');

-- ---------------------------------------------------------------------------------------------
-- The seeded catalogue
-- ---------------------------------------------------------------------------------------------
select results_eq($$ select key, name from public.credit_pools where key in ('ai', 'whatsapp', 'email', 'sms') order by sort_order $$,
  $$ values ('ai', 'AI'), ('whatsapp', 'WhatsApp'), ('email', 'Email'), ('sms', 'SMS') $$,
  'the pools ai, whatsapp, email and sms are seeded, in that display order');
select is_empty($$ select key from public.credit_pools where key in ('ai', 'whatsapp', 'email', 'sms') and purchase_validity <> interval '12 months' $$,
  'purchased credits of every seeded pool stay valid for 12 months');

select results_eq($$ select key, period, is_active from public.credit_plans where key in ('starter', 'premium') order by key $$,
  $$ values ('premium', interval '1 month', true), ('starter', interval '1 month', true) $$,
  'the plans starter and premium exist, are active, and bill monthly');
select results_eq($$
  select plan_key, pool_key, amount, allows_overage from public.credit_plan_allocations
  where plan_key in ('starter', 'premium') order by plan_key desc, amount
$$, $$ values
  ('starter', 'sms', 50::bigint, false), ('starter', 'whatsapp', 150::bigint, false),
  ('starter', 'ai', 200::bigint, false), ('starter', 'email', 1000::bigint, false),
  ('premium', 'sms', 500::bigint, true), ('premium', 'whatsapp', 1200::bigint, true),
  ('premium', 'ai', 1500::bigint, true), ('premium', 'email', 20000::bigint, true)
$$, 'starter allocates 200 ai, 150 whatsapp, 1000 email, 50 sms without overage; '
    'premium 1500, 1200, 20000, 500 and allows overage');

select results_eq($$
  select a.key, a.is_enabled, c.pool_key, c.amount from public.credit_actions a
  join public.credit_action_costs c on c.action_key = a.key
  where a.key in ('ai_chat', 'ai_assistant', 'form_generation', 'automation_run', 'whatsapp_message', 'email_send', 'bulk_email', 'sms_send')
  order by a.key, c.pool_key
$$, $$ values
  ('ai_assistant', true, 'ai', 1::bigint), ('ai_chat', true, 'ai', 1::bigint), ('automation_run', true, 'ai', 2::bigint),
  ('bulk_email', true, 'email', 10::bigint), ('email_send', true, 'email', 1::bigint), ('form_generation', true, 'ai', 5::bigint),
  ('sms_send', true, 'sms', 1::bigint), ('whatsapp_message', true, 'whatsapp', 1::bigint)
$$, 'the eight contract actions are enabled and cost one pool each: ai_chat 1, ai_assistant 1, form_generation 5, '
    'automation_run 2 ai; whatsapp_message 1 whatsapp; email_send 1, bulk_email 10 email; sms_send 1 sms');

-- ---------------------------------------------------------------------------------------------
-- A new organization starts on starter with its allocation granted
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('alice@catalog.test');
select public.create_organization('Acme', 'acme-catalog-test') as acme_id \gset

select tests.reset_role();
select results_eq(format($$
  select plan_key, period_start = now(), period_end = now() + interval '1 month'
  from public.organization_plans where organization_id = %L
$$, :'acme_id'), $$ values ('starter', true, true) $$,
  'Acme is on starter, its first period running one month from its creation');
select results_eq(format($$
  select g.pool_key, g.kind::text, g.amount, g.remaining, g.expires_at = op.period_end, g.source
  from public.credit_grants g join public.organization_plans op using (organization_id)
  where g.organization_id = %L order by g.amount
$$, :'acme_id'), format($$ values
  ('sms', 'plan_allocation', 50::bigint, 50::bigint, true, %1$L),
  ('whatsapp', 'plan_allocation', 150::bigint, 150::bigint, true, %1$L),
  ('ai', 'plan_allocation', 200::bigint, 200::bigint, true, %1$L),
  ('email', 'plan_allocation', 1000::bigint, 1000::bigint, true, %1$L)
$$, 'plan:starter:' || to_char(now() at time zone 'UTC', 'YYYY-MM-DD')),
  'its starter allocation is granted as one plan_allocation grant per pool, expiring at the end of the period');
select results_eq(format($$
  select pool_key, kind::text, amount, actor_id, actor_role from public.credit_ledger
  where organization_id = %L order by amount
$$, :'acme_id'), $$ values
  ('sms', 'grant', 50::bigint, null::uuid, 'system'), ('whatsapp', 'grant', 150::bigint, null::uuid, 'system'),
  ('ai', 'grant', 200::bigint, null::uuid, 'system'), ('email', 'grant', 1000::bigint, null::uuid, 'system')
$$, 'each allocation grant has its ledger entry, made by the system');
select results_eq(format($$ select pool_key, available, reserved, low_threshold from public.credit_balances where organization_id = %L order by pool_key $$, :'acme_id'),
  $$ values ('ai', 200::bigint, 0::bigint, 20::bigint), ('email', 1000::bigint, 0::bigint, 100::bigint),
            ('sms', 50::bigint, 0::bigint, 5::bigint), ('whatsapp', 150::bigint, 0::bigint, 15::bigint) $$,
  'Acme has one balance row per pool with the allocation available and a low threshold of 10% of it');

select tests.authenticate_as('alice@catalog.test');
select is(public.get_credit_balances(:'acme_id'),
  '{"ai": {"available": 200, "reserved": 0, "total": 200}, "whatsapp": {"available": 150, "reserved": 0, "total": 150},
    "email": {"available": 1000, "reserved": 0, "total": 1000}, "sms": {"available": 50, "reserved": 0, "total": 50}}'::jsonb,
  'alice sees the starter allocation in get_credit_balances');

-- ---------------------------------------------------------------------------------------------
-- Every seeded action charges its contract cost
-- ---------------------------------------------------------------------------------------------
select results_eq(format($$
  select a, public.consume_credits_rpc(%L, a) -> 'consumed'
  from unnest(array['ai_chat', 'ai_assistant', 'form_generation', 'automation_run',
                    'whatsapp_message', 'email_send', 'bulk_email', 'sms_send']) with ordinality as t (a, n)
  order by n
$$, :'acme_id'), $$ values
  ('ai_chat', '{"ai": 1}'::jsonb), ('ai_assistant', '{"ai": 1}'::jsonb), ('form_generation', '{"ai": 5}'::jsonb),
  ('automation_run', '{"ai": 2}'::jsonb), ('whatsapp_message', '{"whatsapp": 1}'::jsonb), ('email_send', '{"email": 1}'::jsonb),
  ('bulk_email', '{"email": 10}'::jsonb), ('sms_send', '{"sms": 1}'::jsonb)
$$, 'alice runs each action once and is charged exactly its contract cost');
select is(public.get_credit_balances(:'acme_id'),
  '{"ai": {"available": 191, "reserved": 0, "total": 200}, "whatsapp": {"available": 149, "reserved": 0, "total": 150},
    "email": {"available": 989, "reserved": 0, "total": 1000}, "sms": {"available": 49, "reserved": 0, "total": 50}}'::jsonb,
  'Acme''s balances dropped by exactly those costs');

-- ---------------------------------------------------------------------------------------------
-- Unknown and disabled actions
-- ---------------------------------------------------------------------------------------------
select throws_ok(format($$ select public.consume_credits_rpc(%L, 'teleport') $$, :'acme_id'),
  'PT404', 'unknown_action', 'an action that is not in the catalogue is refused with unknown_action');
select throws_ok(format($$ select public.consume_credits_rpc(%L, null) $$, :'acme_id'),
  'PT404', 'unknown_action', 'a missing action is refused with unknown_action');

select tests.authenticate_as_service_role();
update public.credit_actions set is_enabled = false where key = 'sms_send';

select tests.authenticate_as('alice@catalog.test');
select throws_ok(format($$ select public.consume_credits_rpc(%L, 'sms_send') $$, :'acme_id'),
  'P0001', 'action_disabled', 'once an admin disables sms_send, consuming it is refused with action_disabled');
select throws_ok(format($$ select public.reserve_credits(%L, 'sms_send') $$, :'acme_id'),
  'P0001', 'action_disabled', 'and reserving credits for it too');
select is(public.get_credit_balances(:'acme_id') -> 'sms' -> 'available', '49'::jsonb,
  'the refused calls charged nothing');

select tests.authenticate_as_service_role();
update public.credit_actions set is_enabled = true where key = 'sms_send';
select tests.authenticate_as('alice@catalog.test');
select is(public.consume_credits_rpc(:'acme_id', 'sms_send') -> 'consumed', '{"sms": 1}'::jsonb,
  're-enabled, sms_send works again');

-- ---------------------------------------------------------------------------------------------
-- A multi-pool action is rows
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as_service_role();
select lives_ok($$
  insert into public.credit_actions (key, name, description) values ('ai_whatsapp_reply', 'AI WhatsApp reply', 'An AI reply sent on WhatsApp');
  insert into public.credit_action_costs (action_key, pool_key, amount) values ('ai_whatsapp_reply', 'ai', 1), ('ai_whatsapp_reply', 'whatsapp', 1);
$$, 'an admin adds ai_whatsapp_reply costing 1 ai and 1 whatsapp, as two cost rows');

select tests.authenticate_as('alice@catalog.test');
select public.consume_credits_rpc(:'acme_id', 'ai_whatsapp_reply', 2) as reply \gset
select is(:'reply'::jsonb - 'transaction_id',
  '{"success": true, "consumed": {"ai": 2, "whatsapp": 2}, "remaining": {"ai": 189, "whatsapp": 147}}'::jsonb,
  'consuming it twice charges both pools in one call and answers what each has left');
select tests.reset_role();
select results_eq(format($$ select pool_key, amount, action_key, quantity from public.credit_ledger where transaction_id = %L order by pool_key $$,
  :'reply'::jsonb ->> 'transaction_id'),
  $$ values ('ai', -2::bigint, 'ai_whatsapp_reply', 2), ('whatsapp', -2::bigint, 'ai_whatsapp_reply', 2) $$,
  'the ledger records one consumption per pool under the same transaction id');

-- ---------------------------------------------------------------------------------------------
-- A new pool is a row, and every organization gets a balance for it
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as_service_role();
select lives_ok($$ insert into public.credit_pools (key, name, description, sort_order) values ('voice', 'Voice', 'Voice minutes', 50) $$,
  'an admin adds a voice pool');
select is((select purchase_validity from public.credit_pools where key = 'voice'), interval '12 months',
  'purchases of the new pool are valid 12 months by default');
select is_empty($$
  select o.id from public.organizations o
  where not exists (select 1 from public.credit_balances b where b.organization_id = o.id and b.pool_key = 'voice')
$$, 'every existing organization now has a voice balance row');

select tests.authenticate_as('alice@catalog.test');
select is(public.get_credit_balances(:'acme_id') -> 'voice', '{"available": 0, "reserved": 0, "total": 0}'::jsonb,
  'get_credit_balances lists the new pool for Acme, empty');

select tests.authenticate_as_service_role();
insert into public.credit_actions (key, name) values ('voice_minute', 'Voice minute');
insert into public.credit_action_costs (action_key, pool_key, amount) values ('voice_minute', 'voice', 1);

select tests.authenticate_as('alice@catalog.test');
select is(public.consume_credits_rpc(:'acme_id', 'voice_minute'),
  '{"success": false, "error": "insufficient_credits", "message": "Insufficient Voice credits", "pool": "voice", "required": 1, "available": 0}'::jsonb,
  'an action on the empty pool is refused as insufficient, named after the pool');

select tests.authenticate_as_service_role();
select public.grant_credits(:'acme_id', 'voice', 30);
select tests.authenticate_as('alice@catalog.test');
select is(public.consume_credits_rpc(:'acme_id', 'voice_minute', 3) - 'transaction_id',
  '{"success": true, "consumed": {"voice": 3}, "remaining": {"voice": 27}}'::jsonb,
  'once granted credits, the new pool is consumed like any other');

select tests.authenticate_as('bob@catalog.test');
select public.create_organization('Beta', 'beta-catalog-test') as beta_id \gset
select tests.reset_role();
select is((select available from public.credit_balances where organization_id = :'beta_id' and pool_key = 'voice'), 0::bigint,
  'an organization created after the pool was added has a voice balance too (starter allocates none)');

select results_eq(format($$ select pool_key, ok from private.verify_credit_ledger(%L) $$, :'acme_id'),
  $$ values ('ai', true), ('email', true), ('sms', true), ('voice', true), ('whatsapp', true) $$,
  'Acme''s balances, ledger and grants reconcile in every pool, the new one included');
select results_eq(format($$ select pool_key, ok from private.verify_credit_ledger(%L) $$, :'beta_id'),
  $$ values ('ai', true), ('email', true), ('sms', true), ('voice', true), ('whatsapp', true) $$,
  'and Beta''s');

-- ---------------------------------------------------------------------------------------------
-- The jobs
-- ---------------------------------------------------------------------------------------------
select results_eq($$
  select j.name, j.schedule, j.command, c.command from private.jobs j join cron.job c on c.jobname = j.name
  where j.name in ('credits-expire', 'credits-renew-periods', 'credits-purge-idempotency-keys') order by j.name
$$, $$ values
  ('credits-expire', '* * * * *', 'private.expire_credits_step()',
   'do $job$ declare v_run bigint := private.start_job_run(''credits-expire''); begin if v_run is not null then while private.run_job_step(v_run) loop commit; end loop; end if; end $job$'),
  ('credits-purge-idempotency-keys', '17 * * * *', 'private.purge_credit_idempotency_keys()', 'select private.run_job(''credits-purge-idempotency-keys'')'),
  ('credits-renew-periods', '*/5 * * * *', 'private.renew_credit_periods()', 'select private.run_job(''credits-renew-periods'')')
$$, 'the job registry expires credits every minute (one organization per transaction), renews periods every 5 minutes and purges idempotency keys hourly, through pg_cron');

select * from finish();
rollback;
