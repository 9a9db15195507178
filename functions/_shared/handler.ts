// The wrapper every function uses: CORS (and the OPTIONS preflight), a request id, an allowed
// method list, error mapping to the JSON error shape, and one log line per request. A function
// body then only validates, calls SQL and maps the result.
import { corsHeaders, preflight } from './cors.ts';
import { errorResponse, HttpError, toHttpError } from './errors.ts';
import { createLogger, type Logger, requestIdFrom } from './log.ts';

export interface Ctx {
  requestId: string;
  log: Logger;
}

export type Handler = (req: Request) => Promise<Response>;

export interface HandlerOptions {
  /** Function name, for logs. */
  name: string;
  /** Allowed methods besides OPTIONS; others get 405 method_not_allowed. Default: any. */
  methods?: string[];
}

/** A JSON response. */
export function json(data: unknown, status = 200, headers?: HeadersInit): Response {
  const h = new Headers(headers);
  h.set('content-type', 'application/json');
  return new Response(JSON.stringify(data), { status, headers: h });
}

/** Copies res with CORS headers and the request id added (a fetched Response's headers are immutable). */
function decorate(res: Response, requestId: string): Response {
  const headers = new Headers(res.headers);
  for (const [k, v] of Object.entries(corsHeaders)) headers.set(k, v);
  headers.set('x-request-id', requestId);
  return new Response(res.body, { status: res.status, statusText: res.statusText, headers });
}

export function createHandler(fn: (req: Request, ctx: Ctx) => Promise<Response>, options: HandlerOptions): Handler {
  return async (req) => {
    if (req.method === 'OPTIONS') return preflight();

    const started = performance.now();
    const requestId = requestIdFrom(req);
    const log = createLogger(requestId, { fn: options.name });
    let res: Response;
    try {
      if (options.methods && !options.methods.includes(req.method)) {
        throw new HttpError(405, 'method_not_allowed', `Use ${options.methods.join(' or ')}`);
      }
      res = await fn(req, { requestId, log });
    } catch (err) {
      const httpError = toHttpError(err);
      if (httpError.status >= 500) {
        // The cause goes to the log only (message and SQLSTATE, no stack); the caller gets a code.
        const e = err as { name?: string; message?: string; code?: unknown };
        log.error('unhandled error', { error: e?.name, message: e?.message, code: e?.code });
      }
      res = errorResponse(httpError);
      if (httpError.status === 405 && options.methods) {
        res.headers.set('allow', [...options.methods, 'OPTIONS'].join(', '));
      }
    }
    log.info('request', {
      method: req.method,
      path: new URL(req.url).pathname, // never the query string: it may carry an apikey
      status: res.status,
      ms: Math.round(performance.now() - started),
    });
    return decorate(res, requestId);
  };
}
