// PKCE for the email flows (GoTrue's flow_state): a flow started with a code_challenge gets a
// row of auth.flow_state holding an auth code; the email link's token carries the "pkce_" prefix,
// and GET /verify answers with ?code=<auth code> instead of tokens, which the client exchanges
// with its code_verifier at POST /token?grant_type=pkce.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { Db, Tx } from './db.ts';
import { badRequest, notFound, unprocessable } from './errors.ts';
import type { AuthMethod } from './sessions.ts';

export interface FlowStateRow {
  id: string;
  user_id: string | null;
  auth_code: string;
  code_challenge_method: string;
  code_challenge: string;
  provider_type: string;
  authentication_method: string;
  created_at: Date;
  auth_code_issued_at: Date | null;
}

/** GoTrue's ParseAuthenticationMethod for the verification types of the email links. */
export function authMethodOfVerifyType(type: string): AuthMethod {
  if (type.endsWith('signup')) return 'email/signup';
  if (type === 'magiclink' || type === 'recovery' || type === 'invite' || type === 'email_change') return type;
  throw badRequest('validation_failed', `unsupported authentication method ${type}`);
}

export async function createFlowState(
  tx: Tx,
  p: { providerType: string; method: AuthMethod; codeChallenge: string; codeChallengeMethod: string; userId: string },
): Promise<void> {
  await tx`
    insert into auth.flow_state (id, user_id, auth_code, code_challenge_method, code_challenge, provider_type,
      authentication_method, created_at, updated_at)
    values (gen_random_uuid(), ${p.userId}, ${crypto.randomUUID()}, ${p.codeChallengeMethod.toLowerCase()}::auth.code_challenge_method,
      ${p.codeChallenge}, ${p.providerType}, ${p.method}, now(), now())`;
}

/** The auth code of the user's latest flow for `method` (GoTrue's issueAuthCode). */
export async function issueAuthCode(tx: Tx, userId: string, method: AuthMethod): Promise<string> {
  const [flow] = await tx<FlowStateRow[]>`
    select * from auth.flow_state where user_id = ${userId} and authentication_method = ${method}
    order by created_at desc limit 1`;
  if (!flow) throw unprocessable('flow_state_not_found', 'No valid flow state found for user.');
  await tx`update auth.flow_state set auth_code_issued_at = now(), updated_at = now() where id = ${flow.id}`;
  return flow.auth_code;
}

export async function findFlowByAuthCode(db: Db, authCode: string): Promise<FlowStateRow | undefined> {
  const [flow] = await db<FlowStateRow[]>`
    select id, user_id, auth_code, code_challenge_method::text as code_challenge_method, code_challenge, provider_type,
      authentication_method, created_at, auth_code_issued_at
    from auth.flow_state where auth_code = ${authCode}`;
  return flow;
}

export function isFlowExpired(flow: FlowStateRow, expirySeconds: number): boolean {
  const from = flow.auth_code_issued_at && flow.authentication_method === 'magiclink' ? flow.auth_code_issued_at : flow.created_at;
  return Date.now() > new Date(from).getTime() + expirySeconds * 1000;
}

/** RFC 7636: s256 compares base64url(sha256(verifier)), plain the verifier itself. */
export function verifyCodeChallenge(flow: FlowStateRow, verifier: string): void {
  const expected = flow.code_challenge_method === 's256'
    ? createHash('sha256').update(verifier).digest('base64url')
    : verifier;
  const a = new TextEncoder().encode(expected);
  const b = new TextEncoder().encode(flow.code_challenge);
  if (a.byteLength !== b.byteLength || !timingSafeEqual(a, b)) {
    throw badRequest('bad_code_verifier', 'code challenge does not match previously saved code verifier');
  }
}

export function flowNotFound() {
  return notFound('flow_state_not_found', 'invalid flow state, no valid flow state found');
}
