/**
 * Local (edge) generation for one request: a slot from the limiter, the model, and the engine's
 * token stream.
 *
 * `startLocal` waits for a slot, then computes the first token before returning, so everything
 * that can fail early (a prompt too long for the context, a bad token id, a model that will not
 * load) fails while the response status can still say so. The returned generator yields the
 * token events and returns the outcome; leaving it early (the client went away, the stream was
 * cancelled) aborts the engine, frees the sequence's KV cache and the slot.
 */
import type { GenerationConfigInit } from '../api/generation-config.ts';
import type { Prompt } from '../api/inference-engine.ts';
import { BitNetError, isBitNetError } from '../errors.ts';
import type { GenerationOutcome, TokenEvent } from '../generate/engine.ts';
import type { ChatTemplate } from '../tokenizer/chat-template.ts';
import { encodePromptText } from '../tokenizer/prompt-text.ts';
import type { Tokenizer } from '../tokenizer/types.ts';
import { nextTurn } from '../util/turn.ts';
import { type ChatMessage, messagesToText, renderChat } from './chat-template.ts';
import type { Limiter } from './limiter.ts';
import type { AppMetrics } from './metrics.ts';
import type { ModelHolder } from './model-holder.ts';

/** A request's prompt before tokenization. */
export type PromptInput =
  | { kind: 'chat'; messages: ChatMessage[] }
  | { kind: 'text'; text: string; parseSpecial?: boolean }
  | { kind: 'ids'; ids: number[] };

/** Picks the chat template for a model's tokenizer (see chatTemplateResolver). */
export type TemplateFor = (tok: Tokenizer) => ChatTemplate;

/** The engine's prompt, and the stop strings the chat template adds to the request's. */
export interface EnginePrompt {
  prompt: Prompt;
  stopStrings: readonly string[];
}

// A prompt is tokenized once per request (the router's estimate and the run share it): chat messages
// rendered with the template, text by the engine's own rule (encodePromptText).
const prepared = new WeakMap<PromptInput, { tok: Tokenizer; template?: ChatTemplate; out: EnginePrompt }>();

/** The engine's prompt: with a tokenizer at hand, token ids; chat messages need one. */
export function toEnginePrompt(
  p: PromptInput,
  tok: Tokenizer | undefined,
  templateFor: TemplateFor,
  /** Why the model has no tokenizer, when it has a vocabulary that failed to build (ServedModel.tokenizerError). */
  tokenizerError?: BitNetError,
): EnginePrompt {
  if (p.kind === 'ids') return { prompt: { ids: p.ids }, stopStrings: [] };
  if (p.kind === 'text') {
    // without a tokenizer the engine gets the text, and says why it cannot take it
    if (!tok) return { prompt: p.parseSpecial ? { text: p.text, parseSpecial: true } : p.text, stopStrings: [] };
    const hit = prepared.get(p);
    if (hit && hit.tok === tok) return hit.out;
    const ids = encodePromptText(tok, p.text, p.parseSpecial === true);
    const out = { prompt: { ids }, stopStrings: [] };
    prepared.set(p, { tok, out });
    return out;
  }
  if (!tok && tokenizerError)
    throw BitNetError.Tokenization(
      tokenizerError.code,
      `this model's tokenizer could not be built (${tokenizerError.message}), so it cannot take chat messages; send token ids to /v1/completions instead`,
      tokenizerError.details,
      tokenizerError,
    );
  if (!tok)
    throw BitNetError.Tokenization(
      'TOKENIZER_MISSING',
      'this model has no tokenizer, so it cannot take chat messages; send token ids to /v1/completions instead',
    );
  const template = templateFor(tok);
  const hit = prepared.get(p);
  if (hit && hit.tok === tok && hit.template === template) return hit.out;
  const r = renderChat(tok, template, p.messages);
  const out = { prompt: { ids: r.ids }, stopStrings: r.stopStrings };
  prepared.set(p, { tok, template, out });
  return out;
}

/** `config` with the template's stop strings added to its stop sequences (once each). */
export function withStopStrings(config: GenerationConfigInit, extra: readonly string[]): GenerationConfigInit {
  const have = config.stopSequences ?? [];
  const add = extra.filter((s, i) => s.length > 0 && !have.includes(s) && extra.indexOf(s) === i);
  return add.length ? { ...config, stopSequences: [...have, ...add] } : config;
}

/** Prompt tokens: exact with a tokenizer at hand, else ~4 UTF-8 bytes per token. */
export function estimatePromptTokens(p: PromptInput, tok: Tokenizer | undefined, templateFor: TemplateFor): number {
  if (p.kind === 'ids') return p.ids.length;
  if (tok) {
    try {
      const { prompt } = toEnginePrompt(p, tok, templateFor);
      if (typeof prompt !== 'string' && 'ids' in prompt) return prompt.ids.length;
    } catch {
      // fall through to the byte estimate; the real error surfaces when the request runs
    }
  }
  const text = p.kind === 'chat' ? messagesToText(p.messages) : p.text;
  return Math.ceil(new TextEncoder().encode(text).length / 4);
}

/** One generation of a request: its prompt and settings (`n` and several prompts make several). */
export interface Job {
  prompt: PromptInput;
  config: GenerationConfigInit;
  /** The first job of its prompt (usage counts each prompt's tokens once). */
  firstOfPrompt: boolean;
}

/**
 * A request's local runs: run(0) is already started (what can fail early has failed before the
 * response); run(i) for i > 0 starts the i-th when the response gets to it, after the one before
 * it finished. cancel() cancels the current one.
 */
export interface Runs {
  readonly jobs: readonly Job[];
  /** The model's tokenizer, to spell token ids (log-probabilities), if it has one. */
  readonly tokenizer: Tokenizer | undefined;
  run(i: number): Promise<LocalRun>;
  cancel(): Promise<void>;
}

export interface LocalDeps {
  limiter: Limiter;
  templateFor: TemplateFor;
  holder: ModelHolder;
  metrics: AppMetrics;
  now(): number;
}

export interface LocalRun {
  /** Token events; the return value is the outcome. Leaving the loop early cancels the generation. */
  events: AsyncGenerator<TokenEvent, GenerationOutcome>;
  /** Cancels the generation and frees its slot, whether or not `events` was ever started. */
  cancel(): Promise<void>;
  /** The model's tokenizer, to spell token ids (log-probabilities), if it has one. */
  tokenizer: Tokenizer | undefined;
}

const cancelled = () => BitNetError.Timeout('CANCELLED', 'the client went away');

/**
 * What a generation fails with once `signal` aborts: a BitNetError reason (the server shutting
 * down: SHUTTING_DOWN), so each route answers it in its own format; any other abort is the client
 * going away.
 */
const abortReason = (signal: AbortSignal | undefined) => (isBitNetError(signal?.reason) ? signal.reason : cancelled());

export async function startLocal(
  d: LocalDeps,
  prompt: PromptInput,
  config: GenerationConfigInit,
  signal: AbortSignal | undefined,
  t0: number,
  /** Where the run's slot comes from (default: one of the limiter's; startAll shares one). */
  acquire: () => Promise<() => void> = () => d.limiter.acquire(signal),
): Promise<LocalRun> {
  const reason = () => abortReason(signal);
  let release: () => void;
  try {
    release = await acquire();
  } catch (e) {
    throw signal?.aborted ? reason() : e;
  }
  const ac = new AbortController();
  const onAbort = () => ac.abort(reason());
  signal?.addEventListener('abort', onAbort, { once: true });
  let it: AsyncGenerator<TokenEvent, GenerationOutcome> | undefined;
  let settled = false;
  // Frees everything exactly once: the engine's sequence (through its generator), the slot.
  const settle = async (finished: boolean) => {
    if (settled) return;
    settled = true;
    signal?.removeEventListener('abort', onAbort);
    if (!finished && it) {
      ac.abort(cancelled());
      await it.return(undefined as never).catch(() => {});
    }
    release();
  };
  let first: IteratorResult<TokenEvent, GenerationOutcome>;
  let tokenizer: Tokenizer | undefined;
  try {
    if (signal?.aborted) throw reason();
    const model = await d.holder.get();
    tokenizer = model.tokenizer;
    const p = toEnginePrompt(prompt, model.tokenizer, d.templateFor, model.tokenizerError);
    it = model.engine.stream(p.prompt, withStopStrings(config, p.stopStrings), ac.signal);
    first = await it.next();
  } catch (e) {
    await settle(false);
    throw e;
  }
  d.metrics.firstToken.observe((d.now() - t0) / 1000);
  const engine = it;

  async function* events(): AsyncGenerator<TokenEvent, GenerationOutcome> {
    let finished = false;
    try {
      let r = first;
      while (!r.done) {
        yield r.value;
        // one macrotask turn per token: the token reaches the socket, other requests are served
        await nextTurn();
        r = await engine.next();
      }
      finished = true;
      d.metrics.tokens.inc({ type: 'prompt' }, r.value.promptTokens);
      d.metrics.tokens.inc({ type: 'completion' }, r.value.generatedTokens);
      return r.value;
    } finally {
      await settle(finished);
    }
  }
  return { events: events(), cancel: () => settle(false), tokenizer };
}

/**
 * Checks a job as its run would (the model loaded, the prompt tokenized once, its ids, its length,
 * the settings) without running it, so a request of several fails before any of them runs.
 */
export async function checkJob(d: LocalDeps, job: Job): Promise<void> {
  const model = await d.holder.get();
  const p = toEnginePrompt(job.prompt, model.tokenizer, d.templateFor, model.tokenizerError);
  model.engine.check?.(p.prompt, withStopStrings(job.config, p.stopStrings));
}

/**
 * Starts every job at once (a backend that batches concurrent generations: cuda) and drains each
 * into a buffer as it generates, so all of them compute together while the response reads them
 * one after another (the same order and chunks as runs started in turn). They share one slot,
 * freed when the last of them ends: a request never waits for a second slot, nor holds one while
 * waiting (a queue that is full, or two such requests waiting on each other). If one fails to
 * start, the others are cancelled and its error is thrown.
 */
export async function startAll(
  d: LocalDeps,
  jobs: readonly Job[],
  signal: AbortSignal | undefined,
  t0: number,
): Promise<LocalRun[]> {
  const release = await d.limiter.acquire(signal).catch((e: unknown) => {
    throw signal?.aborted ? abortReason(signal) : e;
  });
  let left = jobs.length;
  // each run's part of the slot; a run releases its part exactly once (startLocal's settle)
  const part = async () => () => {
    if (--left === 0) release();
  };
  const started = await Promise.allSettled(jobs.map((j) => startLocal(d, j.prompt, j.config, signal, t0, part)));
  const failed = started.find((r) => r.status === 'rejected');
  if (failed) {
    await Promise.all(started.map((r) => (r.status === 'fulfilled' ? r.value.cancel() : undefined)));
    throw failed.reason;
  }
  return started.map((r) => buffered((r as PromiseFulfilledResult<LocalRun>).value));
}

/** A run whose events are pulled as fast as they come and kept until the reader takes them. */
function buffered(run: LocalRun): LocalRun {
  const got: IteratorResult<TokenEvent, GenerationOutcome>[] = [];
  let failure: { error: unknown } | undefined;
  let wake: (() => void) | undefined;
  const pump = async () => {
    try {
      for (;;) {
        const r = await run.events.next();
        got.push(r);
        wake?.();
        if (r.done) return;
      }
    } catch (e) {
      failure = { error: e };
      wake?.();
    }
  };
  void pump();
  async function* events(): AsyncGenerator<TokenEvent, GenerationOutcome> {
    let finished = false;
    try {
      for (;;) {
        while (got.length === 0 && !failure) await new Promise<void>((r) => (wake = r));
        const r = got.shift();
        if (!r) throw (failure as { error: unknown }).error;
        if (r.done) {
          finished = true;
          return r.value;
        }
        yield r.value;
      }
    } finally {
      // the reader left early: stop the generation (the pump then ends with its error)
      if (!finished) await run.cancel();
    }
  }
  return { events: events(), cancel: run.cancel, tokenizer: run.tokenizer };
}

/** Drains a run into its outcome (non-streaming responses). */
export async function collect(run: LocalRun): Promise<GenerationOutcome> {
  let r = await run.events.next();
  while (!r.done) r = await run.events.next();
  return r.value;
}
