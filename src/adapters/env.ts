/**
 * Settings from environment variables, read the same way by every adapter (the Worker's vars, the
 * Lambda function's environment), and what the app answers when one of them is bad.
 *
 *   integers  plain decimal digits only ("4"; not " 4", "4.0", "1e3", "0x10", "-1"), within the
 *             variable's range; "" or unset = the default
 *   booleans  true/false/1/0, case-insensitive; "" or unset = the default
 *
 * A bad value is a Config error with code INVALID_ENV whose message names the variable and the
 * value (details: variable, value). The HTTP layer answers it with 500 (server_error): it is the
 * deployment's fault, not the client's. Adapters build their app lazily or catch it, so a bad
 * value never crashes start-up; instead `misconfiguredFetch` answers every request:
 *   GET /healthz  200 {"status":"ok","misconfigured":{message, type, param, code}}: the process is
 *                 alive (liveness), and says what is wrong
 *   GET /readyz   503 with the error body: not ready
 *   anything else 500 with the error body ({error: {message, type, param, code}})
 * This module imports no runtime (no node:, cloudflare: or AWS modules).
 */
import { BitNetError } from '../errors.ts';
import { errorBody, errorResponse, toBitNetError } from '../http/errors.ts';

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
  return n;
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

/**
 * The answers of an app that could not be built from its environment (see the top of this file).
 * Every response carries x-bitnet-route: edge, as the app's do.
 */
export function misconfiguredFetch(err: unknown): (request: Request) => Response {
  const e = toBitNetError(err);
  return (request) => {
    const path = new URL(request.url).pathname;
    const route = { 'x-bitnet-route': 'edge' };
    if (path === '/healthz' && (request.method === 'GET' || request.method === 'HEAD')) {
      return new Response(JSON.stringify({ status: 'ok', misconfigured: errorBody(e).error }), {
        status: 200,
        headers: { 'content-type': 'application/json; charset=utf-8', ...route },
      });
    }
    const res = errorResponse(e, route);
    if (path !== '/readyz') return res;
    return new Response(res.body, { status: 503, headers: res.headers });
  };
}
