// The bytes on disk: <root>/<bucket>/<object name>. An upload streams into a temp file under
// <root>/.~uploads (same filesystem) while it is counted and hashed, and is renamed into place
// only inside the transaction that writes its row; a FileChanges set undoes the renames when that
// transaction fails, so the row and the file change together or not at all.
import { createHash } from 'node:crypto';
import { config } from './config.ts';
import { ERRORS } from './errors.ts';
import { reusedChunks } from './multipart.ts';

/** The file of an object; its name is refused if it could leave the bucket's folder. */
export function objectFile(bucket: string, name: string): string {
  const relative = `${bucket}/${name}`;
  const segments = relative.split('/');
  if (relative.includes('\0') || name.startsWith('/') || segments.some((s) => s === '.' || s === '..')) {
    throw ERRORS.InvalidKey(name, 'contains dot path segment');
  }
  if (segments.some((s) => s === '')) throw ERRORS.InvalidKey(name, 'contains an empty path segment');
  return `${config().root}/${relative}`;
}

export function bucketDir(bucket: string): string {
  if (bucket === '.' || bucket === '..' || bucket.includes('/') || bucket.includes('\0')) throw ERRORS.InvalidBucketName();
  return `${config().root}/${bucket}`;
}

function tempFile(suffix: string): string {
  return `${config().tmpDir}/${crypto.randomUUID()}.${suffix}`;
}

async function removeQuietly(path: string): Promise<void> {
  try {
    await Deno.remove(path);
  } catch { /* gone already */ }
}

export interface Received {
  /** The temp file holding the bytes. */
  path: string;
  size: number;
  /** Storage's ETag: the MD5 of the bytes, quoted (as S3 and Storage's file backend give it). */
  eTag: string;
}

async function writeAll(file: Deno.FsFile, chunk: Uint8Array): Promise<void> {
  let written = 0;
  while (written < chunk.length) written += await file.write(chunk.subarray(written));
}

/**
 * Streams `source` into a temp file, chunk by chunk, refusing it with EntityTooLarge as soon as
 * it passes `limit` bytes. On any failure the temp file is gone.
 */
export async function receive(source: AsyncIterable<Uint8Array>, limit: number): Promise<Received> {
  await Deno.mkdir(config().tmpDir, { recursive: true });
  const path = tempFile('upload');
  const file = await Deno.open(path, { write: true, createNew: true });
  const hash = createHash('md5');
  let size = 0;
  try {
    for await (const chunk of source) {
      size += chunk.length;
      if (size > limit) throw ERRORS.EntityTooLarge();
      hash.update(chunk);
      await writeAll(file, chunk);
    }
  } catch (err) {
    file.close();
    await removeQuietly(path);
    throw err;
  }
  file.close();
  return { path, size, eTag: `"${hash.digest('hex')}"` };
}

/** Copies an object's file into a temp file (the source of a copy). */
export async function copyToTemp(source: string): Promise<Received> {
  let input: Deno.FsFile;
  try {
    input = await Deno.open(source, { read: true });
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) throw ERRORS.MissingBytes();
    throw err;
  }
  return await receive(reusedChunks(input.readable), Number.MAX_SAFE_INTEGER);
}

const COLLIDES = 'collides with another object\'s path on the local disk';

/**
 * A disk error as the Storage error it is for the caller: a file and a folder wanting one path
 * (a/b over a file a, or a over a folder a/), or a name too long for the filesystem.
 */
function diskError(err: unknown, name: string): unknown {
  if (err instanceof Deno.errors.IsADirectory || err instanceof Deno.errors.NotADirectory ||
      err instanceof Deno.errors.AlreadyExists ||
      (err instanceof Error && /not a directory|is a directory|directory not empty/i.test(err.message))) {
    return ERRORS.InvalidKey(name, COLLIDES);
  }
  if (err instanceof Error && /name too long/i.test(err.message)) return ERRORS.InvalidKey(name, 'is too long for the local disk');
  return err;
}

async function lstatOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.lstat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound || err instanceof Deno.errors.NotADirectory) return null;
    throw diskError(err, path);
  }
}

/**
 * Refuses, before any byte is read, a name whose file cannot exist next to the others: a folder
 * already at its path, or a file where one of its folders would be.
 */
export async function assertPlaceable(bucket: string, name: string): Promise<void> {
  const path = objectFile(bucket, name);
  const bucketRoot = bucketDir(bucket);
  const info = await lstatOrNull(path);
  if (info && !info.isFile) throw ERRORS.InvalidKey(name, COLLIDES);
  for (let dir = path.slice(0, path.lastIndexOf('/')); dir.length > bucketRoot.length; dir = dir.slice(0, dir.lastIndexOf('/'))) {
    const parent = await lstatOrNull(dir);
    if (parent === null) continue;
    if (!parent.isDirectory) throw ERRORS.InvalidKey(name, COLLIDES);
    break; // an existing folder: the ones above it exist as folders too
  }
}

/**
 * Renames src to dest, creating dest's folders; retried when a concurrent delete pruned a
 * folder between the two steps.
 */
async function renameInto(src: string, dest: string, name: string): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await Deno.mkdir(dest.slice(0, dest.lastIndexOf('/')), { recursive: true });
      await Deno.rename(src, dest);
      return;
    } catch (err) {
      if (err instanceof Deno.errors.NotFound && attempt < 5 && (await lstatOrNull(src)) !== null) continue;
      throw diskError(err, name);
    }
  }
}

/** Removes now-empty folders from `dir` up to (not including) the bucket's folder. */
async function pruneEmptyDirs(dir: string): Promise<void> {
  const root = config().root;
  while (dir.startsWith(`${root}/`) && dir.slice(root.length + 1).includes('/')) {
    try {
      await Deno.remove(dir); // fails unless empty
    } catch {
      return;
    }
    dir = dir.slice(0, dir.lastIndexOf('/'));
  }
}

type Step =
  | { kind: 'placed'; dest: string; backup?: string }
  | { kind: 'removed'; dest: string; trash: string }
  | { kind: 'moved'; from: string; to: string };

/**
 * File steps taken inside a database transaction: undone (rollback) when the transaction fails,
 * made final (commit: backups and trash deleted) when it committed.
 */
export class FileChanges {
  private steps: Step[] = [];

  /** Puts a received temp file at `dest`, keeping what was there until commit. */
  async place(temp: string, dest: string, name: string): Promise<void> {
    const current = await lstatOrNull(dest);
    if (current && !current.isFile) throw ERRORS.InvalidKey(name, COLLIDES);
    let backup: string | undefined;
    if (current) {
      backup = tempFile('previous');
      await Deno.rename(dest, backup);
    }
    try {
      await renameInto(temp, dest, name);
    } catch (err) {
      if (backup) await Deno.rename(backup, dest);
      throw err;
    }
    this.steps.push({ kind: 'placed', dest, backup });
  }

  /** Takes an object's file away (into the trash until commit); a missing file is fine. */
  async remove(dest: string): Promise<void> {
    const current = await lstatOrNull(dest);
    if (!current || !current.isFile) return;
    const trash = tempFile('removed');
    await Deno.mkdir(config().tmpDir, { recursive: true });
    try {
      await Deno.rename(dest, trash);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return;
      throw err;
    }
    this.steps.push({ kind: 'removed', dest, trash });
  }

  /** Moves an object's file; the destination must be free (the row's unique key says so). */
  async move(from: string, to: string, name: string): Promise<void> {
    const current = await lstatOrNull(to);
    if (current && !current.isFile) throw ERRORS.InvalidKey(name, COLLIDES);
    // A file without a row (left by a crash): the row is the truth, so it goes.
    if (current) await this.remove(to);
    if ((await lstatOrNull(from)) === null) throw ERRORS.MissingBytes();
    await renameInto(from, to, name);
    this.steps.push({ kind: 'moved', from, to });
  }

  async commit(): Promise<void> {
    for (const step of this.steps) {
      if (step.kind === 'placed' && step.backup) await removeQuietly(step.backup);
      if (step.kind === 'removed') {
        await removeQuietly(step.trash);
        await pruneEmptyDirs(step.dest.slice(0, step.dest.lastIndexOf('/')));
      }
      if (step.kind === 'moved') await pruneEmptyDirs(step.from.slice(0, step.from.lastIndexOf('/')));
    }
    this.steps = [];
  }

  async rollback(): Promise<void> {
    for (const step of this.steps.reverse()) {
      try {
        if (step.kind === 'placed') {
          if (step.backup) await Deno.rename(step.backup, step.dest);
          else await removeQuietly(step.dest);
        } else if (step.kind === 'removed') {
          await renameInto(step.trash, step.dest, step.dest);
        } else {
          await renameInto(step.to, step.from, step.from);
        }
      } catch (err) {
        console.error(JSON.stringify({ level: 'error', msg: 'storage: could not undo a file change', error: (err as Error).message }));
      }
    }
    this.steps = [];
  }
}

/** Deletes a temp file that never made it into place. */
export const discard = removeQuietly;

/** Removes a bucket's folder if nothing is left in it. */
export async function removeBucketDir(bucket: string): Promise<void> {
  try {
    await Deno.remove(bucketDir(bucket));
  } catch { /* not empty, or never created */ }
}

export interface OpenedFile {
  body: ReadableStream<Uint8Array> | null;
  size: number;
  mtime: Date | null;
  /** Set for a range request: the bytes served and the header. */
  range?: { start: number; end: number; contentRange: string };
}

/** Storage's range parser (src/storage/range.ts): a single range; 416 otherwise. */
export function parseRange(header: string, size: number): { start: number; end: number } {
  const match = /^bytes=(\d*)-(\d*)$/.exec(header);
  if (!match || size <= 0) throw ERRORS.InvalidRange();
  const [, from, to] = match;
  if (!from && !to) throw ERRORS.InvalidRange();
  if (!from) {
    const suffix = Number(to);
    if (!Number.isSafeInteger(suffix) || suffix <= 0) throw ERRORS.InvalidRange();
    return { start: Math.max(size - suffix, 0), end: size - 1 };
  }
  const start = Number(from);
  const end = to ? Number(to) : size - 1;
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start || start >= size) {
    throw ERRORS.InvalidRange();
  }
  return { start, end: Math.min(end, size - 1) };
}

/** A stream of `length` bytes of `file` from its current position; closes the file at the end. */
function limitedStream(file: Deno.FsFile, length: number): ReadableStream<Uint8Array> {
  let left = length;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (left <= 0) {
        file.close();
        controller.close();
        return;
      }
      const buf = new Uint8Array(Math.min(64 * 1024, left));
      const n = await file.read(buf);
      if (n === null) {
        file.close();
        controller.close();
        return;
      }
      left -= n;
      controller.enqueue(buf.subarray(0, n));
    },
    cancel() {
      file.close();
    },
  });
}

/** Opens an object's file for reading, the whole of it or one range; MissingBytes if absent. */
export async function openObject(path: string, { range, withBody = true }: { range?: string | null; withBody?: boolean } = {}): Promise<OpenedFile> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (err) {
    if (err instanceof Deno.errors.NotFound || err instanceof Deno.errors.NotADirectory) throw ERRORS.MissingBytes();
    throw err;
  }
  try {
    const info = await file.stat();
    if (!info.isFile) throw ERRORS.MissingBytes();
    if (range) {
      const { start, end } = parseRange(range, info.size);
      await file.seek(start, Deno.SeekMode.Start);
      const body = withBody ? limitedStream(file, end - start + 1) : null;
      if (!withBody) file.close();
      return { body, size: end - start + 1, mtime: info.mtime, range: { start, end, contentRange: `bytes ${start}-${end}/${info.size}` } };
    }
    if (!withBody) file.close();
    return { body: withBody ? file.readable : null, size: info.size, mtime: info.mtime };
  } catch (err) {
    try {
      file.close();
    } catch { /* closed already */ }
    throw err;
  }
}
