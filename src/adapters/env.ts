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
import type { GpuEndpointOptions } from '../http/gpu.ts';
import { requestIdOf } from '../http/request-id.ts';
import { type EnvLike, envHttpUrl, envPositiveSecondsMs, envString } from '../util/env.ts';

export {
  type EnvLike,
  envBool,
  envHttpUrl,
  envInt,
  envPositiveSecondsMs,
  envSecondsMs,
  envString,
  type IntEnvOptions,
  invalidEnv,
} from '../util/env.ts';

/**
 * The answers of an app that could not be built from its environment (see the top of this file).
 * Every response carries x-bitnet-route: edge and x-request-id, as the app's do.
 */
export function misconfiguredFetch(err: unknown): (request: Request) => Response {
  const e = toBitNetError(err);
  return (request) => {
    const path = new URL(request.url).pathname;
    const route = { 'x-bitnet-route': 'edge', 'x-request-id': requestIdOf(request.headers.get('x-request-id')) };
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

/**
 * The GPU endpoint from `<prefix>GPU_URL` and its settings (the Worker's vars have no prefix, the
 * Lambda function's and `bitnet serve`'s environment use BITNET_):
 *   GPU_URL                   absolute http(s) URL; unset: no GPU endpoint
 *   GPU_API_KEY               the GPU server's key
 *   GPU_FIRST_BYTE_TIMEOUT_S  streaming requests: seconds until the GPU's first byte (default 30)
 *   GPU_TIMEOUT_S             non-streaming requests: seconds until the GPU's answer (default 300)
 *   GPU_IDLE_TIMEOUT_S        seconds between two chunks of a GPU answer (default 60)
 */
export function gpuEndpointFromEnv(
  env: EnvLike,
  prefix: '' | 'BITNET_',
  /** A URL given another way (`bitnet serve --gpu-url`), over the variable's; the settings still apply. */
  url = envHttpUrl(env, `${prefix}GPU_URL`),
): GpuEndpointOptions | undefined {
  const firstByteTimeoutMs = envPositiveSecondsMs(env, `${prefix}GPU_FIRST_BYTE_TIMEOUT_S`);
  const responseTimeoutMs = envPositiveSecondsMs(env, `${prefix}GPU_TIMEOUT_S`);
  const idleTimeoutMs = envPositiveSecondsMs(env, `${prefix}GPU_IDLE_TIMEOUT_S`);
  if (url === undefined) return undefined;
  return { url, apiKey: envString(env, `${prefix}GPU_API_KEY`), firstByteTimeoutMs, responseTimeoutMs, idleTimeoutMs };
}
