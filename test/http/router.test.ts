// The edge/GPU router with two real servers: an edge server and a "GPU" server (this same app
// on the reference backend, until the CUDA one exists), with a fault proxy between them.
// Covers: routing by size, pass-through streaming, the GPU's own key, fallback when the GPU
// fails before the first byte, 503 when the request does not fit the edge, failure mid-stream,
// and the circuit breaker opening, probing and closing (on an injected clock).
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningServer, serveNode } from '../../src/adapters/node.ts';
import type { BitNetModel } from '../../src/api/bitnet-model.ts';
import { createApp } from '../../src/http/app.ts';
import { FaultProxy } from './fault-proxy.ts';
import { KEY, metric, sseData, tinyModel } from './helpers.ts';

const MODEL = 'tiny-routed';
const GPU_KEY = 'gpu-only-key';
let model: BitNetModel;
let gpu: RunningServer;
let edge: RunningServer;
let proxy: FaultProxy;
let skew = 0; // the edge's clock runs ahead by this much (circuit breaker waits)

beforeAll(async () => {
  model = await tinyModel();
  gpu = await serveNode({ model, modelId: MODEL, apiKeys: [GPU_KEY] }, { port: 0 });
  proxy = await new FaultProxy(gpu.port).start();
  edge = await serveNode(
    {
      model,
      modelId: MODEL,
      apiKeys: [KEY],
      now: () => performance.now() + skew,
      router: {
        gpu: { url: proxy.url, apiKey: GPU_KEY, firstByteTimeoutMs: 10_000 },
        edgeMaxTokens: 32,
        localMaxTokens: 80, // the prompt is 25 tokens: max_tokens 4 → edge, 40 → GPU but fits the edge, 60 → GPU only
        breaker: { failureThreshold: 2, openMs: 10_000 },
      },
    },
    { port: 0 },
  );
});
afterAll(async () => {
  await edge?.close();
  await proxy?.close();
  await gpu?.close();
});

const H = { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' };
const body = (maxTokens: number, extra: Record<string, unknown> = {}) =>
  JSON.stringify({
    model: MODEL,
    messages: [{ role: 'user', content: 'route me' }],
    max_tokens: maxTokens,
    seed: 77,
    temperature: 0.9,
    ...extra,
  });
const ask = (maxTokens: number, extra: Record<string, unknown> = {}) =>
  fetch(`${edge.url}/v1/chat/completions`, { method: 'POST', headers: H, body: body(maxTokens, extra) });
const edgeMetrics = async () =>
  (await fetch(`${edge.url}/metrics`, { headers: { authorization: `Bearer ${KEY}` } })).text();
const gpuMetrics = async () =>
  (await fetch(`${gpu.url}/metrics`, { headers: { authorization: `Bearer ${GPU_KEY}` } })).text();
const gpuChatRequests = async () =>
  metric(await gpuMetrics(), 'bitnet_http_requests_total', { endpoint: '/v1/chat/completions', status: '200' });

describe('router: edge or GPU', () => {
  it('small requests stay on the edge', async () => {
    const before = await gpuChatRequests();
    const r = await ask(4);
    expect(r.status).toBe(200);
    expect(r.headers.get('x-bitnet-route')).toBe('edge');
    expect(r.headers.get('x-bitnet-route-reason')).toBe('small');
    await r.json();
    expect(await gpuChatRequests()).toBe(before);
  });

  it('large requests go to the GPU with its own key, and its stream passes through', async () => {
    const direct = await (
      await fetch(`${gpu.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { ...H, authorization: `Bearer ${GPU_KEY}` },
        body: body(40),
      })
    ).json();
    // The client's key is not valid on the GPU server: only the edge's GPU key gets in.
    expect((await fetch(`${gpu.url}/v1/models`, { headers: { authorization: `Bearer ${KEY}` } })).status).toBe(401);

    const r = await ask(40, { stream: true });
    expect(r.status).toBe(200);
    expect(r.headers.get('x-bitnet-route')).toBe('gpu');
    expect(r.headers.get('x-bitnet-route-reason')).toBe('large');
    expect(r.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const events = sseData(await r.text());
    expect(events.at(-1)).toBe('[DONE]');
    const text = events
      .slice(0, -1)
      .map((e) => JSON.parse(e).choices[0]?.delta?.content ?? '')
      .join('');
    expect(text).toBe(direct.choices[0].message.content);

    // the openai client through the edge, routed to the GPU
    const c = new OpenAI({ baseURL: `${edge.url}/v1`, apiKey: KEY, maxRetries: 0 });
    const { data, response } = await c.chat.completions
      .create({
        model: MODEL,
        messages: [{ role: 'user', content: 'route me' }],
        max_tokens: 40,
        seed: 77,
        temperature: 0.9,
      })
      .withResponse();
    expect(response.headers.get('x-bitnet-route')).toBe('gpu');
    expect(data.choices[0].message.content).toBe(text);

    const em = await edgeMetrics();
    expect(metric(em, 'bitnet_route_decisions_total', { route: 'gpu', reason: 'large' })).toBe(2);
    expect(
      metric(em, 'bitnet_http_requests_total', { endpoint: '/v1/chat/completions', route: 'gpu', status: '200' }),
    ).toBe(2);
    expect(metric(await gpuMetrics(), 'bitnet_route_decisions_total', { route: 'edge', reason: 'forwarded' })).toBe(2);
  });

  it('a large /v1/responses request goes to the GPU too, and its event stream passes through', async () => {
    const req = { model: MODEL, input: 'route me', max_output_tokens: 40, seed: 77, temperature: 0.9 };
    const direct = await (
      await fetch(`${gpu.url}/v1/responses`, {
        method: 'POST',
        headers: { ...H, authorization: `Bearer ${GPU_KEY}` },
        body: JSON.stringify(req),
      })
    ).json();
    const c = new OpenAI({ baseURL: `${edge.url}/v1`, apiKey: KEY, maxRetries: 0 });
    const { data: stream, response } = await c.responses.create({ ...req, stream: true }).withResponse();
    expect(response.headers.get('x-bitnet-route')).toBe('gpu');
    let text = '';
    let last = '';
    for await (const e of stream) {
      if (e.type === 'response.output_text.delta') text += e.delta;
      last = e.type;
    }
    expect(text).toBe(direct.output[0].content[0].text);
    expect(last).toBe(direct.status === 'completed' ? 'response.completed' : 'response.incomplete');
  });

  it('n counts every choice: small choices that add up to a large request go to the GPU, all n of them', async () => {
    // 25 prompt tokens + 4 = 29 each: one is small (≤ 32), three are 87
    const r = await ask(4, { n: 3 });
    expect(r.status).toBe(200);
    expect(r.headers.get('x-bitnet-route')).toBe('gpu');
    expect(r.headers.get('x-bitnet-route-reason')).toBe('large');
    const j = await r.json();
    expect(j.choices.map((c: { index: number }) => c.index)).toEqual([0, 1, 2]);
    expect(j.choices[0].message.content).toBe((await (await ask(4)).json()).choices[0].message.content);
  });

  it('a wrong GPU key is a GPU failure: the edge serves the request', async () => {
    const app = createApp({
      model,
      modelId: MODEL,
      router: { gpu: { url: gpu.url, apiKey: 'not-the-key' }, edgeMaxTokens: 8 },
    });
    const r = await app.request('/v1/chat/completions', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: body(20),
    });
    expect(r.status).toBe(200);
    expect(r.headers.get('x-bitnet-route')).toBe('edge');
    expect(r.headers.get('x-bitnet-fallback')).toBe('gpu-status');
  });

  it('GPU fails before the first byte: fall back to the edge when the request fits, else 503; then the circuit opens', async () => {
    proxy.mode = 'reset';
    const fits = await ask(40);
    expect(fits.status).toBe(200);
    expect(fits.headers.get('x-bitnet-route')).toBe('edge');
    expect(fits.headers.get('x-bitnet-fallback')).toBe('gpu-connect');
    expect((await fits.json()).choices[0].message.content.length).toBeGreaterThan(0);

    const tooBig = await ask(60); // 25 + 60 > localMaxTokens 80
    expect(tooBig.status).toBe(503);
    expect(tooBig.headers.get('x-bitnet-route')).toBe('gpu'); // routed there, and it failed
    expect(tooBig.headers.get('x-bitnet-fallback')).toBe('gpu-connect');
    expect(tooBig.headers.get('retry-after')).toBe('10');
    expect((await tooBig.json()).error).toMatchObject({ code: 'GPU_UNAVAILABLE', type: 'server_error' });

    const m = await edgeMetrics();
    expect(metric(m, 'bitnet_gpu_failures_total', { phase: 'before_first_byte' })).toBe(2);
    expect(metric(m, 'bitnet_gpu_fallbacks_total', { outcome: 'edge' })).toBe(1);
    expect(metric(m, 'bitnet_gpu_fallbacks_total', { outcome: 'unavailable' })).toBe(1);
    expect(metric(m, 'bitnet_gpu_circuit_state')).toBe(2); // open after 2 failures
  });

  it('while open, the GPU is not called: local if it fits, else 503', async () => {
    const conns = proxy.connections;
    const fits = await ask(40);
    expect(fits.headers.get('x-bitnet-route')).toBe('edge');
    expect(fits.headers.get('x-bitnet-route-reason')).toBe('gpu-unavailable');
    await fits.json();
    const tooBig = await ask(60);
    expect(tooBig.status).toBe(503);
    // the request is the GPU's, refused while its circuit is open
    expect([tooBig.headers.get('x-bitnet-route'), tooBig.headers.get('x-bitnet-route-reason')]).toEqual([
      'gpu',
      'gpu-unavailable',
    ]);
    await tooBig.json();
    expect(proxy.connections).toBe(conns);
  });

  it('after the wait a half-open probe runs: a failed probe keeps it open, a good one closes it', async () => {
    skew += 10_000;
    const conns = proxy.connections;
    const r1 = await ask(40);
    expect(r1.headers.get('x-bitnet-route')).toBe('edge');
    await r1.json();
    expect(proxy.connections).toBe(conns + 1); // the probe, refused
    let m = await edgeMetrics();
    expect(metric(m, 'bitnet_gpu_probes_total', { result: 'failed' })).toBe(1);
    expect(metric(m, 'bitnet_gpu_circuit_state')).toBe(2);

    proxy.mode = 'pass';
    skew += 10_000;
    const r2 = await ask(40);
    expect(r2.headers.get('x-bitnet-route')).toBe('gpu');
    await r2.json();
    m = await edgeMetrics();
    expect(metric(m, 'bitnet_gpu_probes_total', { result: 'ok' })).toBe(1);
    expect(metric(m, 'bitnet_gpu_circuit_state')).toBe(0);
    expect(metric(m, 'bitnet_gpu_circuit_transitions_total', { to: 'open' })).toBe(2);
    expect(metric(m, 'bitnet_gpu_circuit_transitions_total', { to: 'closed' })).toBe(1);
  });

  it('GPU fails mid-stream: the client gets the first events, then an error event, no [DONE]', async () => {
    proxy.mode = 'cut';
    const r = await ask(40, { stream: true });
    expect(r.status).toBe(200);
    expect(r.headers.get('x-bitnet-route')).toBe('gpu');
    const events = sseData(await r.text());
    expect(events.length).toBeGreaterThanOrEqual(2);
    expect(JSON.parse(events[0]).object).toBe('chat.completion.chunk');
    expect(JSON.parse(events.at(-1)!).error.code).toBe('GPU_STREAM_FAILED');
    expect(events).not.toContain('[DONE]');
    expect(metric(await edgeMetrics(), 'bitnet_gpu_failures_total', { phase: 'mid_stream' })).toBe(1);

    // the openai client reports it as an error instead of a short answer
    const c = new OpenAI({ baseURL: `${edge.url}/v1`, apiKey: KEY, maxRetries: 0 });
    const stream = await c.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'route me' }],
      max_tokens: 40,
      seed: 77,
      stream: true,
    });
    const consume = async () => {
      for await (const _ of stream);
    };
    await expect(consume()).rejects.toThrow(/mid-stream/);
    proxy.mode = 'pass';
  });
});

describe('router: max_tokens up to the context, Retry-After, x-bitnet-forwarded', () => {
  const CTX = 128; // the tiny model's context
  const json = { 'content-type': 'application/json' };
  const asks = (a: ReturnType<typeof createApp>, maxTokens: number, headers: Record<string, string> = json) =>
    a.request('/v1/chat/completions', { method: 'POST', headers, body: body(maxTokens) });
  const refused: typeof fetch = async () => {
    throw new TypeError('fetch failed: connection refused');
  };

  it('max_tokens = the context: to the GPU while it is up; while it is down, served on the edge like without a GPU', async () => {
    expect(model.modelInfo().contextLength).toBe(CTX);
    const up = createApp({
      model,
      modelId: MODEL,
      router: { gpu: { url: gpu.url, apiKey: GPU_KEY }, edgeMaxTokens: 32 },
    });
    const viaGpu = await asks(up, CTX);
    expect([viaGpu.status, viaGpu.headers.get('x-bitnet-route'), viaGpu.headers.get('x-bitnet-route-reason')]).toEqual([
      200,
      'gpu',
      'large',
    ]);
    await viaGpu.json();

    const noGpu = await (await asks(createApp({ model, modelId: MODEL }), CTX)).json();
    const down = createApp({
      model,
      modelId: MODEL,
      fetch: refused,
      router: {
        gpu: { url: 'http://gpu.invalid', apiKey: GPU_KEY },
        edgeMaxTokens: 32,
        breaker: { failureThreshold: 1 },
      },
    });
    const first = await asks(down, CTX); // the GPU fails before its first byte: fallback
    expect([first.status, first.headers.get('x-bitnet-route'), first.headers.get('x-bitnet-fallback')]).toEqual([
      200,
      'edge',
      'gpu-connect',
    ]);
    const second = await asks(down, 4096); // the circuit is open now
    expect([second.status, second.headers.get('x-bitnet-route-reason')]).toEqual([200, 'gpu-unavailable']);
    for (const b of [await first.json(), await second.json()]) {
      expect(b.choices[0].message.content).toBe(noGpu.choices[0].message.content);
      expect(b.choices[0].finish_reason).toBe(noGpu.choices[0].finish_reason);
      expect(b.usage).toEqual(noGpu.usage);
    }
    // a prompt the context cannot hold still gets the 503 (the edge cannot serve it either)
    const long = await down.request('/v1/chat/completions', {
      method: 'POST',
      headers: json,
      body: body(4, { messages: [{ role: 'user', content: 'word '.repeat(300) }] }),
    });
    expect([long.status, (await long.json()).error.code]).toEqual([503, 'GPU_UNAVAILABLE']);
  });

  it('Retry-After on GPU_UNAVAILABLE is the time left until the breaker tries the GPU again', async () => {
    let t = 0;
    const a = createApp({
      model,
      modelId: MODEL,
      now: () => t,
      fetch: refused,
      router: {
        gpu: { url: 'http://gpu.invalid' },
        edgeMaxTokens: 8,
        localMaxTokens: 40, // 25 prompt tokens + 60 is too large for the edge
        breaker: { failureThreshold: 2, openMs: 10_000 },
      },
    });
    const retryAfter = async () => {
      const r = await asks(a, 60);
      expect([r.status, (await r.json()).error.code]).toEqual([503, 'GPU_UNAVAILABLE']);
      return r.headers.get('retry-after');
    };
    expect(await retryAfter()).toBe('1'); // one failure, circuit still closed: the GPU is tried again at once
    expect(await retryAfter()).toBe('10'); // this failure opened it
    t = 3_500;
    expect(await retryAfter()).toBe('7');
    t = 9_100;
    expect(await retryAfter()).toBe('1');
  });

  it('a client’s x-bitnet-forwarded does not skip routing; the GPU key’s does', async () => {
    const seen: string[] = [];
    const fakeGpu: typeof fetch = async (_url, init) => {
      seen.push(new Headers(init?.headers).get('x-bitnet-forwarded') ?? '');
      return new Response(JSON.stringify({ object: 'chat.completion', from: 'gpu' }), {
        headers: { 'content-type': 'application/json' },
      });
    };
    const a = createApp({
      model,
      modelId: MODEL,
      apiKeys: [KEY, GPU_KEY], // an instance that is also reachable with its own GPU key (a loop)
      fetch: fakeGpu,
      router: { gpu: { url: 'http://gpu.test', apiKey: GPU_KEY }, edgeMaxTokens: 32 },
    });
    const as = (key: string, fwd?: string) => ({
      ...json,
      authorization: `Bearer ${key}`,
      ...(fwd === undefined ? {} : { 'x-bitnet-forwarded': fwd }),
    });

    const plain = await asks(a, 40, as(KEY));
    expect([plain.headers.get('x-bitnet-route'), (await plain.json()).from]).toEqual(['gpu', 'gpu']);
    const client = await asks(a, 40, as(KEY, '1'));
    expect([client.headers.get('x-bitnet-route'), client.headers.get('x-bitnet-route-reason')]).toEqual([
      'gpu',
      'large',
    ]);
    await client.json();
    expect(seen).toEqual(['1', '2']); // the hop count goes on

    const peer = await asks(a, 40, as(GPU_KEY, '1'));
    expect([peer.status, peer.headers.get('x-bitnet-route-reason')]).toEqual([200, 'forwarded']);
    expect((await peer.json()).object).toBe('chat.completion');
    expect(seen).toHaveLength(2);

    const loop = await asks(a, 40, as(KEY, '3'));
    expect(loop.status).toBe(508);
    expect((await loop.json()).error).toMatchObject({ code: 'FORWARD_LOOP', type: 'server_error' });
    const small = await asks(a, 2, as(KEY, '99')); // not forwarded, so no loop
    expect([small.status, small.headers.get('x-bitnet-route-reason')]).toEqual([200, 'small']);
    await small.json();
    const junk = await asks(a, 40, as(KEY, 'yes'));
    expect(junk.headers.get('x-bitnet-route')).toBe('gpu');
    await junk.json();
    expect(seen.at(-1)).toBe('2');
  });

  it('two instances forwarding to each other with different keys: the hop count ends the loop', async () => {
    const calls = { a: 0, b: 0 };
    let a: ReturnType<typeof createApp> | undefined;
    let b: ReturnType<typeof createApp> | undefined;
    const cfg = (other: () => ReturnType<typeof createApp>, name: 'a' | 'b', own: string, theirs: string) =>
      createApp({
        model,
        modelId: MODEL,
        apiKeys: name === 'a' ? [KEY, own] : [own],
        fetch: async (url, init) => {
          calls[name]++;
          return other().request(String(url), init);
        },
        router: { gpu: { url: `http://${name === 'a' ? 'b' : 'a'}.test`, apiKey: theirs }, edgeMaxTokens: 32 },
      });
    a = cfg(() => b!, 'a', 'key-a', 'key-b');
    b = cfg(() => a!, 'b', 'key-b', 'key-a');
    const r = await asks(a, 40, { ...json, authorization: `Bearer ${KEY}` });
    expect(r.status).toBe(200);
    expect((await r.json()).choices[0].message.content.length).toBeGreaterThan(0);
    // a → b → a → b: the third hop is refused (508), its sender serves the request itself
    expect(calls).toEqual({ a: 2, b: 1 });
  });
});
