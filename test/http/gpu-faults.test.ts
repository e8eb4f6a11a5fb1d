// The GPU pass-through against a scripted GPU (a fetch function whose answers the test writes):
// the timeouts before and after the first byte, streams cut short on each wire (chat, native,
// responses), the response headers that cross over, the GPU's Retry-After, the request id sent
// on, and the metrics of an empty answer. The GPU settings from the environment (Worker vars,
// Lambda env, `bitnet serve`) are checked at the end.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gpuEndpointFromEnv } from '../../src/adapters/env.ts';
import type { BitNetModel } from '../../src/api/bitnet-model.ts';
import { createApp } from '../../src/http/app.ts';
import { metric, sseData, tinyModel } from './helpers.ts';

const MODEL = 'tiny-gpu-faults';
let model: BitNetModel;
beforeAll(async () => {
  model = await tinyModel();
});
afterAll(() => model?.dispose());

const enc = new TextEncoder();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** What the scripted GPU saw: each request's headers, and whether its signal fired. */
interface Seen {
  headers: Headers[];
  aborted: boolean[];
}

type Script = (signal: AbortSignal) => Promise<Response> | Response;

/** A GPU whose every answer is `script`'s; records the requests. */
function scriptedGpu(script: Script): { fetch: typeof fetch; seen: Seen } {
  const seen: Seen = { headers: [], aborted: [] };
  const f: typeof fetch = async (_url, init) => {
    const i = seen.headers.length;
    seen.headers.push(new Headers(init?.headers));
    seen.aborted.push(false);
    const signal = init?.signal as AbortSignal;
    signal.addEventListener('abort', () => {
      seen.aborted[i] = true;
    });
    return script(signal);
  };
  return { fetch: f, seen };
}

/** A GPU that never answers: its fetch settles only when the request is aborted. */
const silent: Script = (signal) =>
  new Promise((_, reject) => signal.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError'))));

/** A body of these chunks, `gapMs` apart, then (unless `hang`) its end; stops when aborted. */
function chunked(chunks: string[], o: { gapMs?: number; hang?: boolean; signal?: AbortSignal } = {}) {
  let i = 0;
  return new ReadableStream<Uint8Array>({
    async pull(c) {
      if (i > 0 && o.gapMs) await sleep(o.gapMs);
      if (i < chunks.length) {
        c.enqueue(enc.encode(chunks[i++]));
        return;
      }
      if (o.hang) {
        await new Promise<void>((resolve) => o.signal?.addEventListener('abort', () => resolve()));
        c.error(o.signal?.reason);
        return;
      }
      c.close();
    },
  });
}

const SSE = { 'content-type': 'text/event-stream; charset=utf-8' };
const chunk = (text: string) =>
  `data: ${JSON.stringify({ object: 'chat.completion.chunk', choices: [{ delta: { content: text } }] })}\n\n`;

function edge(f: typeof fetch, gpu: Record<string, unknown> = {}, extra: Record<string, unknown> = {}) {
  return createApp({
    model,
    modelId: MODEL,
    fetch: f,
    router: {
      gpu: { url: 'http://gpu.test', apiKey: 'gpu-key', ...gpu },
      edgeMaxTokens: 8,
      localMaxTokens: 40, // the prompt is ~25 tokens: max_tokens 60 is too large for the edge
      breaker: { failureThreshold: 5 },
    },
    ...extra,
  });
}

const chat = (maxTokens: number, stream: boolean, headers: Record<string, string> = {}) => ({
  method: 'POST',
  headers: { 'content-type': 'application/json', ...headers },
  body: JSON.stringify({
    model: MODEL,
    messages: [{ role: 'user', content: 'route me' }],
    max_tokens: maxTokens,
    stream,
  }),
});

describe('GPU pass-through: timeouts', () => {
  it('a non-streaming answer may take longer than the first-byte limit (it comes whole, at the end)', async () => {
    const body = { id: 'x', object: 'chat.completion', choices: [{ message: { content: 'slow but whole' } }] };
    const g = scriptedGpu(async () => {
      await sleep(300);
      return Response.json(body);
    });
    const a = edge(g.fetch, { firstByteTimeoutMs: 50, responseTimeoutMs: 5_000 });
    const r = await a.request('/v1/chat/completions', chat(60, false));
    expect([r.status, r.headers.get('x-bitnet-route'), r.headers.get('x-bitnet-fallback')]).toEqual([200, 'gpu', null]);
    expect(await r.json()).toEqual(body);
  });

  it('a non-streaming answer past its own limit: 504 GPU_TIMEOUT when the edge cannot serve it, and the GPU request is stopped', async () => {
    const g = scriptedGpu(silent);
    const a = edge(g.fetch, { firstByteTimeoutMs: 20, responseTimeoutMs: 150 });
    const t0 = performance.now();
    const r = await a.request('/v1/chat/completions', chat(60, false));
    const b = await r.json();
    expect([r.status, b.error.code, r.headers.get('x-bitnet-fallback')]).toEqual([504, 'GPU_TIMEOUT', 'gpu-timeout']);
    expect(b.error.message).toMatch(/no answer within 0\.15 s; the request is too large for the edge/);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(140);
    expect(g.seen.aborted).toEqual([true]);
  });

  it('a streaming request waits only the first-byte limit, then falls back to the edge when it can', async () => {
    const g = scriptedGpu(silent);
    const a = edge(g.fetch, { firstByteTimeoutMs: 60, responseTimeoutMs: 60_000 });
    const r = await a.request('/v1/chat/completions', chat(12, true)); // over edgeMaxTokens, fits the edge
    expect([r.status, r.headers.get('x-bitnet-route'), r.headers.get('x-bitnet-fallback')]).toEqual([
      200,
      'edge',
      'gpu-timeout',
    ]);
    expect(sseData(await r.text()).at(-1)).toBe('[DONE]');
  });

  it('a GPU that stalls mid-stream: after the idle limit the client gets an error event, and the GPU request is stopped', async () => {
    const g = scriptedGpu(
      (signal) => new Response(chunked([chunk('a'), chunk('b')], { hang: true, signal }), { headers: SSE }),
    );
    const a = edge(g.fetch, { idleTimeoutMs: 120 });
    const t0 = performance.now();
    const r = await a.request('/v1/chat/completions', chat(60, true));
    expect([r.status, r.headers.get('x-bitnet-route')]).toEqual([200, 'gpu']);
    const events = sseData(await r.text());
    expect(performance.now() - t0).toBeGreaterThanOrEqual(110);
    expect(events.length).toBe(3);
    const err = JSON.parse(events[2]).error;
    expect([err.code, err.type]).toEqual(['GPU_STREAM_FAILED', 'server_error']);
    expect(err.message).toMatch(/sent nothing for 0\.12 s mid-stream/);
    expect(g.seen.aborted).toEqual([true]);
    const m = await (await a.request('/metrics')).text();
    expect(metric(m, 'bitnet_gpu_failures_total', { phase: 'mid_stream' })).toBe(1);
  });

  it('chunks that keep coming, each within the idle limit, are never cut', async () => {
    const parts = Array.from({ length: 6 }, (_, i) => chunk(String(i)));
    const g = scriptedGpu(
      () => new Response(chunked([...parts, 'data: [DONE]\n\n'], { gapMs: 200 }), { headers: SSE }),
    );
    const a = edge(g.fetch, { idleTimeoutMs: 800 });
    const r = await a.request('/v1/chat/completions', chat(60, true));
    const events = sseData(await r.text());
    expect(events.length).toBe(7); // 6 × 200 ms in all, over the idle limit but never between two chunks
    expect(events.at(-1)).toBe('[DONE]');
  });
});

describe('GPU pass-through: a stream that ends before its final event', () => {
  it('chat: the client gets the error event instead of a short answer that looks complete', async () => {
    const g = scriptedGpu(() => new Response(chunked([chunk('a'), chunk('b')]), { headers: SSE }));
    const a = edge(g.fetch);
    const r = await a.request('/v1/chat/completions', chat(60, true));
    const events = sseData(await r.text());
    expect(events.length).toBe(3);
    expect(JSON.parse(events[2]).error.code).toBe('GPU_STREAM_FAILED');
    const m = await (await a.request('/metrics')).text();
    expect(metric(m, 'bitnet_gpu_failures_total', { phase: 'mid_stream' })).toBe(1);
  });

  it('native /v1/generate: an `event: error` with the error body, as the app itself ends a failed stream', async () => {
    const g = scriptedGpu(
      () => new Response(chunked(['event: token\ndata: {"id":5,"text":"x"}\n\n']), { headers: SSE }),
    );
    const r = await edge(g.fetch).request('/v1/generate', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: MODEL, prompt: 'route me '.repeat(4), maxNewTokens: 60, stream: true }),
    });
    expect(r.headers.get('x-bitnet-route')).toBe('gpu');
    const text = await r.text();
    expect(text.startsWith('event: token\n')).toBe(true);
    const last = text.trimEnd().split('\n\n').at(-1)!;
    expect(last.split('\n')[0]).toBe('event: error');
    expect(JSON.parse(last.split('\n')[1].slice(6)).error.code).toBe('GPU_STREAM_FAILED');
  });

  it('native: a stream that ends with `event: done` is complete', async () => {
    const g = scriptedGpu(
      () =>
        new Response(chunked(['event: token\ndata: {"id":5,"text":"x"}\n\n', 'event: done\ndata: {"text":"x"}\n\n']), {
          headers: SSE,
        }),
    );
    const r = await edge(g.fetch).request('/v1/generate', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: MODEL, prompt: 'route me '.repeat(4), maxNewTokens: 60, stream: true }),
    });
    expect((await r.text()).trimEnd().split('\n\n').at(-1)!.split('\n')[0]).toBe('event: done');
  });

  it('responses: an `error` event whose sequence_number follows the last one the GPU sent', async () => {
    const ev = (type: string, n: number) => `event: ${type}\ndata: ${JSON.stringify({ type, sequence_number: n })}\n\n`;
    // the second event arrives in two pieces, split inside its data line
    const second = ev('response.output_text.delta', 1);
    const g = scriptedGpu(
      () =>
        new Response(chunked([ev('response.created', 0), second.slice(0, 40), second.slice(40)]), {
          headers: SSE,
        }),
    );
    const r = await edge(g.fetch).request('/v1/responses', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: MODEL, input: 'route me', max_output_tokens: 60, stream: true }),
    });
    expect(r.headers.get('x-bitnet-route')).toBe('gpu');
    const last = (await r.text()).trimEnd().split('\n\n').at(-1)!.split('\n');
    expect(last[0]).toBe('event: error');
    const body = JSON.parse(last[1].slice(6));
    expect(body).toMatchObject({ type: 'error', sequence_number: 2, code: 'GPU_STREAM_FAILED', param: null });
  });
});

describe('GPU pass-through: headers, Retry-After, request ids, metrics', () => {
  it('only the body headers cross over: no cookies, CORS, server names or the GPU’s own route headers', async () => {
    const g = scriptedGpu(() =>
      Response.json(
        { ok: true },
        {
          headers: {
            'set-cookie': 'gpusession=secret; Path=/',
            'access-control-allow-origin': '*',
            server: 'gpu-box',
            'x-internal-gpu-host': '10.0.0.7',
            'x-bitnet-fallback': 'upstream',
            'cache-control': 'no-store',
          },
        },
      ),
    );
    const a = edge(g.fetch, {}, { cors: { origins: ['https://good.example'] } });
    const r = await a.request('/v1/chat/completions', chat(60, false, { origin: 'https://evil.example' }));
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/^application\/json/);
    expect(r.headers.get('cache-control')).toBe('no-store');
    for (const h of ['set-cookie', 'access-control-allow-origin', 'server', 'x-internal-gpu-host', 'x-bitnet-fallback'])
      expect(r.headers.get(h), h).toBeNull();
  });

  it('a GPU 429 with Retry-After: the 503 keeps the GPU’s wait when it is the longer one', async () => {
    const g = scriptedGpu(() => new Response('busy', { status: 429, headers: { 'retry-after': '120' } }));
    const r = await edge(g.fetch).request('/v1/chat/completions', chat(60, true));
    expect([r.status, r.headers.get('retry-after'), (await r.json()).error.code]).toEqual([
      503,
      '120',
      'GPU_UNAVAILABLE',
    ]);
    const date = new Date(Date.now() + 30_000).toUTCString();
    const g2 = scriptedGpu(() => new Response('busy', { status: 503, headers: { 'retry-after': date } }));
    const r2 = await edge(g2.fetch).request('/v1/chat/completions', chat(60, true));
    expect(Number(r2.headers.get('retry-after'))).toBeGreaterThanOrEqual(28);
    expect(Number(r2.headers.get('retry-after'))).toBeLessThanOrEqual(31);
  });

  it('the GPU gets the request id the client gets back, made up or the client’s own', async () => {
    const g = scriptedGpu(() => Response.json({ ok: true }));
    const a = edge(g.fetch);
    const mine = await a.request('/v1/chat/completions', chat(60, false));
    const id = mine.headers.get('x-request-id');
    expect(id).toMatch(/^req_[0-9a-f]{32}$/);
    expect(g.seen.headers[0].get('x-request-id')).toBe(id);
    const theirs = await a.request('/v1/chat/completions', chat(60, false, { 'x-request-id': 'client-7' }));
    expect(theirs.headers.get('x-request-id')).toBe('client-7');
    expect(g.seen.headers[1].get('x-request-id')).toBe('client-7');
    // an unusable id is replaced on both sides by the same new one
    const bad = await a.request('/v1/chat/completions', chat(60, false, { 'x-request-id': 'two words' }));
    expect(g.seen.headers[2].get('x-request-id')).toBe(bad.headers.get('x-request-id'));
    expect(bad.headers.get('x-request-id')).toMatch(/^req_/);
    expect(g.seen.headers[0].get('authorization')).toBe('Bearer gpu-key');
  });

  it('an empty GPU answer is counted under its status, not 0', async () => {
    const g = scriptedGpu(() => new Response(null, { status: 200 }));
    const a = edge(g.fetch);
    const r = await a.request('/v1/chat/completions', chat(60, false));
    expect([r.status, await r.text()]).toEqual([200, '']);
    const m = await (await a.request('/metrics')).text();
    const labels = { endpoint: '/v1/chat/completions', route: 'gpu' };
    expect(metric(m, 'bitnet_http_requests_total', { ...labels, status: '200' })).toBe(1);
    expect(m).not.toMatch(/bitnet_http_requests_total\{[^}]*status="0"/);
  });
});

describe('GPU settings from the environment', () => {
  it('the URL must be an absolute http(s) URL with a host; timeouts are seconds > 0', () => {
    expect(gpuEndpointFromEnv({}, 'BITNET_')).toBeUndefined();
    expect(
      gpuEndpointFromEnv(
        {
          GPU_URL: 'https://gpu.example/',
          GPU_API_KEY: 'k',
          GPU_FIRST_BYTE_TIMEOUT_S: '12',
          GPU_TIMEOUT_S: '900',
          GPU_IDLE_TIMEOUT_S: '0.5',
        },
        '',
      ),
    ).toEqual({
      url: 'https://gpu.example/',
      apiKey: 'k',
      firstByteTimeoutMs: 12_000,
      responseTimeoutMs: 900_000,
      idleTimeoutMs: 500,
    });
    const code = (env: Record<string, string>) => {
      try {
        gpuEndpointFromEnv(env, 'BITNET_');
        return 'accepted';
      } catch (e) {
        return `${(e as { code: string }).code}: ${(e as Error).message}`;
      }
    };
    for (const url of ['not a url', 'ftp://gpu.example', 'http://', '127.0.0.1:8080', 'gpu.example'])
      expect(code({ BITNET_GPU_URL: url }), url).toMatch(/^INVALID_ENV: BITNET_GPU_URL must be/);
    expect(code({ BITNET_GPU_URL: 'http://127.0.0.1:8080' })).toBe('accepted');
    for (const v of ['0', '-1', 'soon', '1e3'])
      expect(code({ BITNET_GPU_URL: 'http://g.test', BITNET_GPU_IDLE_TIMEOUT_S: v }), v).toMatch(
        /^INVALID_ENV: BITNET_GPU_IDLE_TIMEOUT_S must be a number of seconds/,
      );
    // a URL given another way (bitnet serve --gpu-url) keeps the variables' key and timeouts
    expect(
      gpuEndpointFromEnv({ BITNET_GPU_API_KEY: 'k', BITNET_GPU_IDLE_TIMEOUT_S: '5' }, 'BITNET_', 'http://flag.test'),
    ).toMatchObject({ url: 'http://flag.test', apiKey: 'k', idleTimeoutMs: 5000 });
    // a bad timeout is refused even without a URL: the setting is wrong either way
    expect(code({ BITNET_GPU_TIMEOUT_S: 'x' })).toMatch(/^INVALID_ENV: BITNET_GPU_TIMEOUT_S/);
  });
});

describe('the GPU server’s settings (gpu-lambda/server.ts)', () => {
  it('are read strictly, before any model loads: a bad value is INVALID_ENV naming it', async () => {
    const { gpuServerSettings } = await import('../../gpu-lambda/server.ts');
    const base = { BITNET_MODEL: '/models/m.gguf', BITNET_API_KEYS: 'k' };
    const s = gpuServerSettings({ ...base, BITNET_SHUTDOWN_GRACE_S: '25', PORT: '9000' });
    expect(s).toMatchObject({
      location: '/models/m.gguf',
      apiKeys: ['k'],
      limits: { maxConcurrent: 64, maxQueue: 256 },
      defaultMaxTokens: 256,
      host: '0.0.0.0',
      port: 9000,
      graceMs: 25_000,
    });
    for (const [k, v] of [
      ['BITNET_MAX_CONCURRENT', '1e3'],
      ['BITNET_MAX_CONCURRENT', '0'],
      ['BITNET_MAX_QUEUE', '0x10'],
      ['BITNET_MAX_TOKENS', '4.0'],
      ['PORT', '70000'],
      ['BITNET_SHUTDOWN_GRACE_S', 'soon'],
    ])
      expect(() => gpuServerSettings({ ...base, [k]: v }), `${k}=${v}`).toThrow(
        expect.objectContaining({ code: 'INVALID_ENV', message: expect.stringMatching(new RegExp(`^${k} must be`)) }),
      );
    expect(() => gpuServerSettings({})).toThrow(expect.objectContaining({ code: 'MODEL_REQUIRED' }));
  });
});
