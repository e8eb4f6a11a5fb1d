/**
 * OpenAI wire format: request → (prompt, GenerationConfig) and token events → response bodies.
 *
 * Defaults follow OpenAI (temperature 1, top_p 1, no top-k, no repetition penalty), not
 * GenerationConfig's, so a client that sends only `messages` gets OpenAI's sampling. top_p = 0
 * (OpenAI allows it) means greedy. Streams send a role chunk, content chunks, a chunk with the
 * finish_reason, the usage chunk when `stream_options.include_usage` is set, then `data: [DONE]`.
 * An error after the stream has started is sent as `data: {"error": …}` and the stream ends
 * without [DONE], so clients report it instead of taking a truncated answer as complete.
 */
import type { GenerationConfigInit } from '../api/generation-config.ts';
import type { GenerationOutcome, TokenEvent } from '../generate/engine.ts';
import type { LogitBias } from '../generate/logit-adjust.ts';
import type { PromptTokenLogprob, TokenLogprob } from '../generate/logprobs.ts';
import { toolCallGbnf, toolSystemPrompt } from '../generate/tool-calls.ts';
import type { Tokenizer } from '../tokenizer/types.ts';
import { errorBody, toBitNetError } from './errors.ts';
import type { Job, PromptInput } from './local.ts';
import { chatLogprobContent, completionLogprobs, type TokenNames } from './logprobs-wire.ts';
import type { ChatCompletionRequest, CompletionRequest } from './schemas.ts';
import { sseData } from './sse.ts';
import {
  activeTools,
  type CallPiece,
  CallStreamer,
  ReplyStreamer,
  toolChatMessages,
  toolChoiceMessage,
} from './tool-wire.ts';

export type OpenAIKind = 'chat' | 'completion';

export function samplingConfig(b: ChatCompletionRequest | CompletionRequest, maxTokens: number): GenerationConfigInit {
  const greedy = b.top_p === 0;
  const stop = b.stop == null ? [] : typeof b.stop === 'string' ? [b.stop] : b.stop;
  const tools = 'messages' in b ? activeTools(b) : undefined;
  return {
    maxNewTokens: maxTokens,
    temperature: b.temperature ?? 1,
    topP: greedy ? 1 : (b.top_p ?? 1),
    topK: greedy ? 1 : (b.top_k ?? 0),
    minP: b.min_p ?? 0,
    repetitionPenalty: b.repetition_penalty ?? 1,
    presencePenalty: b.presence_penalty ?? 0,
    frequencyPenalty: b.frequency_penalty ?? 0,
    // JSON keys are strings; GenerationConfig and the sampler read them as ids
    logitBias: (b.logit_bias ?? {}) as LogitBias,
    // json_object is JSON mode; json_schema and grammar constrain through a grammar
    ...(b.response_format?.type === 'json_object' ? { responseFormat: 'json_object' as const } : {}),
    ...(b.response_format?.type === 'json_schema' ? { jsonSchema: b.response_format.json_schema.schema ?? true } : {}),
    ...(b.grammar != null ? { grammar: b.grammar } : {}),
    // tools: the answer is a call or a reply, as JSON (tool-calls.ts)
    ...(tools ? { grammar: toolCallGbnf(tools.tools, tools.choice) } : {}),
    stopSequences: stop,
    seed: b.seed ?? undefined,
    // chat: logprobs true/false and top_logprobs; completions: logprobs is the number of alternatives
    // echo with logprobs (or with max_tokens 0, which only scores) scores the prompt as well
    ...('messages' in b
      ? {
          logprobs: b.logprobs === true,
          topLogprobs: b.top_logprobs ?? 0,
        }
      : {
          logprobs: b.logprobs != null,
          topLogprobs: b.logprobs ?? 0,
          promptLogprobs: b.echo === true && (b.logprobs != null || maxTokens === 0),
        }),
  };
}

/**
 * What `echo` puts before the completion: a text prompt as it was sent; token ids decoded as the
 * completion's text is (special tokens left out); "" without a tokenizer.
 */
export function echoText(p: PromptInput, tok: Tokenizer | undefined): string {
  if (p.kind === 'text') return p.text;
  if (p.kind === 'ids') return tok ? tok.decode(p.ids, { skipSpecialTokens: true }) : '';
  return '';
}

/** The chat messages; the model's template renders them when the request runs (local.ts). */
export function chatPrompt(b: ChatCompletionRequest): PromptInput {
  // null / absent content (allowed on assistant messages) is an empty turn; tool turns become text
  const active = activeTools(b);
  const messages = toolChatMessages(b.messages, active && toolSystemPrompt(active.tools, active.choice));
  return { kind: 'chat', messages };
}

/**
 * A completion's text prompt is tokenized with special-token parsing, as llama.cpp's server does
 * for /completion: a client that renders its own chat prompt sends `<|eot_id|>` and means the
 * token. `parse_special: false` (an extension) takes it as plain text. Chat messages never parse
 * specials (chat-template.ts).
 */
export function completionPrompts(b: CompletionRequest): PromptInput[] {
  const p = b.prompt;
  const parseSpecial = b.parse_special ?? true;
  if (typeof p === 'string') return [{ kind: 'text', text: p, parseSpecial }];
  if (typeof p[0] === 'number') return [{ kind: 'ids', ids: p as number[] }];
  if (typeof p[0] === 'string') return (p as string[]).map((text) => ({ kind: 'text', text, parseSpecial }));
  return (p as number[][]).map((ids) => ({ kind: 'ids', ids }));
}

/**
 * One generation per (prompt, choice), in OpenAI's order: choice index = prompt × n + j. With a
 * seed, choice j of a prompt samples with seed + j (mod 2^64), so the n choices differ and the
 * same request always gives the same choices; choice 0 is what the request with n = 1 gives.
 */
export function choiceJobs(prompts: readonly PromptInput[], config: GenerationConfigInit, n: number): Job[] {
  const jobs: Job[] = [];
  for (const prompt of prompts) {
    for (let j = 0; j < n; j++) {
      const seed =
        config.seed === undefined || j === 0 ? config.seed : BigInt.asUintN(64, BigInt(config.seed) + BigInt(j));
      jobs.push({ prompt, config: j === 0 ? config : { ...config, seed }, firstOfPrompt: j === 0 });
    }
  }
  return jobs;
}

export interface ResponseIdentity {
  id: string;
  created: number;
  model: string;
}

export function newIdentity(kind: OpenAIKind, model: string): ResponseIdentity {
  const id = `${kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${crypto.randomUUID().replace(/-/g, '')}`;
  return { id, created: Math.floor(Date.now() / 1000), model };
}

/** A choice's `logprobs` for these tokens: null when they were not asked for. */
function choiceLogprobs(
  kind: OpenAIKind,
  lps: readonly TokenLogprob[] | undefined,
  names: TokenNames,
  offset = 0,
  echoed: readonly PromptTokenLogprob[] = [],
): { value: unknown; end: number } {
  if (lps === undefined) return { value: null, end: offset };
  if (kind === 'chat') return { value: { content: chatLogprobContent(lps, names), refusal: null }, end: offset };
  return completionLogprobs([...echoed, ...lps], names, offset);
}

/** With `echo`: the prompt's text (its logprobs entries come with the outcome or the first event). */
export interface Echo {
  text: string;
}

/** One choice's run, as the response consumes it. */
export interface ChoiceRun {
  index: number;
  events: AsyncGenerator<TokenEvent, GenerationOutcome>;
  /** The first choice of its prompt: its prompt tokens count in `usage` (once per prompt). */
  countsPrompt: boolean;
  echo?: Echo;
}

/** One finished choice. */
export type ChoiceOutcome = Omit<ChoiceRun, 'events'> & { outcome: GenerationOutcome };

/** The choices' usage: every completion token, each prompt once. */
function usageOf(choices: readonly { outcome: GenerationOutcome; countsPrompt: boolean }[]) {
  let prompt = 0;
  let completion = 0;
  let cached = 0;
  for (const c of choices) {
    completion += c.outcome.generatedTokens;
    if (!c.countsPrompt) continue;
    prompt += c.outcome.promptTokens;
    cached += c.outcome.cachedPromptTokens;
  }
  return {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: prompt + completion,
    // OpenAI's field: the prompt tokens reused from the prompt cache rather than prefilled
    prompt_tokens_details: { cached_tokens: cached },
  };
}

/** The non-streaming body; with `tools` (chat), each choice's answer is a tool call or a reply (tool-wire.ts). */
export function completionBody(
  kind: OpenAIKind,
  ident: ResponseIdentity,
  choices: readonly ChoiceOutcome[],
  names: TokenNames,
  tools = false,
): unknown {
  const body = choices.map(({ index, outcome: o, echo }) => {
    const logprobs = choiceLogprobs(kind, o.logprobs, names, 0, echo ? o.promptLogprobs : undefined).value;
    if (kind === 'chat' && tools) {
      const m = toolChoiceMessage(o);
      const message = {
        role: 'assistant',
        content: m.content,
        refusal: null,
        ...(m.toolCalls ? { tool_calls: m.toolCalls } : {}),
      };
      return { index, message, logprobs, finish_reason: m.finishReason };
    }
    return kind === 'chat'
      ? // refusal: OpenAI's field, always present (null: this server never refuses)
        {
          index,
          message: { role: 'assistant', content: o.text, refusal: null },
          logprobs,
          finish_reason: o.finishReason,
        }
      : { index, text: (echo?.text ?? '') + o.text, logprobs, finish_reason: o.finishReason };
  });
  return {
    ...ident,
    object: kind === 'chat' ? 'chat.completion' : 'text_completion',
    choices: body,
    usage: usageOf(choices),
  };
}

/**
 * SSE lines for a streaming response: the choices one after another, each chunk naming its
 * choice's `index`. With logprobs, each content chunk carries the entries of the tokens since the
 * previous one (a token whose text is held back, a possible stop or half a character, waits for
 * the chunk that shows it); entries still waiting at a choice's end go out in a chunk with empty
 * content before its finish chunk. The usage chunk (stream_options.include_usage) covers them all.
 * With `tools` (chat), a reply streams as it is generated, and so does each tool call: a delta
 * with its index, id and name, then deltas with pieces of its arguments' text (tool-wire.ts).
 */
export async function* completionChunks(
  kind: OpenAIKind,
  ident: ResponseIdentity,
  runs: AsyncIterable<ChoiceRun>,
  includeUsage: boolean,
  names: TokenNames,
  withLogprobs = false,
  tools = false,
): AsyncGenerator<string, void> {
  const object = kind === 'chat' ? 'chat.completion.chunk' : 'text_completion';
  const extra = includeUsage ? { usage: null } : {};
  const done: { outcome: GenerationOutcome; countsPrompt: boolean }[] = [];
  let events: AsyncGenerator<TokenEvent, GenerationOutcome> | undefined;
  try {
    for await (const run of runs) {
      events = run.events;
      const { index, echo } = run;
      const pending: TokenLogprob[] = [];
      let offset = 0;
      let echoed: readonly PromptTokenLogprob[] = [];
      const takeLogprobs = (): unknown => {
        if (!withLogprobs) return null;
        const r = choiceLogprobs(kind, pending.splice(0), names, offset, echoed);
        echoed = [];
        offset = r.end;
        return r.value;
      };
      const chunk = (text: string | undefined, finish: string | null, role = false) => {
        const logprobs = text === undefined ? null : takeLogprobs();
        return kind === 'chat'
          ? {
              ...ident,
              object,
              choices: [
                {
                  index,
                  delta: role ? { role: 'assistant', content: '' } : text === undefined ? {} : { content: text },
                  logprobs,
                  finish_reason: finish,
                },
              ],
              ...extra,
            }
          : {
              ...ident,
              object,
              choices: [{ index, text: text ?? '', logprobs, finish_reason: finish }],
              ...extra,
            };
      };
      if (kind === 'chat') yield sseData(chunk(undefined, null, true));
      let r = await events.next();
      if (echo) {
        // the prompt first: its entries come with the first event, or with the outcome when nothing was generated
        echoed = r.value.promptLogprobs ?? [];
        yield sseData(chunk(echo.text, null));
      }
      const reply = tools ? new ReplyStreamer() : undefined;
      const calls = tools ? new CallStreamer() : undefined;
      const callDelta = (p: CallPiece) => ({
        ...ident,
        object,
        choices: [
          {
            index,
            delta: {
              tool_calls: [
                p.kind === 'start'
                  ? { index: p.index, id: p.call.id, type: 'function', function: { name: p.call.name, arguments: '' } }
                  : { index: p.index, function: { arguments: p.text } },
              ],
            },
            logprobs: null,
            finish_reason: null,
          },
        ],
        ...extra,
      });
      while (!r.done) {
        if (r.value.logprob) pending.push(r.value.logprob);
        const text = reply ? reply.push(r.value.text) : r.value.text;
        if (text) yield sseData(chunk(text, null));
        // a call goes out as it is written: its id and name, then its arguments' text
        for (const p of calls?.push(r.value.text) ?? []) yield sseData(callDelta(p));
        r = await events.next();
      }
      if (pending.length > 0) yield sseData(chunk('', null));
      if (kind === 'chat' && reply) {
        const m = toolChoiceMessage(r.value, calls);
        // a reply has gone out as it came, calls too; an answer cut before a call's name goes out as its raw text
        if (m.content !== null && !reply.isReply) yield sseData(chunk(m.content, null));
        yield sseData(chunk(undefined, m.finishReason));
      } else yield sseData(chunk(undefined, r.value.finishReason));
      done.push({ outcome: r.value, countsPrompt: run.countsPrompt });
    }
    if (includeUsage) yield sseData({ ...ident, object, choices: [], usage: usageOf(done) });
    yield sseData('[DONE]');
  } catch (e) {
    const err = toBitNetError(e);
    if (err.code !== 'CANCELLED') yield sseData(errorBody(err));
  } finally {
    await events?.return(undefined as never).catch(() => {});
  }
}
