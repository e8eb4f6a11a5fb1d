/**
 * bitnet-edge public API (the seed's surface in TypeScript). Imports nothing runtime-specific:
 * Node-only pieces (local files, the hub cache) are loaded lazily when used.
 *
 * Subpaths (package.json "exports"): `bitnet-edge/http` (createApp, the runtime-neutral HTTP app),
 * `bitnet-edge/node`, `bitnet-edge/cloudflare`, `bitnet-edge/aws-lambda` (the adapters), and the
 * kernel files `bitnet-edge/kernels/bitnet-relaxed.wasm`, `…/bitnet-simd.wasm` (for bundles: see
 * registerKernelModules).
 */

export { BitNetModel, type TextStream } from './api/bitnet-model.ts';
export { Device, type DeviceCapabilities, type DeviceKind, type DeviceMemoryInfo, DeviceSpec } from './api/device.ts';
export { GenerationConfig, type GenerationConfigInit } from './api/generation-config.ts';
export { InferenceConfig, type InferenceConfigInit } from './api/inference-config.ts';
export { InferenceEngine, type Prompt, type SamplingConfig, type Tensor } from './api/inference-engine.ts';
export type { InferenceResult, InferenceStats, PerformanceMetrics } from './api/metrics.ts';
export { BackendKind, DType, ModelConfig, type ModelConfigInit } from './api/model-config.ts';
export type { ModelInfo, QuantizationInfo, TensorInfo } from './api/model-info.ts';
export {
  type FormatLoader,
  GGUFFormatLoader,
  LoadConfig,
  type LoadConfigInit,
  type Model,
  ModelLoader,
} from './api/model-loader.ts';
export {
  QuantizationConfig,
  type QuantizationConfigInit,
  QuantizationType,
  type Quantize,
  type QuantizedTensor,
  Quantizer,
  ternarize,
} from './api/quantization.ts';
export { BitNetError, BitNetErrorKind, isBitNetError } from './errors.ts';
export { type EmbedOptions, POOLINGS, type Pooling } from './generate/embeddings.ts';
export { parseGbnf } from './generate/grammar/gbnf.ts';
export { jsonSchemaToGbnf } from './generate/grammar/json-schema.ts';
export type { ResponseFormat } from './generate/json-mode.ts';
export type { LogitBias } from './generate/logit-adjust.ts';
export type { PromptTokenLogprob, TokenLogprob, TopLogprob } from './generate/logprobs.ts';
export type { PerplexityOptions, PerplexityResult } from './generate/perplexity.ts';
export { GGMLType } from './gguf/ggml-types.ts';
export { type GGUFFile, type GGUFTensorInfo, readGGUF } from './gguf/reader.ts';
export { encodeGGUF, writeGGUF } from './gguf/writer.ts';
export {
  type KernelBuild,
  type KernelModules,
  type KernelSource,
  registerKernelModules,
} from './kernels/wasm/loader.ts';
export { CacheConfig, EvictionPolicy, KVCache, KVCacheConfig } from './model/kv-cache.ts';
export { SYNTH_PRESETS, type SynthOptions, synthModel } from './model/synth.ts';
export { convertToPack, ggufInput, MemoryPackSink } from './shards/convert.ts';
export { ShardPackFormatLoader } from './shards/format-loader.ts';
export { type ByteSource, MemorySource } from './sources/byte-source.ts';
export { HttpSource } from './sources/http.ts';
export { type OpenOptions, openSource } from './sources/open.ts';
export { R2Source } from './sources/r2.ts';
export { type CreateTokenizerOptions, createTokenizerFromGGUF } from './tokenizer/bpe.ts';
export {
  applyChatTemplate,
  BITNET_CHAT_TEMPLATE,
  CHATML_CHAT_TEMPLATE,
  type ChatMessage,
  type ChatRenderOptions,
  type ChatSegment,
  type ChatTemplate,
  type ChatTemplateChoice,
  type ChatTemplateKind,
  createChatTemplate,
  createChatTemplateFromGGUF,
  encodeChat,
  type ResolveChatTemplateInput,
  resolveChatTemplate,
} from './tokenizer/chat-template.ts';
export { type CreateHFTokenizerOptions, createTokenizerFromHF, hfPreTokenizerName } from './tokenizer/hf.ts';
export { createSentencePieceTokenizer, type SentencePieceConfig } from './tokenizer/spm.ts';
export type {
  DecodeOptions,
  EncodeOptions,
  EncodeSegment,
  SpecialTokenIds,
  StreamingDecoder,
  Tokenizer,
} from './tokenizer/types.ts';
