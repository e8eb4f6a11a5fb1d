/**
 * Request schemas (zod). The OpenAI routes accept the OpenAI field names and strip fields they
 * do not know (clients send extras such as `user` or `store`); fields that would change the
 * answer in ways this server cannot honour (best_of > 1, tools, suffix) are refused with a 400
 * that names the field. The native /v1/generate body mirrors GenerationConfig and, like
 * it, refuses unknown keys.
 */
import { z } from 'zod';
import { BitNetError } from '../errors.ts';
import { MAX_TOP_LOGPROBS } from '../generate/logprobs.ts';

const unsupported = (what: string) => `${what} is not supported by this server`;

/** OpenAI's `stop`: one string or up to 4 (checked apart from the type, so that 5 says so). */
const stop = z
  .union([z.string().min(1), z.array(z.string().min(1))], {
    error: 'stop must be a non-empty string or an array of non-empty strings',
  })
  .refine((s) => typeof s === 'string' || s.length <= 4, {
    error: (i) => `at most 4 stop sequences are allowed (got ${(i.input as string[]).length})`,
  })
  .nullish();

/**
 * OpenAI's `seed` is a signed 64-bit integer; the sampler's seed is a u64 (GenerationConfig,
 * /v1/generate). A negative seed is taken as its two's complement, the reduction the PRNG
 * contract documents (src/generate/prng.ts: -1 means 2^64 − 1), so `seed: -1` here samples like
 * `"seed": "18446744073709551615"` on /v1/generate, and the same negative seed always gives the
 * same text. JSON numbers are exact only up to 2^53, hence the range.
 */
const openAISeed = z
  .number()
  .int()
  .min(-Number.MAX_SAFE_INTEGER)
  .max(Number.MAX_SAFE_INTEGER)
  .transform((n) => (n < 0 ? BigInt.asUintN(64, BigInt(n)) : n));

/** Token id (as a decimal string, JSON's only key type) → bias in [-100, 100]. */
const logitBias = z.record(
  z.string().regex(/^(0|[1-9]\d{0,9})$/, 'logit_bias keys must be token ids (decimal integers)'),
  z.number().min(-100).max(100),
);

/** Choices per prompt (`n`), prompts per completions request, and choices per request. */
export const MAX_N = 16;
export const MAX_PROMPTS = 16;
export const MAX_CHOICES = 64;

/** How many prompts a completions `prompt` holds (a list of strings or of id lists: one each). */
export function promptCount(p: string | string[] | number[] | number[][]): number {
  return typeof p === 'string' || typeof p[0] === 'number' ? 1 : p.length;
}

/** Sampling fields shared by /v1/chat/completions and /v1/completions. */
export const sampling = {
  model: z.string().min(1).optional(),
  max_tokens: z.number().int().min(1).nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().min(0).max(1).nullish(),
  seed: openAISeed.nullish(),
  stop,
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().optional() }).nullish(),
  // choices per prompt (seed + i for choice i when a seed is given); one after another, or at once
  // where the backend batches them (cuda)
  n: z
    .number()
    .int()
    .min(1)
    .max(MAX_N, { error: `n must be at most ${MAX_N}` })
    .nullish(),
  presence_penalty: z.number().min(-2).max(2).nullish(),
  frequency_penalty: z.number().min(-2).max(2).nullish(),
  logit_bias: logitBias.nullish(),
  user: z.string().nullish(),
  // llama.cpp-style extensions
  top_k: z.number().int().min(0).nullish(),
  min_p: z.number().min(0).max(1).nullish(),
  repetition_penalty: z.number().gt(0).max(10).nullish(),
  // llama.cpp's server: a GBNF grammar the output must match (src/generate/grammar/gbnf.ts)
  grammar: z.string().min(1, 'grammar must be a non-empty GBNF grammar').nullish(),
  // json_object: JSON mode (src/generate/json-mode.ts); json_schema: a grammar from the schema
  // (src/generate/grammar/json-schema.ts). OpenAI's chat field; on completions an extension.
  response_format: z
    .discriminatedUnion(
      'type',
      [
        z.object({ type: z.literal('text') }),
        z.object({ type: z.literal('json_object') }),
        z.object({
          type: z.literal('json_schema'),
          json_schema: z.object({
            name: z.string().regex(/^[a-zA-Z0-9_-]{1,64}$/, 'json_schema.name must be 1-64 of a-z, A-Z, 0-9, _ and -'),
            description: z.string().optional(),
            // absent: any JSON value
            schema: z.union([z.record(z.string(), z.unknown()), z.boolean()]).optional(),
            strict: z.boolean().nullish(),
          }),
        }),
      ],
      { error: 'response_format.type must be text, json_object or json_schema' },
    )
    .nullish(),
};

const textPart = z.object({ type: z.literal('text'), text: z.string() });

// An assistant message's content may be null or absent (OpenAI: it is optional when the message
// carries tool calls or a refusal); it is then an empty turn. Other roles must have content.
const toolCall = z.object({
  id: z.string().min(1),
  type: z.literal('function'),
  function: z.object({ name: z.string().min(1), arguments: z.string() }),
});

const message = z
  .object({
    role: z.enum(['system', 'developer', 'user', 'assistant', 'tool'], {
      error: 'role must be system, developer, user, assistant or tool',
    }),
    content: z
      .union([z.string(), z.array(textPart, { error: 'only text content parts are supported' })], {
        error: 'content must be a string or an array of text parts',
      })
      .nullish(),
    name: z.string().optional(),
    // an assistant turn that called tools; a tool turn answers one of those calls
    tool_calls: z.array(toolCall).nullish(),
    tool_call_id: z.string().nullish(),
  })
  .superRefine((m, ctx) => {
    if (m.content == null && m.role !== 'assistant')
      ctx.addIssue({ code: 'custom', path: ['content'], message: `content is required in a ${m.role} message` });
    if (m.role === 'tool' && !m.tool_call_id)
      ctx.addIssue({ code: 'custom', path: ['tool_call_id'], message: 'a tool message needs tool_call_id' });
    if (m.tool_calls != null && m.role !== 'assistant')
      ctx.addIssue({ code: 'custom', path: ['tool_calls'], message: 'only assistant messages carry tool_calls' });
  });

/** OpenAI's function tools (tool-wire.ts); a name as OpenAI allows them. */
const tool = z.object({
  type: z.literal('function', { error: 'only function tools are supported' }),
  function: z.object({
    name: z.string().regex(/^[a-zA-Z0-9_-]{1,64}$/, 'a function name is 1-64 of a-z, A-Z, 0-9, _ and -'),
    description: z.string().optional(),
    parameters: z.record(z.string(), z.unknown()).optional(),
    strict: z.boolean().nullish(),
  }),
});

/**
 * The tool checks of the chat and Responses routes: each tool listed once, a tool_choice other than
 * none only with tools, a named one among them; and, with tools in use, none of `conflicts` (a
 * field path and whether it is set): the answer's form is the tools' grammar, so no second
 * constraint, and no per-token logprobs of its JSON.
 */
export function checkTools(
  ctx: z.RefinementCtx,
  names: readonly string[],
  choice: 'none' | 'auto' | 'required' | { name: string } | null | undefined,
  conflicts: readonly [path: string[], set: boolean][],
): void {
  const issue = (path: string[], message: string) => ctx.addIssue({ code: 'custom', path, message });
  const dup = names.find((n, i) => names.indexOf(n) !== i);
  if (dup !== undefined) issue(['tools'], `the tool ${dup} is listed twice`);
  if (choice != null && choice !== 'none' && names.length === 0) issue(['tool_choice'], 'tool_choice needs tools');
  if (typeof choice === 'object' && choice !== null && !names.includes(choice.name))
    issue(['tool_choice'], `tool_choice names ${choice.name}, which is not in tools`);
  if (names.length === 0 || choice === 'none') return;
  for (const [path, set] of conflicts) {
    if (!set) continue;
    const field = path.join('.');
    issue(
      path,
      field === 'logprobs' || field === 'include' || field === 'top_logprobs'
        ? 'logprobs are not supported with tools'
        : `${field} cannot be used with tools`,
    );
  }
}

export const chatCompletionSchema = z
  .object({
    ...sampling,
    messages: z.array(message).min(1),
    max_completion_tokens: z.number().int().min(1).nullish(),
    logprobs: z.boolean().nullish(),
    top_logprobs: z.number().int().min(0).max(MAX_TOP_LOGPROBS).nullish(),
    tools: z.array(tool).max(128).nullish(),
    tool_choice: z
      .union(
        [
          z.enum(['none', 'auto', 'required']),
          z.object({ type: z.literal('function'), function: z.object({ name: z.string() }) }),
        ],
        { error: 'tool_choice must be none, auto, required or {"type": "function", "function": {"name": …}}' },
      )
      .nullish(),
    parallel_tool_calls: z.boolean().nullish(),
    // OpenAI's deprecated function calling: refused by name rather than ignored (the answer would
    // silently be plain text); `tools` is the same feature
    functions: z.never({ error: 'functions is deprecated and not supported here: use tools' }).optional(),
    function_call: z.never({ error: 'function_call is deprecated and not supported here: use tool_choice' }).optional(),
  })
  .refine((b) => b.top_logprobs == null || b.logprobs === true, {
    error: 'top_logprobs needs logprobs: true',
    path: ['top_logprobs'],
  })
  .superRefine((b, ctx) => {
    const tc = b.tool_choice;
    checkTools(
      ctx,
      (b.tools ?? []).map((t) => t.function.name),
      typeof tc === 'object' && tc !== null ? { name: tc.function.name } : tc,
      [
        [['response_format'], b.response_format != null && b.response_format.type !== 'text'],
        [['grammar'], b.grammar != null],
        [['logprobs'], b.logprobs === true],
      ],
    );
  });
export type ChatCompletionRequest = z.infer<typeof chatCompletionSchema>;

export const completionSchema = z
  .object({
    ...sampling,
    prompt: z.union(
      [
        z.string(),
        z.array(z.string()).min(1).max(MAX_PROMPTS),
        z.array(z.number().int().min(0)).min(1),
        z
          .array(z.array(z.number().int().min(0)).min(1))
          .min(1)
          .max(MAX_PROMPTS),
      ],
      { error: `prompt must be a string, token ids, or a list of up to ${MAX_PROMPTS} of either` },
    ),
    // an extension (llama.cpp's server parses special tokens in prompts; so do we unless told not to)
    parse_special: z.boolean().nullish(),
    // 0 scores the prompt only, with echo (how evaluation harnesses ask for a text's log-likelihood)
    max_tokens: z.number().int().min(0).nullish(),
    // the prompt comes back before the completion, and with logprobs its tokens' log-probabilities
    echo: z.boolean().nullish(),
    suffix: z.null({ error: unsupported('suffix') }).optional(),
    best_of: z.literal(1, { error: 'only best_of = 1 is supported' }).nullish(),
    // the legacy format's number of alternatives per token (OpenAI allows up to 5; we, 20)
    logprobs: z.number().int().min(0).max(MAX_TOP_LOGPROBS).nullish(),
  })
  .refine((b) => b.max_tokens !== 0 || b.echo === true, {
    error: 'max_tokens 0 needs echo: true (it scores the prompt and generates nothing)',
    path: ['max_tokens'],
  })
  .refine((b) => promptCount(b.prompt) * (b.n ?? 1) <= MAX_CHOICES, {
    error: `prompts × n must be at most ${MAX_CHOICES}`,
    path: ['n'],
  });
export type CompletionRequest = z.infer<typeof completionSchema>;

/** Seeds up to 2^64−1: JSON numbers up to 2^53, larger ones as decimal strings. */
const seed = z.union([
  z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  z
    .string()
    .regex(/^\d+$/, 'a seed string must be decimal digits')
    .transform((s) => BigInt(s))
    .refine((b) => b < 1n << 64n, 'seed must be below 2^64'),
]);

/** POST /v1/generate: GenerationConfig's fields, plus the prompt as text or token ids. */
export const generateSchema = z
  .object({
    model: z.string().min(1).optional(),
    prompt: z.string().optional(),
    promptIds: z.array(z.number().int().min(0)).min(1).optional(),
    // 0 (score only) needs promptLogprobs, which GenerationConfig checks
    maxNewTokens: z
      .number()
      .int()
      .min(0)
      .max(1 << 20)
      .optional(),
    temperature: z.number().min(0).max(100).optional(),
    topP: z.number().gt(0).max(1).optional(),
    topK: z.number().int().min(0).optional(),
    minP: z.number().min(0).max(1).optional(),
    repetitionPenalty: z.number().gt(0).max(10).optional(),
    presencePenalty: z.number().min(-2).max(2).optional(),
    frequencyPenalty: z.number().min(-2).max(2).optional(),
    logitBias: logitBias.optional(),
    logprobs: z.boolean().optional(),
    topLogprobs: z.number().int().min(0).max(MAX_TOP_LOGPROBS).optional(),
    promptLogprobs: z.boolean().optional(),
    responseFormat: z.enum(['text', 'json_object']).optional(),
    grammar: z.string().optional(),
    jsonSchema: z.union([z.record(z.string(), z.unknown()), z.boolean()]).optional(),
    stopSequences: z.array(z.string().min(1)).optional(),
    seed: seed.optional(),
    skipSpecialTokens: z.boolean().optional(),
    stream: z.boolean().optional(),
  })
  .strict()
  .refine((b) => (b.prompt === undefined) !== (b.promptIds === undefined), {
    error: 'give exactly one of prompt and promptIds',
    path: ['prompt'],
  });
export type GenerateRequest = z.infer<typeof generateSchema>;

/** A field's path as OpenAI writes `param`: `messages[0].content`, `tools[1].function.name`. */
export function paramPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else out += out === '' ? String(seg) : `.${String(seg)}`;
  }
  return out;
}

/**
 * A failed parse → one Config INVALID_REQUEST error naming the fields (→ 400). An unknown key
 * (the strict /v1/generate body) is its own issue whose path is the key, so `param` names it.
 */
export function validationError(error: { issues: readonly z.core.$ZodIssue[] }): BitNetError {
  const issues = error.issues.flatMap((i) => {
    if (i.code === 'unrecognized_keys')
      return i.keys.map((k) => ({ path: paramPath([...i.path, k]), message: 'unknown field' }));
    return [{ path: paramPath(i.path), message: i.message }];
  });
  const first = issues[0];
  const message = issues.map((i) => (i.path ? `${i.path}: ${i.message}` : i.message)).join('; ');
  return BitNetError.Config('INVALID_REQUEST', message || 'invalid request', { param: first?.path || null, issues });
}
