/**
 * ModelConfig: how a model is loaded and run. The seed's fields keep their defaults; after
 * loading, `BitNetModel.config()` reports the model's real shape in them. Extensions (backend,
 * threads, memory budget, hub settings) are optional.
 */
import { BitNetError } from '../errors.ts';
import { KVCacheConfig, type KVCacheConfigInit } from '../model/kv-cache.ts';
import type { LoadProgress } from '../model/weights.ts';
import type { OpenOptions } from '../sources/open.ts';
import { getPreTokenizer } from '../tokenizer/pretokenize.ts';
import { assignInit, shownValue } from '../util/init.ts';
import { Device, DeviceSpec } from './device.ts';
import { QuantizationConfig, type QuantizationConfigInit } from './quantization.ts';

export const DType = { F32: 'F32', F16: 'F16', BF16: 'BF16', I8: 'I8' } as const;
export type DType = (typeof DType)[keyof typeof DType];

export const BackendKind = { Auto: 'auto', Reference: 'reference', Wasm: 'wasm', Cuda: 'cuda' } as const;
export type BackendKind = (typeof BackendKind)[keyof typeof BackendKind];

export interface ModelConfigInit {
  device?: DeviceSpec;
  dtype?: DType;
  maxSeqLen?: number;
  vocabSize?: number;
  numHeads?: number;
  hiddenSize?: number;
  numLayers?: number;
  quantization?: QuantizationConfig | QuantizationConfigInit;
  kvCache?: KVCacheConfig | KVCacheConfigInit;
  backend?: BackendKind;
  numThreads?: number;
  /** Finished sequences kept for prompt reuse (InferenceConfig.promptCacheEntries; default 4, 0 = off). */
  promptCacheEntries?: number;
  /** Most concurrent decode steps computed as one batch (InferenceConfig.maxBatchSize; default 8, 1 = off). */
  maxBatchSize?: number;
  /** Refuse models whose weights exceed this many bytes (checked before reading weights). */
  maxMemoryBytes?: number;
  /** Tokenizer pre-tokenizer override (`default`, `llama-bpe`). */
  preTokenizer?: string;
  /** Verify shard-pack checksums while loading. */
  validateChecksums?: boolean;
  progressCallback?: (p: LoadProgress) => void;
  /** Remote-source settings (R2 bindings, retries, caches) for http(s)://, s3:// and r2:// locations. */
  sourceOptions?: OpenOptions;
  /** Hub settings for fromPretrained. */
  revision?: string;
  filename?: string;
  /** The hub cache, and where a local safetensors checkpoint's converted pack goes (default $BITNET_CACHE_DIR or ~/.cache/bitnet-edge). */
  cacheDir?: string;
  hfEndpoint?: string;
  hfToken?: string;
}

export class ModelConfig {
  device: DeviceSpec = Device.Auto;
  dtype: DType = DType.F16;
  maxSeqLen = 2048;
  vocabSize = 32000;
  numHeads = 32;
  hiddenSize = 4096;
  numLayers = 32;
  quantization: QuantizationConfig = new QuantizationConfig();
  kvCache: KVCacheConfig = new KVCacheConfig();
  backend: BackendKind = BackendKind.Auto;
  numThreads: number | undefined = undefined;
  promptCacheEntries: number | undefined = undefined;
  maxBatchSize: number | undefined = undefined;
  maxMemoryBytes: number | undefined = undefined;
  preTokenizer: string | undefined = undefined;
  validateChecksums = false;
  progressCallback: ((p: LoadProgress) => void) | undefined = undefined;
  sourceOptions: OpenOptions | undefined = undefined;
  revision = 'main';
  filename: string | undefined = undefined;
  cacheDir: string | undefined = undefined;
  hfEndpoint: string | undefined = undefined;
  hfToken: string | undefined = undefined;

  constructor(init: ModelConfigInit = {}) {
    assignInit(this, init, 'INVALID_MODEL_CONFIG', 'model', (k, v) => {
      if (k === 'quantization')
        return v instanceof QuantizationConfig ? v : new QuantizationConfig(v as QuantizationConfigInit);
      if (k === 'kvCache') return v instanceof KVCacheConfig ? v : new KVCacheConfig(v as KVCacheConfigInit);
      // "cpu", "cuda:1", … as Device.parse reads them (a JS caller's string, a CLI value)
      if (k === 'device') {
        if (typeof v === 'string') return Device.parse(v);
        if (!(v instanceof DeviceSpec))
          throw BitNetError.Config(
            'INVALID_MODEL_CONFIG',
            'device must be a Device (Device.Cpu, Device.Cuda(0), …) or a string such as "cpu"',
            { field: 'device' },
          );
      }
      return v;
    });
  }

  /**
   * A copy whose nested configs (quantization, kvCache) are copies too: loading a model fills the
   * copy with the model's shape, so the caller's config can load the next model unchanged.
   */
  clone(): ModelConfig {
    const c = Object.assign(Object.create(ModelConfig.prototype), this) as ModelConfig;
    c.quantization = Object.assign(Object.create(QuantizationConfig.prototype), this.quantization);
    c.kvCache = Object.assign(Object.create(KVCacheConfig.prototype), this.kvCache);
    return c;
  }

  validate(): this {
    const bad = (f: string, why: string, v: unknown) => {
      throw BitNetError.Config('INVALID_MODEL_CONFIG', `${f} ${why} (got ${shownValue(v)})`, { field: f });
    };
    const pos = (f: keyof this) => {
      const v = this[f] as unknown;
      if (!Number.isInteger(v) || (v as number) <= 0) bad(String(f), 'must be a positive integer', v);
    };
    pos('maxSeqLen');
    pos('vocabSize');
    pos('numHeads');
    pos('hiddenSize');
    pos('numLayers');
    if (!Object.values(DType).includes(this.dtype)) bad('dtype', 'must be one of F32, F16, BF16, I8', this.dtype);
    if (!Object.values(BackendKind).includes(this.backend))
      bad('backend', 'must be auto, reference, wasm or cuda', this.backend);
    if (this.numThreads !== undefined && (!Number.isInteger(this.numThreads) || this.numThreads < 1))
      bad('numThreads', 'must be a positive integer', this.numThreads);
    if (
      this.promptCacheEntries !== undefined &&
      (!Number.isInteger(this.promptCacheEntries) || this.promptCacheEntries < 0)
    )
      bad('promptCacheEntries', 'must be an integer >= 0', this.promptCacheEntries);
    if (this.maxBatchSize !== undefined && (!Number.isInteger(this.maxBatchSize) || this.maxBatchSize < 1))
      bad('maxBatchSize', 'must be a positive integer', this.maxBatchSize);
    if (this.maxMemoryBytes !== undefined && !(this.maxMemoryBytes > 0))
      bad('maxMemoryBytes', 'must be positive', this.maxMemoryBytes);
    // an unknown name is refused here, before anything is read (PRETOKENIZER_UNKNOWN lists the names)
    if (this.preTokenizer !== undefined) getPreTokenizer(this.preTokenizer);
    this.quantization.validate();
    this.kvCache.validate();
    return this;
  }
}
