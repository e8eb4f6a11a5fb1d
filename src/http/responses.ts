/**
 * OpenAI's Responses API (POST /v1/responses), the request side: its schema and its mapping onto
 * a chat completion request, so that a response runs exactly as the same conversation sent to
 * /v1/chat/completions would (chat template, tools, structured outputs, sampling).
 *
 *   input         a string (one user message) or items: messages (text content), a past turn's
 *                 `function_call` items and their `function_call_output` results
 *   instructions  a system message ahead of the input
 *   text.format   text | json_object | json_schema {name, schema, strict}  → response_format
 *   tools         function tools {type, name, description, parameters}, tool_choice, parallel_tool_calls
 *
 *   include       message.output_text.logprobs (and top_logprobs): the output text's log-probabilities
 *
 * This server keeps no responses: `previous_response_id`, `conversation` and `background` are
 * refused with a 400 that says to send the conversation in `input`; `store` is answered false.
 * The chat route's llama.cpp-style sampling extensions (seed, stop, top_k, min_p, penalties,
 * logit_bias, grammar) are accepted here too.
 */
import { z } from 'zod';
import { MAX_TOP_LOGPROBS } from '../generate/logprobs.ts';
import { type ChatCompletionRequest, checkTools, sampling } from './schemas.ts';

const stateless = (field: string) =>
  `${field} is not supported: this server keeps no responses; send the whole conversation in input`;

/** A message's text content: a string or text parts (input_text in a request, output_text in a past reply). */
const textContent = z.union(
  [
    z.string(),
    z.array(z.object({ type: z.enum(['input_text', 'output_text']), text: z.string() }), {
      error: 'only text content parts (input_text, output_text) are supported',
    }),
  ],
  { error: 'content must be a string or an array of text parts' },
);

const messageItem = z.object({
  type: z.literal('message').optional(),
  id: z.string().optional(),
  status: z.string().optional(),
  role: z.enum(['system', 'developer', 'user', 'assistant'], {
    error: 'role must be system, developer, user or assistant',
  }),
  content: textContent,
});

const functionCallItem = z.object({
  type: z.literal('function_call'),
  id: z.string().optional(),
  status: z.string().optional(),
  call_id: z.string().min(1),
  name: z.string().min(1),
  arguments: z.string(),
});

const functionCallOutputItem = z.object({
  type: z.literal('function_call_output'),
  id: z.string().optional(),
  status: z.string().optional(),
  call_id: z.string().min(1),
  output: textContent,
});

/** An input item, told apart by `type` (absent: a message, as OpenAI's easy input form has it). */
const inputItem = z.unknown().transform((v, ctx) => {
  const type = v !== null && typeof v === 'object' ? (v as { type?: unknown }).type : undefined;
  const schema =
    type === undefined || type === 'message'
      ? messageItem
      : type === 'function_call'
        ? functionCallItem
        : type === 'function_call_output'
          ? functionCallOutputItem
          : undefined;
  if (schema === undefined) {
    ctx.addIssue({
      code: 'custom',
      message: `input items of type ${JSON.stringify(type)} are not supported (message, function_call, function_call_output are)`,
    });
    return z.NEVER;
  }
  const r = schema.safeParse(v);
  if (!r.success) {
    for (const i of r.error.issues) ctx.addIssue({ ...i, code: 'custom', path: i.path, message: i.message });
    return z.NEVER;
  }
  return r.data as
    | z.infer<typeof messageItem>
    | z.infer<typeof functionCallItem>
    | z.infer<typeof functionCallOutputItem>;
});
export type ResponseInputItem = z.output<typeof inputItem>;
const inputItems = z.array(inputItem).min(1, 'input must not be empty');

/** A function tool in the Responses form (flat: no `function` wrapper). */
const tool = z.object({
  type: z.literal('function', { error: 'only function tools are supported' }),
  name: z.string().regex(/^[a-zA-Z0-9_-]{1,64}$/, 'a function name is 1-64 of a-z, A-Z, 0-9, _ and -'),
  description: z.string().nullish(),
  parameters: z.record(z.string(), z.unknown()).nullish(),
  strict: z.boolean().nullish(),
});

const format = z.discriminatedUnion(
  'type',
  [
    z.object({ type: z.literal('text') }),
    z.object({ type: z.literal('json_object') }),
    z.object({
      type: z.literal('json_schema'),
      name: z.string().regex(/^[a-zA-Z0-9_-]{1,64}$/, 'name must be 1-64 of a-z, A-Z, 0-9, _ and -'),
      description: z.string().optional(),
      schema: z.union([z.record(z.string(), z.unknown()), z.boolean()]).optional(),
      strict: z.boolean().nullish(),
    }),
  ],
  { error: 'text.format.type must be text, json_object or json_schema' },
);

const LOGPROBS = 'message.output_text.logprobs';
const wantsLogprobs = (b: { include?: string[] | null; top_logprobs?: number | null }) =>
  b.include?.includes(LOGPROBS) === true || (b.top_logprobs ?? 0) > 0;

const { max_tokens: _mt, n: _n, stream_options: _so, response_format: _rf, ...shared } = sampling;

export const responsesSchema = z
  .object({
    ...shared,
    // a string, or items (each item's issues keep their path: input[<i>].<field>)
    input: z
      .union([z.string(), z.array(z.unknown())], {
        error: 'input must be a string or a non-empty array of input items',
      })
      .transform((v, ctx) => {
        if (typeof v === 'string') return v;
        const r = inputItems.safeParse(v);
        if (r.success) return r.data;
        for (const i of r.error.issues) ctx.addIssue({ code: 'custom', path: i.path, message: i.message });
        return z.NEVER;
      }),
    instructions: z.string().nullish(),
    max_output_tokens: z.number().int().min(1).nullish(),
    text: z.object({ format: format.optional() }).nullish(),
    tools: z.array(tool).max(128).nullish(),
    tool_choice: z
      .union(
        [z.enum(['none', 'auto', 'required']), z.object({ type: z.literal('function'), name: z.string().min(1) })],
        { error: 'tool_choice must be none, auto, required or {"type": "function", "name": …}' },
      )
      .nullish(),
    parallel_tool_calls: z.boolean().nullish(),
    metadata: z.record(z.string(), z.string()).nullish(),
    store: z.boolean().nullish(),
    truncation: z.enum(['auto', 'disabled']).nullish(),
    previous_response_id: z.null({ error: stateless('previous_response_id') }).optional(),
    conversation: z.null({ error: stateless('conversation') }).optional(),
    background: z
      .literal(false, { error: 'background responses are not supported: this server keeps no responses' })
      .nullish(),
    // log-probabilities of the output text's tokens: include message.output_text.logprobs, with
    // top_logprobs alternatives (top_logprobs alone asks for them too)
    top_logprobs: z.number().int().min(0).max(MAX_TOP_LOGPROBS).nullish(),
    include: z.array(z.string()).nullish(),
  })
  .superRefine((b, ctx) =>
    checkTools(
      ctx,
      (b.tools ?? []).map((t) => t.name),
      b.tool_choice,
      [
        [['text', 'format'], b.text?.format != null && b.text.format.type !== 'text'],
        [['grammar'], b.grammar != null],
        [[b.include?.includes(LOGPROBS) ? 'include' : 'top_logprobs'], wantsLogprobs(b)],
      ],
    ),
  );
export type ResponsesRequest = z.output<typeof responsesSchema>;

const partsText = (c: z.infer<typeof textContent>): string =>
  typeof c === 'string' ? c : c.map((p) => p.text).join('\n');

/**
 * The same request as a chat completion: instructions first as a system message, input items as
 * messages; consecutive function_call items are one assistant turn with those tool calls, and a
 * function_call_output is that call's tool message.
 */
export function responsesToChat(b: ResponsesRequest): ChatCompletionRequest {
  type Msg = ChatCompletionRequest['messages'][number];
  const messages: Msg[] = [];
  if (b.instructions != null) messages.push({ role: 'system', content: b.instructions });
  const items: ResponseInputItem[] = typeof b.input === 'string' ? [{ role: 'user', content: b.input }] : b.input;
  for (const it of items) {
    if (it.type === 'function_call') {
      const call = { id: it.call_id, type: 'function' as const, function: { name: it.name, arguments: it.arguments } };
      const last = messages.at(-1);
      if (last?.role === 'assistant' && last.tool_calls) last.tool_calls.push(call);
      else messages.push({ role: 'assistant', content: null, tool_calls: [call] });
    } else if (it.type === 'function_call_output')
      messages.push({ role: 'tool', tool_call_id: it.call_id, content: partsText(it.output) });
    else messages.push({ role: it.role, content: partsText(it.content) });
  }
  const f = b.text?.format;
  const tc = b.tool_choice;
  return {
    model: b.model,
    messages,
    max_completion_tokens: b.max_output_tokens,
    temperature: b.temperature,
    top_p: b.top_p,
    seed: b.seed,
    stop: b.stop,
    stream: b.stream,
    presence_penalty: b.presence_penalty,
    frequency_penalty: b.frequency_penalty,
    logit_bias: b.logit_bias,
    user: b.user,
    top_k: b.top_k,
    min_p: b.min_p,
    repetition_penalty: b.repetition_penalty,
    grammar: b.grammar,
    response_format:
      f === undefined
        ? undefined
        : f.type === 'json_schema'
          ? {
              type: 'json_schema',
              json_schema: { name: f.name, description: f.description, schema: f.schema, strict: f.strict },
            }
          : { type: f.type },
    tools: b.tools?.map((t) => ({
      type: 'function' as const,
      function: {
        name: t.name,
        ...(t.description != null ? { description: t.description } : {}),
        ...(t.parameters != null ? { parameters: t.parameters } : {}),
        strict: t.strict,
      },
    })),
    tool_choice: typeof tc === 'object' && tc !== null ? { type: 'function', function: { name: tc.name } } : tc,
    parallel_tool_calls: b.parallel_tool_calls,
    logprobs: wantsLogprobs(b),
    top_logprobs: b.top_logprobs,
  };
}
