/**
 * The engine loop: prompt ids → prefill → (sample → stop checks → decode step)*, as an async
 * generator of token events. It knows nothing of HTTP and nothing of how logits are computed
 * (that is the Backend's job); it owns the sequence's KV cache entries for the generation.
 *
 * Text path per token: streaming UTF-8-safe decoder → stop-sequence matcher → emitted delta.
 * End-of-generation tokens end the generation without being emitted.
 */
import { BitNetError } from '../errors.ts';
import type { Backend } from '../kernels/backend.ts';
import type { KVStore } from '../model/reference.ts';
import type { Tokenizer } from '../tokenizer/types.ts';
import { biasEntries } from './logit-adjust.ts';
import { MAX_TOP_LOGPROBS, type TokenLogprob, tokenLogprob } from './logprobs.ts';
import { createRng, type Seed } from './prng.ts';
import { type SamplerParams, sample } from './sampler.ts';
import { StopMatcher } from './stop.ts';

/** How many recent tokens the repetition penalty looks at (llama.cpp's default penalty_last_n). */
export const REPETITION_WINDOW = 64;

export interface EngineGenerateOptions extends SamplerParams {
  maxNewTokens: number;
  stopSequences: readonly string[];
  seed?: Seed;
  skipSpecialTokens: boolean;
  /** Stop on the tokenizer's end-of-generation tokens (default true). */
  stopOnEog?: boolean;
  /** Report each generated token's log-probability (logprobs.ts) on its event and in the outcome. */
  logprobs?: boolean;
  /** With `logprobs`: how many of the most likely tokens to list with each (0..20). */
  topLogprobs?: number;
  signal?: AbortSignal;
}

export interface TokenEvent {
  id: number;
  /** Text safe to show after this token (may be empty while a stop prefix or a UTF-8 sequence is pending).
   *  The final event of a generation may carry id −1: held-back text flushed at the end. */
  text: string;
  /** With `logprobs`: the token's log-probability and alternatives (absent on the id −1 event). */
  logprob?: TokenLogprob;
}

export type FinishReason = 'stop' | 'length';

export interface GenerationOutcome {
  tokenIds: number[];
  text: string;
  finishReason: FinishReason;
  promptTokens: number;
  generatedTokens: number;
  timings: { prefillMs: number; decodeMs: number; totalMs: number; firstTokenMs: number };
  /** With `logprobs`: one entry per generated token (tokenIds), in order. */
  logprobs?: TokenLogprob[];
}

/** A sequence's K/V storage, handed to the backend. */
export interface SequenceCache {
  store: KVStore;
  /** Releases the sequence's cache entries. */
  release(): void;
}

export interface EngineDeps {
  backend: Backend;
  tokenizer?: Tokenizer;
  contextLength: number;
  newSequence(): SequenceCache;
  now?: () => number;
}

function randomSeed(): bigint {
  const a = new Uint32Array(2);
  crypto.getRandomValues(a);
  return (BigInt(a[0]) << 32n) | BigInt(a[1]);
}

export class Engine {
  private readonly d: EngineDeps;
  private readonly now: () => number;

  constructor(deps: EngineDeps) {
    this.d = deps;
    this.now = deps.now ?? (() => performance.now());
  }

  get backend(): Backend {
    return this.d.backend;
  }

  /** Logits at every prompt position (no sampling), for `bitnet logits` and the oracle tests. */
  async logitsAll(ids: readonly number[], signal?: AbortSignal): Promise<Float32Array[]> {
    this.checkPrompt(ids, 0);
    const seq = this.d.newSequence();
    try {
      return await this.d.backend.forward({ tokens: ids, startPos: 0, kv: seq.store, logits: 'all', signal });
    } finally {
      this.d.backend.release?.(seq.store);
      seq.release();
    }
  }

  private checkPrompt(ids: readonly number[], maxNew: number): void {
    if (ids.length === 0) throw BitNetError.Config('EMPTY_PROMPT', 'the prompt has no tokens');
    const vocab = this.d.backend.vocabSize;
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= vocab) {
        throw BitNetError.Config('BAD_TOKEN', `token id ${id} is outside the vocabulary (0..${vocab - 1})`, {
          token: id,
        });
      }
    }
    if (ids.length + (maxNew > 0 ? 1 : 0) > this.d.contextLength) {
      throw BitNetError.Capacity(
        'PROMPT_TOO_LONG',
        `the prompt has ${ids.length} tokens; the context holds ${this.d.contextLength}`,
        {
          promptTokens: ids.length,
          contextLength: this.d.contextLength,
        },
      );
    }
  }

  /**
   * Streams generated tokens; the generator's return value summarises the generation. The
   * options and the prompt are checked here, when it is called (a bad token or a prompt past the
   * context throws before any generator or stream exists), not on the first next().
   */
  generate(promptIds: readonly number[], o: EngineGenerateOptions): AsyncGenerator<TokenEvent, GenerationOutcome> {
    if (!Number.isInteger(o.maxNewTokens) || o.maxNewTokens < 0) {
      throw BitNetError.Config('INVALID_GENERATION_CONFIG', 'maxNewTokens must be a non-negative integer', {
        maxNewTokens: o.maxNewTokens,
      });
    }
    this.checkPrompt(promptIds, o.maxNewTokens);
    // bias ids must be in the vocabulary: fail now, not at the first sampled token
    biasEntries(o.logitBias, this.d.backend.vocabSize);
    const top = o.topLogprobs ?? 0;
    if (!Number.isInteger(top) || top < 0 || top > MAX_TOP_LOGPROBS)
      throw BitNetError.Config(
        'INVALID_GENERATION_CONFIG',
        `topLogprobs must be an integer in 0..${MAX_TOP_LOGPROBS}`,
        {
          field: 'topLogprobs',
          value: String(top),
        },
      );
    return this.run(promptIds, o);
  }

  private async *run(
    promptIds: readonly number[],
    o: EngineGenerateOptions,
  ): AsyncGenerator<TokenEvent, GenerationOutcome> {
    const { backend, tokenizer } = this.d;
    const stop = new StopMatcher(o.stopSequences);
    const decoder = tokenizer?.createStreamingDecoder({ skipSpecialTokens: o.skipSpecialTokens });
    const rng = createRng(o.seed ?? randomSeed());
    const eog = o.stopOnEog === false ? new Set<number>() : (tokenizer?.eogTokenIds ?? new Set<number>());
    const history = [...promptIds];
    const generated: number[] = [];
    const logprobs: TokenLogprob[] | undefined = o.logprobs ? [] : undefined;
    let text = '';
    let finishReason: FinishReason = 'length';
    const t0 = this.now();
    let prefillMs = 0;
    let firstTokenMs = 0;

    const seq = this.d.newSequence();
    try {
      if (o.maxNewTokens === 0) {
        return {
          tokenIds: [],
          text: '',
          finishReason: 'length',
          promptTokens: promptIds.length,
          generatedTokens: 0,
          timings: { prefillMs: 0, decodeMs: 0, totalMs: 0, firstTokenMs: 0 },
          ...(logprobs ? { logprobs } : {}),
        };
      }
      let [logits] = await backend.forward({
        tokens: promptIds,
        startPos: 0,
        kv: seq.store,
        logits: 'last',
        signal: o.signal,
      });
      prefillMs = this.now() - t0;
      let pos = promptIds.length;
      for (;;) {
        o.signal?.throwIfAborted();
        const window = history.length > REPETITION_WINDOW ? history.slice(-REPETITION_WINDOW) : history;
        const id = sample(logits, window, o, rng);
        if (generated.length === 0) firstTokenMs = this.now() - t0;
        if (eog.has(id)) {
          finishReason = 'stop';
          break;
        }
        generated.push(id);
        history.push(id);
        // from the row just sampled, before the next forward may overwrite it
        const lp = logprobs ? tokenLogprob(logits, id, o.topLogprobs ?? 0) : undefined;
        if (lp) logprobs?.push(lp);
        const piece = decoder ? decoder.push(id) : '';
        const r = stop.push(piece);
        text += r.emit;
        yield lp ? { id, text: r.emit, logprob: lp } : { id, text: r.emit };
        if (r.stopped) {
          finishReason = 'stop';
          break;
        }
        if (generated.length >= o.maxNewTokens || pos >= this.d.contextLength) break;
        // the previous row has been sampled: the backend may overwrite it
        [logits] = await backend.forward({
          tokens: [id],
          startPos: pos,
          kv: seq.store,
          logits: 'last',
          into: logits,
          signal: o.signal,
        });
        pos++;
      }
      if (!stop.stopped) {
        const tail = stop.push(decoder ? decoder.flush() : '');
        const rest = tail.stopped ? tail.emit : tail.emit + stop.flush();
        if (tail.stopped) finishReason = 'stop';
        if (rest) {
          text += rest;
          yield { id: -1, text: rest };
        }
      }
    } finally {
      this.d.backend.release?.(seq.store);
      seq.release();
    }
    const totalMs = this.now() - t0;
    return {
      tokenIds: generated,
      text,
      finishReason,
      promptTokens: promptIds.length,
      generatedTokens: generated.length,
      timings: { prefillMs, decodeMs: totalMs - prefillMs, totalMs, firstTokenMs },
      ...(logprobs ? { logprobs } : {}),
    };
  }
}
