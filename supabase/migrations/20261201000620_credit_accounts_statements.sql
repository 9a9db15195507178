-- =============================================================================================
-- Credit accounts: statements billed through Stripe, reminders, overdue handling, limit rules
-- =============================================================================================

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

-- On its statement day an account's completed, unbilled transactions close into a statement
-- (credit-statements-close); credit-statements-bill bills each pending one as a Stripe invoice
-- with one item per pool or purchase (idempotency keys per statement and line, so a retry or a
-- crash midway never bills twice), charged to the account's card or sent with its due date;
-- stripe-webhook marks it paid (a payment transaction) or failed. credit-accounts-dunning
-- reminds billing members before the due date, marks statements overdue after it, suspends the
-- account after credit_suspend_after and defaults it after credit_default_after. Payments move the
-- limit by the rules of credit_limit_rules. Every change is an event and a history entry.

create type public.credit_statement_status as enum ('pending', 'billed', 'paid', 'failed', 'void');
comment on type public.credit_statement_status is
  'pending (closed, not billed yet), billed (a Stripe invoice is out), paid, failed (a payment attempt failed; Stripe retries), void.';

create table public.credit_statements (
  id uuid primary key default gen_random_uuid(),
  organization_id uuid not null references public.credit_accounts (organization_id) on delete cascade,
  period_start timestamptz not null,
  period_end timestamptz not null,
  due_date timestamptz not null,
  currency text not null check (currency ~ '^[a-z]{3}$'),
  total bigint not null,
  status public.credit_statement_status not null default 'pending',
  collection_method text check (collection_method in ('charge_automatically', 'send_invoice')),
  stripe_invoice_id text unique check (stripe_invoice_id ~ '^in_[A-Za-z0-9_]{1,64}$'),
  hosted_invoice_url text check (char_length(hosted_invoice_url) <= 2000),
  bill_attempts integer not null default 0,
  last_error text check (char_length(last_error) <= 2000),
  billed_at timestamptz,
  paid_at timestamptz,
  reminded_at timestamptz,
  overdue_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (organization_id, period_end),
  check (period_end > period_start)
);
comment on table public.credit_statements is 'What a credit account owes for a period, billed as one Stripe invoice.';
comment on column public.credit_statements.id is 'The statement.';
comment on column public.credit_statements.organization_id is 'The account.';
comment on column public.credit_statements.period_start is 'Start of the period it closes.';
comment on column public.credit_statements.period_end is 'Its end (the statement day).';
comment on column public.credit_statements.due_date is 'When it must be paid (period end + payment terms).';
comment on column public.credit_statements.currency is 'The account''s currency.';
comment on column public.credit_statements.total is 'The sum of its transactions, in minor units.';
comment on column public.credit_statements.status is 'pending, billed, paid, failed or void.';
comment on column public.credit_statements.collection_method is 'charge_automatically (the account''s card) or send_invoice (paid by the due date).';
comment on column public.credit_statements.stripe_invoice_id is 'The Stripe invoice that bills it.';
comment on column public.credit_statements.hosted_invoice_url is 'Stripe''s page to pay it.';
comment on column public.credit_statements.bill_attempts is 'How often billing it through Stripe failed.';
comment on column public.credit_statements.last_error is 'The last failure billing it.';
comment on column public.credit_statements.billed_at is 'When it was billed.';
comment on column public.credit_statements.paid_at is 'When it was paid.';
comment on column public.credit_statements.reminded_at is 'When its reminder went out.';
comment on column public.credit_statements.overdue_at is 'When it was found overdue.';
comment on column public.credit_statements.created_at is 'When it was closed.';
comment on column public.credit_statements.updated_at is 'When it last changed.';
grant select on public.credit_statements to authenticated;
grant select on public.credit_statements to service_role;
alter table public.credit_statements enable row level security;
create policy "Owners and billing members read their credit statements"
on public.credit_statements for select to authenticated
using (organization_id in (select private.organization_ids_with_role('{owner,billing}')));
create index credit_statements_open_idx on public.credit_statements (due_date) where status in ('billed', 'failed');
create index credit_statements_pending_idx on public.credit_statements (created_at) where status = 'pending';

create trigger credit_statements_set_updated_at
before update on public.credit_statements
for each row execute function private.set_updated_at();

alter table public.credit_account_transactions
  add constraint credit_account_transactions_statement_id_fkey foreign key (statement_id) references public.credit_statements (id) not valid;
-- NOT VALID skips only the rows already there, whose column is new and empty; every new row is checked.

-- ---------------------------------------------------------------------------------------------
-- Closing statements
-- ---------------------------------------------------------------------------------------------
-- The statement day of p_now's month, at midnight UTC.
create function private.statement_date(p_day integer, p_now timestamptz)
returns timestamptz
language sql
immutable
set search_path = ''
as $$
  select make_timestamptz(extract(year from p_now at time zone 'UTC')::integer, extract(month from p_now at time zone 'UTC')::integer, p_day, 0, 0, 0, 'UTC')
$$;
comment on function private.statement_date(integer, timestamptz) is 'The statement day of the month of p_now, at midnight UTC.';

create function private.close_credit_statements(p_now timestamptz default now(), p_limit integer default 500)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_account record;
  v_end timestamptz;
  v_statement public.credit_statements;
  v_count integer := 0;
begin
  for v_account in
    select a.* from public.credit_accounts a
    where a.status <> 'closed' and private.statement_date(a.statement_day, p_now) <= p_now
      and coalesce(a.last_statement_at, '-infinity') < private.statement_date(a.statement_day, p_now)
      and a.opened_at < private.statement_date(a.statement_day, p_now)
    order by a.organization_id
    limit p_limit
    for update of a skip locked
  loop
    v_end := private.statement_date(v_account.statement_day, p_now);
    insert into public.credit_statements (organization_id, period_start, period_end, due_date, currency, total)
    values (v_account.organization_id, coalesce(v_account.last_statement_at, v_account.opened_at), v_end,
            v_end + make_interval(days => v_account.payment_terms_days), v_account.currency, 0)
    returning * into v_statement;
    with billed as (
      update public.credit_account_transactions t set statement_id = v_statement.id
      where t.organization_id = v_account.organization_id and t.statement_id is null and t.status = 'completed'
        and t.type in ('charge', 'fee', 'adjustment', 'refund') and t.created_at < v_end
      returning t.amount
    )
    update public.credit_statements s set total = coalesce((select sum(amount) from billed), 0),
      status = (case when coalesce((select sum(amount) from billed), 0) > 0 then 'pending' else 'paid' end)::public.credit_statement_status,
      paid_at = case when coalesce((select sum(amount) from billed), 0) > 0 then null else p_now end
    where s.id = v_statement.id
    returning * into v_statement;
    update public.credit_accounts set last_statement_at = v_end where organization_id = v_account.organization_id;
    perform private.append_domain_event(v_account.organization_id, 'credit_statement.closed',
      jsonb_build_object('statement_id', v_statement.id, 'total', v_statement.total, 'due_date', v_statement.due_date));
    v_count := v_count + 1;
  end loop;
  return v_count;
end
$$;
comment on function private.close_credit_statements(timestamptz, integer) is
  'Closes the statements due on p_now (each account''s statement day): its completed unbilled transactions; returns how many.';
grant execute on function private.close_credit_statements(timestamptz, integer) to service_role;

-- ---------------------------------------------------------------------------------------------
-- Billing them (credit-statements-bill does the Stripe side)
-- ---------------------------------------------------------------------------------------------
create function private.statements_to_bill(p_limit integer default 20)
returns table (statement_id uuid, organization_id uuid, total bigint, currency text, due_date timestamptz,
               stripe_invoice_id text, payment_method text, period_start timestamptz, period_end timestamptz)
language sql
stable
security definer
set search_path = ''
as $$
  select s.id, s.organization_id, s.total, s.currency, s.due_date, s.stripe_invoice_id, a.stripe_payment_method_id,
         s.period_start, s.period_end
  from public.credit_statements s join public.credit_accounts a on a.organization_id = s.organization_id
  where s.status = 'pending' and s.bill_attempts < 10
  order by s.bill_attempts, s.created_at
  limit p_limit
$$;
comment on function private.statements_to_bill(integer) is 'Pending statements for credit-statements-bill, fresh ones first.';
grant execute on function private.statements_to_bill(integer) to service_role;

-- The invoice items of a statement: overage per pool, each purchase or pack, fees, adjustments,
-- refunds, each with its total.
create function private.credit_statement_lines(p_statement_id uuid)
returns table (line integer, description text, amount bigint)
language sql
stable
security definer
set search_path = ''
as $$
  select (row_number() over (order by min(t.created_at), grouping))::integer, min(description_of), sum(t.amount)::bigint
  from (
    select t.*,
      case when t.source_type = 'overage' then 'overage:' || (t.metadata ->> 'pool') else t.type::text || ':' || coalesce(t.source_id, t.id::text) end as grouping,
      case when t.source_type = 'overage'
           then format('%s overage', coalesce((select p.name from public.credit_pools p where p.key = t.metadata ->> 'pool'), t.metadata ->> 'pool'))
           else t.description end as description_of
    from public.credit_account_transactions t where t.statement_id = p_statement_id
  ) t
  group by grouping
  having sum(t.amount) <> 0
  order by 1
$$;
comment on function private.credit_statement_lines(uuid) is 'A statement''s invoice items: overage per pool, purchases, fees, adjustments, refunds.';
grant execute on function private.credit_statement_lines(uuid) to service_role;

-- Progress of billing: the invoice once made (so a retry finds it), then billed.
create function private.record_statement_invoice(p_statement_id uuid, p_invoice_id text)
returns void
language sql
security definer
set search_path = ''
as $$
  update public.credit_statements set stripe_invoice_id = p_invoice_id where id = p_statement_id and stripe_invoice_id is null
$$;
comment on function private.record_statement_invoice(uuid, text) is 'Remembers a statement''s Stripe invoice as soon as it exists.';
grant execute on function private.record_statement_invoice(uuid, text) to service_role;

create function private.record_statement_billed(p_statement_id uuid, p_collection text, p_hosted_url text, p_now timestamptz default now())
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_statement public.credit_statements;
begin
  update public.credit_statements set status = 'billed', collection_method = p_collection, hosted_invoice_url = p_hosted_url,
    billed_at = p_now, last_error = null
  where id = p_statement_id and status = 'pending'
  returning * into v_statement;
  if v_statement.id is not null then
    perform private.append_domain_event(v_statement.organization_id, 'credit_statement.billed',
      jsonb_build_object('statement_id', v_statement.id, 'total', v_statement.total, 'stripe_invoice_id', v_statement.stripe_invoice_id));
  end if;
end
$$;
comment on function private.record_statement_billed(uuid, text, text, timestamptz) is 'Marks a statement billed (its invoice is out).';
grant execute on function private.record_statement_billed(uuid, text, text, timestamptz) to service_role;

create function private.record_statement_bill_failure(p_statement_id uuid, p_error text)
returns void
language sql
security definer
set search_path = ''
as $$
  update public.credit_statements set bill_attempts = bill_attempts + 1, last_error = left(p_error, 2000) where id = p_statement_id
$$;
comment on function private.record_statement_bill_failure(uuid, text) is 'Counts a failed attempt to bill a statement.';
grant execute on function private.record_statement_bill_failure(uuid, text) to service_role;

-- ---------------------------------------------------------------------------------------------
-- Payment (stripe-webhook) and the limit rules
-- ---------------------------------------------------------------------------------------------
-- The limit rules after a statement was paid: on time raises the streak and, every N on time,
-- the limit; late resets the streak and lowers the limit.
create function private.apply_credit_limit_rules(p_organization_id uuid, p_on_time boolean, p_now timestamptz)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_rules jsonb := private.setting('credit_limit_rules');
  v_account public.credit_accounts := private.lock_credit_account(p_organization_id);
  v_limit bigint;
begin
  if p_on_time then
    update public.credit_accounts set on_time_streak = on_time_streak + 1 where organization_id = p_organization_id
    returning * into v_account;
    if v_account.on_time_streak >= (v_rules ->> 'raise_after_on_time')::integer then
      v_limit := least(v_account.credit_limit + v_account.credit_limit * (v_rules ->> 'raise_percent')::integer / 100,
                       greatest(v_account.credit_limit, (v_rules ->> 'raise_max')::bigint));
      update public.credit_accounts set on_time_streak = 0 where organization_id = p_organization_id;
      perform private.set_credit_limit_internal(p_organization_id, v_limit,
        format('%s statements paid on time in a row: the limit rises by %s%%', v_rules ->> 'raise_after_on_time', v_rules ->> 'raise_percent'),
        'rule', p_now);
    end if;
  else
    update public.credit_accounts set on_time_streak = 0 where organization_id = p_organization_id;
    perform private.set_credit_limit_internal(p_organization_id,
      v_account.credit_limit - v_account.credit_limit * (v_rules ->> 'lower_percent_when_late')::integer / 100,
      format('A statement was paid late: the limit falls by %s%%', v_rules ->> 'lower_percent_when_late'), 'rule', p_now);
  end if;
end
$$;
comment on function private.apply_credit_limit_rules(uuid, boolean, timestamptz) is 'Moves a credit limit after a payment, by credit_limit_rules.';

-- A statement's invoice as fetched from Stripe: paid records the payment (once, keyed by the
-- invoice), applies the limit rules and, once nothing is overdue, reactivates a suspended or
-- defaulted account; a failed payment marks the statement failed (Stripe retries).
create function private.apply_statement_invoice(p_invoice jsonb, p_payment_failed boolean, p_now timestamptz default now())
returns text
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_statement public.credit_statements;
  v_paid_at timestamptz := coalesce(private.stripe_time(p_invoice #>> '{status_transitions,paid_at}'), p_now);
  v_account public.credit_accounts;
begin
  select * into v_statement from public.credit_statements
  where id::text = p_invoice #>> '{metadata,credit_statement_id}' for update;
  if v_statement.id is null then
    return 'ignored';
  end if;
  if p_invoice ->> 'status' = 'paid' and v_statement.status <> 'paid' then
    perform private.post_credit_transaction(v_statement.organization_id, 'payment',
      greatest(coalesce((p_invoice ->> 'amount_paid')::bigint, v_statement.total), 1),
      format('Statement of %s paid', to_char(v_statement.period_end at time zone 'UTC', 'YYYY-MM-DD')),
      'statement', p_invoice ->> 'id', 'stripe-payment:' || (p_invoice ->> 'id'),
      jsonb_build_object('statement_id', v_statement.id), p_now);
    update public.credit_statements set status = 'paid', paid_at = v_paid_at, stripe_invoice_id = coalesce(stripe_invoice_id, p_invoice ->> 'id')
    where id = v_statement.id;
    perform private.append_domain_event(v_statement.organization_id, 'credit_statement.paid',
      jsonb_build_object('statement_id', v_statement.id, 'on_time', v_paid_at <= v_statement.due_date));
    perform private.apply_credit_limit_rules(v_statement.organization_id, v_paid_at <= v_statement.due_date, p_now);
    select * into v_account from public.credit_accounts where organization_id = v_statement.organization_id;
    if v_account.status in ('suspended', 'defaulted') and not exists (
         select 1 from public.credit_statements s where s.organization_id = v_statement.organization_id
           and s.status in ('billed', 'failed') and s.due_date < p_now) then
      perform private.set_credit_status_internal(v_statement.organization_id, 'active', 'The overdue statements are paid', 'system', p_now);
    end if;
  elsif p_payment_failed and p_invoice ->> 'status' = 'open' and v_statement.status = 'billed' then
    update public.credit_statements set status = 'failed' where id = v_statement.id;
    perform private.append_domain_event(v_statement.organization_id, 'credit_statement.payment_failed',
      jsonb_build_object('statement_id', v_statement.id, 'stripe_invoice_id', p_invoice ->> 'id'));
  end if;
  return 'processed';
end
$$;
comment on function private.apply_statement_invoice(jsonb, boolean, timestamptz) is
  'Applies a statement''s Stripe invoice: paid (payment transaction once, limit rules, reactivation) or a failed payment.';

-- stripe-webhook applies every invoice through sync_stripe_invoice: statements' invoices are
-- mirrored like any other and then settle their statement; they take no part in the
-- subscription's dunning (the credit account has its own).
create or replace function private.sync_stripe_invoice(p_invoice jsonb, p_payment_failed boolean default false, p_now timestamptz default now())
returns text
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_org uuid := private.organization_of_customer(private.stripe_id(p_invoice -> 'customer'));
  v_subscription text := private.stripe_invoice_subscription(p_invoice);
  v_line record;
  v_plan text;
  v_status public.invoice_status := (p_invoice ->> 'status')::public.invoice_status;
  v_period_end timestamptz;
  v_superseded boolean;
begin
  perform private.require_service_role('Only stripe-webhook applies Stripe state.');
  if v_org is null then
    return 'ignored';
  end if;
  select * into v_line from private.stripe_invoice_price_line(p_invoice);
  insert into public.invoices (organization_id, stripe_invoice_id, stripe_subscription_id, number, status, billing_reason,
    currency, subtotal, tax, total, amount_due, amount_paid, amount_remaining, period_start, period_end,
    hosted_invoice_url, invoice_pdf_url, attempt_count, next_payment_attempt, paid_at, stripe_created, synced_at)
  values (v_org, p_invoice ->> 'id', v_subscription, p_invoice ->> 'number', v_status, p_invoice ->> 'billing_reason',
    lower(p_invoice ->> 'currency'), coalesce((p_invoice ->> 'subtotal')::bigint, 0),
    coalesce((p_invoice ->> 'tax')::bigint, (select sum((t ->> 'amount')::bigint) from jsonb_array_elements(p_invoice -> 'total_taxes') t)),
    coalesce((p_invoice ->> 'total')::bigint, 0), coalesce((p_invoice ->> 'amount_due')::bigint, 0),
    coalesce((p_invoice ->> 'amount_paid')::bigint, 0), coalesce((p_invoice ->> 'amount_remaining')::bigint, 0),
    v_line.period_start, v_line.period_end, p_invoice ->> 'hosted_invoice_url', p_invoice ->> 'invoice_pdf',
    coalesce((p_invoice ->> 'attempt_count')::integer, 0), private.stripe_time(p_invoice ->> 'next_payment_attempt'),
    private.stripe_time(p_invoice #>> '{status_transitions,paid_at}'), private.stripe_time(p_invoice ->> 'created'), p_now)
  on conflict (stripe_invoice_id) do update set
    number = excluded.number, status = excluded.status, billing_reason = excluded.billing_reason,
    subtotal = excluded.subtotal, tax = excluded.tax, total = excluded.total, amount_due = excluded.amount_due,
    amount_paid = excluded.amount_paid, amount_remaining = excluded.amount_remaining,
    period_start = excluded.period_start, period_end = excluded.period_end,
    hosted_invoice_url = excluded.hosted_invoice_url, invoice_pdf_url = excluded.invoice_pdf_url,
    attempt_count = excluded.attempt_count, next_payment_attempt = excluded.next_payment_attempt,
    paid_at = excluded.paid_at, synced_at = excluded.synced_at;

  if p_invoice #>> '{metadata,credit_statement_id}' is not null then
    return private.apply_statement_invoice(p_invoice, p_payment_failed, p_now);
  end if;

  if v_status = 'paid' then
    v_plan := (select key from public.credit_plans where stripe_price_id = v_line.price_id);
    if v_subscription is not null and v_plan is not null and v_line.period_start is not null then
      -- A proration pays to the subscription's period end; a full period to the line's end.
      v_period_end := greatest(v_line.period_end, (select current_period_end from public.subscriptions where stripe_subscription_id = v_subscription));
      -- An invoice of an older period arriving after a newer one's is recorded, not applied: its
      -- period is over, and applying it would expire the current allocation.
      v_superseded := exists (select 1 from private.billing_invoice_grants g
                              where g.organization_id = v_org and g.period_start > v_line.period_start);
      insert into private.billing_invoice_grants (stripe_invoice_id, organization_id, plan_key, period_start, period_end)
      values (p_invoice ->> 'id', v_org, v_plan, v_line.period_start, coalesce(v_period_end, v_line.period_end))
      on conflict (stripe_invoice_id) do nothing;
      if found and not v_superseded then
        perform private.start_plan_period(v_org, v_plan, v_line.period_start, p_now, true, coalesce(v_period_end, v_line.period_end));
        perform private.append_domain_event(v_org, 'billing.allocation_granted',
          jsonb_build_object('invoice', p_invoice ->> 'id', 'plan', v_plan, 'period_start', v_line.period_start, 'period_end', coalesce(v_period_end, v_line.period_end)));
      end if;
    end if;
    -- Good standing again once no subscription invoice whose payment failed is still open (an
    -- older paid invoice arriving late does not lift a newer failure).
    if not exists (select 1 from public.invoices i where i.organization_id = v_org and i.status = 'open' and i.attempt_count > 0
                   and i.stripe_subscription_id is not null) then
      perform private.set_billing_standing(v_org, 'good', jsonb_build_object('invoice', p_invoice ->> 'id'), p_now);
    end if;
  elsif p_payment_failed and v_status = 'open' and v_subscription is not null then
    if (select standing from public.billing_accounts where organization_id = v_org) = 'good' then
      perform private.set_billing_standing(v_org, 'past_due', jsonb_build_object(
        'invoice', p_invoice ->> 'id', 'number', p_invoice ->> 'number', 'amount', coalesce((p_invoice ->> 'amount_due')::bigint, 0),
        'currency', lower(p_invoice ->> 'currency'), 'hosted_invoice_url', p_invoice ->> 'hosted_invoice_url',
        'next_payment_attempt', private.stripe_time(p_invoice ->> 'next_payment_attempt')), p_now);
    end if;
  end if;
  return 'processed';
end
$$;

-- ---------------------------------------------------------------------------------------------
-- Reminders, overdue, suspension, default
-- ---------------------------------------------------------------------------------------------
-- The mail of a statement event: its template and props travel in the event's `mail` field,
-- which the email consumer sends to the organization's owners and billing members.
create function private.statement_mail(p_statement public.credit_statements, p_template text, p_now timestamptz)
returns jsonb
language sql
stable
security definer
set search_path = ''
as $$
  select jsonb_build_object('template', p_template, 'roles', '{owner,billing}'::text[], 'props',
    case p_template
      when 'payment_reminder' then jsonb_build_object(
        'organizationName', o.name, 'amount', greatest(p_statement.total, 0), 'currency', p_statement.currency,
        'dueDate', p_statement.due_date, 'invoiceNumber', p_statement.stripe_invoice_id,
        'payUrl', coalesce(p_statement.hosted_invoice_url, private.site_url() || '/billing'))
      else jsonb_build_object(
        'organizationName', o.name, 'amount', greatest(p_statement.total, 0), 'currency', p_statement.currency,
        'dueDate', p_statement.due_date,
        'daysOverdue', greatest(1, extract(day from p_now - p_statement.due_date)::integer),
        'suspendAt', p_statement.due_date + (private.setting('credit_suspend_after') #>> '{}')::interval,
        'payUrl', coalesce(p_statement.hosted_invoice_url, private.site_url() || '/billing'))
    end)
  from public.organizations o where o.id = p_statement.organization_id
$$;
comment on function private.statement_mail(public.credit_statements, text, timestamptz) is 'The mail (template, recipients'' roles, props) of a statement''s reminder or overdue notice.';

create function private.advance_credit_dunning(p_now timestamptz default now())
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_statement public.credit_statements;
  v_account record;
  v_count integer := 0;
begin
  -- Reminders, credit_reminder_days before the due date.
  for v_statement in
    select * from public.credit_statements
    where status in ('billed', 'failed') and reminded_at is null and due_date > p_now
      and due_date <= p_now + make_interval(days => (private.setting('credit_reminder_days') #>> '{}')::integer)
    for update skip locked
  loop
    update public.credit_statements set reminded_at = p_now where id = v_statement.id;
    perform private.append_domain_event(v_statement.organization_id, 'credit_statement.reminder',
      jsonb_build_object('statement_id', v_statement.id, 'mail', private.statement_mail(v_statement, 'payment_reminder', p_now)));
    v_count := v_count + 1;
  end loop;
  -- Overdue: past the due date, unpaid.
  for v_statement in
    select * from public.credit_statements
    where status in ('billed', 'failed') and overdue_at is null and due_date <= p_now
    for update skip locked
  loop
    update public.credit_statements set overdue_at = p_now where id = v_statement.id;
    perform private.append_domain_event(v_statement.organization_id, 'credit_statement.overdue',
      jsonb_build_object('statement_id', v_statement.id, 'mail', private.statement_mail(v_statement, 'account_overdue', p_now)));
    v_count := v_count + 1;
  end loop;
  -- Suspended after credit_suspend_after, defaulted (and frozen) after credit_default_after.
  for v_account in
    select a.organization_id, a.status, min(s.due_date) as oldest_due
    from public.credit_accounts a join public.credit_statements s on s.organization_id = a.organization_id
    where a.status in ('active', 'suspended') and s.status in ('billed', 'failed') and s.due_date <= p_now
    group by a.organization_id, a.status
  loop
    if v_account.status = 'active' and v_account.oldest_due + (private.setting('credit_suspend_after') #>> '{}')::interval <= p_now then
      perform private.set_credit_status_internal(v_account.organization_id, 'suspended',
        format('A statement is unpaid %s after its due date', private.setting('credit_suspend_after') #>> '{}'), 'system', p_now);
      v_count := v_count + 1;
    elsif v_account.status = 'suspended' and v_account.oldest_due + (private.setting('credit_default_after') #>> '{}')::interval <= p_now then
      perform private.set_credit_status_internal(v_account.organization_id, 'defaulted',
        format('A statement is unpaid %s after its due date', private.setting('credit_default_after') #>> '{}'), 'system', p_now);
      perform private.set_credit_limit_internal(v_account.organization_id, 0, 'Defaulted: the limit is frozen', 'rule', p_now);
      v_count := v_count + 1;
    end if;
  end loop;
  return v_count;
end
$$;
comment on function private.advance_credit_dunning(timestamptz) is
  'Credit accounts through time: reminders before the due date, overdue notices after it, suspension and default; returns how many steps it took.';
grant execute on function private.advance_credit_dunning(timestamptz) to service_role;

-- ---------------------------------------------------------------------------------------------
-- Mail: events that carry their own mail
-- ---------------------------------------------------------------------------------------------
select private.register_outbox_consumer('email', 'Turns domain events into mail (private.email_from_events).',
  array['member.invited', 'credits.low', 'credits.depleted', 'billing.payment_failed', 'billing.suspended',
        'credit_statement.reminder', 'credit_statement.overdue']);

create or replace function private.enqueue_event_email(p_event private.domain_events)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_organization text := (select name from public.organizations where id = p_event.organization_id);
  v_pool text := p_event.payload ->> 'pool';
  v_pool_name text := coalesce((select name from public.credit_pools where key = v_pool), v_pool);
  v_invoice jsonb := p_event.payload -> 'invoice';
  v_mail jsonb := p_event.payload -> 'mail';
  v_recipient text;
  v_count integer := 0;
begin
  if p_event.type = 'member.invited' then
    perform private.enqueue_email('organization_invitation', p_event.payload ->> 'email',
      jsonb_build_object(
        'organizationName', v_organization,
        'inviterName', (select coalesce(p.full_name, p.email) from public.profiles p where p.id = (p_event.payload ->> 'invited_by')::uuid),
        'role', p_event.payload ->> 'role',
        'acceptUrl', private.site_url() || '/invitations/accept?token=' || (p_event.payload ->> 'token'),
        'expiresAt', p_event.payload ->> 'expires_at'),
      format('event:%s:%s', p_event.event_id, lower(p_event.payload ->> 'email')), p_event.organization_id);
    return 1;
  end if;
  if v_organization is null then
    return 0;
  end if;
  -- An event that carries its mail: the template and props as the event's author built them.
  if v_mail is not null then
    for v_recipient in select email from private.member_emails(p_event.organization_id,
                         array(select jsonb_array_elements_text(v_mail -> 'roles'))::public.organization_role[]) loop
      perform private.enqueue_email(v_mail ->> 'template', v_recipient, v_mail -> 'props',
        format('event:%s:%s', p_event.event_id, v_recipient), p_event.organization_id);
      v_count := v_count + 1;
    end loop;
    return v_count;
  end if;
  if p_event.type in ('billing.payment_failed', 'billing.suspended') then
    -- Money mail: to the owners and billing members.
    for v_recipient in select email from private.member_emails(p_event.organization_id, '{owner,billing}') loop
      if p_event.type = 'billing.payment_failed' then
        perform private.enqueue_email('payment_failed', v_recipient, jsonb_build_object(
          'organizationName', v_organization,
          'amount', coalesce((p_event.payload ->> 'amount')::bigint, 0),
          'currency', coalesce(p_event.payload ->> 'currency', 'eur'),
          'invoiceNumber', coalesce(p_event.payload ->> 'number', p_event.payload ->> 'invoice'),
          'updatePaymentUrl', coalesce(p_event.payload ->> 'hosted_invoice_url', private.site_url() || '/billing'),
          'nextAttemptAt', p_event.payload ->> 'next_payment_attempt'),
          format('event:%s:%s', p_event.event_id, v_recipient), p_event.organization_id);
      else
        perform private.enqueue_email('account_overdue', v_recipient, jsonb_build_object(
          'organizationName', v_organization,
          'amount', coalesce((v_invoice ->> 'amount_remaining')::bigint, 0),
          'currency', coalesce(v_invoice ->> 'currency', 'eur'),
          'dueDate', coalesce(v_invoice ->> 'stripe_created', p_event.payload ->> 'past_due_since'),
          'daysOverdue', greatest(1, extract(day from (p_event.created_at - (p_event.payload ->> 'past_due_since')::timestamptz))::integer),
          'suspendAt', null,
          'payUrl', coalesce(v_invoice ->> 'hosted_invoice_url', private.site_url() || '/billing')),
          format('event:%s:%s', p_event.event_id, v_recipient), p_event.organization_id);
      end if;
      v_count := v_count + 1;
    end loop;
    return v_count;
  end if;
  -- credits.low and credits.depleted: to the organization's owners, admins and billing members.
  for v_recipient in select email from private.member_emails(p_event.organization_id, '{owner,admin,billing}') loop
    perform private.enqueue_email(
      case p_event.type when 'credits.low' then 'low_credits' else 'credits_depleted' end,
      v_recipient,
      jsonb_strip_nulls(jsonb_build_object(
        'organizationName', v_organization, 'pool', v_pool, 'poolName', v_pool_name,
        'available', case when p_event.type = 'credits.low' then (p_event.payload ->> 'available')::bigint end,
        'threshold', case when p_event.type = 'credits.low' then (p_event.payload ->> 'threshold')::bigint end,
        'topUpUrl', private.site_url() || '/billing')),
      format('event:%s:%s', p_event.event_id, v_recipient), p_event.organization_id);
    v_count := v_count + 1;
  end loop;
  return v_count;
end
$$;

-- ---------------------------------------------------------------------------------------------
-- Jobs
-- ---------------------------------------------------------------------------------------------
select private.register_job('credit-statements-close', '5 0 * * *', 'sql', 'private.close_credit_statements()',
  'Closes each credit account''s statement on its statement day.');
select private.register_job('credit-statements-bill', '15 * * * *', 'http', 'credit-statements-bill',
  'Bills pending credit statements as Stripe invoices (edge function credit-statements-bill).');
select private.register_job('credit-accounts-dunning', '35 * * * *', 'sql', 'private.advance_credit_dunning()',
  'Credit statement reminders, overdue notices, suspension and default.');
