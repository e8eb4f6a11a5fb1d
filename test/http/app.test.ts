// createApp in process (app.request): OpenAI routes, native route, validation, auth, limits,
// cancellation, metrics, and the error → status table.
import { beforeAll, describe, expect, it } from 'vitest';
import type { BitNetModel } from '../../src/api/bitnet-model.ts';
import { BitNetError } from '../../src/errors.ts';
import { createApp } from '../../src/http/app.ts';
import { timingSafeEqualBytes } from '../../src/http/auth.ts';
import { errorResponse, statusOf, statusTable } from '../../src/http/errors.ts';
import { auth, KEY, metric, post, sseData, tinyModel, waitFor } from './helpers.ts';

let model: BitNetModel;
let app: ReturnType<typeof createApp>;
const MODEL = 'tiny-test';

beforeAll(async () => {
  model = await tinyModel();
  app = createApp({ model, modelId: MODEL, apiKeys: [KEY, 'second-key'] });
});

const chat = (extra: Record<string, unknown> = {}) => ({
  model: MODEL,
  messages: [{ role: 'user', content: 'say something' }],
  max_tokens: 10,
  seed: 7,
  ...extra,
});

describe('a model that fails to load', () => {
  it("a load error with a client status (BITNET_MODEL's BAD_LOCATION) is the server's: 503 MODEL_UNAVAILABLE", async () => {
    let tries = 0;
    const a = createApp({
      model: () => {
        tries++;
        return Promise.reject(BitNetError.Config('BAD_LOCATION', 'model location "s3://b/100%.gguf": bad escape'));
      },
      modelId: MODEL,
    });
    for (const path of ['/v1/completions', '/v1/chat/completions']) {
      const body = path === '/v1/completions' ? { prompt: 'hi' } : { messages: [{ role: 'user', content: 'hi' }] };
      const r = await a.request(...post(path, { ...body, max_tokens: 1 }, { 'content-type': 'application/json' }));
      expect(r.status).toBe(503);
      const e = (await r.json()).error;
      expect(e.code).toBe('MODEL_UNAVAILABLE');
      expect(e.message).toContain('bad escape');
    }
    expect(tries).toBe(2); // a failed load is tried again on the next request
  });
});

describe('errors → HTTP status, in one table', () => {
  it('maps codes first, then kinds', () => {
    const cases: [BitNetError, number][] = [
      [BitNetError.Config('INVALID_GENERATION_CONFIG', 'x'), 400],
      [BitNetError.Config('INVALID_REQUEST', 'x'), 400],
      [BitNetError.Tokenization('TOKENIZER_MISSING', 'x'), 400],
      [BitNetError.Capacity('PROMPT_TOO_LONG', 'x'), 400],
      [BitNetError.Config('UNAUTHORIZED', 'x'), 401],
      [BitNetError.Model('MODEL_NOT_FOUND', 'x'), 404],
      [BitNetError.Config('PAYLOAD_TOO_LARGE', 'x'), 413],
      [BitNetError.Config('UNSUPPORTED_MEDIA_TYPE', 'x'), 415],
      [BitNetError.Capacity('QUEUE_FULL', 'x'), 429],
      [BitNetError.Timeout('CANCELLED', 'x'), 499],
      [BitNetError.Model('LOGITS_NAN', 'x'), 500],
      [BitNetError.Quantization('I2S_BAD_CODE', 'x'), 500],
      [BitNetError.Capacity('KV_CACHE_FULL', 'x'), 503],
      [BitNetError.Capacity('SHUTTING_DOWN', 'x'), 503],
      [BitNetError.Tokenization('CHAT_TEMPLATE_CONTENT_UNLOCATED', 'x'), 500],
      [BitNetError.Config('INVALID_ENV', 'x'), 500],
      [BitNetError.Config('METHOD_NOT_ALLOWED', 'x'), 405],
      [BitNetError.Device('BACKEND_UNAVAILABLE', 'x'), 503],
      [BitNetError.Memory('MODEL_TOO_LARGE', 'x'), 503],
      [BitNetError.Io('GPU_UNAVAILABLE', 'x'), 503],
      [BitNetError.Io('SHORT_READ', 'x'), 503],
      [BitNetError.Timeout('GPU_TIMEOUT', 'x'), 504],
    ];
    for (const [e, s] of cases) expect([e.code, statusOf(e)]).toEqual([e.code, s]);
    expect(Object.keys(statusTable().byKind).sort()).toEqual([
      'Capacity',
      'Config',
      'Device',
      'Io',
      'Memory',
      'Model',
      'Quantization',
      'Timeout',
      'Tokenization',
    ]);
  });

  it('writes OpenAI-style bodies with Retry-After on 429', async () => {
    const r = errorResponse(BitNetError.Capacity('QUEUE_FULL', 'busy', { retryAfterSeconds: 2 }));
    expect(r.status).toBe(429);
    expect(r.headers.get('retry-after')).toBe('2');
    expect(await r.json()).toEqual({
      error: { message: 'busy', type: 'rate_limit_error', param: null, code: 'QUEUE_FULL' },
    });
    const u = errorResponse(new TypeError('boom'));
    expect(u.status).toBe(500);
    expect((await u.json()).error).toMatchObject({ type: 'server_error', code: 'INTERNAL' });
  });
});

describe('auth', () => {
  it('health routes are open; everything else needs a Bearer key', async () => {
    for (const p of ['/healthz', '/readyz']) expect((await app.request(p)).status).toBe(200);
    for (const p of ['/v1/models', '/metrics']) {
      const r = await app.request(p);
      expect(r.status).toBe(401);
      expect(r.headers.get('www-authenticate')).toBe('Bearer');
      expect(r.headers.get('x-bitnet-route')).toBe('edge');
      expect((await r.json()).error).toMatchObject({ type: 'authentication_error', code: 'UNAUTHORIZED' });
    }
    expect(
      (await app.request(...post('/v1/chat/completions', chat(), { 'content-type': 'application/json' }))).status,
    ).toBe(401);
    expect((await app.request('/v1/models', { headers: { authorization: 'Bearer wrong' } })).status).toBe(401);
    const basic = await app.request('/v1/models', { headers: { authorization: `Basic ${KEY}` } });
    expect(basic.status).toBe(401);
    // a key sent without the Bearer scheme is not "missing": the message says what is wrong
    expect((await basic.json()).error.message).toMatch(/must use the Bearer scheme/);
    const bare = await app.request('/v1/models', { headers: { authorization: KEY } });
    expect(bare.status).toBe(401);
    expect((await bare.json()).error.message).toMatch(/must use the Bearer scheme/);
    expect((await (await app.request('/v1/models')).json()).error.message).toMatch(/^missing API key/);
    expect((await app.request('/v1/models', { headers: { authorization: 'Bearer second-key' } })).status).toBe(200);
    expect((await app.request('/v1/models', { headers: auth })).status).toBe(200);
  });

  it('compares digests without early exit', () => {
    expect(timingSafeEqualBytes(new Uint8Array([1, 2, 3]), new Uint8Array([1, 2, 3]))).toBe(true);
    expect(timingSafeEqualBytes(new Uint8Array([1, 2, 3]), new Uint8Array([1, 2, 4]))).toBe(false);
    expect(timingSafeEqualBytes(new Uint8Array([1, 2]), new Uint8Array([1, 2, 3]))).toBe(false);
  });
});

describe('validation (zod) → clear 400s', () => {
  const bad: [string, unknown, string, string | null][] = [
    ['/v1/chat/completions', chat({ temperature: 5 }), 'INVALID_REQUEST', 'temperature'],
    ['/v1/chat/completions', chat({ messages: [] }), 'INVALID_REQUEST', 'messages'],
    [
      '/v1/chat/completions',
      chat({ messages: [{ role: 'function', content: 'x' }] }),
      'INVALID_REQUEST',
      'messages[0].role',
    ],
    ['/v1/chat/completions', chat({ n: 17 }), 'INVALID_REQUEST', 'n'],
    ['/v1/chat/completions', chat({ n: 0 }), 'INVALID_REQUEST', 'n'],
    ['/v1/chat/completions', chat({ max_tokens: 0 }), 'INVALID_REQUEST', 'max_tokens'],
    ['/v1/chat/completions', chat({ stop: ['a', 'b', 'c', 'd', 'e'] }), 'INVALID_REQUEST', 'stop'],
    ['/v1/chat/completions', chat({ tools: [{ type: 'function' }] }), 'INVALID_REQUEST', 'tools[0].function'],
    ['/v1/chat/completions', chat({ seed: 2 ** 60 }), 'INVALID_REQUEST', 'seed'],
    ['/v1/completions', { model: MODEL, prompt: Array(17).fill('a') }, 'INVALID_REQUEST', 'prompt'],
    ['/v1/completions', { model: MODEL, prompt: Array(8).fill('a'), n: 9 }, 'INVALID_REQUEST', 'n'],
    ['/v1/completions', { model: MODEL, prompt: [] }, 'INVALID_REQUEST', 'prompt'],
    ['/v1/completions', { model: MODEL, prompt: 'a', suffix: 'b' }, 'INVALID_REQUEST', 'suffix'],
    ['/v1/generate', { prompt: 'a', maxTokens: 3 }, 'INVALID_REQUEST', 'maxTokens'],
    ['/v1/generate', { prompt: 'a', promptIds: [1] }, 'INVALID_REQUEST', 'prompt'],
    ['/v1/generate', { prompt: 'a', seed: '-3' }, 'INVALID_REQUEST', 'seed'],
  ];
  for (const [path, body, code, param] of bad) {
    it(`${path} ${JSON.stringify(body).slice(0, 70)}`, async () => {
      const r = await app.request(...post(path, body));
      expect(r.status).toBe(400);
      const e = (await r.json()).error;
      expect(e).toMatchObject({ type: 'invalid_request_error', code, param });
      expect(e.message.length).toBeGreaterThan(5);
    });
  }

  it('malformed JSON, wrong media type, oversized body, unknown model, unknown route', async () => {
    const m = await app.request('/v1/chat/completions', { method: 'POST', headers: auth, body: '{"messages": [' });
    expect([m.status, (await m.json()).error.code]).toEqual([400, 'MALFORMED_JSON']);
    const t = await app.request('/v1/chat/completions', {
      method: 'POST',
      headers: { authorization: auth.authorization, 'content-type': 'text/plain' },
      body: '{}',
    });
    expect([t.status, (await t.json()).error.code]).toEqual([415, 'UNSUPPORTED_MEDIA_TYPE']);
    const small = createApp({ model, modelId: MODEL, bodyLimitBytes: 2048 });
    const big = await small.request(...post('/v1/completions', { model: MODEL, prompt: 'x'.repeat(5000) }));
    expect([big.status, (await big.json()).error.code]).toEqual([413, 'PAYLOAD_TOO_LARGE']);
    const u = await app.request(...post('/v1/chat/completions', chat({ model: 'gpt-4' })));
    expect([u.status, (await u.json()).error]).toEqual([
      404,
      expect.objectContaining({ code: 'MODEL_NOT_FOUND', param: 'model' }),
    ]);
    const n = await app.request('/v1/nope', { headers: auth });
    expect([n.status, (await n.json()).error.code]).toEqual([404, 'NOT_FOUND']);
  });

  it('engine errors keep their codes: a prompt longer than the context is a 400', async () => {
    const r = await app.request(
      ...post('/v1/completions', {
        model: MODEL,
        prompt: Array.from({ length: 200 }, (_, i) => i % 250),
        max_tokens: 2,
      }),
    );
    expect([r.status, (await r.json()).error.code]).toEqual([400, 'PROMPT_TOO_LONG']);
    const ids = await app.request(...post('/v1/generate', { promptIds: [1, 2, 999999] }));
    expect([ids.status, (await ids.json()).error.code]).toEqual([400, 'BAD_TOKEN']);
  });
});

describe('OpenAI routes', () => {
  it('chat: JSON with usage and finish_reason length', async () => {
    const r = await app.request(...post('/v1/chat/completions', chat()));
    expect(r.status).toBe(200);
    expect(r.headers.get('x-bitnet-route')).toBe('edge');
    const b = await r.json();
    expect(b).toMatchObject({
      object: 'chat.completion',
      model: MODEL,
      choices: [{ index: 0, message: { role: 'assistant' }, finish_reason: 'length' }],
    });
    expect(b.id).toMatch(/^chatcmpl-/);
    expect(b.usage.completion_tokens).toBe(10);
    expect(b.usage.total_tokens).toBe(b.usage.prompt_tokens + 10);
  });

  it('chat: SSE ending in [DONE]; same text as JSON for the same seed; include_usage', async () => {
    const r = await app.request(
      ...post('/v1/chat/completions', chat({ stream: true, stream_options: { include_usage: true } })),
    );
    expect(r.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const events = sseData(await r.text());
    expect(events.at(-1)).toBe('[DONE]');
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
    expect(chunks[0].choices[0].delta).toEqual({ role: 'assistant', content: '' });
    const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
    const fin = chunks.find((c) => c.choices[0]?.finish_reason);
    expect(fin.choices[0].finish_reason).toBe('length');
    const last = chunks.at(-1);
    expect(last.choices).toEqual([]);
    expect(last.usage.completion_tokens).toBe(10);
    expect(chunks.slice(0, -1).every((c) => c.usage === null)).toBe(true);
    const whole = await (await app.request(...post('/v1/chat/completions', chat()))).json();
    expect(whole.choices[0].message.content).toBe(text);
    expect(whole.usage).toEqual(last.usage);
  });

  it('no usage chunk without include_usage', async () => {
    const events = sseData(await (await app.request(...post('/v1/chat/completions', chat({ stream: true })))).text());
    expect(events.at(-1)).toBe('[DONE]');
    expect(events.slice(0, -1).every((e) => !('usage' in JSON.parse(e)))).toBe(true);
  });

  it('stop sequences end with finish_reason stop; the stop text is not returned', async () => {
    const body = { model: MODEL, prompt: [5, 6, 7], max_tokens: 12, seed: 11, temperature: 0.9 };
    const full: string = (await (await app.request(...post('/v1/completions', body))).json()).choices[0].text;
    let at = 1;
    while (at < full.length - 1 && full.slice(at, at + 2).includes('\uFFFD')) at++;
    const stop = full.slice(at, at + 2);
    expect(stop).toHaveLength(2);
    const stopped = await (
      await app.request(...post('/v1/completions', { ...body, stop: [stop, 'never-seen'] }))
    ).json();
    expect(stopped.choices[0].finish_reason).toBe('stop');
    expect(stopped.choices[0].text).toBe(full.slice(0, full.indexOf(stop)));
  });

  it('an end-of-generation token ends with finish_reason stop', async () => {
    // greedy after "the" emits EOG within a few tokens on this model
    const r = await (
      await app.request(...post('/v1/completions', { model: MODEL, prompt: 'the', max_tokens: 12, temperature: 0 }))
    ).json();
    expect(r.choices[0].finish_reason).toBe('stop');
    expect(r.usage.completion_tokens).toBeLessThan(12);
  });

  it('completions: text and token-id prompts, stream equals JSON; top_p 0 is greedy', async () => {
    const body = { model: MODEL, prompt: [5, 6, 7], max_tokens: 6, seed: 11, temperature: 0.9 };
    const j = await (await app.request(...post('/v1/completions', body))).json();
    expect(j).toMatchObject({ object: 'text_completion', usage: { prompt_tokens: 3, completion_tokens: 6 } });
    const events = sseData(await (await app.request(...post('/v1/completions', { ...body, stream: true }))).text());
    const text = events
      .slice(0, -1)
      .map((e) => JSON.parse(e).choices[0].text)
      .join('');
    expect(text).toBe(j.choices[0].text);
    const g1 = await (
      await app.request(...post('/v1/completions', { model: MODEL, prompt: 'abc', max_tokens: 6, top_p: 0, seed: 1 }))
    ).json();
    const g2 = await (
      await app.request(
        ...post('/v1/completions', { model: MODEL, prompt: 'abc', max_tokens: 6, temperature: 0, seed: 2 }),
      )
    ).json();
    expect(g1.choices[0].text).toBe(g2.choices[0].text);
  });

  it('GET /v1/models describes the model (random weights labelled)', async () => {
    const b = await (await app.request('/v1/models', { headers: auth })).json();
    expect(b.object).toBe('list');
    expect(b.data[0]).toMatchObject({ id: MODEL, object: 'model', synthetic: true, backend: expect.any(String) });
    expect(b.data[0].description).toMatch(/random weights/);
  });
});

describe('POST /v1/generate (native)', () => {
  it('mirrors GenerationConfig; stream (token/done events) equals JSON; 64-bit seeds as strings', async () => {
    const body = {
      prompt: 'hello',
      maxNewTokens: 5,
      temperature: 0.8,
      topK: 20,
      topP: 0.95,
      repetitionPenalty: 1.1,
      seed: '18446744073709551615',
    };
    const j = await (await app.request(...post('/v1/generate', body))).json();
    expect(j).toMatchObject({ model: MODEL, generatedTokens: 5, finishReason: 'length' });
    expect(j.tokenIds).toHaveLength(5);
    const text = await (await app.request(...post('/v1/generate', { ...body, stream: true }))).text();
    const tokens = [...text.matchAll(/event: token\ndata: (.*)/g)].map((m) => JSON.parse(m[1]));
    const done = JSON.parse(/event: done\ndata: (.*)/.exec(text)![1]);
    expect(tokens.map((t) => t.text).join('')).toBe(j.text);
    expect(done.tokenIds).toEqual(j.tokenIds);
  });
});

describe('limits and cancellation', () => {
  it('a bounded queue: past it, 429 with Retry-After; a freed slot serves the queued request', async () => {
    const a = createApp({ model, modelId: MODEL, limits: { maxConcurrent: 1, maxQueue: 1, retryAfterSeconds: 3 } });
    const streaming = post('/v1/chat/completions', chat({ stream: true, max_tokens: 50 }), {
      'content-type': 'application/json',
    });
    const first = await a.request(...streaming); // holds the slot until its body is read or cancelled
    const queued = a.request(...post('/v1/chat/completions', chat(), { 'content-type': 'application/json' }));
    await waitFor(
      async () => metric(await (await a.request('/metrics')).text(), 'bitnet_queue_depth') === 1,
      'a queued request',
    );
    const rejected = await a.request(...post('/v1/chat/completions', chat(), { 'content-type': 'application/json' }));
    expect(rejected.status).toBe(429);
    expect(rejected.headers.get('retry-after')).toBe('3');
    expect((await rejected.json()).error).toMatchObject({ type: 'rate_limit_error', code: 'QUEUE_FULL' });
    await first.body!.cancel();
    const q = await queued;
    expect(q.status).toBe(200);
    await q.json();
    const m = await (await a.request('/metrics')).text();
    expect(metric(m, 'bitnet_queue_depth')).toBe(0);
    expect(metric(m, 'bitnet_active_generations')).toBe(0);
    expect(metric(m, 'bitnet_http_requests_total', { endpoint: '/v1/chat/completions', status: '429' })).toBe(1);
  });

  it('a client that goes away aborts the generation and frees its slot and KV cache', async () => {
    const a = createApp({ model, modelId: MODEL, limits: { maxConcurrent: 1, maxQueue: 0 } });
    const ac = new AbortController();
    const [path, init] = post('/v1/chat/completions', chat({ stream: true, max_tokens: 100 }), {
      'content-type': 'application/json',
    });
    const r = await a.request(path, { ...init, signal: ac.signal });
    const reader = r.body!.getReader();
    await reader.read();
    expect(model.engine.cache.size()).toBeGreaterThan(0);
    ac.abort();
    await reader.cancel();
    await waitFor(
      async () => metric(await (await a.request('/metrics')).text(), 'bitnet_active_generations') === 0,
      'the slot to be freed',
    );
    // nothing outside the prompt cache (which keeps finished sequences, a cancelled one included)
    expect(model.engine.cache.sequenceIds()).toHaveLength(model.engine.promptCacheSize);
    model.engine.clearPromptCache();
    expect(model.engine.cache.size()).toBe(0);
    // the slot is usable again (maxQueue 0: a held slot would answer 429)
    expect(
      (
        await a.request(
          ...post('/v1/chat/completions', chat({ max_tokens: 2 }), { 'content-type': 'application/json' }),
        )
      ).status,
    ).toBe(200);
  });

  it('a queued request whose client goes away leaves the queue', async () => {
    const a = createApp({ model, modelId: MODEL, limits: { maxConcurrent: 1, maxQueue: 4 } });
    const first = await a.request(
      ...post('/v1/chat/completions', chat({ stream: true, max_tokens: 50 }), { 'content-type': 'application/json' }),
    );
    const ac = new AbortController();
    const [path, init] = post('/v1/chat/completions', chat(), { 'content-type': 'application/json' });
    const queued = a.request(path, { ...init, signal: ac.signal });
    await waitFor(
      async () => metric(await (await a.request('/metrics')).text(), 'bitnet_queue_depth') === 1,
      'a queued request',
    );
    ac.abort();
    expect((await queued).status).toBe(499);
    expect(metric(await (await a.request('/metrics')).text(), 'bitnet_queue_depth')).toBe(0);
    await first.body!.cancel();
  });
});

describe('CORS and metrics', () => {
  it('CORS is off unless configured; preflight works without a key', async () => {
    expect(
      (await app.request('/healthz', { headers: { origin: 'https://x.example' } })).headers.get(
        'access-control-allow-origin',
      ),
    ).toBeNull();
    const c = createApp({ model, modelId: MODEL, apiKeys: [KEY], cors: { origins: ['https://app.example'] } });
    const pre = await c.request('/v1/chat/completions', {
      method: 'OPTIONS',
      headers: {
        origin: 'https://app.example',
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'authorization,content-type',
      },
    });
    expect(pre.status).toBe(204);
    expect(pre.headers.get('access-control-allow-origin')).toBe('https://app.example');
    const r = await c.request('/v1/models', { headers: { ...auth, origin: 'https://app.example' } });
    expect(r.headers.get('access-control-expose-headers')).toMatch(/x-bitnet-route/);
  });

  it('Prometheus text: requests, tokens, latency histograms, queue depth, route', async () => {
    const a = createApp({ model, modelId: MODEL });
    await (
      await a.request(...post('/v1/chat/completions', chat({ max_tokens: 3 }), { 'content-type': 'application/json' }))
    ).json();
    await (
      await a.request(
        ...post('/v1/chat/completions', chat({ max_tokens: 3, stream: true }), { 'content-type': 'application/json' }),
      )
    ).text();
    const r = await a.request('/metrics');
    expect(r.headers.get('content-type')).toMatch(/^text\/plain; version=0.0.4/);
    const m = await r.text();
    expect(
      metric(m, 'bitnet_http_requests_total', { endpoint: '/v1/chat/completions', status: '200', route: 'edge' }),
    ).toBe(2);
    expect(
      metric(m, 'bitnet_http_request_duration_seconds_count', { endpoint: '/v1/chat/completions', route: 'edge' }),
    ).toBe(2);
    expect(
      metric(m, 'bitnet_http_request_duration_seconds_bucket', { endpoint: '/v1/chat/completions', le: '+Inf' }),
    ).toBe(2);
    expect(metric(m, 'bitnet_time_to_first_token_seconds_count')).toBe(2);
    expect(metric(m, 'bitnet_tokens_total', { type: 'completion' })).toBe(6);
    expect(metric(m, 'bitnet_route_decisions_total', { route: 'edge', reason: 'no-gpu' })).toBe(2);
    expect(m).toMatch(/^bitnet_queue_depth 0$/m);
    expect(m).toMatch(/^bitnet_model_info\{.*synthetic="true".*\} 1$/m);
  });
});
