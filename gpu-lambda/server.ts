/**
 * The GPU server: the one HTTP app (src/http createApp, through the Node adapter) serving a model
 * on the cuda backend. It is the endpoint the edge deployments forward large requests to
 * (their BITNET_GPU_URL), and it runs as is in a container on ECS/EC2 GPU instances, or on Lambda
 * Managed Instances with an accelerator through the Lambda Web Adapter (see Dockerfile).
 *
 *   node gpu-lambda/server.ts          (Node >= 22.18; from the repository root or the image)
 *
 * Environment:
 *   BITNET_MODEL            GGUF path or URL (required)
 *   BITNET_MODEL_ID         the id clients send as `model` (default: from the file)
 *   BITNET_API_KEYS         comma-separated bearer keys; without any, the server binds 127.0.0.1 only
 *   HOST, PORT              bind address (default 0.0.0.0 with keys) and port (default 8080)
 *   BITNET_MAX_CONCURRENT   requests generating at once (default 64): they share GPU batches
 *   BITNET_MAX_QUEUE        requests waiting beyond that (default 256)
 *   BITNET_MAX_TOKENS       max_tokens when a request gives none (default 256)
 *   BITNET_CUDA_ADDON       bitnet_cuda.node (default: addon/build/Release next to this file)
 *   BITNET_CUDA_OPTIONS     engine options as JSON, e.g. {"maxSeqs":128,"maxCtx":4096,"headMode":"int8"}
 *   BITNET_SHUTDOWN_GRACE_S seconds in-flight requests get to finish after SIGTERM (default 10)
 *
 * Every setting is read (strictly, src/util/env.ts: a bad value is INVALID_ENV naming it) before
 * the model loads, so a typo costs no model load. SIGTERM drains: the server stops accepting,
 * /readyz answers 503, and the streams in flight get the grace period to end with their final
 * event (ECS and Lambda Managed Instances send SIGTERM before they stop an instance); a second
 * signal cuts them.
 *
 * Concurrency: every in-flight request runs its own engine loop; the cuda backend merges their
 * steps into shared GPU batches (continuous batching, src/kernels/cuda/cuda-backend.ts). Set
 * BITNET_MAX_CONCURRENT at or below the engine's maxSeqs.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { type RunningServer, DEFAULT_SHUTDOWN_GRACE_MS, resolveApiKeys, serveNode } from '../src/adapters/node.ts';
import { drainOnSignals } from '../src/adapters/node-signals.ts';
import { BitNetModel } from '../src/api/bitnet-model.ts';
import { BitNetError } from '../src/errors.ts';
import { type AppDeps, modelIdFromName } from '../src/http/app.ts';
import { CUDA_ADDON_ENV } from '../src/kernels/cuda/load-addon.ts';
import { envInt, envSecondsMs, envString } from '../src/util/env.ts';

export const DEFAULT_ADDON = fileURLToPath(new URL('./addon/build/Release/bitnet_cuda.node', import.meta.url));

/** The server's settings from its environment; a bad value throws INVALID_ENV naming it. */
export function gpuServerSettings(env: Record<string, string | undefined>) {
  const location = envString(env, 'BITNET_MODEL');
  if (!location) throw BitNetError.Config('MODEL_REQUIRED', 'set BITNET_MODEL to a GGUF path or URL');
  const apiKeys = resolveApiKeys([], env);
  return {
    location,
    modelId: envString(env, 'BITNET_MODEL_ID'),
    apiKeys,
    limits: {
      maxConcurrent: envInt(env, 'BITNET_MAX_CONCURRENT', { min: 1 }) ?? 64,
      maxQueue: envInt(env, 'BITNET_MAX_QUEUE') ?? 256,
    },
    defaultMaxTokens: envInt(env, 'BITNET_MAX_TOKENS', { min: 1 }) ?? 256,
    host: envString(env, 'HOST') ?? (apiKeys.length ? '0.0.0.0' : undefined),
    port: envInt(env, 'PORT', { max: 65535 }) ?? 8080,
    graceMs: envSecondsMs(env, 'BITNET_SHUTDOWN_GRACE_S') ?? DEFAULT_SHUTDOWN_GRACE_MS,
  };
}

/** Loads the model on the cuda backend and serves the app; resolves once listening. */
export async function startGpuServer(
  env: Record<string, string | undefined> = process.env,
): Promise<{ server: RunningServer; model: BitNetModel; graceMs: number }> {
  const s = gpuServerSettings(env);
  // The backend reads the addon's path from process.env: the given env's path, else the default.
  const addon = env[CUDA_ADDON_ENV] || (existsSync(DEFAULT_ADDON) ? DEFAULT_ADDON : undefined);
  if (addon) process.env[CUDA_ADDON_ENV] = addon;
  // backend 'cuda' refuses (Device BACKEND_UNAVAILABLE, with the reason) when there is no addon,
  // driver or GPU: a GPU server without a GPU must not fall back to the CPU silently.
  const model = await BitNetModel.fromFile(s.location, { backend: 'cuda' });
  const deps: AppDeps = {
    model,
    modelId: s.modelId,
    modelBytes: model.modelInfo().fileSize,
    apiKeys: s.apiKeys,
    limits: s.limits,
    defaultMaxTokens: s.defaultMaxTokens,
    // No `gpu` route: this server is the GPU endpoint; everything runs here.
    router: {},
  };
  const server = await serveNode(deps, { host: s.host, port: s.port, warn: (m) => console.error(`warning: ${m}`) });
  return { server, model, graceMs: s.graceMs };
}

/** The startup line: `model` is the id clients send (what /v1/models lists), as `bitnet serve --json` prints it. */
export function startupInfo(server: RunningServer, model: BitNetModel, env: Record<string, string | undefined>) {
  return {
    url: server.url,
    backend: model.engine.backendName,
    model: env.BITNET_MODEL_ID ?? modelIdFromName(model.modelInfo().name),
    name: model.modelInfo().name,
  };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  try {
    const { server, model, graceMs } = await startGpuServer();
    const drained = drainOnSignals(server, graceMs, 'bitnet gpu server');
    console.log(JSON.stringify(startupInfo(server, model, process.env)));
    await drained;
    process.exit(0);
  } catch (e) {
    const err = e instanceof BitNetError ? e.toJSON() : { message: String(e) };
    console.error(JSON.stringify({ error: err }));
    process.exit(1);
  }
}
