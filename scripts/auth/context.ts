// What every handler gets about the request it serves.
import type { AuthConfig } from './config.ts';

export interface Ctx {
  config: AuthConfig;
  req: Request;
  url: URL;
  /**
   * The client's address, the key of the per-address rate limits: the peer the gateway accepted
   * the connection from (on hosted, the address the platform's proxy passes in GoTrue's rate-limit
   * header). X-Forwarded-For is not trusted: nothing in front of the local gateway sets it.
   */
  ip: string;
  userAgent: string;
  requestId: string;
}

/** The audience a request asks for (X-JWT-AUD), else the project's default. */
export function requestAud(ctx: Ctx): string {
  return ctx.req.headers.get('x-jwt-aud') || 'authenticated';
}
