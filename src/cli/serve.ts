/**
 * `bitnet serve [--model PATH] [--host H] [--port P] [--api-key K]… [limits, CORS, GPU routing]`
 *
 * Serves the HTTP app on Node. The model comes from --model or BITNET_MODEL; with neither, the
 * embedded demo model: a tiny synthetic model with RANDOM WEIGHTS (its text is noise), written
 * by `npm run build:demo` (npm start runs it first) or, if that file is missing, built in memory.
 * API keys come from --api-key (repeatable) and BITNET_API_KEYS (comma-separated); without any,
 * the server binds to 127.0.0.1 only and warns. The GPU endpoint: --gpu-url / BITNET_GPU_URL
 * and --gpu-api-key / BITNET_GPU_API_KEY.
 *
 * Shutdown: the first SIGTERM/SIGINT drains (the server stops accepting, /readyz answers 503,
 * requests in flight get up to --shutdown-grace / BITNET_SHUTDOWN_GRACE_S seconds, default 10,
 * to finish; the rest are cut, SSE streams with a last error event SHUTTING_DOWN) and exits 0; a
 * second signal cuts at once. Receiving a request (headers and body) is limited to
 * --request-timeout / BITNET_REQUEST_TIMEOUT_S seconds (default 30; 0 = no limit): a slower
 * client gets 408. Responses, SSE streams included, are not limited by it.
 *
 * Remote model loads (https://, s3://): BITNET_HTTP_TIMEOUT_S (a request with no byte for this
 * long is retried; default 30), BITNET_HTTP_RETRIES (retries after the first attempt; default 4)
 * and BITNET_HTTP_MIN_BYTES_PER_S (https://: a slower transfer, averaged over the timeout, is
 * retried as HTTP_TOO_SLOW; default 4096, 0 = no floor).
 *
 * --validate-checksums / BITNET_VALIDATE_CHECKSUMS=1 (true/false/1/0): a shard pack's tensors are checked against
 * the manifest's sha256s while the model loads, and a mismatch stops the server before it listens
 * (Model/CHECKSUM_MISMATCH). A GGUF file carries no checksums: nothing to check there.
 */
import { existsSync } from 'node:fs';
import { mkdir, rename, stat, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { gpuEndpointFromEnv } from '../adapters/env.ts';
import { DEFAULT_REQUEST_TIMEOUT_MS, DEFAULT_SHUTDOWN_GRACE_MS, resolveApiKeys, serveNode } from '../adapters/node.ts';
import { youngGenSetting } from '../adapters/node-heap.ts';
import { drainOnSignals } from '../adapters/node-signals.ts';
import { BitNetModel } from '../api/bitnet-model.ts';
import { BitNetError } from '../errors.ts';
import { encodeGGUF } from '../gguf/writer.ts';
import { type AppDeps, modelIdFromName } from '../http/app.ts';
import type { ServedModel } from '../http/model-holder.ts';
import { SYNTH_PRESETS, type SynthOptions, synthModel } from '../model/synth.ts';
import { MemorySource } from '../sources/byte-source.ts';
import type { OpenOptions } from '../sources/open.ts';
import { type EnvLike, envBool, envInt, envSecondsMs, httpUrlProblem, invalidEnv } from '../util/env.ts';
import { num, oneOf, str } from './args.ts';
import { resolveCliLocation } from './model-location.ts';

/** The demo: the `tiny` preset, I2_S, seed 1. Random weights. */
export const DEMO_SYNTH: SynthOptions = {
  arch: 'bitnet-b1.58',
  ...SYNTH_PRESETS.tiny,
  qtype: 'i2_s',
  embdType: 'f16',
  seed: 1,
};
export const DEMO_MODEL_ID = 'bitnet-demo-random-weights';
export const DEMO_MODEL_PATH = fileURLToPath(new URL('../../.cache/demo/bitnet-demo-tiny-i2_s.gguf', import.meta.url));

export async function demoModelBytes(): Promise<Uint8Array> {
  const m = synthModel(DEMO_SYNTH);
  return encodeGGUF(m.metadata, m.tensors);
}

/** Writes the demo model file (skipped when it exists). Returns its path. */
export async function writeDemoModel(path = DEMO_MODEL_PATH): Promise<string> {
  if (existsSync(path)) return path;
  await mkdir(dirname(path), { recursive: true });
  await writeFile(`${path}.partial`, await demoModelBytes());
  await rename(`${path}.partial`, path);
  return path;
}

/**
 * Seconds from a flag, else an environment variable, else the default; as milliseconds. A bad
 * flag is BAD_FLAG, a bad variable INVALID_ENV naming it (as the other adapters' settings).
 */
function seconds(
  flags: Record<string, unknown>,
  flag: string,
  env: EnvLike,
  envName: string,
  defaultMs: number,
): number {
  const fromFlag = num(flags, flag, { min: 0 });
  if (fromFlag !== undefined) return Math.round(fromFlag * 1000);
  return envSecondsMs(env, envName) ?? defaultMs;
}

/** Retry/stall settings of remote model sources from BITNET_HTTP_*; undefined when none is set. */
function remoteSourceOptions(env: EnvLike): OpenOptions | undefined {
  const stallMs = envSecondsMs(env, 'BITNET_HTTP_TIMEOUT_S');
  if (stallMs === 0)
    throw invalidEnv('BITNET_HTTP_TIMEOUT_S', String(env.BITNET_HTTP_TIMEOUT_S), 'must be more than 0 seconds');
  const retries = envInt(env, 'BITNET_HTTP_RETRIES');
  const minBytesPerSecond = envInt(env, 'BITNET_HTTP_MIN_BYTES_PER_S');
  if (stallMs === undefined && retries === undefined && minBytesPerSecond === undefined) return undefined;
  const retry = {
    ...(stallMs !== undefined ? { stallTimeoutMs: stallMs } : {}),
    ...(retries !== undefined ? { retries } : {}),
  };
  return {
    retry,
    http: minBytesPerSecond !== undefined ? { minBytesPerSecond } : undefined,
  };
}

export async function serveCommand(
  argv: string[],
  env: Record<string, string | undefined> = process.env,
): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' },
      'model-id': { type: 'string' },
      host: { type: 'string' },
      port: { type: 'string' },
      'api-key': { type: 'string', multiple: true },
      'max-concurrent': { type: 'string' },
      'max-batch': { type: 'string' },
      'max-queue': { type: 'string' },
      'max-tokens': { type: 'string' },
      'body-limit': { type: 'string' },
      'cors-origin': { type: 'string', multiple: true },
      'gpu-url': { type: 'string' },
      'gpu-api-key': { type: 'string' },
      'edge-max-tokens': { type: 'string' },
      'memory-budget': { type: 'string' },
      backend: { type: 'string' },
      threads: { type: 'string' },
      'prompt-cache': { type: 'string' },
      'validate-checksums': { type: 'boolean' },
      'shutdown-grace': { type: 'string' },
      'request-timeout': { type: 'string' },
      json: { type: 'boolean' },
    },
    strict: true,
  });
  const given = str(values, 'model') ?? env.BITNET_MODEL;
  youngGenSetting(env); // applied as the process started (node-heap.ts); a bad value is refused here
  const backend = oneOf(values, 'backend', ['auto', 'reference', 'wasm', 'cuda'] as const) ?? 'auto';
  const graceMs = seconds(values, 'shutdown-grace', env, 'BITNET_SHUTDOWN_GRACE_S', DEFAULT_SHUTDOWN_GRACE_MS);
  const requestTimeoutMs = seconds(
    values,
    'request-timeout',
    env,
    'BITNET_REQUEST_TIMEOUT_S',
    DEFAULT_REQUEST_TIMEOUT_MS,
  );
  const modelConfig = {
    backend,
    numThreads: num(values, 'threads', { int: true, min: 1 }),
    // concurrent requests' decode steps computed as one batch (wasm backend)
    maxBatchSize:
      num(values, 'max-batch', { int: true, min: 1, max: 16 }) ?? envInt(env, 'BITNET_MAX_BATCH', { min: 1, max: 16 }),
    // finished sequences kept for prompt reuse (a chat's next turn prefills only its new tokens)
    promptCacheEntries: num(values, 'prompt-cache', { int: true, min: 0 }) ?? envInt(env, 'BITNET_PROMPT_CACHE'),
    validateChecksums: values['validate-checksums'] === true || envBool(env, 'BITNET_VALIDATE_CHECKSUMS') === true,
    sourceOptions: remoteSourceOptions(env),
  };
  const budget = num(values, 'memory-budget', { int: true, min: 1 });
  // The GPU endpoint: --gpu-url / --gpu-api-key over BITNET_GPU_URL / BITNET_GPU_API_KEY; the
  // timeouts from BITNET_GPU_*_TIMEOUT_S (a bad env value is INVALID_ENV, a bad flag BAD_FLAG).
  const flagGpuUrl = str(values, 'gpu-url');
  const urlProblem = flagGpuUrl === undefined ? undefined : httpUrlProblem(flagGpuUrl);
  if (urlProblem)
    throw BitNetError.Config('BAD_FLAG', `--gpu-url ${urlProblem}, got "${flagGpuUrl}"`, { flag: 'gpu-url' });
  const gpu = gpuEndpointFromEnv(env, 'BITNET_', flagGpuUrl);
  const gpuUrl = gpu?.url;
  // Every other flag is read before the model: a bad value is reported before any loading or notice.
  const apiKeys = resolveApiKeys((values['api-key'] as string[] | undefined) ?? [], env);
  const origins = (values['cors-origin'] as string[] | undefined) ?? [];
  const bodyLimitBytes = num(values, 'body-limit', { int: true, min: 1024 });
  const limits = {
    maxConcurrent: num(values, 'max-concurrent', { int: true, min: 1 }),
    maxQueue: num(values, 'max-queue', { int: true, min: 0 }),
  };
  const defaultMaxTokens = num(values, 'max-tokens', { int: true, min: 1 });
  const edgeMaxTokens = num(values, 'edge-max-tokens', { int: true, min: 0 });
  const host = str(values, 'host');
  const port = num(values, 'port', { int: true, min: 0, max: 65535 }) ?? 8080;
  const location = given === undefined ? undefined : await resolveCliLocation(given);
  let modelId = str(values, 'model-id');
  let model: ServedModel | (() => Promise<ServedModel>);
  let modelBytes: number | undefined;
  let description: string;
  const size =
    location && !/^[a-z][a-z0-9+.-]*:\/\//i.test(location)
      ? await stat(location).then(
          (st) => st.size,
          () => undefined,
        )
      : undefined;
  if (location && budget !== undefined && size !== undefined && size > budget) {
    // Over the budget: never loaded here; every generation goes to the GPU endpoint.
    if (!gpuUrl)
      throw BitNetError.Config(
        'BAD_FLAG',
        `the model (${size} bytes) is over --memory-budget ${budget} and no --gpu-url is set`,
        { flag: 'memory-budget' },
      );
    model = () =>
      Promise.reject(BitNetError.Memory('MODEL_TOO_LARGE', "the model is over this server's memory budget"));
    modelBytes = size;
    modelId ??= 'bitnet';
    description = `${modelId} (not loaded: over the memory budget; all requests go to ${gpuUrl})`;
  } else if (location) {
    const m = await BitNetModel.fromFile(location, modelConfig);
    if (m.modelInfo().synthetic) console.error(`note: ${m.modelInfo().name} is a synthetic model with random weights`);
    model = m;
    modelBytes = m.modelInfo().fileSize;
    // The id clients must send (what /v1/models lists), not the model's display name.
    modelId ??= modelIdFromName(m.modelInfo().name);
    description = `model ${modelId}, backend ${m.engine.backendName}`;
  } else {
    const demo = existsSync(DEMO_MODEL_PATH);
    const m = await BitNetModel.fromFile(
      demo ? DEMO_MODEL_PATH : new MemorySource(await demoModelBytes(), 'demo (in memory)'),
      modelConfig,
    );
    modelId ??= DEMO_MODEL_ID;
    console.error(
      `no --model or BITNET_MODEL: serving the demo model ${DEMO_MODEL_ID} (synthetic, RANDOM WEIGHTS: its text is noise)`,
    );
    model = m;
    modelBytes = m.modelInfo().fileSize;
    description = `model ${modelId}, backend ${m.engine.backendName}`;
  }

  const deps: AppDeps = {
    model,
    modelId,
    modelBytes,
    apiKeys,
    cors: origins.length ? { origins: origins.includes('*') ? '*' : origins } : undefined,
    bodyLimitBytes,
    limits,
    defaultMaxTokens,
    router: {
      gpu: gpu && { ...gpu, apiKey: str(values, 'gpu-api-key') ?? gpu.apiKey },
      edgeMaxTokens,
      localMemoryBudgetBytes: budget,
    },
  };

  const server = await serveNode(deps, {
    host,
    port,
    warn: (m) => console.error(`warning: ${m}`),
    requestTimeoutMs,
  });
  const drained = drainOnSignals(server, graceMs, 'bitnet serve');
  if (values.json) console.log(JSON.stringify({ url: server.url, model: modelId, description }));
  else console.log(`bitnet serve: listening on ${server.url} (${description}${gpuUrl ? `, GPU ${gpuUrl}` : ''})`);
  await drained;
  return 0;
}
