/**
 * bitnet-edge/cloudflare: the app as a Cloudflare Worker (module syntax). Config: wrangler.toml.
 *
 * Bindings and vars (env):
 *   WEIGHTS                R2 bucket holding the model (binding)
 *   MODEL_KEY              object key of the GGUF in WEIGHTS (default "model.gguf")
 *   MODEL_ID               id served in /v1/models (default "bitnet")
 *   BITNET_API_KEYS        comma-separated client keys (secret)
 *   ALLOW_UNAUTHENTICATED  "true" to serve without keys (local dev); otherwise no keys = every
 *                          non-health route answers 401
 *   GPU_URL, GPU_API_KEY   the GPU endpoint and its own key (secret)
 *   EDGE_MAX_TOKENS, MEMORY_BUDGET_BYTES, MAX_CONCURRENT, MAX_QUEUE, CORS_ORIGINS
 *
 * The model loads from R2 on the first request that needs it and stays in the isolate. Its size
 * is read first (one HEAD): a model over the memory budget (default 64 MiB, an isolate has 128 MB)
 * is never loaded, and every request goes to the GPU endpoint.
 *
 * For now the whole object is read into memory; ranged reads through an R2 ByteSource come with
 * the shards work. Kernels: the wasm builds ship as module imports (rule CompiledWasm in
 * wrangler.toml), because workerd refuses to compile wasm bytes at run time; they are registered
 * with the wasm loader at start-up, and BitNetModel's 'auto' backend picks them up (or falls back
 * to the reference backend, saying why, if they fail their self-test). They come from
 * `npm run build:wasm` (wasm/build/).
 */
import relaxedKernels from '../../wasm/build/bitnet-relaxed.wasm';
import simdKernels from '../../wasm/build/bitnet-simd.wasm';
import { BitNetModel } from '../api/bitnet-model.ts';
import { BitNetError } from '../errors.ts';
import { type AppDeps, createApp } from '../http/app.ts';
import { parseKeyList } from '../http/auth.ts';
import { errorResponse } from '../http/errors.ts';
import { registerKernelModules } from '../kernels/wasm/loader.ts';
import { MemorySource } from '../sources/byte-source.ts';

registerKernelModules({ relaxed: relaxedKernels, simd: simdKernels });

/** The part of an R2 bucket binding used here. */
export interface R2BucketLike {
  head(key: string): Promise<{ size: number; etag?: string } | null>;
  get(key: string): Promise<{ size: number; etag?: string; arrayBuffer(): Promise<ArrayBuffer> } | null>;
}

export interface WorkerEnv {
  WEIGHTS: R2BucketLike;
  MODEL_KEY?: string;
  MODEL_ID?: string;
  BITNET_API_KEYS?: string;
  ALLOW_UNAUTHENTICATED?: string;
  GPU_URL?: string;
  GPU_API_KEY?: string;
  EDGE_MAX_TOKENS?: string;
  MEMORY_BUDGET_BYTES?: string;
  MAX_CONCURRENT?: string;
  MAX_QUEUE?: string;
  CORS_ORIGINS?: string;
}

const DEFAULT_BUDGET = 64 * 1024 * 1024;

const int = (v: string | undefined): number | undefined => {
  if (v === undefined || v.trim() === '') return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0)
    throw BitNetError.Config('INVALID_ENV', `expected a non-negative integer, got "${v}"`);
  return n;
};

/** Loaded models, by R2 key and etag, shared by every app in this isolate. */
const models = new Map<string, Promise<BitNetModel>>();

async function loadFromR2(bucket: R2BucketLike, key: string): Promise<BitNetModel> {
  const obj = await bucket.get(key);
  if (!obj) throw BitNetError.Io('MODEL_UNAVAILABLE', `R2 object "${key}" not found`, { key });
  return BitNetModel.fromFile(new MemorySource(new Uint8Array(await obj.arrayBuffer()), `r2://${key}`));
}

/** AppDeps from the Worker's env (one HEAD request to size the model). */
export async function depsFromEnv(env: WorkerEnv): Promise<AppDeps> {
  const key = env.MODEL_KEY ?? 'model.gguf';
  const head = await env.WEIGHTS.head(key);
  let keys = parseKeyList(env.BITNET_API_KEYS);
  if (keys.length === 0 && env.ALLOW_UNAUTHENTICATED !== 'true') {
    console.warn(
      'bitnet: no BITNET_API_KEYS and ALLOW_UNAUTHENTICATED is not "true": refusing every non-health request',
    );
    keys = [crypto.randomUUID()];
  }
  const cacheKey = `${key}@${head?.etag ?? ''}`;
  const origins = parseKeyList(env.CORS_ORIGINS);
  return {
    model: () => {
      let p = models.get(cacheKey);
      if (!p) {
        p = loadFromR2(env.WEIGHTS, key);
        models.set(cacheKey, p);
        p.catch(() => models.delete(cacheKey));
      }
      return p;
    },
    modelId: env.MODEL_ID ?? 'bitnet',
    modelBytes: head?.size,
    apiKeys: keys,
    cors: origins.length ? { origins: origins.includes('*') ? '*' : origins } : undefined,
    limits: { maxConcurrent: int(env.MAX_CONCURRENT) ?? 2, maxQueue: int(env.MAX_QUEUE) ?? 16 },
    router: {
      gpu: env.GPU_URL ? { url: env.GPU_URL, apiKey: env.GPU_API_KEY } : undefined,
      edgeMaxTokens: int(env.EDGE_MAX_TOKENS),
      localMemoryBudgetBytes: int(env.MEMORY_BUDGET_BYTES) ?? DEFAULT_BUDGET,
    },
  };
}

type App = ReturnType<typeof createApp>;
const apps = new WeakMap<object, Promise<App>>();

function appFor(env: WorkerEnv): Promise<App> {
  let a = apps.get(env);
  if (!a) {
    a = depsFromEnv(env).then(createApp);
    apps.set(env, a);
    a.catch(() => apps.delete(env));
  }
  return a;
}

export default {
  async fetch(request: Request, env: WorkerEnv, ctx: unknown): Promise<Response> {
    let app: App;
    try {
      app = await appFor(env);
    } catch (e) {
      return errorResponse(e, { 'x-bitnet-route': 'edge' });
    }
    return app.fetch(request, env, ctx as never);
  },
};
