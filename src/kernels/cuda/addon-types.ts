/**
 * The CUDA addon's surface (gpu-lambda/addon/src/addon.cc over gpu-lambda/engine's C API,
 * include/bitnet_cuda.h). This is the one TypeScript declaration of the native boundary: the
 * rest of src/ imports these types, never the addon's sources.
 *
 * Errors thrown or rejected by the addon are `Error`s with `code` = the engine's status name
 * (e.g. 'BN_ERR_NO_DEVICE', 'BN_ERR_CAPACITY') and `status` = its number.
 */

/** Engine status names (bn_status). */
export type CudaStatusName =
  | 'BN_OK'
  | 'BN_ERR_INVALID_ARGUMENT'
  | 'BN_ERR_NO_DEVICE'
  | 'BN_ERR_CUDA'
  | 'BN_ERR_OUT_OF_MEMORY'
  | 'BN_ERR_FORMAT'
  | 'BN_ERR_UNSUPPORTED'
  | 'BN_ERR_IO'
  | 'BN_ERR_CAPACITY'
  | 'BN_ERR_STATE'
  | 'BN_ERR_NUMERIC';

export interface CudaAddonError extends Error {
  code: CudaStatusName;
  status: number;
}

export interface CudaDeviceInfo {
  ok: boolean;
  status: CudaStatusName;
  /** Why the device is unusable ('' when ok), e.g. "cudaGetDeviceCount returned 35 (...)". */
  error: string;
  deviceCount: number;
  /** cudaError_t of the failed probe (35: no driver / driver too old). */
  cudaError: number;
  driverVersion: number;
  runtimeVersion: number;
  name: string;
  ccMajor: number;
  ccMinor: number;
  smCount: number;
  totalMem: number;
  freeMem: number;
}

/** bn_options, camel-cased. Every field is optional (the engine's defaults apply). */
export interface CudaEngineOptions {
  device?: number;
  /** Live sequences (default 64). */
  maxSeqs?: number;
  /** Tokens per forward; longer prefills are chunked (default 512). */
  maxBatchTokens?: number;
  /** Logits rows per forward (default 64). */
  maxLogitRows?: number;
  /** Positions per sequence (default min(nCtx, 4096)). */
  maxCtx?: number;
  /** KV positions per page, a power of two (default 64). */
  pageSize?: number;
  /** KV pool bytes (default: enough for maxSeqs × maxCtx, capped at 60% of free memory). */
  kvBytes?: number;
  /** 'f16' (reference numerics, default) or 'int8' (half the head bytes, approximate logits). */
  headMode?: 'f16' | 'int8';
  /** Replay decode steps from CUDA graphs (default true). */
  useGraphs?: boolean;
  /** Batches of at most this many tokens use the dp4a GEMV path, larger ones the int8 tensor-core GEMM (default 4). */
  gemvMaxM?: number;
  /** Run the kernels' CPU emulation instead of a GPU: tests only, slow. */
  emulate?: boolean;
  /**
   * 'exact' (default): the TS reference's bits. 'fast': decode batches of at most gemvMaxM tokens
   * split attention over the positions and reduce RMSNorm statistics across blocks (ternary
   * matmuls stay exact; logits differ from the reference at f32-rounding level, amplified by the
   * int8 activations). Larger batches run the exact path.
   */
  numerics?: 'exact' | 'fast';
}

export interface CudaHParams {
  nVocab: number;
  nCtx: number;
  nEmbd: number;
  nLayer: number;
  nFF: number;
  nHead: number;
  nHeadKv: number;
  headDim: number;
  nRot: number;
  ropeFreqBase: number;
  rmsEps: number;
  activation: 'relu2' | 'silu';
}

export interface CudaTensor {
  /** GGUF name, e.g. 'blk.0.attn_q.weight'. */
  name: string;
  /** ggml type id (0 F32, 1 F16, 36 I2_S). */
  type: number;
  /** GGUF order: ne[0] innermost. */
  ne: number[];
  /** Host bytes (copied to the GPU during createEngine). I2_S: codes then the f32 scale. */
  data: Uint8Array;
}

export interface CudaEngineSpec {
  hparams: CudaHParams;
  tensors: CudaTensor[];
  options?: CudaEngineOptions;
}

/** One logits row's sampling (the TS sampler's parameters; `u` = the caller's rng.nextFloat()). */
export interface CudaSamplingRow {
  temperature: number;
  topK: number;
  topP: number;
  repetitionPenalty: number;
  u: number;
  history?: number[];
}

export interface CudaEngineInfo {
  deviceName: string;
  ccMajor: number;
  ccMinor: number;
  weightBytes: number;
  kvBytes: number;
  kvPages: number;
  pageSize: number;
  maxSeqs: number;
  maxCtx: number;
  maxBatchTokens: number;
  nVocab: number;
}

/** An engine: one model on one GPU. Steps resolve when the GPU work is done. */
export interface CudaEngine {
  info(): CudaEngineInfo;
  createSequence(): number;
  freeSequence(seq: number): void;
  truncate(seq: number, length: number): void;
  sequenceLength(seq: number): number;
  /**
   * The continuous-batching step: token i is appended to sequence seqs[i]; wantLogits[i] asks for
   * its logits row (null = every token); rows come back in token order into logitsOut
   * (rows × nVocab). sampling/sampledOut pick tokens on the GPU.
   */
  forward(
    seqs: Int32Array,
    tokens: Int32Array,
    wantLogits: Uint8Array | null,
    logitsOut: Float32Array | null,
    sampling?: CudaSamplingRow[] | null,
    sampledOut?: Int32Array | null,
  ): Promise<void>;
  prefill(seq: number, tokens: Int32Array, logitsAll: boolean, logitsOut: Float32Array | null): Promise<void>;
  decode(
    seqs: Int32Array,
    tokens: Int32Array,
    sampling: CudaSamplingRow[] | null,
    nextOut: Int32Array | null,
    logitsOut: Float32Array | null,
  ): Promise<void>;
  /** Copies logits row `row` of the last step into out (nVocab floats). */
  logits(row: number, out: Float32Array): void;
  free(): void;
}

export interface CudaAddon {
  apiVersion(): number;
  queryDevice(index?: number): CudaDeviceInfo;
  createEngine(spec: CudaEngineSpec): CudaEngine;
  loadEngine(path: string, options?: CudaEngineOptions): CudaEngine;
}

/** The C API version this declaration describes (bn_api_version()). */
export const CUDA_ADDON_API_VERSION = 1;
