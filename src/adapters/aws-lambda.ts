/**
 * bitnet-edge/aws-lambda: the app behind a Lambda Function URL with response streaming
 * (InvokeMode RESPONSE_STREAM), through the runtime's `awslambda` global (`streamifyResponse`,
 * `HttpResponseStream`) and this package's own streaming wrapper (lambda-stream.ts: the request's
 * signal aborts and the body is cancelled when the client goes away, freeing its generation slot).
 *
 * Environment (read by env.ts: integers are plain decimal digits, booleans true/false/1/0 in any
 * case, "" is unset; a bad value is INVALID_ENV naming the variable, see below):
 *   BITNET_MODEL                 model location: a path, https://, s3://bucket/key (GGUF, a pack's
 *                                manifest.json or its prefix); without it, the demo model (RANDOM WEIGHTS)
 *   BITNET_MODEL_ID              id served in /v1/models
 *   BITNET_API_KEYS              comma-separated client keys
 *   BITNET_ALLOW_UNAUTHENTICATED true to serve without keys (e.g. behind IAM auth on the URL);
 *                                otherwise no keys = every non-health route answers 401
 *   BITNET_GPU_URL, BITNET_GPU_API_KEY   the GPU endpoint (an absolute http(s) URL) and its key
 *   BITNET_GPU_FIRST_BYTE_TIMEOUT_S, BITNET_GPU_TIMEOUT_S, BITNET_GPU_IDLE_TIMEOUT_S
 *                                seconds > 0 (defaults 30, 300, 60; see env.ts gpuEndpointFromEnv)
 *   BITNET_EDGE_MAX_TOKENS       integer ≥ 0 (router default 512)
 *   BITNET_MAX_CONCURRENT        integer ≥ 1 (default 2)
 *   BITNET_MAX_QUEUE             integer ≥ 0 (default 16)
 *   BITNET_VALIDATE_CHECKSUMS    true: verify every tensor's sha256 while a shard pack loads
 *                                (CHECKSUM_MISMATCH refuses the model); default false
 *   BITNET_V8_YOUNG_GEN          "default" keeps V8's own young-generation growth (node-heap.ts)
 *   BITNET_THREADS               wasm kernel threads, integer ≥ 1 (default: the vCPUs the function
 *                                has, i.e. availableParallelism(): 2 from 1,769 MB of memory, up to 6)
 *
 * A bad value does not fail the function's start-up (an opaque init error): it is logged once, and
 * every request is answered by env.ts's misconfiguredFetch (500 INVALID_ENV naming the variable;
 * /healthz 200 saying what is wrong; /readyz 503).
 *
 * S3 weights are read by ranged GetObject calls (src/sources/s3.ts), cached on /tmp.
 * The model loads on the first request that needs it and stays for the life of the sandbox.
 */
import { availableParallelism } from 'node:os';
import { BitNetModel } from '../api/bitnet-model.ts';
import { encodeGGUF } from '../gguf/writer.ts';
import { type AppDeps, createApp } from '../http/app.ts';
import { parseKeyList } from '../http/auth.ts';
import { SYNTH_PRESETS, synthModel } from '../model/synth.ts';
import { MemorySource } from '../sources/byte-source.ts';
import { envBool, envInt, envString, gpuEndpointFromEnv, misconfiguredFetch } from './env.ts';
import { awslambdaGlobal, type FetchHandler, type LambdaStreamingHandler, streamingHandler } from './lambda-stream.ts';
import { keepYoungGenerationSmall, youngGenSetting } from './node-heap.ts';

export type { LambdaResponseStream, LambdaStreamingHandler } from './lambda-stream.ts';

type Env = Record<string, string | undefined>;

async function demoModel(numThreads: number): Promise<BitNetModel> {
  const m = synthModel({ arch: 'bitnet-b1.58', ...SYNTH_PRESETS.tiny, qtype: 'i2_s', embdType: 'f16', seed: 1 });
  return BitNetModel.fromFile(
    new MemorySource(await encodeGGUF(m.metadata, m.tensors), 'demo (in memory, random weights)'),
    { numThreads },
  );
}

/** AppDeps from the function's environment. A bad value throws Config INVALID_ENV naming it. */
export function depsFromEnv(env: Env): AppDeps {
  youngGenSetting(env); // applied at start-up (below); a bad value is reported here
  const numThreads = envInt(env, 'BITNET_THREADS', { min: 1 }) ?? Math.max(1, availableParallelism());
  const maxConcurrent = envInt(env, 'BITNET_MAX_CONCURRENT', { min: 1 }) ?? 2;
  const maxQueue = envInt(env, 'BITNET_MAX_QUEUE') ?? 16;
  const edgeMaxTokens = envInt(env, 'BITNET_EDGE_MAX_TOKENS');
  const validateChecksums = envBool(env, 'BITNET_VALIDATE_CHECKSUMS') ?? false;
  const allowUnauthenticated = envBool(env, 'BITNET_ALLOW_UNAUTHENTICATED') ?? false;
  let keys = parseKeyList(env.BITNET_API_KEYS);
  if (keys.length === 0 && !allowUnauthenticated) {
    console.warn(
      'bitnet: no BITNET_API_KEYS and BITNET_ALLOW_UNAUTHENTICATED is not true: refusing every non-health request',
    );
    keys = [crypto.randomUUID()];
  }
  const path = envString(env, 'BITNET_MODEL');
  const gpu = gpuEndpointFromEnv(env, 'BITNET_');
  return {
    model: () => (path ? BitNetModel.fromFile(path, { numThreads, validateChecksums }) : demoModel(numThreads)),
    modelId: envString(env, 'BITNET_MODEL_ID') ?? (path ? 'bitnet' : 'bitnet-demo-random-weights'),
    apiKeys: keys,
    limits: { maxConcurrent, maxQueue },
    router: {
      gpu,
      edgeMaxTokens,
    },
  };
}

/** A streaming Lambda handler over the app. Needs the `awslambda` global (the Node runtimes have it). */
export function createLambdaHandler(deps: AppDeps): LambdaStreamingHandler {
  const app = createApp(deps);
  return streamingHandler(app.fetch as FetchHandler);
}

/**
 * The handler for an environment. A bad setting is logged once (console.error) and every request
 * is answered with it (500 INVALID_ENV naming the variable; /healthz 200, /readyz 503), instead of
 * failing the function's start-up.
 */
export function createLambdaHandlerFromEnv(env: Env): LambdaStreamingHandler {
  let fetch: FetchHandler;
  try {
    fetch = createApp(depsFromEnv(env)).fetch as FetchHandler;
  } catch (e) {
    console.error(`bitnet: the function's environment is invalid, every request will say so: ${(e as Error).message}`);
    fetch = misconfiguredFetch(e);
  }
  return streamingHandler(fetch);
}

const inLambda = awslambdaGlobal() !== undefined;
// the function's process is ours: hold V8's young generation small (node-heap.ts)
if (inLambda) keepYoungGenerationSmall();

/** The function's entry point (handler: index.handler). Outside Lambda, calling it throws. */
export const handler: LambdaStreamingHandler = inLambda
  ? createLambdaHandlerFromEnv(process.env)
  : () => {
      throw new Error('bitnet-edge/aws-lambda: the awslambda global is missing (not in a Lambda Node runtime)');
    };
