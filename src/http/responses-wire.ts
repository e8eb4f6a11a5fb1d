/**
 * OpenAI's Responses API, the response side: the `response` object and its event stream.
 *
 * A response's `output` holds a `message` item (one `output_text` part) for an answer in words,
 * and one `function_call` item per tool call (with tools: tool-wire.ts decides which the answer
 * is). `status` is "completed", or "incomplete" with incomplete_details.reason
 * "max_output_tokens" when the answer was cut (a call cut in its arguments is an "incomplete" item).
 *
 * The stream (SSE, `event:` named as `type`, `sequence_number` counting from 0):
 *   response.created, response.in_progress                        (status in_progress, no output)
 *   response.output_item.added → response.content_part.added       the message opens (at once
 *   → response.output_text.delta …                                 without tools; with tools once
 *   → response.output_text.done → response.content_part.done       the answer is known to be a
 *   → response.output_item.done                                    reply), text as it is generated
 *   per call: response.output_item.added (once its name is known) → response.function_call_arguments.delta …
 *     (its arguments' text as it is written) → at the end, response.function_call_arguments.done
 *     → response.output_item.done
 *   response.completed | response.incomplete                       the whole response
 *   error {code, message, param}                                   instead, when generation fails
 */
import type { GenerationOutcome, TokenEvent } from '../generate/engine.ts';
import type { TokenLogprob } from '../generate/logprobs.ts';
import { toBitNetError } from './errors.ts';
import { chatLogprobContent, type TokenNames } from './logprobs-wire.ts';
import type { ResponsesRequest } from './responses.ts';
import { sseEvent } from './sse.ts';
import { CallStreamer, ReplyStreamer, toolChoiceMessage } from './tool-wire.ts';

const newId = (prefix: string) => `${prefix}_${crypto.randomUUID().replace(/-/g, '')}`;

export interface ResponsesIdentity {
  id: string;
  created_at: number;
  model: string;
}

export function newResponsesIdentity(model: string): ResponsesIdentity {
  return { id: newId('resp'), created_at: Math.floor(Date.now() / 1000), model };
}

type Status = 'in_progress' | 'completed' | 'incomplete';

interface MessageItem {
  id: string;
  type: 'message';
  status: Status;
  role: 'assistant';
  content: ReturnType<typeof textPart>[];
}

interface FunctionCallItem {
  id: string;
  type: 'function_call';
  status: Status;
  call_id: string;
  name: string;
  arguments: string;
}

type OutputItem = MessageItem | FunctionCallItem;

/** An output_text part; `logprobs` has an entry per token with include message.output_text.logprobs. */
const textPart = (text: string, logprobs: unknown[] = []) => ({
  type: 'output_text' as const,
  text,
  annotations: [] as never[],
  logprobs,
});

const messageItem = (id: string, status: Status, text?: string, logprobs?: unknown[]): MessageItem => ({
  id,
  type: 'message',
  status,
  role: 'assistant',
  content: text === undefined ? [] : [textPart(text, logprobs)],
});

function usageOf(o: GenerationOutcome) {
  return {
    input_tokens: o.promptTokens,
    input_tokens_details: { cached_tokens: o.cachedPromptTokens },
    output_tokens: o.generatedTokens,
    output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: o.promptTokens + o.generatedTokens,
  };
}

/** The `response` object: the request's settings as they were applied, and the output so far. */
function responseObject(
  ident: ResponsesIdentity,
  b: ResponsesRequest,
  status: Status,
  output: OutputItem[],
  o?: GenerationOutcome,
) {
  return {
    id: ident.id,
    object: 'response',
    created_at: ident.created_at,
    status,
    background: false,
    error: null,
    incomplete_details: status === 'incomplete' ? { reason: 'max_output_tokens' } : null,
    instructions: b.instructions ?? null,
    max_output_tokens: b.max_output_tokens ?? null,
    metadata: b.metadata ?? {},
    model: ident.model,
    output,
    parallel_tool_calls: b.parallel_tool_calls ?? true,
    previous_response_id: null,
    reasoning: { effort: null, summary: null },
    // this server keeps no responses
    store: false,
    temperature: b.temperature ?? 1,
    text: { format: b.text?.format ?? { type: 'text' } },
    tool_choice: b.tool_choice ?? 'auto',
    tools: (b.tools ?? []).map((t) => ({
      type: 'function',
      name: t.name,
      description: t.description ?? null,
      parameters: t.parameters ?? null,
      strict: t.strict ?? false,
    })),
    top_p: b.top_p ?? 1,
    truncation: b.truncation ?? 'disabled',
    usage: o ? usageOf(o) : null,
    user: b.user ?? null,
  };
}

/** A finished answer: its reply text (null when it calls tools), its calls, its status. */
function answerOf(
  o: GenerationOutcome,
  tools: boolean,
  streamed?: CallStreamer,
): { text: string | null; calls: (Omit<FunctionCallItem, 'id' | 'type'> & { complete: boolean })[]; status: Status } {
  const status: Status = o.finishReason === 'length' ? 'incomplete' : 'completed';
  if (!tools) return { text: o.text, calls: [], status };
  const cs = streamed ?? new CallStreamer();
  if (!streamed) cs.push(o.text);
  const m = toolChoiceMessage(o, cs);
  const calls = (m.toolCalls ?? []).map((c, i) => ({
    call_id: c.id,
    name: c.function.name,
    arguments: c.function.arguments,
    // a call cut by max_output_tokens
    complete: cs.calls[i].complete,
    status: (cs.calls[i].complete ? 'completed' : 'incomplete') as Status,
  }));
  return { text: m.content, calls, status };
}

/** The output text's log-probabilities as the wire has them ([] when not asked for). */
const wireLogprobs = (lps: readonly TokenLogprob[] | undefined, names: TokenNames): unknown[] =>
  lps ? chatLogprobContent(lps, names) : [];

/** The non-streaming body. */
export function responseBody(
  ident: ResponsesIdentity,
  b: ResponsesRequest,
  o: GenerationOutcome,
  tools: boolean,
  names: TokenNames,
): unknown {
  const a = answerOf(o, tools);
  const output: OutputItem[] = [];
  if (a.text !== null) output.push(messageItem(newId('msg'), a.status, a.text, wireLogprobs(o.logprobs, names)));
  for (const { complete: _, ...c } of a.calls) output.push({ id: newId('fc'), type: 'function_call', ...c });
  return responseObject(ident, b, a.status, output, o);
}

/** The event stream of one generation (see the file comment). */
export async function* responseEvents(
  ident: ResponsesIdentity,
  b: ResponsesRequest,
  events: AsyncGenerator<TokenEvent, GenerationOutcome>,
  tools: boolean,
  names: TokenNames,
): AsyncGenerator<string, void> {
  let seq = 0;
  const ev = (type: string, fields: Record<string, unknown>) =>
    sseEvent(type, { type, sequence_number: seq++, ...fields });
  yield ev('response.created', { response: responseObject(ident, b, 'in_progress', []) });
  yield ev('response.in_progress', { response: responseObject(ident, b, 'in_progress', []) });
  const msgId = newId('msg');
  const at = { item_id: msgId, output_index: 0, content_index: 0 };
  let opened = false;
  function* open() {
    opened = true;
    yield ev('response.output_item.added', { output_index: 0, item: messageItem(msgId, 'in_progress') });
    yield ev('response.content_part.added', { ...at, part: textPart('') });
  }
  // each delta carries the entries of the tokens since the previous one (a token whose text is held
  // back waits for the delta that shows it; entries still waiting at the end go in an empty delta)
  const pending: TokenLogprob[] = [];
  const delta = (d: string) =>
    ev('response.output_text.delta', { ...at, delta: d, logprobs: wireLogprobs(pending.splice(0), names) });
  try {
    const reply = tools ? new ReplyStreamer() : undefined;
    const calls = tools ? new CallStreamer() : undefined;
    // each call's item id (fc_…), made when its output_item.added goes out
    const fcIds: string[] = [];
    if (!reply) yield* open();
    let r = await events.next();
    while (!r.done) {
      if (r.value.logprob) pending.push(r.value.logprob);
      const piece = reply ? reply.push(r.value.text) : r.value.text;
      if (!opened && reply?.isReply) yield* open();
      if (piece) yield delta(piece);
      // a call goes out as it is written: its item once its name is known, then its arguments' text
      for (const p of calls?.push(r.value.text) ?? []) {
        if (p.kind === 'start') {
          fcIds[p.index] = newId('fc');
          const { id: call_id, name } = p.call;
          yield ev('response.output_item.added', {
            output_index: p.index,
            item: { id: fcIds[p.index], type: 'function_call', status: 'in_progress', call_id, name, arguments: '' },
          });
        } else
          yield ev('response.function_call_arguments.delta', {
            item_id: fcIds[p.index],
            output_index: p.index,
            delta: p.text,
          });
      }
      r = await events.next();
    }
    const a = answerOf(r.value, tools, calls);
    const output: OutputItem[] = [];
    if (a.text !== null) {
      // with tools, a cut answer that was no reply goes out as its raw text, now
      if (!opened) yield* open();
      if (reply && !reply.isReply && a.text) yield delta(a.text);
      if (pending.length > 0) yield delta('');
      const logprobs = wireLogprobs(r.value.logprobs, names);
      yield ev('response.output_text.done', { ...at, text: a.text, logprobs });
      yield ev('response.content_part.done', { ...at, part: textPart(a.text, logprobs) });
      const item = messageItem(msgId, a.status, a.text, logprobs);
      yield ev('response.output_item.done', { output_index: 0, item });
      output.push(item);
    }
    for (const [output_index, { complete: _, ...c }] of a.calls.entries()) {
      const item: FunctionCallItem = { id: fcIds[output_index], type: 'function_call', ...c };
      yield ev('response.function_call_arguments.done', {
        item_id: item.id,
        output_index,
        name: c.name,
        arguments: c.arguments,
      });
      yield ev('response.output_item.done', { output_index, item });
      output.push(item);
    }
    yield ev(a.status === 'incomplete' ? 'response.incomplete' : 'response.completed', {
      response: responseObject(ident, b, a.status, output, r.value),
    });
  } catch (e) {
    const err = toBitNetError(e);
    if (err.code !== 'CANCELLED') {
      const param = typeof err.details.param === 'string' ? err.details.param : null;
      yield ev('error', { code: err.code, message: err.message, param });
    }
  } finally {
    await events.return(undefined as never).catch(() => {});
  }
}
