// OpenAI's Responses API (POST /v1/responses): the same generation as the chat route for the same
// conversation, the response object and its event stream as the OpenAI SDK reads them (its
// stream helper checks the events' order and identities), structured outputs, function tools
// with their follow-up turn, and the 400s.
import type OpenAI from 'openai';
import { zodTextFormat } from 'openai/helpers/zod';
import { beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { BitNetModel } from '../../src/api/bitnet-model.ts';
import { createApp } from '../../src/http/app.ts';
import { noWhitespaceBias, openAIFor, post, tinyModel } from './helpers.ts';

const headers = { 'content-type': 'application/json' };

let model: BitNetModel;
let app: ReturnType<typeof createApp>;
let client: OpenAI;
let noSpace: Record<string, number>;

beforeAll(async () => {
  // room for the tools' system message
  model = await tinyModel({ ctx: 1024 });
  app = createApp({ model, modelId: 'm' });
  client = openAIFor(app);
  noSpace = noWhitespaceBias(model);
});

const call = (path: string, body: unknown) => app.request(...post(path, body, headers));
const responses = async (body: Record<string, unknown>) => {
  const r = await call('/v1/responses', body);
  return { status: r.status, body: await r.json() };
};

/** The named events of an SSE body: [event name, data]. */
async function events(r: Response): Promise<[string, ReturnType<typeof JSON.parse>][]> {
  const text = await r.text();
  return text
    .split('\n\n')
    .filter((e) => e.startsWith('event: '))
    .map((e) => {
      const [head, data] = e.split('\n');
      return [head.slice(7), JSON.parse(data.slice(6))];
    });
}

const WEATHER = {
  type: 'object',
  properties: { city: { type: 'string', maxLength: 8 }, unit: { enum: ['c', 'f'] } },
  required: ['city', 'unit'],
  additionalProperties: false,
};
const TOOLS = [
  { type: 'function', name: 'get_weather', description: 'Weather in a city', parameters: WEATHER },
  { type: 'function', name: 'add', parameters: { type: 'object', properties: { a: { type: 'integer' } } } },
];

describe('POST /v1/responses', () => {
  it('generates what the chat route generates for the same conversation, with usage', async () => {
    const conv = [
      { role: 'user', content: 'Hello there' },
      { role: 'assistant', content: 'Hi.' },
      { role: 'user', content: [{ type: 'input_text', text: 'Tell me more' }] },
    ];
    for (const maxTokens of [6, 40]) {
      const r = await responses({
        model: 'm',
        instructions: 'Be brief.',
        input: conv,
        max_output_tokens: maxTokens,
        temperature: 0,
      });
      expect(r.status).toBe(200);
      const chat = await (
        await call('/v1/chat/completions', {
          messages: [
            { role: 'system', content: 'Be brief.' },
            ...conv.map((m) => ({ role: m.role, content: typeof m.content === 'string' ? m.content : 'Tell me more' })),
          ],
          max_tokens: maxTokens,
          temperature: 0,
        })
      ).json();
      const b = r.body;
      expect(b).toMatchObject({
        object: 'response',
        model: 'm',
        instructions: 'Be brief.',
        max_output_tokens: maxTokens,
        store: false,
        previous_response_id: null,
        error: null,
        text: { format: { type: 'text' } },
      });
      expect(b.id).toMatch(/^resp_[0-9a-f]{32}$/);
      const cut = chat.choices[0].finish_reason === 'length';
      expect(b.status).toBe(cut ? 'incomplete' : 'completed');
      expect(b.incomplete_details).toEqual(cut ? { reason: 'max_output_tokens' } : null);
      expect(b.output).toHaveLength(1);
      expect(b.output[0]).toMatchObject({ type: 'message', role: 'assistant', status: b.status });
      expect(b.output[0].id).toMatch(/^msg_/);
      expect(b.output[0].content).toEqual([
        { type: 'output_text', text: chat.choices[0].message.content, annotations: [], logprobs: [] },
      ]);
      expect(b.usage).toEqual({
        input_tokens: chat.usage.prompt_tokens,
        input_tokens_details: { cached_tokens: expect.any(Number) },
        output_tokens: chat.usage.completion_tokens,
        output_tokens_details: { reasoning_tokens: 0 },
        total_tokens: chat.usage.total_tokens,
      });
    }
    // a string input is one user message
    const s = await client.responses.create({
      model: 'm',
      input: 'Hello there',
      max_output_tokens: 12,
      temperature: 0,
    });
    const c = await client.chat.completions.create({
      model: 'm',
      messages: [{ role: 'user', content: 'Hello there' }],
      max_tokens: 12,
      temperature: 0,
    });
    expect(s.output_text).toBe(c.choices[0].message.content);
  });

  it('streams the events the SDK expects; the deltas make the final text', async () => {
    const body = { model: 'm', input: 'Once upon a time', max_output_tokens: 24, temperature: 0 };
    const whole = await client.responses.create(body);
    const stream = client.responses.stream(body);
    const types: string[] = [];
    let deltas = '';
    for await (const e of stream) {
      types.push(e.type);
      if (e.type === 'response.output_text.delta') deltas += e.delta;
    }
    const final = await stream.finalResponse();
    expect(final.output_text).toBe(whole.output_text);
    expect(deltas).toBe(whole.output_text);
    // (the prompt cache may serve more of the prompt the second time)
    expect({ ...final.usage, input_tokens_details: null }).toEqual({ ...whole.usage, input_tokens_details: null });
    expect(final.id).not.toBe(whole.id);
    const end = whole.status === 'incomplete' ? 'response.incomplete' : 'response.completed';
    expect(types.filter((t) => t !== 'response.output_text.delta')).toEqual([
      'response.created',
      'response.in_progress',
      'response.output_item.added',
      'response.content_part.added',
      'response.output_text.done',
      'response.content_part.done',
      'response.output_item.done',
      end,
    ]);
    // on the wire: the event name is the data's type, sequence numbers count from 0
    const raw = await events(await call('/v1/responses', { ...body, stream: true }));
    expect(raw.map(([name, d]) => [name, d.type === name])).toEqual(raw.map(([name]) => [name, true]));
    expect(raw.map(([, d]) => d.sequence_number)).toEqual(raw.map((_, i) => i));
    expect(raw[0][1].response).toMatchObject({ status: 'in_progress', output: [], usage: null });
    expect(raw.at(-1)![1].response.output[0].content[0].text).toBe(whole.output_text);
  });

  it('text.format json_schema constrains the answer; the SDK parses it (zodTextFormat)', async () => {
    const Answer = z.object({ verdict: z.enum(['yes', 'no']), sure: z.boolean() });
    let parsed = 0;
    for (const seed of [1, 2, 3]) {
      const r = await client.responses.parse({
        model: 'm',
        input: 'q',
        text: { format: zodTextFormat(Answer, 'answer') },
        max_output_tokens: 80,
        seed,
        logit_bias: noSpace,
      } as never);
      if (r.status !== 'completed') continue;
      parsed++;
      expect(Answer.parse(r.output_parsed)).toEqual(JSON.parse(r.output_text));
      expect((r as unknown as { text: unknown }).text).toMatchObject({
        format: { type: 'json_schema', name: 'answer' },
      });
    }
    expect(parsed).toBeGreaterThan(0);
    const j = await responses({
      input: 'q',
      text: { format: { type: 'json_object' } },
      max_output_tokens: 60,
      seed: 4,
    });
    expect(j.status).toBe(200);
    if (j.body.status === 'completed') expect(typeof JSON.parse(j.body.output[0].content[0].text)).toBe('object');
  });

  it("include message.output_text.logprobs: the chat route's entries, streamed with the deltas", async () => {
    const req = {
      input: 'Once upon a time',
      max_output_tokens: 10,
      temperature: 0,
      include: ['message.output_text.logprobs'],
      top_logprobs: 2,
    };
    const r = await responses(req);
    expect(r.status).toBe(200);
    const chat = await (
      await call('/v1/chat/completions', {
        messages: [{ role: 'user', content: 'Once upon a time' }],
        max_tokens: 10,
        temperature: 0,
        logprobs: true,
        top_logprobs: 2,
      })
    ).json();
    const part = r.body.output[0].content[0];
    expect(part.logprobs).toEqual(chat.choices[0].logprobs.content);
    expect(part.logprobs).toHaveLength(r.body.usage.output_tokens);
    expect(part.logprobs[0]).toMatchObject({
      token: expect.any(String),
      logprob: expect.any(Number),
      bytes: expect.any(Array),
    });
    expect(part.logprobs[0].top_logprobs).toHaveLength(2);
    // streamed: each delta has its tokens' entries; together they are the final list
    const raw = await events(await call('/v1/responses', { ...req, stream: true }));
    const deltas = raw.filter(([n]) => n === 'response.output_text.delta').map(([, d]) => d);
    expect(deltas.flatMap((d) => d.logprobs)).toEqual(part.logprobs);
    expect(deltas.map((d) => d.delta).join('')).toBe(part.text);
    const done = raw.find(([n]) => n === 'response.output_text.done')![1];
    expect(done.logprobs).toEqual(part.logprobs);
    // without include: no entries
    const plain = await responses({ ...req, include: undefined, top_logprobs: undefined });
    expect(plain.body.output[0].content[0].logprobs).toEqual([]);
  });

  it('function tools: calls as function_call items, and the next turn takes their outputs', async () => {
    const r = await responses({
      input: 'what is the weather in Paris?',
      tools: TOOLS,
      tool_choice: { type: 'function', name: 'get_weather' },
      parallel_tool_calls: false,
      max_output_tokens: 120,
      logit_bias: noSpace,
      seed: 3,
    });
    expect(r.status).toBe(200);
    expect(r.body.status).toBe('completed');
    expect(r.body.tools[0]).toMatchObject({ type: 'function', name: 'get_weather', parameters: WEATHER });
    expect(r.body.output).toHaveLength(1);
    const fc = r.body.output[0];
    expect(fc).toMatchObject({ type: 'function_call', name: 'get_weather', status: 'completed' });
    expect(fc.id).toMatch(/^fc_/);
    expect(fc.call_id).toMatch(/^call_/);
    const args = JSON.parse(fc.arguments);
    expect(Object.keys(args)).toEqual(['city', 'unit']);
    expect(['c', 'f']).toContain(args.unit);

    // the follow-up: the response's output items and the call's output go back in `input`, as
    // clients send them; the prompt is the chat route's
    const next = {
      input: [
        { role: 'user', content: 'what is the weather in Paris?' },
        ...r.body.output,
        { type: 'function_call_output', call_id: fc.call_id, output: '{"temp": 21}' },
      ],
      tools: TOOLS,
      tool_choice: 'none',
      max_output_tokens: 4,
      temperature: 0,
    };
    const again = await responses(next);
    expect(again.status).toBe(200);
    expect(again.body.output[0].type).toBe('message');
    const chat = await (
      await call('/v1/chat/completions', {
        messages: [
          { role: 'user', content: 'what is the weather in Paris?' },
          {
            role: 'assistant',
            content: null,
            tool_calls: [{ id: fc.call_id, type: 'function', function: { name: fc.name, arguments: fc.arguments } }],
          },
          { role: 'tool', tool_call_id: fc.call_id, content: '{"temp": 21}' },
        ],
        tools: TOOLS.map(({ type, ...f }) => ({ type, function: f })),
        tool_choice: 'none',
        max_tokens: 4,
        temperature: 0,
      })
    ).json();
    expect(again.body.usage.input_tokens).toBe(chat.usage.prompt_tokens);
    expect(again.body.output[0].content[0].text).toBe(chat.choices[0].message.content);
    // and a reply's message item (output_text parts, id, status) goes back the same way
    const third = await responses({
      ...next,
      input: [...next.input, ...again.body.output, { role: 'user', content: 'ok' }],
    });
    expect(third.status).toBe(200);
    expect(third.body.usage.input_tokens).toBeGreaterThan(again.body.usage.input_tokens);
  });

  it('streams function calls through the SDK, and a reply as it is generated (tool_choice auto)', async () => {
    const stream = client.responses.stream({
      model: 'm',
      input: 'add 2 and 3',
      tools: TOOLS,
      tool_choice: 'required',
      parallel_tool_calls: false,
      max_output_tokens: 120,
      logit_bias: noSpace,
      seed: 5,
    } as never);
    const types: string[] = [];
    let args = '';
    for await (const e of stream) {
      types.push(e.type);
      if (e.type === 'response.function_call_arguments.delta') args += e.delta;
    }
    const final = await stream.finalResponse();
    expect(final.status).toBe('completed');
    const calls = final.output.filter((o) => o.type === 'function_call');
    expect(calls).toHaveLength(1);
    // the call's item opens once its name is known, and its arguments stream in pieces
    const deltas = types.filter((t) => t === 'response.function_call_arguments.delta').length;
    expect(deltas).toBeGreaterThan(1);
    expect(types.slice(2, 4)).toEqual(['response.output_item.added', 'response.function_call_arguments.delta']);
    expect(types.slice(-3)).toEqual([
      'response.function_call_arguments.done',
      'response.output_item.done',
      'response.completed',
    ]);
    expect(args).toBe((calls[0] as { arguments: string }).arguments);
    expect(() => JSON.parse(args)).not.toThrow();

    // cut by max_output_tokens inside the arguments: an incomplete call, the same streamed or not
    // (a few lengths: where the arguments start depends on the vocabulary)
    let cutCalls = 0;
    for (const max of [55, 60, 65, 70, 75, 80]) {
      const cutReq = {
        input: 'what is the weather in Paris?',
        tools: TOOLS,
        tool_choice: { type: 'function', name: 'get_weather' },
        parallel_tool_calls: false,
        max_output_tokens: max,
        logit_bias: noSpace,
        seed: 5,
      };
      const cut = await responses(cutReq);
      if (cut.body.status !== 'incomplete' || cut.body.output[0].type !== 'function_call') continue;
      expect(cut.body.incomplete_details).toEqual({ reason: 'max_output_tokens' });
      // a call whose arguments were cut is incomplete; one cut after them (in the closing brackets) is not
      const complete = (() => {
        try {
          JSON.parse(cut.body.output[0].arguments);
          return true;
        } catch {
          return false;
        }
      })();
      expect(cut.body.output[0].status).toBe(complete ? 'completed' : 'incomplete');
      if (!complete) cutCalls++;
      const cutStream = await events(await call('/v1/responses', { ...cutReq, stream: true }));
      const last = cutStream.at(-1)!;
      expect(last[0]).toBe('response.incomplete');
      const { name, arguments: a } = cut.body.output[0];
      expect(last[1].response.output).toMatchObject([
        { type: 'function_call', status: cut.body.output[0].status, name, arguments: a },
      ]);
    }
    expect(cutCalls).toBeGreaterThan(0);

    // auto: every answer is a call or a reply; a reply streams as text deltas as it is generated
    let streamedReply = false;
    for (let seed = 1; seed <= 12 && !streamedReply; seed++) {
      const s = client.responses.stream({
        model: 'm',
        input: 'what is the weather in Paris?',
        tools: TOOLS,
        max_output_tokens: 60,
        logit_bias: noSpace,
        seed,
      } as never);
      const deltas: string[] = [];
      for await (const e of s) if (e.type === 'response.output_text.delta') deltas.push(e.delta);
      const f = await s.finalResponse();
      const kinds = f.output.map((o) => o.type);
      if (f.status === 'completed')
        expect(kinds.every((k) => k === 'function_call') || kinds.join() === 'message').toBe(true);
      // skip calls, short replies, and calls cut by max_output_tokens (their raw JSON, sent whole)
      if (kinds[0] !== 'message' || f.output_text.length < 5 || f.output_text.startsWith('{')) continue;
      expect(deltas.join('')).toBe(f.output_text);
      expect(deltas.length).toBeGreaterThan(1);
      streamedReply = true;
    }
    expect(streamedReply).toBe(true);
  });

  it('refuses what it cannot honour with a 400 naming the field', async () => {
    const cases: [Record<string, unknown>, string, RegExp][] = [
      [{ input: 'x', previous_response_id: 'resp_1' }, 'previous_response_id', /keeps no responses/],
      [{ input: 'x', conversation: 'conv_1' }, 'conversation', /keeps no responses/],
      [{ input: 'x', background: true }, 'background', /background/],
      [{ input: [] }, 'input', /input/],
      [{ input: [{ type: 'reasoning', summary: [] }] }, 'input[0]', /"reasoning" are not supported/],
      [
        { input: [{ role: 'user', content: [{ type: 'input_image', image_url: 'http://x' }] }] },
        'input[0].content',
        /text parts/,
      ],
      [{ input: [{ type: 'function_call_output', output: 'x' }] }, 'input[0].call_id', /./],
      [{ input: 'x', tools: [{ type: 'web_search' }] }, 'tools[0].type', /only function tools/],
      [{ input: 'x', tools: TOOLS, tool_choice: { type: 'function', name: 'nope' } }, 'tool_choice', /not in tools/],
      [{ input: 'x', tool_choice: 'required' }, 'tool_choice', /needs tools/],
      [{ input: 'x', tools: [TOOLS[0], TOOLS[0]] }, 'tools', /listed twice/],
      [{ input: 'x', tools: TOOLS, text: { format: { type: 'json_object' } } }, 'text.format', /with tools/],
      [{ input: 'x', text: { format: { type: 'xml' } } }, 'text.format.type', /text, json_object or json_schema/],
      [{ input: 'x', top_logprobs: 21 }, 'top_logprobs', /./],
      [{ input: 'x', tools: TOOLS, include: ['message.output_text.logprobs'] }, 'include', /not supported with tools/],
      [{ input: 'x', tools: TOOLS, top_logprobs: 2 }, 'top_logprobs', /not supported with tools/],
      [{ input: 'x', max_output_tokens: 0 }, 'max_output_tokens', /./],
      [
        { input: 'x', text: { format: { type: 'json_schema', name: 'n', schema: { type: 'number', multipleOf: 3 } } } },
        'text.format.schema',
        /multipleOf/,
      ],
      [{ input: 'word '.repeat(2000) }, 'input', /./],
      [{ input: 'x', model: 'other' }, 'model', /./],
    ];
    for (const [body, param, message] of cases) {
      const r = await responses(body);
      expect([r.status, r.body.error?.param], JSON.stringify(body).slice(0, 200)).toEqual([
        r.body.error?.code === 'MODEL_NOT_FOUND' ? 404 : 400,
        param,
      ]);
      expect(r.body.error.message).toMatch(message);
    }
    const get = await app.request('/v1/responses');
    expect(get.status).toBe(405);
    expect(get.headers.get('allow')).toBe('POST');
    // no response is stored: retrieving, deleting or cancelling one says so
    for (const [method, path] of [
      ['GET', '/v1/responses/resp_1'],
      ['DELETE', '/v1/responses/resp_1'],
      ['POST', '/v1/responses/resp_1/cancel'],
      ['GET', '/v1/responses/resp_1/input_items'],
    ]) {
      const r = await app.request(path, { method });
      expect(r.status, path).toBe(404);
      expect((await r.json()).error).toMatchObject({
        code: 'RESPONSE_NOT_STORED',
        message: expect.stringMatching(/keeps no responses/),
      });
    }
    await expect(client.responses.retrieve('resp_1')).rejects.toMatchObject({
      status: 404,
      code: 'RESPONSE_NOT_STORED',
    });
  });
});
