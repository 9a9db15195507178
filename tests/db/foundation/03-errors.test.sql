-- 03 The error catalogue: every error our SQL raises on purpose goes through private.raise with a
-- code the catalogue lists; the class fixes the SQLSTATE and the HTTP status; an unknown code is
-- refused. The checks below read the functions as the database holds them, so a migration that
-- raises a code directly or raises an uncatalogued one fails here.
begin;
select plan(14);

select set_eq($$ select class from private.error_classes $$,
  array['invalid_input', 'not_authenticated', 'not_authorized', 'not_found', 'conflict', 'rule', 'rate_limited', 'unavailable'],
  'eight classes: invalid input, not authenticated, not authorized, not found, conflict, refused by a rule, rate limited, unavailable');
select is_empty($$ select class from private.error_classes where sqlstate like 'PT%' and http_status <> substr(sqlstate, 3)::int $$,
  'a PTxyz class answers HTTP xyz, as PostgREST does');
select results_eq($$ select sqlstate, http_status from private.error_classes where class in ('invalid_input', 'not_authorized', 'rule') order by class $$,
  $$ values ('22023', 400), ('42501', 403), ('P0001', 400) $$,
  'the other three keep the SQLSTATEs PostgREST answers 400, 403 and 400 to');
select cmp_ok((select count(*)::int from private.error_codes), '>=', 40, 'the catalogue lists every code (40 and more)');

select throws_ok($$ select private.raise('slug_taken', 'The slug acme is taken.') $$, 'PT409', 'slug_taken',
  'private.raise raises the code as the message with its class''s SQLSTATE');
create function pg_temp.detail_of(p_sql text) returns text language plpgsql as $$
declare v_detail text;
begin
  execute p_sql;
  return null;
exception when others then
  get stacked diagnostics v_detail = pg_exception_detail;
  return v_detail;
end $$;
select is(pg_temp.detail_of($$ select private.raise('slug_taken', 'The slug acme is taken.') $$), 'The slug acme is taken.',
  'and the human text as the detail');
select is(pg_temp.detail_of($$ select private.raise('not_authorized') $$), '', 'a detail is optional');
select throws_like($$ select private.raise('no_such_code') $$, '%not in the error catalogue%',
  'an uncatalogued code is refused');
select throws_ok($$ select private.raise('no_such_code') $$, 'XX000', null,
  'as an internal error (a bug in our SQL), never as the caller''s');

select is_empty($$
  select p.oid::regprocedure from pg_proc p join pg_namespace n on n.oid = p.pronamespace
  where n.nspname in ('public', 'private') and p.proname <> 'raise'
    and p.prosrc ~* 'raise\s+exception\s+using'
$$, 'no function raises a coded error itself: all go through private.raise');
select is_empty($$
  select distinct m[1] from pg_proc p join pg_namespace n on n.oid = p.pronamespace,
    regexp_matches(p.prosrc, 'private\.raise\(''([a-z0-9_]+)''', 'g') as m
  where n.nspname in ('public', 'private')
  except select code from private.error_codes
$$, 'every code a function raises is in the catalogue');
select is_empty($$
  select code from private.error_codes where raised_by = 'sql'
  except
  select distinct m[1] from pg_proc p join pg_namespace n on n.oid = p.pronamespace,
    regexp_matches(p.prosrc, 'private\.raise\(''([a-z0-9_]+)''', 'g') as m
  where n.nspname in ('public', 'private')
$$, 'and every catalogued SQL code is raised somewhere (no dead entries; tests/foundation/function-errors checks the functions'' codes)');

select tests.create_user('alice@errors.test');
select tests.authenticate_as('alice@errors.test');
select throws_ok($$ select * from private.error_codes $$, '42501', 'permission denied for table error_codes',
  'signed-in users cannot read the catalogue table (the SDK carries it, generated)');
select throws_ok($$ select private.raise('last_owner') $$, 'P0001', 'last_owner',
  'but security-invoker code running as them can raise through it');
select tests.reset_role();

select * from finish();
rollback;
