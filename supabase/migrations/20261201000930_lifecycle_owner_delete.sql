-- =============================================================================================
-- Lifecycle: owners delete their organization the careful way only
-- =============================================================================================
-- Until now an owner could delete their organization with a plain DELETE through the API: at
-- once, with no export offered and its stored files left to the orphan cleanup. Deleting by
-- hand now takes the lifecycle's path, request_organization_purge: scheduled after the grace
-- period, the export mailed to the owners first, files and rows purged in batches, money
-- records kept behind the tombstone. The service role and the database owner (operators,
-- Studio) may still delete directly; the same tombstone and unsettled-balance rules apply.

-- Fail fast instead of queueing behind a long lock on a live database.
set lock_timeout = '5s';
set statement_timeout = '60s';

drop policy "Owners can delete their organization" on public.organizations;
revoke delete on public.organizations from authenticated;
