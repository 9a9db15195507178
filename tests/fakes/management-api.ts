// A fake of the Supabase Management API (api.supabase.com), with the routes the real Supabase CLI
// calls on `supabase functions deploy --use-api`, so a test can see exactly what a deploy uploads:
//   POST /v1/projects/<ref>/functions/deploy?slug=<name>[&bundleOnly=true]
//        multipart: one `file` part per source file (filename = its path), one `metadata` part (JSON)
//   PUT  /v1/projects/<ref>/functions   activates what several bundleOnly deploys uploaded
//   GET  /v1/projects/<ref>              the CLI's telemetry looks the project up after a command
// Point the CLI at it with a profile file (`--profile <file>`) whose api_url is this fake's url.
import http from 'node:http';
import type { AddressInfo } from 'node:net';

/** The `metadata` part of a deploy, as the CLI writes it. */
export interface DeployMetadata {
  entrypoint_path: string;
  import_map_path?: string;
  static_patterns?: string[];
  verify_jwt?: boolean;
  name?: string;
}

export interface UploadedFile {
  /** The path the CLI sent as the part's filename, relative to its workdir. */
  path: string;
  bytes: Uint8Array;
}

export interface RecordedDeploy {
  projectRef: string;
  slug: string;
  bundleOnly: boolean;
  metadata: DeployMetadata;
  files: UploadedFile[];
}

/** A deployed function as the Management API describes it (DeployFunctionResponse). */
export interface FunctionResponse {
  id: string;
  slug: string;
  name: string;
  version: number;
  status: 'ACTIVE' | 'REMOVED' | 'THROTTLED';
  created_at: number;
  updated_at: number;
  verify_jwt: boolean;
  import_map: boolean;
  entrypoint_path: string;
  import_map_path?: string;
}

export interface FakeManagementApiOptions {
  /** The one project this fake hosts (a 20-letter ref, like a real one). */
  projectRef?: string;
  /** The domain projects live under (the profile's project_host). */
  projectHost?: string;
}

export interface FakeManagementApi {
  /** Base URL, the profile's api_url. */
  url: string;
  projectRef: string;
  /** Every accepted deploy, in arrival order. */
  deploys: RecordedDeploy[];
  /** The project's functions by slug, as the latest deploy or bulk update left them. */
  functions: Map<string, FunctionResponse>;
  close(): Promise<void>;
}

class ApiError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

// The CLI only sends personal access tokens of this shape (sbp_ and 40 hex characters).
const ACCESS_TOKEN = /^Bearer sbp_[0-9a-f]{40}$/;

async function readBody(req: http.IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** Parses a multipart/form-data body with the Web API's own parser (undici's, in Node 20). */
async function readForm(req: http.IncomingMessage): Promise<FormData> {
  const contentType = req.headers['content-type'] ?? '';
  if (!contentType.startsWith('multipart/form-data')) throw new ApiError(415, 'Expected multipart/form-data');
  // Request takes a Uint8Array over an ArrayBuffer; a Buffer's type also allows a SharedArrayBuffer.
  const body = new Uint8Array(await readBody(req));
  try {
    return await new Request('http://fake.invalid/', { method: 'POST', headers: { 'content-type': contentType }, body })
      .formData();
  } catch {
    throw new ApiError(400, 'Malformed multipart body');
  }
}

function parseMetadata(form: FormData): DeployMetadata {
  const part = form.get('metadata');
  if (typeof part !== 'string') throw new ApiError(400, 'Missing metadata part');
  let metadata: DeployMetadata;
  try {
    metadata = JSON.parse(part) as DeployMetadata;
  } catch {
    throw new ApiError(400, 'metadata is not JSON');
  }
  if (typeof metadata?.entrypoint_path !== 'string' || metadata.entrypoint_path === '') {
    throw new ApiError(400, 'metadata.entrypoint_path is required');
  }
  return metadata;
}

async function uploadedFiles(form: FormData): Promise<UploadedFile[]> {
  const files: UploadedFile[] = [];
  for (const part of form.getAll('file')) {
    if (typeof part === 'string') throw new ApiError(400, 'A file part has no filename');
    files.push({ path: part.name, bytes: new Uint8Array(await part.arrayBuffer()) });
  }
  if (files.length === 0) throw new ApiError(400, 'No file parts');
  return files;
}

export async function startFakeManagementApi(options: FakeManagementApiOptions = {}): Promise<FakeManagementApi> {
  const projectRef = options.projectRef ?? 'abcdefghijklmnopqrst';
  const projectHost = options.projectHost ?? 'supabase.test';
  const createdAt = new Date().toISOString();
  const deploys: RecordedDeploy[] = [];
  const functions = new Map<string, FunctionResponse>();

  const project = {
    id: projectRef,
    ref: projectRef,
    name: 'fake-hosted',
    organization_id: 'fakeorganization',
    organization_slug: 'fakeorganization',
    region: 'eu-central-1',
    created_at: createdAt,
    status: 'ACTIVE_HEALTHY',
    database: {
      host: `db.${projectRef}.${projectHost}`,
      version: '15.8.1.085',
      postgres_engine: '15',
      release_channel: 'ga',
    },
  };

  async function deploy(req: http.IncomingMessage, url: URL): Promise<FunctionResponse> {
    const slug = url.searchParams.get('slug');
    if (!slug) throw new ApiError(400, 'slug is required');
    const form = await readForm(req);
    const metadata = parseMetadata(form);
    const files = await uploadedFiles(form);
    deploys.push({ projectRef, slug, bundleOnly: url.searchParams.get('bundleOnly') === 'true', metadata, files });

    const now = Date.now();
    const previous = functions.get(slug);
    const deployed: FunctionResponse = {
      id: previous?.id ?? crypto.randomUUID(),
      slug,
      name: metadata.name ?? slug,
      version: (previous?.version ?? 0) + 1,
      status: 'ACTIVE',
      created_at: previous?.created_at ?? now,
      updated_at: now,
      verify_jwt: metadata.verify_jwt ?? true,
      import_map: Boolean(metadata.import_map_path),
      entrypoint_path: metadata.entrypoint_path,
      ...(metadata.import_map_path ? { import_map_path: metadata.import_map_path } : {}),
    };
    functions.set(slug, deployed);
    return deployed;
  }

  async function bulkUpdate(req: http.IncomingMessage): Promise<{ functions: FunctionResponse[] }> {
    let updates: Partial<FunctionResponse>[];
    try {
      updates = JSON.parse((await readBody(req)).toString('utf8'));
    } catch {
      throw new ApiError(400, 'Body is not JSON');
    }
    if (!Array.isArray(updates)) throw new ApiError(400, 'Expected an array of functions');
    const updated = updates.map((update) => {
      const existing = update.slug ? functions.get(update.slug) : undefined;
      if (!existing) throw new ApiError(404, `Function ${update.slug} was not deployed`);
      const merged: FunctionResponse = { ...existing, ...update, status: 'ACTIVE', updated_at: Date.now() };
      functions.set(merged.slug, merged);
      return merged;
    });
    return { functions: updated };
  }

  async function route(req: http.IncomingMessage, url: URL): Promise<{ status: number; body: unknown }> {
    if (!ACCESS_TOKEN.test(req.headers.authorization ?? '')) throw new ApiError(401, 'Unauthorized');
    const match = /^\/v1\/projects\/([^/]+)(\/functions(\/deploy)?)?$/.exec(url.pathname);
    if (!match) throw new ApiError(404, 'Not found');
    if (match[1] !== projectRef) throw new ApiError(404, 'Project not found');
    const [, , functionsPath, deployPath] = match;
    if (deployPath && req.method === 'POST') return { status: 201, body: await deploy(req, url) };
    if (functionsPath && !deployPath && req.method === 'PUT') return { status: 200, body: await bulkUpdate(req) };
    if (!functionsPath && req.method === 'GET') return { status: 200, body: project };
    throw new ApiError(405, 'Method not allowed');
  }

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://fake.invalid');
    route(req, url)
      .catch((err: unknown) => {
        if (err instanceof ApiError) return { status: err.status, body: { message: err.message } };
        return { status: 500, body: { message: (err as Error).message } };
      })
      .then(({ status, body }) => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(body));
      });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    projectRef,
    deploys,
    functions,
    close: () => new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve()))),
  };
}
