/**
 * BitNetModel: the seed's main entry point. Loading (fromFile / fromPretrained), generation
 * (generate / generateStream), description (modelInfo / config) and metrics.
 *
 * generateStream returns a ReadableStream<string> of text deltas that is also async-iterable
 * (`for await (const piece of model.generateStream(...))`) and cancellable (`stream.cancel()` or
 * breaking out of the loop aborts the generation and frees its KV cache entries).
 */
import { BitNetError } from '../errors.ts';
import type { EmbedOptions } from '../generate/embeddings.ts';
import { type PerplexityOptions, type PerplexityResult, perplexity } from '../generate/perplexity.ts';
import { openLocalGguf } from '../kernels/wasm/open-local.ts';
import type { ByteSource } from '../sources/byte-source.ts';
import { Device } from './device.ts';
import { GenerationConfig, type GenerationConfigInit } from './generation-config.ts';
import { InferenceConfig } from './inference-config.ts';
import { InferenceEngine, type Prompt, toResult } from './inference-engine.ts';
import type { InferenceResult, PerformanceMetrics } from './metrics.ts';
import { ModelConfig, type ModelConfigInit } from './model-config.ts';
import type { ModelInfo } from './model-info.ts';
import { type Model, ModelLoader } from './model-loader.ts';

/**
 * A local GGUF file that the wasm backend will run is opened so that its tensors are read straight
 * into the kernels' memory: the weights are then held once (peak RSS ≈ file size + runtime),
 * instead of once by the loader and once more by the backend. Anything else (remote locations,
 * shard packs, non-GGUF files, the reference or cuda backends, runtimes without WebAssembly or
 * node:fs) returns undefined and takes the ordinary path.
 */
async function openLocalForWasm(
  location: string | URL | ByteSource,
  config: ModelConfig,
): Promise<ByteSource | undefined> {
  if (config.backend === 'reference' || config.backend === 'cuda' || config.device.resolve().kind === 'Cuda')
    return undefined;
  if (typeof WebAssembly === 'undefined') return undefined;
  const s = typeof location === 'string' ? location : location instanceof URL ? location.toString() : undefined;
  return s === undefined ? undefined : openLocalGguf(s);
}

export type TextStream = ReadableStream<string> & AsyncIterable<string>;

function rss(): number {
  const p = (globalThis as { process?: { memoryUsage?: () => { rss: number } } }).process;
  return p?.memoryUsage?.().rss ?? 0;
}

/** A location from a JS caller that is none of a path, a URL or a ByteSource: a typed error, not a TypeError. */
function checkLocation(location: unknown): void {
  const ok =
    (typeof location === 'string' && location.trim() !== '') ||
    location instanceof URL ||
    (typeof location === 'object' && location !== null && typeof (location as ByteSource).read === 'function');
  if (!ok)
    throw BitNetError.Config(
      'BAD_LOCATION',
      `a model location is a path, a URL or a ByteSource (got ${location === null ? 'null' : typeof location === 'string' ? 'an empty string' : typeof location})`,
      { location: typeof location },
    );
}

export class BitNetModel {
  private readonly model: Model;
  private readonly cfg: ModelConfig;
  readonly engine: InferenceEngine;
  private metrics: PerformanceMetrics | undefined;

  private constructor(model: Model, cfg: ModelConfig) {
    this.model = model;
    // Report the model's real shape in the seed's fields.
    cfg.vocabSize = model.hparams.nVocab;
    cfg.numHeads = model.hparams.nHead;
    cfg.hiddenSize = model.hparams.nEmbd;
    cfg.numLayers = model.hparams.nLayer;
    cfg.maxSeqLen = Math.min(cfg.maxSeqLen, model.hparams.nCtx);
    this.cfg = cfg;
    const inf = new InferenceConfig({
      // no per-generation timeout or concurrency cap here: a BitNetModel's callers set their own
      // (the HTTP app's limiter and signals); a directly built InferenceEngine has both
      requestTimeout: 0,
      maxConcurrentRequests: Number.MAX_SAFE_INTEGER,
      kvCacheSize: cfg.kvCache.maxBytes,
      numThreads: cfg.numThreads ?? 1,
      promptCacheEntries: cfg.promptCacheEntries,
      maxBatchSize: cfg.maxBatchSize,
    });
    cfg.kvCache.maxSeqLen = Math.min(cfg.kvCache.maxSeqLen, cfg.maxSeqLen);
    this.engine = new InferenceEngine(model, model.tokenizer, cfg.device, inf, {
      backend: cfg.backend,
      kvCacheConfig: cfg.kvCache,
    });
  }

  private static async load(location: string | URL | ByteSource, given: ModelConfig): Promise<BitNetModel> {
    checkLocation(location);
    // the model fills its config with its shape: a copy, so the caller's can load the next model as it was
    const config = given.clone().validate();
    // Check the device before reading anything.
    const dev = config.device.resolve();
    if (!dev.isAvailable()) {
      throw BitNetError.Device('DEVICE_UNAVAILABLE', `${dev.toString()} is not available: ${dev.unavailableReason()}`, {
        device: dev.toString(),
        available: Device.availableDevices().map((d) => d.toString()),
      });
    }
    const loader = new ModelLoader({
      maxMemoryBytes: config.maxMemoryBytes,
      preTokenizer: config.preTokenizer,
      validateChecksums: config.validateChecksums,
      progressCallback: config.progressCallback,
      sourceOptions: config.sourceOptions,
      cacheDir: config.cacheDir,
    });
    const direct = await openLocalForWasm(location, config);
    if (!direct) return new BitNetModel(await loader.load(location), config);
    try {
      return new BitNetModel(await loader.load(direct), config);
    } finally {
      await direct.close?.();
    }
  }

  /** Loads a local GGUF file (a path, a file:// URL, or any ByteSource). */
  static async fromFile(
    path: string | URL | ByteSource,
    config: ModelConfig | ModelConfigInit = {},
  ): Promise<BitNetModel> {
    return BitNetModel.load(path, config instanceof ModelConfig ? config : new ModelConfig(config));
  }

  /** Loads `owner/repo` from the Hugging Face hub (HF_ENDPOINT, HF_TOKEN honoured; files cached). */
  static async fromPretrained(modelId: string): Promise<BitNetModel> {
    return BitNetModel.fromPretrainedWithConfig(modelId, new ModelConfig());
  }

  /**
   * `hub` tunes the download (docs/hub.md): `stallTimeoutMs` (no byte for this long → retry;
   * default 30000), `attempts` (default 5), `metadataTimeoutMs` (with a cached snapshot the hub is
   * asked once, for at most this long without a byte; default 10000 or $HF_HUB_ETAG_TIMEOUT s),
   * `offline` (cache only; default $HF_HUB_OFFLINE), `signal`, `convertCheckpoints` (default true:
   * a repo with only a safetensors checkpoint is downloaded and converted once into a shard pack in
   * the cache, as `bitnet convert` would; false: `HUB_NO_GGUF`), `onProgress` (each file's download,
   * `{ phase: 'download', name: file, doneBytes, totalBytes? }`, and a conversion's,
   * `{ phase: 'convert', name: tensor, doneBytes, totalBytes }`; nothing when the cache has it all).
   */
  static async fromPretrainedWithConfig(
    modelId: string,
    config: ModelConfig | ModelConfigInit,
    hub: {
      stallTimeoutMs?: number;
      attempts?: number;
      metadataTimeoutMs?: number;
      offline?: boolean;
      signal?: AbortSignal;
      convertCheckpoints?: boolean;
      onProgress?: (p: { phase: 'download' | 'convert'; name: string; doneBytes: number; totalBytes?: number }) => void;
    } = {},
  ): Promise<BitNetModel> {
    const cfg = config instanceof ModelConfig ? config : new ModelConfig(config);
    cfg.validate();
    const { resolveHubModel } = await import('../sources/hf-hub.ts');
    const path = await resolveHubModel(modelId, {
      endpoint: cfg.hfEndpoint,
      token: cfg.hfToken,
      revision: cfg.revision,
      filename: cfg.filename,
      cacheDir: cfg.cacheDir,
      stallTimeoutMs: hub.stallTimeoutMs,
      attempts: hub.attempts,
      metadataTimeoutMs: hub.metadataTimeoutMs,
      offline: hub.offline,
      signal: hub.signal,
      onProgress:
        hub.onProgress &&
        ((p) =>
          hub.onProgress?.({ phase: 'download', name: p.file, doneBytes: p.doneBytes, totalBytes: p.totalBytes })),
      convertCheckpoint:
        hub.convertCheckpoints === false
          ? undefined
          : async (dir, out) => {
              const { convertCheckpointDirectory } = await import('../shards/convert-checkpoint.ts');
              await convertCheckpointDirectory(dir, out, {
                signal: hub.signal,
                onProgress:
                  hub.onProgress &&
                  ((p) =>
                    hub.onProgress?.({
                      phase: 'convert',
                      name: p.tensor,
                      doneBytes: p.doneBytes,
                      totalBytes: p.totalBytes,
                    })),
              });
            },
    });
    return BitNetModel.load(path, cfg);
  }

  /** Generates text for a prompt (text, `{ text, parseSpecial }` or `{ ids }`) and returns it. */
  async generate(
    prompt: Prompt,
    config: GenerationConfig | GenerationConfigInit = new GenerationConfig(),
  ): Promise<string> {
    return (await this.generateDetailed(prompt, config)).text;
  }

  /**
   * An embedding of the prompt (text or `{ids}`): its final hidden states, mean-pooled (or
   * `pooling: 'last'`) and of unit length unless `normalize: false`. One Float32Array of the
   * model's hidden size (`config().hiddenSize`).
   */
  async embed(prompt: Prompt, options: EmbedOptions = {}): Promise<Float32Array> {
    return (await this.engine.embed(prompt, options)).embedding;
  }

  /** Like generate, with token ids, finish reason and timings. Accepts `{ids}` prompts too. */
  async generateDetailed(
    prompt: Prompt,
    config: GenerationConfig | GenerationConfigInit = new GenerationConfig(),
    signal?: AbortSignal,
  ): Promise<InferenceResult> {
    const it = this.engine.stream(prompt, config, signal);
    let r = await it.next();
    while (!r.done) r = await it.next();
    const result = toResult(r.value);
    this.record(result);
    return result;
  }

  /**
   * Perplexity of a text (or of token ids), computed as llama.cpp's llama-perplexity does
   * (src/generate/perplexity.ts): chunks of `chunkSize` tokens (default min(512, context)), each
   * starting with BOS where the vocabulary adds one, scored on their second half.
   */
  async perplexity(
    input: Prompt,
    opts: Partial<Omit<PerplexityOptions, 'bos'>> & { signal?: AbortSignal } = {},
  ): Promise<PerplexityResult> {
    const ctx = this.modelInfo().contextLength;
    const chunkSize = opts.chunkSize ?? Math.min(512, ctx);
    if (chunkSize > ctx)
      throw BitNetError.Config(
        'INVALID_PERPLEXITY_CONFIG',
        `chunkSize ${chunkSize} is larger than the model's context (${ctx})`,
        { field: 'chunkSize', value: String(chunkSize), contextLength: ctx },
      );
    const ids = this.engine.encodePrompt(input);
    const vocab = this.modelInfo().vocabSize;
    const bad = ids.find((id) => !(Number.isInteger(id) && id >= 0 && id < vocab));
    if (bad !== undefined)
      throw BitNetError.Config('BAD_TOKEN', `token id ${bad} is outside the vocabulary (0..${vocab - 1})`, {
        token: bad,
      });
    const tok = this.model.tokenizer;
    const bos = tok?.addBos ? tok.specialTokens.bosTokenId : undefined;
    const config = new GenerationConfig({ maxNewTokens: 0, promptLogprobs: true });
    return perplexity(
      ids,
      async (chunk) => {
        const it = this.engine.stream({ ids: chunk }, config, opts.signal);
        let r = await it.next();
        while (!r.done) r = await it.next();
        return r.value.promptLogprobs ?? [];
      },
      { chunkSize, maxChunks: opts.maxChunks, bos, onChunk: opts.onChunk },
    );
  }

  /** Streams text deltas. Validation errors are thrown here, before the stream exists. */
  generateStream(prompt: Prompt, config: GenerationConfig | GenerationConfigInit = new GenerationConfig()): TextStream {
    const abort = new AbortController();
    const it = this.engine.stream(prompt, config, abort.signal);
    const stream = new ReadableStream<string>({
      pull: async (controller) => {
        try {
          for (;;) {
            const r = await it.next();
            if (r.done) {
              this.record(toResult(r.value));
              controller.close();
              return;
            }
            if (r.value.text) {
              controller.enqueue(r.value.text);
              return;
            }
          }
        } catch (e) {
          controller.error(e);
        }
      },
      cancel: async () => {
        abort.abort(BitNetError.Timeout('CANCELLED', 'generation cancelled by the consumer'));
        await it.return?.(undefined as never).catch(() => {});
      },
    }) as TextStream;
    // Node's and workerd's ReadableStreams are async-iterable already; make it so everywhere.
    const plain: ReadableStream<string> = stream;
    if (!(Symbol.asyncIterator in plain)) {
      (stream as unknown as { [Symbol.asyncIterator]: () => AsyncIterator<string> })[Symbol.asyncIterator] =
        async function* () {
          const reader = plain.getReader();
          try {
            for (;;) {
              const { done, value } = await reader.read();
              if (done) return;
              yield value;
            }
          } finally {
            reader.releaseLock();
          }
        };
    }
    return stream;
  }

  private record(r: InferenceResult): void {
    this.metrics = {
      tokensPerSecond: r.stats.tokensPerSecond,
      prefillTokensPerSecond: r.stats.prefillTokensPerSecond,
      timeToFirstToken: r.stats.timeToFirstTokenMs,
      avgLatencyPerToken: r.generatedTokens ? r.stats.totalMs / r.generatedTokens : 0,
      memoryUsage: rss(),
      gpuUtilization: undefined,
      promptTokens: r.promptTokens,
      generatedTokens: r.generatedTokens,
    };
  }

  /**
   * Frees the model's worker threads and kernel instance (InferenceEngine.dispose); every later call
   * is Device/MODEL_DISPOSED. Also `using model = await BitNetModel.fromFile(…)`.
   */
  dispose(): void {
    this.engine.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  modelInfo(): ModelInfo {
    return this.model.info;
  }

  config(): ModelConfig {
    return this.cfg;
  }

  lastMetrics(): PerformanceMetrics | undefined {
    return this.metrics;
  }

  resetMetrics(): void {
    this.metrics = undefined;
  }

  get tokenizer() {
    return this.model.tokenizer;
  }

  /** Why the file's tokenizer could not be built, when it has a vocabulary that failed (else undefined). */
  get tokenizerError(): BitNetError | undefined {
    const e = this.model.tokenizerError;
    return e && e.code !== 'TOKENIZER_MISSING' ? e : undefined;
  }
}
