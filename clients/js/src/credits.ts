// Credits: consuming metered actions, balances and usage, reservations, and (for the service role
// and platform admins) grants and refunds. Every write goes through the SQL RPCs of
// supabase/migrations/*_credits.sql, which check the caller; the catalogue and the ledger are
// read from their tables (row-level security decides what the caller sees).
//
// Running out of credits is a RESULT (`{ success: false, error: 'insufficient_credits', ... }`),
// not an error: branch on `result.success`. Everything else that goes wrong throws BackendError
// with the SQL's code (invalid_quantity, unknown_action, idempotency_key_reused, ...).
import type { SupabaseClient } from '@supabase/supabase-js';
import { z } from 'zod';
import type { Database, Json } from './database.types.ts';
import { BackendError, isServerErrorCode, type BackendErrorCode } from './errors.ts';
import { parseResult, run } from './request.ts';
import type {
  CreditAction,
  CreditAmounts,
  CreditGrantKind,
  CreditLedgerEntry,
  CreditPlan,
  CreditPool,
  CreditPoolKey,
  CreditReservationStatus,
} from './types.ts';

export interface CreditsContext {
  supabase: SupabaseClient<Database>;
}

// ---------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------

/** An action was charged: what it took per pool and what is left in those pools. */
export interface ConsumeSuccess {
  success: true;
  /** The ledger transaction; pass it to `refund`. */
  transaction_id: string;
  consumed: CreditAmounts;
  remaining: CreditAmounts;
  /** Set when this is a retry with an idempotency key already used: nothing was charged again. */
  idempotent_replay?: true;
  dry_run?: undefined;
}

/** A dry run (quantity 0): one unit of the action would succeed, taking `would_consume`. */
export interface DryRunResult {
  success: true;
  dry_run: true;
  would_consume: CreditAmounts;
  /** What would be left after one unit. */
  remaining: CreditAmounts;
  idempotent_replay?: true;
}

/** Not enough credits in `pool`: nothing was charged (or held). A result, not an error. */
export interface InsufficientCredits {
  success: false;
  error: 'insufficient_credits';
  /** e.g. "Insufficient AI credits". */
  message: string;
  pool: CreditPoolKey;
  required: number;
  available: number;
  /** Set when this answers a dry run. */
  dry_run?: true;
  idempotent_replay?: true;
}

/** What `consume` returns: charged, refused for lack of credits, or (quantity 0) a dry run. */
export type ConsumeResult = ConsumeSuccess | InsufficientCredits | DryRunResult;

/** A batch item the SQL refused (bad quantity, unknown action, key reused, ...); the others ran. */
export interface ConsumeItemError {
  success: false;
  /** The SQL's code for the item ('unknown' if this SDK does not know it). */
  error: Exclude<BackendErrorCode, 'insufficient_credits'>;
}

/** One result of `consumeBatch`, in the order of the items. */
export type BatchItemResult = ConsumeResult | ConsumeItemError;

/** Credits of one pool now: spendable, held by active reservations, and given by unexpired grants. */
export interface CreditBalance {
  available: number;
  reserved: number;
  total: number;
}

/** One row of `usage`: credits consumed and refunded in a pool on a UTC day. */
export interface CreditUsageRow {
  /** YYYY-MM-DD (UTC). */
  day: string;
  pool_key: CreditPoolKey;
  consumed: number;
  refunded: number;
}

/** Credits are held until `expires_at`; commit what was used or release them. */
export interface CreditReservation {
  success: true;
  reservation_id: string;
  /** 'active' when just made; a replay (same idempotency key) shows the reservation's status now. */
  status: CreditReservationStatus;
  held: CreditAmounts;
  expires_at: string;
  idempotent_replay?: true;
}

export type ReserveResult = CreditReservation | InsufficientCredits;

export interface CommitResult {
  success: true;
  reservation_id: string;
  transaction_id: string;
  /** Charged per pool (what was committed). */
  consumed: CreditAmounts;
  /** Held but not used, given back, per held pool. */
  released: CreditAmounts;
  /** Used beyond what was held and available, billed later (plans that allow overage). */
  overage: CreditAmounts;
}

export interface ReleaseResult {
  success: true;
  reservation_id: string;
  released: CreditAmounts;
}

export interface GrantResult {
  success: true;
  grant_id: string;
  transaction_id: string;
  pool: CreditPoolKey;
  amount: number;
  /** An ISO timestamp, or 'infinity' for credits that never expire. */
  expires_at: string;
}

export interface RefundResult {
  success: true;
  /** The refund's own ledger transaction. */
  transaction_id: string;
  /** The consumption refunded. */
  refund_of: string;
  /** Credits given back per pool (empty when nothing was left to refund). */
  refunded: CreditAmounts;
}

export interface ChangePlanResult {
  success: true;
  plan: string;
  period_start: string;
  period_end: string;
}

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
  /** A retry with the same key returns the same reservation (whatever its arguments). */
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

// ---------------------------------------------------------------------------------------------
// Schemas of the RPCs' JSON results
// ---------------------------------------------------------------------------------------------

const amountsSchema = z.record(z.string(), z.number().int());
const replaySchema = z.literal(true).optional();

const consumeSuccessSchema: z.ZodType<ConsumeSuccess> = z.object({
  success: z.literal(true),
  transaction_id: z.string(),
  consumed: amountsSchema,
  remaining: amountsSchema,
  idempotent_replay: replaySchema,
  dry_run: z.undefined().optional(),
});

const dryRunSchema: z.ZodType<DryRunResult> = z.object({
  success: z.literal(true),
  dry_run: z.literal(true),
  would_consume: amountsSchema,
  remaining: amountsSchema,
  idempotent_replay: replaySchema,
});

const insufficientSchema: z.ZodType<InsufficientCredits> = z.object({
  success: z.literal(false),
  error: z.literal('insufficient_credits'),
  message: z.string(),
  pool: z.string(),
  required: z.number().int(),
  available: z.number().int(),
  dry_run: z.literal(true).optional(),
  idempotent_replay: replaySchema,
});

const consumeResultSchema: z.ZodType<ConsumeResult> = z.union([dryRunSchema, consumeSuccessSchema, insufficientSchema]);

const itemErrorSchema: z.ZodType<ConsumeItemError> = z.object({
  success: z.literal(false),
  error: z
    .string()
    .refine((code) => code !== 'insufficient_credits')
    .transform((code): ConsumeItemError['error'] => (isServerErrorCode(code) ? code : 'unknown')),
});

const batchSchema = z.array(z.union([consumeResultSchema, itemErrorSchema]));

const balancesSchema = z.record(
  z.string(),
  z.object({ available: z.number().int(), reserved: z.number().int(), total: z.number().int() }),
);

const usageSchema = z.array(
  z.object({ day: z.string(), pool_key: z.string(), consumed: z.number().int(), refunded: z.number().int() }),
);

const reservationSchema: z.ZodType<CreditReservation> = z.object({
  success: z.literal(true),
  reservation_id: z.string(),
  status: z.enum(['active', 'committed', 'released', 'expired']),
  held: amountsSchema,
  expires_at: z.string(),
  idempotent_replay: replaySchema,
});

const commitSchema: z.ZodType<CommitResult> = z.object({
  success: z.literal(true),
  reservation_id: z.string(),
  transaction_id: z.string(),
  consumed: amountsSchema,
  released: amountsSchema,
  overage: amountsSchema,
});

const releaseSchema: z.ZodType<ReleaseResult> = z.object({
  success: z.literal(true),
  reservation_id: z.string(),
  released: amountsSchema,
});

const grantSchema: z.ZodType<GrantResult> = z.object({
  success: z.literal(true),
  grant_id: z.string(),
  transaction_id: z.string(),
  pool: z.string(),
  amount: z.number().int(),
  expires_at: z.string(),
});

const refundSchema: z.ZodType<RefundResult> = z.object({
  success: z.literal(true),
  transaction_id: z.string(),
  refund_of: z.string(),
  refunded: amountsSchema,
});

const changePlanSchema: z.ZodType<ChangePlanResult> = z.object({
  success: z.literal(true),
  plan: z.string(),
  period_start: z.string(),
  period_end: z.string(),
});

// ---------------------------------------------------------------------------------------------

export class Credits {
  readonly #supabase: SupabaseClient<Database>;

  constructor(context: CreditsContext) {
    this.#supabase = context.supabase;
  }

  /**
   * Charges an action to the organization's pools, all or nothing (members and the service role).
   * Returns the charge, `insufficient_credits` (nothing charged), or a dry run when quantity is 0.
   * Errors: not_authenticated, not_authorized, invalid_quantity, invalid_metadata,
   * invalid_idempotency_key, unknown_action (404), action_disabled, organization_not_found (404),
   * idempotency_key_reused (409).
   */
  async consume(input: ConsumeInput): Promise<ConsumeResult> {
    const result = await run(
      this.#supabase.rpc('consume_credits_rpc', {
        p_organization_id: input.organizationId,
        p_action_type: input.action,
        ...(input.quantity === undefined ? {} : { p_quantity: input.quantity }),
        ...(input.idempotencyKey === undefined ? {} : { p_idempotency_key: input.idempotencyKey }),
        ...(input.metadata === undefined ? {} : { p_metadata: input.metadata as Json }),
      }),
    );
    return parseResult(consumeResultSchema, result, 'consume_credits_rpc');
  }

  /**
   * Would one unit of the action succeed now, and what would remain? Charges nothing (the SQL's
   * quantity 0). Errors as for `consume`.
   */
  async dryRun(input: { organizationId: string; action: string }): Promise<DryRunResult | InsufficientCredits> {
    const result = await this.consume({ organizationId: input.organizationId, action: input.action, quantity: 0 });
    if (result.success && !result.dry_run) {
      throw new BackendError('unknown', 'consume_credits_rpc charged credits for a dry run', { details: JSON.stringify(result) });
    }
    return result;
  }

  /**
   * Up to 100 consumptions in one call, each on its own: results in the items' order, a bad item
   * gets `{ success: false, error: code }` without affecting the others.
   * Errors (for the whole batch): invalid_items, not_authenticated, not_authorized.
   */
  async consumeBatch(organizationId: string, items: readonly BatchItem[]): Promise<BatchItemResult[]> {
    const result = await run(
      this.#supabase.rpc('consume_credits_batch', {
        p_organization_id: organizationId,
        p_items: items.map((item) => ({
          action_type: item.action,
          ...(item.quantity === undefined ? {} : { quantity: item.quantity }),
          ...(item.idempotencyKey === undefined ? {} : { idempotency_key: item.idempotencyKey }),
          ...(item.metadata === undefined ? {} : { metadata: item.metadata as Json }),
        })),
      }),
    );
    return parseResult(batchSchema, result, 'consume_credits_batch');
  }

  /**
   * Credits per pool now, every pool of the catalogue included (members and the service role).
   * Errors: not_authenticated, not_authorized.
   */
  async balances(organizationId: string): Promise<Record<CreditPoolKey, CreditBalance>> {
    const result = await run(this.#supabase.rpc('get_credit_balances', { p_organization_id: organizationId }));
    return parseResult(balancesSchema, result, 'get_credit_balances');
  }

  /**
   * Credits consumed and refunded per pool per UTC day in [from, to) (at most 366 days), by day
   * then pool; days without movement are absent. Errors: not_authorized, invalid_range.
   */
  async usage(input: { organizationId: string; from: Date | string; to: Date | string }): Promise<CreditUsageRow[]> {
    const rows = await run(
      this.#supabase.rpc('get_credit_usage', {
        p_organization_id: input.organizationId,
        p_from: timestamp(input.from),
        p_to: timestamp(input.to),
      }),
    );
    return parseResult(usageSchema, rows, 'get_credit_usage');
  }

  /**
   * Holds credits (an action's cost × quantity, or per-pool amounts) so nobody else can spend them,
   * for work whose cost is known only at the end. Returns the reservation or insufficient_credits.
   * Errors: invalid_ttl, invalid_amounts, invalid_quantity, pool_not_found, unknown_action,
   * action_disabled, invalid_idempotency_key, invalid_metadata, not_authorized.
   */
  async reserve(input: ReserveInput): Promise<ReserveResult> {
    if (input.ttlSeconds !== undefined && !Number.isFinite(input.ttlSeconds)) {
      throw new BackendError('invalid_ttl', 'ttlSeconds must be a finite number of seconds.', { status: 400 });
    }
    const call = () =>
      run(
        this.#supabase.rpc('reserve_credits', {
          p_organization_id: input.organizationId,
          ...(input.action === undefined ? {} : { p_action_type: input.action }),
          ...(input.amounts === undefined ? {} : { p_amounts: input.amounts }),
          ...(input.quantity === undefined ? {} : { p_quantity: input.quantity }),
          ...(input.ttlSeconds === undefined ? {} : { p_ttl: `${input.ttlSeconds} seconds` }),
          ...(input.idempotencyKey === undefined ? {} : { p_idempotency_key: input.idempotencyKey }),
          ...(input.metadata === undefined ? {} : { p_metadata: input.metadata as Json }),
        }),
      );
    let result: Json;
    try {
      result = await call();
    } catch (err) {
      // reserve_credits looks the key up before inserting, so a concurrent retry with the same
      // key can lose the race on the unique index. The winner has committed by then (the losing
      // insert waited for it): asking again replays its reservation.
      if (input.idempotencyKey === undefined || !isReservationKeyRace(err)) throw err;
      result = await call();
    }
    return parseResult(z.union([reservationSchema, insufficientSchema]), result, 'reserve_credits');
  }

  /**
   * Charges what a reservation used (per-pool amounts, only pools it holds; everything held when
   * omitted) and frees the rest. Using more than held is refused (exceeds_reservation) unless the
   * plan allows overage: then the excess is drawn from what is available and the rest recorded as
   * overage. Errors: reservation_not_found (404),
   * reservation_not_active (409), invalid_amounts, exceeds_reservation, not_authorized.
   */
  async commit(input: { reservationId: string; amounts?: CreditAmounts }): Promise<CommitResult> {
    const result = await run(
      this.#supabase.rpc('commit_reservation', {
        p_reservation_id: input.reservationId,
        ...(input.amounts === undefined ? {} : { p_amounts: input.amounts }),
      }),
    );
    return parseResult(commitSchema, result, 'commit_reservation');
  }

  /** Frees everything a reservation holds. Errors: reservation_not_found (404), reservation_not_active (409). */
  async release(reservationId: string): Promise<ReleaseResult> {
    const result = await run(this.#supabase.rpc('release_reservation', { p_reservation_id: reservationId }));
    return parseResult(releaseSchema, result, 'release_reservation');
  }

  /**
   * Adds credits to a pool (the service role and platform admins only). Errors: not_authorized,
   * organization_not_found, pool_not_found, invalid_amount, invalid_kind, invalid_expiry,
   * invalid_priority, invalid_metadata.
   */
  async grant(input: GrantInput): Promise<GrantResult> {
    const result = await run(
      this.#supabase.rpc('grant_credits', {
        p_organization_id: input.organizationId,
        p_pool: input.pool,
        p_amount: input.amount,
        ...(input.kind === undefined ? {} : { p_kind: input.kind }),
        ...(input.expiresAt === undefined ? {} : { p_expires_at: timestamp(input.expiresAt) }),
        ...(input.priority === undefined ? {} : { p_priority: input.priority }),
        ...(input.source === undefined ? {} : { p_source: input.source }),
        ...(input.metadata === undefined ? {} : { p_metadata: input.metadata as Json }),
      }),
    );
    return parseResult(grantSchema, result, 'grant_credits');
  }

  /**
   * Gives back a consumption (the service role and platform admins only): all that is still
   * refundable, or per-pool amounts. Never more than was consumed. Errors: not_authorized,
   * transaction_not_found (404), refund_exceeds_consumed, invalid_amounts, pool_not_found.
   */
  async refund(input: { transactionId: string; amounts?: CreditAmounts; reason?: string }): Promise<RefundResult> {
    const result = await run(
      this.#supabase.rpc('refund_credits', {
        p_transaction_id: input.transactionId,
        ...(input.amounts === undefined ? {} : { p_amounts: input.amounts }),
        ...(input.reason === undefined ? {} : { p_reason: input.reason }),
      }),
    );
    return parseResult(refundSchema, result, 'refund_credits');
  }

  /**
   * Moves an organization to a plan, starting a new period with its allocation (the service role
   * only: billing calls it; everyone else gets not_authorized). Errors: organization_not_found,
   * plan_not_found.
   */
  async changePlan(input: { organizationId: string; plan: string }): Promise<ChangePlanResult> {
    const result = await run(
      this.#supabase.rpc('change_plan', { p_organization_id: input.organizationId, p_plan_key: input.plan }),
    );
    return parseResult(changePlanSchema, result, 'change_plan');
  }

  /**
   * Sets the balance below which a pool emits credits.low (owners and admins); null restores the
   * default, 10% of the plan's allocation. Errors: not_authorized, invalid_threshold, pool_not_found.
   */
  async setLowThreshold(input: { organizationId: string; pool: CreditPoolKey; threshold: number | null }): Promise<void> {
    await run(
      this.#supabase.rpc('set_credit_low_threshold', {
        p_organization_id: input.organizationId,
        p_pool: input.pool,
        // The type generator marks no argument nullable; the SQL takes null as "the default".
        p_threshold: input.threshold as number,
      }),
    );
  }

  /**
   * The organization's most recent ledger entries, newest first (members; empty for anyone else).
   * One entry per pool and grant; `transaction_id` groups those of one operation.
   */
  async ledger(
    organizationId: string,
    options: { limit?: number; pool?: CreditPoolKey; transactionId?: string } = {},
  ): Promise<CreditLedgerEntry[]> {
    let query = this.#supabase.from('credit_ledger').select('*').eq('organization_id', organizationId);
    if (options.pool !== undefined) query = query.eq('pool_key', options.pool);
    if (options.transactionId !== undefined) query = query.eq('transaction_id', options.transactionId);
    return run(query.order('id', { ascending: false }).limit(options.limit ?? 50));
  }

  /** The credit pools, in display order (signed-in users). */
  async pools(): Promise<CreditPool[]> {
    return run(this.#supabase.from('credit_pools').select('*').order('sort_order').order('key'));
  }

  /** The plans with their allocation per pool (signed-in users), inactive ones included. */
  async plans(): Promise<CreditPlan[]> {
    return run(
      this.#supabase
        .from('credit_plans')
        .select('*, allocations:credit_plan_allocations(*)')
        .order('key')
        .order('pool_key', { referencedTable: 'allocations' }),
    );
  }

  /** The metered actions with their cost per pool (signed-in users), disabled ones included. */
  async actions(): Promise<CreditAction[]> {
    return run(
      this.#supabase
        .from('credit_actions')
        .select('*, costs:credit_action_costs(*)')
        .order('key')
        .order('pool_key', { referencedTable: 'costs' }),
    );
  }
}

function isReservationKeyRace(err: unknown): boolean {
  return (
    err instanceof BackendError &&
    err.sqlstate === '23505' &&
    err.message.includes('credit_reservations_idempotency_key_idx')
  );
}

function timestamp(value: Date | string): string {
  return value instanceof Date ? value.toISOString() : value;
}
