#!/usr/bin/env node
// `npm run stripe:prices`: creates the plans' and credit packs' prices in the Stripe account of
// STRIPE_SECRET_KEY (the missing ones, found by lookup key) and stores their ids in a database.
//   STRIPE_SECRET_KEY=sk_test_... npm run stripe:prices                     the local database
//   STRIPE_SECRET_KEY=sk_test_... npm run stripe:prices -- --db-url "postgresql://postgres.<ref>:<password>@<host>:5432/postgres"
// Run it once per Stripe account (test mode, then live), and again after adding a plan or pack.
import Stripe from 'stripe';
import postgres from 'postgres';
import { DB_URL } from './lib/config.mjs';
import { ensureStripePrices } from './lib/stripe-prices.mjs';

const args = process.argv.slice(2);
const dbUrl = args.includes('--db-url') ? args[args.indexOf('--db-url') + 1] : DB_URL;
const key = process.env.STRIPE_SECRET_KEY;
if (!key || !/^(sk|rk)_(test|live)_/.test(key)) {
  console.error('stripe:prices: set STRIPE_SECRET_KEY to the account\'s secret key (sk_test_... or sk_live_...)');
  process.exit(2);
}
if (!dbUrl) {
  console.error('usage: npm run stripe:prices -- [--db-url <postgres url>]');
  process.exit(2);
}
const sql = postgres(dbUrl, { max: 1, onnotice: () => {} });
try {
  const ids = await ensureStripePrices(new Stripe(key), sql, { write: true, log: (line) => console.error(line) });
  for (const [lookupKey, id] of Object.entries(ids)) console.log(`${lookupKey}\t${id}`);
} catch (error) {
  console.error(`stripe:prices: ${error.message}`);
  process.exitCode = 1;
} finally {
  await sql.end();
}
