// The client factory: one supabase-js client underneath, one module per area on top of it.
import { createClient, type SupabaseClient, type SupabaseClientOptions } from '@supabase/supabase-js';
import type { Database } from './database.types.ts';
import { Credits } from './credits/credits.ts';
import { Billing } from './billing/billing.ts';
import { BackendError } from './errors.ts';
import { Files } from './files/files.ts';
import { Organizations } from './tenancy/organizations.ts';
import { jwtSubject } from './session.ts';

export type TypedSupabaseClient = SupabaseClient<Database>;

/** Where a user's access token comes from; resolving to null means "anonymous". */
export type AccessTokenProvider = () => Promise<string | null>;

export type BackendClientOptions =
  | {
      /** The project's API URL, e.g. http://127.0.0.1:54321 or https://<ref>.supabase.co. */
      url: string;
      /** The project's anon (publishable) key. */
      anonKey: string;
      /**
       * The signed-in user's JWT, for auth outside Supabase Auth (a third-party provider, a
       * server minting tokens). Without it the client uses Supabase Auth's session
       * (`backend.supabase.auth`), or is anonymous.
       */
      accessToken?: AccessTokenProvider;
      /** Passed on to supabase-js `createClient` (e.g. `realtime: { transport }` on Node 20). */
      options?: SupabaseClientOptions<'public'>;
      supabase?: never;
    }
  | {
      /** A supabase-js client you created yourself (typed with `Database`). */
      supabase: TypedSupabaseClient;
      /**
       * The token the client sends, if it was created with supabase-js's `accessToken` option
       * (then `supabase.auth` is unavailable and this is how the SDK learns who the caller is).
       */
      accessToken?: AccessTokenProvider;
      url?: never;
      anonKey?: never;
      options?: never;
    };

export interface BackendClient {
  /** The typed supabase-js client every module goes through. */
  readonly supabase: TypedSupabaseClient;
  readonly organizations: Organizations;
  /** Credits: consume, balances, usage, reservations; grants and refunds for admins. */
  readonly credits: Credits;
  /** Files: upload by context, download, URLs, list, move between the stores, delete, usage. */
  readonly files: Files;
  /** Billing: checkout, the customer portal, saving a card, invoices, payment methods, status. */
  readonly billing: Billing;
  /** The caller's user id (the token's `sub`), or null when anonymous. */
  currentUserId(): Promise<string | null>;
}

export function createBackendClient(options: BackendClientOptions): BackendClient {
  const supabase: TypedSupabaseClient =
    options.supabase ??
    createClient<Database>(options.url, options.anonKey, {
      ...options.options,
      ...(options.accessToken ? { accessToken: options.accessToken } : {}),
    });
  const accessToken = options.accessToken;

  async function currentUserId(): Promise<string | null> {
    if (accessToken) return jwtSubject(await accessToken());
    try {
      const { data } = await supabase.auth.getSession();
      return data.session?.user.id ?? jwtSubject(data.session?.access_token);
    } catch {
      // A client built with supabase-js's `accessToken` option has no `auth`: pass `accessToken`.
      return null;
    }
  }

  async function requireUserId(): Promise<string> {
    const userId = await currentUserId();
    if (!userId) {
      throw new BackendError('not_authenticated', 'Sign in to do this (no user access token).', { status: 401 });
    }
    return userId;
  }

  return {
    supabase,
    organizations: new Organizations({ supabase, requireUserId }),
    credits: new Credits({ supabase }),
    files: new Files({ supabase }),
    billing: new Billing({ supabase }),
    currentUserId,
  };
}
