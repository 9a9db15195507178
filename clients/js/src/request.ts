// Runs a supabase-js query and turns its `{ data, error, status }` into data or a BackendError.
import type { PostgrestSingleResponse } from '@supabase/supabase-js';
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
