// How facts read in a mail: money, dates and counts, formatted the same on Deno (which sends the
// mail) and Node (which tests it). Everything is in English and UTC: the mail does not know the
// reader's locale or time zone, so it says which zone it means.

const LOCALE = 'en-US';

/**
 * Digits after the decimal point of each currency's minor unit, where Stripe's API (the source of
 * our amounts) does not use 2: https://docs.stripe.com/currencies#zero-decimal and #three-decimal.
 * Not Intl's resolvedOptions(): those are CLDR's display digits, which are not minor units (IDR,
 * COP and HUF have cents but display none) and differ between ICU versions (Node and Deno disagree
 * on HUF), so a mail would show 100 times the amount.
 */
const MINOR_UNIT_DIGITS: Record<string, number> = {
  BIF: 0, CLP: 0, DJF: 0, GNF: 0, JPY: 0, KMF: 0, KRW: 0, MGA: 0, PYG: 0, RWF: 0, UGX: 0, VND: 0,
  VUV: 0, XAF: 0, XOF: 0, XPF: 0,
  BHD: 3, JOD: 3, KWD: 3, OMR: 3, TND: 3,
};

/** An amount in minor units, exactly: `formatMoney(1250, 'eur')` is "€12.50", `formatMoney(1250, 'jpy')` "¥1,250". */
export function formatMoney(minorUnits: number, currency: string): string {
  const code = currency.toUpperCase();
  const digits = MINOR_UNIT_DIGITS[code] ?? 2;
  return new Intl.NumberFormat(LOCALE, {
    style: 'currency',
    currency: code,
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  }).format(minorUnits / 10 ** digits);
}

// hourCycle h23: a 12-hour clock would put U+202F (narrow no-break space) before "AM" in newer ICU.
const DATE_TIME = new Intl.DateTimeFormat(LOCALE, {
  dateStyle: 'long',
  timeStyle: 'short',
  hourCycle: 'h23',
  timeZone: 'UTC',
});
const DATE = new Intl.DateTimeFormat(LOCALE, { dateStyle: 'long', timeZone: 'UTC' });

/** "March 21, 2026 at 09:30 UTC" */
export function formatDateTime(iso: string): string {
  return `${DATE_TIME.format(new Date(iso))} UTC`;
}

/** "March 21, 2026", the day in UTC. */
export function formatDate(iso: string): string {
  return DATE.format(new Date(iso));
}

/** "1,500" */
export function formatCount(n: number): string {
  return new Intl.NumberFormat(LOCALE).format(n);
}

/** "1,500 AI credits", "1 AI credit" */
export function formatCredits(n: number, poolName: string): string {
  return `${formatCount(n)} ${poolName} ${n === 1 ? 'credit' : 'credits'}`;
}

/** "1 day", "12 days" */
export function formatDays(n: number): string {
  return `${formatCount(n)} ${n === 1 ? 'day' : 'days'}`;
}
