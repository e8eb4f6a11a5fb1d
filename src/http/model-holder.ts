/**
 * The model the app serves locally: given ready (Node: loaded before listening) or as a loader
 * that runs on first use (a Worker has no start-up hook; it loads from R2 on the first request
 * that needs the model). A failed load is not cached: the next request tries again.
 */
import type { GenerationConfigInit } from '../api/generation-config.ts';
import type { Prompt } from '../api/inference-engine.ts';
import type { ModelInfo } from '../api/model-info.ts';
import { BitNetError, isBitNetError } from '../errors.ts';
import type { Pooling } from '../generate/embeddings.ts';
import type { GenerationOutcome, TokenEvent } from '../generate/engine.ts';
import type { DecodeStats } from '../kernels/backend.ts';
import type { Tokenizer } from '../tokenizer/types.ts';
import { statusOf } from './errors.ts';

/** What the app needs of a model; `BitNetModel` is one. */
export interface ServedModel {
  readonly engine: {
    stream(
      prompt: Prompt,
      config: GenerationConfigInit,
      signal?: AbortSignal,
    ): AsyncGenerator<TokenEvent, GenerationOutcome>;
    /** Throws what stream() would, running nothing (absent: requests of several runs are checked as they run). */
    check?(prompt: Prompt, config: GenerationConfigInit): void;
    readonly backendName: string;
    /** Kernel threads (absent: 1). */
    readonly numThreads?: number;
    /** A request's several generations run at once (the backend batches them: cuda); absent: one after another. */
    readonly runsGenerationsTogether?: boolean;
    /** An embedding of a prompt (InferenceEngine.embed); absent: the server computes none. */
    embed?(
      prompt: Prompt,
      options: { pooling?: Pooling; normalize?: boolean; signal?: AbortSignal },
    ): Promise<{ embedding: Float32Array; promptTokens: number }>;
    /** Throws what embed() would throw, running nothing. */
    checkEmbed?(prompt: Prompt, options: { pooling?: Pooling }): void;
    /** Batched decode counts (WasmBackend.decodeStats), when the backend batches. */
    readonly decodeStats?: DecodeStats;
  };
  readonly tokenizer: Tokenizer | undefined;
  /** Why the tokenizer could not be built, when the file has one that failed (BitNetModel.tokenizerError). */
  readonly tokenizerError?: BitNetError;
  modelInfo(): ModelInfo;
}

export type ModelSource = ServedModel | (() => Promise<ServedModel>);

export class ModelHolder {
  private model: ServedModel | undefined;
  private loading: Promise<ServedModel> | undefined;
  private readonly loader: (() => Promise<ServedModel>) | undefined;
  private readonly onLoad: (m: ServedModel) => void;

  /** `onLoad` runs once the model is there (at once for a loaded model). */
  constructor(src: ModelSource, onLoad: (m: ServedModel) => void = () => {}) {
    this.onLoad = onLoad;
    if (typeof src === 'function') this.loader = src;
    else {
      this.model = src;
      onLoad(src);
    }
  }

  /** The model if it is loaded, without loading it. */
  current(): ServedModel | undefined {
    return this.model;
  }

  async get(): Promise<ServedModel> {
    if (this.model) return this.model;
    if (!this.loader) throw BitNetError.Model('MODEL_UNAVAILABLE', 'no local model is configured');
    this.loading ??= this.loader().then(
      (m) => {
        this.model = m;
        this.onLoad(m);
        return m;
      },
      (e: unknown) => {
        this.loading = undefined;
        // A load error that maps to a client status (a BAD_LOCATION in BITNET_MODEL, an unknown
        // pre-tokenizer: Config/Tokenization kinds) is still the deployment's fault, never the
        // request's: 503 MODEL_UNAVAILABLE, with the original code and error as the cause.
        if (isBitNetError(e) && statusOf(e) < 500) {
          throw BitNetError.Model(
            'MODEL_UNAVAILABLE',
            `the model could not be loaded: ${e.message}`,
            { ...e.details, causeCode: e.code },
            e,
          );
        }
        if (isBitNetError(e)) throw e;
        throw BitNetError.Model(
          'MODEL_UNAVAILABLE',
          `the model could not be loaded: ${e instanceof Error ? e.message : String(e)}`,
          {},
          e,
        );
      },
    );
    return this.loading;
  }
}
