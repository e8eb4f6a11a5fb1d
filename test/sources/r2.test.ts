// R2 through a bucket binding, from Node against miniflare's local R2 (the same storage workerd
// uses): bucket.get(key, {range, onlyIf: {etagMatches}}). The workerd run is r2.workerd.ts.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ModelLoader } from '../../src/api/model-loader.ts';
import { BlockCachedSource } from '../../src/sources/block-cache.ts';
import { CacheApiStore, type CacheLike } from '../../src/sources/cache-api.ts';
import { type R2BucketLike, R2Source } from '../../src/sources/r2.ts';
import { FAST_RETRY, type Fixture, isCode, logitsOf, logitsOfModel, makeFixture, sameBits } from './util.ts';

// miniflare comes with the Workers tooling (a dev dependency of the HTTP tests); the API moved in v5.
const mfModule = (await import('miniflare').catch(() => undefined)) as
  | {
      Miniflare: new (o: unknown) => { getR2Bucket(n: string): Promise<unknown>; dispose(): Promise<void> };
      convertV4MiniflareOptions?: (o: unknown) => unknown;
    }
  | undefined;

let mf: { getR2Bucket(n: string): Promise<unknown>; dispose(): Promise<void> } | undefined;
let bucket: R2BucketLike & { put(k: string, v: Uint8Array): Promise<unknown>; delete(k: string): Promise<void> };
let fx: Fixture;
let local: Float32Array;

beforeAll(async () => {
  if (!mfModule) return;
  const v4 = {
    modules: true,
    script: 'export default { fetch() { return new Response("") } }',
    r2Buckets: ['MODELS'],
    compatibilityDate: '2026-08-01',
  };
  mf = new mfModule.Miniflare(mfModule.convertV4MiniflareOptions ? mfModule.convertV4MiniflareOptions(v4) : v4);
  bucket = (await mf.getR2Bucket('MODELS')) as typeof bucket;
  fx = await makeFixture();
  await bucket.put('m/model.gguf', new Uint8Array(fx.gguf));
  for (const [name, bytes] of fx.pack) await bucket.put(`pack/${name}`, new Uint8Array(bytes));
  local = await logitsOf(fx.ggufPath);
});
afterAll(() => mf?.dispose());

describe.skipIf(!mfModule)('R2 source (miniflare R2 from Node)', () => {
  const cfg = () => ({ sourceOptions: { bindings: { MODELS: bucket }, retry: FAST_RETRY } });

  it('loads a GGUF and a pack from r2:// with logits identical to the local file', async () => {
    expect(sameBits(await logitsOf('r2://MODELS/m/model.gguf', cfg()), local)).toBe(true);
    expect(sameBits(await logitsOf('r2://MODELS/pack/', { ...cfg(), validateChecksums: true }), local)).toBe(true);
    expect(sameBits(await logitsOf('r2://MODELS/pack/manifest.json', cfg()), local)).toBe(true);
  });

  it('loads from an R2Source handed over as a ByteSource (siblings from the same bucket)', async () => {
    const src = await R2Source.open(bucket, 'pack/manifest.json', {}, 'MODELS');
    expect(sameBits(await logitsOfModel(await new ModelLoader().load(src)), local)).toBe(true);
  });

  it('fails with SOURCE_CHANGED when the object is replaced mid-load', async () => {
    await bucket.put('m/changing.gguf', new Uint8Array(fx.gguf));
    const r2 = await R2Source.open(bucket, 'm/changing.gguf', { retry: FAST_RETRY }, 'MODELS');
    let reads = 0;
    const src = {
      size: r2.size,
      etag: r2.etag,
      description: r2.description,
      read: async (o: number, l: number) => {
        if (++reads === 4) {
          const changed = fx.gguf.slice();
          changed[changed.length - 1] ^= 1;
          await bucket.put('m/changing.gguf', changed);
        }
        return r2.read(o, l);
      },
    };
    await expect(new ModelLoader().load(src)).rejects.toSatisfy(isCode('SOURCE_CHANGED'));
    // Deleted mid-load: also a changed source, never a short or wrong read.
    await bucket.put('m/gone.gguf', new Uint8Array(fx.gguf));
    const g = await R2Source.open(bucket, 'm/gone.gguf', { retry: FAST_RETRY }, 'MODELS');
    await bucket.delete('m/gone.gguf');
    await expect(g.read(0, 100)).rejects.toSatisfy(isCode('SOURCE_CHANGED'));
  });

  it('retries binding errors, and names a missing binding or key', async () => {
    let fail = 2;
    const flaky: R2BucketLike = {
      head: (k) => bucket.head(k),
      get: async (k, o) => {
        if (fail-- > 0) throw new Error('internal error (10001)');
        return bucket.get(k, o);
      },
    };
    const s = await R2Source.open(flaky, 'm/model.gguf', { retry: FAST_RETRY });
    expect(Buffer.from(await s.read(10, 1000)).equals(Buffer.from(fx.gguf.subarray(10, 1010)))).toBe(true);
    await expect(logitsOf('r2://NOPE/m/model.gguf', cfg())).rejects.toSatisfy(isCode('R2_BINDING_MISSING'));
    await expect(logitsOf('r2://MODELS/none.gguf', cfg())).rejects.toSatisfy(isCode('NOT_FOUND'));
  });

  it('serves repeated reads from a Cache API block cache', async () => {
    const map = new Map<string, Uint8Array>();
    const cache: CacheLike = {
      match: async (u) => (map.has(u) ? new Response(map.get(u)!.slice()) : undefined),
      put: async (u, r) => void map.set(u, new Uint8Array(await r.arrayBuffer())),
    };
    const a = new BlockCachedSource(
      await R2Source.open(bucket, 'm/model.gguf', {}, 'MODELS'),
      new CacheApiStore(cache),
      {
        blockSize: 65536,
      },
    );
    await a.read(0, 100_000);
    const b = new BlockCachedSource(
      await R2Source.open(bucket, 'm/model.gguf', {}, 'MODELS'),
      new CacheApiStore(cache),
      {
        blockSize: 65536,
      },
    );
    const bytes = await b.read(0, 100_000);
    expect(b.stats).toMatchObject({ hits: 2, innerReads: 0 });
    expect(Buffer.from(bytes).equals(Buffer.from(fx.gguf.subarray(0, 100_000)))).toBe(true);
  });
});
