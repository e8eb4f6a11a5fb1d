/**
 * Whole-model conformance: the wasm backend's logits equal the reference backend's, bit for bit,
 * on synthetic models of every supported weight type × head type × activation, for prefill
 * (chunked and not), decode, 1, 2 and 3 threads (work shared out in many small chunks), and both
 * kernel builds. Also the KV mirror's contract: a store filled by another backend, a truncated
 * sequence, a rewritten store.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { ReferenceBackend } from '../../src/kernels/reference-backend.ts';
import { barrierSpinsFor, WasmBackend } from '../../src/kernels/wasm/backend.ts';
import { KVCache } from '../../src/model/kv-cache.ts';
import { type LoadedModel, loadModel } from '../../src/model/load.ts';
import { MemorySource } from '../../src/sources/byte-source.ts';
import { nextTurn } from '../../src/util/turn.ts';
import { synthBytes } from '../helpers/models.ts';
import { firstDiff, wasmBuilds } from './harness.ts';

const { available } = wasmBuilds();
const backends: WasmBackend[] = [];
afterAll(() => {
  for (const b of backends) b.dispose();
});

function cacheFor(m: LoadedModel): KVCache {
  return new KVCache({}, { nLayers: m.hparams.nLayer, nKvHeads: m.hparams.nHeadKv, headDim: m.hparams.headDim });
}

async function model(o: Parameters<typeof synthBytes>[0]): Promise<LoadedModel> {
  return loadModel(new MemorySource(await synthBytes(o)));
}

function sameRows(a: Float32Array[], b: Float32Array[], what: string): void {
  expect(b.length, what).toBe(a.length);
  for (let i = 0; i < a.length; i++) {
    const d = firstDiff(b[i], a[i]);
    expect(d, `${what}: row ${i} ${d}`).toBeUndefined();
  }
}

const ids = Array.from({ length: 21 }, (_, i) => (i * 37 + 11) % 290);

// weight type × embedding/head type × activation (arch b1.58 = relu², bitnet = SiLU unless relu2)
const MODELS = [
  { qtype: 'i2_s', embdType: 'f16', arch: 'bitnet-b1.58' },
  { qtype: 'i2_s', embdType: 'q6_k', arch: 'bitnet-b1.58' },
  { qtype: 'tq2_0', embdType: 'q6_k', activation: 'silu' },
  { qtype: 'tq2_0', embdType: 'q8_0', activation: 'relu2' },
  { qtype: 'tq1_0', embdType: 'q8_0', activation: 'silu' },
  { qtype: 'tq1_0', embdType: 'f16', activation: 'relu2' },
  { qtype: 'i2_s', embdType: 'q4_0', arch: 'bitnet-b1.58' },
  { qtype: 'f16', embdType: 'q6_k', activation: 'silu' },
] as const;

for (const build of available) {
  describe(`whole-model logits: wasm ${build} equals the reference`, () => {
    for (const [i, cfg] of MODELS.entries()) {
      const threads = i % 2 === 0 ? 1 : 2;
      it(`${cfg.qtype} weights, ${cfg.embdType} head, ${'arch' in cfg ? cfg.arch : `bitnet ${cfg.activation}`}, ${threads} thread(s)`, async () => {
        const m = await model({ ...cfg, seed: 11 + i } as Parameters<typeof synthBytes>[0]);
        const ref = new ReferenceBackend(m);
        const wb = WasmBackend.create(m, { build, numThreads: threads, chunk: 8 });
        backends.push(wb);
        const c1 = cacheFor(m);
        const c2 = cacheFor(m);
        const s1 = c1.forSequence('s');
        const s2 = c2.forSequence('s');
        // prefill, logits at every position, in chunks of 8 (21 tokens: 8 + 8 + 5)
        const a = await ref.forward({ tokens: ids, startPos: 0, kv: s1, logits: 'all' });
        const b = await wb.forward({ tokens: ids, startPos: 0, kv: s2, logits: 'all' });
        sameRows(a, b, 'prefill');
        expect(wb.numThreads).toBe(threads);
        // decode steps
        for (let p = ids.length; p < ids.length + 4; p++) {
          const x = await ref.forward({ tokens: [(p * 13) % 300], startPos: p, kv: s1, logits: 'last' });
          const y = await wb.forward({ tokens: [(p * 13) % 300], startPos: p, kv: s2, logits: 'last' });
          sameRows(x, y, `decode at ${p}`);
        }
        // the engine's store holds the same K/V after both
        const kd = m.hparams.nHeadKv * m.hparams.headDim;
        const k1 = new Float32Array(kd);
        const k2 = new Float32Array(kd);
        s1.readK(m.hparams.nLayer - 1, ids.length + 2, k1);
        s2.readK(m.hparams.nLayer - 1, ids.length + 2, k2);
        expect(firstDiff(k2, k1)).toBeUndefined();
      });
    }
  });
}

describe('whole-model logits with the TL1 / TL2 lookup-table kernels', () => {
  for (const [layout, cfg] of [
    ['tl1', { qtype: 'i2_s', embdType: 'q8_0', arch: 'bitnet-b1.58' }],
    ['tl2', { qtype: 'tq2_0', embdType: 'q6_k', activation: 'silu' }],
    ['tl2', { qtype: 'tq1_0', embdType: 'f16', activation: 'relu2' }],
  ] as const) {
    it(`${layout} over ${cfg.qtype} weights equals the reference (2 threads)`, async () => {
      const m = await model({ ...cfg, seed: 21 } as Parameters<typeof synthBytes>[0]);
      const ref = new ReferenceBackend(m);
      const wb = WasmBackend.create(m, { layout, numThreads: 2, chunk: 8 });
      backends.push(wb);
      const a = await ref.forward({
        tokens: ids.slice(0, 12),
        startPos: 0,
        kv: cacheFor(m).forSequence('s'),
        logits: 'all',
      });
      const b = await wb.forward({
        tokens: ids.slice(0, 12),
        startPos: 0,
        kv: cacheFor(m).forSequence('s'),
        logits: 'all',
      });
      sameRows(a, b, layout);
    });
  }
});

describe('wasm backend: work shared out in small chunks over 3 threads', () => {
  // workChunkBytes 64: every projection, the head and attention come in many more chunks than
  // threads (16 rows each), so the threads take them in whatever order the machine gives; the
  // prefill (the tiled kernels, the multi-token heads), decode and a batched decode must still be
  // the reference's bits.
  const CASES = [
    { cfg: { qtype: 'i2_s', embdType: 'f16', arch: 'bitnet-b1.58' }, layout: 'file' },
    { cfg: { qtype: 'tq2_0', embdType: 'q6_k', activation: 'silu' }, layout: 'file' },
    { cfg: { qtype: 'tq1_0', embdType: 'q8_0', activation: 'relu2' }, layout: 'tl2' },
    { cfg: { qtype: 'f16', embdType: 'q4_0', activation: 'silu' }, layout: 'file' },
  ] as const;
  for (const [i, { cfg, layout }] of CASES.entries()) {
    it(`${cfg.qtype} weights (${layout}), ${cfg.embdType} head: prefill, decode and a batch of 3`, async () => {
      const m = await model({ ...cfg, seed: 51 + i } as Parameters<typeof synthBytes>[0]);
      const ref = new ReferenceBackend(m);
      const wb = WasmBackend.create(m, { numThreads: 3, chunk: 8, layout, workChunkBytes: 64 });
      backends.push(wb);
      const rs = [0, 1, 2].map((j) => cacheFor(m).forSequence(`r${j}`));
      const ws = [0, 1, 2].map((j) => cacheFor(m).forSequence(`w${j}`));
      const prompt = (j: number) => ids.slice(j * 3, j * 3 + 13 + j);
      for (let j = 0; j < 3; j++) {
        const a = await ref.forward({ tokens: prompt(j), startPos: 0, kv: rs[j], logits: 'all' });
        const b = await wb.forward({ tokens: prompt(j), startPos: 0, kv: ws[j], logits: 'all' });
        sameRows(a, b, `prefill ${j}`);
      }
      expect(wb.numThreads).toBe(3);
      const p0 = prompt(0).length;
      sameRows(
        await ref.forward({ tokens: [7], startPos: p0, kv: rs[0], logits: 'last' }),
        await wb.forward({ tokens: [7], startPos: p0, kv: ws[0], logits: 'last' }),
        'decode',
      );
      const pos = [p0 + 1, prompt(1).length, prompt(2).length];
      const want = await Promise.all(
        pos.map((p, j) => ref.forward({ tokens: [9 + j], startPos: p, kv: rs[j], logits: 'last' })),
      );
      const before = wb.decodeStats.runs;
      const got = await Promise.all(
        pos.map((p, j) => wb.forward({ tokens: [9 + j], startPos: p, kv: ws[j], logits: 'last' })),
      );
      expect(wb.decodeStats.runs - before).toBe(1);
      for (let j = 0; j < 3; j++) sameRows(want[j], got[j], `batched step, sequence ${j}`);
    });
  }
  it('barriers spin briefly only when there are more threads than cores', () => {
    expect(barrierSpinsFor(2, 2)).toBe(0); // the kernel's long spin
    expect(barrierSpinsFor(2, undefined)).toBe(0);
    expect(barrierSpinsFor(3, 2)).toBe(1 << 14);
    expect(barrierSpinsFor(16, 8)).toBe(1 << 14);
  });
});

describe('wasm backend: KV mirror and prefill paths', () => {
  it("a 'last' prefill in one chunk, a store filled by the reference, truncation and rewrite", async () => {
    const m = await model({ qtype: 'i2_s', seed: 4, arch: 'bitnet-b1.58', embdType: 'q6_k' });
    const ref = new ReferenceBackend(m);
    const wb = WasmBackend.create(m, {});
    backends.push(wb);
    const cache = cacheFor(m);
    const s = cache.forSequence('a');
    // reference fills positions 0..9; wasm continues from 10 (mirror synced from the store)
    await ref.forward({ tokens: ids.slice(0, 10), startPos: 0, kv: s, logits: 'last' });
    const ws = cacheFor(m).forSequence('b');
    const [want] = await ref.forward({ tokens: ids.slice(0, 15), startPos: 0, kv: ws, logits: 'last' });
    const [got] = await wb.forward({ tokens: ids.slice(10, 15), startPos: 10, kv: s, logits: 'last' });
    expect(firstDiff(got, want)).toBeUndefined();
    // truncate: re-run from position 12 with other tokens (the mirror drops positions >= 12)
    const other = [5, 6, 7];
    const rs = cacheFor(m).forSequence('c');
    await ref.forward({ tokens: [...ids.slice(0, 12)], startPos: 0, kv: rs, logits: 'last' });
    const [want2] = await ref.forward({ tokens: other, startPos: 12, kv: rs, logits: 'last' });
    const [got2] = await wb.forward({ tokens: other, startPos: 12, kv: s, logits: 'last' });
    expect(firstDiff(got2, want2)).toBeUndefined();
    // rewrite the store behind the mirror's back: the spot check notices and resyncs
    const fresh = cacheFor(m).forSequence('d');
    const rw = cacheFor(m).forSequence('e');
    await ref.forward({ tokens: [9, 9, 9, 9], startPos: 0, kv: fresh, logits: 'last' });
    await wb.forward({ tokens: [1, 2, 3, 4], startPos: 0, kv: rw, logits: 'last' });
    const kd = m.hparams.nHeadKv * m.hparams.headDim;
    const k = new Float32Array(kd);
    const v = new Float32Array(kd);
    for (let l = 0; l < m.hparams.nLayer; l++) {
      for (let p = 0; p < 4; p++) {
        fresh.readK(l, p, k);
        fresh.readV(l, p, v);
        rw.write(l, p, k, v);
      }
    }
    const [want3] = await ref.forward({ tokens: [8], startPos: 4, kv: fresh, logits: 'last' });
    const [got3] = await wb.forward({ tokens: [8], startPos: 4, kv: rw, logits: 'last' });
    expect(firstDiff(got3, want3)).toBeUndefined();
  });

  it('the engine releases the backend copy of each request sequence; released mirrors are reused', async () => {
    const { InferenceEngine } = await import('../../src/api/inference-engine.ts');
    const { Device } = await import('../../src/api/device.ts');
    const { InferenceConfig } = await import('../../src/api/inference-config.ts');
    const { ModelLoader } = await import('../../src/api/model-loader.ts');
    const m = await new ModelLoader().load(
      new MemorySource(await synthBytes({ qtype: 'i2_s', seed: 3, arch: 'bitnet-b1.58', embdType: 'q4_0' })),
    );
    const eng = new InferenceEngine(m, m.tokenizer, Device.Auto, new InferenceConfig(), { backend: 'wasm' });
    const refEng = new InferenceEngine(m, m.tokenizer, Device.Auto, new InferenceConfig(), { backend: 'reference' });
    const be = (eng as unknown as { engine: { d: { backend: WasmBackend } } }).engine.d.backend;
    backends.push(be);
    const released: unknown[] = [];
    const orig = be.release.bind(be);
    be.release = (kv) => {
      released.push(kv);
      orig(kv);
    };
    const cfg = { maxNewTokens: 6, temperature: 0 };
    const before = be.memoryBytes;
    for (let i = 0; i < 3; i++) {
      const a = await eng.generate({ ids: ids.slice(i, i + 7) }, cfg);
      const b = await refEng.generate({ ids: ids.slice(i, i + 7) }, cfg);
      expect(a.tokenIds).toEqual(b.tokenIds);
    }
    expect(released).toHaveLength(3);
    // the first request's KV blocks serve the next ones: no growth after the first
    const after1 = be.memoryBytes;
    await eng.generate({ ids: ids.slice(0, 7) }, cfg);
    expect(be.memoryBytes).toBe(after1);
    expect(after1).toBeGreaterThanOrEqual(before);
    // the engine's KV store holds nothing but the prompt cache's finished sequences
    expect(eng.cache.sequenceIds()).toHaveLength(eng.promptCacheSize);
    eng.clearPromptCache();
    expect(eng.cache.stats().bytes).toBe(0);
  });

  it('concurrent chunked prefills with fewer mirrors than sequences: each equals its run alone', async () => {
    // A forward yields between chunks; meanwhile the other sequences' forwards evict its mirror
    // (maxMirrors 1) and reuse its blocks. Each must still see only its own KV.
    const m = await model({ qtype: 'i2_s', seed: 6, arch: 'bitnet-b1.58', embdType: 'f16' });
    const ref = new ReferenceBackend(m);
    const wb = WasmBackend.create(m, { chunk: 4, maxMirrors: 1 });
    backends.push(wb);
    const prompts = [0, 1, 2].map((j) => Array.from({ length: 19 }, (_, i) => (i * 53 + 7 + 97 * j) % 290));
    const want = await Promise.all(
      prompts.map(async (p, j) => {
        const s = cacheFor(m).forSequence(`r${j}`);
        const [a] = await ref.forward({ tokens: p, startPos: 0, kv: s, logits: 'last' });
        const [b] = await ref.forward({ tokens: [j + 1], startPos: p.length, kv: s, logits: 'last' });
        return [a, b];
      }),
    );
    const caches = prompts.map(() => cacheFor(m));
    const got = await Promise.all(
      prompts.map(async (p, j) => {
        const s = caches[j].forSequence('w');
        const [a] = await wb.forward({ tokens: p, startPos: 0, kv: s, logits: 'last' });
        const [b] = await wb.forward({ tokens: [j + 1], startPos: p.length, kv: s, logits: 'last' });
        return [a.slice(), b.slice()];
      }),
    );
    for (let j = 0; j < prompts.length; j++) sameRows(want[j], got[j], `sequence ${j}`);
  });

  it('kvCache.compressOldEntries: wasm is refused with the reason, auto falls back to the reference', async () => {
    const { InferenceEngine } = await import('../../src/api/inference-engine.ts');
    const { Device } = await import('../../src/api/device.ts');
    const { InferenceConfig } = await import('../../src/api/inference-config.ts');
    const { KVCacheConfig } = await import('../../src/model/kv-cache.ts');
    const { ModelLoader } = await import('../../src/api/model-loader.ts');
    const m = await new ModelLoader().load(
      new MemorySource(await synthBytes({ qtype: 'i2_s', seed: 8, arch: 'bitnet-b1.58', embdType: 'f16' })),
    );
    const kvCacheConfig = new KVCacheConfig({ compressOldEntries: true, recentWindow: 4 });
    const make = (backend: 'wasm' | 'auto') =>
      new InferenceEngine(m, m.tokenizer, Device.Auto, new InferenceConfig(), { backend, kvCacheConfig });
    expect(() => make('wasm')).toThrow(
      expect.objectContaining({
        code: 'BACKEND_UNAVAILABLE',
        details: expect.objectContaining({ reason: 'compressOldEntries' }),
      }),
    );
    const auto = make('auto');
    expect(auto.backendName).toBe('reference');
    // the fallback runs the compressed cache: the same tokens as the reference engine with it
    const ref = new InferenceEngine(m, m.tokenizer, Device.Auto, new InferenceConfig(), {
      backend: 'reference',
      kvCacheConfig,
    });
    const cfg = { maxNewTokens: 40, temperature: 0 };
    const a = await auto.generate({ ids: ids.slice(0, 5) }, cfg);
    const b = await ref.generate({ ids: ids.slice(0, 5) }, cfg);
    expect(a.tokenIds).toEqual(b.tokenIds);
    expect(a.tokenIds).toHaveLength(40);
    // and compression is in effect (seed 8: the uncompressed cache gives other tokens)
    const plain = new InferenceEngine(m, m.tokenizer, Device.Auto, new InferenceConfig(), { backend: 'wasm' });
    expect((await plain.generate({ ids: ids.slice(0, 5) }, cfg)).tokenIds).not.toEqual(a.tokenIds);
  });

  it('hidden states equal the reference forward pass, and a bad token id is a typed error', async () => {
    const m = await model({ qtype: 'tq2_0', seed: 8, activation: 'silu' });
    const wb = WasmBackend.create(m, { chunk: 4 });
    backends.push(wb);
    const { ReferenceForward } = await import('../../src/model/reference.ts');
    const f = new ReferenceForward(m.hparams, m.weights);
    const s1 = cacheFor(m).forSequence('x');
    const want = ids.slice(0, 9).map((id, p) => Float32Array.from(f.forwardToken(id, p, s1)));
    const got = await wb.hidden(ids.slice(0, 9), 0, cacheFor(m).forSequence('y'));
    sameRows(want, got, 'hidden');
    await expect(
      wb.forward({ tokens: [1, 99999], startPos: 0, kv: cacheFor(m).forSequence('z'), logits: 'last' }),
    ).rejects.toMatchObject({ code: 'BAD_TOKEN' });
  });
});

describe('wasm backend: batched decode of concurrent sequences', () => {
  // Sequences at different positions (their KV tables cross 16-position blocks at different
  // steps) decode together; every row must equal that sequence's reference decode, bit for bit.
  const CASES = [
    { cfg: { qtype: 'i2_s', embdType: 'q6_k', arch: 'bitnet-b1.58' }, threads: 2, layout: 'file' },
    { cfg: { qtype: 'tq2_0', embdType: 'q8_0', activation: 'relu2' }, threads: 1, layout: 'file' },
    { cfg: { qtype: 'tq1_0', embdType: 'f16', activation: 'silu' }, threads: 2, layout: 'tl2' },
    { cfg: { qtype: 'f16', embdType: 'q4_0', activation: 'silu' }, threads: 1, layout: 'file' },
    // 7 sequences: the Q6_K head takes them 4, 2 and 1 at a time
    { cfg: { qtype: 'tq2_0', embdType: 'q6_k', activation: 'silu' }, threads: 2, layout: 'file', n: 7 },
  ] as const;
  for (const [i, c] of CASES.entries()) {
    const { cfg, threads, layout } = c;
    const n = 'n' in c ? c.n : 5;
    it(`${cfg.qtype} weights (${layout}), ${cfg.embdType} head, ${threads} thread(s): ${n} sequences, each row equals the reference`, async () => {
      const m = await model({ ...cfg, seed: 31 + i } as Parameters<typeof synthBytes>[0]);
      const ref = new ReferenceBackend(m);
      const wb = WasmBackend.create(m, { numThreads: threads, chunk: 8, layout });
      backends.push(wb);
      const lengths = [3, 9, 15, 30, 40, 17, 1].slice(0, n);
      const prompts = lengths.map((n, j) => Array.from({ length: n }, (_, t) => (t * 41 + 5 + 67 * j) % 290));
      const refSeqs = prompts.map((_, j) => cacheFor(m).forSequence(`r${j}`));
      const seqs = prompts.map((_, j) => cacheFor(m).forSequence(`w${j}`));
      for (let j = 0; j < prompts.length; j++) {
        await ref.forward({ tokens: prompts[j], startPos: 0, kv: refSeqs[j], logits: 'last' });
        await wb.forward({ tokens: prompts[j], startPos: 0, kv: seqs[j], logits: 'last' });
      }
      const before = { ...wb.decodeStats };
      for (let step = 0; step < 4; step++) {
        const token = (j: number) => (step * 31 + j * 7 + 3) % 300;
        const want = await Promise.all(
          prompts.map((p, j) =>
            ref.forward({ tokens: [token(j)], startPos: p.length + step, kv: refSeqs[j], logits: 'last' }),
          ),
        );
        const got = await Promise.all(
          prompts.map((p, j) =>
            wb.forward({ tokens: [token(j)], startPos: p.length + step, kv: seqs[j], logits: 'last' }),
          ),
        );
        for (let j = 0; j < prompts.length; j++) sameRows(want[j], got[j], `step ${step}, sequence ${j}`);
      }
      // four kernel runs of n sequences each, not 4n runs of one
      expect(wb.decodeStats.runs - before.runs).toBe(4);
      expect(wb.decodeStats.steps - before.steps).toBe(4 * n);
      expect(wb.decodeStats.largestBatch).toBe(n);
      // the engine's store holds the reference's K/V
      const kd = m.hparams.nHeadKv * m.hparams.headDim;
      const k1 = new Float32Array(kd);
      const k2 = new Float32Array(kd);
      refSeqs[3].readK(m.hparams.nLayer - 1, 32, k1);
      seqs[3].readK(m.hparams.nLayer - 1, 32, k2);
      expect(firstDiff(k2, k1)).toBeUndefined();
    });
  }

  it('more sequences than maxBatch run in several batches; a step that cannot run fails alone', async () => {
    const m = await model({ qtype: 'i2_s', seed: 41, arch: 'bitnet-b1.58', embdType: 'q8_0' });
    const ref = new ReferenceBackend(m);
    const wb = WasmBackend.create(m, { chunk: 8, maxBatch: 3 });
    backends.push(wb);
    expect(wb.maxBatch).toBe(3);
    const prompts = [0, 1, 2, 3, 4, 5, 6].map((j) => Array.from({ length: 4 + j }, (_, t) => (t * 13 + 17 * j) % 290));
    const refSeqs = prompts.map((_, j) => cacheFor(m).forSequence(`r${j}`));
    const seqs = prompts.map((_, j) => cacheFor(m).forSequence(`w${j}`));
    for (let j = 0; j < prompts.length; j++) {
      await ref.forward({ tokens: prompts[j], startPos: 0, kv: refSeqs[j], logits: 'last' });
      await wb.forward({ tokens: prompts[j], startPos: 0, kv: seqs[j], logits: 'last' });
    }
    const aborted = new AbortController();
    const before = { ...wb.decodeStats };
    // sequence 1 sends a token outside the vocabulary, sequence 4 is aborted while it waits for its
    // batch: both fail with their own error, the other five decode, in batches of at most 3
    const steps = Promise.allSettled(
      prompts.map((p, j) =>
        wb.forward({
          tokens: [j === 1 ? 99999 : j + 1],
          startPos: p.length,
          kv: seqs[j],
          logits: 'last',
          ...(j === 4 ? { signal: aborted.signal } : {}),
        }),
      ),
    );
    // forward() has checked the signal; the step waits for its batch (one macrotask turn)
    aborted.abort(new Error('client went away'));
    const got = await steps;
    expect(got[1]).toMatchObject({ status: 'rejected', reason: { code: 'BAD_TOKEN' } });
    expect(got[4]).toMatchObject({ status: 'rejected', reason: { message: 'client went away' } });
    for (const j of [0, 2, 3, 5, 6]) {
      const r = got[j];
      expect(r.status, `sequence ${j}`).toBe('fulfilled');
      const [want] = await ref.forward({
        tokens: [j + 1],
        startPos: prompts[j].length,
        kv: refSeqs[j],
        logits: 'last',
      });
      if (r.status === 'fulfilled') sameRows([want], r.value, `sequence ${j}`);
    }
    expect(wb.decodeStats.steps - before.steps).toBe(5);
    expect(wb.decodeStats.runs - before.runs).toBe(3); // batches of 3 (one failed), 3 (one failed), 1
    expect(wb.decodeStats.largestBatch).toBeLessThanOrEqual(3);
    // maxBatch 1: every step on its own
    const solo = WasmBackend.create(m, { chunk: 8, maxBatch: 1 });
    backends.push(solo);
    const s = cacheFor(m).forSequence('solo');
    await solo.forward({ tokens: prompts[0], startPos: 0, kv: s, logits: 'last' });
    const [x] = await solo.forward({ tokens: [1], startPos: prompts[0].length, kv: s, logits: 'last' });
    const [y] = await ref.forward({ tokens: [1], startPos: prompts[0].length, kv: refSeqs[0], logits: 'last' });
    sameRows([y], [x], 'maxBatch 1');
    expect(solo.decodeStats.runs).toBe(0);
  });

  it("a store that refuses the new position (a full KV cache, onFull 'error') fails that step alone", async () => {
    const m = await model({ qtype: 'tq2_0', seed: 43, activation: 'relu2', embdType: 'q8_0' });
    const ref = new ReferenceBackend(m);
    const wb = WasmBackend.create(m, { chunk: 8 });
    backends.push(wb);
    const hp = m.hparams;
    const dims = { nLayers: hp.nLayer, nKvHeads: hp.nHeadKv, headDim: hp.headDim };
    // room for exactly the 16 prompt positions (one block), so position 16 does not fit
    const tight = new KVCache({ maxBytes: 16 * hp.nLayer * hp.nHeadKv * hp.headDim * 2 * 2, onFull: 'error' }, dims);
    const full = tight.forSequence('full');
    const ok = cacheFor(m).forSequence('ok');
    const refOk = cacheFor(m).forSequence('ref');
    const prompt = ids.slice(0, 16);
    await wb.forward({ tokens: prompt, startPos: 0, kv: full, logits: 'last' });
    await wb.forward({ tokens: prompt, startPos: 0, kv: ok, logits: 'last' });
    await ref.forward({ tokens: prompt, startPos: 0, kv: refOk, logits: 'last' });
    const before = wb.decodeStats.runs;
    const [a, b] = await Promise.allSettled([
      wb.forward({ tokens: [7], startPos: 16, kv: full, logits: 'last' }),
      wb.forward({ tokens: [7], startPos: 16, kv: ok, logits: 'last' }),
    ]);
    expect(wb.decodeStats.runs - before).toBe(1); // one batch of two
    expect(a).toMatchObject({ status: 'rejected', reason: { kind: 'Capacity' } });
    const [want] = await ref.forward({ tokens: [7], startPos: 16, kv: refOk, logits: 'last' });
    expect(b.status).toBe('fulfilled');
    if (b.status === 'fulfilled') sameRows([want], b.value, 'the other sequence');
  });

  it('a long prefill runs in short chunks while another sequence decodes, which steps between them; the logits stay exact', async () => {
    const m = await model({ qtype: 'i2_s', seed: 44, arch: 'bitnet-b1.58', embdType: 'q6_k' });
    const ref = new ReferenceBackend(m);
    const wb = WasmBackend.create(m, { chunk: 64 });
    backends.push(wb);
    const prompt = Array.from({ length: 100 }, (_, t) => (t * 29 + 3) % 290);
    const [dRef, dW, pRef, pW] = ['dr', 'dw', 'pr', 'pw'].map((id) => cacheFor(m).forSequence(id));
    await ref.forward({ tokens: prompt.slice(0, 5), startPos: 0, kv: dRef, logits: 'last' });
    await wb.forward({ tokens: prompt.slice(0, 5), startPos: 0, kv: dW, logits: 'last' });
    // alone, a prefill takes chunks of 64 (here the 5 tokens above, then 64 + 6)
    await wb.forward({ tokens: prompt.slice(0, 70), startPos: 0, kv: cacheFor(m).forSequence('x'), logits: 'last' });
    expect(wb.decodeStats).toMatchObject({ prefillChunks: 3, sharedPrefillChunks: 0 });
    // a decoding sequence: one step after another, as an engine loop runs them
    let prefillDone = false;
    let stepsDuring = 0;
    const decode = (async () => {
      const rows: Float32Array[] = [];
      for (let p = 5; p < 25; p++) {
        const [row] = await wb.forward({ tokens: [(p * 7) % 290], startPos: p, kv: dW, logits: 'last' });
        rows.push(row);
        if (!prefillDone) stepsDuring++;
      }
      return rows;
    })();
    await nextTurn();
    const [got] = await wb.forward({ tokens: prompt, startPos: 0, kv: pW, logits: 'last' });
    prefillDone = true;
    // 100 tokens in chunks of 16 while the other sequence waits: it stepped between them
    expect(wb.decodeStats.prefillChunks - 3).toBe(7);
    expect(wb.decodeStats.sharedPrefillChunks).toBe(7);
    expect(stepsDuring).toBeGreaterThanOrEqual(6);
    const [want] = await ref.forward({ tokens: prompt, startPos: 0, kv: pRef, logits: 'last' });
    sameRows([want], [got], 'prefill');
    const rows = await decode;
    for (let p = 5; p < 25; p++) {
      const [w] = await ref.forward({ tokens: [(p * 7) % 290], startPos: p, kv: dRef, logits: 'last' });
      sameRows([w], [rows[p - 5]], `decode at ${p}`);
    }
  });

  it('dispose rejects the steps still waiting for their batch', async () => {
    const m = await model({ qtype: 'tq2_0', seed: 42, activation: 'silu' });
    const wb = WasmBackend.create(m, { chunk: 8 });
    const s = cacheFor(m).forSequence('d');
    await wb.forward({ tokens: [1, 2, 3], startPos: 0, kv: s, logits: 'last' });
    const step = wb.forward({ tokens: [4], startPos: 3, kv: s, logits: 'last' });
    await Promise.resolve();
    await Promise.resolve();
    wb.dispose();
    await expect(step).rejects.toMatchObject({ code: 'BACKEND_DISPOSED' });
  });
});
