/** Metrics and results types of the public API. */
import type { FinishReason } from '../generate/engine.ts';
import type { PromptTokenLogprob, TokenLogprob } from '../generate/logprobs.ts';

export interface PerformanceMetrics {
  /** Generated tokens per second of generation time (prefill included). */
  tokensPerSecond: number;
  /** Prompt tokens per second during prefill. */
  prefillTokensPerSecond: number;
  /** Milliseconds from the call to the first sampled token. */
  timeToFirstToken: number;
  /** Milliseconds per generated token. */
  avgLatencyPerToken: number;
  /** Resident memory in bytes after the generation (process RSS where the runtime reports it). */
  memoryUsage: number;
  /** Always undefined on CPU backends. */
  gpuUtilization: number | undefined;
  promptTokens: number;
  generatedTokens: number;
}

export interface InferenceStats {
  promptTokens: number;
  generatedTokens: number;
  prefillMs: number;
  decodeMs: number;
  totalMs: number;
  timeToFirstTokenMs: number;
  tokensPerSecond: number;
  /** Prompt tokens prefilled per second (those reused from the prompt cache not counted). */
  prefillTokensPerSecond: number;
  /** Prompt tokens whose K/V came from the prompt cache instead of a prefill. */
  cachedPromptTokens: number;
}

export interface InferenceResult {
  text: string;
  tokenIds: number[];
  promptTokens: number;
  generatedTokens: number;
  finishReason: FinishReason;
  stats: InferenceStats;
  /** With GenerationConfig.logprobs: one entry per generated token (tokenIds), in order. */
  logprobs?: TokenLogprob[];
  /** With GenerationConfig.promptLogprobs: one entry per prompt token (the first: logprob and top null). */
  promptLogprobs?: PromptTokenLogprob[];
}
