/** Small helpers over node:util parseArgs for the CLI's typed, validated flags. */
import { BitNetError } from '../errors.ts';

export function num(
  flags: Record<string, unknown>,
  name: string,
  opts: { int?: boolean; min?: number; max?: number } = {},
): number | undefined {
  const raw = flags[name];
  if (raw === undefined) return undefined;
  const v = Number(raw);
  const ok =
    raw !== '' &&
    Number.isFinite(v) &&
    (!opts.int || Number.isInteger(v)) &&
    (opts.min === undefined || v >= opts.min) &&
    (opts.max === undefined || v <= opts.max);
  if (!ok) {
    const range = `${opts.int ? 'an integer' : 'a number'}${opts.min !== undefined ? ` >= ${opts.min}` : ''}${opts.max !== undefined ? ` <= ${opts.max}` : ''}`;
    throw BitNetError.Config('BAD_FLAG', `--${name} must be ${range}, got "${String(raw)}"`, {
      flag: name,
      value: raw,
    });
  }
  return v;
}

export function str(flags: Record<string, unknown>, name: string): string | undefined {
  const v = flags[name];
  return v === undefined ? undefined : String(v);
}

export function oneOf<T extends string>(
  flags: Record<string, unknown>,
  name: string,
  allowed: readonly T[],
): T | undefined {
  const v = str(flags, name);
  if (v === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(v)) {
    throw BitNetError.Config('BAD_FLAG', `--${name} must be one of ${allowed.join(', ')}, got "${v}"`, {
      flag: name,
      value: v,
    });
  }
  return v as T;
}

export function required<T>(v: T | undefined, name: string): T {
  if (v === undefined) throw BitNetError.Config('MISSING_FLAG', `--${name} is required`, { flag: name });
  return v;
}

/** "1,2,3" → [1, 2, 3], each a non-negative integer. */
export function idList(s: string, flag: string): number[] {
  const parts = s
    .split(',')
    .map((p) => p.trim())
    .filter((p) => p !== '');
  if (parts.length === 0) throw BitNetError.Config('BAD_FLAG', `--${flag} needs at least one token id`, { flag });
  return parts.map((p) => {
    const v = Number(p);
    if (!/^\d+$/.test(p) || !Number.isSafeInteger(v)) {
      throw BitNetError.Config('BAD_FLAG', `--${flag}: "${p}" is not a token id`, { flag, value: p });
    }
    return v;
  });
}
