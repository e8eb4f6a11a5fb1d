/**
 * The sampling flags `bitnet generate` and `bitnet chat` share, and the GenerationConfig fields
 * they make: --max-tokens --temperature --top-k --top-p --min-p --repetition-penalty
 * --presence-penalty --frequency-penalty --logit-bias ID=BIAS (repeatable) --seed --stop (repeatable),
 * and at most one of --grammar GBNF, --grammar-file PATH, --json-schema JSON, --json-schema-file PATH
 * (the output must match the grammar or the schema; llama.cpp's flags of the same names).
 */
import { readFileSync } from 'node:fs';
import type { GenerationConfigInit } from '../api/generation-config.ts';
import { BitNetError } from '../errors.ts';
import { num, str } from './args.ts';

/** parseArgs options of the sampling flags. */
export const SAMPLING_OPTIONS = {
  'max-tokens': { type: 'string' },
  temperature: { type: 'string' },
  'top-k': { type: 'string' },
  'top-p': { type: 'string' },
  'min-p': { type: 'string' },
  'repetition-penalty': { type: 'string' },
  'presence-penalty': { type: 'string' },
  'frequency-penalty': { type: 'string' },
  'logit-bias': { type: 'string', multiple: true },
  seed: { type: 'string' },
  stop: { type: 'string', multiple: true },
  grammar: { type: 'string' },
  'grammar-file': { type: 'string' },
  'json-schema': { type: 'string' },
  'json-schema-file': { type: 'string' },
} as const;

/** The GenerationConfig fields the flags set, with the CLI's defaults (`maxNewTokens` per command). */
export function samplingFromFlags(values: Record<string, unknown>, maxNewTokens: number): GenerationConfigInit {
  const seedRaw = str(values, 'seed');
  // a u64 (GenerationConfig's range): a larger value is a malformed flag, a usage error
  if (seedRaw !== undefined && (!/^\d+$/.test(seedRaw) || BigInt(seedRaw) >= 2n ** 64n))
    throw BitNetError.Config('BAD_FLAG', `--seed must be a non-negative integer below 2^64, got "${seedRaw}"`, {
      flag: 'seed',
      value: seedRaw,
    });
  return {
    maxNewTokens: num(values, 'max-tokens', { int: true, min: 1 }) ?? maxNewTokens,
    temperature: num(values, 'temperature', { min: 0 }) ?? 0.7,
    topK: num(values, 'top-k', { int: true, min: 0 }) ?? 50,
    topP: num(values, 'top-p', { min: 0, max: 1 }) ?? 0.9,
    minP: num(values, 'min-p', { min: 0, max: 1 }) ?? 0,
    repetitionPenalty: num(values, 'repetition-penalty', { min: 0 }) ?? 1,
    presencePenalty: num(values, 'presence-penalty', { min: -2, max: 2 }) ?? 0,
    frequencyPenalty: num(values, 'frequency-penalty', { min: -2, max: 2 }) ?? 0,
    logitBias: logitBiasFlags((values['logit-bias'] as string[] | undefined) ?? []),
    stopSequences: (values.stop as string[] | undefined) ?? [],
    ...constraintFlags(values),
    seed:
      seedRaw === undefined
        ? undefined
        : BigInt(seedRaw) <= BigInt(Number.MAX_SAFE_INTEGER)
          ? Number(seedRaw)
          : BigInt(seedRaw),
  };
}

/** --grammar, --grammar-file, --json-schema, --json-schema-file → grammar / jsonSchema (one at most). */
function constraintFlags(values: Record<string, unknown>): Pick<GenerationConfigInit, 'grammar' | 'jsonSchema'> {
  const given = ['grammar', 'grammar-file', 'json-schema', 'json-schema-file'].filter((f) => values[f] !== undefined);
  if (given.length === 0) return {};
  if (given.length > 1)
    throw BitNetError.Config('BAD_FLAG', `--${given[0]} and --${given[1]} cannot be used together`, {
      flag: given[1],
    });
  const flag = given[0];
  let text = str(values, flag)!;
  if (flag.endsWith('-file')) {
    try {
      text = readFileSync(text, 'utf8');
    } catch (e) {
      throw BitNetError.Io('FILE_NOT_FOUND', `--${flag}: cannot read ${text}: ${(e as Error).message}`, {
        flag,
        path: text,
      });
    }
  }
  if (flag.startsWith('grammar')) return { grammar: text };
  try {
    return { jsonSchema: JSON.parse(text) };
  } catch (e) {
    throw BitNetError.Config('BAD_FLAG', `--${flag} is not JSON: ${(e as Error).message}`, { flag });
  }
}

/** `--logit-bias ID=BIAS` (repeatable) → GenerationConfig.logitBias; a repeated id takes the last. */
function logitBiasFlags(entries: readonly string[]): Record<number, number> {
  const out: Record<number, number> = {};
  for (const e of entries) {
    const m = /^(\d+)=(-?(?:\d+(?:\.\d+)?|\.\d+))$/.exec(e);
    const bias = m ? Number(m[2]) : Number.NaN;
    if (!m || !Number.isSafeInteger(Number(m[1])) || !(bias >= -100 && bias <= 100))
      throw BitNetError.Config('BAD_FLAG', `--logit-bias takes TOKEN_ID=BIAS with BIAS in [-100, 100], got "${e}"`, {
        flag: 'logit-bias',
        value: e,
      });
    out[Number(m[1])] = bias;
  }
  return out;
}
