// The Send Email Hook as GoTrue calls it: a POST of {metadata, user, email_data} signed per
// Standard Webhooks with every secret of [auth.hook.send_email] (SEND_EMAIL_HOOK_SECRET here),
// to the project's auth-send-email function through this gateway, as hosted Auth calls the
// project's function. 200/202/204 is success; {"error": {"http_code", "message"}} is the hook's
// refusal, passed on to the caller; a timeout is 422 hook_timeout. The body carries the code and
// token hash, so it is never logged.
import { Webhook } from 'standardwebhooks';
import type { AuthConfig } from './config.ts';
import { AuthError, internalError } from './errors.ts';

export interface EmailData {
  token: string;
  token_hash: string;
  redirect_to: string;
  email_action_type: string;
  site_url: string;
  token_new: string;
  token_hash_new: string;
}

function signatures(secrets: string[], id: string, at: Date, payload: string): string {
  return secrets.map((secret) => {
    if (!secret.startsWith('v1,')) throw internalError('Invalid Send Email Hook secret format');
    return new Webhook(secret.slice('v1,'.length).replace(/^whsec_/, '')).sign(id, at, payload);
  }).join(', ');
}

export async function callSendEmailHook(
  config: AuthConfig,
  user: Record<string, unknown>,
  emailData: EmailData,
  clientIp: string,
): Promise<void> {
  const id = crypto.randomUUID();
  const at = new Date();
  const payload = JSON.stringify({
    metadata: { uuid: id, time: at.toISOString(), name: 'send_email', ip_address: clientIp },
    user,
    email_data: emailData,
  });
  let res: Response;
  try {
    res = await fetch(config.hook.uri, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'webhook-id': id,
        'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
        'webhook-signature': signatures(config.hook.secrets, id, at, payload),
      },
      body: payload,
      signal: AbortSignal.timeout(config.hook.timeoutMs),
    });
  } catch (err) {
    if ((err as Error).name === 'TimeoutError') {
      throw new AuthError(422, 'hook_timeout', `Failed to reach hook within maximum time of ${(config.hook.timeoutMs / 1000).toFixed(6)} seconds`);
    }
    throw internalError('Failed to reach hook');
  }
  const text = await res.text();
  if (res.status === 204) return;
  if (res.status === 200 || res.status === 202) {
    let body: unknown = {};
    try {
      body = text ? JSON.parse(text) : {};
    } catch {
      throw new AuthError(400, 'hook_payload_invalid_content_type', 'Invalid JSON response.');
    }
    const error = (body as { error?: { http_code?: number; message?: string } }).error;
    if (error) throw new AuthError(error.http_code && error.http_code >= 400 ? error.http_code : 500, 'unexpected_failure', error.message ?? 'Error from hook');
    return;
  }
  throw internalError(`Unexpected status code returned from hook: ${res.status}`);
}
