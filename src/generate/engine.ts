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
import { throwIfCancelled } from '../util/abort.ts';
import { compileGrammar, GrammarMode, type GrammarSpec } from './grammar/grammar-mode.ts';
import { JsonMode, type ResponseFormat } from './json-mode.ts';
import { biasEntries } from './logit-adjust.ts';
import { MAX_TOP_LOGPROBS, type PromptTokenLogprob, type TokenLogprob, tokenLogprob } from './logprobs.ts';
import { createRng, type Seed } from './prng.ts';
import { PromptCache, type ReusableSequence } from './prompt-cache.ts';
import { type SamplerParams, sample } from './sampler.ts';
import { StopMatcher } from './stop.ts';

/** How many recent tokens the repetition penalty looks at (llama.cpp's default penalty_last_n). */
export const REPETITION_WINDOW = 64;

/** Prompt positions per forward call when the prompt is scored (each brings a vocabulary-sized row). */
export const PROMPT_SCORE_CHUNK = 16;

export interface EngineGenerateOptions extends SamplerParams {
  maxNewTokens: number;
  stopSequences: readonly string[];
  seed?: Seed;
  skipSpecialTokens: boolean;
  /** Stop on the tokenizer's end-of-generation tokens (default true). */
  stopOnEog?: boolean;
  /** Report each generated token's log-probability (logprobs.ts) on its event and in the outcome. */
  logprobs?: boolean;
  /** With `logprobs` or `promptLogprobs`: how many of the most likely tokens to list with each (0..20). */
  topLogprobs?: number;
  /** Also score the prompt: each prompt token's log-probability given the tokens before it (the outcome's
   *  `promptLogprobs`). With it, maxNewTokens may be 0: score only. */
  promptLogprobs?: boolean;
  /** 'json_object': only tokens that keep the text a prefix of one JSON object; ends when it closes. */
  responseFormat?: ResponseFormat;
  /** A GBNF grammar the text must match (grammar/gbnf.ts); ends when nothing can follow. */
  grammar?: string;
  /** A JSON schema the text must match (grammar/json-schema.ts). */
  jsonSchema?: unknown;
  signal?: AbortSignal;
}

export interface TokenEvent {
  id: number;
  /** Text safe to show after this token (may be empty while a stop prefix or a UTF-8 sequence is pending).
   *  The final event of a generation may carry id −1: held-back text flushed at the end. */
  text: string;
  /** With `logprobs`: the token's log-probability and alternatives (absent on the id −1 event). */
  logprob?: TokenLogprob;
  /** With `promptLogprobs`, on the first event only: the prompt's entries (also the outcome's), so that a
   *  stream can show them before the generated tokens. */
  promptLogprobs?: PromptTokenLogprob[];
}

export type FinishReason = 'stop' | 'length';

export interface GenerationOutcome {
  tokenIds: number[];
  text: string;
  finishReason: FinishReason;
  promptTokens: number;
  generatedTokens: number;
  timings: { prefillMs: number; decodeMs: number; totalMs: number; firstTokenMs: number };
  /** Prompt tokens whose K/V came from the prompt cache (not prefilled again). */
  cachedPromptTokens: number;
  /** With `logprobs`: one entry per generated token (tokenIds), in order. */
  logprobs?: TokenLogprob[];
  /** With `promptLogprobs`: one entry per prompt token; the first has logprob and top null. */
  promptLogprobs?: PromptTokenLogprob[];
}

/** A sequence's K/V storage, handed to the backend. */
export interface SequenceCache {
  store: KVStore;
  /** Releases the sequence's cache entries. */
  release(): void;
  /** For the prompt cache: positions held in every layer (0 once evicted). */
  length?(): number;
  /** For the prompt cache: drops positions >= n. */
  truncate?(n: number): void;
  /** For the prompt cache: idle sequences are evicted before those in use. */
  setIdle?(idle: boolean): void;
}

export interface EngineDeps {
  backend: Backend;
  tokenizer?: Tokenizer;
  contextLength: number;
  newSequence(): SequenceCache;
  now?: () => number;
  /**
   * Finished sequences kept for prompt reuse (prompt-cache.ts); 0 or absent: none. Used only with a
   * backend that rebuilds from the store (Backend.rebuildsFromStore).
   */
  promptCacheEntries?: number;
}

/** A sequence the prompt cache can keep: it can be measured and truncated. */
function reusable(seq: SequenceCache): seq is SequenceCache & ReusableSequence {
  return typeof seq.length === 'function' && typeof seq.truncate === 'function' && typeof seq.setIdle === 'function';
}

function randomSeed(): bigint {
  const a = new Uint32Array(2);
  crypto.getRandomValues(a);
  return (BigInt(a[0]) << 32n) | BigInt(a[1]);
}

/** The grammar options ask for, if any. */
function grammarSpec(o: EngineGenerateOptions): GrammarSpec | undefined {
  if (o.grammar !== undefined) return { gbnf: o.grammar };
  if (o.jsonSchema !== undefined) return { jsonSchema: o.jsonSchema };
  return undefined;
}

export class Engine {
  private readonly d: EngineDeps;
  private readonly now: () => number;

  constructor(deps: EngineDeps) {
    this.d = deps;
    this.now = deps.now ?? (() => performance.now());
    const n = deps.promptCacheEntries ?? 0;
    this.promptCache = n > 0 && deps.backend.rebuildsFromStore ? new PromptCache(n) : undefined;
  }

  /** The prompt cache, when this engine keeps one. */
  readonly promptCache: PromptCache<ReusableSequence & SequenceCache> | undefined;

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

  /**
   * Final hidden states (after output_norm) at every position of `ids`, on a fresh sequence that is
   * released afterwards: the input of embeddings (embeddings.ts).
   */
  async hiddenStates(ids: readonly number[], signal?: AbortSignal): Promise<Float32Array[]> {
    this.checkHidden(ids);
    const { backend } = this.d;
    const seq = this.d.newSequence();
    try {
      return await (backend.hidden as NonNullable<typeof backend.hidden>).call(backend, ids, 0, seq.store, signal);
    } finally {
      backend.release?.(seq.store);
      seq.release();
    }
  }

  /** Throws what hiddenStates() would throw for these ids (no tokens, a bad id, too long, no hidden states). */
  checkHidden(ids: readonly number[]): void {
    this.checkPrompt(ids, 0);
    const { backend } = this.d;
    if (!backend.hidden) {
      throw BitNetError.Config(
        'EMBEDDINGS_UNAVAILABLE',
        `the ${backend.name} backend does not return hidden states, so it cannot compute embeddings (the wasm and reference backends can)`,
        { backend: backend.name },
      );
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
    this.check(promptIds, o);
    return this.run(promptIds, o);
  }

  /** Throws what generate() would throw for these ids and options, and does nothing else. */
  check(promptIds: readonly number[], o: EngineGenerateOptions): void {
    if (!Number.isInteger(o.maxNewTokens) || o.maxNewTokens < 0) {
      throw BitNetError.Config('INVALID_GENERATION_CONFIG', 'maxNewTokens must be a non-negative integer', {
        maxNewTokens: o.maxNewTokens,
      });
    }
    this.checkPrompt(promptIds, o.maxNewTokens);
    if (o.responseFormat === 'json_object' && !this.d.tokenizer)
      throw BitNetError.Config(
        'JSON_MODE_UNAVAILABLE',
        'JSON mode needs the model’s tokenizer (to know each token’s bytes), and this model has none',
        { field: 'responseFormat' },
      );
    const spec = grammarSpec(o);
    if (spec) {
      if (o.responseFormat === 'json_object' || (o.grammar !== undefined && o.jsonSchema !== undefined))
        throw BitNetError.Config(
          'INVALID_GENERATION_CONFIG',
          "takes one of responseFormat 'json_object', grammar and jsonSchema at a time",
          { field: 'grammar' in spec ? 'grammar' : 'jsonSchema' },
        );
      if (!this.d.tokenizer)
        throw BitNetError.Config(
          'GRAMMAR_UNAVAILABLE',
          'a grammar or JSON schema needs the model’s tokenizer (to know each token’s bytes), and this model has none',
          { field: 'grammar' in spec ? 'grammar' : 'jsonSchema' },
        );
      // a faulty grammar or schema fails here, before any work
      compileGrammar(spec);
    }
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
    const spec = grammarSpec(o);
    // what constrains the text, if anything: JSON mode, or a grammar (a JSON schema is one)
    const constraint =
      o.responseFormat === 'json_object' && tokenizer
        ? new JsonMode(tokenizer)
        : spec && tokenizer
          ? new GrammarMode(compileGrammar(spec), tokenizer, eog)
          : undefined;
    const generated: number[] = [];
    const logprobs: TokenLogprob[] | undefined = o.logprobs ? [] : undefined;
    const promptLps: PromptTokenLogprob[] | undefined = o.promptLogprobs ? [] : undefined;
    let text = '';
    let finishReason: FinishReason = 'length';
    const t0 = this.now();
    let prefillMs = 0;
    let firstTokenMs = 0;

    // a cached sequence sharing a prefix with the prompt (not when the prompt is scored: that needs
    // every row; not when nothing is run)
    const hit = promptLps || o.maxNewTokens === 0 ? undefined : this.promptCache?.take(promptIds);
    const seq = hit?.seq ?? this.d.newSequence();
    const reuse = hit?.reuse ?? 0;
    // positions the store holds (history[0, stored)); undefined while a forward writes into it
    let stored: number | undefined = reuse;
    try {
      if (o.maxNewTokens === 0 && !promptLps) {
        return {
          tokenIds: [],
          text: '',
          finishReason: 'length',
          promptTokens: promptIds.length,
          generatedTokens: 0,
          timings: { prefillMs: 0, decodeMs: 0, totalMs: 0, firstTokenMs: 0 },
          cachedPromptTokens: 0,
          ...(logprobs ? { logprobs } : {}),
        };
      }
      stored = undefined;
      let logits = promptLps
        ? await this.scorePrompt(promptIds, seq.store, o, promptLps)
        : (
            await backend.forward({
              tokens: promptIds.slice(reuse),
              startPos: reuse,
              kv: seq.store,
              logits: 'last',
              signal: o.signal,
            })
          )[0];
      stored = promptIds.length;
      prefillMs = this.now() - t0;
      let pos = promptIds.length;
      // maxNewTokens 0 (with promptLogprobs): the prompt is scored, nothing is generated
      for (; o.maxNewTokens > 0; ) {
        throwIfCancelled(o.signal);
        const window = history.length > REPETITION_WINDOW ? history.slice(-REPETITION_WINDOW) : history;
        const id = sample(constraint ? constraint.mask(logits) : logits, window, o, rng);
        constraint?.push(id);
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
        const ev: TokenEvent = lp ? { id, text: r.emit, logprob: lp } : { id, text: r.emit };
        if (promptLps && generated.length === 1) ev.promptLogprobs = promptLps;
        yield ev;
        if (r.stopped || constraint?.done) {
          finishReason = 'stop';
          break;
        }
        if (generated.length >= o.maxNewTokens || pos >= this.d.contextLength) break;
        // the previous row has been sampled: the backend may overwrite it
        stored = undefined;
        [logits] = await backend.forward({
          tokens: [id],
          startPos: pos,
          kv: seq.store,
          logits: 'last',
          into: logits,
          signal: o.signal,
        });
        pos++;
        stored = pos;
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
      // a store cut mid-forward (an error, an abort) holds a partial position: never reused
      if (this.promptCache && stored !== undefined && reusable(seq))
        this.promptCache.put(seq, history.slice(0, stored));
      else seq.release();
    }
    const totalMs = this.now() - t0;
    return {
      tokenIds: generated,
      text,
      finishReason,
      promptTokens: promptIds.length,
      generatedTokens: generated.length,
      timings: { prefillMs, decodeMs: totalMs - prefillMs, totalMs, firstTokenMs },
      cachedPromptTokens: reuse,
      ...(logprobs ? { logprobs } : {}),
      ...(promptLps ? { promptLogprobs: promptLps } : {}),
    };
  }

  /**
   * Prefill that also scores the prompt: chunks of PROMPT_SCORE_CHUNK positions with every row's
   * logits (row p is the distribution of token p + 1), so at most that many vocabulary-sized rows
   * exist at once. Fills `out` with one entry per prompt token (the first has nothing to be
   * predicted from: null) and returns the last row, the next token's distribution.
   */
  private async scorePrompt(
    ids: readonly number[],
    kv: KVStore,
    o: EngineGenerateOptions,
    out: PromptTokenLogprob[],
  ): Promise<Float32Array> {
    const top = o.topLogprobs ?? 0;
    out.push({ id: ids[0], logprob: null, top: null });
    let last: Float32Array | undefined;
    for (let s = 0; s < ids.length; s += PROMPT_SCORE_CHUNK) {
      const tokens = ids.slice(s, s + PROMPT_SCORE_CHUNK);
      const rows = await this.d.backend.forward({ tokens, startPos: s, kv, logits: 'all', signal: o.signal });
      for (let j = 0; j < rows.length; j++) {
        const p = s + j;
        if (p + 1 < ids.length) out.push(tokenLogprob(rows[j], ids[p + 1], top));
        else last = rows[j];
      }
    }
    return last!;
  }
}
