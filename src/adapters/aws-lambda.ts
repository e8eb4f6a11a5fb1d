/**
 * bitnet-edge/aws-lambda: the app behind a Lambda Function URL with response streaming
 * (InvokeMode RESPONSE_STREAM), through Hono's `streamHandle` and the runtime's `awslambda`
 * global (`streamifyResponse`, `HttpResponseStream`).
 *
 * Environment:
 *   BITNET_MODEL                 model location: a path, https://, s3://bucket/key (GGUF, a pack's
 *                                manifest.json or its prefix); without it, the demo model (RANDOM WEIGHTS)
 *   BITNET_MODEL_ID              id served in /v1/models
 *   BITNET_API_KEYS              comma-separated client keys
 *   BITNET_ALLOW_UNAUTHENTICATED "true" to serve without keys (e.g. behind IAM auth on the URL);
 *                                otherwise no keys = every non-health route answers 401
 *   BITNET_GPU_URL, BITNET_GPU_API_KEY, BITNET_EDGE_MAX_TOKENS, BITNET_MAX_CONCURRENT, BITNET_MAX_QUEUE
 *   BITNET_V8_YOUNG_GEN          "default" keeps V8's own young-generation growth (node-heap.ts)
 *   BITNET_THREADS               wasm kernel threads (default: the vCPUs the function has, i.e.
 *                                availableParallelism(): 2 from 1,769 MB of memory, up to 6)
 *
 * S3 weights are read by ranged GetObject calls (src/sources/s3.ts), cached on /tmp.
 * The model loads on the first request that needs it and stays for the life of the sandbox.
 */
import { availableParallelism } from 'node:os';
import { streamHandle } from 'hono/aws-lambda';
import { BitNetModel } from '../api/bitnet-model.ts';
import { encodeGGUF } from '../gguf/writer.ts';
import { type AppDeps, createApp } from '../http/app.ts';
import { parseKeyList } from '../http/auth.ts';
import { SYNTH_PRESETS, synthModel } from '../model/synth.ts';
import { MemorySource } from '../sources/byte-source.ts';
import { keepYoungGenerationSmall } from './node-heap.ts';

type Env = Record<string, string | undefined>;

const int = (v: string | undefined): number | undefined => (v && /^\d+$/.test(v) ? Number(v) : undefined);

async function demoModel(numThreads: number): Promise<BitNetModel> {
  const m = synthModel({ arch: 'bitnet-b1.58', ...SYNTH_PRESETS.tiny, qtype: 'i2_s', embdType: 'f16', seed: 1 });
  return BitNetModel.fromFile(
    new MemorySource(await encodeGGUF(m.metadata, m.tensors), 'demo (in memory, random weights)'),
    { numThreads },
  );
}

/** AppDeps from the function's environment. */
export function depsFromEnv(env: Env): AppDeps {
  let keys = parseKeyList(env.BITNET_API_KEYS);
  if (keys.length === 0 && env.BITNET_ALLOW_UNAUTHENTICATED !== 'true') {
    console.warn(
      'bitnet: no BITNET_API_KEYS and BITNET_ALLOW_UNAUTHENTICATED is not "true": refusing every non-health request',
    );
    keys = [crypto.randomUUID()];
  }
  const path = env.BITNET_MODEL;
  const numThreads = Math.max(1, int(env.BITNET_THREADS) ?? availableParallelism());
  return {
    model: () => (path ? BitNetModel.fromFile(path, { numThreads }) : demoModel(numThreads)),
    modelId: env.BITNET_MODEL_ID ?? (path ? 'bitnet' : 'bitnet-demo-random-weights'),
    apiKeys: keys,
    limits: { maxConcurrent: int(env.BITNET_MAX_CONCURRENT) ?? 2, maxQueue: int(env.BITNET_MAX_QUEUE) ?? 16 },
    router: {
      gpu: env.BITNET_GPU_URL ? { url: env.BITNET_GPU_URL, apiKey: env.BITNET_GPU_API_KEY } : undefined,
      edgeMaxTokens: int(env.BITNET_EDGE_MAX_TOKENS),
    },
  };
}

/** A streaming Lambda handler over the app. Needs the `awslambda` global (the Node runtimes have it). */
export function createLambdaHandler(deps: AppDeps) {
  return streamHandle(createApp(deps));
}

const inLambda = typeof (globalThis as { awslambda?: unknown }).awslambda !== 'undefined';
// the function's process is ours: hold V8's young generation small (node-heap.ts)
if (inLambda) keepYoungGenerationSmall();

/** The function's entry point (handler: index.handler). Outside Lambda, calling it throws. */
export const handler: ReturnType<typeof streamHandle> = inLambda
  ? createLambdaHandler(depsFromEnv(process.env))
  : () => {
      throw new Error('bitnet-edge/aws-lambda: the awslambda global is missing (not in a Lambda Node runtime)');
    };
