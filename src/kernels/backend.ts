/**
 * The Backend seam: a model-level compute engine (reference TS today; wasm and CUDA later).
 * The engine loop owns sequences and sampling; a backend only turns token ids into logits,
 * keeping K/V in the KVStore it is handed.
 */
import type { KVStore } from '../model/reference.ts';

export interface ForwardRequest {
  tokens: readonly number[];
  /** Position of tokens[0]; positions < startPos are already in `kv`. */
  startPos: number;
  kv: KVStore;
  /** 'last': logits of the final position only; 'all': one row per token. */
  logits: 'last' | 'all';
  /**
   * With logits 'last': a backend may write the row into this array (nVocab long) and return it
   * instead of a new one, so a decode loop reuses one buffer rather than leaving 0.5 MB of garbage
   * per token (128K vocabulary) for the GC. Callers always use the returned array.
   */
  into?: Float32Array;
  signal?: AbortSignal;
}

/**
 * Decode steps run as batches: kernel runs, the steps (one token of one sequence) they served, the
 * largest batch; and the prefill chunks run between them, with those shortened because decode
 * steps were waiting.
 */
export interface DecodeStats {
  readonly runs: number;
  readonly steps: number;
  readonly largestBatch: number;
  readonly prefillChunks: number;
  readonly sharedPrefillChunks: number;
}

export interface Backend {
  readonly name: string;
  readonly vocabSize: number;
  /** Logits rows, each nVocab long, for the requested positions. */
  forward(req: ForwardRequest): Promise<Float32Array[]>;
  /**
   * True when a forward at any startPos reads positions below it from `kv` (or from a copy it
   * rebuilds from `kv`), so a sequence released and later resumed on a prefix of its store gives
   * the same logits as one prefilled again: the engine's prompt cache needs it.
   */
  readonly rebuildsFromStore?: boolean;
  /**
   * True when concurrent forward() calls, prefills included, share the device's steps (continuous
   * batching: cuda). A request's several generations (`n`, several prompts) then run at once
   * rather than one after another. False or absent where each call computes on its own, or where
   * a later generation reuses the first one's prompt through the prompt cache (reference, wasm).
   */
  readonly runsGenerationsTogether?: boolean;
  /** Present on a backend that batches concurrent decode steps itself (wasm). */
  readonly decodeStats?: DecodeStats;
  /**
   * Final hidden states (after output_norm), one row of nEmbd per token, for tokens run from
   * startPos into `kv` (embeddings). Absent on a backend that does not expose them (cuda).
   */
  hidden?(tokens: readonly number[], startPos: number, kv: KVStore, signal?: AbortSignal): Promise<Float32Array[]>;
  /** The sequence behind `kv` is finished: drop any copy of its KV the backend keeps. */
  release?(kv: KVStore): void;
  dispose?(): void;
}
