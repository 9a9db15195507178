// functions/_shared/sniff.ts: does a file's first bytes fit the content type it was declared with?
import { describe, expect, it } from 'vitest';
import { contentMatches, SNIFF_BYTES } from '../../functions/_shared/sniff.ts';
import { pdf, png, windowsProgram } from './support.ts';

const ascii = (text: string) => new TextEncoder().encode(text);
const bytes = (...b: number[]) => new Uint8Array(b);

describe('contentMatches', () => {
  it.each([
    ['application/pdf', pdf()],
    ['image/png', png()],
    ['image/jpeg', bytes(0xff, 0xd8, 0xff, 0xe0, 0, 0x10)],
    ['image/gif', ascii('GIF89a....')],
    ['image/webp', ascii('RIFF\x00\x00\x00\x00WEBPVP8 ')],
    ['application/zip', bytes(0x50, 0x4b, 0x03, 0x04, 0x14)],
    ['application/vnd.openxmlformats-officedocument.wordprocessingml.document', bytes(0x50, 0x4b, 0x03, 0x04)],
    ['text/plain', ascii('Hello, wörld\n')],
    ['text/csv', ascii('name,amount\nAcme,12\n')],
    ['application/json', ascii(' {"a": 1}')],
    ['Application/PDF; charset=binary', pdf()],
  ])('%s fits its own signature', (type, head) => {
    expect(contentMatches(type, head)).toBe(true);
  });

  it.each([
    ['application/pdf', windowsProgram(), 'a Windows program named .pdf'],
    ['image/png', bytes(0x7f, 0x45, 0x4c, 0x46, 2, 1), 'an ELF binary'],
    ['application/pdf', bytes(0xcf, 0xfa, 0xed, 0xfe), 'a Mach-O binary'],
    ['text/plain', ascii('#!/bin/sh\nrm -rf /\n'), 'a shell script as text'],
    ['text/plain', ascii('MZ is also how some text starts'), 'text that starts like a program'],
    ['application/pdf', png(), 'a PNG declared as a PDF'],
    ['image/png', pdf(), 'a PDF declared as a PNG'],
    ['text/plain', bytes(0x61, 0x00, 0x62), 'text with a NUL byte'],
    ['text/csv', bytes(0xc3, 0x28, 0x41), 'invalid UTF-8 as CSV'],
    ['application/json', ascii('<html>'), 'HTML declared as JSON'],
    ['application/x-msdownload', windowsProgram(), 'a type no context takes'],
    ['application/pdf', new Uint8Array(0), 'an empty file'],
  ])('%s refuses %s', (type, head, _why) => {
    expect(contentMatches(type, head)).toBe(false);
  });

  it('accepts a full sample cut in the middle of a multi-byte character, not a whole file that ends so', () => {
    // 1 + 2 bytes per 'é': the first SNIFF_BYTES bytes end inside a character.
    const cut = ascii(`a${'é'.repeat(SNIFF_BYTES)}`).subarray(0, SNIFF_BYTES);
    expect(contentMatches('text/plain', cut)).toBe(true);
    // A file shorter than the sample is all there is: a broken last character is not text.
    expect(contentMatches('text/plain', ascii('aé').subarray(0, 2))).toBe(false);
  });
});
