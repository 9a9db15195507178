// The zod pieces every template's props schema is built from, so a link, a point in time or an
// amount of money means the same thing in every mail.
import { z } from 'zod';

/**
 * A link the reader clicks. Only http(s): it lands in an href, and z.url() alone would let a
 * `javascript:` or `data:` URL through.
 */
export const link = z.url({ protocol: /^https?$/ });

/** A point in time: ISO 8601 with `Z` or an offset, as Postgres' JSON (`+00:00`) and JavaScript give it. */
export const timestamp = z.iso.datetime({ offset: true });

/** As the tenancy rules have it (invalid_name): 1 to 200 characters. */
export const organizationName = z.string().trim().min(1).max(200);

export const personName = z.string().trim().min(1).max(200);

/** Money in minor currency units (cents), as the database and Stripe keep it: never a float. */
export const minorAmount = z.int().nonnegative();

/** An ISO 4217 code in either case: Stripe writes `eur`, ISO writes `EUR`. */
export const currency = z.string().regex(/^[A-Za-z]{3}$/, 'A currency is an ISO 4217 code, e.g. "eur"');

export const creditCount = z.int().nonnegative();

/** A credit pool's key (`ai`, `whatsapp`, ...), a row of credit_pools. */
export const poolKey = z.string().regex(/^[a-z][a-z0-9_]{0,62}$/);

/** A credit pool's name as readers see it ("AI", "WhatsApp"). */
export const poolName = z.string().trim().min(1).max(100);

/** Stripe's invoice number ("NW-2026-0042"). */
export const invoiceNumber = z.string().trim().min(1).max(100);

/** The one-time code Supabase Auth sends next to its links. */
export const otpCode = z.string().regex(/^\d{6}$/, 'A code is 6 digits');
