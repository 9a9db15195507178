// zod schemas of the credit RPCs' JSON results. The result types (./types.ts) are derived from
// them, so what is checked at run time and what callers are told are one declaration; the doc
// comments on the fields show on the types.
import { z } from 'zod';
import { Constants } from '../database.types.ts';
import { isServerErrorCode, type BackendErrorCode } from '../errors.ts';
import type { CreditPoolKey } from './types.ts';

const amountsSchema = z.record(z.string(), z.number().int());
const poolKeySchema = z.custom<CreditPoolKey>((value) => typeof value === 'string');
const creditsSchema = z.number().int();
const replaySchema = z.literal(true).optional();

export const consumeSuccessSchema = z.object({
  success: z.literal(true),
  /** The ledger transaction; pass it to `refund`. */
  transaction_id: z.string(),
  consumed: amountsSchema,
  remaining: amountsSchema,
  /** Set when this is a retry with an idempotency key already used: nothing was charged again. */
  idempotent_replay: replaySchema,
  /** Credits beyond the balance, charged to the organization's credit account (plans that allow overage). */
  overage: amountsSchema.optional(),
  dry_run: z.undefined().optional(),
});

export const dryRunSchema = z.object({
  success: z.literal(true),
  dry_run: z.literal(true),
  would_consume: amountsSchema,
  /** What would be left after one unit. */
  remaining: amountsSchema,
  /** What would go beyond the balance, onto the credit account. */
  overage: amountsSchema.optional(),
  idempotent_replay: replaySchema,
});

export const insufficientSchema = z.object({
  success: z.literal(false),
  error: z.literal('insufficient_credits'),
  /** e.g. "Insufficient AI credits". */
  message: z.string(),
  pool: poolKeySchema,
  required: creditsSchema,
  available: creditsSchema,
  /** Set when this answers a dry run. */
  dry_run: z.literal(true).optional(),
  idempotent_replay: replaySchema,
});

export const consumeResultSchema = z.union([dryRunSchema, consumeSuccessSchema, insufficientSchema]);

export const itemErrorSchema = z.object({
  success: z.literal(false),
  /** The SQL's code for the item ('unknown' if this SDK does not know it). */
  error: z
    .string()
    .refine((code) => code !== 'insufficient_credits')
    .transform((code): Exclude<BackendErrorCode, 'insufficient_credits'> => (isServerErrorCode(code) ? code : 'unknown')),
});

export const batchItemResultSchema = z.union([consumeResultSchema, itemErrorSchema]);
export const batchSchema = z.array(batchItemResultSchema);

export const balanceSchema = z.object({
  /** Spendable now. */
  available: creditsSchema,
  /** Held by active reservations. */
  reserved: creditsSchema,
  /** What unexpired grants gave. */
  total: creditsSchema,
});
export const balancesSchema = z.record(z.string(), balanceSchema);

export const usageRowSchema = z.object({
  /** YYYY-MM-DD (UTC). */
  day: z.string(),
  pool_key: poolKeySchema,
  consumed: creditsSchema,
  refunded: creditsSchema,
});
export const usageSchema = z.array(usageRowSchema);

export const reservationSchema = z.object({
  success: z.literal(true),
  reservation_id: z.string(),
  /** 'active' when just made; a replay (same idempotency key) shows the reservation's status now. */
  status: z.enum(Constants.public.Enums.credit_reservation_status),
  held: amountsSchema,
  expires_at: z.string(),
  idempotent_replay: replaySchema,
});

export const reserveResultSchema = z.union([reservationSchema, insufficientSchema]);

export const commitSchema = z.object({
  success: z.literal(true),
  reservation_id: z.string(),
  transaction_id: z.string(),
  /** Charged per pool (what was committed). */
  consumed: amountsSchema,
  /** Held but not used, given back, per held pool. */
  released: amountsSchema,
  /** Used beyond what was held and available, billed later (plans that allow overage). */
  overage: amountsSchema,
});

export const releaseSchema = z.object({
  success: z.literal(true),
  reservation_id: z.string(),
  released: amountsSchema,
});

export const grantSchema = z.object({
  success: z.literal(true),
  grant_id: z.string(),
  transaction_id: z.string(),
  pool: poolKeySchema,
  amount: creditsSchema,
  /** An ISO timestamp, or 'infinity' for credits that never expire. */
  expires_at: z.string(),
});

export const refundSchema = z.object({
  success: z.literal(true),
  /** The refund's own ledger transaction. */
  transaction_id: z.string(),
  /** The consumption refunded. */
  refund_of: z.string(),
  /** Credits given back per pool (empty when nothing was left to refund). */
  refunded: amountsSchema,
});

export const stripesSchema = z.object({
  pool: z.string(),
  stripes: z.number().int(),
});

export const changePlanSchema = z.object({
  success: z.literal(true),
  plan: z.string(),
  period_start: z.string(),
  period_end: z.string(),
});
