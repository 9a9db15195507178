// zod at the edge: every input is parsed before use; failures are 400 invalid_request with the
// zod issues (path, message, code) in details.
import { z } from 'zod';
import { HttpError } from './errors.ts';

function invalid(error: z.ZodError): HttpError {
  const issues = error.issues.map((i) => ({ path: i.path.map(String).join('.'), message: i.message, code: i.code }));
  return new HttpError(400, 'invalid_request', 'The request is invalid', { issues });
}

/** Parses a value with schema or throws 400 invalid_request. */
export function parse<S extends z.ZodType>(schema: S, value: unknown): z.infer<S> {
  const result = schema.safeParse(value);
  if (!result.success) throw invalid(result.error);
  return result.data;
}

/**
 * Parses the JSON body with schema; a body that is not JSON is 400 invalid_request too. With
 * `emptyAs`, an empty body counts as that value (for functions whose every field is optional).
 */
export async function parseJson<S extends z.ZodType>(req: Request, schema: S, { emptyAs }: { emptyAs?: unknown } = {}): Promise<z.infer<S>> {
  let body: unknown;
  try {
    const text = await req.text();
    body = text === '' && emptyAs !== undefined ? emptyAs : JSON.parse(text);
  } catch {
    throw new HttpError(400, 'invalid_request', 'The request body must be valid JSON');
  }
  return parse(schema, body);
}

/**
 * Parses the query string with schema. Values are strings (repeated keys become arrays), so use
 * z.coerce for numbers and booleans.
 */
export function parseQuery<S extends z.ZodType>(req: Request, schema: S): z.infer<S> {
  const params: Record<string, string | string[]> = {};
  for (const [key, value] of new URL(req.url).searchParams) {
    const prev = params[key];
    params[key] = prev === undefined ? value : [...(Array.isArray(prev) ? prev : [prev]), value];
  }
  return parse(schema, params);
}
