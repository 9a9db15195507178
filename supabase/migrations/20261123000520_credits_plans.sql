-- =============================================================================================
-- Credits: plans (billing periods, the free plan's limits, thresholds, plan changes)
-- =============================================================================================

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

insert into private.error_codes (code, class, meaning) values
  ('plan_not_found', 'not_found', 'No active plan has this key.'),
  ('invalid_threshold', 'invalid_input', 'A threshold is from 0 to 1000000000, or null for the default.'),
  ('free_organization_limit', 'rule', 'The user owns as many organizations on a free plan as allowed.');

-- The default low-balance threshold, once: 10% of the plan's allocation for the pool.
create function private.default_low_threshold(p_plan_key text, p_pool text)
returns bigint
language sql
stable
security definer
set search_path = ''
as $$
  select coalesce((select a.amount / 10 from public.credit_plan_allocations a
                   where a.plan_key = p_plan_key and a.pool_key = p_pool), 0)
$$;
comment on function private.default_low_threshold(text, text) is 'The low-balance threshold of a pool unless overridden: 10% of the plan''s allocation.';

-- Starts a billing period: the old plan allocation expires now, the new one is granted until
-- the period's end, and the low thresholds follow the new allocation.
create function private.start_plan_period(
  p_organization_id uuid, p_plan_key text, p_period_start timestamptz, p_now timestamptz,
  p_grant_allocation boolean default true
)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_plan public.credit_plans;
  v_period_end timestamptz;
  v_pools text[];
  v_allocation record;
begin
  select * into v_plan from public.credit_plans where key = p_plan_key;
  v_period_end := p_period_start + v_plan.period;

  insert into public.organization_plans (organization_id, plan_key, period_start, period_end)
  values (p_organization_id, p_plan_key, p_period_start, v_period_end)
  on conflict (organization_id) do update
    set plan_key = excluded.plan_key, period_start = excluded.period_start, period_end = excluded.period_end;

  select array_agg(key order by key) into v_pools from public.credit_pools;
  v_pools := private.open_credit_pools(p_organization_id, v_pools, p_now);

  -- The previous allocation ends now, including credits a reservation holds (a commit still
  -- charges them; a release lets them expire). Purchases and other grants stay.
  update public.credit_grants set expires_at = p_now
  where organization_id = p_organization_id and kind = 'plan_allocation' and expires_at > p_now;

  for v_allocation in
    select pool_key, amount from public.credit_plan_allocations
    where plan_key = p_plan_key and amount > 0 and p_grant_allocation
    order by pool_key
  loop
    with g as (
      insert into public.credit_grants (organization_id, pool_key, kind, amount, remaining, expires_at, source, created_at)
      values (p_organization_id, v_allocation.pool_key, 'plan_allocation', v_allocation.amount, v_allocation.amount, v_period_end,
              format('plan:%s:%s', p_plan_key, to_char(p_period_start at time zone 'UTC', 'YYYY-MM-DD')), p_now)
      returning id
    )
    insert into public.credit_ledger (transaction_id, organization_id, pool_key, kind, amount, grant_id, actor_role, metadata, created_at)
    select gen_random_uuid(), p_organization_id, v_allocation.pool_key, 'grant', v_allocation.amount, g.id, 'system',
           jsonb_build_object('plan', p_plan_key, 'period_start', p_period_start, 'period_end', v_period_end), p_now
    from g;
  end loop;

  update public.credit_balances b
  set low_threshold = coalesce(b.low_threshold_override, private.default_low_threshold(p_plan_key, b.pool_key))
  where b.organization_id = p_organization_id;

  perform private.close_credit_pools(p_organization_id, v_pools, p_now);
end
$$;
comment on function private.start_plan_period(uuid, text, timestamptz, timestamptz, boolean) is
  'Starts a billing period on a plan: expires the old allocation, grants the new one (unless p_grant_allocation is false), resets thresholds.';

-- Free credits are bounded per user: a user may own only so many organizations on a free plan
-- (setting free_organizations_per_user), and a slug gets the free first allocation once ever,
-- so deleting and re-creating an organization does not grant it again. Organizations the
-- service role creates (operators, provisioning backends) are not limited.
insert into private.settings (key, value, description) values
  ('free_organizations_per_user', '3', 'How many organizations on a free plan one user may own; creating one more is refused (free_organization_limit).');

create table private.free_allocations (
  slug text primary key,
  organization_id uuid not null,
  user_id uuid references auth.users (id) on delete set null,
  granted_at timestamptz not null default now()
);
comment on table private.free_allocations is 'Slugs whose organization got the free first allocation; kept after the organization is deleted.';
comment on column private.free_allocations.slug is 'The organization''s slug when it was created.';
comment on column private.free_allocations.organization_id is 'The organization that got the allocation (no foreign key: it may be gone).';
comment on column private.free_allocations.user_id is 'Who created it.';
comment on column private.free_allocations.granted_at is 'When.';
alter table private.free_allocations enable row level security;
grant select on private.free_allocations to service_role;
create index free_allocations_user_id_idx on private.free_allocations (user_id);

create function private.limit_free_organizations()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_owned integer;
  v_limit integer := (private.setting('free_organizations_per_user') #>> '{}')::integer;
begin
  if new.created_by is null or private.caller_role() = 'service_role' then
    return new;
  end if;
  -- One creation at a time per user, so two racing creations cannot both pass the count.
  perform pg_advisory_xact_lock(hashtextextended('free_organizations:' || new.created_by::text, 0));
  select count(*) into v_owned
  from public.organization_members m
  join public.organization_plans op on op.organization_id = m.organization_id
  join public.credit_plans p on p.key = op.plan_key
  where m.user_id = new.created_by and m.role = 'owner' and p.is_free;
  if v_owned >= v_limit then
    perform private.raise('free_organization_limit', format('You own %s organizations on a free plan, the most allowed: upgrade or delete one first.', v_owned));
  end if;
  return new;
end
$$;
comment on function private.limit_free_organizations() is 'Trigger: refuses a user''s organization beyond free_organizations_per_user on a free plan.';

create trigger organizations_limit_free
before insert on public.organizations
for each row execute function private.limit_free_organizations();

-- Every new organization starts on starter; its first allocation is granted unless its slug had one.
create function private.start_organization_on_starter()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  insert into private.free_allocations (slug, organization_id, user_id)
  values (new.slug, new.id, new.created_by)
  on conflict (slug) do nothing;
  perform private.start_plan_period(new.id, 'starter', now(), now(), found);
  return null;
end
$$;
comment on function private.start_organization_on_starter() is
  'Trigger: puts a new organization on the starter plan, with its first allocation unless its slug got one before.';

create trigger organizations_start_on_starter
after insert on public.organizations
for each row execute function private.start_organization_on_starter();

-- A new pool gets a balance row in every organization at once.
create function private.add_pool_balances()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  insert into public.credit_balances (organization_id, pool_key)
  select o.id, new.key from public.organizations o
  on conflict do nothing;
  return null;
end
$$;
comment on function private.add_pool_balances() is 'Trigger: creates the balance rows of a new pool.';

create trigger credit_pools_add_balances
after insert on public.credit_pools
for each row execute function private.add_pool_balances();


-- ---------------------------------------------------------------------------------------------
-- Changing plans and thresholds
-- ---------------------------------------------------------------------------------------------
create function private.change_plan(p_organization_id uuid, p_plan_key text, p_now timestamptz)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform private.require_service_role('Only the service role (billing) changes plans.');
  perform private.require_organization(p_organization_id);
  if not exists (select 1 from public.credit_plans where key = p_plan_key and is_active) then
    perform private.raise('plan_not_found', format('No active plan %L.', p_plan_key));
  end if;
  perform private.start_plan_period(p_organization_id, p_plan_key, p_now, p_now);
  return (select jsonb_build_object('success', true, 'plan', plan_key, 'period_start', period_start, 'period_end', period_end)
          from public.organization_plans where organization_id = p_organization_id);
end
$$;
comment on function private.change_plan(uuid, text, timestamptz) is 'The body of change_plan.';
grant execute on function private.change_plan(uuid, text, timestamptz) to service_role;

create function public.change_plan(p_organization_id uuid, p_plan_key text, p_now timestamptz default now())
returns jsonb
language sql
security invoker
set search_path = ''
as $$
  select private.change_plan(p_organization_id, p_plan_key, p_now)
$$;
comment on function public.change_plan(uuid, text, timestamptz) is
  'Moves an organization to a plan (service role: billing calls it): the rest of the old allocation expires, a new period starts with the new allocation.';
grant execute on function public.change_plan(uuid, text, timestamptz) to service_role;

create function private.set_credit_low_threshold(p_organization_id uuid, p_pool text, p_threshold bigint)
returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform private.authorize(p_organization_id, '{owner,admin}');
  if p_threshold is not null and (p_threshold < 0 or p_threshold > 1000000000) then
    perform private.raise('invalid_threshold', 'A threshold is from 0 to 1000000000, or null for the default.');
  end if;
  update public.credit_balances b
  set low_threshold_override = p_threshold,
      low_threshold = coalesce(p_threshold, private.default_low_threshold(
        (select op.plan_key from public.organization_plans op where op.organization_id = b.organization_id), b.pool_key))
  where b.organization_id = p_organization_id and b.pool_key = p_pool;
  if not found then
    perform private.raise('pool_not_found', format('No credit pool %L.', p_pool));
  end if;
end
$$;
comment on function private.set_credit_low_threshold(uuid, text, bigint) is 'The body of set_credit_low_threshold.';
grant execute on function private.set_credit_low_threshold(uuid, text, bigint) to authenticated, service_role;

create function public.set_credit_low_threshold(p_organization_id uuid, p_pool text, p_threshold bigint)
returns void
language sql
security invoker
set search_path = ''
as $$
  select private.set_credit_low_threshold(p_organization_id, p_pool, p_threshold)
$$;
comment on function public.set_credit_low_threshold(uuid, text, bigint) is
  'Sets the balance below which credits.low is emitted for a pool (owners and admins); null restores 10% of the allocation.';
grant execute on function public.set_credit_low_threshold(uuid, text, bigint) to authenticated, service_role;

