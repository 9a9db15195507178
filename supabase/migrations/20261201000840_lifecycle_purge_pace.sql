-- =============================================================================================
-- Lifecycle: the pace of purges
-- =============================================================================================
-- lifecycle-purge rests after each batch for this many times as long as the batch took, so a
-- purge takes at most 1 / (1 + ratio) of one database connection's time from the organizations
-- still using the database. On a small instance whose CPUs the live traffic already keeps busy,
-- any extra work raises its tail latency (BENCHMARKS.md, bench:lifecycle); a larger instance can
-- lower the ratio and purge faster.
insert into private.settings (key, value, description) values
  ('purge_rest_ratio', '4', 'How long lifecycle-purge rests after each batch, as a multiple of the time the batch took (0: no rest).');
