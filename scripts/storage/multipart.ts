// A streaming multipart/form-data reader for uploads, as Storage reads them with
// @fastify/multipart's request.file(): the text fields before the first file, then the file's
// bytes as a stream, never the whole body in memory. storage-js sends fields cacheControl,
// metadata, contentEncoding and then the file (under the name ""); a browser's own FormData
// works the same way. Parts after the file are drained and ignored.
import { ERRORS } from './errors.ts';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

const MAX_HEADER_BYTES = 16 * 1024;
const MAX_FIELDS = 10;
/** A field's largest value: Storage caps user metadata at 1 MiB. */
export const MAX_FIELD_BYTES = 1024 * 1024;
/** What is read after the file (closing boundary, trailing parts) before giving up on the rest. */
const MAX_TRAILER_BYTES = 1024 * 1024;

export interface MultipartFile {
  fieldName: string;
  filename: string;
  mimeType: string;
  /** The file's bytes; ends at the part's boundary. */
  body: AsyncIterable<Uint8Array>;
}

export interface MultipartUpload {
  fields: Record<string, string>;
  file: MultipartFile | null;
  /** Reads what follows the file (after its body was consumed), so the request ends cleanly. */
  finish(): Promise<void>;
}

/** The boundary of a multipart/form-data content type, or null. */
export function multipartBoundary(contentType: string | null): string | null {
  if (!contentType || !/^multipart\/form-data\b/i.test(contentType)) return null;
  const match = /;\s*boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(contentType);
  const boundary = match?.[1] ?? match?.[2];
  return boundary && boundary.length <= 200 ? boundary : null;
}

function indexOf(haystack: Uint8Array, needle: Uint8Array, from = 0): number {
  const first = needle[0];
  const last = haystack.length - needle.length;
  for (let i = haystack.indexOf(first, from); i !== -1 && i <= last; i = haystack.indexOf(first, i + 1)) {
    let j = 1;
    while (j < needle.length && haystack[i + j] === needle[j]) j++;
    if (j === needle.length) return i;
  }
  return -1;
}

/**
 * The body's bytes in one working buffer that is reused: read BYOB into its free end (so the
 * stream allocates nothing per chunk), compacted as bytes are consumed, grown only while a part's
 * headers or a field need more room. Views handed out (buf, the file's chunks) are valid until
 * the next read.
 */
class Reader {
  private store = new Uint8Array(256 * 1024);
  private start = 0;
  private end = 0;
  private ended = false;
  private readonly byob: ReadableStreamBYOBReader | null;
  private readonly plain: ReadableStreamDefaultReader<Uint8Array> | null;

  constructor(stream: ReadableStream<Uint8Array>) {
    let byob: ReadableStreamBYOBReader | null = null;
    try {
      byob = stream.getReader({ mode: 'byob' });
    } catch { /* not a byte stream */ }
    this.byob = byob;
    this.plain = byob ? null : stream.getReader();
  }

  get buf(): Uint8Array {
    return this.store.subarray(this.start, this.end);
  }

  /** Puts bytes in front of what is read (the CRLF before the first delimiter). */
  prepend(bytes: Uint8Array): void {
    this.store.set(bytes, 0);
    this.end = bytes.length;
  }

  private room(needed: number): void {
    if (this.start > 0) {
      this.store.copyWithin(0, this.start, this.end);
      this.end -= this.start;
      this.start = 0;
    }
    if (this.store.length - this.end < needed) {
      const grown = new Uint8Array(Math.max(this.store.length * 2, this.end + needed));
      grown.set(this.store.subarray(0, this.end));
      this.store = grown;
    }
  }

  /** Reads one more chunk after buf; false at the end of the body. */
  async more(): Promise<boolean> {
    if (this.ended) return false;
    if (this.byob) {
      this.room(16 * 1024);
      const view = new Uint8Array(this.store.buffer, this.end, this.store.length - this.end);
      const { value, done } = await this.byob.read(view);
      // The read transfers the buffer, contents kept: go on with the one that came back.
      if (value) this.store = new Uint8Array(value.buffer);
      if (done || !value) {
        this.ended = true;
        return false;
      }
      this.end += value.length;
      return true;
    }
    const { value, done } = await this.plain!.read();
    if (done) {
      this.ended = true;
      return false;
    }
    this.room(value.length);
    this.store.set(value, this.end);
    this.end += value.length;
    return true;
  }

  /** Makes buf hold at least n bytes; false if the body ends first. */
  async need(n: number): Promise<boolean> {
    while (this.end - this.start < n) if (!(await this.more())) return false;
    return true;
  }

  consume(n: number): void {
    this.start += n;
  }

  cancel(): void {
    (this.byob ?? this.plain)!.cancel().catch(() => {});
  }
}

/**
 * A stream's bytes through one reused buffer (BYOB where the stream supports it): each chunk is
 * valid until the next is asked for, so a consumer that writes it out first allocates nothing
 * per chunk, and the gateway's memory does not fill with spent chunks waiting for the GC.
 */
export async function* reusedChunks(stream: ReadableStream<Uint8Array>, size = 64 * 1024): AsyncGenerator<Uint8Array> {
  let reader: ReadableStreamBYOBReader;
  try {
    reader = stream.getReader({ mode: 'byob' });
  } catch {
    yield* stream;
    return;
  }
  let buffer = new ArrayBuffer(size);
  try {
    for (;;) {
      const { value, done } = await reader.read(new Uint8Array(buffer, 0, size));
      if (done || !value) return;
      buffer = value.buffer as ArrayBuffer;
      if (value.length > 0) yield value;
    }
  } catch (err) {
    reader.cancel().catch(() => {});
    throw err;
  } finally {
    reader.releaseLock();
  }
}

function malformed(): Error {
  return ERRORS.NoContentProvided('Malformed multipart/form-data body');
}

function parseHeaders(block: string): { name?: string; filename?: string; contentType?: string } {
  const out: { name?: string; filename?: string; contentType?: string } = {};
  for (const line of block.split('\r\n')) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const key = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    if (key === 'content-type') out.contentType = value;
    if (key === 'content-disposition') {
      for (const param of value.matchAll(/;\s*([\w*-]+)=(?:"((?:[^"\\]|\\.)*)"|([^;]*))/g)) {
        const v = (param[2] ?? param[3] ?? '').replace(/\\(.)/g, '$1');
        if (param[1].toLowerCase() === 'name') out.name = v;
        if (param[1].toLowerCase() === 'filename') out.filename = v;
      }
    }
  }
  return out;
}

/**
 * Reads a multipart body up to its first file part. The file's body must be consumed before
 * finish() is called.
 */
export async function readMultipart(body: ReadableStream<Uint8Array>, boundary: string): Promise<MultipartUpload> {
  const reader = new Reader(body);
  // The first delimiter has no CRLF before it; pretending it has keeps one search for all.
  reader.prepend(encoder.encode('\r\n'));
  const delimiter = encoder.encode(`\r\n--${boundary}`);
  const headerEnd = encoder.encode('\r\n\r\n');
  const fields: Record<string, string> = {};
  let fieldCount = 0;

  /** Skips to just after the next delimiter; returns false when it closed the body (--). */
  async function nextPart(limit: number): Promise<boolean> {
    let skipped = 0;
    for (;;) {
      const at = indexOf(reader.buf, delimiter);
      if (at >= 0) {
        reader.consume(at + delimiter.length);
        break;
      }
      const keep = Math.max(0, reader.buf.length - delimiter.length + 1);
      skipped += keep;
      reader.consume(keep);
      if (skipped > limit || !(await reader.more())) throw malformed();
    }
    if (!(await reader.need(2))) throw malformed();
    if (reader.buf[0] === 45 && reader.buf[1] === 45) return false; // "--": the closing delimiter
    // Transport padding, then CRLF.
    for (;;) {
      if (!(await reader.need(2))) throw malformed();
      if (reader.buf[0] === 13 && reader.buf[1] === 10) {
        reader.consume(2);
        return true;
      }
      if (reader.buf[0] !== 32 && reader.buf[0] !== 9) throw malformed();
      reader.consume(1);
    }
  }

  async function readHeaders(): Promise<ReturnType<typeof parseHeaders>> {
    for (;;) {
      // A part without headers starts with its blank line at once.
      if (await reader.need(2) && reader.buf[0] === 13 && reader.buf[1] === 10) {
        reader.consume(2);
        return {};
      }
      const at = indexOf(reader.buf, headerEnd);
      if (at >= 0) {
        const block = decoder.decode(reader.buf.subarray(0, at));
        reader.consume(at + headerEnd.length);
        return parseHeaders(block);
      }
      if (reader.buf.length > MAX_HEADER_BYTES || !(await reader.more())) throw malformed();
    }
  }

  /** A text part's value, up to the next delimiter (left in the buffer). */
  async function readValue(): Promise<string> {
    for (;;) {
      const at = indexOf(reader.buf, delimiter);
      if (at >= 0) {
        const value = decoder.decode(reader.buf.subarray(0, at));
        reader.consume(at);
        return value;
      }
      if (reader.buf.length > MAX_FIELD_BYTES + delimiter.length) throw ERRORS.EntityTooLarge('user_metadata');
      if (!(await reader.more())) throw malformed();
    }
  }

  async function* fileBody(): AsyncGenerator<Uint8Array> {
    for (;;) {
      const at = indexOf(reader.buf, delimiter);
      if (at >= 0) {
        if (at > 0) yield reader.buf.subarray(0, at);
        reader.consume(at);
        return;
      }
      // Everything but a possible start of the delimiter can go.
      const safe = reader.buf.length - (delimiter.length - 1);
      if (safe > 0) {
        const chunk = reader.buf.subarray(0, safe);
        reader.consume(safe);
        yield chunk;
      }
      if (!(await reader.more())) throw malformed();
    }
  }

  let file: MultipartFile | null = null;
  let more = await nextPart(MAX_HEADER_BYTES);
  while (more) {
    const headers = await readHeaders();
    if (headers.filename !== undefined) {
      file = {
        fieldName: headers.name ?? '',
        filename: headers.filename,
        mimeType: headers.contentType ?? 'text/plain',
        body: fileBody(),
      };
      break;
    }
    if (++fieldCount > MAX_FIELDS) throw ERRORS.InvalidRequest('Too many fields in the multipart body');
    const value = await readValue();
    if (headers.name !== undefined && !(headers.name in fields)) fields[headers.name] = value;
    more = await nextPart(0);
  }

  return {
    fields,
    file,
    async finish() {
      // Drain what follows the file so the client's request completes; give up past a limit.
      let read = 0;
      while (await reader.more()) {
        read += reader.buf.length;
        reader.consume(reader.buf.length);
        if (read > MAX_TRAILER_BYTES) {
          reader.cancel();
          return;
        }
      }
    },
  };
}
