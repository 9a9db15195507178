// GET /settings (what the client may use: providers, sign-ups, autoconfirm) and GET /health,
// shaped as GoTrue answers them; GET /.well-known/jwks.json for a project signing with the legacy
// shared secret: no public keys (clients verify such tokens by calling GET /user).
import type { Ctx } from './context.ts';
import { json } from './respond.ts';

const OAUTH_PROVIDERS = [
  'apple', 'azure', 'bitbucket', 'discord', 'facebook', 'snapchat', 'figma', 'fly', 'github', 'gitlab', 'google',
  'keycloak', 'kakao', 'linkedin', 'linkedin_oidc', 'notion', 'spotify', 'slack', 'slack_oidc', 'workos', 'twitch',
  'twitter', 'zoom',
];

export function handleSettings(ctx: Ctx): Response {
  const { config } = ctx;
  const external: Record<string, boolean> = { anonymous_users: false };
  for (const p of OAUTH_PROVIDERS) external[p] = false;
  external.email = config.email.enabled;
  external.phone = false;
  return json({
    external,
    disable_signup: !config.enableSignup,
    mailer_autoconfirm: !config.email.enableConfirmations,
    phone_autoconfirm: false,
    sms_provider: '',
    saml_enabled: false,
    saml_private_key_next_configured: false,
    passkeys_enabled: false,
  });
}

export function handleHealth(): Response {
  return json({
    version: 'local',
    name: 'GoTrue',
    description: 'GoTrue is a user registration and authentication API',
  });
}

export function handleJwks(): Response {
  return json({ keys: [] });
}
