// The Stripe prices the plans and credit packs name by lookup key (public.credit_plans and
// public.credit_packs, stripe_lookup_key): finds each in the Stripe account, creates the missing
// ones (a product and a price with the row's amount and currency; plans monthly), and with
// `write` stores their ids in the database. Used by `npm run stripe:prices` (a real account) and
// by the local stack and the billing tests (the fake, whose ids are price_local_<lookup key>,
// as supabase/seed.sql has them).

/** The prices the catalogue wants: [{ table, key, name, lookupKey, amount, currency, recurring }]. */
export async function wantedPrices(sql) {
  return sql`
    select 'credit_plans' as table, key, name, stripe_lookup_key as "lookupKey", price_amount as amount,
           price_currency as currency, true as recurring
    from public.credit_plans where stripe_lookup_key is not null and price_amount is not null
    union all
    select 'credit_packs', key, name, stripe_lookup_key, price_amount, price_currency, false
    from public.credit_packs
    order by 1, 2`;
}

/** Ensures every wanted price exists in the account `stripe` reaches; returns { lookupKey: priceId }. */
export async function ensureStripePrices(stripe, sql, { write = false, log = () => {} } = {}) {
  const wanted = await wantedPrices(sql);
  const found = new Map();
  // Stripe takes at most 10 lookup keys per list call.
  for (let i = 0; i < wanted.length; i += 10) {
    const keys = wanted.slice(i, i + 10).map((w) => w.lookupKey);
    const page = await stripe.prices.list({ lookup_keys: keys, active: true, limit: 100 });
    for (const price of page.data) found.set(price.lookup_key, price);
  }
  const ids = {};
  for (const w of wanted) {
    let price = found.get(w.lookupKey);
    if (!price) {
      price = await stripe.prices.create({
        lookup_key: w.lookupKey,
        currency: w.currency,
        unit_amount: Number(w.amount),
        ...(w.recurring ? { recurring: { interval: 'month' } } : {}),
        product_data: { name: w.name, metadata: { [w.table === 'credit_plans' ? 'plan_key' : 'pack_key']: w.key } },
        metadata: { [w.table === 'credit_plans' ? 'plan_key' : 'pack_key']: w.key },
      });
      log(`created ${price.id} for ${w.table} ${w.key} (${w.lookupKey})`);
    }
    ids[w.lookupKey] = price.id;
    if (write && w.table === 'credit_plans') await sql`update public.credit_plans set stripe_price_id = ${price.id} where key = ${w.key}`;
    if (write && w.table === 'credit_packs') await sql`update public.credit_packs set stripe_price_id = ${price.id} where key = ${w.key}`;
  }
  return ids;
}
