-- =============================================================================================
-- Credits: administration (grants and refunds)
-- =============================================================================================

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

insert into private.error_codes (code, class, meaning) values
  ('invalid_amount', 'invalid_input', 'p_amount must be from 1 to 1000000000.'),
  ('invalid_kind', 'invalid_input', 'A grant''s kind is manual, promotion or purchase.'),
  ('invalid_priority', 'invalid_input', 'A priority is from 0 (drawn first) to 1000.'),
  ('invalid_reason', 'invalid_input', 'A refund reason is at most 500 characters.'),
  ('transaction_not_found', 'not_found', 'No consumption has this transaction id.'),
  ('refund_exceeds_consumed', 'rule', 'A refund cannot give back more than the transaction consumed.');

create function private.grant_credits(
  p_organization_id uuid,
  p_pool text,
  p_amount bigint,
  p_kind text,
  p_expires_at timestamptz,
  p_priority integer,
  p_source text,
  p_metadata jsonb
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_now timestamptz := now();
  v_kind public.credit_grant_kind;
  v_expires_at timestamptz := p_expires_at;
  v_grant_id uuid;
  v_tx uuid := gen_random_uuid();
begin
  perform private.require_operator();
  perform private.require_organization(p_organization_id);
  if not exists (select 1 from public.credit_pools where key = p_pool) then
    perform private.raise('pool_not_found', format('No credit pool %L.', p_pool));
  end if;
  if p_amount is null or p_amount < 1 or p_amount > 1000000000 then
    perform private.raise('invalid_amount', 'p_amount must be from 1 to 1000000000.');
  end if;
  if p_kind is null or p_kind not in ('promotion', 'manual', 'purchase') then
    perform private.raise('invalid_kind', 'p_kind is manual, promotion or purchase (allocations come from plans, refunds from refund_credits).');
  end if;
  v_kind := p_kind::public.credit_grant_kind;
  if v_expires_at is null and v_kind = 'purchase' then
    select v_now + purchase_validity into v_expires_at from public.credit_pools where key = p_pool;
  end if;
  v_expires_at := coalesce(v_expires_at, 'infinity');
  if v_expires_at <= v_now then
    perform private.raise('invalid_expiry', 'p_expires_at must be in the future.');
  end if;
  if p_priority is null or p_priority not between 0 and 1000 then
    perform private.raise('invalid_priority', 'p_priority is from 0 (drawn first) to 1000.');
  end if;
  perform private.check_metadata(p_metadata);
  v_grant_id := private.add_credit_grant(p_organization_id, p_pool, v_kind, p_amount, v_expires_at, p_priority,
                                         p_source, p_metadata, v_now, 'grant', null, v_tx);
  return jsonb_build_object('success', true, 'grant_id', v_grant_id, 'transaction_id', v_tx, 'pool', p_pool,
                            'amount', p_amount, 'expires_at', v_expires_at);
end
$$;
comment on function private.grant_credits(uuid, text, bigint, text, timestamptz, integer, text, jsonb) is 'The body of grant_credits.';
grant execute on function private.grant_credits(uuid, text, bigint, text, timestamptz, integer, text, jsonb) to authenticated, service_role;

create function public.grant_credits(
  p_organization_id uuid,
  p_pool text,
  p_amount bigint,
  p_kind text default 'manual',
  p_expires_at timestamptz default null,
  p_priority integer default 100,
  p_source text default null,
  p_metadata jsonb default '{}'::jsonb
)
returns jsonb
language sql
security invoker
set search_path = ''
as $$
  select private.grant_credits(p_organization_id, p_pool, p_amount, p_kind, p_expires_at, p_priority, p_source, p_metadata)
$$;
comment on function public.grant_credits(uuid, text, bigint, text, timestamptz, integer, text, jsonb) is
  'Adds credits to a pool (service role and platform admins). p_kind: manual, promotion or purchase (purchases expire after the pool''s purchase_validity unless p_expires_at is given). Lower p_priority is drawn first.';
grant execute on function public.grant_credits(uuid, text, bigint, text, timestamptz, integer, text, jsonb) to authenticated, service_role;

create function private.refund_credits(p_transaction_id uuid, p_amounts jsonb, p_reason text)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_now timestamptz := now();
  v_org uuid;
  v_pools text[];
  v_open text[];
  v_refund record;
  v_tx uuid := gen_random_uuid();
  v_refunded jsonb := '{}'::jsonb;
begin
  perform private.require_operator();
  if char_length(p_reason) > 500 then
    perform private.raise('invalid_reason', 'A refund reason is at most 500 characters.');
  end if;
  select organization_id, array_agg(distinct pool_key order by pool_key) into v_org, v_pools
  from public.credit_ledger where transaction_id = p_transaction_id and kind = 'consumption'
  group by organization_id;
  if v_org is null then
    perform private.raise('transaction_not_found', 'No consumption has this transaction id.');
  end if;
  if p_amounts is not null then
    perform private.parse_pool_amounts(p_amounts);
  end if;
  -- Locking the pools serialises refunds of the same transaction: what was refunded before is
  -- read after the lock.
  v_open := private.open_credit_pools(v_org, v_pools, v_now);
  for v_refund in
    with consumed as (
      select l.pool_key, (-sum(l.amount))::bigint as amount, max(g.expires_at) as expires_at
      from public.credit_ledger l left join public.credit_grants g on g.id = l.grant_id
      where l.transaction_id = p_transaction_id and l.kind = 'consumption'
      group by l.pool_key
    ), refunded as (
      select l.pool_key, sum(l.amount)::bigint as amount from public.credit_ledger l
      where l.refund_of = p_transaction_id and l.kind = 'refund' group by l.pool_key
    )
    select c.pool_key, c.amount - coalesce(r.amount, 0) as refundable, c.expires_at,
           case when p_amounts is null then c.amount - coalesce(r.amount, 0) else coalesce((p_amounts ->> c.pool_key)::bigint, 0) end as requested
    from consumed c left join refunded r using (pool_key)
    order by c.pool_key
  loop
    if v_refund.requested > v_refund.refundable then
      perform private.raise('refund_exceeds_consumed', format('At most %s %s credits of this transaction can still be refunded.', v_refund.refundable, v_refund.pool_key));
    end if;
    if v_refund.requested > 0 then
      -- The refund lives as long as the credits it gives back would have.
      perform private.add_credit_grant(v_org, v_refund.pool_key, 'refund', v_refund.requested,
        greatest(coalesce(v_refund.expires_at, 'infinity'), v_now + interval '1 day'), 100,
        format('refund:%s', p_transaction_id), jsonb_strip_nulls(jsonb_build_object('reason', p_reason)), v_now, 'refund', p_transaction_id, v_tx);
      v_refunded := v_refunded || jsonb_build_object(v_refund.pool_key, v_refund.requested);
    end if;
  end loop;
  if p_amounts is not null and exists (select 1 from jsonb_object_keys(p_amounts) k where not (k = any (v_pools))) then
    perform private.raise('refund_exceeds_consumed', 'The transaction consumed nothing from some of these pools.');
  end if;
  perform private.close_credit_pools(v_org, v_open, v_now);
  return jsonb_build_object('success', true, 'transaction_id', v_tx, 'refund_of', p_transaction_id, 'refunded', v_refunded);
end
$$;
comment on function private.refund_credits(uuid, jsonb, text) is 'The body of refund_credits.';
grant execute on function private.refund_credits(uuid, jsonb, text) to authenticated, service_role;

create function public.refund_credits(p_transaction_id uuid, p_amounts jsonb default null, p_reason text default null)
returns jsonb
language sql
security invoker
set search_path = ''
as $$
  select private.refund_credits(p_transaction_id, p_amounts, p_reason)
$$;
comment on function public.refund_credits(uuid, jsonb, text) is
  'Gives back a consumption (service role and platform admins): everything still refundable, or per-pool p_amounts. Never more than was consumed. Errors: transaction_not_found, refund_exceeds_consumed, invalid_amounts.';
grant execute on function public.refund_credits(uuid, jsonb, text) to authenticated, service_role;

