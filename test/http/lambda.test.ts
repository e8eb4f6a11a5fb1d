// The Lambda adapter under a local stand-in for the `awslambda` global (streamifyResponse +
// HttpResponseStream with the runtime's prelude: metadata JSON, then 8 NUL bytes). A gated model
// shows the chunks reach the response stream while the generation is still running.
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLambdaHandler, handler as exportedHandler } from '../../src/adapters/aws-lambda.ts';
import type { BitNetModel } from '../../src/api/bitnet-model.ts';
import type { GenerationOutcome, TokenEvent } from '../../src/generate/engine.ts';
import type { ServedModel } from '../../src/http/model-holder.ts';
import { KEY, tinyModel } from './helpers.ts';

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

function urlEvent(method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
  return {
    version: '2.0',
    routeKey: '$default',
    rawPath: path,
    rawQueryString: '',
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
