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
import type { Tokenizer } from '../tokenizer/types.ts';
import type { ChatMessage } from './chat-template.ts';
import { errorBody, toBitNetError } from './errors.ts';
import type { PromptInput } from './local.ts';
import { chatLogprobContent, completionLogprobs, type TokenNames } from './logprobs-wire.ts';
import type { ChatCompletionRequest, CompletionRequest } from './schemas.ts';
import { sseData } from './sse.ts';

export type OpenAIKind = 'chat' | 'completion';

export function samplingConfig(b: ChatCompletionRequest | CompletionRequest, maxTokens: number): GenerationConfigInit {
  const greedy = b.top_p === 0;
  const stop = b.stop == null ? [] : typeof b.stop === 'string' ? [b.stop] : b.stop;
  return {
    maxNewTokens: maxTokens,
    temperature: b.temperature ?? 1,
    topP: greedy ? 1 : (b.top_p ?? 1),
    topK: greedy ? 1 : (b.top_k ?? 0),
    repetitionPenalty: b.repetition_penalty ?? 1,
    presencePenalty: b.presence_penalty ?? 0,
    frequencyPenalty: b.frequency_penalty ?? 0,
    // JSON keys are strings; GenerationConfig and the sampler read them as ids
    logitBias: (b.logit_bias ?? {}) as LogitBias,
    stopSequences: stop,
    seed: b.seed ?? undefined,
    // chat: logprobs true/false and top_logprobs; completions: logprobs is the number of alternatives
    // echo with logprobs (or with max_tokens 0, which only scores) scores the prompt as well
    ...('messages' in b
      ? { logprobs: b.logprobs === true, topLogprobs: b.top_logprobs ?? 0 }
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
  const messages: ChatMessage[] = b.messages.map((m) => ({
    role: m.role,
    // null / absent content (allowed on assistant messages) is an empty turn
    content:
      m.content == null ? '' : typeof m.content === 'string' ? m.content : m.content.map((p) => p.text).join('\n'),
  }));
  return { kind: 'chat', messages };
}

/**
 * A completion's text prompt is tokenized with special-token parsing, as llama.cpp's server does
 * for /completion: a client that renders its own chat prompt sends `<|eot_id|>` and means the
 * token. `parse_special: false` (an extension) takes it as plain text. Chat messages never parse
 * specials (chat-template.ts).
 */
export function completionPrompt(b: CompletionRequest): PromptInput {
  const p = b.prompt;
  const parseSpecial = b.parse_special ?? true;
  if (typeof p === 'string') return { kind: 'text', text: p, parseSpecial };
  if (typeof p[0] === 'string') return { kind: 'text', text: p[0], parseSpecial };
  if (typeof p[0] === 'number') return { kind: 'ids', ids: p as number[] };
  return { kind: 'ids', ids: (p as number[][])[0] };
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

function usage(o: GenerationOutcome) {
  return {
    prompt_tokens: o.promptTokens,
    completion_tokens: o.generatedTokens,
    total_tokens: o.promptTokens + o.generatedTokens,
    // OpenAI's field: the prompt tokens reused from the prompt cache rather than prefilled
    prompt_tokens_details: { cached_tokens: o.cachedPromptTokens },
  };
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

/** The non-streaming body. */
export function completionBody(
  kind: OpenAIKind,
  ident: ResponseIdentity,
  o: GenerationOutcome,
  names: TokenNames,
  echo?: Echo,
): unknown {
  const logprobs = choiceLogprobs(kind, o.logprobs, names, 0, echo ? o.promptLogprobs : undefined).value;
  if (kind === 'chat') {
    return {
      ...ident,
      object: 'chat.completion',
      choices: [{ index: 0, message: { role: 'assistant', content: o.text }, logprobs, finish_reason: o.finishReason }],
      usage: usage(o),
    };
  }
  return {
    ...ident,
    object: 'text_completion',
    choices: [{ index: 0, text: (echo?.text ?? '') + o.text, logprobs, finish_reason: o.finishReason }],
    usage: usage(o),
  };
}

/**
 * SSE lines for a streaming response, from the run's token events. With logprobs, each content
 * chunk carries the entries of the tokens since the previous one (a token whose text is held back,
 * a possible stop or half a character, waits for the chunk that shows it); entries still waiting
 * at the end go out in a chunk with empty content before the finish chunk.
 */
export async function* completionChunks(
  kind: OpenAIKind,
  ident: ResponseIdentity,
  events: AsyncGenerator<TokenEvent, GenerationOutcome>,
  includeUsage: boolean,
  names: TokenNames,
  withLogprobs = false,
  echo?: Echo,
): AsyncGenerator<string, void> {
  const object = kind === 'chat' ? 'chat.completion.chunk' : 'text_completion';
  const extra = includeUsage ? { usage: null } : {};
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
              index: 0,
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
          choices: [{ index: 0, text: text ?? '', logprobs, finish_reason: finish }],
          ...extra,
        };
  };
  try {
    if (kind === 'chat') yield sseData(chunk(undefined, null, true));
    let r = await events.next();
    if (echo) {
      // the prompt first: its entries come with the first event, or with the outcome when nothing was generated
      echoed = r.value.promptLogprobs ?? [];
      yield sseData(chunk(echo.text, null));
    }
    while (!r.done) {
      if (r.value.logprob) pending.push(r.value.logprob);
      if (r.value.text) yield sseData(chunk(r.value.text, null));
      r = await events.next();
    }
    if (pending.length > 0) yield sseData(chunk('', null));
    yield sseData(chunk(undefined, r.value.finishReason));
    if (includeUsage) yield sseData({ ...ident, object, choices: [], usage: usage(r.value) });
    yield sseData('[DONE]');
  } catch (e) {
    const err = toBitNetError(e);
    if (err.code !== 'CANCELLED') yield sseData(errorBody(err));
  } finally {
    await events.return(undefined as never).catch(() => {});
  }
}
