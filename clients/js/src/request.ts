// Runs a supabase-js query and turns its `{ data, error, status }` into data or a BackendError.
import type { PostgrestSingleResponse, SupabaseClient } from '@supabase/supabase-js';
import type { z } from 'zod';
import { BackendError } from './errors.ts';

export async function run<T>(query: PromiseLike<PostgrestSingleResponse<T>>): Promise<T> {
  let response: PostgrestSingleResponse<T>;
  try {
    response = await query;
  } catch (err) {
    // postgrest-js rethrows aborts and timeouts instead of returning them.
    throw BackendError.fromUnknown(err);
  }
  if (response.error) throw BackendError.fromPostgrest(response.error, response.status);
  return response.data;
}

/** Checks the shape of a jsonb result the SQL promises, so callers get the type they are told. */
export function parseResult<S extends z.ZodType>(schema: S, value: unknown, what: string): z.output<S> {
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    throw new BackendError('unknown', `Unexpected result from ${what}`, {
      details: parsed.error.message,
      cause: parsed.error,
    });
  }
  return parsed.data;
}

/**
 * Calls an edge function through supabase-js (`functions.invoke`) and returns its JSON answer, or
 * throws BackendError with the function's error code (`{"error": {"code", ...}}`).
 */
export async function invoke<T>(
  supabase: SupabaseClient,
  name: string,
  options: { body?: unknown; headers?: Record<string, string>; method?: 'POST' | 'GET' } = {},
): Promise<T> {
  let result: Awaited<ReturnType<SupabaseClient['functions']['invoke']>>;
  try {
    result = await supabase.functions.invoke(name, options as Parameters<SupabaseClient['functions']['invoke']>[1]);
  } catch (err) {
    throw BackendError.fromUnknown(err);
  }
  if (!result.error) return result.data as T;
  const response: unknown = (result.error as { context?: unknown }).context;
  if (response instanceof Response) {
    const text = await response.text().catch(() => '');
    let body: unknown = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      body = { message: text };
    }
    throw BackendError.fromFunction(response.status, body);
  }
  // A FunctionsFetchError: no answer at all.
  throw BackendError.fromUnknown(result.error);
}
