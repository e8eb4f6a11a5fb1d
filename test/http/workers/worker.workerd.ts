// The Worker inside workerd: model bytes in local R2, the openai client talking to the Worker.
// The model runs on the backend BitNetModel selects by default: the wasm kernels, imported as
// modules by the Worker (the test fails if the reference backend had to stand in).
import { env, exports } from 'cloudflare:workers';
import OpenAI from 'openai';
import { beforeAll, describe, expect, it } from 'vitest';
import { encodeGGUF } from '../../../src/gguf/writer.ts';
import { synthModel } from '../../../src/model/synth.ts';

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
  await env.WEIGHTS.put('models/tiny.gguf', new Uint8Array(await encodeGGUF(m.metadata, m.tensors)));
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

  it('lists the model and serves completions', async () => {
    const c = client();
    const list = await c.models.list();
    expect(list.data.map((m) => m.id)).toEqual([MODEL]);
    const r = await c.completions.create({ model: MODEL, prompt: 'once upon', max_tokens: 5, temperature: 0 });
    expect(r.choices[0].finish_reason).toMatch(/stop|length/);
  });
});
