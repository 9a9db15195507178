// @saas-backend/client: a typed SDK over supabase-js for this backend.
//
//   const backend = createBackendClient({ url, anonKey, accessToken: async () => token });
//   const org = await backend.organizations.create({ name: 'Acme', slug: 'acme' });
//
//   const charge = await backend.credits.consume({ organizationId: org.id, action: 'ai_chat' });
//   if (!charge.success) showTopUp(charge.pool, charge.required, charge.available);
//
//   const file = await backend.files.upload({ organizationId: org.id, context: 'customer_document', file });
//   const link = await backend.files.url(file, { expiresIn: 600 });
//
// Methods throw BackendError (with a typed `code`) instead of returning `{ data, error }`
// (running out of credits is a result, not an error).
// `backend.supabase` is the typed supabase-js client underneath, for anything not wrapped yet.
//
// Layout: what every area shares at the top (client.ts, errors.ts, error-codes.ts, request.ts,
// session.ts), one folder per area (tenancy/, credits/, files/, billing/), each exporting its module and its types.
export * from './client.ts';
export * from './errors.ts';
export * from './error-codes.ts';
export * from './tenancy/index.ts';
export * from './credits/index.ts';
export * from './files/index.ts';
export * from './billing/index.ts';
export type { Database, Json, Tables, Enums } from './database.types.ts';
