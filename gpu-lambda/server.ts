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
 *
 * Concurrency: every in-flight request runs its own engine loop; the cuda backend merges their
 * steps into shared GPU batches (continuous batching, src/kernels/cuda/cuda-backend.ts). Set
 * BITNET_MAX_CONCURRENT at or below the engine's maxSeqs.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { type RunningServer, resolveApiKeys, serveNode } from '../src/adapters/node.ts';
import { BitNetModel } from '../src/api/bitnet-model.ts';
import { BitNetError } from '../src/errors.ts';
import { type AppDeps, modelIdFromName } from '../src/http/app.ts';
import { CUDA_ADDON_ENV } from '../src/kernels/cuda/load-addon.ts';

export const DEFAULT_ADDON = fileURLToPath(new URL('./addon/build/Release/bitnet_cuda.node', import.meta.url));

function int(env: Record<string, string | undefined>, key: string, dflt: number, min = 1): number {
  const v = env[key];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw BitNetError.Config('BAD_ENV', `${key} must be an integer >= ${min}, got "${v}"`, { key });
  return n;
}

/** Loads the model on the cuda backend and serves the app; resolves once listening. */
export async function startGpuServer(env: Record<string, string | undefined> = process.env): Promise<{ server: RunningServer; model: BitNetModel }> {
  const location = env.BITNET_MODEL;
  if (!location) throw BitNetError.Config('MODEL_REQUIRED', 'set BITNET_MODEL to a GGUF path or URL');
  // The backend reads the addon's path from process.env: the given env's path, else the default.
  const addon = env[CUDA_ADDON_ENV] || (existsSync(DEFAULT_ADDON) ? DEFAULT_ADDON : undefined);
  if (addon) process.env[CUDA_ADDON_ENV] = addon;
  // backend 'cuda' refuses (Device BACKEND_UNAVAILABLE, with the reason) when there is no addon,
  // driver or GPU: a GPU server without a GPU must not fall back to the CPU silently.
  const model = await BitNetModel.fromFile(location, { backend: 'cuda' });
  const apiKeys = resolveApiKeys([], env);
  const deps: AppDeps = {
    model,
    modelId: env.BITNET_MODEL_ID,
    modelBytes: model.modelInfo().fileSize,
    apiKeys,
    limits: { maxConcurrent: int(env, 'BITNET_MAX_CONCURRENT', 64), maxQueue: int(env, 'BITNET_MAX_QUEUE', 256, 0) },
    defaultMaxTokens: int(env, 'BITNET_MAX_TOKENS', 256),
    // No `gpu` route: this server is the GPU endpoint; everything runs here.
    router: {},
  };
  const server = await serveNode(deps, {
    host: env.HOST ?? (apiKeys.length ? '0.0.0.0' : undefined),
    port: int(env, 'PORT', 8080, 0),
    warn: (m) => console.error(`warning: ${m}`),
  });
  return { server, model };
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
    const { server, model } = await startGpuServer();
    console.log(JSON.stringify(startupInfo(server, model, process.env)));
    const stop = async () => {
      await server.close();
      process.exit(0);
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  } catch (e) {
    const err = e instanceof BitNetError ? e.toJSON() : { message: String(e) };
    console.error(JSON.stringify({ error: err }));
    process.exit(1);
  }
}
