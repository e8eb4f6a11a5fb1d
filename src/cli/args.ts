/** Small helpers over node:util parseArgs for the CLI's typed, validated flags. */
import { BitNetError } from '../errors.ts';
import { SUPPORTED_PRE_TOKENIZERS } from '../tokenizer/pretokenize.ts';

/**
 * Plain decimal numbers only. `Number()` also takes `0x10`, `1e2`, `" 5"`, `""` and `Infinity`,
 * which hide typos and shell-quoting mistakes; flags that take sizes parse their suffixes themselves
 * (`--shard-size 64MiB`, parseByteSize).
 */
const DECIMAL_INT = /^-?\d+$/;
const DECIMAL = /^-?(?:\d+(?:\.\d+)?|\.\d+)$/;

export function num(
  flags: Record<string, unknown>,
  name: string,
  opts: { int?: boolean; min?: number; max?: number } = {},
): number | undefined {
  const raw = flags[name];
  if (raw === undefined) return undefined;
  const s = String(raw);
  const v = Number(s);
  const ok =
    (opts.int ? DECIMAL_INT.test(s) && Number.isSafeInteger(v) : DECIMAL.test(s) && Number.isFinite(v)) &&
    (opts.min === undefined || v >= opts.min) &&
    (opts.max === undefined || v <= opts.max);
  if (!ok) {
    const range = `${opts.int ? 'an integer' : 'a number'}${opts.min !== undefined ? ` >= ${opts.min}` : ''}${opts.max !== undefined ? ` <= ${opts.max}` : ''}`;
    throw BitNetError.Config('BAD_FLAG', `--${name} must be ${range}, got "${s}"`, {
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

/** --pre-tokenizer: a name the tokenizer knows (checked before any model is opened). */
export function preTokenizerFlag(flags: Record<string, unknown>): string | undefined {
  return oneOf(flags, 'pre-tokenizer', SUPPORTED_PRE_TOKENIZERS);
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

/** A required positional argument (`inspect FILE`): MISSING_ARGUMENT, a usage error like MISSING_FLAG. */
export function requiredArg(v: string | undefined, name: string): string {
  if (v === undefined) throw BitNetError.Config('MISSING_ARGUMENT', `missing ${name}`, { argument: name });
  return v;
}

/** Positional arguments past the `n` a command takes: UNEXPECTED_ARGUMENT, a usage error (none is ignored). */
export function noMoreArgs(positionals: readonly string[], n: number): void {
  if (positionals.length > n)
    throw BitNetError.Config('UNEXPECTED_ARGUMENT', `unexpected argument "${positionals[n]}"`, {
      argument: positionals[n],
    });
}

/**
 * "1,2,3" → [1, 2, 3], each a non-negative decimal integer. Spaces around an entry are allowed
 * ("1, 2"); an empty entry ("1,,2", "1,2,") is an error rather than silently dropped, since it
 * usually means a value went missing in a script.
 */
export function idList(s: string, flag: string): number[] {
  const parts = s.split(',').map((p) => p.trim());
  if (parts.length === 1 && parts[0] === '')
    throw BitNetError.Config('BAD_FLAG', `--${flag} needs at least one token id`, { flag });
  return parts.map((p, i) => {
    if (p === '')
      throw BitNetError.Config('BAD_FLAG', `--${flag}: entry ${i + 1} of "${s}" is empty`, { flag, value: s });
    const v = Number(p);
    if (!/^\d+$/.test(p) || !Number.isSafeInteger(v)) {
      throw BitNetError.Config('BAD_FLAG', `--${flag}: "${p}" is not a token id`, { flag, value: p });
    }
    return v;
  });
}

/**
 * node:util parseArgs refuses `--max-tokens -1` as "ambiguous" (the value starts with a dash). A
 * negative number is never an option name here, so `--flag -N` is rewritten as `--flag=-N`: the
 * value then reaches the flag's own validation, which says what is allowed ("must be ... >= 1").
 * Anything after a `--` terminator is left alone.
 */
export function joinNegativeValues(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      out.push(...argv.slice(i));
      break;
    }
    const next = argv[i + 1];
    if (/^--[^=]+$/.test(a) && next !== undefined && /^-(?:\d|\.\d)/.test(next)) {
      out.push(`${a}=${next}`);
      i++;
    } else out.push(a);
  }
  return out;
}

/** Whether `argv` asks for help (`--help` / `-h` before any `--` terminator). */
export function wantsHelp(argv: string[]): boolean {
  for (const a of argv) {
    if (a === '--') return false;
    if (a === '--help' || a === '-h') return true;
  }
  return false;
}
