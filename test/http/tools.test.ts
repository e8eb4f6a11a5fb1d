// Tool calling (OpenAI's tools / tool_choice / parallel_tool_calls) over the generic JSON answer:
// the answer's grammar, the conversation written for any chat template, and the wire format of
// tool calls, streamed or not, with the OpenAI SDK, and the 400s.
import type OpenAI from 'openai';
import { beforeAll, describe, expect, it } from 'vitest';
import type { BitNetModel } from '../../src/api/bitnet-model.ts';
import { parseGbnf } from '../../src/generate/grammar/gbnf.ts';
import { GrammarMatcher } from '../../src/generate/grammar/matcher.ts';
import { parseToolAnswer, toolCallGbnf, toolSystemPrompt } from '../../src/generate/tool-calls.ts';
import { createApp } from '../../src/http/app.ts';
import { CallStreamer, ReplyStreamer, toolChatMessages, toolChoiceMessage } from '../../src/http/tool-wire.ts';
import { valid } from '../helpers/schema-instances.ts';
import { noWhitespaceBias, openAIFor, post, sseData, tinyModel } from './helpers.ts';

const enc = new TextEncoder();
const headers = { 'content-type': 'application/json' };

const WEATHER = {
  type: 'object',
  properties: { city: { type: 'string', maxLength: 8 }, unit: { enum: ['c', 'f'] } },
  required: ['city', 'unit'],
  additionalProperties: false,
};
const ADD = { type: 'object', properties: { a: { type: 'integer' }, b: { type: 'integer' } }, required: ['a', 'b'] };
const TOOLS = [
  { type: 'function', function: { name: 'get_weather', description: 'Weather in a city', parameters: WEATHER } },
  { type: 'function', function: { name: 'add', parameters: ADD } },
];
const SPECS = [
  { name: 'get_weather', parameters: WEATHER },
  { name: 'add', parameters: ADD },
];

let model: BitNetModel;
let app: ReturnType<typeof createApp>;
/** logit_bias that bans whitespace-only tokens: a random model otherwise spends its tokens on indentation. */
let noSpace: Record<string, number>;

beforeAll(async () => {
  // room for the tools' system message (~600 tokens here)
  model = await tinyModel({ ctx: 1024 });
  app = createApp({ model, modelId: 'm' });
  noSpace = noWhitespaceBias(model);
});

const call = (body: unknown) => app.request(...post('/v1/chat/completions', body, headers));
const ask = (extra: Record<string, unknown>) => ({
  messages: [{ role: 'user', content: 'what is the weather in Paris?' }],
  tools: TOOLS,
  max_tokens: 120,
  logit_bias: noSpace,
  ...extra,
});

const takes = (gbnf: string, text: string) => {
  const m = new GrammarMatcher(parseGbnf(gbnf));
  return m.push(enc.encode(text)) && m.accepting();
};

describe('the answer grammar', () => {
  it('auto: calls of the listed tools with valid arguments, or a reply; required, named and single-call forms', () => {
    const auto = toolCallGbnf(SPECS, { mode: 'auto', parallel: true });
    const ok = [
      '{"tool_calls":[{"name":"get_weather","arguments":{"city":"Paris","unit":"c"}}]}',
      '{"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": -2}}, {"name": "add", "arguments": {"a": 3, "b": 4}}]}',
      '{"response":"It is sunny."}',
    ];
    for (const t of ok) expect(takes(auto, t), t).toBe(true);
    const bad = [
      '{"tool_calls":[]}',
      '{"tool_calls":[{"name":"nope","arguments":{}}]}',
      '{"tool_calls":[{"name":"get_weather","arguments":{"city":"Paris"}}]}',
      '{"tool_calls":[{"name":"get_weather","arguments":{"city":"Parisienne","unit":"c"}}]}',
      '{"tool_calls":[{"name":"add","arguments":{"a":1.5,"b":2}}]}',
      '{"response":1}',
      'It is sunny.',
    ];
    for (const t of bad) expect(takes(auto, t), t).toBe(false);
    const required = toolCallGbnf(SPECS, { mode: 'required', parallel: true });
    expect(takes(required, ok[0])).toBe(true);
    expect(takes(required, ok[2])).toBe(false);
    const named = toolCallGbnf(SPECS, { mode: 'required', only: 'add', parallel: true });
    expect(takes(named, ok[1])).toBe(true);
    expect(takes(named, ok[0])).toBe(false);
    const single = toolCallGbnf(SPECS, { mode: 'auto', parallel: false });
    expect(takes(single, ok[0])).toBe(true);
    expect(takes(single, ok[1])).toBe(false);
    // a tool without parameters takes any object
    expect(
      takes(
        toolCallGbnf([{ name: 'ping' }], { mode: 'required', parallel: true }),
        '{"tool_calls":[{"name":"ping","arguments":{"x":[1]}}]}',
      ),
    ).toBe(true);
  });

  it('parses answers; a cut one is none', () => {
    expect(parseToolAnswer('{"response":"hi"}')).toEqual({ response: 'hi' });
    expect(parseToolAnswer('{"tool_calls":[{"name":"add","arguments":{"a":1,"b":2}}]}')).toEqual({
      calls: [{ name: 'add', arguments: { a: 1, b: 2 } }],
    });
    expect(parseToolAnswer('{"tool_calls":[{"name":"add"')).toBeUndefined();
  });

  it('a reply streams as it is generated, however the answer is cut into pieces', () => {
    const reply = 'Say "hi" \\ then\nwait. é 😀 done';
    const answer = `{ "response" :${JSON.stringify(reply).replace('é', '\\u00e9').replace('😀', '\\ud83d\\ude00')}}`;
    for (let cut1 = 0; cut1 <= answer.length; cut1 += 3)
      for (let cut2 = cut1; cut2 <= answer.length; cut2 += 5) {
        const s = new ReplyStreamer();
        const out = [answer.slice(0, cut1), answer.slice(cut1, cut2), answer.slice(cut2)].map((p) => s.push(p));
        expect(out.join(''), `${cut1} ${cut2}`).toBe(reply);
        expect(s.isReply).toBe(true);
        // no piece holds half a surrogate pair
        for (const p of out) expect(p).not.toMatch(/[\ud800-\udbff]$/);
      }
    const calls = new ReplyStreamer();
    expect(calls.push('{"tool_calls":[{"name":"add","arguments":{"a":"response"}}]}')).toBe('');
    expect(calls.isReply).toBe(false);
  });

  it('calls stream as they are written, however the answer is cut into pieces; cut answers keep their calls so far', () => {
    const args = ['{ "city" : "Pa\\"ris}]", "n": [1, {"x": "]"}] }', '{}', '42', '"a\\\\"', 'true'];
    const names = ['get_weather', 'add', 'x-1', 'y_2', 'z'];
    const answer = `{"tool_calls": [${args.map((a, i) => `{"name": "${names[i]}",\n "arguments": ${a}}`).join(' ,\n')}]}`;
    expect(parseToolAnswer(answer)).toBeDefined();
    for (let cut1 = 0; cut1 <= answer.length; cut1 += 3)
      for (let cut2 = cut1; cut2 <= answer.length; cut2 += 7) {
        const s = new CallStreamer();
        const pieces = [answer.slice(0, cut1), answer.slice(cut1, cut2), answer.slice(cut2)].flatMap((p) => s.push(p));
        expect(pieces.filter((p) => p.kind === 'start').map((p) => p.kind === 'start' && p.call.name)).toEqual(names);
        const joined = names.map((_, i) =>
          pieces
            .filter((p) => p.kind === 'args' && p.index === i)
            .map((p) => (p.kind === 'args' ? p.text : ''))
            .join(''),
        );
        expect(joined, `${cut1} ${cut2}`).toEqual(args);
        expect(s.calls.every((c) => c.complete)).toBe(true);
      }
    expect(new CallStreamer().push('{"response": "{\\"tool_calls\\": []}"}')).toEqual([]);
    // cut by max_tokens: the calls so far, the last one's arguments cut; before any name, the raw text
    const outcome = (text: string) => ({ text, finishReason: 'length' }) as never;
    const cut = toolChoiceMessage(outcome(answer.slice(0, answer.indexOf('42') + 1)));
    expect(cut.content).toBeNull();
    expect(cut.finishReason).toBe('length');
    expect(cut.toolCalls?.map((c) => c.function.name)).toEqual(['get_weather', 'add', 'x-1']);
    expect(cut.toolCalls?.map((c) => c.function.arguments)).toEqual([args[0], args[1], '4']);
    expect(toolChoiceMessage(outcome('{"tool_calls": [{"na'))).toEqual({
      content: '{"tool_calls": [{"na',
      finishReason: 'length',
    });
  });

  it('the conversation: tools in the system message, calls and results as text any template renders', () => {
    const system = toolSystemPrompt(SPECS, { mode: 'auto', parallel: true });
    expect(system).toContain('"name":"get_weather"');
    expect(system).toContain('{"response": "<your answer>"}');
    const msgs = toolChatMessages(
      [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'weather?' },
        {
          role: 'assistant',
          content: null,
          tool_calls: [
            {
              id: 'call_1',
              type: 'function',
              function: { name: 'get_weather', arguments: '{"city":"Paris","unit":"c"}' },
            },
          ],
        },
        { role: 'tool', tool_call_id: 'call_1', content: '21 C' },
      ],
      system,
    );
    expect(msgs.map((m) => m.role)).toEqual(['system', 'user', 'assistant', 'user']);
    expect(msgs[0].content).toBe(`Be brief.\n\n${system}`);
    expect(JSON.parse(msgs[2].content)).toEqual({
      tool_calls: [{ name: 'get_weather', arguments: { city: 'Paris', unit: 'c' } }],
    });
    expect(msgs[3].content).toBe('Result of the tool call call_1 (get_weather):\n21 C');
    expect(toolChatMessages([{ role: 'user', content: 'x' }], 'TOOLS')[0]).toEqual({
      role: 'system',
      content: 'TOOLS',
    });
  });
});

describe('tool calls over HTTP', () => {
  /** The calls of a finished choice, checked against the tools' schemas. */
  function checkCalls(choice: { finish_reason: string; message: Record<string, unknown> }, only?: string): number {
    if (choice.finish_reason !== 'tool_calls') return 0;
    expect(choice.message.content).toBeNull();
    const calls = choice.message.tool_calls as {
      id: string;
      type: string;
      function: { name: string; arguments: string };
    }[];
    expect(calls.length).toBeGreaterThan(0);
    for (const c of calls) {
      expect(c.id).toMatch(/^call_[0-9a-f]{24}$/);
      expect(c.type).toBe('function');
      if (only) expect(c.function.name).toBe(only);
      const schema = c.function.name === 'add' ? ADD : WEATHER;
      expect(valid(schema, JSON.parse(c.function.arguments)), c.function.arguments).toBe(true);
    }
    return calls.length;
  }

  it('required and named: every finished choice calls a tool, with arguments its schema accepts', async () => {
    let called = 0;
    for (const tool_choice of ['required', { type: 'function', function: { name: 'add' } }]) {
      // one call each: a random model, free to, keeps adding calls
      const r = await call(ask({ tool_choice, n: 4, seed: 7, parallel_tool_calls: false }));
      expect(r.status).toBe(200);
      const j = await r.json();
      for (const c of j.choices) {
        expect(['tool_calls', 'length']).toContain(c.finish_reason);
        called += checkCalls(c, typeof tool_choice === 'object' ? 'add' : undefined);
      }
    }
    expect(called).toBeGreaterThan(0);
  });

  it('auto: a call or a reply; parallel_tool_calls false: one call at most; tool_choice none: plain text', async () => {
    const seen = new Set<string>();
    for (const parallel of [true, false]) {
      const j = await (await call(ask({ n: 6, seed: 3, parallel_tool_calls: parallel }))).json();
      for (const c of j.choices) {
        seen.add(c.finish_reason);
        if (c.finish_reason === 'stop') expect(typeof c.message.content).toBe('string');
        const n = checkCalls(c);
        if (!parallel) expect(n).toBeLessThanOrEqual(1);
      }
    }
    expect(seen.has('tool_calls') || seen.has('stop')).toBe(true);
    // a reply streams in pieces, and they add up to the unstreamed content
    let streamedReply = false;
    for (let seed = 1; seed <= 12 && !streamedReply; seed++) {
      const body = ask({ seed, max_tokens: 60 });
      const whole = (await (await call(body)).json()).choices[0];
      const content: string = whole.message.content ?? '';
      // skip calls, short replies, and calls cut by max_tokens (their raw JSON, sent whole)
      if (whole.finish_reason === 'tool_calls' || content.length < 5 || content.startsWith('{')) continue;
      const pieces = sseData(await (await call({ ...body, stream: true })).text())
        .filter((d) => d !== '[DONE]')
        .map((d) => JSON.parse(d).choices[0].delta.content)
        .filter((t) => typeof t === 'string' && t !== '');
      expect(pieces.join('')).toBe(whole.message.content);
      expect(pieces.length).toBeGreaterThan(1);
      streamedReply = true;
    }
    expect(streamedReply).toBe(true);
    const none = await (await call(ask({ tool_choice: 'none', max_tokens: 8, seed: 1, logit_bias: {} }))).json();
    expect(none.choices[0].message.tool_calls).toBeUndefined();
    expect(typeof none.choices[0].message.content).toBe('string');
  });

  it('streamed: the role, then each call as it is written (id and name, then its arguments in pieces), then finish_reason tool_calls; the same as unstreamed', async () => {
    const body = ask({ tool_choice: 'required', seed: 11, max_tokens: 200, parallel_tool_calls: false });
    const whole = (await (await call(body)).json()).choices[0];
    const chunks = sseData(await (await call({ ...body, stream: true })).text())
      .filter((d) => d !== '[DONE]')
      .map((d) => JSON.parse(d).choices[0]);
    expect(chunks[0].delta).toEqual({ role: 'assistant', content: '' });
    expect(chunks[chunks.length - 1].finish_reason).toBe(whole.finish_reason);
    expect(whole.finish_reason).toBe('tool_calls');
    {
      type Delta = { index: number; id?: string; type?: string; function: { name?: string; arguments: string } };
      const deltas: Delta[] = chunks.flatMap((c) => c.delta.tool_calls ?? []);
      const wholeCalls: { function: { name: string; arguments: string } }[] = whole.message.tool_calls;
      // per call: a first delta with id, type and name (no arguments yet), then argument pieces
      const firsts = deltas.filter((d) => d.id !== undefined);
      expect(firsts.map((d) => d.index)).toEqual(wholeCalls.map((_, i) => i));
      for (const d of firsts) {
        expect(d.id).toMatch(/^call_[0-9a-f]{24}$/);
        expect([d.type, d.function.arguments]).toEqual(['function', '']);
      }
      expect(firsts.map((d) => d.function.name)).toEqual(wholeCalls.map((c) => c.function.name));
      expect(
        deltas.filter((d) => d.id === undefined).every((d) => d.type === undefined && d.function.name === undefined),
      ).toBe(true);
      const joined = wholeCalls.map((_, i) =>
        deltas
          .filter((d) => d.index === i)
          .map((d) => d.function.arguments)
          .join(''),
      );
      expect(joined).toEqual(wholeCalls.map((c) => c.function.arguments));
      expect(deltas.length).toBeGreaterThan(2 * wholeCalls.length);
    }
    // a reply streams as content
    const reply = ask({ tool_choice: 'none', seed: 2, max_tokens: 6, logit_bias: {} });
    const text = (await (await call(reply)).json()).choices[0].message.content;
    const streamed = sseData(await (await call({ ...reply, stream: true })).text())
      .filter((d) => d !== '[DONE]')
      .map((d) => JSON.parse(d).choices[0].delta.content ?? '')
      .join('');
    expect(streamed).toBe(text);
  });

  it('the OpenAI SDK: a call, its result sent back, and the next turn', async () => {
    const client = openAIFor(app);
    const tools = TOOLS as OpenAI.Chat.Completions.ChatCompletionTool[];
    let first: OpenAI.Chat.Completions.ChatCompletion | undefined;
    for (let seed = 1; seed <= 6 && first?.choices[0].finish_reason !== 'tool_calls'; seed++)
      first = await client.chat.completions.create({
        model: 'm',
        messages: [{ role: 'user', content: 'weather in Paris?' }],
        tools,
        tool_choice: 'required',
        parallel_tool_calls: false,
        max_tokens: 160,
        seed,
        logit_bias: noSpace,
      });
    const msg = first!.choices[0].message;
    expect(msg.tool_calls?.length).toBeGreaterThan(0);
    const next = await client.chat.completions.create({
      model: 'm',
      messages: [
        { role: 'user', content: 'weather in Paris?' },
        msg,
        ...msg.tool_calls!.map((c) => ({ role: 'tool' as const, tool_call_id: c.id, content: '21 C and sunny' })),
      ],
      tools,
      max_tokens: 16,
      seed: 1,
    });
    expect(next.choices[0].message.role).toBe('assistant');
  });

  it('refuses what it cannot honour, naming the field', async () => {
    const cases: [Record<string, unknown>, string, string][] = [
      [ask({ tool_choice: { type: 'function', function: { name: 'nope' } } }), 'INVALID_REQUEST', 'tool_choice'],
      [{ messages: [{ role: 'user', content: 'x' }], tool_choice: 'required' }, 'INVALID_REQUEST', 'tool_choice'],
      [ask({ tools: [TOOLS[0], TOOLS[0]] }), 'INVALID_REQUEST', 'tools'],
      [ask({ response_format: { type: 'json_object' } }), 'INVALID_REQUEST', 'response_format'],
      [ask({ grammar: 'root ::= "a"' }), 'INVALID_REQUEST', 'grammar'],
      [ask({ logprobs: true }), 'INVALID_REQUEST', 'logprobs'],
      [ask({ tools: [{ type: 'retrieval' }] }), 'INVALID_REQUEST', 'tools[0].type'],
      [ask({ tools: [{ type: 'function', function: { name: 'a b' } }] }), 'INVALID_REQUEST', 'tools[0].function.name'],
      [
        ask({
          tools: [
            {
              type: 'function',
              function: {
                name: 'f',
                parameters: { type: 'object', properties: { s: { type: 'integer', multipleOf: 2 } } },
              },
            },
          ],
        }),
        'UNSUPPORTED_JSON_SCHEMA',
        'tools[0].function.parameters',
      ],
      [ask({ messages: [{ role: 'tool', content: '1' }] }), 'INVALID_REQUEST', 'messages[0].tool_call_id'],
      [
        ask({
          messages: [
            {
              role: 'user',
              content: 'x',
              tool_calls: [{ id: 'c', type: 'function', function: { name: 'add', arguments: '{}' } }],
            },
          ],
        }),
        'INVALID_REQUEST',
        'messages[0].tool_calls',
      ],
    ];
    for (const [body, code, param] of cases) {
      const r = await call(body);
      expect(r.status, JSON.stringify(body).slice(0, 200)).toBe(400);
      expect((await r.json()).error, JSON.stringify(body).slice(0, 200)).toMatchObject({ code, param });
    }
  });
});
