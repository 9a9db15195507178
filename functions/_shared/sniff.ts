// Does a file's content match the content type it was declared with? The first bytes (magic
// numbers) of the formats the file contexts accept, and the programs that must never pass as
// something else. Pure module, so node tests can import it too.

/** How many leading bytes the checks need. */
export const SNIFF_BYTES = 4096;

const startsWith = (bytes: Uint8Array, signature: number[], offset = 0) =>
  signature.every((b, i) => bytes[offset + i] === b);
const ascii = (text: string) => [...text].map((c) => c.charCodeAt(0));

// Executables and scripts for a loader: refused whatever they are declared as.
const PROGRAMS: number[][] = [
  ascii('MZ'), // Windows PE
  [0x7f, 0x45, 0x4c, 0x46], // ELF
  [0xfe, 0xed, 0xfa, 0xce], [0xfe, 0xed, 0xfa, 0xcf], [0xce, 0xfa, 0xed, 0xfe], [0xcf, 0xfa, 0xed, 0xfe], // Mach-O
  [0xca, 0xfe, 0xba, 0xbe], // Mach-O universal, Java class
  ascii('#!'), // a script with an interpreter line
];

const BINARY_SIGNATURES: Record<string, (b: Uint8Array) => boolean> = {
  'application/pdf': (b) => startsWith(b, ascii('%PDF-')),
  'image/png': (b) => startsWith(b, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
  'image/jpeg': (b) => startsWith(b, [0xff, 0xd8, 0xff]),
  'image/gif': (b) => startsWith(b, ascii('GIF87a')) || startsWith(b, ascii('GIF89a')),
  'image/webp': (b) => startsWith(b, ascii('RIFF')) && startsWith(b, ascii('WEBP'), 8),
  'application/zip': (b) => startsWith(b, [0x50, 0x4b, 0x03, 0x04]) || startsWith(b, [0x50, 0x4b, 0x05, 0x06]),
};
// Office Open XML documents are zip archives.
for (const office of ['wordprocessingml.document', 'spreadsheetml.sheet', 'presentationml.presentation']) {
  BINARY_SIGNATURES[`application/vnd.openxmlformats-officedocument.${office}`] = BINARY_SIGNATURES['application/zip'];
}

/**
 * Text: valid UTF-8 without NUL bytes. A full sample may end inside a character (the file goes
 * on): decoding it as a stream leaves that last partial character pending instead of failing.
 */
function isText(b: Uint8Array): boolean {
  if (b.includes(0)) return false;
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(b, { stream: b.length >= SNIFF_BYTES });
    return true;
  } catch {
    return false;
  }
}

const TEXT_TYPES: Record<string, (b: Uint8Array) => boolean> = {
  'text/plain': isText,
  'text/csv': isText,
  'application/json': (b) => isText(b) && /^\s*[[{"0-9tfn-]/.test(new TextDecoder().decode(b.subarray(0, 64))),
};

/**
 * Whether `head` (the file's first bytes, up to SNIFF_BYTES) fits `contentType`. Programs never
 * fit; a type with no known signature never fits either (the contexts accept only known types).
 */
export function contentMatches(contentType: string, head: Uint8Array): boolean {
  if (PROGRAMS.some((signature) => startsWith(head, signature))) return false;
  const type = contentType.toLowerCase().split(';')[0].trim();
  const check = BINARY_SIGNATURES[type] ?? TEXT_TYPES[type];
  return check ? check(head) : false;
}
