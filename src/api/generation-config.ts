/**
 * GenerationConfig: the seed's generation settings, with its defaults, presets and builders.
 * `new GenerationConfig({ maxNewTokens: 50, temperature: 0.8 })`; builders return new instances.
 */
import { BitNetError } from '../errors.ts';
import type { ResponseFormat } from '../generate/json-mode.ts';
import type { LogitBias } from '../generate/logit-adjust.ts';
import { MAX_TOP_LOGPROBS } from '../generate/logprobs.ts';
import type { Seed } from '../generate/prng.ts';
import { assignInit, shownValue } from '../util/init.ts';

export interface GenerationConfigInit {
  maxNewTokens?: number;
  temperature?: number;
  topP?: number;
  topK?: number;
  minP?: number;
  repetitionPenalty?: number;
  presencePenalty?: number;
  frequencyPenalty?: number;
  logitBias?: LogitBias;
  stopSequences?: string[];
  /** A number or bigint in 0..2^64-1, or its decimal digits (as toJSON writes a seed past 2^53). */
  seed?: Seed | string;
  skipSpecialTokens?: boolean;
  stream?: boolean;
  logprobs?: boolean;
  topLogprobs?: number;
  promptLogprobs?: boolean;
  responseFormat?: ResponseFormat;
  grammar?: string;
  jsonSchema?: unknown;
}

/** A bigint seed as a number when it fits one exactly, else as its decimal digits (for JSON). */
function seedOf(s: bigint): number | string {
  return s <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(s) : s.toString();
}
/** Decimal digits back to a seed: a number when it fits one exactly, else a bigint. */
function seedFromDigits(d: string): Seed {
  const b = BigInt(d);
  return b <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(b) : b;
}

export class GenerationConfig {
  /** Maximum number of new tokens to generate. */
  maxNewTokens = 100;
  /** Sampling temperature; 0 = greedy (deterministic). */
  temperature = 0.7;
  /** Nucleus threshold; 1 = off. */
  topP = 0.9;
  /** Top-k limit; 0 = off. */
  topK = 50;
  /** Min-p (llama.cpp's min_p): drop tokens less likely than minP × the most likely one; 0 = off. */
  minP = 0;
  /** CTRL-style penalty over the last 64 tokens; 1 = off. */
  repetitionPenalty = 1.0;
  /** OpenAI's presence penalty, subtracted once from the logit of every token in the last 64; 0 = off. */
  presencePenalty = 0;
  /** OpenAI's frequency penalty, subtracted once per occurrence in the last 64 tokens; 0 = off. */
  frequencyPenalty = 0;
  /** Token id → bias added to its logit before sampling (OpenAI's logit_bias; −100 all but bans a token). */
  logitBias: LogitBias = {};
  stopSequences: string[] = [];
  /** Seed of the documented xoshiro128** sampler PRNG; absent = random. */
  seed: Seed | undefined = undefined;
  skipSpecialTokens = true;
  stream = false;
  /** Report each generated token's log-probability under the model (before bias, penalties and temperature). */
  logprobs = false;
  /** With `logprobs` / `promptLogprobs`: the number of most likely tokens listed with each token (0..20). */
  topLogprobs = 0;
  /** Also score the prompt: each prompt token's log-probability given those before it. Allows maxNewTokens 0. */
  promptLogprobs = false;
  /** 'json_object': the output is one JSON object (only tokens that keep it valid; it ends when the object closes). */
  responseFormat: ResponseFormat = 'text';
  /** A GBNF grammar (llama.cpp's notation, root rule `root`) the output must match; it ends when nothing can follow. */
  grammar: string | undefined = undefined;
  /** A JSON schema the output must match (OpenAI's json_schema response format; src/generate/grammar/json-schema.ts). */
  jsonSchema: unknown = undefined;

  constructor(init: GenerationConfigInit = {}) {
    assignInit(this, init, 'INVALID_GENERATION_CONFIG', 'generation', (k, v) =>
      k === 'stopSequences' && Array.isArray(v)
        ? [...v]
        : k === 'logitBias' && v !== null && typeof v === 'object' && !Array.isArray(v)
          ? { ...v }
          : // a seed as decimal digits (how toJSON writes one past 2^53, which JSON numbers cannot hold)
            k === 'seed' && typeof v === 'string' && /^\d{1,20}$/.test(v)
            ? seedFromDigits(v)
            : v,
    );
  }

  /** Deterministic: always the most likely token. */
  static greedy(): GenerationConfig {
    return new GenerationConfig({ temperature: 0, topK: 1, topP: 1, repetitionPenalty: 1 });
  }
  /** More varied text. */
  static creative(): GenerationConfig {
    return new GenerationConfig({ temperature: 1.0, topP: 0.95, topK: 100, repetitionPenalty: 1.1 });
  }
  /** A middle ground between greedy and creative (not the defaults: `new GenerationConfig()` is). */
  static balanced(): GenerationConfig {
    return new GenerationConfig({ temperature: 0.7, topP: 0.9, topK: 50, repetitionPenalty: 1.05 });
  }

  private with(patch: GenerationConfigInit): GenerationConfig {
    return new GenerationConfig({ ...this.toJSON(), ...patch });
  }
  withMaxNewTokens(v: number): GenerationConfig {
    return this.with({ maxNewTokens: v });
  }
  withTemperature(v: number): GenerationConfig {
    return this.with({ temperature: v });
  }
  withTopP(v: number): GenerationConfig {
    return this.with({ topP: v });
  }
  withTopK(v: number): GenerationConfig {
    return this.with({ topK: v });
  }
  withMinP(v: number): GenerationConfig {
    return this.with({ minP: v });
  }
  withRepetitionPenalty(v: number): GenerationConfig {
    return this.with({ repetitionPenalty: v });
  }
  withPresencePenalty(v: number): GenerationConfig {
    return this.with({ presencePenalty: v });
  }
  withFrequencyPenalty(v: number): GenerationConfig {
    return this.with({ frequencyPenalty: v });
  }
  withLogitBias(v: LogitBias): GenerationConfig {
    return this.with({ logitBias: v });
  }
  /** Log-probabilities on, with `top` alternatives per token (0 = the sampled token's only); false turns them off. */
  withLogprobs(top: number | false = 0): GenerationConfig {
    return top === false
      ? this.with({ logprobs: false, topLogprobs: 0 })
      : this.with({ logprobs: true, topLogprobs: top });
  }
  withResponseFormat(v: ResponseFormat): GenerationConfig {
    return this.with({ responseFormat: v });
  }
  /** Constrain the output to a GBNF grammar (undefined: no grammar). */
  withGrammar(v: string | undefined): GenerationConfig {
    return this.with({ grammar: v });
  }
  /** Constrain the output to a JSON schema (undefined: none). */
  withJsonSchema(v: unknown): GenerationConfig {
    return this.with({ jsonSchema: v });
  }
  /** Score the prompt too (the result's `promptLogprobs`); with maxNewTokens 0 nothing is generated. */
  withPromptLogprobs(v = true): GenerationConfig {
    return this.with({ promptLogprobs: v });
  }
  withStopSequences(v: string[]): GenerationConfig {
    return this.with({ stopSequences: v });
  }
  withStopSequence(v: string): GenerationConfig {
    return this.with({ stopSequences: [...this.stopSequences, v] });
  }
  withSeed(v: Seed | undefined): GenerationConfig {
    return this.with({ seed: v });
  }
  withSkipSpecialTokens(v: boolean): GenerationConfig {
    return this.with({ skipSpecialTokens: v });
  }
  withStream(v: boolean): GenerationConfig {
    return this.with({ stream: v });
  }

  /** Throws a Config BitNetError naming the first bad field. */
  validate(): this {
    const fail = (field: string, why: string, value: unknown) => {
      throw BitNetError.Config('INVALID_GENERATION_CONFIG', `${field} ${why} (got ${shownValue(value)})`, {
        field,
        value: String(value),
      });
    };
    const n = (v: unknown) => typeof v === 'number' && Number.isFinite(v);
    const minNew = this.promptLogprobs === true ? 0 : 1;
    if (!Number.isInteger(this.maxNewTokens) || this.maxNewTokens < minNew || this.maxNewTokens > 1 << 20)
      fail(
        'maxNewTokens',
        `must be an integer in ${minNew}..1048576${minNew ? ' (0 only with promptLogprobs)' : ''}`,
        this.maxNewTokens,
      );
    if (!n(this.temperature) || this.temperature < 0 || this.temperature > 100)
      fail('temperature', 'must be in [0, 100]', this.temperature);
    if (!n(this.topP) || this.topP <= 0 || this.topP > 1) fail('topP', 'must be in (0, 1]', this.topP);
    if (!Number.isInteger(this.topK) || this.topK < 0) fail('topK', 'must be a non-negative integer', this.topK);
    if (!n(this.minP) || this.minP < 0 || this.minP > 1) fail('minP', 'must be in [0, 1]', this.minP);
    if (!n(this.repetitionPenalty) || this.repetitionPenalty <= 0 || this.repetitionPenalty > 10)
      fail('repetitionPenalty', 'must be in (0, 10]', this.repetitionPenalty);
    for (const f of ['presencePenalty', 'frequencyPenalty'] as const)
      if (!n(this[f]) || this[f] < -2 || this[f] > 2) fail(f, 'must be in [-2, 2]', this[f]);
    const bias = this.logitBias as unknown;
    if (bias === null || typeof bias !== 'object' || Array.isArray(bias))
      fail('logitBias', 'must be an object of token id → bias', bias);
    for (const [k, v] of Object.entries(bias as object)) {
      if (!/^(0|[1-9]\d{0,9})$/.test(k)) fail('logitBias', `has key "${k}", which is not a token id`, k);
      if (!n(v) || v < -100 || v > 100) fail('logitBias', `for token ${k} must be in [-100, 100]`, v);
    }
    if (!Array.isArray(this.stopSequences) || this.stopSequences.some((s) => typeof s !== 'string' || s.length === 0))
      fail('stopSequences', 'must be non-empty strings', this.stopSequences);
    if (this.seed !== undefined) {
      const s = this.seed;
      const ok = typeof s === 'bigint' ? s >= 0n && s < 1n << 64n : Number.isSafeInteger(s) && s >= 0;
      if (!ok) fail('seed', 'must be an integer in 0..2^64-1', s);
    }
    if (typeof this.skipSpecialTokens !== 'boolean')
      fail('skipSpecialTokens', 'must be a boolean', this.skipSpecialTokens);
    if (typeof this.stream !== 'boolean') fail('stream', 'must be a boolean', this.stream);
    if (typeof this.logprobs !== 'boolean') fail('logprobs', 'must be a boolean', this.logprobs);
    if (!Number.isInteger(this.topLogprobs) || this.topLogprobs < 0 || this.topLogprobs > MAX_TOP_LOGPROBS)
      fail('topLogprobs', `must be an integer in 0..${MAX_TOP_LOGPROBS}`, this.topLogprobs);
    if (this.responseFormat !== 'text' && this.responseFormat !== 'json_object')
      fail('responseFormat', "must be 'text' or 'json_object'", this.responseFormat);
    if (this.grammar !== undefined && (typeof this.grammar !== 'string' || this.grammar.trim() === ''))
      fail('grammar', 'must be a non-empty GBNF grammar', this.grammar);
    if (
      this.jsonSchema !== undefined &&
      typeof this.jsonSchema !== 'boolean' &&
      (this.jsonSchema === null || typeof this.jsonSchema !== 'object' || Array.isArray(this.jsonSchema))
    )
      fail('jsonSchema', 'must be a JSON schema (an object or a boolean)', this.jsonSchema);
    const constraints = [
      this.responseFormat === 'json_object',
      this.grammar !== undefined,
      this.jsonSchema !== undefined,
    ];
    if (constraints.filter(Boolean).length > 1)
      fail(
        this.jsonSchema !== undefined ? 'jsonSchema' : 'grammar',
        "takes one of responseFormat 'json_object', grammar and jsonSchema at a time",
        'several',
      );
    if (typeof this.promptLogprobs !== 'boolean') fail('promptLogprobs', 'must be a boolean', this.promptLogprobs);
    if (this.topLogprobs > 0 && !this.logprobs && !this.promptLogprobs)
      fail('topLogprobs', 'needs logprobs or promptLogprobs: true', this.topLogprobs);
    return this;
  }

  toJSON(): Required<Omit<GenerationConfigInit, 'seed' | 'grammar' | 'jsonSchema'>> & {
    seed?: number | string;
    grammar?: string;
    jsonSchema?: unknown;
  } {
    return {
      maxNewTokens: this.maxNewTokens,
      temperature: this.temperature,
      topP: this.topP,
      topK: this.topK,
      minP: this.minP,
      repetitionPenalty: this.repetitionPenalty,
      presencePenalty: this.presencePenalty,
      frequencyPenalty: this.frequencyPenalty,
      logitBias: { ...this.logitBias },
      stopSequences: [...this.stopSequences],
      // JSON has no bigint: a seed past 2^53 is written as its decimal digits (the constructor reads them back)
      seed: typeof this.seed === 'bigint' ? seedOf(this.seed) : this.seed,
      skipSpecialTokens: this.skipSpecialTokens,
      stream: this.stream,
      logprobs: this.logprobs,
      topLogprobs: this.topLogprobs,
      promptLogprobs: this.promptLogprobs,
      responseFormat: this.responseFormat,
      ...(this.grammar !== undefined ? { grammar: this.grammar } : {}),
      ...(this.jsonSchema !== undefined ? { jsonSchema: this.jsonSchema } : {}),
    };
  }
}
