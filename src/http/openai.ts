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
import type { ChatMessage } from './chat-template.ts';
import { errorBody, toBitNetError } from './errors.ts';
import type { PromptInput } from './local.ts';
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
    stopSequences: stop,
    seed: b.seed ?? undefined,
  };
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
  };
}

/** The non-streaming body. */
export function completionBody(kind: OpenAIKind, ident: ResponseIdentity, o: GenerationOutcome): unknown {
  if (kind === 'chat') {
    return {
      ...ident,
      object: 'chat.completion',
      choices: [
        { index: 0, message: { role: 'assistant', content: o.text }, logprobs: null, finish_reason: o.finishReason },
      ],
      usage: usage(o),
    };
  }
  return {
    ...ident,
    object: 'text_completion',
    choices: [{ index: 0, text: o.text, logprobs: null, finish_reason: o.finishReason }],
    usage: usage(o),
  };
}

/** SSE lines for a streaming response, from the run's token events. */
export async function* completionChunks(
  kind: OpenAIKind,
  ident: ResponseIdentity,
  events: AsyncGenerator<TokenEvent, GenerationOutcome>,
  includeUsage: boolean,
): AsyncGenerator<string, void> {
  const object = kind === 'chat' ? 'chat.completion.chunk' : 'text_completion';
  const extra = includeUsage ? { usage: null } : {};
  const chunk = (text: string | undefined, finish: string | null, role = false) =>
    kind === 'chat'
      ? {
          ...ident,
          object,
          choices: [
            {
              index: 0,
              delta: role ? { role: 'assistant', content: '' } : text === undefined ? {} : { content: text },
              logprobs: null,
              finish_reason: finish,
            },
          ],
          ...extra,
        }
      : {
          ...ident,
          object,
          choices: [{ index: 0, text: text ?? '', logprobs: null, finish_reason: finish }],
          ...extra,
        };
  try {
    if (kind === 'chat') yield sseData(chunk(undefined, null, true));
    let r = await events.next();
    while (!r.done) {
      if (r.value.text) yield sseData(chunk(r.value.text, null));
      r = await events.next();
    }
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
