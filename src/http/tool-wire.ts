/**
 * OpenAI's tool calling on the wire, over the generic tool calls of generate/tool-calls.ts:
 * - request: `tools`, `tool_choice` (none | auto | required | a named function; auto when tools are
 *   given), `parallel_tool_calls`; past turns with `tool_calls` (assistant) and `role: "tool"`
 *   results, written into the conversation as text any chat template renders;
 * - response: a choice whose answer calls tools has `message.tool_calls` (each with a fresh
 *   `call_…` id and its arguments as a JSON string), `content: null` and finish_reason
 *   "tool_calls"; an answer in words is plain `content`. A stream sends a reply's text as it is
 *   generated (ReplyStreamer decodes the JSON string on the fly), and tool calls at the end, one
 *   delta per call. An answer cut by max_tokens is its reply so far, or else its raw text, with
 *   finish_reason "length".
 */
import type { GenerationOutcome } from '../generate/engine.ts';
import { parseToolAnswer, type ToolChoice, type ToolSpec } from '../generate/tool-calls.ts';
import type { ChatMessage } from './chat-template.ts';
import type { ChatCompletionRequest } from './schemas.ts';

export interface ActiveTools {
  tools: ToolSpec[];
  choice: ToolChoice;
}

/** The tools the model is to use for this request; undefined with no tools or tool_choice none. */
export function activeTools(b: ChatCompletionRequest): ActiveTools | undefined {
  const tools = b.tools ?? [];
  const tc = b.tool_choice ?? 'auto';
  if (tools.length === 0 || tc === 'none') return undefined;
  return {
    tools: tools.map((t) => ({
      name: t.function.name,
      ...(t.function.description !== undefined ? { description: t.function.description } : {}),
      ...(t.function.parameters !== undefined ? { parameters: t.function.parameters } : {}),
    })),
    choice: {
      mode: tc === 'auto' ? 'auto' : 'required',
      ...(typeof tc === 'object' ? { only: tc.function.name } : {}),
      parallel: b.parallel_tool_calls ?? true,
    },
  };
}

type WireMessage = ChatCompletionRequest['messages'][number];

const text = (m: WireMessage): string =>
  m.content == null ? '' : typeof m.content === 'string' ? m.content : m.content.map((p) => p.text).join('\n');

/**
 * The conversation as chat-template messages: an assistant turn that called tools becomes the JSON
 * object it answered with, a tool result a user turn that names the call; with active tools, their
 * description goes into the system message (appended to the first one, or a new first one).
 */
export function toolChatMessages(messages: readonly WireMessage[], systemPrompt?: string): ChatMessage[] {
  const names = new Map<string, string>();
  const out: ChatMessage[] = messages.map((m) => {
    if (m.role === 'assistant' && m.tool_calls?.length) {
      const calls = m.tool_calls.map((c) => {
        names.set(c.id, c.function.name);
        let args: unknown = c.function.arguments;
        try {
          args = JSON.parse(c.function.arguments);
        } catch {
          // kept as the string it was sent as
        }
        return { name: c.function.name, arguments: args };
      });
      return { role: 'assistant', content: JSON.stringify({ tool_calls: calls }) };
    }
    if (m.role === 'tool') {
      const name = names.get(m.tool_call_id ?? '');
      return {
        role: 'user',
        content: `Result of the tool call ${m.tool_call_id}${name ? ` (${name})` : ''}:\n${text(m)}`,
      };
    }
    return { role: m.role as ChatMessage['role'], content: text(m) };
  });
  if (systemPrompt === undefined) return out;
  const first = out[0];
  if (first && (first.role === 'system' || first.role === 'developer'))
    return [{ role: first.role, content: `${first.content}\n\n${systemPrompt}` }, ...out.slice(1)];
  return [{ role: 'system', content: systemPrompt }, ...out];
}

export interface WireToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

/**
 * The reply of an answer `{"response": "…"}` while it is generated: push() each new piece of the
 * answer's text and get the reply's text that piece completes (JSON escapes decoded; an escape, or
 * the first half of a surrogate pair, cut by the piece waits for the next). Nothing for an answer
 * that calls tools.
 */
export class ReplyStreamer {
  private raw = '';
  /** Where in `raw` the reply's text not yet given out starts (known once the key is). */
  private at = 0;
  private ended = false;
  /** The answer calls tools: nothing to stream. */
  private calls = false;
  /** The answer is a reply (known once its key is). */
  isReply = false;

  push(piece: string): string {
    this.raw += piece;
    if (this.calls) return '';
    if (!this.isReply) {
      if (/^\{\s*"t/.test(this.raw)) this.calls = true;
      const m = /^\{\s*"(response"\s*:\s*")?/.exec(this.raw);
      if (!m || m[1] === undefined) return '';
      this.at = m[0].length;
      this.isReply = true;
    }
    if (this.ended) return '';
    // the longest run from `at` that ends on a whole character: no cut escape, no lone high surrogate
    let i = this.at;
    let safe = i;
    while (i < this.raw.length) {
      const c = this.raw[i];
      if (c === '"') {
        this.ended = true;
        safe = i;
        break;
      }
      if (c !== '\\') {
        i++;
        safe = i;
        continue;
      }
      const e = this.raw[i + 1];
      if (e === undefined) break;
      if (e !== 'u') {
        i += 2;
        safe = i;
        continue;
      }
      const hex = this.raw.slice(i + 2, i + 6);
      if (hex.length < 4) break;
      const unit = Number.parseInt(hex, 16);
      if (unit >= 0xd800 && unit <= 0xdbff) {
        // a high surrogate needs its low half, the next escape
        if (this.raw.length < i + 12) break;
        i += 12;
      } else i += 6;
      safe = i;
    }
    const out = JSON.parse(`"${this.raw.slice(this.at, safe)}"`) as string;
    this.at = safe;
    return out;
  }
}

/** A finished choice's message and finish_reason, with tools active. */
export function toolChoiceMessage(o: GenerationOutcome): {
  content: string | null;
  toolCalls?: WireToolCall[];
  finishReason: string;
} {
  const answer = o.finishReason === 'stop' ? parseToolAnswer(o.text) : undefined;
  if (answer === undefined) {
    // cut: the reply so far, as a stream would have shown it; a cut call, as it was written
    const reply = new ReplyStreamer();
    const text = reply.push(o.text);
    return { content: reply.isReply ? text : o.text, finishReason: o.finishReason };
  }
  if ('response' in answer) return { content: answer.response, finishReason: 'stop' };
  return {
    content: null,
    toolCalls: answer.calls.map((c) => ({
      id: `call_${crypto.randomUUID().replace(/-/g, '').slice(0, 24)}`,
      type: 'function',
      function: { name: c.name, arguments: JSON.stringify(c.arguments) },
    })),
    finishReason: 'tool_calls',
  };
}
