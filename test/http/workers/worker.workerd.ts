// The Worker inside workerd: model bytes in local R2, the openai client talking to the Worker.
// The model runs on the backend BitNetModel selects by default: the wasm kernels, imported as
// modules by the Worker (the test fails if the reference backend had to stand in). The model is
// read from R2 by range, as a GGUF or as a shard pack (MODEL_KEY naming its manifest).
import { env, exports } from 'cloudflare:workers';
import OpenAI from 'openai';
import { beforeAll, describe, expect, it } from 'vitest';
import { depsFromEnv, modelObjectKey, type WorkerEnv } from '../../../src/adapters/cloudflare.ts';
import { encodeGGUF } from '../../../src/gguf/writer.ts';
import { createApp } from '../../../src/http/app.ts';
import { synthModel } from '../../../src/model/synth.ts';
import { convertToPack, ggufInput, MemoryPackSink } from '../../../src/shards/convert.ts';
import { MemorySource } from '../../../src/sources/byte-source.ts';
import type { R2BucketLike, R2GetOptionsLike } from '../../../src/sources/r2.ts';

const KEY = 'worker-test-key';
const MODEL = 'bitnet-worker-test';
const worker = (input: Request | string | URL, init?: RequestInit) => exports.default.fetch(new Request(input, init));

beforeAll(async () => {
  const m = synthModel({
    arch: 'bitnet-b1.58',
    hidden: 256,
    layers: 2,
    heads: 4,
    kvHeads: 2,
    ffn: 512,
    vocab: 300,
    ctx: 256,
    qtype: 'i2_s',
    embdType: 'f16',
    seed: 7,
  });
  gguf = new Uint8Array(await encodeGGUF(m.metadata, m.tensors));
  await env.WEIGHTS.put('models/tiny.gguf', gguf);
  const sink = new MemoryPackSink();
  await convertToPack(await ggufInput(new MemorySource(gguf)), sink, { shardSize: 200_000 });
  for (const [name, bytes] of sink.files) {
    packBytes += bytes.length;
    await env.WEIGHTS.put(`packs/tiny/${name}`, bytes);
  }
});

let gguf: Uint8Array;
let packBytes = 0;

/** The WEIGHTS binding, recording every get (key and range). */
function recordingBucket(): { bucket: R2BucketLike; gets: { key: string; options?: R2GetOptionsLike }[] } {
  const inner = env.WEIGHTS as unknown as R2BucketLike;
  const gets: { key: string; options?: R2GetOptionsLike }[] = [];
  return {
    gets,
    bucket: {
      head: (key) => inner.head(key),
      get: (key, options) => {
        gets.push({ key, options });
        return inner.get(key, options);
      },
    },
  };
}

const workerEnv = (bucket: R2BucketLike, modelKey: string): WorkerEnv => ({
  WEIGHTS: bucket,
  MODEL_KEY: modelKey,
  MODEL_ID: 'r2-direct',
  ALLOW_UNAUTHENTICATED: 'true',
});

function client() {
  return new OpenAI({ baseURL: 'https://worker.test/v1', apiKey: KEY, fetch: worker as typeof fetch, maxRetries: 0 });
}

describe('Worker in workerd', () => {
  it('health is open, everything else needs the key', async () => {
    const h = await worker('https://worker.test/healthz');
    expect(h.status).toBe(200);
    expect(h.headers.get('x-bitnet-route')).toBe('edge');
    const r = await worker('https://worker.test/v1/models');
    expect(r.status).toBe(401);
    expect((await r.json()).error.code).toBe('UNAUTHORIZED');
  });

  it('readyz loads the model from R2', async () => {
    const r = await worker('https://worker.test/readyz');
    expect(r.status).toBe(200);
    expect(await r.json()).toMatchObject({ status: 'ready', model: MODEL, backend: 'wasm' });
  });

  it('the openai client streams a chat completion, and the stream matches the JSON answer', async () => {
    const c = client();
    const stream = await c.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'hello from the edge' }],
      max_tokens: 12,
      seed: 42,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let chunks = 0;
    let usage: { completion_tokens: number } | undefined;
    for await (const ch of stream) {
      chunks++;
      text += ch.choices[0]?.delta?.content ?? '';
      if (ch.usage) usage = ch.usage;
    }
    expect(chunks).toBeGreaterThan(3);
    expect(usage?.completion_tokens).toBeGreaterThan(0);
    const whole = await c.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'hello from the edge' }],
      max_tokens: 12,
      seed: 42,
    });
    expect(whole.choices[0].message.content).toBe(text);
    expect(whole.usage?.completion_tokens).toBe(usage?.completion_tokens);
  });

  it('the openai client streams a response (the Responses API), and it matches the JSON answer', async () => {
    const c = client();
    const req = {
      model: MODEL,
      instructions: 'Be brief.',
      input: 'hello from the edge',
      max_output_tokens: 12,
      seed: 42,
    };
    const stream = c.responses.stream(req);
    let deltas = '';
    for await (const e of stream) if (e.type === 'response.output_text.delta') deltas += e.delta;
    const streamed = await stream.finalResponse();
    const whole = await c.responses.create(req);
    expect(deltas).toBe(whole.output_text);
    expect(streamed.output_text).toBe(whole.output_text);
    expect(whole.usage?.output_tokens).toBeGreaterThan(0);
    expect(whole.status).toMatch(/^(completed|incomplete)$/);
  });

  it('the openai client gets embeddings (base64 over the wire), unit length, the same for the same text', async () => {
    const c = client();
    const r = await c.embeddings.create({
      model: MODEL,
      input: ['hello from the edge', 'a dog', 'hello from the edge'],
    });
    expect(r.data.map((d) => d.index)).toEqual([0, 1, 2]);
    const [a, b, a2] = r.data.map((d) => d.embedding);
    expect(a.length).toBeGreaterThan(0);
    expect(a2).toEqual(a);
    expect(b).not.toEqual(a);
    expect(Math.abs(a.reduce((s, x) => s + x * x, 0) - 1)).toBeLessThan(1e-5);
    expect(r.usage.prompt_tokens).toBeGreaterThan(0);
  });

  it('lists the model and serves completions', async () => {
    const c = client();
    const list = await c.models.list();
    expect(list.data.map((m) => m.id)).toEqual([MODEL]);
    const r = await c.completions.create({ model: MODEL, prompt: 'once upon', max_tokens: 5, temperature: 0 });
    expect(r.choices[0].finish_reason).toMatch(/stop|length/);
  });
});

describe('the model from R2 by ranged reads', () => {
  it('a GGUF key: sized by HEAD, loaded with ranged gets only', async () => {
    // Its own key: the Worker above has models/tiny.gguf loaded in this isolate already.
    await env.WEIGHTS.put('models/tiny-ranged.gguf', gguf);
    const { bucket, gets } = recordingBucket();
    const deps = await depsFromEnv(workerEnv(bucket, 'models/tiny-ranged.gguf'));
    expect(deps.modelBytes).toBe(gguf.length);
    expect(gets).toEqual([]);
    const app = createApp(deps);
    const r = await app.request('/readyz');
    expect(await r.json()).toMatchObject({ status: 'ready', model: 'r2-direct', backend: 'wasm' });
    expect(gets.length).toBeGreaterThan(0);
    for (const g of gets) {
      expect(g.key).toBe('models/tiny-ranged.gguf');
      expect(g.options?.range?.length).toBeGreaterThan(0);
      expect(g.options?.onlyIf?.etagMatches).toBeTypeOf('string');
    }
    // the header first, then the tensors (adjacent ones merged into one range by the coalescing decorator)
    expect(gets.length).toBeGreaterThan(1);
    expect(gets[0].options!.range!.length).toBeLessThan(gguf.length);
  });

  it('a shard-pack manifest key (or its prefix): sized from the manifest, served from its shards', async () => {
    expect(modelObjectKey('packs/tiny/')).toBe('packs/tiny/manifest.json');
    for (const key of ['packs/tiny/manifest.json', 'packs/tiny/']) {
      const { bucket, gets } = recordingBucket();
      const deps = await depsFromEnv(workerEnv(bucket, key));
      expect(deps.modelBytes).toBe(packBytes);
      const app = createApp(deps);
      const r = await app.request('/v1/chat/completions', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ messages: [{ role: 'user', content: 'hello' }], max_tokens: 3, seed: 1 }),
      });
      expect(r.status).toBe(200);
      expect((await r.json()).usage.completion_tokens).toBe(3);
      for (const g of gets) expect(g.options?.range).toBeDefined();
      const shards = new Set(gets.map((g) => g.key).filter((k) => k !== 'packs/tiny/manifest.json'));
      // The first app loads the shards; the second finds the same object (key and ETag) loaded in the isolate.
      if (key === 'packs/tiny/manifest.json') expect(shards.size).toBeGreaterThan(1);
      else expect(shards.size).toBe(0);
    }
  });

  it('a model over the memory budget is never read: every request is for the GPU endpoint', async () => {
    const { bucket, gets } = recordingBucket();
    const deps = await depsFromEnv({ ...workerEnv(bucket, 'packs/tiny/'), MEMORY_BUDGET_BYTES: '1000' });
    const app = createApp(deps);
    const r = await app.request('/readyz');
    expect(r.status).toBe(503);
    expect(await r.json()).toMatchObject({ status: 'unavailable', local: false });
    const c = await app.request('/v1/completions', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: [1, 2], max_tokens: 1 }),
    });
    expect(c.status).toBe(503);
    // only the manifest was read (to size the pack)
    expect(new Set(gets.map((g) => g.key))).toEqual(new Set(['packs/tiny/manifest.json']));
  });

  it('a missing object is a 503 MODEL_UNAVAILABLE when the model is needed', async () => {
    const { bucket } = recordingBucket();
    const deps = await depsFromEnv(workerEnv(bucket, 'models/absent.gguf'));
    expect(deps.modelBytes).toBeUndefined();
    const r = await createApp(deps).request('/readyz');
    expect(r.status).toBe(503);
    expect((await r.json()).error.code).toBe('MODEL_UNAVAILABLE');
  });
});
