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
    // a setting is an own field of the defaults: not a method (`validate`, `toJSON`) or anything
    // inherited, and never `__proto__` (JSON.parse makes it an own key of `init`)
    if (!Object.hasOwn(target, k) || k === '__proto__' || typeof (target as Record<string, unknown>)[k] === 'function')
      throw BitNetError.Config(code, `unknown ${what} setting "${k}"`, { key: k });
    if (v !== undefined) (target as Record<string, unknown>)[k] = convert(k, v);
  }
}

/**
 * A setting's value for an error message: strings quoted (so `'0.5'` shows as "0.5", not as the
 * number it looks like), bigints with their n, the rest as String() gives them.
 */
export function shownValue(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'bigint') return `${v}n`;
  if (Array.isArray(v)) return `[${v.map(shownValue).join(', ')}]`;
  return String(v);
}
