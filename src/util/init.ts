/**
 * Config classes take a partial init object (`new GenerationConfig({ maxNewTokens: 50 })`).
 * This copies its defined fields onto the instance's defaults and rejects unknown keys with a
 * typed Config error, so a misspelt setting never passes silently.
 */
import { BitNetError } from '../errors.ts';

export function assignInit<T extends object>(
  target: T,
  init: object | null | undefined,
  code: string,
  what: string,
  convert: (key: string, value: unknown) => unknown = (_, v) => v,
): void {
  if (init === undefined) return;
  if (init === null || typeof init !== 'object') throw BitNetError.Config(code, `${what} takes an object of settings`);
  for (const [k, v] of Object.entries(init)) {
    if (!(k in target)) throw BitNetError.Config(code, `unknown ${what} setting "${k}"`, { key: k });
    if (v !== undefined) (target as Record<string, unknown>)[k] = convert(k, v);
  }
}
