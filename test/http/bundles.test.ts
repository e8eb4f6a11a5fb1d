// The esbuild bundles that deploy: the Worker bundle has no Node-only code and serves from R2
// inside workerd (Miniflare); the Lambda bundle runs under the awslambda stand-in.
import { existsSync } from 'node:fs';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { bundle } from '../../scripts/bundle.ts';
import { synthBytes } from '../helpers/models.ts';
import { bundledWorker } from '../helpers/worker.ts';

let out: { worker?: string; lambda?: string };
beforeAll(async () => {
  out = await bundle({ outdir: await mkdtemp(join(tmpdir(), 'bitnet-bundles-')) });
});

describe('Worker bundle', () => {
  it('contains no node: imports and no weights; the kernels sit next to it as .wasm modules', async () => {
    const code = await readFile(out.worker!, 'utf8');
    expect(code).not.toMatch(/\bfrom\s*["']node:/);
    expect(code).not.toMatch(/\bimport\(\s*["']node:/);
    expect(code.length).toBeLessThan(2 * 2 ** 20);
    expect(code).toMatch(/from\s*"\.\/bitnet-relaxed\.wasm"/);
    expect(existsSync(join(dirname(out.worker!), 'bitnet-relaxed.wasm'))).toBe(true);
  });

  it('serves a chat completion from a model in R2, inside workerd', async () => {
    const mf = await bundledWorker(
      dirname(out.worker!),
      'index.js',
      ['bitnet-relaxed.wasm', 'bitnet-simd.wasm'],
      { BITNET_API_KEYS: 'bundle-key', MODEL_ID: 'bundled', MODEL_KEY: 'm.gguf' },
      await synthBytes({ qtype: 'i2_s', seed: 4, arch: 'bitnet-b1.58' }),
    );
    try {
      const denied = await mf.dispatchFetch('http://worker/v1/models');
      expect(denied.status).toBe(401);
      await denied.text();
      const ready = await mf.dispatchFetch('http://worker/readyz');
      expect(await ready.json()).toMatchObject({ status: 'ready', backend: 'wasm' });
      const r = await mf.dispatchFetch('http://worker/v1/chat/completions', {
        method: 'POST',
        headers: { authorization: 'Bearer bundle-key', 'content-type': 'application/json' },
        body: JSON.stringify({
          model: 'bundled',
          messages: [{ role: 'user', content: 'hi' }],
          max_tokens: 4,
          seed: 1,
          stream: true,
        }),
      });
      expect(r.status).toBe(200);
      expect(r.headers.get('x-bitnet-route')).toBe('edge');
      const text = await r.text();
      expect(text.trim().endsWith('data: [DONE]')).toBe(true);
    } finally {
      await mf.dispose();
    }
  });
});

describe('Lambda bundle', () => {
  it('exports handler, which streams the demo model under the awslambda stand-in', async () => {
    const g = globalThis as { awslambda?: unknown };
    g.awslambda = {
      streamifyResponse: <F>(fn: F) => fn,
      HttpResponseStream: {
        from(stream: NodeJS.WritableStream, meta: unknown) {
          stream.write(JSON.stringify(meta));
          stream.write(new Uint8Array(8));
          return stream;
        },
      },
    };
    process.env.BITNET_API_KEYS = 'lambda-key';
    // two kernel threads: the worker must start from inside the one-file bundle
    process.env.BITNET_THREADS = '2';
    try {
      const mod = await import(pathToFileURL(out.lambda!).href);
      const { PassThrough } = await import('node:stream');
      const rs = new PassThrough();
      const chunks: Buffer[] = [];
      rs.on('data', (c: Buffer) => chunks.push(c));
      await mod.handler(
        {
          version: '2.0',
          rawPath: '/v1/completions',
          rawQueryString: '',
          headers: {
            host: 'x.lambda-url.on.aws',
            authorization: 'Bearer lambda-key',
            'content-type': 'application/json',
          },
          requestContext: {
            domainName: 'x.lambda-url.on.aws',
            http: { method: 'POST', path: '/v1/completions', sourceIp: '127.0.0.1' },
          },
          body: JSON.stringify({ prompt: 'hello', max_tokens: 3, stream: true }),
          isBase64Encoded: false,
        },
        rs,
        {},
      );
      const ready = new PassThrough();
      const readyChunks: Buffer[] = [];
      ready.on('data', (c: Buffer) => readyChunks.push(c));
      await mod.handler(
        {
          version: '2.0',
          rawPath: '/readyz',
          rawQueryString: '',
          headers: { host: 'x' },
          requestContext: { domainName: 'x', http: { method: 'GET', path: '/readyz' } },
          isBase64Encoded: false,
        },
        ready,
        {},
      );
      const r = Buffer.concat(readyChunks);
      expect(JSON.parse(r.subarray(r.indexOf(Buffer.alloc(8)) + 8).toString())).toMatchObject({
        status: 'ready',
        backend: 'wasm',
        threads: 2,
      });
      const all = Buffer.concat(chunks);
      const body = all.subarray(all.indexOf(Buffer.alloc(8)) + 8).toString();
      expect(JSON.parse(all.subarray(0, all.indexOf(Buffer.alloc(8))).toString()).statusCode).toBe(200);
      expect(body).toContain('"model":"bitnet-demo-random-weights"');
      expect(body.trim().endsWith('data: [DONE]')).toBe(true);
    } finally {
      delete g.awslambda;
      delete process.env.BITNET_API_KEYS;
      delete process.env.BITNET_THREADS;
    }
  });
});

describe('package exports per runtime', () => {
  it('bitnet-edge/http, /node and /aws-lambda resolve; /cloudflare is declared for Workers', async () => {
    const http = await import('bitnet-edge/http');
    expect(typeof http.createApp).toBe('function');
    expect(typeof (await import('bitnet-edge/node')).serveNode).toBe('function');
    expect(typeof (await import('bitnet-edge/aws-lambda')).createLambdaHandler).toBe('function');
    const pkg = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8'));
    expect(pkg.exports['./cloudflare']['bitnet-edge-source']).toBe('./src/adapters/cloudflare.ts');
    expect(pkg.exports['./cloudflare'].default).toBe('./lib/adapters/cloudflare.js');
  });

  it('src/http imports nothing runtime-specific', async () => {
    const { readdir } = await import('node:fs/promises');
    const dir = new URL('../../src/http/', import.meta.url);
    for (const f of await readdir(dir)) {
      const code = await readFile(new URL(f, dir), 'utf8');
      expect([f, code.match(/from ['"](node:|cloudflare:|@aws-sdk\/|@hono\/node-server)[^'"]*['"]/)?.[0]]).toEqual([
        f,
        undefined,
      ]);
    }
  });
});
