/**
 * bitnet-edge/cloudflare: the app as a Cloudflare Worker (module syntax). Config: wrangler.toml.
 *
 * Bindings and vars (env):
 *   WEIGHTS                R2 bucket holding the model (binding)
 *   MODEL_KEY              object key in WEIGHTS (default "model.gguf"): a GGUF, or a shard pack's
 *                          manifest (".../manifest.json", or a prefix ending in "/" for the
 *                          manifest.json under it; its shards are read from next to it)
 *   MODEL_ID               id served in /v1/models (default "bitnet")
 *   BITNET_API_KEYS        comma-separated client keys (secret)
 *   ALLOW_UNAUTHENTICATED  "true" to serve without keys (local dev); otherwise no keys = every
 *                          non-health route answers 401
 *   GPU_URL, GPU_API_KEY   the GPU endpoint and its own key (secret)
 *   EDGE_MAX_TOKENS, MEMORY_BUDGET_BYTES, MAX_CONCURRENT, MAX_QUEUE, CORS_ORIGINS
 *
 * The model loads from R2 on the first request that needs it and stays in the isolate. It is read
 * with ranged reads (`r2://WEIGHTS/<key>` through openSource, R2Source underneath: ETag-pinned,
 * retried, coalesced), never as one whole-object read, so the isolate holds the weights and not a
 * second copy of the file. Its size is known first: one HEAD for a GGUF; for a shard pack, the
 * manifest (which lists its shards and their sizes). A model over the memory budget (default
 * 64 MiB, an isolate has 128 MB) is never loaded, and every request goes to the GPU endpoint; the
 * loader itself refuses weights over the isolate's 128 MB from the header or manifest alone.
 *
 * Kernels: the wasm builds ship as module imports (rule CompiledWasm in wrangler.toml), because
 * workerd refuses to compile wasm bytes at run time; they are registered with the wasm loader at
 * start-up, and BitNetModel's 'auto' backend picks them up (or falls back to the reference
 * backend, saying why, if they fail their self-test). They come from `npm run build:wasm`
 * (wasm/build/).
 */
import relaxedKernels from '../../wasm/build/bitnet-relaxed.wasm';
import simdKernels from '../../wasm/build/bitnet-simd.wasm';
import { BitNetModel } from '../api/bitnet-model.ts';
import { WORKERS_MEMORY_BYTES } from '../api/model-loader.ts';
import { BitNetError, isBitNetError } from '../errors.ts';
import { type AppDeps, createApp } from '../http/app.ts';
import { parseKeyList } from '../http/auth.ts';
import { errorResponse } from '../http/errors.ts';
import { registerKernelModules } from '../kernels/wasm/loader.ts';
import { MANIFEST_NAME } from '../shards/format.ts';
import { looksLikeManifest, readManifest } from '../shards/reader.ts';
import type { OpenOptions } from '../sources/open.ts';
import { type R2BucketLike, R2Source } from '../sources/r2.ts';

registerKernelModules({ relaxed: relaxedKernels, simd: simdKernels });

export type { R2BucketLike };

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

/** The binding the model is read from. */
const BINDING = 'WEIGHTS';

/** Loaded models, by R2 key and etag, shared by every app in this isolate. */
const models = new Map<string, Promise<BitNetModel>>();

/** `r2://WEIGHTS/<key>`, each path segment escaped (parseR2Url decodes them). */
export function r2Location(key: string): string {
  return `r2://${BINDING}/${key.split('/').map(encodeURIComponent).join('/')}`;
}

/** MODEL_KEY as an object key: a prefix ending in "/" means the pack manifest under it. */
export function modelObjectKey(modelKey: string | undefined): string {
  const k = (modelKey ?? 'model.gguf').replace(/^\/+/, '');
  return k === '' || k.endsWith('/') ? `${k}${MANIFEST_NAME}` : k;
}

/** What one look at R2 says about the model, before any weight is read. */
export interface ModelObject {
  format: 'gguf' | 'shard-pack';
  /** Bytes the model occupies in R2: the GGUF, or the manifest and every shard it lists. */
  bytes: number;
  etag: string;
}

/**
 * The model's format and size: a HEAD for a GGUF; a pack's manifest is read (it lists its shards).
 * A key ending in .gguf is taken as a GGUF, one ending in .json as a manifest; any other key is
 * recognised by its first bytes. Undefined when the object does not exist (the load then says so).
 */
export async function inspectModelObject(bucket: R2BucketLike, key: string): Promise<ModelObject | undefined> {
  const head = await bucket.head(key);
  if (!head) return undefined;
  const lower = key.toLowerCase();
  let pack = lower.endsWith('.json');
  if (!pack && !lower.endsWith('.gguf') && head.size > 0) {
    const first = await bucket.get(key, { range: { offset: 0, length: Math.min(8, head.size) } });
    pack = first !== null && 'arrayBuffer' in first && looksLikeManifest(new Uint8Array(await first.arrayBuffer()));
  }
  if (!pack) return { format: 'gguf', bytes: head.size, etag: head.etag };
  const src = await R2Source.open(bucket, key, {}, BINDING);
  const manifest = await readManifest(src);
  const shards = manifest.shards.reduce((n, s) => n + s.size, 0);
  return { format: 'shard-pack', bytes: src.size + shards, etag: src.etag };
}

/** Loads the model from R2 by ranged reads (r2://WEIGHTS/<key> through openSource). */
async function loadFromR2(env: WorkerEnv, key: string): Promise<BitNetModel> {
  const sourceOptions: OpenOptions = { bindings: { [BINDING]: env.WEIGHTS } };
  try {
    return await BitNetModel.fromFile(r2Location(key), { sourceOptions, maxMemoryBytes: WORKERS_MEMORY_BYTES });
  } catch (e) {
    // A missing object (the model, or a shard of it) is the server's problem: 503, not the route's 404.
    if (isBitNetError(e) && e.code === 'NOT_FOUND')
      throw BitNetError.Io('MODEL_UNAVAILABLE', `${e.message} (in R2 bucket ${BINDING})`, { key }, e);
    throw e;
  }
}

/** AppDeps from the Worker's env (a HEAD request, or the pack manifest, to size the model). */
export async function depsFromEnv(env: WorkerEnv): Promise<AppDeps> {
  const key = modelObjectKey(env.MODEL_KEY);
  const obj = await inspectModelObject(env.WEIGHTS, key);
  let keys = parseKeyList(env.BITNET_API_KEYS);
  if (keys.length === 0 && env.ALLOW_UNAUTHENTICATED !== 'true') {
    console.warn(
      'bitnet: no BITNET_API_KEYS and ALLOW_UNAUTHENTICATED is not "true": refusing every non-health request',
    );
    keys = [crypto.randomUUID()];
  }
  const cacheKey = `${key}@${obj?.etag ?? ''}`;
  const origins = parseKeyList(env.CORS_ORIGINS);
  return {
    model: () => {
      let p = models.get(cacheKey);
      if (!p) {
        p = loadFromR2(env, key);
        models.set(cacheKey, p);
        p.catch(() => models.delete(cacheKey));
      }
      return p;
    },
    modelId: env.MODEL_ID ?? 'bitnet',
    modelBytes: obj?.bytes,
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
