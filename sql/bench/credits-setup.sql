-- Benchmark fixtures for `npm run bench:credits` (scripts/bench-credits.mjs), in the local
-- database only. Everything lives in the `bench` schema or in organizations whose slug starts
-- with `bench-`, and scripts/bench-credits.mjs removes it all afterwards.
-- Start clean even if an earlier run was interrupted (its organizations' money records too).
delete from public.organizations where slug like 'bench-%';
delete from auth.users where email like 'bench-user-%@bench.test';
select private.permit('purge');
delete from public.credit_ledger where organization_id::text like '00000000-0000-4000-8000-%';
delete from public.credit_overages where organization_id::text like '00000000-0000-4000-8000-%';
delete from private.deleted_organizations where organization_id::text like '00000000-0000-4000-8000-%';
select private.permit('purge', false);
delete from public.credit_actions where key = 'bench_ai_whatsapp_reply';
drop function if exists public.bench_consume_floor(uuid);
drop schema if exists bench cascade;
create schema bench;

-- The ceiling: a bare balance table, one row per organization, updated by one statement.
create table bench.bare_balances (organization_id integer primary key, available bigint not null check (available >= 0));
insert into bench.bare_balances select g, 1000000000000 from generate_series(1, 1000) g;

-- The naive baseline, written the way it usually is: lock the balance row, check it, update
-- it, insert a log row, all in one plpgsql function.
create table bench.naive_balances (organization_id integer primary key, available bigint not null check (available >= 0));
create table bench.naive_log (id bigserial primary key, organization_id integer not null, action text not null,
                              amount bigint not null, metadata jsonb, created_at timestamptz not null default now());
create index on bench.naive_log (organization_id, created_at);
insert into bench.naive_balances select g, 1000000000000 from generate_series(1, 1000) g;

create function bench.naive_consume(p_organization_id integer, p_action text, p_amount bigint)
returns jsonb
language plpgsql
as $$
declare
  v_available bigint;
begin
  select available into v_available from bench.naive_balances where organization_id = p_organization_id for update;
  if v_available < p_amount then
    return jsonb_build_object('success', false, 'error', 'insufficient_credits');
  end if;
  update bench.naive_balances set available = available - p_amount where organization_id = p_organization_id;
  insert into bench.naive_log (organization_id, action, amount, metadata) values (p_organization_id, p_action, p_amount, '{}');
  return jsonb_build_object('success', true, 'remaining', v_available - p_amount);
end
$$;

-- The floor of consume_credits_rpc's design: only the two writes of its hot path (the balance
-- row's update and the ledger row, the same statement), with the action's cost given and
-- nothing validated, looked up or authorized. No implementation that keeps a balance row and a
-- ledger row per call can be cheaper than this, so it shows what bounds the one-pool target.
-- In public so that PostgREST serves it too, for the measurement over HTTP (only while the
-- benchmark runs: teardown drops it).
create function public.bench_consume_floor(p_organization_id uuid)
returns bigint
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_now timestamptz := now();
  v_tx_bytes bytea := overlay(uuid_send(gen_random_uuid())
                        placing substring(int8send((date_part('epoch', v_now) * 1000)::bigint) from 3) from 1 for 6);
  v_tx uuid := encode(set_byte(v_tx_bytes, 6, (get_byte(v_tx_bytes, 6) & 15) | 112), 'hex')::uuid;
  v_after bigint;
begin
  with debit as (
    update public.credit_balances b
    set available = b.available - 1, head_remaining = b.head_remaining - 1
    where b.organization_id = p_organization_id and b.pool_key = 'ai'
      and b.head_remaining >= 1 and b.next_expiry_at > v_now and b.stripes = 1
    returning b.available, b.head_grant_id
  ), entry as (
    insert into public.credit_ledger (transaction_id, organization_id, pool_key, kind, amount, grant_id, action_key,
                                      quantity, actor_id, actor_role, metadata, created_at)
    select v_tx, p_organization_id, 'ai', 'consumption', -1, debit.head_grant_id, 'ai_chat',
           1, null, 'service_role', '{}', v_now
    from debit
  )
  select debit.available into v_after from debit;
  return v_after;
end
$$;

revoke all on function public.bench_consume_floor(uuid) from public, anon;
grant execute on function public.bench_consume_floor(uuid) to authenticated;

-- Real organizations for consume_credits_rpc, numbered 1..1000 with ids pgbench can build
-- from the number (bench.org_id), each with a grant large enough never to run out during the
-- run (drawn first: priority 0). Organization 1001, the same, has its ai pool striped (below).
create function bench.org_id(p_n integer) returns uuid language sql immutable
as $$ select ('00000000-0000-4000-8000-' || lpad(p_n::text, 12, '0'))::uuid $$;
create table bench.orgs (n integer primary key, organization_id uuid not null);
insert into public.organizations (id, name, slug)
select bench.org_id(g), format('Bench %s', g), format('bench-%s', g) from generate_series(1, 1001) g;
insert into bench.orgs select g, bench.org_id(g) from generate_series(1, 1001) g;

do $$
declare
  v_org uuid;
begin
  for v_org in select organization_id from bench.orgs order by n loop
    perform private.add_credit_grant(v_org, 'ai', 'manual', 1000000000, 'infinity', 0, 'bench', '{}', now());
    perform private.add_credit_grant(v_org, 'whatsapp', 'manual', 1000000000, 'infinity', 0, 'bench', '{}', now());
  end loop;
end
$$;

-- A signed-in member per organization (user n owns organization n), with a live session, for
-- the scenarios that run as `authenticated` the way PostgREST does: the role, the JWT claims,
-- the pre-request check.
create function bench.user_id(p_n integer) returns uuid language sql immutable
as $$ select ('00000000-0000-4000-a000-' || lpad(p_n::text, 12, '0'))::uuid $$;
create function bench.session_id(p_n integer) returns uuid language sql immutable
as $$ select ('00000000-0000-4000-b000-' || lpad(p_n::text, 12, '0'))::uuid $$;
create function bench.claims(p_n integer) returns text language sql immutable
as $$ select json_build_object('sub', bench.user_id(p_n), 'role', 'authenticated', 'aud', 'authenticated',
                               'session_id', bench.session_id(p_n))::text $$;
insert into auth.users (id, email, raw_app_meta_data, raw_user_meta_data)
select bench.user_id(g), format('bench-user-%s@bench.test', g), '{"provider": "email", "providers": ["email"]}', '{}'
from generate_series(1, 1001) g;
insert into auth.sessions (id, user_id) select bench.session_id(g), bench.user_id(g) from generate_series(1, 1001) g;
insert into public.organization_members (organization_id, user_id, role)
select bench.org_id(g), bench.user_id(g), 'owner' from generate_series(1, 1001) g;

-- The hot organization of an agent fleet: its ai pool over 32 stripes (a direct connection is
-- the service role for the credit functions).
select public.set_credit_stripes(bench.org_id(1001), 'ai', 32);

-- The items of a batch of 100 one-credit consumptions.
create function bench.batch_100() returns jsonb language sql immutable
as $$ select jsonb_agg(jsonb_build_object('action_type', 'ai_chat')) from generate_series(1, 100) $$;

-- A two-pool action (an AI reply sent on WhatsApp).
insert into public.credit_actions (key, name) values ('bench_ai_whatsapp_reply', 'Bench: AI reply on WhatsApp');
insert into public.credit_action_costs (action_key, pool_key, amount) values
  ('bench_ai_whatsapp_reply', 'ai', 1), ('bench_ai_whatsapp_reply', 'whatsapp', 1);

analyze;
notify pgrst, 'reload schema';
