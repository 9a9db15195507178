// Files generated from the database (types, the error catalogue, the schema dump) are committed;
// `--check` fails when the committed file differs from what the database generates now.
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from './config.mjs';

/** Writes `content` to `file`, or with check = true only compares; returns whether it was fresh. */
export function writeGenerated(file, content, { check = false, command }) {
  const current = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
  const name = path.relative(ROOT, file);
  if (check) {
    if (current !== content) {
      console.error(`${name} is stale: run \`${command}\` and commit it`);
      return false;
    }
    console.log(`${name} is up to date`);
    return true;
  }
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, content);
  console.log(`wrote ${name}`);
  return true;
}

/** Replaces the text between `<!-- name:start -->` and `<!-- name:end -->` in `text`. */
export function replaceMarked(text, name, replacement) {
  const start = `<!-- ${name}:start -->`;
  const end = `<!-- ${name}:end -->`;
  const i = text.indexOf(start);
  const j = text.indexOf(end);
  if (i < 0 || j < i) throw new Error(`markers ${start} ... ${end} not found`);
  return `${text.slice(0, i + start.length)}\n${replacement}${text.slice(j)}`;
}
