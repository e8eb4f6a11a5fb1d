/**
 * Settings from environment variables, parsed the same strict way everywhere (the Worker's vars,
 * the Lambda function's environment, `bitnet serve`'s process.env):
 *
 *   integers  plain decimal digits only ("4"; not " 4", "4.0", "1e3", "0x10", "-1"), within the
 *             variable's range; "" or unset = the default
 *   seconds   decimal digits with an optional fraction ("30", "0.5", ".5"); no sign, exponent
 *             or spaces; "" or unset = the default
 *   booleans  true/false/1/0, case-insensitive; "" or unset = the default
 *   URLs      absolute http:// or https:// with a host; "" or unset = the default
 *
 * A bad value is a Config error with code INVALID_ENV whose message names the variable and the
 * value (details: variable, value). This module imports no runtime (no node:, cloudflare: or AWS
 * modules).
 */
import { BitNetError } from '../errors.ts';

export type EnvLike = Readonly<Record<string, unknown>>;

/** The raw string of `name`, undefined when unset or empty. Non-strings (bindings) are refused. */
function raw(env: EnvLike, name: string): string | undefined {
  const v = env[name];
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string') throw invalidEnv(name, String(v), 'must be a string (a var, not a binding)');
  return v;
}

export function invalidEnv(name: string, value: string, must: string): BitNetError {
  return BitNetError.Config('INVALID_ENV', `${name} ${must}, got ${JSON.stringify(value)}`, {
    variable: name,
    value,
  });
}

export interface IntEnvOptions {
  /** Smallest value allowed (default 0). */
  min?: number;
  /** Largest value allowed (default: none below 2^53). */
  max?: number;
}

/** An integer setting: plain decimal digits, at least `min`; undefined when unset or empty. */
export function envInt(env: EnvLike, name: string, o: IntEnvOptions = {}): number | undefined {
  const v = raw(env, name);
  if (v === undefined) return undefined;
  const min = o.min ?? 0;
  const what = min === 0 ? 'a non-negative integer' : min === 1 ? 'a positive integer' : `an integer ≥ ${min}`;
  if (!/^[0-9]+$/.test(v)) throw invalidEnv(name, v, `must be ${what} (decimal digits only)`);
  const n = Number(v);
  if (!Number.isSafeInteger(n)) throw invalidEnv(name, v, `must be ${what} below 2^53`);
  if (n < min) throw invalidEnv(name, v, `must be ${what}`);
  if (o.max !== undefined && n > o.max) throw invalidEnv(name, v, `must be ${what} of at most ${o.max}`);
  return n;
}

/** A number of seconds ≥ 0, as milliseconds (rounded); undefined when unset or empty. */
export function envSecondsMs(env: EnvLike, name: string): number | undefined {
  const v = raw(env, name);
  if (v === undefined) return undefined;
  if (!/^(?:\d+(?:\.\d+)?|\.\d+)$/.test(v))
    throw invalidEnv(name, v, 'must be a number of seconds >= 0 (decimal digits)');
  return Math.round(Number(v) * 1000);
}

/** A boolean setting: true/false/1/0, any case; undefined when unset or empty. */
export function envBool(env: EnvLike, name: string): boolean | undefined {
  const v = raw(env, name);
  if (v === undefined) return undefined;
  const l = v.toLowerCase();
  if (l === 'true' || l === '1') return true;
  if (l === 'false' || l === '0') return false;
  throw invalidEnv(name, v, 'must be true, false, 1 or 0');
}

/** A string setting; undefined when unset or empty. */
export function envString(env: EnvLike, name: string): string | undefined {
  return raw(env, name);
}

/** Why `v` is not an absolute http(s) URL with a host, or undefined when it is one. */
export function httpUrlProblem(v: string): string | undefined {
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    return 'must be an absolute http(s) URL';
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return `must be an http(s) URL, not ${u.protocol}`;
  if (!u.hostname) return 'must be an http(s) URL with a host';
  return undefined;
}

/** An http(s) URL setting; undefined when unset or empty. */
export function envHttpUrl(env: EnvLike, name: string): string | undefined {
  const v = raw(env, name);
  if (v === undefined) return undefined;
  const problem = httpUrlProblem(v);
  if (problem) throw invalidEnv(name, v, problem);
  return v;
}

/** A number of seconds > 0, as milliseconds; undefined when unset or empty. */
export function envPositiveSecondsMs(env: EnvLike, name: string): number | undefined {
  const ms = envSecondsMs(env, name);
  if (ms === undefined) return undefined;
  if (ms <= 0) throw invalidEnv(name, String(env[name]), 'must be a number of seconds > 0');
  return ms;
}
