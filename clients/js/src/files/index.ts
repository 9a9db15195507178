// Files: upload by context (the server picks the store), download, signed and public URLs, list,
// delete, move between the stores, usage.
export * from './files.ts';
export * from './types.ts';
