// JSON-line logs with a request id. Callers pass explicit fields; headers are never logged, and
// fields whose names look like credentials are redacted as a second line of defence.

export type Fields = Record<string, unknown>;

export interface Logger {
  readonly requestId: string;
  info(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  error(msg: string, fields?: Fields): void;
}

const SECRET_FIELD = /authorization|apikey|api_key|secret|password|token|cookie|^key$/i;
// A client-chosen id is echoed into logs and headers: accept only short, plain ones.
const SAFE_REQUEST_ID = /^[A-Za-z0-9._-]{1,128}$/;

/** The caller's x-request-id when it is a plain short token, otherwise a fresh UUID. */
export function requestIdFrom(req: Request): string {
  const given = req.headers.get('x-request-id');
  return given && SAFE_REQUEST_ID.test(given) ? given : crypto.randomUUID();
}

function redact(fields: Fields): Fields {
  const out: Fields = {};
  for (const [k, v] of Object.entries(fields)) out[k] = SECRET_FIELD.test(k) ? '[redacted]' : v;
  return out;
}

export function createLogger(requestId: string, base: Fields = {}): Logger {
  const write = (level: string, msg: string, fields: Fields = {}) => {
    const line = JSON.stringify({
      time: new Date().toISOString(),
      level,
      msg,
      request_id: requestId,
      ...redact({ ...base, ...fields }),
    });
    if (level === 'error') console.error(line);
    else console.log(line);
  };
  return {
    requestId,
    info: (msg, fields) => write('info', msg, fields),
    warn: (msg, fields) => write('warn', msg, fields),
    error: (msg, fields) => write('error', msg, fields),
  };
}
