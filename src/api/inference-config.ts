/** InferenceConfig: engine-level settings, with presets. */
import { BitNetError } from '../errors.ts';
import { assignInit, shownValue } from '../util/init.ts';

export interface InferenceConfigInit {
  /**
   * Most decode steps of concurrent sequences (requests in flight) computed together as one
   * batch: the wasm backend streams each projection's weights once per batch (at most 16; 1 runs
   * every step on its own). The cuda backend batches by its own limits.
   */
  maxBatchSize?: number;
  /** KV cache budget in bytes. */
  kvCacheSize?: number;
  /**
   * Generations (stream/generate) an InferenceEngine runs at once; more wait in turn (FIFO). A
   * BitNetModel's engine has no cap (Number.MAX_SAFE_INTEGER): its callers limit themselves.
   */
  maxConcurrentRequests?: number;
  /**
   * Per-request timeout in milliseconds (0 = none), from the generation's start, waiting included: the
   * generation then fails with Timeout/GENERATION_TIMEOUT. A BitNetModel's engine has none (0).
   */
  requestTimeout?: number;
  useMixedPrecision?: boolean;
  /** Worker threads for backends that use them (wasm); the reference backend is single-threaded. */
  numThreads?: number;
  /**
   * Finished sequences whose KV is kept so that a prompt starting with the same tokens (a chat's next
   * turn) prefills only what is new; 0 turns it off. Within kvCacheSize (evicted first under pressure).
   */
  promptCacheEntries?: number;
}

export class InferenceConfig {
  maxBatchSize = 8;
  kvCacheSize = 512 * 1024 * 1024;
  maxConcurrentRequests = 4;
  requestTimeout = 30_000;
  useMixedPrecision = false;
  numThreads = 1;
  promptCacheEntries = 4;

  constructor(init: InferenceConfigInit = {}) {
    assignInit(this, init, 'INVALID_INFERENCE_CONFIG', 'inference');
  }

  static default(): InferenceConfig {
    return new InferenceConfig();
  }
  /** One request at a time, no timeout surprises. */
  static lowLatency(): InferenceConfig {
    return new InferenceConfig({ maxBatchSize: 1, maxConcurrentRequests: 1, requestTimeout: 10_000 });
  }
  /** Many concurrent sequences. */
  static highThroughput(): InferenceConfig {
    return new InferenceConfig({
      maxBatchSize: 16,
      maxConcurrentRequests: 64,
      kvCacheSize: 2 * 1024 ** 3,
      requestTimeout: 120_000,
    });
  }
  /** Small KV budget for 128 MB isolates. */
  static memoryEfficient(): InferenceConfig {
    return new InferenceConfig({
      maxBatchSize: 1,
      maxConcurrentRequests: 1,
      kvCacheSize: 16 * 1024 * 1024,
      promptCacheEntries: 0,
    });
  }

  validate(): this {
    const int = (f: keyof this, min: number) => {
      const v = this[f] as unknown;
      if (!Number.isInteger(v) || (v as number) < min) {
        throw BitNetError.Config(
          'INVALID_INFERENCE_CONFIG',
          `${String(f)} must be an integer >= ${min} (got ${shownValue(v)})`,
          { field: String(f) },
        );
      }
    };
    int('maxBatchSize', 1);
    int('kvCacheSize', 1);
    int('maxConcurrentRequests', 1);
    int('requestTimeout', 0);
    int('numThreads', 1);
    int('promptCacheEntries', 0);
    return this;
  }
}
