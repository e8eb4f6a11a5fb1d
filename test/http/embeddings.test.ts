// POST /v1/embeddings and BitNetModel.embed: the input's final hidden states (after output_norm),
// mean-pooled (or the last position's) and scaled to unit length, in OpenAI's four input forms,
// as floats or base64; checked against the reference forward pass computed here.
import { beforeAll, describe, expect, it } from 'vitest';
import { BitNetModel } from '../../src/api/bitnet-model.ts';
import { createApp } from '../../src/http/app.ts';
import type { ServedModel } from '../../src/http/model-holder.ts';
import { KVCache } from '../../src/model/kv-cache.ts';
import { ReferenceForward } from '../../src/model/reference.ts';
import { MemorySource } from '../../src/sources/byte-source.ts';
import { encodePromptText } from '../../src/tokenizer/prompt-text.ts';
import { synthBytes } from '../helpers/models.ts';
import { metric, openAIFor, post, tinyModel } from './helpers.ts';

let model: BitNetModel;
let app: ReturnType<typeof createApp>;
const headers = { 'content-type': 'application/json' };
const embed = (body: unknown) => app.request(...post('/v1/embeddings', body, headers));
type Body = {
  data: { object: string; index: number; embedding: number[] | string }[];
  usage: Record<string, number>;
  model: string;
  object: string;
};

/** Hidden states of every position by the plain-TS reference, on a fresh KV cache. */
function referenceHidden(ids: number[]): Float32Array[] {
  const hp = model.engine.model.hparams;
  const f = new ReferenceForward(hp, model.engine.model.weights);
  const kv = new KVCache({}, { nLayers: hp.nLayer, nKvHeads: hp.nHeadKv, headDim: hp.headDim }).forSequence('r');
  return ids.map((id, p) => Float32Array.from(f.forwardToken(id, p, kv)));
}

/** Mean over positions in f64, rounded to f32, then divided by its f64 L2 norm, rounded to f32. */
function meanUnit(rows: Float32Array[]): number[] {
  const n = rows[0].length;
  const mean = Array.from({ length: n }, (_, i) => Math.fround(rows.reduce((s, r) => s + r[i], 0) / rows.length));
  const norm = Math.sqrt(mean.reduce((s, x) => s + x * x, 0));
  return mean.map((x) => Math.fround(x / norm));
}

const idsOf = (text: string) => encodePromptText(model.tokenizer!, text);

beforeAll(async () => {
  model = await tinyModel();
  app = createApp({ model, modelId: 'm', limits: { maxConcurrent: 2, maxQueue: 4 } });
});

describe('POST /v1/embeddings', () => {
  it('one string: the reference hidden states, mean-pooled and unit length; usage counts its tokens', async () => {
    expect(model.engine.backendName).toBe('wasm');
    const r = await embed({ model: 'm', input: 'the quick brown fox' });
    expect(r.status).toBe(200);
    const j = (await r.json()) as Body;
    const ids = idsOf('the quick brown fox');
    expect(j).toMatchObject({
      object: 'list',
      model: 'm',
      usage: { prompt_tokens: ids.length, total_tokens: ids.length },
    });
    expect(j.data).toHaveLength(1);
    expect(j.data[0]).toMatchObject({ object: 'embedding', index: 0 });
    const v = j.data[0].embedding as number[];
    expect(v).toHaveLength(model.modelInfo().hiddenSize);
    expect(v).toEqual(meanUnit(referenceHidden(ids)));
    expect(Math.abs(v.reduce((s, x) => s + x * x, 0) - 1)).toBeLessThan(1e-5);
  });

  it("OpenAI's four input forms agree; order and indices follow the input", async () => {
    const texts = ['hello world', 'a dog', 'hello world'];
    const many = (await (await embed({ input: texts })).json()) as Body;
    expect(many.data.map((d) => d.index)).toEqual([0, 1, 2]);
    expect(many.data[0].embedding).toEqual(many.data[2].embedding);
    expect(many.data[0].embedding).not.toEqual(many.data[1].embedding);
    expect(many.usage.prompt_tokens).toBe(texts.reduce((s, t) => s + idsOf(t).length, 0));
    const one = (await (await embed({ input: idsOf('a dog') })).json()) as Body;
    expect(one.data[0].embedding).toEqual(many.data[1].embedding);
    const lists = (await (await embed({ input: texts.map(idsOf) })).json()) as Body;
    expect(lists.data.map((d) => d.embedding)).toEqual(many.data.map((d) => d.embedding));
  });

  it('base64 is the little-endian f32 bytes of the float answer; the OpenAI SDK (base64 by default) reads it', async () => {
    const f = (await (await embed({ input: 'hello world' })).json()) as Body;
    const b = (await (await embed({ input: 'hello world', encoding_format: 'base64' })).json()) as Body;
    const bytes = Uint8Array.from(atob(b.data[0].embedding as string), (ch) => ch.charCodeAt(0));
    const dv = new DataView(bytes.buffer);
    const back = Array.from({ length: bytes.length / 4 }, (_, i) => dv.getFloat32(4 * i, true));
    expect(back).toEqual(f.data[0].embedding);
    const client = openAIFor(app);
    const sdk = await client.embeddings.create({ model: 'm', input: ['hello world', 'a dog'] });
    expect(sdk.data[0].embedding).toEqual(f.data[0].embedding);
    expect(sdk.data).toHaveLength(2);
    expect(sdk.usage.prompt_tokens).toBe(idsOf('hello world').length + idsOf('a dog').length);
  });

  it("extensions: pooling 'last' with normalize false is the last position's hidden state as it is", async () => {
    const ids = idsOf('the last one');
    const j = (await (await embed({ input: ids, pooling: 'last', normalize: false })).json()) as Body;
    expect(j.data[0].embedding).toEqual(Array.from(referenceHidden(ids).at(-1)!));
    // dimensions equal to the hidden size is accepted
    expect((await embed({ input: ids, dimensions: model.modelInfo().hiddenSize })).status).toBe(200);
  });

  it('the API: BitNetModel.embed gives the same vector; a bad pooling is a typed error before any work', async () => {
    const j = (await (await embed({ input: 'hello world' })).json()) as Body;
    expect(Array.from(await model.embed('hello world'))).toEqual(j.data[0].embedding);
    expect(Array.from(await model.embed({ ids: idsOf('hello world') }))).toEqual(j.data[0].embedding);
    // the reference backend's hidden states: the same bits
    const ref = await BitNetModel.fromFile(
      new MemorySource(await synthBytes({ qtype: 'i2_s', seed: 5, arch: 'bitnet-b1.58' }), 'tiny'),
      { backend: 'reference' },
    );
    expect(ref.engine.backendName).toBe('reference');
    expect(Array.from(await ref.embed('hello world'))).toEqual(j.data[0].embedding);
    await expect(model.embed('x', { pooling: 'max' as never })).rejects.toMatchObject({
      code: 'INVALID_EMBED_OPTIONS',
    });
    await expect(model.embed({ ids: [] })).rejects.toMatchObject({ code: 'EMPTY_PROMPT' });
  });

  it('bad input: a 400 naming the field, nothing run; an unknown model 404; /metrics counts the tokens', async () => {
    const tokens = async () =>
      metric(await (await app.request('/metrics')).text(), 'bitnet_tokens_total', { type: 'prompt' });
    const before = await tokens();
    const cases: [unknown, number, Record<string, unknown>][] = [
      [{ input: '' }, 400, { param: 'input' }],
      [{ input: [] }, 400, { param: 'input' }],
      [{ input: Array.from({ length: 257 }, () => 'x') }, 400, { param: 'input' }],
      [
        {
          input: [
            [1, 2],
            [1, 99999],
          ],
        },
        400,
        { code: 'BAD_TOKEN', param: 'input[1]' },
      ],
      [{ input: new Array(500).fill(3) }, 400, { code: 'PROMPT_TOO_LONG', param: 'input' }],
      [{ input: 'x', dimensions: 3 }, 400, { code: 'INVALID_EMBED_OPTIONS', param: 'dimensions' }],
      [{ input: 'x', encoding_format: 'int8' }, 400, { param: 'encoding_format' }],
      [{ input: 'x', pooling: 'max' }, 400, { param: 'pooling' }],
      [{ model: 'other', input: 'x' }, 404, { code: 'MODEL_NOT_FOUND', param: 'model' }],
    ];
    for (const [body, status, err] of cases) {
      const r = await embed(body);
      expect(r.status, JSON.stringify(body).slice(0, 80)).toBe(status);
      expect((await r.json()).error, JSON.stringify(body).slice(0, 80)).toMatchObject(err);
    }
    expect(await tokens()).toBe(before);
    await embed({ input: 'hello world' });
    expect(await tokens()).toBe(before + idsOf('hello world').length);
    // a wrong method is a 405 naming POST
    const g = await app.request('/v1/embeddings');
    expect(g.status).toBe(405);
    expect(g.headers.get('allow')).toContain('POST');
  });

  it('a served model without embeddings (the GPU server: cuda has no hidden states) answers EMBEDDINGS_UNAVAILABLE', async () => {
    const noEmbed: ServedModel = {
      tokenizer: model.tokenizer,
      modelInfo: () => model.modelInfo(),
      engine: { backendName: 'cuda', stream: (p, c, s) => model.engine.stream(p, c, s) },
    };
    const a = createApp({ model: noEmbed, modelId: 'm' });
    const r = await a.request(...post('/v1/embeddings', { input: 'x' }, headers));
    expect(r.status).toBe(400);
    expect((await r.json()).error).toMatchObject({ code: 'EMBEDDINGS_UNAVAILABLE' });
  });
});
