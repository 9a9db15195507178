-- Seed data for a fresh local database (applied by npm run stack:up / db:reset).

-- The local Stripe fake's prices (scripts/stripe-fake.ts creates them with these ids, one per
-- lookup key): a hosted project gets its own from `npm run stripe:prices` instead.
update public.credit_plans set stripe_price_id = 'price_local_' || stripe_lookup_key where stripe_lookup_key is not null;
update public.credit_packs set stripe_price_id = 'price_local_' || stripe_lookup_key;
