-- 07 PostgREST's pre-request check (public.check_request, set as the authenticator role's
-- pgrst.db_pre_request): a signed-in user's request passes only while their user exists (not
-- banned) and their token's session is live; anonymous and service-role requests pass untouched.
begin;
select plan(12);

select tests.create_user('alice@request.test');
select tests.create_user('bob@request.test');
select gen_random_uuid() as live_session \gset
insert into auth.sessions (id, user_id, created_at, updated_at, aal)
values (:'live_session', tests.get_user_id('alice@request.test'), now(), now(), 'aal1');

create function pg_temp.act_as(p_email text, p_session uuid) returns void language plpgsql as $$
begin
  perform set_config('request.jwt.claims',
    (tests.user_claims(p_email) || jsonb_build_object('session_id', p_session))::text, true);
  perform set_config('role', 'authenticated', true);
end $$;
grant execute on function pg_temp.act_as(text, uuid) to public;

select ok((select setconfig @> array['pgrst.db_pre_request=public.check_request']
           from pg_db_role_setting where setrole = 'authenticator'::regrole),
  'PostgREST runs public.check_request before every request');

select tests.clear_authentication();
select lives_ok($$ select public.check_request() $$, 'an anonymous request passes');
select tests.authenticate_as_service_role();
select lives_ok($$ select public.check_request() $$, 'a service-role request passes');

select pg_temp.act_as('alice@request.test', :'live_session');
select lives_ok($$ select public.check_request() $$, 'a signed-in user in a live session passes');
select tests.authenticate_as('alice@request.test');
select lives_ok($$ select public.check_request() $$, 'claims without a session id are checked for their user only');

select pg_temp.act_as('alice@request.test', gen_random_uuid());
select throws_ok($$ select public.check_request() $$, 'PT401', 'session_ended', 'a session that was signed out (no row) is refused');
select pg_temp.act_as('bob@request.test', :'live_session');
select throws_ok($$ select public.check_request() $$, 'PT401', 'session_ended', 'so is another user''s session');

select tests.reset_role();
update auth.sessions set not_after = now() - interval '1 minute' where id = :'live_session';
select pg_temp.act_as('alice@request.test', :'live_session');
select throws_ok($$ select public.check_request() $$, 'PT401', 'session_ended', 'and a session past its not_after');

select tests.reset_role();
update auth.sessions set not_after = null where id = :'live_session';
update auth.users set banned_until = now() + interval '1 day' where id = tests.get_user_id('alice@request.test');
select pg_temp.act_as('alice@request.test', :'live_session');
select throws_ok($$ select public.check_request() $$, 'PT401', 'session_ended', 'a banned user is refused');

select tests.reset_role();
update auth.users set banned_until = null where id = tests.get_user_id('alice@request.test');
select tests.authenticate_as('alice@request.test');
select set_config('request.jwt.claims', (current_setting('request.jwt.claims')::jsonb || '{"sub": "not-a-uuid"}')::text, true);
select throws_ok($$ select public.check_request() $$, 'PT401', 'session_ended', 'a token naming no valid user is refused');

select tests.reset_role();
select tests.get_user_id('alice@request.test') as alice_id \gset
delete from auth.users where id = :'alice_id';
select set_config('request.jwt.claims', jsonb_build_object('sub', :'alice_id', 'role', 'authenticated', 'session_id', :'live_session')::text, true);
select set_config('role', 'authenticated', true);
select throws_ok($$ select public.check_request() $$, 'PT401', 'session_ended', 'a deleted user''s token is refused');
select tests.clear_authentication();
select throws_ok($$ select private.check_session() $$, '42501', null, 'anon cannot call the check behind it');

select tests.reset_role();
select * from finish();
rollback;
