-- 20 The rules consume_credits_rpc inlines for speed agree with the one place each is written:
-- who may charge an organization (private.authorize) on the hot path, the multi-pool path and the
-- idempotent replay, for every kind of caller; the idempotency-key format
-- (private.check_idempotency_key). The metadata rule's boundary is in 19-hardening.
--
-- Cast: in Acme, olga is owner, adam admin, mia member, bill billing; sam is a stranger; pat a
-- platform admin who is no member; the service role; anon (who may not even call the RPC).
begin;
select plan(22);

select tests.create_user('olga@inlined.test');
select tests.create_user('adam@inlined.test');
select tests.create_user('mia@inlined.test');
select tests.create_user('bill@inlined.test');
select tests.create_user('sam@inlined.test');
select tests.create_user('pat@inlined.test', '{"platform_admin": true}');
select tests.authenticate_as('olga@inlined.test');
select public.create_organization('Acme', 'acme-inlined-test') as acme_id \gset
select tests.reset_role();
insert into public.organization_members (organization_id, user_id, role) values
  (:'acme_id', tests.get_user_id('adam@inlined.test'), 'admin'),
  (:'acme_id', tests.get_user_id('mia@inlined.test'), 'member'),
  (:'acme_id', tests.get_user_id('bill@inlined.test'), 'billing');
-- A two-pool action, so the multi-pool path runs.
insert into public.credit_actions (key, name) values ('inlined_combo', 'Combo (test)');
insert into public.credit_action_costs (action_key, pool_key, amount) values ('inlined_combo', 'ai', 1), ('inlined_combo', 'sms', 1);

-- For one caller: whether private.authorize lets them charge Acme, and whether each consume path
-- did (a charge succeeded) or refused them with not_authorized. Each try runs in its own
-- subtransaction, so nothing a refused path did survives.
create function pg_temp.outcomes(p_org uuid, p_key text)
returns text[]
language plpgsql
as $$
declare
  v_out text[] := '{}';
  v_sql text;
begin
  foreach v_sql in array array[
    format('select private.authorize(%L)', p_org),
    format('select public.consume_credits_rpc(%L, ''ai_chat'')', p_org),
    format('select public.consume_credits_rpc(%L, ''inlined_combo'')', p_org),
    format('select public.consume_credits_rpc(%L, ''ai_chat'', 1, %L)', p_org, p_key)]
  loop
    begin
      execute v_sql;
      v_out := v_out || 'allowed'::text;
    exception when others then
      v_out := v_out || sqlerrm;
    end;
  end loop;
  return v_out;
end
$$;
grant execute on function pg_temp.outcomes(uuid, text) to authenticated, service_role;

-- Every caller first makes the keyed call once as the service role, so the fourth try replays a
-- stored result: the replay path's own caller check decides.
select tests.authenticate_as_service_role();
select public.consume_credits_rpc(:'acme_id', 'ai_chat', 1, 'replay-' || k) from unnest(array['olga', 'adam', 'mia', 'bill', 'sam', 'pat']) k;

select tests.authenticate_as('olga@inlined.test');
select is(pg_temp.outcomes(:'acme_id', 'replay-olga'), array['allowed', 'allowed', 'allowed', 'allowed'], 'owner: authorize and every path allow');
select tests.authenticate_as('adam@inlined.test');
select is(pg_temp.outcomes(:'acme_id', 'replay-adam'), array['allowed', 'allowed', 'allowed', 'allowed'], 'admin: the same');
select tests.authenticate_as('mia@inlined.test');
select is(pg_temp.outcomes(:'acme_id', 'replay-mia'), array['allowed', 'allowed', 'allowed', 'allowed'], 'member: the same');
select tests.authenticate_as('bill@inlined.test');
select is(pg_temp.outcomes(:'acme_id', 'replay-bill'), array['allowed', 'allowed', 'allowed', 'allowed'], 'billing: the same');
select tests.authenticate_as('sam@inlined.test');
select is(pg_temp.outcomes(:'acme_id', 'replay-sam'), array['not_authorized', 'not_authorized', 'not_authorized', 'not_authorized'],
  'stranger: authorize and every path refuse');
select tests.authenticate_as('pat@inlined.test');
select is(pg_temp.outcomes(:'acme_id', 'replay-pat'), array['not_authorized', 'not_authorized', 'not_authorized', 'not_authorized'],
  'a platform admin who is no member: refused alike (operators use grants and refunds, not consume)');
select tests.authenticate_as_service_role();
select is(pg_temp.outcomes(:'acme_id', 'replay-olga'), array['allowed', 'allowed', 'allowed', 'allowed'], 'service role: allowed alike');
select tests.reset_role();
select is(pg_temp.outcomes(:'acme_id', 'replay-olga'), array['allowed', 'allowed', 'allowed', 'allowed'],
  'a direct database connection (no API role): trusted as the service role alike');

-- The role switched to wins over forged claims, on every path.
select set_config('request.jwt.claims', '{"role": "service_role"}', true);
select set_config('role', 'authenticated', true);
select is(pg_temp.outcomes(:'acme_id', 'replay-olga'), array['not_authenticated', 'not_authenticated', 'not_authenticated', 'not_authenticated'],
  'authenticated with service-role claims but no user: refused alike, as not signed in');
select tests.reset_role();

-- The idempotency-key format: the same boundary in consume and in the one rule.
select tests.authenticate_as_service_role();
select lives_ok(format($$ select public.consume_credits_rpc(%L, 'ai_chat', 1, %L) $$, :'acme_id', repeat('k', 255)),
  'consume takes a 255-character key');
select throws_ok(format($$ select public.consume_credits_rpc(%L, 'ai_chat', 1, %L) $$, :'acme_id', repeat('k', 256)),
  '22023', 'invalid_idempotency_key', 'and refuses 256');
select throws_ok(format($$ select public.consume_credits_rpc(%L, 'ai_chat', 1, 'a key') $$, :'acme_id'),
  '22023', 'invalid_idempotency_key', 'and a space');
select throws_ok(format($$ select public.consume_credits_rpc(%L, 'ai_chat', 1, '') $$, :'acme_id'),
  '22023', 'invalid_idempotency_key', 'and an empty key');
select throws_ok(format($$ select public.consume_credits_rpc(%L, 'ai_chat', 1, %L) $$, :'acme_id', 'k' || chr(10)),
  '22023', 'invalid_idempotency_key', 'and a key ending in a newline');
select throws_ok(format($$ select public.consume_credits_rpc(%L, 'ai_chat', 1, 'clé') $$, :'acme_id'),
  '22023', 'invalid_idempotency_key', 'and a letter outside ASCII');
-- A batch: the item with a 256-character key fails alone, the one with 255 is charged.
select is(
  (select jsonb_agg(coalesce(r ->> 'error', 'ok')) from jsonb_array_elements(public.consume_credits_batch(:'acme_id',
     jsonb_build_array(jsonb_build_object('action_type', 'ai_chat', 'idempotency_key', repeat('b', 256)),
                       jsonb_build_object('action_type', 'ai_chat', 'idempotency_key', repeat('b', 255))))) r),
  '["invalid_idempotency_key", "ok"]'::jsonb,
  'a batch refuses the item with a 256-character key and charges the one with 255');
select tests.reset_role();
select is(private.check_idempotency_key(repeat('k', 255)), repeat('k', 255), 'private.check_idempotency_key takes 255');
select throws_ok($$ select private.check_idempotency_key(repeat('k', 256)) $$, '22023', 'invalid_idempotency_key', 'and refuses 256');
select throws_ok($$ select private.check_idempotency_key('a key') $$, '22023', 'invalid_idempotency_key', 'and a space');
select throws_ok($$ select private.check_idempotency_key('') $$, '22023', 'invalid_idempotency_key', 'and an empty key');
select is(private.check_idempotency_key('Ab9_.:-'), 'Ab9_.:-', 'and takes every allowed kind of character');
select is(private.check_idempotency_key(null), null, 'no key is fine');

select * from finish();
rollback;
