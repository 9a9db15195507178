// Which provider sends: Resend when RESEND_API_KEY is set (hosted, or a local stack pointed at a
// real or fake Resend), otherwise the local mailbox (LOCAL_MAIL_DIR, set only by the local stack).
import type { EmailEnv } from '../env.ts';
import { mailboxProvider } from './mailbox.ts';
import { resendProvider } from './resend.ts';
import type { EmailProvider } from './types.ts';

export function emailProvider(env: EmailEnv): EmailProvider {
  if (env.resendApiKey) return resendProvider(env.resendApiKey, env.resendBaseUrl);
  if (env.localMailDir) return mailboxProvider(env.localMailDir);
  throw new Error('Missing required environment variable: RESEND_API_KEY');
}

export type { EmailProvider, OutgoingEmail, SendResult } from './types.ts';
export { SendError } from './types.ts';
