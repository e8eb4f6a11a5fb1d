/**
 * InferenceEngine: the seed's low-level engine over a loaded Model, a Tokenizer and a Device.
 * It owns the KV cache and the backend, and runs the engine loop (src/generate/engine.ts).
 */
import { BitNetError } from '../errors.ts';
import { checkPooling, type EmbedOptions, poolHidden } from '../generate/embeddings.ts';
import { Engine, type GenerationOutcome, type TokenEvent } from '../generate/engine.ts';
import type { LogitBias } from '../generate/logit-adjust.ts';
import { createRng } from '../generate/prng.ts';
import { sample } from '../generate/sampler.ts';
import type { Backend, DecodeStats } from '../kernels/backend.ts';
import { createCudaBackend } from '../kernels/cuda/cuda-backend.ts';
import { ReferenceBackend } from '../kernels/reference-backend.ts';
import { WasmBackend } from '../kernels/wasm/backend.ts';
import { KVCache, KVCacheConfig } from '../model/kv-cache.ts';
import { encodePromptText } from '../tokenizer/prompt-text.ts';
import type { Tokenizer } from '../tokenizer/types.ts';
import { Slots } from '../util/slots.ts';
import type { DeviceSpec } from './device.ts';
import { GenerationConfig, type GenerationConfigInit } from './generation-config.ts';
import { InferenceConfig } from './inference-config.ts';
import type { InferenceResult } from './metrics.ts';
import type { BackendKind } from './model-config.ts';
import type { Model } from './model-loader.ts';

/** A dense tensor result: row-major data with its shape. */
export interface Tensor {
  data: Float32Array;
  shape: number[];
}

export interface SamplingConfig {
  temperature: number;
  topK: number;
  topP: number;
  minP?: number;
  repetitionPenalty: number;
  presencePenalty?: number;
  frequencyPenalty?: number;
  logitBias?: LogitBias;
  seed?: number | bigint;
  history?: number[];
}

/**
 * A prompt: text (tokenized as plain text, BOS added per the vocab), ready token ids, or text whose
 * special-token spellings (`<|eot_id|>`, …) become those tokens (`parseSpecial`, as llama.cpp's
 * server and llama-cli tokenize a prompt: for prompts the caller rendered itself, never for
 * untrusted text).
 */
export type Prompt = string | { ids: number[] } | { text: string; parseSpecial?: boolean };

export interface EngineOptions {
  backend?: BackendKind;
  kvCacheConfig?: KVCacheConfig;
}

/**
 * 'wasm': the wasm backend or a typed error saying why not. 'auto': wasm wherever WebAssembly
 * exists and the kernels load and pass their self-test, else the reference backend, which then
 * carries the refusal as `fallback` (a Device BACKEND_UNAVAILABLE error listing what was tried).
 */
function chooseBackend(model: Model, kind: BackendKind, config: InferenceConfig, kvCfg: KVCacheConfig): Backend {
  if (kind === 'reference') return new ReferenceBackend(model);
  // 'cuda' is never picked by 'auto': the GPU server asks for it (gpu-lambda/server.ts). Throws
  // Device BACKEND_UNAVAILABLE with the reason when there is no addon, driver or GPU.
  if (kind === 'cuda') return createCudaBackend(model);
  let refusal: BitNetError;
  if (typeof WebAssembly === 'undefined') {
    refusal = BitNetError.Device('BACKEND_UNAVAILABLE', 'this runtime has no WebAssembly', {
      backend: 'wasm',
      tried: ['wasm'],
    });
  } else if (kvCfg.compressOldEntries) {
    // The wasm kernels attend over an f32 mirror of the cache, chunk by chunk; the reference
    // reads the store token by token and so sees old blocks as int8 as soon as they are
    // compressed. The mirror cannot reproduce that (and would keep the memory compression saves).
    refusal = BitNetError.Device(
      'BACKEND_UNAVAILABLE',
      'the wasm backend does not support kvCache.compressOldEntries (its f32 KV mirror would neither reproduce the int8 entries nor save their memory); use the reference backend or turn compression off',
      { backend: 'wasm', tried: ['wasm'], reason: 'compressOldEntries' },
    );
  } else {
    try {
      // One KV mirror per request that may run at once, so concurrent sequences do not evict
      // each other's mirrors (an evicted mirror is rebuilt from the store: correct, but slow).
      return WasmBackend.create(model, {
        numThreads: config.numThreads,
        maxMirrors: Math.max(8, config.maxConcurrentRequests),
        maxBatch: config.maxBatchSize,
      });
    } catch (e) {
      if (!(e instanceof BitNetError)) throw e;
      refusal = e;
    }
  }
  if (kind === 'wasm') throw refusal;
  return Object.assign(new ReferenceBackend(model), { fallback: refusal });
}

export class InferenceEngine {
  readonly model: Model;
  readonly tokenizer: Tokenizer | undefined;
  readonly device: DeviceSpec;
  readonly config: InferenceConfig;
  readonly cache: KVCache;
  private readonly engine: Engine;
  private seqCounter = 0;
  private disposed = false;
  /** Generations running at once (InferenceConfig.maxConcurrentRequests; others wait in turn). */
  private readonly slots: Slots;

  constructor(
    model: Model,
    tokenizer: Tokenizer | undefined,
    device: DeviceSpec,
    config: InferenceConfig = new InferenceConfig(),
    opts: EngineOptions = {},
  ) {
    config.validate();
    const dev = device.resolve();
    if (!dev.isAvailable()) {
      throw BitNetError.Device('DEVICE_UNAVAILABLE', `${dev.toString()} is not available: ${dev.unavailableReason()}`, {
        device: dev.toString(),
        available: ['cpu'],
      });
    }
    this.model = model;
    this.tokenizer = tokenizer;
    this.device = dev;
    this.config = config;
    this.slots = new Slots(config.maxConcurrentRequests);
    const hp = model.hparams;
    const kvCfg = opts.kvCacheConfig ?? new KVCacheConfig({ maxBytes: config.kvCacheSize, maxSeqLen: hp.nCtx });
    this.cache = new KVCache(kvCfg, { nLayers: hp.nLayer, nKvHeads: hp.nHeadKv, headDim: hp.headDim });
    // A CUDA device asks for the cuda backend; otherwise the configured kind ('auto' = wasm where it loads).
    const backend = chooseBackend(model, dev.kind === 'Cuda' ? 'cuda' : (opts.backend ?? 'auto'), config, kvCfg);
    this.engine = new Engine({
      backend,
      tokenizer,
      contextLength: Math.min(hp.nCtx, kvCfg.maxSeqLen),
      newSequence: () => {
        const id = `seq-${++this.seqCounter}`;
        return {
          store: this.cache.forSequence(id),
          release: () => void this.cache.clearSequence(id),
          length: () => this.cache.length(id),
          truncate: (n: number) => this.cache.truncate(id, n),
          setIdle: (idle: boolean) => this.cache.setIdle(id, idle),
        };
      },
      // int8-compressed old blocks depend on how long the sequence once was: a reused prefix would
      // not equal a fresh prefill, so no prompt cache with compression
      promptCacheEntries: kvCfg.compressOldEntries ? 0 : config.promptCacheEntries,
    });
  }

  static withConfig(
    model: Model,
    tokenizer: Tokenizer | undefined,
    device: DeviceSpec,
    config: InferenceConfig,
  ): InferenceEngine {
    return new InferenceEngine(model, tokenizer, device, config);
  }

  /** Finished sequences the prompt cache holds now (their KV stays in `cache` until evicted). */
  get promptCacheSize(): number {
    return this.engine.promptCache?.size ?? 0;
  }

  /** Releases every sequence the prompt cache holds. */
  clearPromptCache(): void {
    this.engine.promptCache?.clear();
  }

  /**
   * Frees what the engine holds beyond its memory: the wasm backend's worker threads (numThreads > 1)
   * and its kernel instance, the prompt cache's sequences. Generations still running end with
   * BACKEND_DISPOSED (wasm); every later call is Device/MODEL_DISPOSED. Idempotent. Without it the
   * threads end only when the engine is garbage-collected.
   */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.engine.promptCache?.clear();
    this.engine.backend.dispose?.();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  /** Whether dispose() has run. */
  get isDisposed(): boolean {
    return this.disposed;
  }

  /** The engine loop, unless disposed. */
  private live(): Engine {
    if (this.disposed)
      throw BitNetError.Device('MODEL_DISPOSED', 'this model was disposed: load it again to use it', {});
    return this.engine;
  }

  get backendName(): string {
    return this.engine.backend.name;
  }

  /** Whether a request's several generations should run at once (Backend.runsGenerationsTogether). */
  get runsGenerationsTogether(): boolean {
    return this.engine.backend.runsGenerationsTogether === true;
  }

  /**
   * Decode steps of concurrent sequences run as batches (InferenceConfig.maxBatchSize): kernel
   * runs, the steps they served, the largest batch. Undefined on a backend that does not batch
   * this way (reference; cuda batches in its engine).
   */
  get decodeStats(): DecodeStats | undefined {
    return this.engine.backend.decodeStats;
  }

  /** Kernel threads the backend runs (the wasm pool starts on the first forward; 1 before it). */
  get numThreads(): number {
    return (this.engine.backend as { numThreads?: number }).numThreads ?? 1;
  }

  /**
   * Token ids for a prompt: text is tokenized with BOS per the vocabulary's add_bos_token, as plain
   * text unless `{ text, parseSpecial: true }`.
   */
  encodePrompt(prompt: Prompt): number[] {
    let text: string;
    let parseSpecial = false;
    if (typeof prompt === 'string') text = prompt;
    else if (Array.isArray((prompt as { ids?: unknown })?.ids)) return [...(prompt as { ids: number[] }).ids];
    else if (typeof (prompt as { text?: unknown })?.text === 'string') {
      text = (prompt as { text: string }).text;
      parseSpecial = (prompt as { parseSpecial?: boolean }).parseSpecial === true;
    } else {
      throw BitNetError.Config(
        'BAD_PROMPT',
        'a prompt is a string, { ids: number[] } or { text: string, parseSpecial?: boolean }',
        {
          got: prompt === null ? 'null' : typeof prompt,
        },
      );
    }
    const why = this.model.tokenizerError;
    if (!this.tokenizer && why && why.code !== 'TOKENIZER_MISSING') {
      // The file has a vocabulary but its tokenizer could not be built (an unknown pre-tokenizer,
      // an unsupported model type): say that, not "no tokenizer".
      throw BitNetError.Tokenization(
        why.code,
        `this model's tokenizer could not be built (${why.message}); give token ids instead of text`,
        why.details,
        why,
      );
    }
    if (!this.tokenizer) {
      throw BitNetError.Tokenization(
        'TOKENIZER_MISSING',
        'this model has no tokenizer; give token ids instead of text',
        {
          cause: this.model.tokenizerError?.message,
        },
      );
    }
    return encodePromptText(this.tokenizer, text, parseSpecial);
  }

  /** Logits at every position of `inputIds`: shape [n, vocab]. */
  async forward(inputIds: number[], attentionMask?: boolean[]): Promise<Tensor> {
    if (attentionMask?.some((m) => !m)) {
      throw BitNetError.Config(
        'UNSUPPORTED_MASK',
        'only a full (all-true) attention mask is supported for a single sequence',
      );
    }
    const rows = await this.live().logitsAll(inputIds);
    const v = this.model.hparams.nVocab;
    const data = new Float32Array(rows.length * v);
    for (let i = 0; i < rows.length; i++) data.set(rows[i], i * v);
    return { data, shape: [rows.length, v] };
  }

  /** Logits of the next token after `inputIds`, divided by `temperature` when it is > 0. */
  async nextTokenLogits(inputIds: number[], temperature = 1): Promise<Float32Array> {
    const rows = await this.live().logitsAll(inputIds);
    const last = rows[rows.length - 1];
    if (temperature > 0 && temperature !== 1) for (let i = 0; i < last.length; i++) last[i] /= temperature;
    return last;
  }

  sampleToken(logits: Float32Array, config: SamplingConfig): number {
    // the same ranges as GenerationConfig (temperature [0, 100], topP (0, 1], ...), same errors
    const { temperature, topK, topP, minP, repetitionPenalty, presencePenalty, frequencyPenalty, logitBias, seed } =
      config;
    new GenerationConfig({
      temperature,
      topK,
      topP,
      minP,
      repetitionPenalty,
      presencePenalty,
      frequencyPenalty,
      logitBias,
      seed,
    }).validate();
    if (!(logits instanceof Float32Array) || logits.length !== this.engine.backend.vocabSize) {
      throw BitNetError.Config(
        'BAD_LOGITS',
        `logits must be a Float32Array of the vocabulary's ${this.engine.backend.vocabSize} entries`,
        { length: (logits as { length?: number })?.length, vocabSize: this.engine.backend.vocabSize },
      );
    }
    return sample(logits, config.history ?? [], config, createRng(config.seed ?? 0));
  }

  /** Streams token events for a prompt; the generator's return value is the outcome. */
  stream(
    prompt: Prompt,
    config: GenerationConfig | GenerationConfigInit = {},
    signal?: AbortSignal,
  ): AsyncGenerator<TokenEvent, GenerationOutcome> {
    const c = (config instanceof GenerationConfig ? config : new GenerationConfig(config)).validate();
    const ids = this.encodePrompt(prompt);
    const engine = this.live();
    const { requestTimeout, maxConcurrentRequests } = this.config;
    if (requestTimeout === 0 && maxConcurrentRequests >= Number.MAX_SAFE_INTEGER)
      return engine.generate(ids, { ...c, signal });
    return this.limited(engine, ids, c, signal);
  }

  /**
   * A generation under InferenceConfig's limits: it waits for one of maxConcurrentRequests slots
   * (FIFO), and requestTimeout ms after it starts (the stream's first next(); waiting included) it
   * is aborted with Timeout/GENERATION_TIMEOUT. The caller's signal still cancels it, waiting or running.
   */
  private async *limited(
    engine: Engine,
    ids: number[],
    c: GenerationConfig,
    signal: AbortSignal | undefined,
  ): AsyncGenerator<TokenEvent, GenerationOutcome> {
    const ms = this.config.requestTimeout;
    const timedOut = () =>
      BitNetError.Timeout('GENERATION_TIMEOUT', `the generation ran past requestTimeout (${ms} ms)`, {
        requestTimeoutMs: ms,
      });
    const ctl = new AbortController();
    const forward = () => ctl.abort(signal?.reason);
    if (signal?.aborted) forward();
    else signal?.addEventListener('abort', forward, { once: true });
    const timer = ms > 0 ? setTimeout(() => ctl.abort(timedOut()), ms) : undefined;
    // The timer fires only where the backend gives the event loop a turn (wasm: every step); the
    // deadline is also checked at every token event, for backends that do not (reference decode).
    const deadline = ms > 0 ? performance.now() + ms : Number.POSITIVE_INFINITY;
    try {
      await this.slots.acquire(ctl.signal);
      try {
        const it = engine.generate(ids, { ...c, signal: ctl.signal });
        let ended = false;
        try {
          for (let r = await it.next(); ; r = await it.next()) {
            if (r.done) {
              ended = true;
              return r.value;
            }
            if (performance.now() > deadline) {
              ctl.abort(timedOut());
              throw ctl.signal.reason;
            }
            yield r.value;
          }
        } finally {
          // a timeout or a consumer that stops early (break, return()): the engine's own finally
          // blocks free the sequence
          if (!ended) await it.return(undefined as never);
        }
      } finally {
        this.slots.release();
      }
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', forward);
    }
  }

  /**
   * An embedding of the prompt: its final hidden states pooled ('mean' by default, or 'last') and
   * scaled to unit length unless `normalize: false` (src/generate/embeddings.ts). Text is tokenized
   * as for generation. Typed errors: EMPTY_PROMPT, PROMPT_TOO_LONG, BAD_TOKEN, INVALID_EMBED_OPTIONS,
   * EMBEDDINGS_UNAVAILABLE (a backend without hidden states: cuda).
   */
  async embed(prompt: Prompt, o: EmbedOptions = {}): Promise<{ embedding: Float32Array; promptTokens: number }> {
    checkPooling(o.pooling);
    const ids = this.encodePrompt(prompt);
    const rows = await this.live().hiddenStates(ids, o.signal);
    return { embedding: poolHidden(rows, o.pooling ?? 'mean', o.normalize !== false), promptTokens: ids.length };
  }

  /** Throws what embed() would throw for this prompt and options; runs nothing. */
  checkEmbed(prompt: Prompt, o: EmbedOptions = {}): void {
    checkPooling(o.pooling);
    this.live().checkHidden(this.encodePrompt(prompt));
  }

  /** Throws what stream() would throw for this prompt and config (prompt length, ids, settings); runs nothing. */
  check(prompt: Prompt, config: GenerationConfig | GenerationConfigInit = {}): void {
    const c = (config instanceof GenerationConfig ? config : new GenerationConfig(config)).validate();
    this.live().check(this.encodePrompt(prompt), c);
  }

  async generate(
    prompt: Prompt,
    config: GenerationConfig | GenerationConfigInit = {},
    signal?: AbortSignal,
  ): Promise<InferenceResult> {
    const it = this.stream(prompt, config, signal);
    let r = await it.next();
    while (!r.done) r = await it.next();
    return toResult(r.value);
  }
}

export function toResult(o: GenerationOutcome): InferenceResult {
  const t = o.timings;
  return {
    text: o.text,
    tokenIds: o.tokenIds,
    promptTokens: o.promptTokens,
    generatedTokens: o.generatedTokens,
    finishReason: o.finishReason,
    stats: {
      promptTokens: o.promptTokens,
      generatedTokens: o.generatedTokens,
      prefillMs: t.prefillMs,
      decodeMs: t.decodeMs,
      totalMs: t.totalMs,
      timeToFirstTokenMs: t.firstTokenMs,
      tokensPerSecond: t.totalMs > 0 ? (o.generatedTokens * 1000) / t.totalMs : 0,
      prefillTokensPerSecond: t.prefillMs > 0 ? ((o.promptTokens - o.cachedPromptTokens) * 1000) / t.prefillMs : 0,
      cachedPromptTokens: o.cachedPromptTokens,
    },
    ...(o.logprobs ? { logprobs: o.logprobs } : {}),
    ...(o.promptLogprobs ? { promptLogprobs: o.promptLogprobs } : {}),
  };
}
