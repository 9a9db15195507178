-- 06 Tenancy hardening (the security review of issue 6): deleting an organization leaves a
-- tombstone and an organization.deleted event; invitations are throttled per address and per
-- inviter; a member removed meanwhile cannot also leave; a user who is some organization's only
-- owner cannot be deleted, and the error names those organizations; free organizations are
-- limited per user and a re-created slug gets no second free allocation.
--
-- Cast: alice owns Acme, bob is its member; erin owns Evil Corp alone; frank owns nothing.
begin;
select plan(29);

select tests.create_user('alice@hardening.test');
select tests.create_user('bob@hardening.test');
select tests.create_user('erin@hardening.test');
select tests.create_user('frank@hardening.test');

select tests.authenticate_as('alice@hardening.test');
select public.create_organization('Acme', 'acme-hardening-test') as acme_id \gset
select tests.authenticate_as('erin@hardening.test');
select public.create_organization('Evil Corp', 'evil-hardening-test') as evil_id \gset
select tests.reset_role();
insert into public.organization_members (organization_id, user_id, role)
values (:'acme_id', tests.get_user_id('bob@hardening.test'), 'member');

-- ---------------------------------------------------------------------------------------------
-- Deleting an organization
-- ---------------------------------------------------------------------------------------------
-- Owners ask for a purge (the lifecycle tests); here the service role deletes, as a purge's
-- last step does.
select tests.authenticate_as_service_role();
select lives_ok(format($$ delete from public.organizations where id = %L $$, :'evil_id'), 'the service role deletes Evil Corp');
select tests.reset_role();
select is((select count(*)::int from private.domain_events
           where organization_id = :'evil_id' and type = 'organization.deleted'
             and payload ->> 'slug' = 'evil-hardening-test'
             and payload ? 'deleted_by' and payload ->> 'deleted_by' is null), 1,
  'one organization.deleted event names the organization and who deleted it (no user: the service role)');
select ok((select records_retained_until between now() + interval '10 years' - interval '1 minute'
                                             and now() + interval '10 years'
           from private.deleted_organizations where organization_id = :'evil_id'),
  'a tombstone keeps its records for the configured retention (10 years)');

-- ---------------------------------------------------------------------------------------------
-- Invitation throttle
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('alice@hardening.test');
select lives_ok(format($$ select public.invite_member(%L, 'target@hardening.test') $$, :'acme_id'), 'a first invitation goes out');
select lives_ok(format($$ select public.invite_member(%L, 'target@hardening.test') $$, :'acme_id'), 'a re-send goes out');
select lives_ok(format($$ select public.invite_member(%L, 'target@hardening.test') $$, :'acme_id'), 'a second re-send goes out');
select throws_ok(format($$ select public.invite_member(%L, 'target@hardening.test') $$, :'acme_id'),
  'PT429', 'rate_limited', 'a fourth send to the same address within the hour is refused with rate_limited (HTTP 429)');
select tests.reset_role();
select is((select count(*)::int from private.domain_events where organization_id = :'acme_id' and type = 'member.invited'), 3,
  'the refused send wrote no member.invited event');
-- Windows are whole hours (fixed windows from a fixed origin).
select throws_ok(format($$ select private.hit_rate_limit('invitation_email', %L, 3, interval '1 hour',
    date_bin(interval '1 hour', now(), timestamptz '2000-01-01 00:00:00+00') + interval '59 minutes') $$,
  :'acme_id' || ':target@hardening.test'), 'PT429', 'rate_limited', 'the limit holds to the end of the hour');
select lives_ok(format($$ select private.hit_rate_limit('invitation_email', %L, 3, interval '1 hour',
    date_bin(interval '1 hour', now(), timestamptz '2000-01-01 00:00:00+00') + interval '60 minutes') $$,
  :'acme_id' || ':target@hardening.test'), 'and the next hour starts afresh');

update private.settings set value = '2' where key = 'invitations_per_inviter_per_hour';
select tests.authenticate_as('alice@hardening.test');
select throws_ok(format($$ select public.invite_member(%L, 'other@hardening.test') $$, :'acme_id'),
  'PT429', 'rate_limited', 'the inviter''s own limit counts sends to every address (3 sent, 2 allowed)');
select tests.reset_role();
update private.settings set value = '50' where key = 'invitations_per_inviter_per_hour';

select is((select count(*)::int from private.rate_limit_counters where window_start < now() - interval '2 days'), 0,
  'no stale windows yet');
insert into private.rate_limit_counters (bucket, subject, window_start, hits) values ('test', 'x', now() - interval '3 days', 1);
select is(private.purge_rate_limit_counters(), 1::bigint, 'the hourly purge removes windows older than a day');

-- ---------------------------------------------------------------------------------------------
-- Leaving after being removed
-- ---------------------------------------------------------------------------------------------
-- The race itself (both calls at once) is tests/tenancy/membership-races.test.ts; here the
-- sequence the loser sees: its delete finds nothing.
select tests.authenticate_as('alice@hardening.test');
select public.remove_member(:'acme_id', tests.get_user_id('bob@hardening.test'));
select tests.authenticate_as('bob@hardening.test');
select throws_ok(format($$ select public.leave_organization(%L) $$, :'acme_id'), '42501', 'not_authorized',
  'bob, removed, cannot leave as well');
select tests.reset_role();
select is((select count(*)::int from private.domain_events
           where organization_id = :'acme_id' and type in ('member.removed', 'member.left')), 1,
  'one event for one membership ending');

-- ---------------------------------------------------------------------------------------------
-- Deleting a user who is an organization's only owner
-- ---------------------------------------------------------------------------------------------
select throws_like(format($$ delete from auth.users where id = %L $$, tests.get_user_id('alice@hardening.test')),
  '%last_owner%', 'deleting alice, the only owner of Acme, is refused with last_owner');
create function pg_temp.deletion_error(p_user uuid) returns text language plpgsql as $$
declare v_detail text;
begin
  delete from auth.users where id = p_user;
  return null;
exception when others then
  get stacked diagnostics v_detail = pg_exception_detail;
  return v_detail;
end $$;
select matches(pg_temp.deletion_error(tests.get_user_id('alice@hardening.test')),
  'acme-hardening-test \(' || :'acme_id' || '\).*update_member_role',
  'the error names Acme by slug and id and says how to unblock it');
select lives_ok(format($$ delete from auth.users where id = %L $$, tests.get_user_id('frank@hardening.test')),
  'a user who owns nothing is deleted');
insert into public.organization_members (organization_id, user_id, role)
values (:'acme_id', tests.get_user_id('bob@hardening.test'), 'owner');
select lives_ok(format($$ delete from auth.users where id = %L $$, tests.get_user_id('alice@hardening.test')),
  'once bob is an owner too, alice can be deleted');

-- ---------------------------------------------------------------------------------------------
-- Free organizations
-- ---------------------------------------------------------------------------------------------
select tests.create_user('gina@hardening.test');
select tests.authenticate_as('gina@hardening.test');
select public.create_organization('G1', 'g1-hardening-test') as g1_id \gset
select public.create_organization('G2', 'g2-hardening-test') as g2_id \gset
select public.create_organization('G3', 'g3-hardening-test') as g3_id \gset
select throws_ok($$ select public.create_organization('G4', 'g4-hardening-test') $$, 'P0001', 'free_organization_limit',
  'a fourth organization on the free plan is refused (free_organizations_per_user = 3)');
select tests.reset_role();
select is((select count(*)::int from public.organizations where slug = 'g4-hardening-test'), 0, 'and was not created');

select lives_ok(format($$ delete from public.organizations where id = %L $$, :'g3_id'), 'G3 is deleted (its purge, in short)');
select tests.authenticate_as('gina@hardening.test');
select public.create_organization('G3 again', 'g3-hardening-test') as g3_again_id \gset
select is((public.get_credit_balances(:'g3_again_id') -> 'ai' ->> 'available')::int, 0,
  're-creating G3 under the same slug grants no second free allocation');
select is((select count(*)::int from public.credit_ledger where organization_id = :'g3_again_id' and kind = 'grant'), 0,
  'nor any grant entry');
select is((public.get_credit_balances(:'g2_id') -> 'ai' ->> 'available')::int, 200, 'G2 kept its free allocation');
select tests.reset_role();
select ok((select plan_key = 'starter' and period_end > now() from public.organization_plans where organization_id = :'g3_again_id'),
  'the re-created organization is on starter, its allocation coming with the next period');
select private.renew_credit_periods(now() + interval '1 month' + interval '1 minute');
select is((select sum(amount)::int from public.credit_grants where organization_id = :'g3_again_id' and pool_key = 'ai'), 200,
  'the next period grants it the starter allocation like any other');

select tests.authenticate_as_service_role();
select lives_ok($$ insert into public.organizations (name, slug, created_by) values ('G5', 'g5-hardening-test', tests.get_user_id('gina@hardening.test')) $$,
  'the service role (provisioning) is not limited');
select tests.reset_role();

update public.organization_plans set plan_key = 'premium'
where organization_id = :'g1_id';
select tests.authenticate_as('gina@hardening.test');
select lives_ok($$ select public.create_organization('G6', 'g6-hardening-test') $$,
  'with one organization on a paid plan, gina may create another free one');
select tests.reset_role();

select * from finish();
rollback;
