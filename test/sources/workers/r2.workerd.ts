// Inside workerd: models read from a local R2 binding by range (GGUF and shard pack) give logits
// bit-for-bit equal to the same GGUF read from memory; a changed object is a typed error; the Cache
// API block cache works; and a 2B-4T-sized pack is refused by the 128 MB Workers budget from its
// manifest alone.
import { env } from 'cloudflare:workers';
import { beforeAll, describe, expect, it } from 'vitest';
import { Device } from '../../../src/api/device.ts';
import { InferenceConfig } from '../../../src/api/inference-config.ts';
import { InferenceEngine } from '../../../src/api/inference-engine.ts';
import { type Model, ModelLoader, WORKERS_MEMORY_BYTES } from '../../../src/api/model-loader.ts';
import { BitNetError } from '../../../src/errors.ts';
import { encodeGGUF } from '../../../src/gguf/writer.ts';
import { SYNTH_PRESETS, synthModel } from '../../../src/model/synth.ts';
import { convertToPack, ggufInput, MemoryPackSink, planManifest } from '../../../src/shards/convert.ts';
import { BlockCachedSource } from '../../../src/sources/block-cache.ts';
import { MemorySource } from '../../../src/sources/byte-source.ts';
import { CacheApiStore, defaultCacheApi } from '../../../src/sources/cache-api.ts';
import { type R2BucketLike, R2Source } from '../../../src/sources/r2.ts';

type Bucket = R2BucketLike & { put(k: string, v: Uint8Array): Promise<unknown> };
const MODELS = env.MODELS as Bucket;
const IDS = [5, 6, 7, 1, 42];
let gguf: Uint8Array;
let reference: Float32Array;

async function logits(m: Model): Promise<Float32Array> {
  const eng = new InferenceEngine(m, m.tokenizer, Device.Auto, new InferenceConfig(), { backend: 'reference' });
  return (await eng.forward(IDS)).data;
}

function sameBits(a: Float32Array, b: Float32Array): boolean {
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

const loader = () => new ModelLoader({ sourceOptions: { bindings: env as Record<string, unknown> } });

beforeAll(async () => {
  const m = synthModel({
    arch: 'bitnet',
    activation: 'silu',
    hidden: 256,
    layers: 2,
    heads: 4,
    kvHeads: 2,
    ffn: 512,
    vocab: 300,
    ctx: 128,
    qtype: 'i2_s',
    embdType: 'f16',
    seed: 11,
  });
  gguf = await encodeGGUF(m.metadata, m.tensors);
  await MODELS.put('m/model.gguf', gguf);
  const sink = new MemoryPackSink();
  await convertToPack(await ggufInput(new MemorySource(gguf)), sink, { shardSize: 200_000 });
  for (const [name, bytes] of sink.files) await MODELS.put(`pack/${name}`, bytes);
  reference = await logits(await new ModelLoader().load(new MemorySource(gguf)));
});

describe('R2 inside workerd', () => {
  it('runs in workerd, with the Workers memory budget by default', () => {
    expect(navigator.userAgent).toBe('Cloudflare-Workers');
    expect(loader().config.maxMemoryBytes).toBe(WORKERS_MEMORY_BYTES);
  });

  it('loads a GGUF from r2:// with logits identical to the bytes read from memory', async () => {
    expect(sameBits(await logits(await loader().load('r2://MODELS/m/model.gguf')), reference)).toBe(true);
  });

  it('loads a shard pack from r2:// (checksums on) with identical logits', async () => {
    const l = new ModelLoader({ validateChecksums: true, sourceOptions: { bindings: env as Record<string, unknown> } });
    expect(sameBits(await logits(await l.load('r2://MODELS/pack/')), reference)).toBe(true);
    const src = await R2Source.open(MODELS, 'pack/manifest.json', {}, 'MODELS');
    expect(sameBits(await logits(await new ModelLoader().load(src)), reference)).toBe(true);
  });

  it('refuses an object that changes mid-read', async () => {
    await MODELS.put('m/changing.gguf', gguf);
    const s = await R2Source.open(MODELS, 'm/changing.gguf', { retry: { retries: 1, baseDelayMs: 1 } }, 'MODELS');
    await s.read(0, 1000);
    const changed = gguf.slice();
    changed[0] ^= 1;
    await MODELS.put('m/changing.gguf', changed);
    const e = await s.read(1000, 1000).catch((x) => x);
    expect(e).toBeInstanceOf(BitNetError);
    expect(e.code).toBe('SOURCE_CHANGED');
  });

  it('caches blocks in the Cache API', async () => {
    const cache = await defaultCacheApi();
    expect(cache).toBeDefined();
    const open = async () =>
      new BlockCachedSource(await R2Source.open(MODELS, 'm/model.gguf', {}, 'MODELS'), new CacheApiStore(cache!), {
        blockSize: 65536,
      });
    const a = await open();
    const first = await a.read(100, 70_000);
    const b = await open();
    const second = await b.read(100, 70_000);
    expect(Array.from(second.subarray(0, 64))).toEqual(Array.from(first.subarray(0, 64)));
    expect(second.every((v, i) => v === gguf[100 + i])).toBe(true);
    // workerd's local cache keeps the blocks: the second source never reads R2.
    expect(b.stats).toMatchObject({ hits: 2, misses: 0, innerReads: 0 });
  });

  it('refuses a 2B-4T-sized pack before opening any shard', async () => {
    const m = synthModel({
      ...SYNTH_PRESETS['2b-4t'],
      arch: 'bitnet-b1.58',
      qtype: 'i2_s',
      embdType: 'f16',
      seed: 1,
      vocab: 1024,
    });
    const tensors = m.tensors.map((t) => ({
      name: t.name,
      ne: t.name === 'token_embd.weight' ? [2560, 128256] : t.ne,
      type: t.type,
      read: async (): Promise<Uint8Array> => {
        throw new Error('no tensor may be read');
      },
    }));
    const metadata = new Map(m.metadata.filter(([k]) => !k.startsWith('tokenizer.')));
    metadata.set('bitnet-b1.58.vocab_size', { type: 4, value: 128256 });
    const manifest = planManifest({ kind: 'gguf', name: '2b-4t-sized', metadata, tensors });
    await MODELS.put('big/manifest.json', new TextEncoder().encode(JSON.stringify(manifest)));
    const e = await loader()
      .load('r2://MODELS/big/')
      .catch((x) => x);
    expect(e).toBeInstanceOf(BitNetError);
    expect(e.code).toBe('MODEL_TOO_LARGE');
    expect(e.details.budget).toBe(128 * 1024 * 1024);
    expect(e.details.needed).toBeGreaterThan(1_000_000_000);
  });
});
