// The Worker's configuration inside workerd: a missing WEIGHTS binding, bad vars, an R2 that fails,
// and VALIDATE_CHECKSUMS against a shard pack with a corrupted tensor. Each test hands the Worker
// its own env object (the Worker builds one app per env), with the local R2 bucket where it needs one.
import { env } from 'cloudflare:workers';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import worker, { depsFromEnv, settingsFromEnv, type WorkerEnv } from '../../../src/adapters/cloudflare.ts';
import { encodeGGUF } from '../../../src/gguf/writer.ts';
import { createApp } from '../../../src/http/app.ts';
import { synthModel } from '../../../src/model/synth.ts';
import { convertToPack, ggufInput, MemoryPackSink } from '../../../src/shards/convert.ts';
import { MemorySource } from '../../../src/sources/byte-source.ts';
import type { R2BucketLike } from '../../../src/sources/r2.ts';

const KEY = 'env-test-key';
const bucket = () => env.WEIGHTS as unknown as R2BucketLike;
const call = (e: WorkerEnv, path: string, init?: RequestInit) =>
  worker.fetch(new Request(`https://worker.test${path}`, init), e, {});
const completion = (e: WorkerEnv) =>
  call(e, '/v1/completions', {
    method: 'POST',
    headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: 'abc', max_tokens: 2 }),
  });

beforeAll(async () => {
  const m = synthModel({
    arch: 'bitnet-b1.58',
    hidden: 128,
    layers: 1,
    heads: 2,
    kvHeads: 1,
    ffn: 256,
    vocab: 300,
    ctx: 64,
    qtype: 'i2_s',
    embdType: 'f16',
    seed: 3,
  });
  const gguf = new Uint8Array(await encodeGGUF(m.metadata, m.tensors));
  await env.WEIGHTS.put('env/model.gguf', gguf);
  const sink = new MemoryPackSink();
  await convertToPack(await ggufInput(new MemorySource(gguf)), sink, { shardSize: 100_000 });
  const manifest = JSON.parse(new TextDecoder().decode(sink.files.get('manifest.json')));
  // One F32 tensor changed by one bit: a loadable model, but not the one the manifest hashed.
  const t = manifest.tensors.find((x: { name: string }) => x.name === 'blk.0.attn_norm.weight');
  for (const [name, bytes] of sink.files) {
    await env.WEIGHTS.put(`env/good/${name}`, new Uint8Array(bytes));
    const bad = new Uint8Array(bytes);
    if (name === t.shard) bad[t.offset] ^= 1;
    await env.WEIGHTS.put(`env/corrupt/${name}`, bad);
  }
});

describe('a missing WEIGHTS binding', () => {
  it('/healthz is alive; /readyz and generations answer 503 R2_BINDING_MISSING (not a TypeError)', async () => {
    const errors = vi.spyOn(console, 'error').mockImplementation(() => {});
    try {
      const e: WorkerEnv = { MODEL_KEY: 'env/model.gguf', BITNET_API_KEYS: KEY };
      const h = await call(e, '/healthz');
      expect(h.status).toBe(200);
      expect(await h.json()).toEqual({ status: 'ok' });
      const r = await call(e, '/readyz');
      expect(r.status).toBe(503);
      const body = await r.json();
      expect(body.error).toMatchObject({ code: 'R2_BINDING_MISSING', type: 'server_error', param: null });
      expect(body.error.message).toContain('"WEIGHTS"');
      const c = await completion(e);
      expect(c.status).toBe(503);
      expect((await c.json()).error.code).toBe('R2_BINDING_MISSING');
      // routes that do not need the model still work
      const models = await call(e, '/v1/models', { headers: { authorization: `Bearer ${KEY}` } });
      expect(models.status).toBe(200);
      expect((await call(e, '/healthz')).status).toBe(200);
      // said once, when the app was built
      expect(errors).toHaveBeenCalledTimes(1);
      expect(String(errors.mock.calls[0][0])).toMatch(/WEIGHTS/);
    } finally {
      errors.mockRestore();
    }
  });
});

describe('/healthz does not depend on R2', () => {
  it('answers while R2 fails; /readyz reports the failure (503) and the next request tries again', async () => {
    let fail = true;
    const flaky: R2BucketLike = {
      head: async (key) => {
        if (fail) throw new Error('R2 internal error');
        return bucket().head(key);
      },
      get: (key, o) => bucket().get(key, o),
    };
    const e: WorkerEnv = { WEIGHTS: flaky, MODEL_KEY: 'env/model.gguf', ALLOW_UNAUTHENTICATED: 'true' };
    const h = await call(e, '/healthz');
    expect(h.status).toBe(200);
    expect(await h.json()).toEqual({ status: 'ok' });
    expect(h.headers.get('x-bitnet-route')).toBe('edge');
    const r = await call(e, '/readyz');
    expect(r.status).toBe(503);
    expect((await r.json()).error).toMatchObject({
      code: 'MODEL_UNAVAILABLE',
      message: expect.stringContaining('R2 internal error'),
    });
    expect(r.headers.get('retry-after')).toBe('1');
    fail = false;
    const ok = await call(e, '/readyz');
    expect(ok.status).toBe(200);
    expect(await ok.json()).toMatchObject({ status: 'ready' });
  });
});

describe('bad vars', () => {
  it('MAX_QUEUE=abc: every route but /healthz answers 500 INVALID_ENV naming it; logged once', async () => {
    const errors = vi.spyOn(console, 'error').mockImplementation(() => {});
    try {
      const e: WorkerEnv = { WEIGHTS: bucket(), MODEL_KEY: 'env/model.gguf', BITNET_API_KEYS: KEY, MAX_QUEUE: 'abc' };
      const c = await completion(e);
      expect(c.status).toBe(500);
      expect(await c.json()).toEqual({
        error: {
          message: 'MAX_QUEUE must be a non-negative integer (decimal digits only), got "abc"',
          type: 'server_error',
          param: null,
          code: 'INVALID_ENV',
        },
      });
      const models = await call(e, '/v1/models');
      expect(models.status).toBe(500);
      const h = await call(e, '/healthz');
      expect(h.status).toBe(200);
      expect(await h.json()).toMatchObject({
        status: 'ok',
        misconfigured: { code: 'INVALID_ENV', message: expect.stringContaining('MAX_QUEUE') },
      });
      const r = await call(e, '/readyz');
      expect(r.status).toBe(503);
      expect((await r.json()).error.code).toBe('INVALID_ENV');
      expect(errors).toHaveBeenCalledTimes(1);
      expect(String(errors.mock.calls[0][0])).toContain('MAX_QUEUE');
    } finally {
      errors.mockRestore();
    }
  });

  it('each variable is checked by the same rules as the Lambda function', () => {
    const base: WorkerEnv = { WEIGHTS: bucket() };
    const cases: [Partial<WorkerEnv>, RegExp][] = [
      [{ MAX_CONCURRENT: '0' }, /^MAX_CONCURRENT must be a positive integer, got "0"$/],
      [{ MAX_CONCURRENT: ' 4' }, /^MAX_CONCURRENT .*" 4"$/],
      [{ EDGE_MAX_TOKENS: '1e3' }, /^EDGE_MAX_TOKENS .*"1e3"$/],
      [{ MEMORY_BUDGET_BYTES: '64MiB' }, /^MEMORY_BUDGET_BYTES .*"64MiB"$/],
      [{ ALLOW_UNAUTHENTICATED: 'yes' }, /^ALLOW_UNAUTHENTICATED must be true, false, 1 or 0, got "yes"$/],
      [{ VALIDATE_CHECKSUMS: 'on' }, /^VALIDATE_CHECKSUMS must be true, false, 1 or 0/],
      [{ GPU_URL: 'not a url' }, /^GPU_URL must be an absolute http\(s\) URL, got "not a url"$/],
      [{ GPU_URL: 'https://g.test', GPU_IDLE_TIMEOUT_S: '-1' }, /^GPU_IDLE_TIMEOUT_S must be a number of seconds/],
    ];
    for (const [vars, re] of cases) expect(() => settingsFromEnv({ ...base, ...vars })).toThrow(re);
    const s = settingsFromEnv({ ...base, ALLOW_UNAUTHENTICATED: 'TRUE', MAX_CONCURRENT: '3', EDGE_MAX_TOKENS: '' });
    expect(s.allowUnauthenticated).toBe(true);
    expect(s.limits).toEqual({ maxConcurrent: 3, maxQueue: 16 });
    expect(s.router.edgeMaxTokens).toBeUndefined();
    expect(s.validateChecksums).toBe(false);
  });
});

describe('VALIDATE_CHECKSUMS', () => {
  const envFor = (prefix: string, validate?: string): WorkerEnv => ({
    WEIGHTS: bucket(),
    MODEL_KEY: prefix,
    ALLOW_UNAUTHENTICATED: 'true',
    ...(validate !== undefined && { VALIDATE_CHECKSUMS: validate }),
  });

  it('on: a pack with a corrupted tensor is refused with CHECKSUM_MISMATCH; the intact pack loads', async () => {
    const app = createApp(await depsFromEnv(envFor('env/corrupt/', 'true')));
    const r = await app.request('/readyz');
    expect(r.status).toBe(500);
    expect((await r.json()).error).toMatchObject({ code: 'CHECKSUM_MISMATCH', type: 'server_error' });
    const good = createApp(await depsFromEnv(envFor('env/good/', 'TRUE')));
    expect((await good.request('/readyz')).status).toBe(200);
  });

  it('off (the default): the corrupted pack loads, unverified', async () => {
    const r = await createApp(await depsFromEnv(envFor('env/corrupt/'))).request('/readyz');
    expect(r.status).toBe(200);
    expect(await r.json()).toMatchObject({ status: 'ready' });
  });
});
