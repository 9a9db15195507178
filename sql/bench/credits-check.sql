-- After a scenario: no balance below zero and every bench organization's ledger reconciles.
select
  (select count(*) from bench.bare_balances where available < 0)
  + (select count(*) from bench.naive_balances where available < 0)
  + (select count(*) from public.credit_balances b join bench.orgs o on o.organization_id = b.organization_id where b.available < 0)
    as negative_balances,
  (select count(*) from bench.orgs o, lateral private.verify_credit_ledger(o.organization_id) v where not v.ok)
    as unreconciled_pools;
