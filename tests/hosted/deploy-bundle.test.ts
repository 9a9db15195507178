// What `supabase functions deploy` uploads must type-check on its own: the real CLI deploys every
// function of supabase/config.toml to a fake Management API, and each upload is checked in a
// directory that holds only the uploaded files (no node_modules, no root deno.json), the way the
// hosted bundler sees it. A function whose imports only resolve through the local checkout fails.
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { parse } from 'smol-toml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LOCAL_DIR, ROOT } from '../../scripts/lib/config.mjs';
import { type FakeManagementApi, type RecordedDeploy, startFakeManagementApi } from '../fakes/management-api.ts';

// Async on purpose: the fake answers the CLI from this process, so a spawnSync would deadlock.
const run = promisify(execFile);

const SUPABASE_CLI = path.join(ROOT, 'node_modules/.bin/supabase');
const DENO = path.join(ROOT, 'node_modules/.bin/deno');
// npm packages download from registry.npmjs.org once and are reused by later runs.
const DENO_DIR = path.join(LOCAL_DIR, 'deno-deploy-cache');
// The CLI's telemetry caches the project it looked up here (when nothing is cached yet).
const LINKED_PROJECT_CACHE = path.join(ROOT, 'supabase/.temp/linked-project.json');
const ACCESS_TOKEN = `sbp_${'0123456789abcdef'.repeat(3).slice(0, 40)}`;

interface ConfiguredFunction {
  name: string;
  enabled: boolean;
  verifyJwt: boolean;
  /** Paths relative to the repository root, as the CLI uploads them. */
  entrypoint: string;
  importMap?: string;
}

/** [functions.<name>] of supabase/config.toml, with the CLI's defaults; paths there are relative to supabase/. */
function configuredFunctions(): ConfiguredFunction[] {
  const config = parse(readFileSync(path.join(ROOT, 'supabase/config.toml'), 'utf8'));
  const tables = (config.functions ?? {}) as Record<string, Record<string, unknown>>;
  const fromSupabaseDir = (p: string) =>
    path.relative(ROOT, path.resolve(ROOT, 'supabase', p)).split(path.sep).join('/');
  return Object.entries(tables).map(([name, fn]) => ({
    name,
    enabled: fn.enabled !== false,
    verifyJwt: fn.verify_jwt !== false,
    entrypoint: fromSupabaseDir(typeof fn.entrypoint === 'string' ? fn.entrypoint : `./functions/${name}/index.ts`),
    importMap: typeof fn.import_map === 'string' ? fromSupabaseDir(fn.import_map) : undefined,
  }));
}

/** Writes a deploy's files into a fresh directory, the only files the hosted bundler gets. */
function materialize(deploy: RecordedDeploy): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), `deploy-${deploy.slug}-`));
  for (const file of deploy.files) {
    const target = path.resolve(dir, file.path);
    expect(target.startsWith(dir + path.sep), `${file.path} stays inside the upload`).toBe(true);
    mkdirSync(path.dirname(target), { recursive: true });
    writeFileSync(target, file.bytes);
  }
  return dir;
}

const FUNCTIONS = configuredFunctions();
const ENABLED = FUNCTIONS.filter((fn) => fn.enabled);

describe('supabase functions deploy --use-api', () => {
  let api: FakeManagementApi;
  let profileDir: string;
  const uploadDirs: string[] = [];

  beforeAll(async () => {
    api = await startFakeManagementApi();
    profileDir = mkdtempSync(path.join(os.tmpdir(), 'deploy-profile-'));
    const profile = path.join(profileDir, 'profile.yaml');
    writeFileSync(profile, [
      'name: fake-hosted',
      `api_url: ${api.url}`,
      `dashboard_url: ${api.url}/dashboard`,
      'project_host: supabase.test',
      '',
    ].join('\n'));

    // The caller's SUPABASE_* variables (a real access token, another API URL) must not reach the
    // CLI: it deploys to the fake only.
    const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('SUPABASE_')));
    const hadLinkedProject = existsSync(LINKED_PROJECT_CACHE);
    try {
      await run(SUPABASE_CLI, [
        'functions', 'deploy', ...FUNCTIONS.map((fn) => fn.name),
        '--use-api', `--remote=${api.projectRef}`, '--workdir', ROOT, '--yes', '--profile', profile,
      ], { cwd: ROOT, env: { ...env, SUPABASE_ACCESS_TOKEN: ACCESS_TOKEN, DO_NOT_TRACK: '1' }, timeout: 60000 });
    } catch (err) {
      const { stdout, stderr } = err as { stdout?: string; stderr?: string };
      throw new Error(`supabase functions deploy failed:\n${stdout ?? ''}${stderr ?? ''}`);
    } finally {
      // The fake project must not stay behind in the checkout as if it were the linked one.
      if (!hadLinkedProject) rmSync(LINKED_PROJECT_CACHE, { force: true });
    }
  }, 90000);

  afterAll(async () => {
    await api?.close();
    for (const dir of [profileDir, ...uploadDirs]) if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const deployOf = (name: string): RecordedDeploy => {
    const deploy = api.deploys.find((d) => d.slug === name);
    if (!deploy) throw new Error(`${name} was not deployed`);
    return deploy;
  };

  it('deploys every enabled function of config.toml once, and activates them', () => {
    expect(api.deploys.map((d) => d.slug).sort()).toEqual(ENABLED.map((fn) => fn.name).sort());
    for (const fn of ENABLED) expect(api.functions.get(fn.name)?.status).toBe('ACTIVE');
  });

  describe.each(ENABLED)('$name', (fn) => {
    it("uploads config.toml's verify_jwt, entrypoint and import map", () => {
      const { metadata, files } = deployOf(fn.name);
      const uploaded = files.map((f) => f.path);
      expect(metadata.verify_jwt).toBe(fn.verifyJwt);
      expect(metadata.entrypoint_path).toBe(fn.entrypoint);
      expect(uploaded).toContain(metadata.entrypoint_path);
      expect(metadata.import_map_path, 'config.toml names an import map').toBe(fn.importMap);
      expect(uploaded).toContain(metadata.import_map_path);
    });

    it('type-checks from the uploaded files alone', async () => {
      const deploy = deployOf(fn.name);
      const { metadata } = deploy;
      const dir = materialize(deploy);
      uploadDirs.push(dir);
      const importMap = metadata.import_map_path ? [`--import-map=${metadata.import_map_path}`] : [];
      try {
        await run(DENO, ['check', '--no-config', ...importMap, '--node-modules-dir=none', metadata.entrypoint_path], {
          cwd: dir,
          env: { ...process.env, DENO_DIR, NO_COLOR: '1' },
          timeout: 90000,
        });
      } catch (err) {
        const { stderr } = err as { stderr?: string };
        expect.fail(`deno check of the uploaded ${fn.name} failed:\n${stderr ?? String(err)}`);
      }
    }, 120000);
  });
});

describe('functions/import_map.json', () => {
  const readJson = (file: string) => JSON.parse(readFileSync(path.join(ROOT, file), 'utf8'));
  const imports: Record<string, string> = readJson('functions/import_map.json').imports;
  const dependencies: Record<string, string> = readJson('package.json').dependencies;

  it('is the import map of the root deno.json too, so versions live in one place', () => {
    const denoJson = readJson('deno.json');
    expect(denoJson.importMap).toBe('./functions/import_map.json');
    expect(denoJson.imports).toBeUndefined();
  });

  it.each(Object.entries(imports))('pins %s to the version package.json installs', (_specifier, target) => {
    // npm:<name>@<version>[/<subpath>], where <name> may be scoped (@scope/name).
    const match = /^npm:((?:@[^/@]+\/)?[^/@]+)@([^/]+)(?:\/.*)?$/.exec(target);
    expect(match, `${target} is an npm: specifier with an exact version`).not.toBeNull();
    const [, name, version] = match!;
    expect(dependencies[name], `package.json has ${name}`).toBeDefined();
    expect(version).toBe(dependencies[name]);
  });
});
