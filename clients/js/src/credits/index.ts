// Credits: consumption, balances and usage, reservations, grants and refunds.
export * from './credits.ts';
export * from './types.ts';
