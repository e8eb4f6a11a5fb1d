// Shard packs with TL1 / TL2 tile images (src/quant/tl.ts): the image codec and its validator, the
// converter from I2_S, TQ2_0, TQ1_0 GGUFs and HF checkpoints, bit-identical logits from the pack on
// the reference and wasm backends (every kernel build), over HTTP Range and through the CLI, and
// typed errors for bad manifests, corrupted images, a wasm layout mismatch and the CUDA backend.

import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Model, ModelLoader } from '../../src/api/model-loader.ts';
import { BitNetError } from '../../src/errors.ts';
import { GGMLType } from '../../src/gguf/ggml-types.ts';
import { checkCudaCapability, createCudaBackend, cudaEngineSpec } from '../../src/kernels/cuda/cuda-backend.ts';
import { ReferenceBackend } from '../../src/kernels/reference-backend.ts';
import { WasmBackend } from '../../src/kernels/wasm/backend.ts';
import { KVCache } from '../../src/model/kv-cache.ts';
import { linear, quantizeActivations, quantizeActivationsQ8K, ReferenceForward } from '../../src/model/reference.ts';
import type { Linear } from '../../src/model/weights.ts';
import { packI2S } from '../../src/quant/i2s.ts';
import {
  decodeTL,
  decodeTLRow,
  packTL,
  packTLFrom,
  readTLHeader,
  type TLLayout,
  ternaryOf,
  tlImageBytes,
  validateTLImage,
} from '../../src/quant/tl.ts';
import { packTQ2_0 } from '../../src/quant/tq.ts';
import { convertToPack, ggufInput, MemoryPackSink } from '../../src/shards/convert.ts';
import type { PackManifest } from '../../src/shards/format.ts';
import { sha256Hex } from '../../src/shards/hash.ts';
import { hfInput } from '../../src/shards/hf.ts';
import { MemorySource } from '../../src/sources/byte-source.ts';
import { openSource, siblingLocation } from '../../src/sources/open.ts';
import { firstDiff, gaussianVec, rng, ternaryVec, wasmBuilds } from '../conformance/harness.ts';
import { bitnet } from '../helpers/cli.ts';
import { synthBytes } from '../helpers/models.ts';
import { RangeServer } from '../sources/range-server.ts';
import { FAST_RETRY, IDS, isCode, logitsOf, sameBits, tempDir } from '../sources/util.ts';
import { HF_SHAPE, writeHfCheckpoint } from './hf-fixture.ts';
import { manifestOf, memoryPack } from './memory-pack.ts';

const { available: BUILDS } = wasmBuilds();
const LAYOUTS: TLLayout[] = ['tl1', 'tl2'];
const QTYPES = ['i2_s', 'tq2_0', 'tq1_0'] as const;
const backends: WasmBackend[] = [];
afterAll(() => {
  for (const b of backends) b.dispose();
});

const withManifest = (files: Map<string, Uint8Array>, m: PackManifest): Map<string, Uint8Array> =>
  new Map(files).set('manifest.json', new TextEncoder().encode(JSON.stringify(m)));

async function convert(gguf: Uint8Array, layout: 'i2s' | TLLayout): Promise<Map<string, Uint8Array>> {
  const sink = new MemoryPackSink();
  await convertToPack(await ggufInput(new MemorySource(gguf)), sink, { layout, shardSize: 100_000 });
  return sink.files;
}

/** Logits at every position of IDS on a backend (its own KV store). */
async function rows(backend: ReferenceBackend | WasmBackend, m: Model): Promise<Float32Array[]> {
  const kv = new KVCache({}, { nLayers: m.hparams.nLayer, nKvHeads: m.hparams.nHeadKv, headDim: m.hparams.headDim });
  return backend.forward({ tokens: IDS, startPos: 0, kv: kv.forSequence('s'), logits: 'all' });
}

function sameRows(got: Float32Array[], want: Float32Array[], what: string): void {
  expect(got.length, what).toBe(want.length);
  for (let i = 0; i < want.length; i++) expect(firstDiff(got[i], want[i]), `${what}: row ${i}`).toBeUndefined();
}

const projections = (m: Model): Linear[] =>
  m.weights.layers.flatMap((L) => [L.wq, L.wk, L.wv, L.wo, L.wGate, L.wUp, L.wDown]);

// ------------------------------------------------------------------------------------------------
// The image codec
// ------------------------------------------------------------------------------------------------

/**
 * Reference linear() over `src` and over its TL image `tl` give the same bits for activations x
 * (per-token int8; with q8k also llama.cpp's Q8_K blocks, as the TQ types allow).
 */
function sameLinear(src: Linear, tl: Linear, x: Float32Array, what: string, q8k = false): void {
  const { k, n } = src;
  const q = new Int8Array(k);
  const y0 = new Float32Array(n);
  const y1 = new Float32Array(n);
  const a = { q, ...quantizeActivations(x, q), x };
  linear(src, a, y0, new Float32Array(2 * k));
  linear(tl, a, y1, new Float32Array(2 * k));
  expect(firstDiff(y1, y0), what).toBeUndefined();
  if (!q8k) return;
  const d = new Float32Array(k / 256);
  quantizeActivationsQ8K(x, q, d);
  const b8 = { q, scale: 1, sum: 0, x, blockScales: d };
  linear(src, b8, y0, new Float32Array(2 * k));
  linear(tl, b8, y1, new Float32Array(2 * k));
  expect(firstDiff(y1, y0), `${what} q8k`).toBeUndefined();
}

describe('TL images (src/quant/tl.ts)', () => {
  // odd N (a partial tile), K not a multiple of 256 (a partial block) for kind 0
  const cases = [
    { n: 37, k: 384, kind: 0 as const },
    { n: 16, k: 256, kind: 0 as const },
    { n: 21, k: 512, kind: 1 as const },
  ];
  for (const layout of LAYOUTS) {
    for (const c of cases) {
      it(`${layout} ${c.n}×${c.k} kind ${c.kind}: decode(pack(t)) = t, row by row and whole`, () => {
        const r = rng(c.n * 7 + c.k);
        const t = ternaryVec(c.n * c.k, r);
        const nb = Math.ceil(c.k / 256);
        const scales =
          c.kind === 1 ? Float32Array.from({ length: c.n * nb }, (_, i) => [0.5, 0.125, 3, 0.0625][i % 4]) : undefined;
        const img = new Uint8Array(tlImageBytes(layout, c.n, c.k, c.kind));
        packTL(layout, t, c.n, c.k, c.kind, Math.fround(0.37), scales, img);
        const h = validateTLImage(img, { layout, n: c.n, k: c.k, kind: c.kind });
        expect(h).toMatchObject({ layout, n: c.n, k: c.k, nb, kind: c.kind, tiles: Math.ceil(c.n / 16) });
        const d = decodeTL(img, { layout, n: c.n, k: c.k, kind: c.kind });
        expect(Buffer.from(d.t.buffer).equals(Buffer.from(t.buffer))).toBe(true);
        expect(d.wscale).toBe(c.kind === 0 ? Math.fround(0.37) : 1);
        if (scales) expect(Array.from(d.blockScales!)).toEqual(Array.from(scales));
        // padding past K decodes to zero weights
        const row = new Int8Array(nb * 256).fill(9);
        decodeTLRow(img, h, c.n - 1, row);
        expect(row.subarray(c.k).every((v) => v === 0)).toBe(true);
      });
    }
  }

  it('ternaryOf/packTLFrom read I2_S, TQ2_0 and TQ1_0 bytes; decodeTL gives them back', () => {
    const r = rng(5);
    const t = ternaryVec(32 * 256, r);
    const i2 = packTLFrom('tl2', { type: GGMLType.I2_S, bytes: packI2S(t, 0.75), k: 256, n: 32 });
    expect(decodeTL(i2)).toMatchObject({ kind: 0, wscale: 0.75 });
    expect(Array.from(decodeTL(i2).t)).toEqual(Array.from(t));
    const tq = packTLFrom('tl1', { type: GGMLType.TQ2_0, bytes: packTQ2_0(t, 0.5), k: 256, n: 32 });
    const d = decodeTL(tq);
    expect(d.kind).toBe(1);
    expect(Array.from(d.t)).toEqual(Array.from(t));
    expect(d.blockScales!.every((s) => s === 0.5)).toBe(true);
    expect(() => ternaryOf({ type: GGMLType.F16, bytes: new Uint8Array(8), k: 2, n: 2 })).toThrow(BitNetError);
  });

  it('the validator refuses a wrong length and every wrong header word with TL_BAD_IMAGE', () => {
    type Want = { layout: TLLayout; n: number; k: number; kind: 0 | 1 };
    const expectImg: Want = { layout: 'tl2', n: 20, k: 256, kind: 1 };
    const good = packTLFrom('tl2', {
      type: GGMLType.TQ2_0,
      bytes: packTQ2_0(ternaryVec(20 * 256, rng(1)), 2),
      k: 256,
      n: 20,
    });
    expect(() => validateTLImage(good, expectImg)).not.toThrow();
    const fails = (img: Uint8Array, e: Partial<typeof expectImg>, field: string) => {
      let err: unknown;
      try {
        validateTLImage(img, { ...expectImg, ...e });
      } catch (x) {
        err = x;
      }
      expect(err, field).toBeInstanceOf(BitNetError);
      expect((err as BitNetError).code, field).toBe('TL_BAD_IMAGE');
      expect((err as BitNetError).details.field, field).toBe(field);
    };
    fails(good.subarray(0, good.length - 32), {}, 'length');
    fails(good, { layout: 'tl1' }, 'length');
    fails(good, { kind: 0 }, 'length');
    fails(new Uint8Array(10), {}, 'length');
    // each header word, changed (words: 0 layout 1 N 2 K 3 nb 4 kind 6 tiles 7 groups 8, 9 offsets)
    const words: [number, number, string][] = [
      [0, 1, 'layout'],
      [0, 7, 'layout'],
      [1, 19, 'n'],
      [2, 255, 'k'],
      [3, 2, 'nb'],
      [4, 0, 'kind'],
      [4, 5, 'kind'],
      [6, 1, 'tiles'],
      [7, 128, 'groups'],
      [8, 0, 'indexOffset'],
      [9, 64, 'scaleOffset'],
    ];
    for (const [word, value, field] of words) {
      const bad = good.slice();
      new DataView(bad.buffer).setUint32(4 * word, value, true);
      fails(bad, {}, field);
    }
    const k0 = packTLFrom('tl1', { type: GGMLType.I2_S, bytes: packI2S(new Int8Array(16 * 128), 1), k: 128, n: 16 });
    new DataView(k0.buffer).setFloat32(20, Number.NaN, true);
    expect(() => validateTLImage(k0, { layout: 'tl1', n: 16, k: 128, kind: 0 })).toThrow(/not finite/);
  });

  it('decodeTLRow refuses index bytes no packer writes (TL1 nibble > 8, TL2 magnitude > 13)', () => {
    for (const [layout, byte] of [
      ['tl1', 0x9f],
      ['tl2', 0x0e],
      ['tl2', 0x80],
    ] as const) {
      const img = packTLFrom(layout, {
        type: GGMLType.I2_S,
        bytes: packI2S(new Int8Array(16 * 256), 1),
        k: 256,
        n: 16,
      });
      img[64 + 16 * 3 + 5] = byte; // group 3 of row 5
      const h = readTLHeader(img);
      expect(() => decodeTLRow(img, h, 4, new Int8Array(256))).not.toThrow();
      expect(() => decodeTLRow(img, h, 5, new Int8Array(256))).toThrow(
        expect.objectContaining({ code: 'TL_BAD_IMAGE' }),
      );
    }
  });

  it('reference linear() on a TL image equals the source type bit for bit (per-token and Q8_K activations)', () => {
    const r = rng(9);
    for (const layout of LAYOUTS) {
      // I2_S, K = 384 (a partial 256-block), N = 37 (a partial tile)
      {
        const n = 37;
        const k = 384;
        const t = ternaryVec(n * k, r);
        const src: Linear = {
          name: 'w',
          type: GGMLType.I2_S,
          ne: [k, n],
          bytes: packI2S(t, 0.3),
          k,
          n,
          scale: Math.fround(0.3),
          outScale: 1.5,
        };
        const tl: Linear = { ...src, bytes: packTLFrom(layout, src), layout };
        sameLinear(src, tl, gaussianVec(k, r), `${layout} I2_S`);
      }
      // TQ2_0 with different block scales, both activation schemes
      {
        const n = 19;
        const k = 512;
        const t = ternaryVec(n * k, r);
        const bytes = packTQ2_0(t, 1);
        for (let b = 0; b < (n * k) / 256; b++)
          new DataView(bytes.buffer).setUint16(66 * b + 64, 0x3800 + 97 * b, true);
        const src: Linear = { name: 'w', type: GGMLType.TQ2_0, ne: [k, n], bytes, k, n, scale: 1, outScale: 1 };
        const tl: Linear = { ...src, bytes: packTLFrom(layout, src), layout };
        sameLinear(src, tl, gaussianVec(k, r), `${layout} TQ2_0`, true);
      }
    }
  });
});

// ------------------------------------------------------------------------------------------------
// Packs: GGUF → TL pack → logits
// ------------------------------------------------------------------------------------------------

describe('TL packs from GGUF: logits bit-identical to the GGUF', () => {
  for (const qtype of QTYPES) {
    for (const layout of LAYOUTS) {
      it(`${qtype} → ${layout}: manifest, images, reference and wasm (${BUILDS.join(', ')}) logits`, async () => {
        const gguf = await synthBytes({ qtype, seed: 41 });
        const files = await convert(gguf, layout);
        const m = manifestOf(files);
        const dtype = qtype.toUpperCase();
        expect(m.layout).toBe(layout);
        const projs = m.tensors.filter((t) => /\.(attn_[qkv]|attn_output|ffn_(gate|up|down))\.weight$/.test(t.name));
        expect(projs).toHaveLength(14);
        for (const t of projs) {
          expect(t).toMatchObject({ layout, dtype });
          const [n, k] = t.shape;
          expect(t.length).toBe(tlImageBytes(layout, n, k, qtype === 'i2_s' ? 0 : 1));
          const bytes = files.get(t.shard)!.subarray(t.offset, t.offset + t.length);
          expect(await sha256Hex(bytes)).toBe(t.sha256);
        }
        expect(m.tensors.filter((t) => t.layout === 'ggml').every((t) => !projs.includes(t))).toBe(true);

        const src = await new ModelLoader().load(new MemorySource(gguf));
        const pack = await new ModelLoader({ validateChecksums: true }).load(memoryPack(files));
        // the model info names the layout: qtype TL1/TL2, the storage type as the GGUF had it
        expect(pack.info.quantization).toMatchObject({ layout, qtype: layout.toUpperCase(), type: dtype });
        expect(src.info.quantization.layout).toBeUndefined();
        // the images hold the GGUF's ternary values and scales
        for (const [i, lin] of projections(pack).entries()) {
          const want = projections(src)[i];
          expect(lin).toMatchObject({ layout, type: want.type, k: want.k, n: want.n, scale: want.scale });
          const d = decodeTL(lin.bytes);
          const u = ternaryOf(want);
          expect(Buffer.from(d.t.buffer).equals(Buffer.from(u.t.buffer))).toBe(true);
          if (u.blockScales) expect(Array.from(d.blockScales!)).toEqual(Array.from(u.blockScales));
        }
        // the weight budget counts the images
        expect(pack.weightBytes).toBeGreaterThan(src.weightBytes);

        const want = await rows(new ReferenceBackend(src), src);
        sameRows(await rows(new ReferenceBackend(pack), pack), want, 'reference');
        for (const build of BUILDS) {
          const wg = WasmBackend.create(src, { build, chunk: 4, adoptWeights: false });
          const wp = WasmBackend.create(pack, { build, chunk: 4 });
          backends.push(wg, wp);
          const wantW = await rows(wg, src);
          sameRows(await rows(wp, pack), wantW, `wasm ${build}`);
          // the images were placed once, as they are: the weight table now points into wasm
          // (shared) memory, where the loader's buffers were ordinary ArrayBuffers
          expect(projections(pack).every((l) => l.bytes.buffer instanceof SharedArrayBuffer)).toBe(true);
        }
        // the reference still reads the adopted images
        sameRows(await rows(new ReferenceBackend(pack), pack), want, 'reference after wasm');
      });
    }
  }

  it('K and nFF not multiples of 256 (partial blocks) and 2 wasm threads: tl1 and tl2 from I2_S', async () => {
    const gguf = await synthBytes({ qtype: 'i2_s', seed: 43, hidden: 384, heads: 6, kvHeads: 2, ffn: 640 });
    const src = await new ModelLoader().load(new MemorySource(gguf));
    const want = await rows(new ReferenceBackend(src), src);
    const wg = WasmBackend.create(src, { adoptWeights: false });
    backends.push(wg);
    const wantW = await rows(wg, src);
    for (const layout of LAYOUTS) {
      const pack = await new ModelLoader().load(memoryPack(await convert(gguf, layout)));
      sameRows(await rows(new ReferenceBackend(pack), pack), want, `${layout} reference`);
      const wp = WasmBackend.create(pack, { numThreads: 2, layout });
      backends.push(wp);
      sameRows(await rows(wp, pack), wantW, `${layout} wasm`);
    }
  });

  it("TQ2_0 blocks with different scales convert exactly (no CONVERT_LOSSY), also in the 'q8k' scheme", async () => {
    const gguf = await synthBytes({ qtype: 'tq2_0', seed: 44 });
    const input = await ggufInput(new MemorySource(gguf));
    const t = input.tensors.find((x) => x.name === 'blk.0.attn_q.weight')!;
    const read = t.read;
    t.read = async () => {
      const b = (await read()).slice();
      b[65] ^= 0x04; // the f16 scale of the first block
      return b;
    };
    await expect(convertToPack(input, new MemoryPackSink())).rejects.toSatisfy(isCode('CONVERT_LOSSY'));
    const sink = new MemoryPackSink();
    await convertToPack(input, sink, { layout: 'tl2' });
    const pack = await new ModelLoader().load(memoryPack(sink.files));
    // the GGUF with the same change, as the reference
    const src = await new ModelLoader().load(new MemorySource(gguf));
    const q = src.weights.layers[0].wq;
    q.bytes = q.bytes.slice();
    q.bytes[65] ^= 0x04;
    sameRows(await rows(new ReferenceBackend(pack), pack), await rows(new ReferenceBackend(src), src), 'per-token');
    const kv = () => new KVCache({}, { nLayers: 2, nKvHeads: 2, headDim: 64 }).forSequence('s');
    const f0 = new ReferenceForward(src.hparams, src.weights, { activations: 'q8k' });
    const f1 = new ReferenceForward(pack.hparams, pack.weights, { activations: 'q8k' });
    const [k0, k1] = [kv(), kv()];
    for (const [p, id] of IDS.entries()) {
      const a = f0.logits(f0.forwardToken(id, p, k0));
      const b = f1.logits(f1.forwardToken(id, p, k1));
      expect(firstDiff(b, a), `q8k at ${p}`).toBeUndefined();
    }
  });
});

describe('TL packs from HF checkpoints', () => {
  const open = (dir: string) => (name: string) => openSource(siblingLocation(`${dir}/config.json`, name));
  for (const weights of ['packed', 'master'] as const) {
    it(`${weights} weights → tl1 and tl2: the same logits as the i2s pack`, async () => {
      const dir = await writeHfCheckpoint(33, { weights, floats: 'exact' });
      const packs = new Map<string, Model>();
      for (const layout of ['i2s', 'tl1', 'tl2'] as const) {
        const input = await hfInput(open(dir), dir);
        const sink = new MemoryPackSink();
        await convertToPack(input, sink, { layout });
        await input.close?.();
        expect(manifestOf(sink.files)).toMatchObject({
          layout,
          source: { kind: `hf-${weights === 'packed' ? 'packed' : 'bf16'}` },
        });
        packs.set(layout, await new ModelLoader().load(memoryPack(sink.files)));
      }
      const i2s = packs.get('i2s')!;
      expect(i2s.hparams.nEmbd).toBe(HF_SHAPE.hidden);
      const want = await rows(new ReferenceBackend(i2s), i2s);
      for (const layout of LAYOUTS) {
        const m = packs.get(layout)!;
        expect(projections(m).every((l) => l.layout === layout && l.type === GGMLType.I2_S)).toBe(true);
        sameRows(await rows(new ReferenceBackend(m), m), want, `${layout} reference`);
      }
    });
  }
});

// ------------------------------------------------------------------------------------------------
// Remote, CLI
// ------------------------------------------------------------------------------------------------

describe('TL packs over HTTP Range and through the CLI', () => {
  let server: RangeServer;
  let gguf: Uint8Array;
  let dir: string;
  beforeAll(async () => {
    gguf = await synthBytes({ qtype: 'tq1_0', seed: 45 });
    dir = await tempDir('bitnet-tl-');
    await writeFile(join(dir, 'model.gguf'), gguf);
    server = new RangeServer();
    for (const [name, bytes] of await convert(gguf, 'tl2')) server.put(`/tl2/${name}`, bytes);
    await server.start();
  });
  afterAll(() => server.stop());

  it('a TL2 pack over HTTP Range gives the GGUF logits (checksums on and off)', async () => {
    const local = await logitsOf(join(dir, 'model.gguf'));
    const cfg = { sourceOptions: { retry: FAST_RETRY } };
    expect(sameBits(await logitsOf(`${server.url}/tl2/`, cfg), local)).toBe(true);
    expect(
      sameBits(await logitsOf(`${server.url}/tl2/manifest.json`, { ...cfg, validateChecksums: true }), local),
    ).toBe(true);
  });

  it('`bitnet convert --layout tl2` then `bitnet logits` (reference and wasm) equals the GGUF', async () => {
    const out = join(dir, 'pack');
    const c = await bitnet('convert', '--model', join(dir, 'model.gguf'), '--out', out, '--layout', 'tl2', '--json');
    expect(c.code, c.stderr).toBe(0);
    expect(JSON.parse(c.stdout)).toMatchObject({ out, layout: 'tl2', source: { kind: 'gguf' } });
    const m = JSON.parse(await readFile(join(out, 'manifest.json'), 'utf8')) as PackManifest;
    expect(m.tensors.find((t) => t.name === 'blk.1.ffn_down.weight')).toMatchObject({ layout: 'tl2', dtype: 'TQ1_0' });
    const ids = IDS.join(',');
    for (const backend of ['reference', 'wasm']) {
      const [a, b] = await Promise.all([
        bitnet('logits', '--model', join(dir, 'model.gguf'), '--prompt-ids', ids, '--backend', backend, '--json'),
        bitnet('logits', '--model', out, '--prompt-ids', ids, '--backend', backend, '--json'),
      ]);
      expect(a.code, a.stderr).toBe(0);
      expect(b.stdout, backend).toBe(a.stdout);
    }
    const bad = await bitnet('convert', '--model', join(dir, 'model.gguf'), '--out', out, '--layout', 'tl3');
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain('tl3');
  });
});

// ------------------------------------------------------------------------------------------------
// Bad inputs
// ------------------------------------------------------------------------------------------------

describe('TL packs: bad inputs are typed errors, never wrong numbers', () => {
  let gguf: Uint8Array;
  let files: Map<string, Uint8Array>;
  beforeAll(async () => {
    gguf = await synthBytes({ qtype: 'i2_s', seed: 46 });
    files = await convert(gguf, 'tl1');
  });

  it('manifest errors are found before any shard is opened', async () => {
    const base = manifestOf(files);
    const proj = base.tensors.findIndex((t) => t.name === 'blk.0.attn_k.weight');
    const embd = base.tensors.findIndex((t) => t.name === 'token_embd.weight');
    const variants: [string, (m: PackManifest) => void][] = [
      ['PACK_BAD_MANIFEST', (m) => void (m.tensors[proj].length += 64)],
      ['PACK_BAD_MANIFEST', (m) => void (m.tensors[proj].length -= 32)],
      ['PACK_BAD_MANIFEST', (m) => void (m.tensors[proj].layout = 'tl2')],
      ['PACK_BAD_MANIFEST', (m) => void (m.tensors[proj].dtype = 'F16')],
      ['PACK_BAD_MANIFEST', (m) => void (m.tensors[proj].shape = [128, 256, 1])],
      ['PACK_BAD_MANIFEST', (m) => void (m.tensors[embd].layout = 'tl1')],
      ['PACK_UNSUPPORTED_LAYOUT', (m) => void (m.tensors[proj].layout = 'tl3' as 'tl1')],
      ['PACK_UNSUPPORTED_LAYOUT', (m) => void (m.layout = 'tl3' as 'tl1')],
    ];
    for (const [code, edit] of variants) {
      const m = structuredClone(base);
      edit(m);
      const opened: string[] = [];
      await expect(new ModelLoader().load(memoryPack(withManifest(files, m), opened)), code).rejects.toSatisfy(
        isCode(code),
      );
      expect(opened).toEqual(['manifest.json']);
    }
  });

  it('a corrupted image header is PACK_BAD_TL_IMAGE (hash fixed or checksums off), a bad hash CHECKSUM_MISMATCH', async () => {
    const m = manifestOf(files);
    const t = m.tensors.find((x) => x.name === 'blk.1.ffn_up.weight')!;
    for (const [word, value] of [
      [1, 1],
      [2, 128],
      [0, 2],
      [4, 1],
      [9, 64],
    ]) {
      const shard = files.get(t.shard)!.slice();
      new DataView(shard.buffer).setUint32(t.offset + 4 * word, value, true);
      const bad = new Map(files).set(t.shard, shard);
      await expect(new ModelLoader().load(memoryPack(bad)), `word ${word}`).rejects.toSatisfy(
        isCode('PACK_BAD_TL_IMAGE'),
      );
      await expect(new ModelLoader({ validateChecksums: true }).load(memoryPack(bad))).rejects.toSatisfy(
        isCode('CHECKSUM_MISMATCH'),
      );
      const fixed = structuredClone(m);
      fixed.tensors.find((x) => x.name === t.name)!.sha256 = await sha256Hex(
        shard.subarray(t.offset, t.offset + t.length),
      );
      const e = await new ModelLoader({ validateChecksums: true })
        .load(memoryPack(withManifest(bad, fixed)))
        .catch((x) => x);
      expect(e).toMatchObject({ kind: 'Model', code: 'PACK_BAD_TL_IMAGE', details: { name: t.name, layout: 'tl1' } });
    }
    // a corrupted index byte (header intact): the reference refuses it when it reads the row
    const shard = files.get(t.shard)!.slice();
    shard[t.offset + 64 + 16 * 7 + 3] = 0xff;
    const model = await new ModelLoader().load(memoryPack(new Map(files).set(t.shard, shard)));
    await expect(rows(new ReferenceBackend(model), model)).rejects.toSatisfy(isCode('TL_BAD_IMAGE'));
  });

  it('the wasm backend refuses another TL layout than the pack has, and mixed layouts', async () => {
    const pack = await new ModelLoader().load(memoryPack(files));
    const e = (() => {
      try {
        WasmBackend.create(pack, { layout: 'tl2' });
      } catch (x) {
        return x;
      }
    })();
    expect(e).toMatchObject({
      kind: 'Config',
      code: 'WASM_LAYOUT_MISMATCH',
      details: { layout: 'tl2', modelLayout: 'tl1' },
    });
    // the pack's own layout ('file' or named): the images are the only copy of the projections
    const w = pack.weights;
    const placed =
      projections(pack).reduce((a, l) => a + l.bytes.byteLength, 0) +
      w.tokenEmbd.bytes.byteLength +
      (w.output === w.tokenEmbd ? 0 : w.output.bytes.byteLength);
    for (const layout of ['file', 'tl1'] as const) {
      const wb = WasmBackend.create(pack, { layout, adoptWeights: false });
      backends.push(wb);
      expect(wb.weightBytes).toBe(placed);
    }
    const src = await new ModelLoader().load(new MemorySource(gguf));
    const mixed = { ...pack, weights: { ...pack.weights, layers: [...pack.weights.layers] } };
    mixed.weights.layers[1] = { ...mixed.weights.layers[1], wDown: src.weights.layers[1].wDown };
    expect(() => WasmBackend.create(mixed)).toThrow(/layouts are mixed/);
    // the reference runs a mixed table: the same logits
    sameRows(await rows(new ReferenceBackend(mixed), mixed), await rows(new ReferenceBackend(src), src), 'mixed');
  });

  it('the cuda backend refuses TL images in its capability check, before loading the addon', async () => {
    const pack = await new ModelLoader().load(memoryPack(files));
    const want = {
      kind: 'Device',
      code: 'BACKEND_UNAVAILABLE',
      details: { backend: 'cuda', reason: 'unsupported-layout' },
    };
    const nowhere = join(await tempDir(), 'no-such-addon.node');
    const caught = (f: () => unknown) => {
      try {
        f();
      } catch (x) {
        return x;
      }
    };
    expect(caught(() => checkCudaCapability(pack.weights))).toMatchObject(want);
    expect(caught(() => cudaEngineSpec(pack.hparams, pack.weights))).toMatchObject(want);
    expect(caught(() => createCudaBackend(pack, { addonPath: nowhere }))).toMatchObject({
      ...want,
      details: { ...want.details, tensor: 'blk.0.attn_q.weight', layout: 'tl1' },
    });
    // an i2s model passes the check and fails only on the missing addon
    const src = await new ModelLoader().load(new MemorySource(gguf));
    expect(() => checkCudaCapability(src.weights)).not.toThrow();
    const other = caught(() => createCudaBackend(src, { addonPath: nowhere })) as BitNetError;
    expect(other).toBeInstanceOf(BitNetError);
    expect(other.details.reason).not.toBe('unsupported-layout');
  });

  it('the memory budget counts the images, from the manifest alone', async () => {
    const m = manifestOf(files);
    const needed = (await new ModelLoader().load(memoryPack(files))).weightBytes;
    expect(needed).toBe(m.tensors.reduce((a, t) => a + t.length, 0));
    const i2s = (await new ModelLoader().load(memoryPack(await convert(gguf, 'i2s')))).weightBytes;
    expect(needed).toBeGreaterThan(i2s);
    const opened: string[] = [];
    const e = await new ModelLoader({ maxMemoryBytes: needed - 1 }).load(memoryPack(files, opened)).catch((x) => x);
    expect(e).toMatchObject({ kind: 'Memory', code: 'MODEL_TOO_LARGE', details: { needed } });
    expect(opened).toEqual(['manifest.json']);
  });
});
