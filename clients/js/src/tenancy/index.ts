// Tenancy: organizations, members, invitations.
export * from './organizations.ts';
export * from './types.ts';
