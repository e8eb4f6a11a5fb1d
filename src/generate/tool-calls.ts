/**
 * Tool calls for any model (OpenAI's `tools`), the generic way llama.cpp's server also offers for
 * chat templates without a tool format of their own: the tools are described to the model in a
 * system message, and its answer is constrained by a grammar to one JSON object,
 *
 *   {"tool_calls": [{"name": "<tool>", "arguments": {…}}, …]}     to call tools, or
 *   {"response": "…"}                                             to answer in words (choice auto),
 *
 * each call's `arguments` following its tool's `parameters` schema (grammar/json-schema.ts). The
 * HTTP layer (http/tool-wire.ts) turns the object into OpenAI's `tool_calls` or `content`.
 */
import { BitNetError, isBitNetError } from '../errors.ts';
import { CHAR_RULE, STRING_RULE, WS_RULE } from './grammar/json-grammar.ts';
import { gbnfLiteral, gbnfText, jsonSchemaRules } from './grammar/json-schema.ts';

export interface ToolSpec {
  name: string;
  description?: string;
  /** A JSON schema of the arguments object; absent: any object. */
  parameters?: unknown;
}

/** auto: a call or an answer; required: at least one call (of `only`, when named). */
export interface ToolChoice {
  mode: 'auto' | 'required';
  /** Only this tool may be called (OpenAI's named tool_choice). */
  only?: string;
  /** More than one call in an answer (OpenAI's parallel_tool_calls, default true). */
  parallel: boolean;
}

/** What the model answered. */
export type ToolAnswer = { calls: { name: string; arguments: unknown }[] } | { response: string };

const ANY_OBJECT = { type: 'object' };

/**
 * The grammar of an answer. A tool's parameters schema that cannot be converted throws the
 * converter's error with `param` naming the tool (`tools[i].function.parameters`).
 */
export function toolCallGbnf(tools: readonly ToolSpec[], choice: ToolChoice): string {
  // every tool's schema is converted (a bad one fails even when tool_choice names another)
  const { exprs, rules } = jsonSchemaRules(
    tools.map((t) => t.parameters ?? ANY_OBJECT),
    (i, e) => {
      if (!isBitNetError(e)) throw e;
      throw new BitNetError(e.kind, e.code, `tools[${i}] (${tools[i].name}): ${e.message}`, {
        ...e.details,
        param: `tools[${i}].function.parameters`,
      });
    },
  );
  const used = tools.flatMap((t, i) => (choice.only === undefined || t.name === choice.only ? [i] : []));
  for (const [name, body] of [
    ['ws', WS_RULE],
    ['char', CHAR_RULE],
    ['string', STRING_RULE],
  ])
    if (!rules.has(name)) rules.set(name, body);
  const key = (k: string) => `${gbnfLiteral(JSON.stringify(k))} ws ":" ws`;
  const call = used
    .map(
      (i) =>
        `"{" ws ${key('name')} ${gbnfLiteral(JSON.stringify(tools[i].name))} ws "," ws ${key('arguments')} (${exprs[i]}) ws "}"`,
    )
    .join(' | ');
  rules.set('tc-call', call);
  rules.set(
    'tc-calls',
    `"{" ws ${key('tool_calls')} "[" ws tc-call ws ${choice.parallel ? '("," ws tc-call ws)* ' : ''}"]" ws "}"`,
  );
  if (choice.mode === 'auto') rules.set('tc-response', `"{" ws ${key('response')} string ws "}"`);
  return gbnfText(choice.mode === 'auto' ? 'root ::= tc-calls | tc-response' : 'root ::= tc-calls', rules);
}

/** The system message that tells the model about the tools and the answer's form. */
export function toolSystemPrompt(tools: readonly ToolSpec[], choice: ToolChoice): string {
  const listed = (choice.only === undefined ? tools : tools.filter((t) => t.name === choice.only)).map((t) =>
    JSON.stringify({ name: t.name, description: t.description ?? '', parameters: t.parameters ?? ANY_OBJECT }),
  );
  const call = choice.only === undefined ? 'a tool' : `the tool ${choice.only}`;
  const calls = choice.parallel
    ? `{"tool_calls": [{"name": "<tool name>", "arguments": {<arguments>}}]} (one entry per call)`
    : `{"tool_calls": [{"name": "<tool name>", "arguments": {<arguments>}}]} (one call)`;
  const how =
    choice.mode === 'auto'
      ? `To call a tool, answer with ${calls}. To answer directly instead, answer with {"response": "<your answer>"}.`
      : `Answer by calling ${call}: ${calls}.`;
  return `You can use these tools (each one's arguments follow its JSON schema):\n${listed.join('\n')}\n\n${how} A tool's result comes back in a later message.`;
}

/** The answer in a finished text, or undefined when it is not one (a text cut by max_tokens). */
export function parseToolAnswer(text: string): ToolAnswer | undefined {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (v === null || typeof v !== 'object') return undefined;
  const o = v as Record<string, unknown>;
  if (typeof o.response === 'string') return { response: o.response };
  if (!Array.isArray(o.tool_calls)) return undefined;
  return {
    calls: o.tool_calls.map((c: { name: string; arguments: unknown }) => ({ name: c.name, arguments: c.arguments })),
  };
}
