/**
 * Held-out real-world text: the README.md of every installed npm package (prose, code blocks, tables,
 * URLs, badges, the odd emoji), in sorted order, cut into chunks at line boundaries. Nothing here was used
 * to write or tune the tokenizer.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

const NODE_MODULES = resolve(import.meta.dirname, '../../node_modules');

function readmes(): string[] {
  const out: string[] = [];
  for (const name of readdirSync(NODE_MODULES).sort()) {
    if (name.startsWith('.')) continue;
    const dirs = name.startsWith('@')
      ? readdirSync(join(NODE_MODULES, name))
          .sort()
          .map((s) => join(name, s))
      : [name];
    for (const d of dirs) {
      const p = join(NODE_MODULES, d, 'README.md');
      if (existsSync(p)) out.push(readFileSync(p, 'utf8'));
    }
  }
  return out;
}

/** Chunks of at most `chunkChars` characters (cut after a newline), up to `maxChars` in all. */
export function heldOutChunks(chunkChars = 4000, maxChars = 600_000): string[] {
  const chunks: string[] = [];
  let total = 0;
  for (const text of readmes()) {
    let at = 0;
    while (at < text.length && total < maxChars) {
      let end = Math.min(text.length, at + chunkChars);
      if (end < text.length) {
        const nl = text.lastIndexOf('\n', end);
        if (nl > at) end = nl + 1;
      }
      chunks.push(text.slice(at, end));
      total += end - at;
      at = end;
    }
    if (total >= maxChars) break;
  }
  return chunks;
}
