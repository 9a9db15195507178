// The credits types: catalogue and ledger rows derived from the generated `Database` types, the
// inputs of the Credits methods, and the RPC results derived from the zod schemas that check
// them (./schemas.ts).
import type { z } from 'zod';
import type { Database, Tables } from '../database.types.ts';
import type {
  balanceSchema,
  batchItemResultSchema,
  changePlanSchema,
  commitSchema,
  consumeResultSchema,
  consumeSuccessSchema,
  dryRunSchema,
  grantSchema,
  insufficientSchema,
  itemErrorSchema,
  refundSchema,
  releaseSchema,
  reservationSchema,
  reserveResultSchema,
  stripesSchema,
  usageRowSchema,
} from './schemas.ts';

// ---------------------------------------------------------------------------------------------
// The catalogue and the ledger
// ---------------------------------------------------------------------------------------------

/** The pools seeded by the migrations; pools are data, so others may exist. */
export type KnownCreditPool = 'ai' | 'whatsapp' | 'email' | 'sms';
/** A pool key: one of the known pools, or any other key of public.credit_pools. */
export type CreditPoolKey = KnownCreditPool | (string & {});
/** Credits per pool, e.g. `{ ai: 5 }`. */
export type CreditAmounts = Record<string, number>;

export type CreditGrantKind = Database['public']['Enums']['credit_grant_kind'];
export type CreditEntryKind = Database['public']['Enums']['credit_entry_kind'];
export type CreditReservationStatus = Database['public']['Enums']['credit_reservation_status'];

/** A row of public.credit_pools. */
export type CreditPool = Tables<'credit_pools'>;
/** A row of public.credit_plans with its allocations per pool (by pool key). */
export type CreditPlan = Tables<'credit_plans'> & { allocations: Tables<'credit_plan_allocations'>[] };
/** A row of public.credit_actions with its cost per pool (by pool key). */
export type CreditAction = Tables<'credit_actions'> & { costs: Tables<'credit_action_costs'>[] };
/** A row of public.credit_ledger: one movement of one pool (amount signed: + in, - out). */
export type CreditLedgerEntry = Tables<'credit_ledger'>;
/** A row of public.credit_reservations. */
export type CreditReservationRow = Tables<'credit_reservations'>;

// ---------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------

/** An action was charged: what it took per pool and what is left in those pools. */
export type ConsumeSuccess = z.output<typeof consumeSuccessSchema>;

/** A dry run (quantity 0): one unit of the action would succeed, taking `would_consume`. */
export type DryRunResult = z.output<typeof dryRunSchema>;

/** Not enough credits in `pool`: nothing was charged (or held). A result, not an error. */
export type InsufficientCredits = z.output<typeof insufficientSchema>;

/** What `consume` returns: charged, refused for lack of credits, or (quantity 0) a dry run. */
export type ConsumeResult = z.output<typeof consumeResultSchema>;

/** A batch item the SQL refused (bad quantity, unknown action, key reused, ...); the others ran. */
export type ConsumeItemError = z.output<typeof itemErrorSchema>;

/** One result of `consumeBatch`, in the order of the items. */
export type BatchItemResult = z.output<typeof batchItemResultSchema>;

/** Credits of one pool now: spendable, held by active reservations, and given by unexpired grants. */
export type CreditBalance = z.output<typeof balanceSchema>;

/** One row of `usage`: credits consumed and refunded in a pool on a UTC day. */
export type CreditUsageRow = z.output<typeof usageRowSchema>;

/** Credits are held until `expires_at`; commit what was used or release them. */
export type CreditReservation = z.output<typeof reservationSchema>;

/** What `reserve` returns: the reservation, or insufficient_credits (nothing held). */
export type ReserveResult = z.output<typeof reserveResultSchema>;

/** What `commit` returns: charged, given back and overage, per pool. */
export type CommitResult = z.output<typeof commitSchema>;

/** What `release` returns: everything the reservation held, given back. */
export type ReleaseResult = z.output<typeof releaseSchema>;

/** What `grant` returns: the new grant and its ledger transaction. */
export type GrantResult = z.output<typeof grantSchema>;

/** What `refund` returns. */
export type RefundResult = z.output<typeof refundSchema>;

/** What `changePlan` returns: the new plan and its first period. */
export type ChangePlanResult = z.output<typeof changePlanSchema>;
export type StripesResult = z.output<typeof stripesSchema>;

// ---------------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------------

export interface ConsumeInput {
  organizationId: string;
  /** An action key of the catalogue (`actions()`), e.g. 'ai_chat'. */
  action: string;
  /** Units of the action, 0 to 1,000,000 (default 1). 0 is a dry run of one unit. */
  quantity?: number;
  /**
   * Makes retries safe: a second call with the same key (and the same action, quantity and
   * metadata) returns the first result, `idempotent_replay: true`, and charges nothing. Reusing it
   * with other arguments throws idempotency_key_reused (409). Keys are kept at least 24 hours;
   * the first result is replayed whatever it was, insufficient_credits included, so use a new key
   * for a new attempt after a top-up. 1 to 255 of `A-Za-z0-9_.:-`.
   */
  idempotencyKey?: string;
  /** Recorded in the ledger (a JSON object, at most 8 KB). */
  metadata?: Record<string, unknown>;
}

export interface BatchItem {
  action: string;
  quantity?: number;
  idempotencyKey?: string;
  metadata?: Record<string, unknown>;
}

interface ReserveCommon {
  organizationId: string;
  /** How long the credits are held: 1 second to 24 hours (default 15 minutes). */
  ttlSeconds?: number;
  /**
   * A retry with the same key returns the same reservation (whatever its arguments), also when
   * retries run concurrently.
   */
  idempotencyKey?: string;
  metadata?: Record<string, unknown>;
}

/** Hold an action's cost (× quantity), or explicit per-pool amounts: one or the other. */
export type ReserveInput = ReserveCommon &
  (
    | { action: string; quantity?: number; amounts?: undefined }
    | { amounts: CreditAmounts; action?: undefined; quantity?: undefined }
  );

export interface GrantInput {
  organizationId: string;
  pool: CreditPoolKey;
  /** 1 to 1,000,000,000 credits. */
  amount: number;
  /** manual (default), promotion or purchase. Allocations come from plans, refunds from `refund`. */
  kind?: Extract<CreditGrantKind, 'manual' | 'promotion' | 'purchase'>;
  /** In the future; default never, or the pool's purchase validity (12 months) for purchases. */
  expiresAt?: Date | string;
  /** Draw order, 0 (first) to 1000; default 100. */
  priority?: number;
  /** Where the credits came from: a payment id, a reason (up to 200 characters). */
  source?: string;
  metadata?: Record<string, unknown>;
}
