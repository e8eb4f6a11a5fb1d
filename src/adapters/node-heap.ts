/**
 * V8 heap tuning for the processes we own (the `bitnet` CLI and server, the Lambda function).
 *
 * V8's young generation starts at 1 MiB per semispace and grows to 16 MiB when a burst of
 * allocation survives scavenges, which loading a 128K-entry tokenizer does. Both semispaces stay
 * committed for the life of the process: 32 MiB of RSS that a model server holding a 0.8-1.2 GB
 * model never needs again (decode allocates little: one logits row is reused). Keeping the growth
 * factor at 1 holds the young generation at its initial size. Measured on the 2B-4T files: peak RSS
 * -24 MiB (I2_S/F16 head: 1.153x -> 1.128x of the file; TQ2_0/Q6_K head: 1.27x -> 1.23x), load and
 * decode speed unchanged within noise.
 *
 * `--max-semi-space-size` would do the same but only as a command-line flag; this one is read
 * when the heap resizes, so a process can set it for itself. BITNET_V8_YOUNG_GEN=default opts out
 * (`small`, or unset, keeps it small; any other value is INVALID_ENV where the settings are read).
 */
import { setFlagsFromString } from 'node:v8';
import { envString, invalidEnv } from '../util/env.ts';

/** BITNET_V8_YOUNG_GEN: `small` (unset or empty: the default) or `default`; anything else is INVALID_ENV. */
export function youngGenSetting(env: Record<string, string | undefined> = process.env): 'small' | 'default' {
  const v = envString(env, 'BITNET_V8_YOUNG_GEN');
  if (v === undefined || v === 'small') return 'small';
  if (v === 'default') return 'default';
  throw invalidEnv('BITNET_V8_YOUNG_GEN', v, 'must be small or default');
}

/**
 * Applies the setting (a bad value keeps the young generation small: this runs before anything
 * can report it; `bitnet serve` and the Lambda function refuse it through youngGenSetting).
 */
export function keepYoungGenerationSmall(env: Record<string, string | undefined> = process.env): boolean {
  let setting: 'small' | 'default' = 'small';
  try {
    setting = youngGenSetting(env);
  } catch {
    // reported where the settings are read
  }
  if (setting === 'default') return false;
  setFlagsFromString('--semi-space-growth-factor=1');
  return true;
}
