/**
 * bitnet-edge/cloudflare: the app as a Cloudflare Worker (module syntax). Config: wrangler.toml.
 *
 * Bindings and vars (env; read by env.ts: integers are plain decimal digits, booleans
 * true/false/1/0 in any case, "" is unset):
 *   WEIGHTS                R2 bucket holding the model (binding). Without it the Worker still
 *                          answers /healthz; /readyz and local generations answer 503
 *                          R2_BINDING_MISSING (logged once)
 *   MODEL_KEY              object key in WEIGHTS (default "model.gguf"): a GGUF, or a shard pack's
 *                          manifest (".../manifest.json", or a prefix ending in "/" for the
 *                          manifest.json under it; its shards are read from next to it)
 *   MODEL_ID               id served in /v1/models (default "bitnet")
 *   BITNET_API_KEYS        comma-separated client keys (secret)
 *   ALLOW_UNAUTHENTICATED  true to serve without keys (local dev); otherwise no keys = every
 *                          non-health route answers 401
 *   GPU_URL, GPU_API_KEY   the GPU endpoint (an absolute http(s) URL) and its own key (secret)
 *   GPU_FIRST_BYTE_TIMEOUT_S, GPU_TIMEOUT_S, GPU_IDLE_TIMEOUT_S
 *                          seconds > 0 (defaults 30, 300, 60; see env.ts gpuEndpointFromEnv)
 *   EDGE_MAX_TOKENS        integer ≥ 0 (router default 512)
 *   MEMORY_BUDGET_BYTES    integer ≥ 0 (default 64 MiB)
 *   MAX_CONCURRENT         integer ≥ 1 (default 2); MAX_QUEUE integer ≥ 0 (default 16)
 *   VALIDATE_CHECKSUMS     true: verify every tensor's sha256 while a shard pack loads
 *                          (CHECKSUM_MISMATCH refuses the model); default false
 *   CORS_ORIGINS           comma-separated origins, or *
 * A bad value is INVALID_ENV naming the variable, logged once: every route answers 500 with it,
 * except /healthz (200, alive, saying what is wrong) and /readyz (503). See env.ts.
 *
 * /healthz never waits for R2: until the app is built (which needs one look at R2 to size the
 * model), it is answered without it.
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
import { requestIdOf } from '../http/request-id.ts';
import { registerKernelModules } from '../kernels/wasm/loader.ts';
import { MANIFEST_NAME } from '../shards/format.ts';
import { looksLikeManifest, readManifest } from '../shards/reader.ts';
import type { OpenOptions } from '../sources/open.ts';
import { type R2BucketLike, R2Source, r2Binding } from '../sources/r2.ts';
import { envBool, envInt, envString, gpuEndpointFromEnv, misconfiguredFetch } from './env.ts';

registerKernelModules({ relaxed: relaxedKernels, simd: simdKernels });

export type { R2BucketLike };

export interface WorkerEnv {
  /** Absent in a misconfigured deployment: then R2_BINDING_MISSING where the model is needed. */
  WEIGHTS?: R2BucketLike;
  MODEL_KEY?: string;
  MODEL_ID?: string;
  BITNET_API_KEYS?: string;
  ALLOW_UNAUTHENTICATED?: string;
  GPU_URL?: string;
  GPU_API_KEY?: string;
  GPU_FIRST_BYTE_TIMEOUT_S?: string;
  GPU_TIMEOUT_S?: string;
  GPU_IDLE_TIMEOUT_S?: string;
  EDGE_MAX_TOKENS?: string;
  MEMORY_BUDGET_BYTES?: string;
  MAX_CONCURRENT?: string;
  MAX_QUEUE?: string;
  CORS_ORIGINS?: string;
  VALIDATE_CHECKSUMS?: string;
}

const DEFAULT_BUDGET = 64 * 1024 * 1024;

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
  try {
    return await inspect(bucket, key);
  } catch (e) {
    if (isBitNetError(e)) throw e;
    // The binding itself failed (an R2 internal error): the server cannot serve now, try again later.
    throw BitNetError.Io(
      'MODEL_UNAVAILABLE',
      `r2://${BINDING}/${key}: ${(e as Error)?.message ?? String(e)}`,
      { key, retryAfterSeconds: 1 },
      e,
    );
  }
}

async function inspect(bucket: R2BucketLike, key: string): Promise<ModelObject | undefined> {
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
async function loadFromR2(bucket: R2BucketLike, key: string, validateChecksums: boolean): Promise<BitNetModel> {
  const sourceOptions: OpenOptions = { bindings: { [BINDING]: bucket } };
  try {
    return await BitNetModel.fromFile(r2Location(key), {
      sourceOptions,
      maxMemoryBytes: WORKERS_MEMORY_BYTES,
      validateChecksums,
      // one finished conversation's KV at most: an isolate has 128 MB in all
      promptCacheEntries: 1,
    });
  } catch (e) {
    // A missing object (the model, or a shard of it) is the server's problem: 503, not the route's 404.
    if (isBitNetError(e) && e.code === 'NOT_FOUND')
      throw BitNetError.Io('MODEL_UNAVAILABLE', `${e.message} (in R2 bucket ${BINDING})`, { key }, e);
    throw e;
  }
}

/** The Worker's settings from its vars, without touching R2. A bad value throws INVALID_ENV naming it. */
export function settingsFromEnv(env: WorkerEnv) {
  const e = env as unknown as Record<string, unknown>;
  const origins = parseKeyList(envString(e, 'CORS_ORIGINS'));
  return {
    key: modelObjectKey(envString(e, 'MODEL_KEY')),
    modelId: envString(e, 'MODEL_ID') ?? 'bitnet',
    apiKeys: parseKeyList(envString(e, 'BITNET_API_KEYS')),
    allowUnauthenticated: envBool(e, 'ALLOW_UNAUTHENTICATED') ?? false,
    validateChecksums: envBool(e, 'VALIDATE_CHECKSUMS') ?? false,
    cors: origins.length ? { origins: origins.includes('*') ? ('*' as const) : origins } : undefined,
    limits: { maxConcurrent: envInt(e, 'MAX_CONCURRENT', { min: 1 }) ?? 2, maxQueue: envInt(e, 'MAX_QUEUE') ?? 16 },
    router: {
      gpu: gpuEndpointFromEnv(e, ''),
      edgeMaxTokens: envInt(e, 'EDGE_MAX_TOKENS'),
      localMemoryBudgetBytes: envInt(e, 'MEMORY_BUDGET_BYTES') ?? DEFAULT_BUDGET,
    },
  };
}

/**
 * AppDeps from the Worker's env (a HEAD request, or the pack manifest, to size the model). A bad
 * var throws INVALID_ENV; a missing WEIGHTS binding does not throw: the model's loader answers
 * R2_BINDING_MISSING (503) where the model is needed, and routes that do not need it still work.
 */
export async function depsFromEnv(env: WorkerEnv, s = settingsFromEnv(env)): Promise<AppDeps> {
  let bucket: R2BucketLike | undefined;
  let missing: BitNetError | undefined;
  try {
    bucket = r2Binding(env as unknown as Record<string, unknown>, BINDING);
  } catch (e) {
    missing = e as BitNetError;
    console.error(`bitnet: ${missing.message}: the model cannot be loaded (bind an R2 bucket as ${BINDING})`);
  }
  const obj = bucket ? await inspectModelObject(bucket, s.key) : undefined;
  let keys = s.apiKeys;
  if (keys.length === 0 && !s.allowUnauthenticated) {
    console.warn('bitnet: no BITNET_API_KEYS and ALLOW_UNAUTHENTICATED is not true: refusing every non-health request');
    keys = [crypto.randomUUID()];
  }
  // A model loaded unverified is not the one a VALIDATE_CHECKSUMS env asked for.
  const cacheKey = `${s.key}@${obj?.etag ?? ''}${s.validateChecksums ? '#verified' : ''}`;
  return {
    model: () => {
      if (!bucket) return Promise.reject(missing);
      let p = models.get(cacheKey);
      if (!p) {
        p = loadFromR2(bucket, s.key, s.validateChecksums);
        models.set(cacheKey, p);
        p.catch(() => models.delete(cacheKey));
      }
      return p;
    },
    modelId: s.modelId,
    modelBytes: obj?.bytes,
    apiKeys: keys,
    cors: s.cors,
    limits: s.limits,
    router: s.router,
  };
}

type App = ReturnType<typeof createApp>;

/** Per env: its settings read once (or the misconfiguration answers), its app and, once built, the app itself. */
interface Worker {
  settings?: ReturnType<typeof settingsFromEnv>;
  misconfigured?: (request: Request) => Response;
  app?: Promise<App>;
  /** For requests that must not wait on R2 (/healthz). */
  built?: App;
}
const workers = new WeakMap<object, Worker>();

function workerFor(env: WorkerEnv): Worker {
  let w = workers.get(env);
  if (!w) {
    try {
      w = { settings: settingsFromEnv(env) };
    } catch (e) {
      console.error(`bitnet: the Worker's vars are invalid, every request will say so: ${(e as Error).message}`);
      w = { misconfigured: misconfiguredFetch(e) };
    }
    workers.set(env, w);
  }
  return w;
}

function appFor(env: WorkerEnv, w: Worker): Promise<App> {
  if (!w.app) {
    const a = depsFromEnv(env, w.settings).then((deps) => (w.built = createApp(deps)));
    w.app = a;
    a.catch(() => {
      if (w.app === a) w.app = undefined;
    });
  }
  return w.app;
}

/** The headers the app puts on every response, for the answers made before it exists. */
const routeHeaders = (request: Request) => ({
  'x-bitnet-route': 'edge',
  'x-request-id': requestIdOf(request.headers.get('x-request-id')),
});

/** Liveness: the isolate answers. What the app's /healthz says, without waiting for R2. */
function alive(request: Request): Response {
  return new Response(request.method === 'HEAD' ? null : JSON.stringify({ status: 'ok' }), {
    headers: { 'content-type': 'application/json; charset=utf-8', ...routeHeaders(request) },
  });
}

export default {
  async fetch(request: Request, env: WorkerEnv, ctx: unknown): Promise<Response> {
    const w = workerFor(env);
    if (w.built) return w.built.fetch(request, env, ctx as never);
    if (w.misconfigured) return w.misconfigured(request);
    if ((request.method === 'GET' || request.method === 'HEAD') && new URL(request.url).pathname === '/healthz')
      return alive(request);
    let app: App;
    try {
      app = await appFor(env, w);
    } catch (e) {
      return errorResponse(e, routeHeaders(request));
    }
    return app.fetch(request, env, ctx as never);
  },
};
