// OpenAI compatibility details of the app (createApp in process): CORS preflights as the OpenAI
// SDK sends them, GET /v1/models/{id}, 405 on a known path with the wrong method, max_tokens
// past the context, stop/seed/content validation, `param` on the engine's prompt errors, and the
// native stream's token events.
import OpenAI from 'openai';
import { beforeAll, describe, expect, it } from 'vitest';
import type { BitNetModel } from '../../src/api/bitnet-model.ts';
import type { GenerationOutcome, TokenEvent } from '../../src/generate/engine.ts';
import { createApp } from '../../src/http/app.ts';
import type { ServedModel } from '../../src/http/model-holder.ts';
import { auth, KEY, metric, post, recording, tinyModel } from './helpers.ts';

const MODEL = 'tiny-compat';
let model: BitNetModel;
let app: ReturnType<typeof createApp>;
let ctx: number;

beforeAll(async () => {
  model = await tinyModel();
  ctx = model.modelInfo().contextLength;
  app = createApp({ model, modelId: MODEL, apiKeys: [KEY] });
});

const json = async (r: Response) => ({ status: r.status, body: await r.json() });
const chat = (extra: Record<string, unknown> = {}) => ({
  model: MODEL,
  messages: [{ role: 'user', content: 'say something' }],
  max_tokens: 4,
  seed: 7,
  ...extra,
});

/** An OpenAI client whose requests go to `a` in process; `sent` holds the last request's headers. */
function clientFor(a: ReturnType<typeof createApp>, o: { organization?: string; project?: string } = {}) {
  const seen: { sent?: Headers } = {};
  const client = new OpenAI({
    apiKey: KEY,
    baseURL: 'http://bitnet.test/v1',
    maxRetries: 0,
    ...o,
    fetch: async (url: string | URL | Request, init?: RequestInit) => {
      seen.sent = new Headers(init?.headers);
      return a.request(String(url), init);
    },
  });
  return { client, seen };
}

describe('CORS', () => {
  const ORIGIN = 'http://a.example';
  let c: ReturnType<typeof createApp>;
  beforeAll(() => {
    c = createApp({ model, modelId: MODEL, apiKeys: [KEY], cors: { origins: [ORIGIN] } });
  });

  const preflight = (origin: string, headers: string) =>
    c.request('/v1/chat/completions', {
      method: 'OPTIONS',
      headers: {
        origin,
        'access-control-request-method': 'POST',
        'access-control-request-headers': headers,
      },
    });

  it('a preflight with the headers the OpenAI SDK sends (x-stainless-*, openai-organization, openai-project) passes', async () => {
    // the headers the real SDK puts on a request, as a browser would list them in the preflight
    const { client, seen } = clientFor(c, { organization: 'org-1', project: 'proj-1' });
    await client.models.list();
    const names: string[] = [];
    seen.sent!.forEach((_v, k) => {
      names.push(k);
    });
    expect(names).toEqual(expect.arrayContaining(['x-stainless-lang', 'openai-organization', 'openai-project']));
    const requested = [
      ...new Set([
        ...names,
        'x-stainless-arch',
        'x-stainless-lang',
        'x-stainless-os',
        'x-stainless-package-version',
        'x-stainless-retry-count',
        'x-stainless-runtime',
        'x-stainless-runtime-version',
        'x-stainless-timeout',
        'openai-organization',
        'openai-project',
        'x-request-id',
      ]),
    ];
    const pre = await preflight(ORIGIN, requested.join(', '));
    expect(pre.status).toBe(204);
    expect(pre.headers.get('access-control-allow-origin')).toBe(ORIGIN);
    expect(pre.headers.get('access-control-allow-methods')).toMatch(/\bPOST\b/);
    const allowed = (pre.headers.get('access-control-allow-headers') ?? '').split(',').map((h) => h.trim());
    for (const h of requested) expect(allowed).toContain(h);
    // the answer depends on what was asked: caches must key on it
    expect(pre.headers.get('vary')).toMatch(/Access-Control-Request-Headers/i);
    expect(pre.headers.get('vary')).toMatch(/Origin/i);
  });

  it('the origin check is unchanged: another origin gets no allow-origin', async () => {
    const pre = await preflight('http://evil.example', 'authorization,x-stainless-os');
    expect(pre.headers.get('access-control-allow-origin')).toBeNull();
    const r = await c.request('/v1/models', { headers: { ...auth, origin: 'http://evil.example' } });
    expect(r.headers.get('access-control-allow-origin')).toBeNull();
  });

  it('responses expose the headers clients read (x-request-id, x-bitnet-route…, retry-after)', async () => {
    const r = await c.request(...post('/v1/chat/completions', chat(), { ...auth, origin: ORIGIN }));
    expect(r.status).toBe(200);
    expect(r.headers.get('access-control-allow-origin')).toBe(ORIGIN);
    const exposed = (r.headers.get('access-control-expose-headers') ?? '').split(',');
    for (const h of ['x-request-id', 'x-bitnet-route', 'x-bitnet-route-reason', 'x-bitnet-fallback', 'retry-after'])
      expect(exposed).toContain(h);
    await r.json();
  });
});

describe('GET /v1/models/{id}', () => {
  it('answers the same object as the list for the served id (also through models.retrieve)', async () => {
    const list = await json(await app.request('/v1/models', { headers: auth }));
    const one = await json(await app.request(`/v1/models/${MODEL}`, { headers: auth }));
    expect(one.status).toBe(200);
    expect(one.body).toEqual(list.body.data[0]);
    expect(one.body).toMatchObject({ id: MODEL, object: 'model', owned_by: 'bitnet-edge' });
    const { client } = clientFor(app);
    expect(await client.models.retrieve(MODEL)).toMatchObject({ id: MODEL, object: 'model' });
    const head = await app.request(`/v1/models/${MODEL}`, { method: 'HEAD', headers: auth });
    expect(head.status).toBe(200);
  });

  it('another id is a 404 MODEL_NOT_FOUND naming the model (the SDK raises NotFoundError)', async () => {
    const r = await json(await app.request('/v1/models/gpt-4o', { headers: auth }));
    expect(r.status).toBe(404);
    expect(r.body.error).toMatchObject({ code: 'MODEL_NOT_FOUND', param: 'model', type: 'not_found_error' });
    expect(r.body.error.message).toMatch(/gpt-4o/);
    const { client } = clientFor(app);
    const e = await client.models.retrieve('gpt-4o').catch((x) => x);
    expect(e).toBeInstanceOf(OpenAI.NotFoundError);
  });

  it('needs a key like /v1/models', async () => {
    const r = await app.request(`/v1/models/${MODEL}`);
    expect(r.status).toBe(401);
    expect((await r.json()).error.code).toBe('UNAUTHORIZED');
    expect((await app.request(`/v1/models/${MODEL}`, { headers: { authorization: 'Bearer nope' } })).status).toBe(401);
  });

  it('ids with a slash work raw and %2F-encoded (what the SDK sends)', async () => {
    const a = createApp({ model, modelId: 'owner/bitnet-2b', apiKeys: [KEY] });
    for (const p of ['/v1/models/owner/bitnet-2b', '/v1/models/owner%2Fbitnet-2b']) {
      const r = await json(await a.request(p, { headers: auth }));
      expect([p, r.status, r.body.id]).toEqual([p, 200, 'owner/bitnet-2b']);
    }
    const { client } = clientFor(a);
    expect((await client.models.retrieve('owner/bitnet-2b')).id).toBe('owner/bitnet-2b');
    expect((await a.request('/v1/models/owner', { headers: auth })).status).toBe(404);
  });

  it('is counted under one metrics label', async () => {
    const a = createApp({ model, modelId: MODEL });
    await a.request(`/v1/models/${MODEL}`);
    await a.request('/v1/models/x1');
    await a.request('/v1/models/x2');
    const m = await (await a.request('/metrics')).text();
    expect(metric(m, 'bitnet_http_requests_total', { endpoint: '/v1/models/{id}', status: '200' })).toBe(1);
    expect(metric(m, 'bitnet_http_requests_total', { endpoint: '/v1/models/{id}', status: '404' })).toBe(2);
  });
});

describe('405 on a known path with the wrong method', () => {
  const cases: [string, string, string][] = [
    ['GET', '/v1/chat/completions', 'POST'],
    ['PUT', '/v1/chat/completions', 'POST'],
    ['GET', '/v1/completions', 'POST'],
    ['DELETE', '/v1/generate', 'POST'],
    ['POST', '/v1/models', 'GET, HEAD'],
    ['DELETE', `/v1/models/${MODEL}`, 'GET, HEAD'],
    ['POST', '/healthz', 'GET, HEAD'],
    ['PUT', '/metrics', 'GET, HEAD'],
  ];
  for (const [method, path, allow] of cases) {
    it(`${method} ${path} → 405, Allow: ${allow}`, async () => {
      const r = await app.request(path, { method, headers: auth });
      expect(r.status).toBe(405);
      expect(r.headers.get('allow')).toBe(allow);
      const e = (await r.json()).error;
      expect(e).toMatchObject({ code: 'METHOD_NOT_ALLOWED', type: 'invalid_request_error', param: null });
      expect(e.message).toContain(method);
    });
  }

  it('HEAD keeps working on GET routes; unknown paths stay 404; the key is checked first', async () => {
    for (const p of ['/healthz', '/readyz', '/v1/models', '/metrics']) {
      const r = await app.request(p, { method: 'HEAD', headers: auth });
      expect([p, r.status]).toEqual([p, 200]);
      expect(await r.text()).toBe('');
    }
    const n = await app.request('/v1/chat', { method: 'GET', headers: auth });
    expect([n.status, (await n.json()).error.code]).toEqual([404, 'NOT_FOUND']);
    expect((await app.request('/v1/chat/completions', { method: 'GET' })).status).toBe(401);
    expect((await app.request('/healthz', { method: 'POST' })).status).toBe(405);
  });

  it('with CORS on, Allow also lists OPTIONS', async () => {
    const c = createApp({ model, modelId: MODEL, cors: { origins: '*' } });
    const r = await c.request('/v1/generate', { method: 'GET' });
    expect([r.status, r.headers.get('allow')]).toEqual([405, 'POST, OPTIONS']);
  });
});

describe('max_tokens past the context', () => {
  it('any positive max_tokens is served, clipped at the context (finish_reason length)', async () => {
    const rec = recording(model);
    const a = createApp({ model: rec.served, modelId: MODEL });
    const h = { 'content-type': 'application/json' };
    for (const extra of [
      { max_tokens: 2_000_000 },
      { max_tokens: Number.MAX_SAFE_INTEGER },
      { max_completion_tokens: 2_000_000 },
    ]) {
      const r = await a.request(...post('/v1/chat/completions', chat({ ...extra, temperature: 0.9 }), h));
      const b = await r.json();
      expect([JSON.stringify(extra), r.status]).toEqual([JSON.stringify(extra), 200]);
      expect(b.choices[0].finish_reason).toMatch(/^(length|stop)$/);
      expect(b.usage.total_tokens).toBeLessThanOrEqual(ctx + 1);
      expect(rec.calls.at(-1)!.config.maxNewTokens).toBe(ctx);
    }
    const r = await a.request(...post('/v1/completions', { prompt: [5, 6, 7], max_tokens: 2_000_000, seed: 3 }, h));
    expect(r.status).toBe(200);
    const b = await r.json();
    // 3 prompt tokens: the engine stops when the context is full
    if (b.choices[0].finish_reason === 'length') expect(b.usage.completion_tokens).toBe(ctx - 3 + 1);
    expect(rec.calls.at(-1)!.config.maxNewTokens).toBe(ctx);
  });

  it('bad values are still 400s that name the OpenAI field', async () => {
    const bad: [Record<string, unknown>, string][] = [
      [{ max_tokens: 0 }, 'max_tokens'],
      [{ max_tokens: 1.5 }, 'max_tokens'],
      [{ max_tokens: '10' }, 'max_tokens'],
      [{ max_completion_tokens: -1 }, 'max_completion_tokens'],
    ];
    for (const [extra, param] of bad) {
      const r = await json(await app.request(...post('/v1/chat/completions', chat(extra))));
      expect([JSON.stringify(extra), r.status, r.body.error.param]).toEqual([JSON.stringify(extra), 400, param]);
      expect(r.body.error.message).not.toMatch(/maxNewTokens/);
    }
  });
});

describe('OpenAI fields clients rely on', () => {
  it('message.refusal is null; every response has an x-request-id (the client’s own when sane)', async () => {
    const r = await app.request(...post('/v1/chat/completions', chat()));
    const body = await r.json();
    expect(body.choices[0].message).toMatchObject({ role: 'assistant', refusal: null });
    expect(r.headers.get('x-request-id')).toMatch(/^req_[0-9a-f]{32}$/);
    const mine = await app.request(...post('/v1/chat/completions', chat(), { 'x-request-id': 'trace-42' }));
    expect(mine.headers.get('x-request-id')).toBe('trace-42');
    await mine.json();
    // errors too, and the SDK exposes it
    const denied = await app.request('/v1/models');
    expect(denied.status).toBe(401);
    expect(denied.headers.get('x-request-id')).toMatch(/^req_/);
    const { client } = clientFor(app);
    const c = await client.chat.completions.create(chat() as never);
    expect((c as unknown as { _request_id: string })._request_id).toMatch(/^req_/);
  });

  it('user: null is accepted; the deprecated functions/function_call are refused by name', async () => {
    for (const [path, body] of [
      ['/v1/chat/completions', chat({ user: null })],
      ['/v1/completions', { model: MODEL, prompt: 'x', max_tokens: 2, user: null }],
      ['/v1/embeddings', { model: MODEL, input: 'x', user: null }],
    ] as const) {
      const r = await app.request(...post(path, body));
      expect(r.status, path).toBe(200);
      await r.json();
    }
    const fns = await json(
      await app.request(...post('/v1/chat/completions', chat({ functions: [{ name: 'f', parameters: {} }] }))),
    );
    expect([fns.status, fns.body.error.param]).toEqual([400, 'functions']);
    expect(fns.body.error.message).toMatch(/deprecated.*use tools/);
    const call = await json(await app.request(...post('/v1/chat/completions', chat({ function_call: 'auto' }))));
    expect([call.status, call.body.error.param]).toEqual([400, 'function_call']);
  });
});

describe('validation details', () => {
  it('stop: at most 4, said so', async () => {
    const r = await json(await app.request(...post('/v1/chat/completions', chat({ stop: ['a', 'b', 'c', 'd', 'e'] }))));
    expect(r.status).toBe(400);
    expect(r.body.error).toMatchObject({ code: 'INVALID_REQUEST', param: 'stop' });
    expect(r.body.error.message).toMatch(/at most 4 stop sequences/);
    const bad: [unknown, string][] = [
      [[''], 'stop[0]'],
      ['', 'stop'],
      [[1], 'stop'],
      [{}, 'stop'],
    ];
    for (const [stop, param] of bad) {
      const e = await json(await app.request(...post('/v1/chat/completions', chat({ stop }))));
      expect([JSON.stringify(stop), e.status, e.body.error.param]).toEqual([JSON.stringify(stop), 400, param]);
    }
    const ok = await app.request(...post('/v1/chat/completions', chat({ stop: ['a', 'b', 'c', 'd'] })));
    expect(ok.status).toBe(200);
    await ok.json();
  });

  it('a negative seed (OpenAI: signed int64) is its u64 two’s complement: reproducible, and equal to /v1/generate’s', async () => {
    const rec = recording(model);
    const a = createApp({ model: rec.served, modelId: MODEL });
    const h = { 'content-type': 'application/json' };
    const body = { prompt: [5, 6, 7], max_tokens: 6, seed: -1, temperature: 1 };
    const one = await json(await a.request(...post('/v1/completions', body, h)));
    const two = await json(await a.request(...post('/v1/completions', body, h)));
    expect(one.status).toBe(200);
    expect(two.body.choices[0].text).toBe(one.body.choices[0].text);
    expect(rec.calls[0].config.seed).toBe((1n << 64n) - 1n);
    // the same sampling on the native route, with the seed written as a u64
    const native = await json(
      await a.request(
        ...post(
          '/v1/generate',
          {
            promptIds: [5, 6, 7],
            maxNewTokens: 6,
            temperature: 1,
            topP: 1,
            topK: 0,
            repetitionPenalty: 1,
            seed: '18446744073709551615',
          },
          h,
        ),
      ),
    );
    expect(native.body.text).toBe(one.body.choices[0].text);
    const other = await json(await a.request(...post('/v1/completions', { ...body, seed: -2 }, h)));
    expect(rec.calls.at(-1)!.config.seed).toBe((1n << 64n) - 2n);
    expect(other.status).toBe(200);
    // chat too, and out-of-range seeds are still refused, naming the field
    const c1 = await json(await a.request(...post('/v1/chat/completions', chat({ seed: -9, temperature: 1 }), h)));
    const c2 = await json(await a.request(...post('/v1/chat/completions', chat({ seed: -9, temperature: 1 }), h)));
    expect(c2.body.choices[0].message.content).toBe(c1.body.choices[0].message.content);
    for (const seed of [-(2 ** 60), 1.5, '7']) {
      const e = await json(await a.request(...post('/v1/chat/completions', chat({ seed }), h)));
      expect([seed, e.status, e.body.error.param]).toEqual([seed, 400, 'seed']);
    }
    // the native route mirrors GenerationConfig (u64): negative seeds stay refused there
    const n = await json(await a.request(...post('/v1/generate', { prompt: 'a', seed: -1 }, h)));
    expect([n.status, n.body.error.param]).toEqual([400, 'seed']);
  });

  it('assistant content null (or absent) is an empty turn; other roles still need content', async () => {
    const rec = recording(model);
    const a = createApp({ model: rec.served, modelId: MODEL });
    const h = { 'content-type': 'application/json' };
    const turns = (content: unknown) => [
      { role: 'user', content: 'hi' },
      content === undefined ? { role: 'assistant' } : { role: 'assistant', content },
      { role: 'user', content: 'again' },
    ];
    for (const content of [null, undefined, '']) {
      const r = await a.request(...post('/v1/chat/completions', chat({ messages: turns(content) }), h));
      expect([String(content), r.status]).toEqual([String(content), 200]);
      await r.json();
    }
    const [withNull, absent, empty] = rec.calls.map((c) => c.prompt);
    expect(withNull).toEqual(empty);
    expect(absent).toEqual(empty);
    for (const role of ['user', 'system', 'developer']) {
      const e = await json(
        await a.request(...post('/v1/chat/completions', chat({ messages: [{ role, content: null }] }), h)),
      );
      expect([role, e.status, e.body.error.param]).toEqual([role, 400, 'messages[0].content']);
      expect(e.body.error.message).toMatch(/content is required/);
    }
  });

  it('the engine’s prompt errors name the field: messages, prompt, promptIds', async () => {
    const long = Array.from({ length: ctx + 20 }, (_, i) => i % 250);
    const cases: [string, unknown, string, string][] = [
      [
        '/v1/chat/completions',
        chat({ messages: [{ role: 'user', content: 'word '.repeat(400) }] }),
        'PROMPT_TOO_LONG',
        'messages',
      ],
      ['/v1/completions', { model: MODEL, prompt: long, max_tokens: 2 }, 'PROMPT_TOO_LONG', 'prompt'],
      ['/v1/completions', { model: MODEL, prompt: 'word '.repeat(400), max_tokens: 2 }, 'PROMPT_TOO_LONG', 'prompt'],
      ['/v1/completions', { model: MODEL, prompt: [99999] }, 'BAD_TOKEN', 'prompt'],
      ['/v1/completions', { model: MODEL, prompt: [[1, 99999]] }, 'BAD_TOKEN', 'prompt'],
      ['/v1/generate', { promptIds: [1, 2, 999999] }, 'BAD_TOKEN', 'promptIds'],
      ['/v1/generate', { promptIds: long }, 'PROMPT_TOO_LONG', 'promptIds'],
      ['/v1/generate', { prompt: 'word '.repeat(400) }, 'PROMPT_TOO_LONG', 'prompt'],
    ];
    for (const [path, body, code, param] of cases) {
      const r = await json(await app.request(...post(path, body)));
      expect([path, code, r.status, r.body.error.code, r.body.error.param]).toEqual([path, code, 400, code, param]);
    }
  });

  it('/v1/generate: an unknown key is named in the message and in param', async () => {
    const r = await json(await app.request(...post('/v1/generate', { prompt: 'a', maxTokens: 3 })));
    expect(r.status).toBe(400);
    expect(r.body.error).toMatchObject({ code: 'INVALID_REQUEST', param: 'maxTokens' });
    expect(r.body.error.message).toMatch(/maxTokens/);
    const two = await json(await app.request(...post('/v1/generate', { prompt: 'a', max_tokens: 3, top_p: 1 })));
    expect(two.body.error.param).toBe('max_tokens');
    expect(two.body.error.message).toMatch(/max_tokens.*top_p/);
  });
});

describe('/v1/generate stream: token events', () => {
  type Ev = { event: string; data: Record<string, unknown> };
  const events = (text: string): Ev[] =>
    [...text.matchAll(/event: (\w+)\ndata: (.*)/g)].map((m) => ({ event: m[1], data: JSON.parse(m[2]) }));

  it('held-back text flushed at the end is a token event without an id; ids are exactly tokenIds', async () => {
    // an engine that holds back "wa" (a possible start of the stop "wa!") and releases it at the end
    const outcome: GenerationOutcome = {
      tokenIds: [10, 11, 12],
      text: 'hi wa',
      finishReason: 'length',
      promptTokens: 1,
      generatedTokens: 3,
      timings: { prefillMs: 0, decodeMs: 0, totalMs: 0, firstTokenMs: 0 },
      cachedPromptTokens: 0,
    };
    const served: ServedModel = {
      engine: {
        backendName: 'fake',
        async *stream(): AsyncGenerator<TokenEvent, GenerationOutcome> {
          yield { id: 10, text: 'hi' };
          yield { id: 11, text: ' ' };
          yield { id: 12, text: '' };
          yield { id: -1, text: 'wa' };
          return outcome;
        },
      },
      tokenizer: model.tokenizer,
      modelInfo: () => model.modelInfo(),
    };
    const a = createApp({ model: served, modelId: MODEL });
    const r = await a.request(
      ...post(
        '/v1/generate',
        { promptIds: [1], maxNewTokens: 3, stream: true, stopSequences: ['wa!'] },
        {
          'content-type': 'application/json',
        },
      ),
    );
    const ev = events(await r.text());
    expect(ev.map((e) => e.event)).toEqual(['token', 'token', 'token', 'token', 'done']);
    expect(ev.slice(0, 3).map((e) => e.data)).toEqual([
      { id: 10, text: 'hi' },
      { id: 11, text: ' ' },
      { id: 12, text: '' },
    ]);
    expect(ev[3].data).toEqual({ text: 'wa' }); // no fake id -1
    const done = ev[4].data;
    expect(ev.filter((e) => e.event === 'token' && 'id' in e.data).map((e) => e.data.id)).toEqual(done.tokenIds);
    expect(
      ev
        .filter((e) => e.event === 'token')
        .map((e) => e.data.text)
        .join(''),
    ).toBe(done.text);
  });

  it('on the real engine: token events with an id = generatedTokens; texts joined = done.text', async () => {
    let flushed = 0; // runs whose held-back text came at the end (seeds 6–8 on this model)
    for (const seed of [5, 6, 7, 8]) {
      const body = { prompt: 'hi', maxNewTokens: 3, stream: true, seed, stopSequences: ['wa!'] };
      const ev = events(await (await app.request(...post('/v1/generate', body))).text());
      const done = ev.at(-1)!;
      expect(done.event).toBe('done');
      const tokens = ev.filter((e) => e.event === 'token');
      expect(tokens.filter((e) => 'id' in e.data).map((e) => e.data.id)).toEqual(done.data.tokenIds);
      expect(tokens.filter((e) => 'id' in e.data)).toHaveLength(done.data.generatedTokens as number);
      expect(tokens.every((e) => e.data.id === undefined || (e.data.id as number) >= 0)).toBe(true);
      expect(tokens.map((e) => e.data.text).join('')).toBe(done.data.text);
      if (tokens.some((e) => !('id' in e.data))) flushed++;
    }
    expect(flushed).toBeGreaterThan(0);
  });
});
