// The Lambda adapter under a local stand-in for the `awslambda` global (streamifyResponse +
// HttpResponseStream with the runtime's prelude: metadata JSON, then 8 NUL bytes). A gated model
// shows the chunks reach the response stream while the generation is still running; a response
// stream that fails mid-stream (the client went away) must free the generation's slot; malformed
// events get a real status; the environment is parsed strictly, and a bad value is reported, not
// crashed on.
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  createLambdaHandler,
  createLambdaHandlerFromEnv,
  depsFromEnv,
  handler as exportedHandler,
} from '../../src/adapters/aws-lambda.ts';
import { envBool, envInt } from '../../src/adapters/env.ts';
import { eventToRequest, streamingHandler } from '../../src/adapters/lambda-stream.ts';
import type { BitNetModel } from '../../src/api/bitnet-model.ts';
import { isBitNetError } from '../../src/errors.ts';
import type { GenerationOutcome, TokenEvent } from '../../src/generate/engine.ts';
import type { ServedModel } from '../../src/http/model-holder.ts';
import { convertToPack, ggufInput, MemoryPackSink } from '../../src/shards/convert.ts';
import { MemorySource } from '../../src/sources/byte-source.ts';
import { synthBytes } from '../helpers/models.ts';
import { KEY, metric, tinyModel, waitFor } from './helpers.ts';

/** What the Lambda runtime gives the handler: a writable that records what arrives, and when. */
class ResponseStream extends Writable {
  readonly chunks: Buffer[] = [];
  metadata: { statusCode: number; headers: Record<string, string> } | undefined;
  private waiters: { test: (s: string) => boolean; resolve: () => void }[] = [];

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.chunks.push(Buffer.from(chunk));
    const text = this.text;
    const ready = this.waiters.filter((w) => w.test(text));
    this.waiters = this.waiters.filter((w) => !ready.includes(w));
    for (const w of ready) w.resolve();
    cb();
  }

  /** The body after the prelude. */
  get text(): string {
    const all = Buffer.concat(this.chunks);
    const sep = all.indexOf(Buffer.alloc(8));
    return sep < 0 ? '' : all.subarray(sep + 8).toString('utf8');
  }

  until(test: (s: string) => boolean): Promise<void> {
    if (test(this.text)) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ test, resolve }));
  }
}

const standIn = {
  streamifyResponse: <F>(fn: F) => fn,
  HttpResponseStream: {
    from(stream: ResponseStream, metadata: ResponseStream['metadata']) {
      stream.metadata = metadata;
      stream.write(JSON.stringify(metadata));
      stream.write(Buffer.alloc(8));
      return stream;
    },
  },
};

type Handler = (event: unknown, stream: ResponseStream, context: unknown) => Promise<void>;

function urlEvent(
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
  query = '',
): Record<string, unknown> {
  return {
    version: '2.0',
    routeKey: '$default',
    rawPath: path,
    rawQueryString: query,
    headers: {
      host: 'abc123.lambda-url.us-east-1.on.aws',
      ...(body ? { 'content-type': 'application/json' } : {}),
      ...headers,
    },
    requestContext: {
      accountId: 'anonymous',
      apiId: 'abc123',
      domainName: 'abc123.lambda-url.us-east-1.on.aws',
      http: { method, path, protocol: 'HTTP/1.1', sourceIp: '127.0.0.1', userAgent: 'vitest' },
      requestId: 'req-1',
      routeKey: '$default',
      stage: '$default',
      time: '01/Jan/2026:00:00:00 +0000',
      timeEpoch: 0,
    },
    body: body === undefined ? undefined : JSON.stringify(body),
    isBase64Encoded: false,
  };
}

let tiny: BitNetModel;
beforeAll(async () => {
  tiny = await tinyModel();
  (globalThis as { awslambda?: unknown }).awslambda = standIn;
});
afterAll(() => {
  delete (globalThis as { awslambda?: unknown }).awslambda;
});

describe('AWS Lambda adapter (streamHandle)', () => {
  it('outside Lambda the exported handler refuses to run', () => {
    expect(() => (exportedHandler as unknown as () => void)()).toThrow(/awslambda global/);
  });

  it('streams chunks as they are generated, not at the end', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let finished = false;
    const gated: ServedModel = {
      tokenizer: tiny.tokenizer,
      modelInfo: () => tiny.modelInfo(),
      engine: {
        backendName: 'gated',
        async *stream(): AsyncGenerator<TokenEvent, GenerationOutcome> {
          yield { id: 1, text: 'Hello' };
          await gate;
          yield { id: 2, text: ' world' };
          finished = true;
          return {
            tokenIds: [1, 2],
            text: 'Hello world',
            finishReason: 'stop',
            promptTokens: 3,
            generatedTokens: 2,
            timings: { prefillMs: 0, decodeMs: 0, totalMs: 0, firstTokenMs: 0 },
            cachedPromptTokens: 0,
          };
        },
      },
    };
    const handler = createLambdaHandler({ model: gated, modelId: 'gated', apiKeys: [KEY] }) as unknown as Handler;
    const rs = new ResponseStream();
    const done = handler(
      urlEvent(
        'POST',
        '/v1/chat/completions',
        { messages: [{ role: 'user', content: 'hi' }], stream: true },
        { authorization: `Bearer ${KEY}` },
      ),
      rs,
      {},
    );

    await rs.until((t) => t.includes('Hello'));
    // the first token is out while the generation waits at the gate
    expect(finished).toBe(false);
    expect(rs.text).not.toContain('world');
    expect(rs.metadata?.statusCode).toBe(200);
    expect(rs.metadata?.headers['content-type']).toMatch(/^text\/event-stream/);
    expect(rs.metadata?.headers['x-bitnet-route']).toBe('edge');
    const before = rs.chunks.length;

    release();
    await done;
    expect(finished).toBe(true);
    expect(rs.chunks.length).toBeGreaterThan(before);
    const events = rs.text.split('\n\n').filter(Boolean);
    expect(events.at(-1)).toBe('data: [DONE]');
    const content = events
      .slice(0, -1)
      .map((e) => JSON.parse(e.slice(6)).choices[0]?.delta?.content ?? '')
      .join('');
    expect(content).toBe('Hello world');
    expect(rs.writableEnded).toBe(true);
  });

  it('serves JSON completions with the real engine, and 401 without a key', async () => {
    const handler = createLambdaHandler({ model: tiny, modelId: 'tiny', apiKeys: [KEY] }) as unknown as Handler;
    const ok = new ResponseStream();
    await handler(
      urlEvent(
        'POST',
        '/v1/completions',
        { prompt: 'abc', max_tokens: 4, seed: 3 },
        { authorization: `Bearer ${KEY}` },
      ),
      ok,
      {},
    );
    expect(ok.metadata?.statusCode).toBe(200);
    const body = JSON.parse(ok.text);
    expect(body).toMatchObject({
      object: 'text_completion',
      model: 'tiny',
      usage: { prompt_tokens: expect.any(Number) },
    });

    const denied = new ResponseStream();
    await handler(urlEvent('GET', '/v1/models'), denied, {});
    expect(denied.metadata?.statusCode).toBe(401);
    expect(JSON.parse(denied.text).error.code).toBe('UNAUTHORIZED');

    const health = new ResponseStream();
    await handler(urlEvent('GET', '/healthz'), health, {});
    expect(health.metadata?.statusCode).toBe(200);
  });
});

// ---------------------------------------------------------------------------------------------
// The client going away, malformed events, the event mapping, the environment.

const authJson = { authorization: `Bearer ${KEY}` };

/** A response stream whose client goes away: every write after the first `okWrites` fails. */
class BreakingStream extends ResponseStream {
  private writes = 0;
  private readonly okWrites: number;
  constructor(okBodyWrites: number) {
    super();
    this.okWrites = 2 + okBodyWrites; // the stand-in's prelude is two writes
  }
  override _write(chunk: Buffer, enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (++this.writes > this.okWrites) {
      cb(new Error('the client went away'));
      return;
    }
    super._write(chunk, enc, cb);
  }
}

/** A real model behind a wrapper that records how its generations end. */
function tracked(m: BitNetModel) {
  const t = { started: 0, finished: 0, aborted: 0, tokens: 0 };
  const served: ServedModel = {
    tokenizer: m.tokenizer,
    modelInfo: () => m.modelInfo(),
    engine: {
      backendName: m.engine.backendName,
      async *stream(p, c, signal): AsyncGenerator<TokenEvent, GenerationOutcome> {
        t.started++;
        const it = m.engine.stream(p, c, signal);
        try {
          let r = await it.next();
          while (!r.done) {
            t.tokens++;
            yield r.value;
            r = await it.next();
          }
          return r.value;
        } finally {
          await it.return(undefined as never).catch(() => {});
          t.finished++;
          if (signal?.aborted) t.aborted++;
        }
      },
    },
  };
  return { t, served };
}

async function call(h: Handler, event: unknown, rs = new ResponseStream()): Promise<ResponseStream> {
  await h(event, rs, {});
  return rs;
}

const withTimeout = <T>(p: Promise<T>, ms: number, what: string) =>
  Promise.race([
    p,
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms)),
  ]);

describe('AWS Lambda adapter: the client going away', () => {
  it('a stream whose client went away frees its slot: two of them, then a request is served at once', async () => {
    const { t, served } = tracked(tiny);
    const h = createLambdaHandler({
      model: served,
      modelId: 'tiny',
      apiKeys: [KEY],
      limits: { maxConcurrent: 2, maxQueue: 16 },
    }) as unknown as Handler;
    for (let i = 0; i < 2; i++) {
      const rs = new BreakingStream(1);
      const body = { messages: [{ role: 'user', content: 'tell me a story' }], max_tokens: 100, stream: true, seed: i };
      await withTimeout(call(h, urlEvent('POST', '/v1/chat/completions', body, authJson), rs), 10_000, 'the handler');
      expect(rs.metadata?.statusCode).toBe(200);
      expect(rs.text).toMatch(/^data: \{/);
      expect(rs.destroyed).toBe(true);
    }
    // Both generations were cancelled (their signal aborted), not left waiting for a reader.
    await waitFor(() => t.finished === 2, 'the two generations to end');
    expect(t.aborted).toBe(2);
    expect(t.tokens).toBeLessThan(20);
    const m = await call(h, urlEvent('GET', '/metrics', undefined, authJson));
    expect(metric(m.text, 'bitnet_active_generations')).toBe(0);
    expect(metric(m.text, 'bitnet_queue_depth')).toBe(0);

    const t0 = performance.now();
    const ok = await withTimeout(
      call(h, urlEvent('POST', '/v1/completions', { prompt: 'abc', max_tokens: 2, seed: 1 }, authJson)),
      10_000,
      'a request after two disconnects',
    );
    expect(performance.now() - t0).toBeLessThan(5_000);
    expect(ok.metadata?.statusCode).toBe(200);
    expect(JSON.parse(ok.text)).toMatchObject({
      object: 'text_completion',
      usage: { prompt_tokens: expect.any(Number) },
    });
    expect(ok.writableEnded).toBe(true);
  });

  it('a non-streaming request whose client goes away stops its generation (the request signal aborts)', async () => {
    let engineSignal: AbortSignal | undefined;
    let waiting!: () => void;
    const atGate = new Promise<void>((r) => (waiting = r));
    const gated: ServedModel = {
      tokenizer: tiny.tokenizer,
      modelInfo: () => tiny.modelInfo(),
      engine: {
        backendName: 'gated',
        async *stream(_p, _c, signal): AsyncGenerator<TokenEvent, GenerationOutcome> {
          engineSignal = signal;
          yield { id: 1, text: 'Hello' };
          waiting();
          // runs until it is cancelled
          await new Promise((_, reject) => signal?.addEventListener('abort', () => reject(signal.reason)));
          throw new Error('unreachable');
        },
      },
    };
    const h = createLambdaHandler({ model: gated, modelId: 'gated', apiKeys: [KEY] }) as unknown as Handler;
    const rs = new ResponseStream();
    const done = h(urlEvent('POST', '/v1/completions', { prompt: 'hi', max_tokens: 50 }, authJson), rs, {});
    await atGate;
    expect(engineSignal?.aborted).toBe(false);
    rs.destroy(new Error('the client went away'));
    await withTimeout(done, 5_000, 'the handler');
    expect(engineSignal?.aborted).toBe(true);
    expect(rs.chunks).toEqual([]); // nothing was written to the dead stream
    const m = await call(h, urlEvent('GET', '/metrics', undefined, authJson));
    expect(metric(m.text, 'bitnet_active_generations')).toBe(0);
    expect(metric(m.text, 'bitnet_http_requests_total', { endpoint: '/v1/completions', status: '499' })).toBe(1);
  });
});

describe('AWS Lambda adapter: errors before the response', () => {
  const h = () => createLambdaHandler({ model: tiny, modelId: 'tiny', apiKeys: [KEY] }) as unknown as Handler;

  it('a GET with a body is a 400 with the JSON error body (not a 200 "Internal Server Error")', async () => {
    const rs = await call(h(), { ...urlEvent('GET', '/v1/models', undefined, authJson), body: 'x' });
    expect(rs.metadata?.statusCode).toBe(400);
    expect(rs.metadata?.headers['content-type']).toMatch(/^application\/json/);
    expect(rs.metadata?.headers['x-bitnet-route']).toBe('edge');
    const body = JSON.parse(rs.text);
    expect(body).toEqual({
      error: {
        message: expect.stringMatching(/^malformed request: .*body/i),
        type: 'invalid_request_error',
        param: null,
        code: 'INVALID_REQUEST',
      },
    });
    expect(rs.writableEnded).toBe(true);
  });

  it('a body that is not base64 though isBase64Encoded says so is a 400', async () => {
    const rs = await call(h(), {
      ...urlEvent('POST', '/v1/completions', { prompt: 'x' }, authJson),
      body: '%%% not base64 %%%',
      isBase64Encoded: true,
    });
    expect(rs.metadata?.statusCode).toBe(400);
    expect(JSON.parse(rs.text).error).toMatchObject({
      code: 'INVALID_REQUEST',
      message: expect.stringMatching(/base64/),
    });
  });

  it('anything else thrown before the response is a 500 with the JSON error body', async () => {
    const errors = vi.spyOn(console, 'error').mockImplementation(() => {});
    try {
      const boom = streamingHandler(() => {
        throw new Error('boom');
      }) as unknown as Handler;
      const rs = await call(boom, urlEvent('GET', '/healthz'));
      expect(rs.metadata?.statusCode).toBe(500);
      expect(JSON.parse(rs.text)).toEqual({
        error: { message: 'boom', type: 'server_error', param: null, code: 'INTERNAL' },
      });
      expect(errors).toHaveBeenCalled();
    } finally {
      errors.mockRestore();
    }
  });

  it('a body that fails after the status went out cuts the response short (no text appended)', async () => {
    const errors = vi.spyOn(console, 'error').mockImplementation(() => {});
    try {
      const enc = new TextEncoder();
      const failing = streamingHandler(
        () =>
          new Response(
            new ReadableStream<Uint8Array>({
              start(c) {
                c.enqueue(enc.encode('data: 1\n\n'));
                c.error(new Error('mid-stream failure'));
              },
            }),
            { headers: { 'content-type': 'text/event-stream' } },
          ),
      ) as unknown as Handler;
      const rs = new ResponseStream();
      rs.on('error', () => {});
      await call(failing, urlEvent('GET', '/x'), rs);
      expect(rs.metadata?.statusCode).toBe(200);
      expect(rs.destroyed).toBe(true);
      expect(rs.writableFinished).toBe(false);
      expect(rs.text).not.toContain('Internal Server Error');
    } finally {
      errors.mockRestore();
    }
  });
});

describe('AWS Lambda adapter: the event mapping', () => {
  const b64 = (b: Uint8Array | string) => Buffer.from(b).toString('base64');

  it('base64 bodies are decoded to their bytes (invalid UTF-8 is kept, and replaced when read as text)', async () => {
    const bytes = new Uint8Array([0x7b, 0x7d, 0x61, 0xff, 0x62]);
    const req = eventToRequest({ ...urlEvent('POST', '/x'), body: b64(bytes), isBase64Encoded: true });
    expect(new Uint8Array(await req.clone().arrayBuffer())).toEqual(bytes);
    expect(req.headers.get('content-length')).toBe('5');
    expect(await req.text()).toBe('{}a\uFFFDb');

    const rs = await call(createLambdaHandler({ model: tiny, modelId: 'tiny', apiKeys: [KEY] }) as unknown as Handler, {
      ...urlEvent('POST', '/v1/completions', undefined, { ...authJson, 'content-type': 'application/json' }),
      body: b64(JSON.stringify({ prompt: 'abc', max_tokens: 2 })),
      isBase64Encoded: true,
    });
    expect(rs.metadata?.statusCode).toBe(200);
    expect(JSON.parse(rs.text).object).toBe('text_completion');
  });

  it('a missing or empty body is no body; the app answers it as it would any empty body', async () => {
    for (const body of [undefined, null, '']) {
      const req = eventToRequest({ ...urlEvent('POST', '/x'), body });
      expect(req.body).toBeNull();
    }
    const rs = await call(
      createLambdaHandler({ model: tiny, modelId: 'tiny', apiKeys: [KEY] }) as unknown as Handler,
      urlEvent('POST', '/v1/completions', undefined, { ...authJson, 'content-type': 'application/json' }),
    );
    expect(rs.metadata?.statusCode).toBe(400);
    expect(JSON.parse(rs.text).error.type).toBe('invalid_request_error');
  });

  it('HEAD gets the status and headers with an empty body', async () => {
    const rs = await call(
      createLambdaHandler({ model: tiny, modelId: 'tiny', apiKeys: [KEY] }) as unknown as Handler,
      urlEvent('HEAD', '/healthz'),
    );
    expect(rs.metadata?.statusCode).toBe(200);
    expect(rs.metadata?.headers['content-type']).toMatch(/^application\/json/);
    expect(rs.text).toBe('');
    expect(rs.writableEnded).toBe(true);
  });

  it('query strings: 2.0 raw, 1.0 encoded (single and multi-value), ALB as given', () => {
    expect(eventToRequest(urlEvent('GET', '/v1/models', undefined, {}, 'a=1&b=%20x&c')).url).toBe(
      'https://abc123.lambda-url.us-east-1.on.aws/v1/models?a=1&b=%20x&c',
    );
    const v1 = { httpMethod: 'GET', path: '/p', headers: { host: 'h.example' }, requestContext: {} };
    expect(eventToRequest({ ...v1, queryStringParameters: { q: 'a b', e: '' } }).url).toBe(
      'https://h.example/p?q=a%20b&e=',
    );
    expect(eventToRequest({ ...v1, multiValueQueryStringParameters: { k: ['1', '2'] } }).url).toBe(
      'https://h.example/p?k=1&k=2',
    );
    const alb = { ...v1, requestContext: { elb: { targetGroupArn: 'arn' } } };
    expect(eventToRequest({ ...alb, queryStringParameters: { q: 'a%20b' } }).url).toBe('https://h.example/p?q=a%20b');
  });

  it('non-ASCII header values are percent-encoded; cookies become one Cookie header', () => {
    const req = eventToRequest({
      ...urlEvent('GET', '/x', undefined, { 'x-name': 'café ☕', 'x-plain': 'ok' }),
      cookies: ['a=1', 'b=2'],
    });
    expect(req.headers.get('x-name')).toBe(encodeURIComponent('café ☕'));
    expect(req.headers.get('x-plain')).toBe('ok');
    expect(req.headers.get('cookie')).toBe('a=1; b=2');
    const v1 = eventToRequest({
      httpMethod: 'GET',
      path: '/x',
      multiValueHeaders: { host: ['h'], cookie: ['a=1', 'b=2'], 'x-m': ['1', '2'] },
      requestContext: {},
    });
    expect(v1.headers.get('cookie')).toBe('a=1; b=2');
    expect(v1.headers.get('x-m')).toBe('1, 2');
  });

  it('Set-Cookie headers of the response go out as the metadata cookies', async () => {
    const h = streamingHandler(() => {
      const headers = new Headers({ 'content-type': 'text/plain' });
      headers.append('set-cookie', 'a=1; Path=/');
      headers.append('set-cookie', 'b=2');
      return new Response('ok', { status: 201, headers });
    }) as unknown as Handler;
    const rs = await call(h, urlEvent('GET', '/x'));
    expect(rs.metadata).toEqual({
      statusCode: 201,
      headers: { 'content-type': 'text/plain' },
      cookies: ['a=1; Path=/', 'b=2'],
    });
    expect(rs.text).toBe('ok');
  });
});

describe('AWS Lambda adapter: the environment', () => {
  it('integers are plain decimal digits; booleans true/false/1/0 in any case; "" is unset', () => {
    const bad = (f: () => unknown, re: RegExp) => {
      let err: unknown;
      try {
        f();
      } catch (e) {
        err = e;
      }
      expect(isBitNetError(err) && err.code === 'INVALID_ENV' && err.kind === 'Config').toBe(true);
      expect((err as Error).message).toMatch(re);
    };
    expect(envInt({ N: '4' }, 'N')).toBe(4);
    expect(envInt({ N: '0' }, 'N')).toBe(0);
    expect(envInt({ N: '' }, 'N')).toBeUndefined();
    expect(envInt({}, 'N')).toBeUndefined();
    for (const v of [' 4', '4 ', '4.0', '1e3', '0x10', '-1', '+4', 'abc', ' '])
      bad(
        () => envInt({ N: v }, 'N'),
        new RegExp(`^N must be a non-negative integer .*got ${JSON.stringify(v).replace(/[.+]/g, '\\$&')}$`),
      );
    bad(() => envInt({ N: '0' }, 'N', { min: 1 }), /^N must be a positive integer, got "0"$/);
    bad(() => envInt({ N: '99999999999999999999' }, 'N'), /below 2\^53/);
    for (const v of ['true', 'TRUE', 'True', '1']) expect(envBool({ B: v }, 'B')).toBe(true);
    for (const v of ['false', 'FALSE', '0']) expect(envBool({ B: v }, 'B')).toBe(false);
    expect(envBool({ B: '' }, 'B')).toBeUndefined();
    for (const v of ['yes', 'on', ' true', '2']) bad(() => envBool({ B: v }, 'B'), /^B must be true, false, 1 or 0/);
  });

  it('depsFromEnv: bad numbers name their variable; TRUE is honoured', () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    try {
      const cases: [Record<string, string>, RegExp][] = [
        [{ BITNET_MAX_CONCURRENT: 'abc' }, /^BITNET_MAX_CONCURRENT must be a positive integer .*"abc"/],
        [{ BITNET_MAX_CONCURRENT: ' 4' }, /^BITNET_MAX_CONCURRENT .*" 4"/],
        [{ BITNET_MAX_CONCURRENT: '0' }, /^BITNET_MAX_CONCURRENT must be a positive integer, got "0"/],
        [{ BITNET_MAX_QUEUE: '-1' }, /^BITNET_MAX_QUEUE must be a non-negative integer .*"-1"/],
        [{ BITNET_EDGE_MAX_TOKENS: '1e3' }, /^BITNET_EDGE_MAX_TOKENS .*"1e3"/],
        [{ BITNET_THREADS: '0' }, /^BITNET_THREADS must be a positive integer/],
        [
          { BITNET_ALLOW_UNAUTHENTICATED: 'yes' },
          /^BITNET_ALLOW_UNAUTHENTICATED must be true, false, 1 or 0, got "yes"/,
        ],
        [{ BITNET_VALIDATE_CHECKSUMS: 'on' }, /^BITNET_VALIDATE_CHECKSUMS must be/],
        [{ BITNET_API_KEYS: 'k', BITNET_V8_YOUNG_GEN: 'tiny' }, /^BITNET_V8_YOUNG_GEN must be small or default/],
        [
          { BITNET_API_KEYS: 'k', BITNET_GPU_URL: 'not a url' },
          /^BITNET_GPU_URL must be an absolute http\(s\) URL, got "not a url"/,
        ],
        [{ BITNET_API_KEYS: 'k', BITNET_GPU_URL: 'http://' }, /^BITNET_GPU_URL must be an absolute http\(s\) URL/],
        [
          { BITNET_API_KEYS: 'k', BITNET_GPU_URL: 'ftp://gpu.example' },
          /^BITNET_GPU_URL must be an http\(s\) URL, not ftp:/,
        ],
        [
          { BITNET_API_KEYS: 'k', BITNET_GPU_URL: 'http://g.test', BITNET_GPU_TIMEOUT_S: '0' },
          /^BITNET_GPU_TIMEOUT_S must be a number of seconds > 0/,
        ],
      ];
      for (const [env, re] of cases) expect(() => depsFromEnv(env)).toThrow(re);
      expect(
        depsFromEnv({
          BITNET_API_KEYS: 'k',
          BITNET_GPU_URL: 'https://gpu.example',
          BITNET_GPU_FIRST_BYTE_TIMEOUT_S: '45',
        }).router?.gpu,
      ).toEqual({
        url: 'https://gpu.example',
        apiKey: undefined,
        firstByteTimeoutMs: 45_000,
        responseTimeoutMs: undefined,
        idleTimeoutMs: undefined,
      });
      const d = depsFromEnv({
        BITNET_ALLOW_UNAUTHENTICATED: 'TRUE',
        BITNET_MAX_CONCURRENT: '4',
        BITNET_MAX_QUEUE: '0',
        BITNET_EDGE_MAX_TOKENS: '1000',
      });
      expect(d.apiKeys).toEqual([]);
      expect(d.limits).toEqual({ maxConcurrent: 4, maxQueue: 0 });
      expect(d.router?.edgeMaxTokens).toBe(1000);
      expect(warn).not.toHaveBeenCalled();
      const defaults = depsFromEnv({ BITNET_API_KEYS: 'k', BITNET_MAX_CONCURRENT: '', BITNET_EDGE_MAX_TOKENS: '' });
      expect(defaults.limits).toEqual({ maxConcurrent: 2, maxQueue: 16 });
      expect(defaults.router?.edgeMaxTokens).toBeUndefined();
    } finally {
      warn.mockRestore();
    }
  });

  it('a bad value fails requests with a 500 naming it (logged once), not the start-up', async () => {
    const errors = vi.spyOn(console, 'error').mockImplementation(() => {});
    try {
      const h = createLambdaHandlerFromEnv({ BITNET_API_KEYS: KEY, BITNET_MAX_CONCURRENT: '0' }) as unknown as Handler;
      const gen = await call(h, urlEvent('POST', '/v1/completions', { prompt: 'x', max_tokens: 1 }, authJson));
      expect(gen.metadata?.statusCode).toBe(500);
      expect(JSON.parse(gen.text)).toEqual({
        error: {
          message: 'BITNET_MAX_CONCURRENT must be a positive integer, got "0"',
          type: 'server_error',
          param: null,
          code: 'INVALID_ENV',
        },
      });
      const health = await call(h, urlEvent('GET', '/healthz'));
      expect(health.metadata?.statusCode).toBe(200);
      expect(JSON.parse(health.text)).toMatchObject({
        status: 'ok',
        misconfigured: { code: 'INVALID_ENV', message: expect.stringContaining('BITNET_MAX_CONCURRENT') },
      });
      const ready = await call(h, urlEvent('GET', '/readyz'));
      expect(ready.metadata?.statusCode).toBe(503);
      expect(JSON.parse(ready.text).error.code).toBe('INVALID_ENV');
      expect(errors).toHaveBeenCalledTimes(1);
      expect(String(errors.mock.calls[0][0])).toContain('BITNET_MAX_CONCURRENT');
    } finally {
      errors.mockRestore();
    }
  });
});

describe('AWS Lambda adapter: BITNET_VALIDATE_CHECKSUMS', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bitnet-lambda-pack-'));
    const sink = new MemoryPackSink();
    const gguf = await synthBytes({ qtype: 'i2_s', seed: 5, arch: 'bitnet-b1.58' });
    await convertToPack(await ggufInput(new MemorySource(gguf)), sink, { shardSize: 200_000 });
    const manifest = JSON.parse(new TextDecoder().decode(sink.files.get('manifest.json')));
    // One F32 tensor changed by one bit: still a loadable model, but not the one the manifest hashed.
    const t = manifest.tensors.find((x: { name: string }) => x.name === 'blk.0.attn_norm.weight');
    for (const sub of ['good', 'corrupt']) {
      await mkdir(join(dir, sub));
      for (const [name, bytes] of sink.files) {
        const copy = new Uint8Array(bytes);
        if (sub === 'corrupt' && name === t.shard) copy[t.offset] ^= 1;
        await writeFile(join(dir, sub, name), copy);
      }
    }
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  const envFor = (sub: string, extra: Record<string, string> = {}) => ({
    BITNET_MODEL: `${join(dir, sub)}/`,
    BITNET_API_KEYS: KEY,
    BITNET_THREADS: '1',
    ...extra,
  });

  it('on: a pack with a corrupted tensor is refused with CHECKSUM_MISMATCH', async () => {
    const h = createLambdaHandlerFromEnv(
      envFor('corrupt', { BITNET_VALIDATE_CHECKSUMS: 'true' }),
    ) as unknown as Handler;
    const ready = await call(h, urlEvent('GET', '/readyz'));
    expect(ready.metadata?.statusCode).toBe(500);
    expect(JSON.parse(ready.text).error).toMatchObject({ code: 'CHECKSUM_MISMATCH', type: 'server_error' });
    const gen = await call(h, urlEvent('POST', '/v1/completions', { prompt: 'abc', max_tokens: 2 }, authJson));
    expect(gen.metadata?.statusCode).toBe(500);
    expect(JSON.parse(gen.text).error.code).toBe('CHECKSUM_MISMATCH');
    // the intact pack loads with checksums on
    const good = createLambdaHandlerFromEnv(envFor('good', { BITNET_VALIDATE_CHECKSUMS: '1' })) as unknown as Handler;
    const ok = await call(good, urlEvent('GET', '/readyz'));
    expect(ok.metadata?.statusCode).toBe(200);
  });

  it('off (the default): the corrupted pack loads, unverified', async () => {
    const h = createLambdaHandlerFromEnv(envFor('corrupt')) as unknown as Handler;
    const ready = await call(h, urlEvent('GET', '/readyz'));
    expect(ready.metadata?.statusCode).toBe(200);
    expect(JSON.parse(ready.text).status).toBe('ready');
  });
});
