/**
 * OpenAI's tool calling on the wire, over the generic tool calls of generate/tool-calls.ts:
 * - request: `tools`, `tool_choice` (none | auto | required | a named function; auto when tools are
 *   given), `parallel_tool_calls`; past turns with `tool_calls` (assistant) and `role: "tool"`
 *   results, written into the conversation as text any chat template renders;
 * - response: a choice whose answer calls tools has `message.tool_calls` (each with a fresh
 *   `call_…` id and its arguments as a JSON string), `content: null` and finish_reason
 *   "tool_calls"; an answer in words is plain `content`. A stream sends the choice whole at its
 *   end (a role chunk, then the content or one tool-call delta per call), since only the finished
 *   object says which it is. An answer cut by max_tokens comes back as its raw text, finish_reason
 *   "length".
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

/** A finished choice's message and finish_reason, with tools active. */
export function toolChoiceMessage(o: GenerationOutcome): {
  content: string | null;
  toolCalls?: WireToolCall[];
  finishReason: string;
} {
  const answer = o.finishReason === 'stop' ? parseToolAnswer(o.text) : undefined;
  if (answer === undefined) return { content: o.text, finishReason: o.finishReason };
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
