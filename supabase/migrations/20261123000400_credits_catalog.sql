-- =============================================================================================
-- Credits catalogue: pools, plans with their allocations, metered actions with their costs
-- =============================================================================================

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

-- Everything here is data: adding a pool, a plan or an action is an insert (in Studio or a
-- seed), not a migration. Signed-in users read the catalogue (to show prices and plans);
-- only the service role and the database owner write it.

-- ---------------------------------------------------------------------------------------------
-- Pools
-- ---------------------------------------------------------------------------------------------
create table public.credit_pools (
  key text primary key check (key ~ '^[a-z][a-z0-9_]{0,31}$'),
  name text not null check (char_length(name) between 1 and 100),
  description text,
  sort_order integer not null default 0,
  created_at timestamptz not null default now()
);
comment on table public.credit_pools is 'Kinds of prepaid credits an organization holds (ai, whatsapp, email, sms). Adding a pool is an insert.';
comment on column public.credit_pools.key is 'Stable identifier used by actions, plans and the API.';
comment on column public.credit_pools.name is 'Display name.';
comment on column public.credit_pools.description is 'What the credits of this pool pay for.';
comment on column public.credit_pools.sort_order is 'Display order.';
comment on column public.credit_pools.created_at is 'When the pool was added.';

-- The catalogue is read by signed-in users and written by the service role (which bypasses RLS)
-- and the database owner (Studio, migrations).
grant select on public.credit_pools to authenticated;
grant select, insert, update, delete on public.credit_pools to service_role;
alter table public.credit_pools enable row level security;
create policy "Signed-in users can read the credit pools"
on public.credit_pools for select to authenticated using (true);

insert into public.credit_pools (key, name, description, sort_order) values
  ('ai', 'AI', 'AI replies, assistants, generation and automations', 10),
  ('whatsapp', 'WhatsApp', 'WhatsApp messages sent', 20),
  ('email', 'Email', 'Emails sent', 30),
  ('sms', 'SMS', 'SMS messages sent', 40);

-- ---------------------------------------------------------------------------------------------
-- Plans and their allocations per pool and billing period
-- ---------------------------------------------------------------------------------------------
create table public.credit_plans (
  key text primary key check (key ~ '^[a-z][a-z0-9_]{0,31}$'),
  name text not null check (char_length(name) between 1 and 100),
  description text,
  period interval not null default interval '1 month' check (period >= interval '1 day'),
  is_active boolean not null default true,
  is_free boolean not null default false,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table public.credit_plans is 'Plans an organization can be on; each grants an allocation per pool every billing period.';
comment on column public.credit_plans.key is 'Stable identifier (starter, premium, ...).';
comment on column public.credit_plans.name is 'Display name.';
comment on column public.credit_plans.description is 'What the plan offers.';
comment on column public.credit_plans.period is 'Length of a billing period; the allocation expires at its end.';
comment on column public.credit_plans.is_active is 'Inactive plans keep their organizations but cannot be chosen anew.';
comment on column public.credit_plans.is_free is 'Nobody pays for it: how many such organizations one user may own is limited (setting free_organizations_per_user).';
comment on column public.credit_plans.created_at is 'When the plan was added.';
comment on column public.credit_plans.updated_at is 'When the plan last changed.';

grant select on public.credit_plans to authenticated;
grant select, insert, update, delete on public.credit_plans to service_role;
alter table public.credit_plans enable row level security;
create policy "Signed-in users can read the plans"
on public.credit_plans for select to authenticated using (true);

create trigger credit_plans_set_updated_at
before update on public.credit_plans
for each row execute function private.set_updated_at();

create table public.credit_plan_allocations (
  plan_key text not null references public.credit_plans (key) on update cascade on delete cascade,
  pool_key text not null references public.credit_pools (key) on update cascade on delete restrict,
  amount bigint not null check (amount >= 0),
  allows_overage boolean not null default false,
  overage_cap bigint not null default 0 check (overage_cap between 0 and 1000000000),
  primary key (plan_key, pool_key)
);
comment on table public.credit_plan_allocations is 'Credits a plan grants per pool per billing period, and whether usage beyond them is billed as overage.';
comment on column public.credit_plan_allocations.plan_key is 'The plan.';
comment on column public.credit_plan_allocations.pool_key is 'The pool.';
comment on column public.credit_plan_allocations.amount is 'Credits granted at the start of every period; they expire at its end.';
comment on column public.credit_plan_allocations.allows_overage is 'Whether a reservation may be committed beyond its hold and the available credits, the excess recorded as overage for billing instead of refused. consume_credits_rpc never overdraws.';
comment on column public.credit_plan_allocations.overage_cap is 'Most overage an organization may run up in this pool per billing period; a commit beyond it is refused (overage_cap_exceeded).';

grant select on public.credit_plan_allocations to authenticated;
grant select, insert, update, delete on public.credit_plan_allocations to service_role;
alter table public.credit_plan_allocations enable row level security;
create policy "Signed-in users can read the plan allocations"
on public.credit_plan_allocations for select to authenticated using (true);

create index credit_plan_allocations_pool_key_idx on public.credit_plan_allocations (pool_key);

insert into public.credit_plans (key, name, description, is_free) values
  ('starter', 'Starter', 'For small teams getting started', true),
  ('premium', 'Premium', 'For teams that automate at scale', false);

insert into public.credit_plan_allocations (plan_key, pool_key, amount, allows_overage, overage_cap) values
  ('starter', 'ai', 200, false, 0),
  ('starter', 'whatsapp', 150, false, 0),
  ('starter', 'email', 1000, false, 0),
  ('starter', 'sms', 50, false, 0),
  ('premium', 'ai', 1500, true, 1500),
  ('premium', 'whatsapp', 1200, true, 1200),
  ('premium', 'email', 20000, true, 20000),
  ('premium', 'sms', 500, true, 500);

-- ---------------------------------------------------------------------------------------------
-- Actions and what they cost, per pool
-- ---------------------------------------------------------------------------------------------
create table public.credit_actions (
  key text primary key check (key ~ '^[a-z][a-z0-9_]{0,63}$'),
  name text not null check (char_length(name) between 1 and 100),
  description text,
  is_enabled boolean not null default true,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table public.credit_actions is 'Metered actions that consume credits. Unknown or disabled actions are refused by consume_credits_rpc.';
comment on column public.credit_actions.key is 'Stable identifier passed as p_action_type.';
comment on column public.credit_actions.name is 'Display name.';
comment on column public.credit_actions.description is 'What the action is.';
comment on column public.credit_actions.is_enabled is 'Disabled actions are refused (action_disabled).';
comment on column public.credit_actions.created_at is 'When the action was added.';
comment on column public.credit_actions.updated_at is 'When the action last changed.';

grant select on public.credit_actions to authenticated;
grant select, insert, update, delete on public.credit_actions to service_role;
alter table public.credit_actions enable row level security;
create policy "Signed-in users can read the actions"
on public.credit_actions for select to authenticated using (true);

create trigger credit_actions_set_updated_at
before update on public.credit_actions
for each row execute function private.set_updated_at();

create table public.credit_action_costs (
  action_key text not null references public.credit_actions (key) on update cascade on delete cascade,
  pool_key text not null references public.credit_pools (key) on update cascade on delete restrict,
  amount bigint not null check (amount > 0 and amount <= 1000000),
  primary key (action_key, pool_key)
);
comment on table public.credit_action_costs is 'Credits one unit of an action costs in each pool; an action may cost several pools at once (all or nothing).';
comment on column public.credit_action_costs.action_key is 'The action.';
comment on column public.credit_action_costs.pool_key is 'A pool the action draws from.';
comment on column public.credit_action_costs.amount is 'Credits per unit of the action.';

grant select on public.credit_action_costs to authenticated;
grant select, insert, update, delete on public.credit_action_costs to service_role;
alter table public.credit_action_costs enable row level security;
create policy "Signed-in users can read the action costs"
on public.credit_action_costs for select to authenticated using (true);

create index credit_action_costs_pool_key_idx on public.credit_action_costs (pool_key);

insert into public.credit_actions (key, name, description) values
  ('ai_chat', 'AI chat reply', 'One AI chat reply'),
  ('ai_assistant', 'AI assistant', 'One AI assistant answer'),
  ('form_generation', 'Form generation', 'One form generated by AI'),
  ('automation_run', 'Automation run', 'One run of an AI automation'),
  ('whatsapp_message', 'WhatsApp message', 'One WhatsApp message sent'),
  ('email_send', 'Email', 'One email sent'),
  ('bulk_email', 'Bulk email batch', 'One bulk email batch'),
  ('sms_send', 'SMS', 'One SMS sent');

insert into public.credit_action_costs (action_key, pool_key, amount) values
  ('ai_chat', 'ai', 1),
  ('ai_assistant', 'ai', 1),
  ('form_generation', 'ai', 5),
  ('automation_run', 'ai', 2),
  ('whatsapp_message', 'whatsapp', 1),
  ('email_send', 'email', 1),
  ('bulk_email', 'email', 10),
  ('sms_send', 'sms', 1);
