// Credits: consuming metered actions, balances and usage, reservations, and (for the service role
// and platform admins) grants and refunds. Every write goes through the SQL RPCs of
// supabase/migrations/*_credits.sql, which check the caller; the catalogue and the ledger are
// read from their tables (row-level security decides what the caller sees).
//
// Running out of credits is a RESULT (`{ success: false, error: 'insufficient_credits', ... }`),
// not an error: branch on `result.success`. Everything else that goes wrong throws BackendError
// with the SQL's code (invalid_quantity, unknown_action, idempotency_key_reused, ...).
import type { SupabaseClient } from '@supabase/supabase-js';
import type { Database, Json } from '../database.types.ts';
import { BackendError } from '../errors.ts';
import { parseResult, run } from '../request.ts';
import {
  balancesSchema,
  batchSchema,
  changePlanSchema,
  stripesSchema,
  commitSchema,
  consumeResultSchema,
  grantSchema,
  refundSchema,
  releaseSchema,
  reserveResultSchema,
  usageSchema,
} from './schemas.ts';
import type {
  BatchItem,
  BatchItemResult,
  ChangePlanResult,
  CommitResult,
  ConsumeInput,
  ConsumeResult,
  CreditAction,
  CreditAmounts,
  CreditBalance,
  CreditLedgerEntry,
  CreditPlan,
  CreditPool,
  CreditPoolKey,
  CreditUsageRow,
  DryRunResult,
  GrantInput,
  GrantResult,
  InsufficientCredits,
  RefundResult,
  ReleaseResult,
  ReserveInput,
  ReserveResult,
  StripesResult,
} from './types.ts';

export interface CreditsContext {
  supabase: SupabaseClient<Database>;
}

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
    // reserve_credits takes the pool locks before it looks the key up, so concurrent retries with
    // one key queue behind the first and replay its reservation: no race is left to retry.
    const result = await run(
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
    return parseResult(reserveResultSchema, result, 'reserve_credits');
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
   * Spreads a pool's balance over 2 to 64 stripes, so that many concurrent calls of one
   * organization do not take turns on one row; 1 undoes it (service role only: everyone else
   * gets not_authorized). Draw order, refusals and low-balance events stay exact. Errors:
   * invalid_stripes, pool_not_found, organization_not_found.
   */
  async setStripes(input: { organizationId: string; pool: CreditPoolKey; stripes: number }): Promise<StripesResult> {
    const result = await run(
      this.#supabase.rpc('set_credit_stripes', {
        p_organization_id: input.organizationId,
        p_pool: input.pool,
        p_stripes: input.stripes,
      }),
    );
    return parseResult(stripesSchema, result, 'set_credit_stripes');
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

function timestamp(value: Date | string): string {
  return value instanceof Date ? value.toISOString() : value;
}
