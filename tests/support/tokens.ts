// Access tokens shaped like GoTrue's, minted with the local JWT secret, for a session of auth.sessions.
// No database here: tests/hosted signs tokens for users of its own throwaway database.
import { signUserToken } from '../../scripts/lib/config.mjs';

export interface TokenSubject {
  id: string;
  email: string;
  /** Lands in the token's `app_metadata`, e.g. `{ platform_admin: true }`. */
  appMetadata?: Record<string, unknown>;
  /** The token's session_id: a row of auth.sessions, or PostgREST refuses the token (session_ended). */
  sessionId?: string;
}

/** A signed-in user's access token (role `authenticated`, `sub` = id), valid for an hour. */
export async function userToken(subject: TokenSubject): Promise<string> {
  return signUserToken({
    id: subject.id,
    email: subject.email,
    appMetadata: subject.appMetadata ?? {},
    ...(subject.sessionId ? { sessionId: subject.sessionId } : {}),
  });
}
