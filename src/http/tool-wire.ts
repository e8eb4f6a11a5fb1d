/**
 * OpenAI's tool calling on the wire, over the generic tool calls of generate/tool-calls.ts:
 * - request: `tools`, `tool_choice` (none | auto | required | a named function; auto when tools are
 *   given), `parallel_tool_calls`; past turns with `tool_calls` (assistant) and `role: "tool"`
 *   results, written into the conversation as text any chat template renders;
 * - response: a choice whose answer calls tools has `message.tool_calls` (each with a fresh
 *   `call_…` id and its arguments as the JSON text the model wrote), `content: null` and
 *   finish_reason "tool_calls"; an answer in words is plain `content`. A stream sends a reply's
 *   text as it is generated (ReplyStreamer decodes the JSON string on the fly), and each call as it
 *   is written (CallStreamer): its id and name once the name is known, then its arguments' text in
 *   pieces. An answer cut by max_tokens is its reply so far, or its calls so far (the last one's
 *   arguments cut), or, cut before any call's name, its raw text, with finish_reason "length".
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

// Text parts are joined as llama.cpp's server joins them (common/chat.cpp): a newline before a part
// only once some text has been written, so leading empty parts add nothing.
const text = (m: WireMessage): string =>
  m.content == null
    ? ''
    : typeof m.content === 'string'
      ? m.content
      : m.content.reduce((acc, p) => (acc === '' ? p.text : `${acc}\n${p.text}`), '');

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

/** A call as the answer's text gives it so far: `arguments` is its JSON text as written. */
export interface StreamedCall {
  id: string;
  name: string;
  arguments: string;
  /** Its arguments' value has ended. */
  complete: boolean;
}

/** What a piece of a calling answer completes: a call's start (its name is known), more of its arguments. */
export type CallPiece =
  | { kind: 'start'; index: number; call: StreamedCall }
  | { kind: 'args'; index: number; text: string };

const callId = () => `call_${crypto.randomUUID().replace(/-/g, '').slice(0, 24)}`;

/**
 * The calls of an answer `{"tool_calls": [{"name": …, "arguments": …}, …]}` while it is
 * generated: push() each new piece of the answer's text and get what it completes, each call's
 * start (with a fresh `call_…` id) once its name is known, then its arguments' JSON text as the
 * model writes it, cut anywhere (the pieces of a call join to its `arguments`). Nothing for a
 * reply. The answer's grammar (generate/tool-calls.ts) fixes the form, so the scan follows it:
 * the arguments' value ends where its brackets close (strings and escapes skipped), or, for a
 * scalar, at the first character after it.
 */
export class CallStreamer {
  private raw = '';
  private at = 0;
  private state: 'open' | 'next' | 'name' | 'value' | 'close' | 'done' = 'open';
  // in an arguments value
  private started = false;
  private scalar = false;
  private depth = 0;
  private inString = false;
  private escaped = false;
  readonly calls: StreamedCall[] = [];

  push(piece: string): CallPiece[] {
    this.raw += piece;
    const out: CallPiece[] = [];
    for (;;) {
      if (this.state === 'done') return out;
      if (this.state === 'value') {
        const text = this.scanValue();
        if (text) {
          this.calls[this.calls.length - 1].arguments += text;
          out.push({ kind: 'args', index: this.calls.length - 1, text });
        }
        if (this.state === 'value') return out;
        continue;
      }
      const rest = this.raw.slice(this.at);
      let m: RegExpExecArray | null = null;
      if (this.state === 'open') {
        // a reply's key: no calls in this answer, nothing more to scan
        if (/^\{\s*"[^t]/.test(rest)) this.state = 'done';
        m = /^\{\s*"tool_calls"\s*:\s*\[/.exec(rest);
      } else if (this.state === 'next') m = /^\s*,?\s*([{\]])/.exec(rest);
      else if (this.state === 'name') m = /^\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:/.exec(rest);
      else m = /^\s*\}/.exec(rest);
      if (!m) return out;
      this.at += m[0].length;
      if (this.state === 'open') this.state = 'next';
      else if (this.state === 'next') this.state = m[1] === ']' ? 'done' : 'name';
      else if (this.state === 'close') this.state = 'next';
      else {
        const call: StreamedCall = { id: callId(), name: JSON.parse(`"${m[1]}"`), arguments: '', complete: false };
        this.calls.push(call);
        out.push({ kind: 'start', index: this.calls.length - 1, call });
        this.state = 'value';
        this.started = false;
      }
    }
  }

  /** Scans the arguments value from `at`: returns its text so far, and moves to 'close' at its end. */
  private scanValue(): string {
    let from = this.at;
    let i = this.at;
    for (; i < this.raw.length; i++) {
      const c = this.raw[i];
      if (!this.started) {
        if (c === ' ' || c === '\n' || c === '\t' || c === '\r') {
          from = i + 1;
          continue;
        }
        this.started = true;
        this.scalar = c !== '{' && c !== '[' && c !== '"';
        this.depth = 0;
        this.inString = false;
        this.escaped = false;
      }
      if (this.scalar) {
        if (/[\s,}\]]/.test(c)) return this.endValue(from, i);
        continue;
      }
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (c === '\\') this.escaped = true;
        else if (c === '"') {
          this.inString = false;
          if (this.depth === 0) return this.endValue(from, i + 1);
        }
        continue;
      }
      if (c === '"') this.inString = true;
      else if (c === '{' || c === '[') this.depth++;
      else if (c === '}' || c === ']') {
        this.depth--;
        if (this.depth === 0) return this.endValue(from, i + 1);
      }
    }
    this.at = i;
    return this.raw.slice(from, i);
  }

  private endValue(from: number, end: number): string {
    this.at = end;
    this.state = 'close';
    this.calls[this.calls.length - 1].complete = true;
    return this.raw.slice(from, end);
  }
}

/**
 * A finished choice's message and finish_reason, with tools active. `streamed`: the CallStreamer
 * that followed the answer as it streamed, so the calls keep the ids the stream gave them. A call's
 * `arguments` is its JSON text as the model wrote it. An answer cut by max_tokens is its reply so
 * far, or its calls so far (the last one's arguments cut), or, cut before a call's name, its raw text.
 */
export function toolChoiceMessage(
  o: GenerationOutcome,
  streamed?: CallStreamer,
): {
  content: string | null;
  toolCalls?: WireToolCall[];
  finishReason: string;
} {
  const answer = o.finishReason === 'stop' ? parseToolAnswer(o.text) : undefined;
  if (answer !== undefined && 'response' in answer) return { content: answer.response, finishReason: 'stop' };
  const calls = streamed ?? new CallStreamer();
  if (!streamed) calls.push(o.text);
  if (answer === undefined) {
    const reply = new ReplyStreamer();
    const text = reply.push(o.text);
    if (reply.isReply) return { content: text, finishReason: o.finishReason };
    if (calls.calls.length === 0) return { content: o.text, finishReason: o.finishReason };
  }
  return {
    content: null,
    toolCalls: calls.calls.map((c) => ({
      id: c.id,
      type: 'function',
      function: { name: c.name, arguments: c.arguments },
    })),
    finishReason: answer === undefined ? o.finishReason : 'tool_calls',
  };
}
