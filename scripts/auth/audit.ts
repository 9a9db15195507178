// GoTrue's audit trail: one auth.audit_log_entries row per action, in the action's transaction,
// with the payload GoTrue writes (Studio's Auth logs read these on a local stack).
import type { Tx } from './db.ts';
import { NIL_UUID } from './users.ts';

export type AuditAction =
  | 'login'
  | 'logout'
  | 'user_signedup'
  | 'user_invited'
  | 'user_deleted'
  | 'user_modified'
  | 'user_recovery_requested'
  | 'user_confirmation_requested'
  | 'user_repeated_signup'
  | 'user_updated_password'
  | 'token_revoked'
  | 'token_refreshed';

const LOG_TYPE: Record<AuditAction, string> = {
  login: 'account',
  logout: 'account',
  user_signedup: 'team',
  user_invited: 'team',
  user_deleted: 'team',
  token_revoked: 'token',
  token_refreshed: 'token',
  user_modified: 'user',
  user_recovery_requested: 'user',
  user_confirmation_requested: 'user',
  user_repeated_signup: 'user',
  user_updated_password: 'user',
};

/** Who did it: a user, or the admin (service role) whose "email" is its role, as GoTrue records it. */
export interface Actor {
  id: string;
  email: string | null;
  phone?: string | null;
  is_sso_user?: boolean;
  raw_user_meta_data?: Record<string, unknown> | null;
}

export const SERVICE_ROLE_ACTOR: Actor = { id: NIL_UUID, email: 'service_role' };

export async function audit(tx: Tx, actor: Actor, action: AuditAction, traits?: Record<string, unknown>): Promise<void> {
  const payload: Record<string, unknown> = {
    actor_id: actor.id,
    actor_via_sso: actor.is_sso_user ?? false,
    actor_username: actor.phone || actor.email || '',
    action,
    log_type: LOG_TYPE[action],
  };
  const name = actor.raw_user_meta_data?.full_name;
  if (name !== undefined) payload.actor_name = name;
  if (traits) payload.traits = traits;
  await tx`
    insert into auth.audit_log_entries (instance_id, id, payload, created_at, ip_address)
    values (${NIL_UUID}, gen_random_uuid(), ${tx.json(payload as never)}, now(), '')`;
}
