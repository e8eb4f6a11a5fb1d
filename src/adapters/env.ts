/**
 * Settings from environment variables, read the same way by every adapter (the Worker's vars, the
 * Lambda function's environment; the parsing lives in src/util/env.ts, re-exported here), and
 * what the app answers when one of them is bad.
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
import { errorBody, errorResponse, toBitNetError } from '../http/errors.ts';

export {
  type EnvLike,
  envBool,
  envInt,
  envSecondsMs,
  envString,
  type IntEnvOptions,
  invalidEnv,
} from '../util/env.ts';

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
