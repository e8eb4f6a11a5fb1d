/** Test helpers: random JSON values (keys and strings with escapes, non-ASCII and astral characters). */
import type { createRng } from '../../src/generate/prng.ts';

export type Rng = ReturnType<typeof createRng>;

/** A random JSON value, nested at most `depth` deep. */
export function randomValue(rng: Rng, depth: number): unknown {
  const r = rng.nextFloat();
  if (depth > 0 && r < 0.25) {
    const o: Record<string, unknown> = {};
    const n = Math.floor(rng.nextFloat() * 4);
    for (let i = 0; i < n; i++) o[`k${i}${['', 'é', '"q"', '\\', '\n'][i % 5]}`] = randomValue(rng, depth - 1);
    return o;
  }
  if (depth > 0 && r < 0.45)
    return Array.from({ length: Math.floor(rng.nextFloat() * 4) }, () => randomValue(rng, depth - 1));
  if (r < 0.6) return ['plain', 'üñí', 'tab\there', 'quote"s', '😀', ''][Math.floor(rng.nextFloat() * 6)];
  if (r < 0.8) return [0, -1, 3.25, -0.5e-7, 1e21, 12345678][Math.floor(rng.nextFloat() * 6)];
  return [true, false, null][Math.floor(rng.nextFloat() * 3)];
}

/** `text` with one character replaced, inserted or deleted (at random, from `alphabet`). */
export function mutateOne(text: string, rng: Rng, alphabet: string): string {
  const i = Math.floor(rng.nextFloat() * text.length);
  const ch = alphabet[Math.floor(rng.nextFloat() * alphabet.length)];
  const op = Math.floor(rng.nextFloat() * 3);
  if (op === 0) return text.slice(0, i) + ch + text.slice(i + 1);
  if (op === 1) return text.slice(0, i) + ch + text.slice(i);
  return text.slice(0, i) + text.slice(i + 1);
}
