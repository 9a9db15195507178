-- 21 Striped pools: a pool whose balance set_credit_stripes spreads over stripes behaves exactly
-- as the same pool unstriped. Only the service role stripes a pool, with 1 to 64 stripes, and
-- striping or unstriping keeps the balance whole. Every call on a striped pool answers what the
-- same call on an unstriped twin answers (its remaining is the pool's whole balance), draws from
-- the head grant, and leaves the same balances, ledger and credits.low / credits.depleted events;
-- a refusal comes only when the pool's whole balance is short. A grant drawn first gathers the
-- stripes, so the next call draws from it; an expiry moved earlier reaches the stripes holding
-- the grant; two-pool actions and batches on a striped pool still succeed. Members read their
-- organization's stripe rows, nobody writes them, and verify_credit_ledger reconciles throughout.
-- And once any grant of the pool has expired, the stripes pay nothing until the general path has
-- swept it, as the unstriped hot path.
--
-- Cast: alice owns Acme (ai striped) and Acme Twin (never striped); carol owns Small (ai striped,
-- low threshold 150) and Small Twin (same threshold, never striped); bob is a member of all four
-- and makes every call; erin owns Evil Corp. All are on the starter plan (200 ai credits), and
-- each twin gets the same grants and the same calls as its striped organization.
begin;
select plan(82);

select tests.create_user('alice@striped.test');
select tests.create_user('bob@striped.test');
select tests.create_user('carol@striped.test');
select tests.create_user('erin@striped.test');
select tests.authenticate_as('alice@striped.test');
select public.create_organization('Acme', 'acme-striped-test') as acme \gset
select public.create_organization('Acme Twin', 'twin-striped-test') as twin \gset
select tests.authenticate_as('carol@striped.test');
select public.create_organization('Small', 'small-striped-test') as small \gset
select public.create_organization('Small Twin', 'small-twin-striped-test') as small_twin \gset
select public.set_credit_low_threshold(:'small', 'ai', 150);
select public.set_credit_low_threshold(:'small_twin', 'ai', 150);
select tests.authenticate_as('erin@striped.test');
select public.create_organization('Evil Corp', 'evil-striped-test') as evil \gset
select tests.reset_role();
insert into public.organization_members (organization_id, user_id, role)
select o, tests.get_user_id('bob@striped.test'), 'member'
from unnest(array[:'acme', :'twin', :'small', :'small_twin']::uuid[]) o;
select id as acme_plan from public.credit_grants where organization_id = :'acme' and pool_key = 'ai' and kind = 'plan_allocation' \gset

-- One call on the ai pool and what it left: the answer (without its transaction id), the pool's
-- balance as get_credit_balances gives it, the grants the call's ledger rows drew from (pool,
-- kind, priority, amount) and whether the first ai row drew from the head grant as it was
-- before the call; what the stripes hold; and whether the striping rules held after it (every
-- stripe holding credits holds the head grant; while stripes hold credits, the shared row keeps
-- greatest(low threshold, 1)). Runs as the caller (security invoker), like every call here.
create function pg_temp.step(p_org uuid, p_action text, p_quantity integer)
returns jsonb
language plpgsql
as $$
declare
  v_head uuid;
  v_result jsonb;
  v_tx uuid;
begin
  select b.head_grant_id into v_head from public.credit_balances b where b.organization_id = p_org and b.pool_key = 'ai';
  v_result := public.consume_credits_rpc(p_org, p_action, p_quantity);
  v_tx := (v_result ->> 'transaction_id')::uuid;
  return jsonb_build_object(
    'result', v_result - 'transaction_id',
    'balance', (public.get_credit_balances(p_org) -> 'ai' ->> 'available')::bigint,
    'drawn', (select jsonb_agg(jsonb_build_array(l.pool_key, g.kind, g.priority, -l.amount) order by l.id)
              from public.credit_ledger l join public.credit_grants g on g.id = l.grant_id
              where l.transaction_id = v_tx),
    'from_head', (select l.grant_id = v_head from public.credit_ledger l
                  where l.transaction_id = v_tx and l.pool_key = 'ai' order by l.id limit 1),
    'in_stripes', (select coalesce(sum(s.remaining), 0)::bigint from public.credit_balance_stripes s
                   where s.organization_id = p_org and s.pool_key = 'ai'),
    'heads_only', not exists (select 1 from public.credit_balance_stripes s
                              join public.credit_balances b on b.organization_id = s.organization_id and b.pool_key = s.pool_key
                              where s.organization_id = p_org and s.pool_key = 'ai' and s.remaining > 0
                                and s.grant_id is distinct from b.head_grant_id),
    'floor_kept', (select coalesce(sum(s.remaining), 0) = 0 or b.available >= greatest(b.low_threshold, 1)
                   from public.credit_balances b
                   left join public.credit_balance_stripes s on s.organization_id = b.organization_id and s.pool_key = b.pool_key
                   where b.organization_id = p_org and b.pool_key = 'ai'
                   group by b.available, b.low_threshold));
end
$$;

-- Calls in order: each [action, quantity, times] is made `times` times, or until refused
-- (the refusal included) when times is null. Returns every step.
create function pg_temp.run(p_org uuid, p_calls jsonb)
returns jsonb
language plpgsql
as $$
declare
  v_call jsonb;
  v_step jsonb;
  v_steps jsonb := '[]'::jsonb;
  v_n integer;
begin
  for v_call in select value from jsonb_array_elements(p_calls) loop
    v_n := 0;
    loop
      v_step := pg_temp.step(p_org, v_call ->> 0, (v_call ->> 1)::integer);
      v_steps := v_steps || jsonb_build_array(v_step);
      v_n := v_n + 1;
      exit when case when v_call -> 2 = 'null'::jsonb
                     then not (v_step -> 'result' ->> 'success')::boolean or v_n >= 1000
                     else v_n >= (v_call ->> 2)::integer end;
    end loop;
  end loop;
  return v_steps;
end
$$;

-- Steps as the twin sees them: without what the stripes hold (an unstriped pool has none).
create function pg_temp.as_twin(p_steps jsonb)
returns jsonb
language sql
as $$
  select coalesce(jsonb_agg(s - 'in_stripes' order by n), '[]'::jsonb) from jsonb_array_elements(p_steps) with ordinality as t (s, n)
$$;

-- What the stripes of an organization's ai pool hold.
create function pg_temp.in_stripes(p_org uuid)
returns bigint
language sql
as $$
  select coalesce(sum(remaining), 0)::bigint from public.credit_balance_stripes where organization_id = p_org and pool_key = 'ai'
$$;
grant execute on function pg_temp.step(uuid, text, integer), pg_temp.run(uuid, jsonb), pg_temp.as_twin(jsonb),
  pg_temp.in_stripes(uuid) to authenticated, service_role;

-- ---------------------------------------------------------------------------------------------
-- Who may stripe a pool, and with how many stripes
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('bob@striped.test');
select throws_ok(format($$ select public.set_credit_stripes(%L, 'ai', 4) $$, :'acme'),
  '42501', 'permission denied for function set_credit_stripes', 'bob, a member, cannot stripe Acme''s pool');
select tests.authenticate_as('alice@striped.test');
select throws_ok(format($$ select public.set_credit_stripes(%L, 'ai', 4) $$, :'acme'),
  '42501', 'permission denied for function set_credit_stripes', 'alice, its owner, cannot either');
select tests.clear_authentication();
select throws_ok(format($$ select public.set_credit_stripes(%L, 'ai', 4) $$, :'acme'),
  '42501', 'permission denied for function set_credit_stripes', 'anon cannot either');
-- A definer function calling the body on a signed-in user's behalf: the body's own check refuses.
select tests.reset_role();
select set_config('request.jwt.claims', tests.user_claims('alice@striped.test')::text, true) as claims \gset
select throws_ok(format($$ select private.set_credit_stripes(%L, 'ai', 4) $$, :'acme'),
  '42501', 'not_authorized', 'called on alice''s behalf, the body itself refuses her with not_authorized');
select tests.reset_role();

select tests.authenticate_as_service_role();
select throws_ok(format($$ select public.set_credit_stripes(%L, 'ai', 0) $$, :'acme'),
  '22023', 'invalid_stripes', 'zero stripes are refused with invalid_stripes');
select throws_ok(format($$ select public.set_credit_stripes(%L, 'ai', 65) $$, :'acme'),
  '22023', 'invalid_stripes', 'sixty-five stripes are refused with invalid_stripes');
select throws_ok(format($$ select public.set_credit_stripes(%L, 'ai', null) $$, :'acme'),
  '22023', 'invalid_stripes', 'a null number of stripes is refused with invalid_stripes');
select throws_ok(format($$ select public.set_credit_stripes(%L, 'voice', 4) $$, :'acme'),
  'PT404', 'pool_not_found', 'an unknown pool is refused with pool_not_found');
select throws_ok(format($$ select public.set_credit_stripes(%L, 'ai', 4) $$, gen_random_uuid()),
  'PT404', 'organization_not_found', 'an unknown organization is refused with organization_not_found');
select tests.reset_role();
select is_empty($$ select 1 from public.credit_balance_stripes where organization_id in (select id from public.organizations where slug like '%-striped-test') $$,
  'the refused calls left no stripe rows');

-- ---------------------------------------------------------------------------------------------
-- Striping Acme's ai pool
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as_service_role();
select is(public.set_credit_stripes(:'acme', 'ai', 4), '{"pool": "ai", "stripes": 4}'::jsonb,
  'the service role stripes Acme''s ai pool four ways');
select public.set_credit_stripes(:'small', 'ai', 4);
select tests.reset_role();
select results_eq(format($$ select stripe, remaining, grant_id is null from public.credit_balance_stripes where organization_id = %L order by stripe $$, :'acme'),
  $$ values (1, 0::bigint, true), (2, 0::bigint, true), (3, 0::bigint, true), (4, 0::bigint, true) $$,
  'Acme now has exactly four empty ai stripes, numbered 1 to 4');
select results_eq(format($$ select pool_key, stripes from public.credit_balances where organization_id = %L order by pool_key $$, :'acme'),
  $$ values ('ai', 4), ('email', 1), ('sms', 1), ('whatsapp', 1) $$,
  'its ai balance row records four stripes and its other pools stay unstriped');
select tests.authenticate_as('bob@striped.test');
select is(public.get_credit_balances(:'acme'), public.get_credit_balances(:'twin'),
  'striping changed nothing in Acme''s balances, which equal its twin''s');

-- ---------------------------------------------------------------------------------------------
-- Consuming from the striped pool: the same answers as the twin's
-- ---------------------------------------------------------------------------------------------
-- Small calls a stripe pays, one that refills a stripe, and one too big for a slice that the
-- shared row pays.
\set calls '[["ai_chat", 1, 3], ["form_generation", 1, 1], ["ai_assistant", 7, 1], ["automation_run", 1, 1], ["ai_chat", 1, 1], ["form_generation", 2, 1], ["ai_chat", 25, 1]]'
select pg_temp.run(:'acme', :'calls') as acme_seq \gset
select pg_temp.run(:'twin', :'calls') as twin_seq \gset

select is(pg_temp.as_twin(:'acme_seq'), pg_temp.as_twin(:'twin_seq'),
  'every call on Acme answers what the same call on its twin answers, draws alike and leaves the same balance');
select ok((select bool_and((s -> 'result' ->> 'success')::boolean
                           and (s -> 'result' -> 'remaining' ->> 'ai')::bigint = (s ->> 'balance')::bigint)
           from jsonb_array_elements(:'acme_seq'::jsonb) s),
  'every call on Acme succeeds and answers the pool''s whole balance after it as remaining');
select is((select jsonb_agg(s -> 'result' -> 'consumed' order by n) from jsonb_array_elements(:'acme_seq'::jsonb) with ordinality as t (s, n)),
  '[{"ai": 1}, {"ai": 1}, {"ai": 1}, {"ai": 5}, {"ai": 7}, {"ai": 2}, {"ai": 1}, {"ai": 10}, {"ai": 25}]'::jsonb,
  'each answer names what the call consumed');
select is((select jsonb_agg((s -> 'result' -> 'remaining' ->> 'ai')::bigint order by n) from jsonb_array_elements(:'acme_seq'::jsonb) with ordinality as t (s, n)),
  '[199, 198, 197, 192, 185, 183, 182, 172, 147]'::jsonb,
  'and what the pool holds after it, stripes included');
select ok((select count(*) filter (where (s ->> 'in_stripes')::bigint > 0) > 0 from jsonb_array_elements(:'acme_seq'::jsonb) s),
  'the stripes held credits during the calls: the striped path paid');
select ok((select bool_and((s ->> 'from_head')::boolean) from jsonb_array_elements(:'acme_seq'::jsonb) s),
  'every call drew from the pool''s head grant');
select tests.reset_role();
select results_eq(format($$ select distinct grant_id from public.credit_ledger where organization_id = %L and pool_key = 'ai' and kind = 'consumption' $$, :'acme'),
  format($$ values (%L::uuid) $$, :'acme_plan'),
  'Acme''s ledger rows name the plan allocation, its head grant, as the grant drawn from');
select ok((select bool_and((s ->> 'heads_only')::boolean and (s ->> 'floor_kept')::boolean) from jsonb_array_elements(:'acme_seq'::jsonb) s),
  'after every call each stripe holding credits held the head grant and the shared row kept its floor');
select ok((select bool_and(v.ok) from private.verify_credit_ledger(:'acme') v), 'Acme''s ledger reconciles with its stripes counted');

-- The readers that add the stripes, while the stripes hold credits.
select ok(pg_temp.in_stripes(:'acme') > 0, 'Acme''s stripes hold credits now');
select tests.authenticate_as('bob@striped.test');
select is(public.get_credit_balances(:'acme'), public.get_credit_balances(:'twin'),
  'get_credit_balances gives Acme the balances of its twin');
select results_eq(format($$ select pool_key, available, reserved from public.credit_balances_overview where organization_id = %L order by pool_key $$, :'acme'),
  format($$ select pool_key, available, reserved from public.credit_balances_overview where organization_id = %L order by pool_key $$, :'twin'),
  'credit_balances_overview shows Acme what it shows the twin');
select results_eq(format($$ select pool_key, kind::text, amount, remaining, priority, is_head from public.credit_grant_balances where organization_id = %L order by pool_key, priority, kind $$, :'acme'),
  format($$ select pool_key, kind::text, amount, remaining, priority, is_head from public.credit_grant_balances where organization_id = %L order by pool_key, priority, kind $$, :'twin'),
  'and credit_grant_balances gives each of Acme''s grants the remaining credits of the twin''s');
select tests.reset_role();

-- ---------------------------------------------------------------------------------------------
-- Unstriping gathers the stripes back
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as_service_role();
select is(public.set_credit_stripes(:'acme', 'ai', 1), '{"pool": "ai", "stripes": 1}'::jsonb,
  'the service role sets Acme''s ai pool back to one stripe');
select tests.reset_role();
select is_empty(format($$ select 1 from public.credit_balance_stripes where organization_id = %L and remaining <> 0 $$, :'acme'),
  'Acme''s stripe rows hold nothing any more (they stay, unused)');
select results_eq(format($$ select pool_key, stripes, available, head_remaining, next_expiry_at from public.credit_balances where organization_id = %L order by pool_key $$, :'acme'),
  format($$ select pool_key, stripes, available, head_remaining, next_expiry_at from public.credit_balances where organization_id = %L order by pool_key $$, :'twin'),
  'its balance rows hold the whole balance again, exactly as the twin''s do');
select ok((select bool_and(v.ok) from private.verify_credit_ledger(:'acme') v), 'and its ledger reconciles');
select tests.authenticate_as_service_role();
select public.set_credit_stripes(:'acme', 'ai', 4);
select tests.reset_role();

-- ---------------------------------------------------------------------------------------------
-- A grant drawn first gathers the stripes
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('bob@striped.test');
select pg_temp.run(:'acme', '[["ai_chat", 1, 3]]') as acme_pre \gset
select pg_temp.run(:'twin', '[["ai_chat", 1, 3]]') as twin_pre \gset
select tests.reset_role();
select ok(exists (select 1 from public.credit_balance_stripes where organization_id = :'acme' and remaining > 0 and grant_id = :'acme_plan'),
  'before the grant a stripe holds credits of the plan allocation');
select coalesce(max(id), 0) as ledger_mark from public.credit_ledger \gset

select tests.authenticate_as_service_role();
select public.grant_credits(:'acme', 'ai', 30, p_priority => 0) ->> 'grant_id' as acme_g30 \gset
select public.grant_credits(:'twin', 'ai', 30, p_priority => 0) ->> 'grant_id' as twin_g30 \gset
select tests.reset_role();
select is(pg_temp.in_stripes(:'acme'), 0::bigint, 'a grant drawn first (priority 0) gathers every stripe back into the shared row');
select is((select head_grant_id from public.credit_balances where organization_id = :'acme' and pool_key = 'ai'), :'acme_g30'::uuid,
  'and the new grant is the pool''s head');

select tests.authenticate_as('bob@striped.test');
select pg_temp.run(:'acme', '[["ai_chat", 1, 1]]') as acme_g1 \gset
select pg_temp.run(:'twin', '[["ai_chat", 1, 1]]') as twin_g1 \gset
select tests.reset_role();
select is((select grant_id from public.credit_ledger where organization_id = :'acme' and kind = 'consumption' order by id desc limit 1), :'acme_g30'::uuid,
  'the next call draws from the new grant');
select ok(not exists (select 1 from public.credit_balance_stripes where organization_id = :'acme' and remaining > 0 and grant_id <> :'acme_g30'::uuid)
          and exists (select 1 from public.credit_balance_stripes where organization_id = :'acme' and remaining > 0),
  'and every stripe holds nothing or credits of the new grant');

-- Past the end of the new grant: its 30 credits go first, then the plan allocation's.
select tests.authenticate_as('bob@striped.test');
select pg_temp.run(:'acme', '[["ai_chat", 1, 35]]') as acme_g35 \gset
select pg_temp.run(:'twin', '[["ai_chat", 1, 35]]') as twin_g35 \gset
select is(pg_temp.as_twin((:'acme_pre')::jsonb || (:'acme_g1')::jsonb || (:'acme_g35')::jsonb),
          pg_temp.as_twin((:'twin_pre')::jsonb || (:'twin_g1')::jsonb || (:'twin_g35')::jsonb),
  'around the grant every call on Acme answers and draws what the same call on the twin does');
select tests.reset_role();
select results_eq(
  format($$ select g.kind::text, sum(-l.amount)::bigint from public.credit_ledger l join public.credit_grants g on g.id = l.grant_id
            where l.organization_id = %L and l.kind = 'consumption' and l.id > %s group by g.kind order by g.kind $$, :'acme', :'ledger_mark'),
  $$ values ('plan_allocation', 6::bigint), ('manual', 30::bigint) $$,
  'the 36 calls since the grant drew all 30 credits of the new grant and 6 of the plan allocation');
select ok((select max(l.id) filter (where g.kind = 'manual') < min(l.id) filter (where g.kind = 'plan_allocation')
           from public.credit_ledger l join public.credit_grants g on g.id = l.grant_id
           where l.organization_id = :'acme' and l.kind = 'consumption' and l.id > :ledger_mark),
  'and no credit of the plan allocation was spent while the new grant had any');
select results_eq(format($$ select n::int from jsonb_array_elements(%L::jsonb) with ordinality as t (s, n) where not (s ->> 'from_head')::boolean $$,
                         (:'acme_g1')::jsonb || (:'acme_g35')::jsonb),
  $$ values (31) $$,
  'each of those calls drew from the head grant but the 31st, the first after the new grant ran out, which drew from the next grant');
select ok((select bool_and((s ->> 'heads_only')::boolean and (s ->> 'floor_kept')::boolean)
           from jsonb_array_elements((:'acme_g1')::jsonb || (:'acme_g35')::jsonb) s),
  'after each of them every stripe holding credits held the head grant and the shared row kept its floor');
select ok((select bool_and(v.ok) from private.verify_credit_ledger(:'acme') v), 'Acme''s ledger reconciles after the gather');

-- ---------------------------------------------------------------------------------------------
-- An expiry moved earlier reaches the stripes
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as_service_role();
select public.grant_credits(:'acme', 'ai', 40, p_priority => 0) ->> 'grant_id' as acme_g40 \gset
select public.grant_credits(:'twin', 'ai', 40, p_priority => 0) ->> 'grant_id' as twin_g40 \gset
select tests.authenticate_as('bob@striped.test');
select pg_temp.run(:'acme', '[["ai_chat", 1, 2]]') as acme_e0 \gset
select pg_temp.run(:'twin', '[["ai_chat", 1, 2]]') as twin_e0 \gset
select tests.reset_role();
select ok(exists (select 1 from public.credit_balance_stripes where organization_id = :'acme' and grant_id = :'acme_g40' and remaining > 0 and expires_at = 'infinity'),
  'a stripe holds credits of the new 40-credit grant, which never expires');

-- Studio moves the grant's expiry into the past.
update public.credit_grants set expires_at = now() - interval '1 second' where id in (:'acme_g40', :'twin_g40');
select results_eq(format($$ select count(*)::int, bool_and(expires_at = now() - interval '1 second') from public.credit_balance_stripes
                            where organization_id = %L and grant_id = %L and remaining > 0 $$, :'acme', :'acme_g40'),
  $$ values (1, true) $$,
  'the stripe holding the grant now expires when the grant does');

select tests.authenticate_as('bob@striped.test');
select pg_temp.run(:'acme', '[["ai_chat", 1, 1]]') as acme_e1 \gset
select pg_temp.run(:'twin', '[["ai_chat", 1, 1]]') as twin_e1 \gset
select tests.reset_role();
select is((select grant_id from public.credit_ledger where organization_id = :'acme' and kind = 'consumption' order by id desc limit 1), :'acme_plan'::uuid,
  'the next call does not draw from the expired grant but from the plan allocation');
select is(pg_temp.as_twin((:'acme_e0')::jsonb || (:'acme_e1')::jsonb), pg_temp.as_twin((:'twin_e0')::jsonb || (:'twin_e1')::jsonb),
  'and answers what the same call on the twin answers');
select results_eq(format($$ select amount from public.credit_ledger where organization_id = %L and kind = 'expiry' and grant_id = %L $$, :'acme', :'acme_g40'),
  $$ values (-38::bigint) $$,
  'the expired grant''s 38 credits, those in the stripe included, leave the ledger as expired');
select results_eq(format($$ select amount from public.credit_ledger where organization_id = %L and kind = 'expiry' and grant_id = %L $$, :'twin', :'twin_g40'),
  $$ values (-38::bigint) $$,
  'as the twin''s do');
select ok((select bool_and(v.ok) from private.verify_credit_ledger(:'acme') v), 'Acme''s ledger reconciles after the expiry');

-- ---------------------------------------------------------------------------------------------
-- Low and depleted events on a small striped pool
-- ---------------------------------------------------------------------------------------------
-- Small (200 ai, threshold 150, four stripes) and its twin: three chats, form generations until
-- refused, then chats until refused.
\set drain '[["ai_chat", 1, 3], ["form_generation", 1, null], ["ai_chat", 1, null]]'
select tests.authenticate_as('bob@striped.test');
select pg_temp.run(:'small', :'drain') as small_seq \gset
select pg_temp.run(:'small_twin', :'drain') as small_twin_seq \gset
select tests.reset_role();

select is(pg_temp.as_twin(:'small_seq'), pg_temp.as_twin(:'small_twin_seq'),
  'every call on Small answers what the same call on its twin answers, refusals included');
select ok((select count(*) filter (where (s ->> 'in_stripes')::bigint > 0) > 0 from jsonb_array_elements(:'small_seq'::jsonb) s),
  'Small''s stripes held credits during the calls');
select results_eq(format($$ select type, payload from private.domain_events where organization_id = %L and type like 'credits.%%' order by id $$, :'small'),
  format($$ select type, payload from private.domain_events where organization_id = %L and type like 'credits.%%' order by id $$, :'small_twin'),
  'Small''s credit events are its twin''s, in the same order');
select results_eq(format($$ select type, payload from private.domain_events where organization_id = %L and type like 'credits.%%' order by id $$, :'small'),
  $$ values ('credits.low', '{"pool": "ai", "available": 147, "threshold": 150}'::jsonb),
            ('credits.depleted', '{"pool": "ai", "available": 0}'::jsonb) $$,
  'exactly one credits.low when the pool first falls below 150, and exactly one credits.depleted at zero');
select results_eq(
  format($$ select s -> 'result' ->> 'error', (s -> 'result' ->> 'required')::bigint, (s -> 'result' ->> 'available')::bigint, (s ->> 'balance')::bigint
            from jsonb_array_elements(%L::jsonb) with ordinality as t (s, n)
            where not (s -> 'result' ->> 'success')::boolean order by n $$, :'small_seq'),
  $$ values ('insufficient_credits', 5::bigint, 2::bigint, 2::bigint), ('insufficient_credits', 1::bigint, 0::bigint, 0::bigint) $$,
  'Small is refused only twice: a form generation with 2 credits left in all, then a chat with none');
select is((select s -> 'result' from jsonb_array_elements(:'small_seq'::jsonb) with ordinality as t (s, n) where n = 43),
  '{"success": false, "error": "insufficient_credits", "message": "Insufficient AI credits", "pool": "ai", "required": 5, "available": 2}'::jsonb,
  'the refusal has the shape of private.insufficient_credits');
select is((select sum((s -> 'result' -> 'consumed' ->> 'ai')::bigint) filter (where (s -> 'result' ->> 'success')::boolean)::bigint
           from jsonb_array_elements(:'small_seq'::jsonb) s), 200::bigint,
  'the calls consumed exactly the 200 credits Small started with');
select is((select -sum(amount)::bigint from public.credit_ledger where organization_id = :'small' and kind = 'consumption'), 200::bigint,
  'and the ledger says so');
select ok((select bool_and((s ->> 'heads_only')::boolean and (s ->> 'floor_kept')::boolean) from jsonb_array_elements(:'small_seq'::jsonb) s),
  'after every call each stripe holding credits held the head grant and the shared row kept at least 150');
select ok((select bool_and(v.ok) from private.verify_credit_ledger(:'small') v), 'Small''s ledger reconciles');

-- ---------------------------------------------------------------------------------------------
-- Row-level security on the stripes
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('bob@striped.test');
select results_eq(format($$ select stripe from public.credit_balance_stripes where organization_id = %L order by stripe $$, :'acme'),
  $$ values (1), (2), (3), (4) $$,
  'bob, a member, reads Acme''s four stripe rows');
select throws_ok(format($$ update public.credit_balance_stripes set remaining = remaining + 100 where organization_id = %L $$, :'acme'),
  '42501', 'permission denied for table credit_balance_stripes', 'bob cannot add credits to a stripe');
select throws_ok(format($$ insert into public.credit_balance_stripes (organization_id, pool_key, stripe, remaining) values (%L, 'ai', 5, 100) $$, :'acme'),
  '42501', 'permission denied for table credit_balance_stripes', 'nor insert a stripe');
select tests.authenticate_as('alice@striped.test');
select throws_ok(format($$ delete from public.credit_balance_stripes where organization_id = %L $$, :'acme'),
  '42501', 'permission denied for table credit_balance_stripes', 'alice, the owner, cannot delete Acme''s stripes');
select tests.authenticate_as('erin@striped.test');
select is_empty($$ select 1 from public.credit_balance_stripes $$, 'erin, a member of another organization only, sees no stripe rows');
select tests.authenticate_as_service_role();
select throws_ok(format($$ update public.credit_balance_stripes set remaining = 0 where organization_id = %L $$, :'acme'),
  '42501', 'permission denied for table credit_balance_stripes', 'even the service role changes stripes only through the functions');
select tests.clear_authentication();
select throws_ok($$ select 1 from public.credit_balance_stripes $$,
  '42501', 'permission denied for table credit_balance_stripes', 'anon cannot read stripe rows');
select tests.reset_role();

-- ---------------------------------------------------------------------------------------------
-- A two-pool action on a striped pool
-- ---------------------------------------------------------------------------------------------
insert into public.credit_actions (key, name) values ('striped_combo', 'Combo (test)');
insert into public.credit_action_costs (action_key, pool_key, amount) values ('striped_combo', 'ai', 1), ('striped_combo', 'sms', 1);

select tests.authenticate_as('bob@striped.test');
select pg_temp.run(:'acme', '[["ai_chat", 1, 1]]') as acme_c0 \gset
select pg_temp.run(:'twin', '[["ai_chat", 1, 1]]') as twin_c0 \gset
select ok(pg_temp.in_stripes(:'acme') > 0, 'before the two-pool call Acme''s stripes hold credits');
select pg_temp.run(:'acme', '[["striped_combo", 1, 1]]') as acme_c1 \gset
select pg_temp.run(:'twin', '[["striped_combo", 1, 1]]') as twin_c1 \gset
select is(((:'acme_c1')::jsonb -> 0 -> 'result') - 'remaining', '{"success": true, "consumed": {"ai": 1, "sms": 1}}'::jsonb,
  'a two-pool action on Acme''s striped ai pool succeeds');
select is(pg_temp.as_twin((:'acme_c0')::jsonb || (:'acme_c1')::jsonb), pg_temp.as_twin((:'twin_c0')::jsonb || (:'twin_c1')::jsonb),
  'and answers and draws what it does on the twin');
select tests.reset_role();
select ok((select bool_and(v.ok) from private.verify_credit_ledger(:'acme') v), 'Acme''s ledger reconciles after the two-pool call');

-- ---------------------------------------------------------------------------------------------
-- Batches on a striped pool
-- ---------------------------------------------------------------------------------------------
\set items '[{"action_type": "ai_chat"}, {"action_type": "ai_chat", "quantity": 3}, {"action_type": "whatsapp_message"}, {"action_type": "form_generation", "metadata": {"m": 1}}, {"action_type": "ai_chat"}]'
select tests.authenticate_as_service_role();
select is(private.consume_credits_set(:'acme', :'items'), null, 'the set path passes over a batch that touches a striped pool');
select isnt(private.consume_credits_set(:'acme', '[{"action_type": "whatsapp_message"}]'), null,
  'but still takes a batch on Acme''s unstriped whatsapp pool');
select public.consume_credits_rpc(:'twin', 'whatsapp_message') as twin_whatsapp \gset
select tests.authenticate_as('bob@striped.test');
select public.consume_credits_batch(:'acme', :'items') as acme_batch \gset
select public.consume_credits_batch(:'twin', :'items') as twin_batch \gset
select is((select jsonb_agg(r - 'transaction_id' order by n) from jsonb_array_elements(:'acme_batch'::jsonb) with ordinality as t (r, n)),
          (select jsonb_agg(r - 'transaction_id' order by n) from jsonb_array_elements(:'twin_batch'::jsonb) with ordinality as t (r, n)),
  'consume_credits_batch on Acme answers what it answers on the twin, item by item');
select ok((select bool_and((r ->> 'success')::boolean) from jsonb_array_elements(:'acme_batch'::jsonb) r), 'every item of Acme''s batch succeeded');
select ok(pg_temp.in_stripes(:'acme') > 0, 'and the stripes paid the ai items');

-- ---------------------------------------------------------------------------------------------
-- In the end, Acme and its twin agree on everything
-- ---------------------------------------------------------------------------------------------
select is(public.get_credit_balances(:'acme'), public.get_credit_balances(:'twin'), 'Acme''s balances equal its twin''s');
select results_eq(format($$ select pool_key, available from public.credit_balances_overview where organization_id = %L order by pool_key $$, :'acme'),
  format($$ select pool_key, available from public.credit_balances_overview where organization_id = %L order by pool_key $$, :'twin'),
  'and so do the balances credit_balances_overview shows');
select tests.reset_role();
select results_eq(
  format($$ select l.pool_key, l.kind::text, l.amount, l.action_key, l.quantity, l.actor_role, g.kind::text, g.priority
            from public.credit_ledger l left join public.credit_grants g on g.id = l.grant_id
            where l.organization_id = %L order by l.id $$, :'acme'),
  format($$ select l.pool_key, l.kind::text, l.amount, l.action_key, l.quantity, l.actor_role, g.kind::text, g.priority
            from public.credit_ledger l left join public.credit_grants g on g.id = l.grant_id
            where l.organization_id = %L order by l.id $$, :'twin'),
  'the ledgers agree row by row, each drawn from the same kind of grant');
select results_eq(format($$ select pool_key, kind::text, sum(amount)::bigint from public.credit_ledger where organization_id = %L group by 1, 2 order by 1, 2 $$, :'acme'),
  format($$ select pool_key, kind::text, sum(amount)::bigint from public.credit_ledger where organization_id = %L group by 1, 2 order by 1, 2 $$, :'twin'),
  'and so do their sums by pool and kind');
select results_eq(format($$ select type, payload from private.domain_events where organization_id = %L and type like 'credits.%%' order by id $$, :'acme'),
  format($$ select type, payload from private.domain_events where organization_id = %L and type like 'credits.%%' order by id $$, :'twin'),
  'and their credit events');
select ok((select bool_and(v.ok) from private.verify_credit_ledger(:'acme') v), 'Acme''s ledger reconciles in every pool');

-- ---------------------------------------------------------------------------------------------
-- A later grant expires while the stripes hold the head grant
-- ---------------------------------------------------------------------------------------------
-- The unstriped hot path gives way to the general path once the pool's next_expiry_at has
-- passed (which sweeps the expired grant first); so does the stripe path.
select tests.authenticate_as_service_role();
select public.grant_credits(:'acme', 'ai', 50, p_priority => 500) ->> 'grant_id' as acme_g50 \gset
select public.grant_credits(:'twin', 'ai', 50, p_priority => 500) ->> 'grant_id' as twin_g50 \gset
select tests.authenticate_as('bob@striped.test');
select pg_temp.run(:'acme', '[["ai_chat", 1, 1]]') as acme_x0 \gset
select pg_temp.run(:'twin', '[["ai_chat", 1, 1]]') as twin_x0 \gset
select tests.reset_role();
update public.credit_grants set expires_at = now() - interval '1 second' where id in (:'acme_g50', :'twin_g50');
select tests.authenticate_as('bob@striped.test');
select pg_temp.run(:'acme', '[["ai_chat", 1, 1]]') as acme_x1 \gset
select pg_temp.run(:'twin', '[["ai_chat", 1, 1]]') as twin_x1 \gset
select is(pg_temp.as_twin((:'acme_x0')::jsonb || (:'acme_x1')::jsonb), pg_temp.as_twin((:'twin_x0')::jsonb || (:'twin_x1')::jsonb),
  'once a later grant has expired, a call the stripes pay answers what the twin answers, without the expired credits');
select tests.reset_role();

select * from finish();
rollback;
