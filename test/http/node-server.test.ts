// The Node adapter (bitnet serve's server) driven by the real `openai` client over HTTP:
// streaming and not, 64 concurrent streams, clean 429s past the limit, a client that disconnects,
// and RSS over 1,000 sequential requests.
import { connect, type Socket } from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LOOPBACK, type RunningServer, resolveApiKeys, safeHost, serveNode } from '../../src/adapters/node.ts';
import type { BitNetModel } from '../../src/api/bitnet-model.ts';
import type { ServedModel } from '../../src/http/model-holder.ts';
import { auth, KEY, metric, microModel, readUntil, sseData, tinyModel, waitFor } from './helpers.ts';

const MODEL = 'tiny-node';
let model: BitNetModel;
let microM: BitNetModel;
let server: RunningServer;
let micro: RunningServer;

beforeAll(async () => {
  model = await tinyModel();
  microM = await microModel();
  server = await serveNode(
    { model, modelId: MODEL, apiKeys: [KEY], limits: { maxConcurrent: 4, maxQueue: 64 } },
    { port: 0 },
  );
  micro = await serveNode(
    { model: microM, modelId: 'micro', apiKeys: [KEY], limits: { maxConcurrent: 4, maxQueue: 64 } },
    { port: 0 },
  );
});
afterAll(async () => {
  await server?.close();
  await micro?.close();
});

const client = (url = server.url, apiKey = KEY) => new OpenAI({ baseURL: `${url}/v1`, apiKey, maxRetries: 0 });
const metrics = async (url = server.url) =>
  (await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${KEY}` } })).text();

describe('bitnet serve (Node) with the openai client', () => {
  it('streams a chat completion; the stream and the JSON answer agree for the same seed', async () => {
    const c = client();
    const params = {
      model: MODEL,
      messages: [{ role: 'user' as const, content: 'tell me a story' }],
      max_tokens: 16,
      seed: 1234,
      temperature: 0.8,
    };
    const stream = await c.chat.completions.create({
      ...params,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let deltas = 0;
    let finish: string | null | undefined;
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const ch of stream) {
      const d = ch.choices[0];
      if (d?.delta?.content) deltas++;
      text += d?.delta?.content ?? '';
      if (d?.finish_reason) finish = d.finish_reason;
      if (ch.usage) usage = ch.usage;
    }
    expect(deltas).toBeGreaterThan(1);
    expect(finish).toMatch(/^(stop|length)$/);
    const whole = await c.chat.completions.create(params);
    expect(whole.choices[0].message.content).toBe(text);
    expect(whole.choices[0].finish_reason).toBe(finish);
    // the same prompt again: all of it but its last token comes from the prompt cache
    expect(whole.usage).toEqual({
      ...usage,
      prompt_tokens_details: { cached_tokens: usage!.prompt_tokens - 1 },
    });
  });

  it('completions, stream and not; models.list', async () => {
    const c = client();
    const a = await c.completions.create({ model: MODEL, prompt: 'abc', max_tokens: 8, seed: 9 });
    let b = '';
    for await (const ch of await c.completions.create({
      model: MODEL,
      prompt: 'abc',
      max_tokens: 8,
      seed: 9,
      stream: true,
    }))
      b += ch.choices[0]?.text ?? '';
    expect(b).toBe(a.choices[0].text);
    expect((await c.models.list()).data[0].id).toBe(MODEL);
  });

  it('unauthenticated calls to non-health routes get 401; health stays open', async () => {
    const e = await client(server.url, 'wrong')
      .models.list()
      .catch((x) => x);
    expect(e).toBeInstanceOf(OpenAI.AuthenticationError);
    expect(e.status).toBe(401);
    for (const p of ['/v1/models', '/metrics', '/v1/chat/completions', '/v1/completions', '/v1/generate']) {
      const r = await fetch(server.url + p, {
        method: p.startsWith('/v1/') && p !== '/v1/models' ? 'POST' : 'GET',
        headers: { 'content-type': 'application/json' },
        body: p.startsWith('/v1/') && p !== '/v1/models' ? '{}' : undefined,
      });
      expect([p, r.status]).toEqual([p, 401]);
      await r.body?.cancel();
    }
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${server.url}/readyz`)).status).toBe(200);
  });

  it('64 concurrent streaming requests finish with 0 errors', async () => {
    const c = client(micro.url);
    const results = await Promise.allSettled(
      Array.from({ length: 64 }, async (_, i) => {
        let n = 0;
        for await (const ch of await c.chat.completions.create({
          model: 'micro',
          messages: [{ role: 'user', content: `request ${i}` }],
          max_tokens: 6,
          seed: i,
          stream: true,
        })) {
          if (ch.choices[0]?.delta?.content) n++;
        }
        return n;
      }),
    );
    const failed = results.filter((r) => r.status === 'rejected');
    console.log(
      `64 concurrent streams (maxConcurrent 4, maxQueue 64): ${results.length - failed.length} ok, ${failed.length} errors`,
    );
    expect(failed).toEqual([]);
    const m = await metrics(micro.url);
    expect(metric(m, 'bitnet_http_requests_total', { endpoint: '/v1/chat/completions', status: '200' })).toBe(64);
    expect(metric(m, 'bitnet_queue_depth')).toBe(0);
    expect(metric(m, 'bitnet_active_generations')).toBe(0);
  });

  it('past the configured limit: clean 429s with Retry-After, everything else completes', async () => {
    const small = await serveNode(
      {
        model: microM,
        modelId: 'micro',
        apiKeys: [KEY],
        limits: { maxConcurrent: 2, maxQueue: 6, retryAfterSeconds: 2 },
      },
      { port: 0 },
    );
    try {
      const c = client(small.url);
      const results = await Promise.allSettled(
        Array.from({ length: 64 }, async (_, i) => {
          let text = '';
          for await (const ch of await c.chat.completions.create({
            model: 'micro',
            messages: [{ role: 'user', content: `r${i}` }],
            max_tokens: 12,
            seed: i,
            stream: true,
          })) {
            text += ch.choices[0]?.delta?.content ?? '';
          }
          return text;
        }),
      );
      const ok = results.filter((r) => r.status === 'fulfilled').length;
      const rejected = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => r.reason);
      const limited = rejected.filter((e) => e instanceof OpenAI.RateLimitError);
      console.log(
        `64 concurrent streams (maxConcurrent 2, maxQueue 6): ${ok} ok, ${limited.length} x 429, ${rejected.length - limited.length} other errors`,
      );
      expect(rejected.length - limited.length).toBe(0);
      expect(ok).toBeGreaterThanOrEqual(8);
      expect(limited.length).toBeGreaterThan(0);
      for (const e of limited) {
        expect(e.status).toBe(429);
        expect(e.headers.get('retry-after')).toBe('2');
        expect(e.code).toBe('QUEUE_FULL');
      }
      expect(
        metric(await metrics(small.url), 'bitnet_http_requests_total', {
          endpoint: '/v1/chat/completions',
          status: '429',
        }),
      ).toBe(limited.length);
    } finally {
      await small.close();
    }
  });

  it('a client that disconnects mid-stream aborts the generation and frees the slot', async () => {
    // seed 1 runs the full 80 tokens on this model (no end-of-generation token)
    const params = { model: MODEL, messages: [{ role: 'user' as const, content: 'long' }], max_tokens: 80, seed: 1 };
    const before = metric(await metrics(), 'bitnet_tokens_total', { type: 'completion' });
    const ac = new AbortController();
    const r = await fetch(`${server.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ ...params, stream: true }),
      signal: ac.signal,
    });
    const reader = r.body!.getReader();
    await reader.read();
    expect(metric(await metrics(), 'bitnet_active_generations')).toBe(1);
    ac.abort();
    await waitFor(async () => metric(await metrics(), 'bitnet_active_generations') === 0, 'the generation to stop');
    await waitFor(
      () => model.engine.cache.sequenceIds().length === model.engine.promptCacheSize,
      'the KV cache to hold nothing but the prompt cache',
    );
    // a cancelled generation counts no completion tokens; a finished one would have added 80
    expect(metric(await metrics(), 'bitnet_tokens_total', { type: 'completion' })).toBe(before);
    const whole = await client().chat.completions.create(params);
    expect([whole.choices[0].finish_reason, whole.usage?.completion_tokens]).toEqual(['length', 80]);
  });
});

describe('bind address and keys', () => {
  it('without keys the server binds to 127.0.0.1 only and warns', async () => {
    const warnings: string[] = [];
    expect(safeHost('0.0.0.0', false, (m) => warnings.push(m))).toBe(LOOPBACK);
    expect(safeHost('0.0.0.0', true)).toBe('0.0.0.0');
    const s = await serveNode({ model, modelId: MODEL }, { host: '0.0.0.0', port: 0, warn: (m) => warnings.push(m) });
    try {
      expect(s.host).toBe(LOOPBACK);
      expect(s.url.startsWith('http://127.0.0.1:')).toBe(true);
      expect(warnings.join('\n')).toMatch(/no API key/);
      expect((await fetch(`${s.url}/v1/models`)).status).toBe(200);
    } finally {
      await s.close();
    }
  });

  it('keys come from flags and BITNET_API_KEYS', () => {
    expect(resolveApiKeys(['a', ' b '], { BITNET_API_KEYS: 'c, d,,a' })).toEqual(['a', 'b', 'c', 'd']);
    expect(resolveApiKeys([], {})).toEqual([]);
  });
});

describe('memory', () => {
  it('RSS stays flat over 1,000 sequential requests', async () => {
    const one = async (i: number) => {
      const chat = i % 10 === 0;
      const r = await fetch(`${micro.url}/v1/${chat ? 'chat/completions' : 'completions'}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          model: 'micro',
          ...(chat ? { messages: [{ role: 'user', content: `n${i}` }] } : { prompt: `n${i}` }),
          max_tokens: 2,
          seed: i,
          stream: i % 2 === 0,
        }),
      });
      if (r.status !== 200) throw new Error(`request ${i}: ${r.status}`);
      await r.text();
    };
    const served = async () => {
      const m = await metrics(micro.url);
      return ['/v1/completions', '/v1/chat/completions'].reduce(
        (n, endpoint) => n + metric(m, 'bitnet_http_requests_total', { endpoint, status: '200' }),
        0,
      );
    };
    const start = await served();
    // A full GC before each sample, so the numbers show what is retained, not when V8 chose to collect.
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    for (let i = 0; i < 100; i++) await one(i); // warm-up: JIT, pools, caches
    const samples: number[] = [];
    const heap: number[] = [];
    for (let i = 0; i < 1000; i++) {
      await one(i);
      if (i % 100 === 99) {
        gc();
        samples.push(process.memoryUsage().rss);
        heap.push(process.memoryUsage().heapUsed);
      }
    }
    const mib = (b: number) => (b / 2 ** 20).toFixed(1);
    const growth = (Math.max(...samples) - samples[0]) / 2 ** 20;
    console.log(
      `RSS over 1,000 sequential requests (MiB after GC, every 100): ${samples.map(mib).join(' ')}; max growth ${growth.toFixed(1)} MiB; heap ${mib(heap[0])} -> ${mib(heap.at(-1)!)} MiB`,
    );
    expect(growth).toBeLessThan(24);
    expect(heap.at(-1)! - heap[0]).toBeLessThan(8 * 2 ** 20);
    expect((await served()) - start).toBe(1100);
  });
});

/**
 * A model whose generations stop after their first token until `release()` (or their signal
 * aborts): a request stays in flight exactly as long as a test wants, with no timing involved.
 */
function gatedModel(base: BitNetModel): ServedModel & { release(): void; started: () => number } {
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  let started = 0;
  return {
    engine: {
      backendName: base.engine.backendName,
      async *stream(prompt, config, signal) {
        started++;
        const it = base.engine.stream(prompt, config, signal);
        try {
          let r = await it.next();
          let n = 0;
          while (!r.done) {
            yield r.value;
            if (n++ === 0) {
              await Promise.race([
                gate,
                new Promise<void>((res) => {
                  if (signal?.aborted) res();
                  signal?.addEventListener('abort', () => res(), { once: true });
                }),
              ]);
            }
            r = await it.next();
          }
          return r.value;
        } finally {
          await it.return(undefined as never);
        }
      },
    },
    tokenizer: base.tokenizer,
    modelInfo: () => base.modelInfo(),
    release: () => open(),
    started: () => started,
  };
}

/** A raw TCP connection: write bytes, collect what comes back until the server closes it. */
function rawConnection(url: string): Promise<{ sock: Socket; closed: Promise<string> }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const sock = connect(Number(port), hostname, () => {
      let got = '';
      sock.on('data', (d) => (got += d));
      const closed = new Promise<string>((r) => sock.on('close', () => r(got)));
      resolve({ sock, closed });
    });
    sock.once('error', reject);
  });
}

const refused = (url: string) =>
  new Promise<boolean>((resolve) => {
    const { hostname, port } = new URL(url);
    const sock = connect(Number(port), hostname);
    sock.once('connect', () => {
      sock.destroy();
      resolve(false);
    });
    sock.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ECONNREFUSED'));
  });

const chatStream = (url: string, extra: Record<string, unknown> = {}) =>
  fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: auth,
    body: JSON.stringify({
      model: 'gated',
      messages: [{ role: 'user', content: 'hi' }],
      max_tokens: 6,
      seed: 1,
      stream: true,
      ...extra,
    }),
  });

describe('graceful shutdown (RunningServer.shutdown)', () => {
  it('drains: no new connections, /readyz 503 on an open one, the stream in flight finishes with [DONE]', async () => {
    const base = await tinyModel();
    const gated = gatedModel(base);
    const s = await serveNode({ model: gated, modelId: 'gated', apiKeys: [KEY] }, { port: 0 });
    const r = await chatStream(s.url);
    expect(r.status).toBe(200);
    const first = await readUntil(r, (t) => sseData(t).length >= 2); // the role chunk and the first token
    expect(s.inFlight).toBe(1);
    // a connection that has begun a /readyz request before the shutdown, and finishes it after
    const ready = await rawConnection(s.url);
    ready.sock.write('GET /readyz HTTP/1.1\r\nHost: x\r\n');
    await waitFor(() => s.inFlight === 1, 'nothing else'); // headers incomplete: no request yet

    const done = s.shutdown(60_000);
    expect(s.draining).toBe(true);
    expect(await refused(s.url)).toBe(true);
    ready.sock.write('\r\n');
    const readyAnswer = await ready.closed;
    expect(readyAnswer).toMatch(/^HTTP\/1\.1 503/);
    expect(readyAnswer).toContain('"status":"draining"');

    gated.release();
    const text = await first.rest();
    const data = sseData(text);
    expect(data.at(-1)).toBe('[DONE]');
    expect(data.some((d) => d.includes('"error"'))).toBe(false);
    expect(await done).toEqual({ finished: 1, cut: 0 });
    expect(s.inFlight).toBe(0);
  });

  it('past the grace period: streams end with a SHUTTING_DOWN error event, unanswered requests get 503, generations stop', async () => {
    const base = await tinyModel();
    const gated = gatedModel(base);
    const s = await serveNode(
      { model: gated, modelId: 'gated', apiKeys: [KEY], limits: { maxConcurrent: 4 } },
      { port: 0 },
    );
    const chat = await readUntil(await chatStream(s.url), (t) => sseData(t).length >= 2);
    const native = await readUntil(
      await fetch(`${s.url}/v1/generate`, {
        method: 'POST',
        headers: auth,
        body: JSON.stringify({ model: 'gated', prompt: 'hi', maxNewTokens: 6, seed: 1, stream: true }),
      }),
      (t) => t.includes('event: token'),
    );
    const whole = fetch(`${s.url}/v1/completions`, {
      method: 'POST',
      headers: auth,
      body: JSON.stringify({ model: 'gated', prompt: 'hi', max_tokens: 6, seed: 1 }),
    });
    await waitFor(() => gated.started() === 3, 'the third generation to start');
    expect(s.inFlight).toBe(3);

    expect(await s.shutdown(0)).toEqual({ finished: 0, cut: 3 });

    const chatData = sseData(await chat.rest());
    expect(chatData).not.toContain('[DONE]');
    expect(JSON.parse(chatData.at(-1)!).error.code).toBe('SHUTTING_DOWN');
    const nativeText = await native.rest();
    expect(nativeText).toMatch(/event: error\ndata: \{"error":\{[^\n]*"code":"SHUTTING_DOWN"/);
    expect(nativeText).not.toContain('event: done');
    const w = await whole;
    expect(w.status).toBe(503);
    expect(w.headers.get('retry-after')).toBe('1');
    expect((await w.json()).error).toMatchObject({ code: 'SHUTTING_DOWN', type: 'server_error' });
    // the generations were aborted, not left running: their KV cache entries are freed
    await waitFor(() => base.engine.cache.size() === 0, 'the KV cache to be freed');
  });

  it('close() cuts at once, also in the middle of a drain', async () => {
    const base = await tinyModel();
    const gated = gatedModel(base);
    const s = await serveNode({ model: gated, modelId: 'gated', apiKeys: [KEY] }, { port: 0 });
    const chat = await readUntil(await chatStream(s.url), (t) => sseData(t).length >= 2);
    const draining = s.shutdown(600_000);
    await s.close();
    expect(await draining).toEqual({ finished: 0, cut: 1 });
    expect(JSON.parse(sseData(await chat.rest()).at(-1)!).error.code).toBe('SHUTTING_DOWN');
  });
});

describe('request timeout (receiving a request)', () => {
  it('a body that arrives too slowly gets 408; a stream that outlasts the limit is not cut', async () => {
    const base = await tinyModel();
    const gated = gatedModel(base);
    const s = await serveNode({ model: gated, modelId: 'gated', apiKeys: [KEY] }, { port: 0, requestTimeoutMs: 300 });
    try {
      expect(s.requestTimeoutMs).toBe(300);
      const slow = await rawConnection(s.url);
      slow.sock.write(
        `POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEY}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"model":`,
      );
      // the app's JSON error body, as every other error has (not Node's bare status line)
      const answer = await slow.closed;
      expect(answer).toMatch(/^HTTP\/1\.1 408 Request Timeout\r\n/);
      expect(answer).toMatch(/\r\nContent-Type: application\/json; charset=utf-8\r\n/i);
      expect(JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)).error).toMatchObject({
        code: 'REQUEST_TIMEOUT',
        type: 'invalid_request_error',
      });
      // a request line the parser refuses: 400 MALFORMED_HTTP, also as JSON
      const garbled = await rawConnection(s.url);
      garbled.sock.write('NOT HTTP AT ALL\r\n\r\n');
      const malformed = await garbled.closed;
      expect(malformed).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/);
      expect(JSON.parse(malformed.slice(malformed.indexOf('\r\n\r\n') + 4)).error.code).toBe('MALFORMED_HTTP');

      const stream = await readUntil(await chatStream(s.url), (t) => sseData(t).length >= 2);
      // the response stays open well past the request timeout (and Node's check interval) ...
      await new Promise((r) => setTimeout(r, 1200));
      gated.release();
      // ... and still ends normally
      expect(sseData(await stream.rest()).at(-1)).toBe('[DONE]');
    } finally {
      await s.close();
    }
  });

  it('defaults to 30 s; 0 turns the limit off', async () => {
    const a = await serveNode({ model, modelId: MODEL, apiKeys: [KEY] }, { port: 0 });
    const b = await serveNode({ model, modelId: MODEL, apiKeys: [KEY] }, { port: 0, requestTimeoutMs: 0 });
    try {
      expect(a.requestTimeoutMs).toBe(30_000);
      expect(b.requestTimeoutMs).toBe(0);
    } finally {
      await a.close();
      await b.close();
    }
  });
});
