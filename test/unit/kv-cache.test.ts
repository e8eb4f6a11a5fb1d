import { describe, expect, it } from 'vitest';
import { isBitNetError } from '../../src/errors.ts';
import { createRng } from '../../src/generate/prng.ts';
import {
  CacheConfig,
  EvictionPolicy,
  KVCache,
  KVCacheConfig,
  type KVCacheConfigInit,
  type KVShape,
} from '../../src/model/kv-cache.ts';
import { f16ToF32, f32ToF16 } from '../../src/util/f16.ts';

// rowWidth 8; blockSize 4 -> one f16 block (K+V) = 2*4*8*2 = 128 bytes, int8 block = 2*(32+2*4) = 80.
const SHAPE: KVShape = { nLayers: 2, nKvHeads: 2, headDim: 4 };
const W = 8;
const BLOCK = 128;
const QBLOCK = 80;

const rng = createRng(2024);
function row(scale = 4): Float32Array {
  return Float32Array.from({ length: W }, () => (rng.nextFloat() * 2 - 1) * scale);
}
const f16 = (x: number): number => f16ToF32(f32ToF16(x));

function cache(init: KVCacheConfigInit = {}, shape: KVShape = SHAPE): KVCache {
  return new KVCache({ blockSize: 4, maxSeqLen: 64, ...init }, shape);
}

/** Appends `n` positions to every layer; returns what was written, [layer][pos] = {k, v}. */
function fill(c: KVCache, seq: string, n: number, from = 0): { k: Float32Array; v: Float32Array }[][] {
  const out: { k: Float32Array; v: Float32Array }[][] = [];
  for (let l = 0; l < c.shape.nLayers; l++) {
    out.push([]);
    for (let p = from; p < from + n; p++) {
      const k = row();
      const v = row();
      c.store(seq, l, p, k, v);
      out[l][p] = { k, v };
    }
  }
  return out;
}

function expectError(fn: () => unknown, kind: string, code: string): Record<string, unknown> {
  try {
    fn();
  } catch (e) {
    expect(isBitNetError(e) ? `${e.kind}:${e.code}` : String(e)).toBe(`${kind}:${code}`);
    return isBitNetError(e) ? e.details : {};
  }
  return expect.unreachable(`expected ${kind}:${code}`);
}

/** Everything observable without touching stats: ids, lengths, decoded rows, stats. */
function snapshot(c: KVCache): unknown {
  const seqs = c.sequenceIds().map((id) => {
    const layers = [];
    for (let l = 0; l < c.shape.nLayers; l++) {
      const rows = [];
      for (let p = 0; p < c.layerLength(id, l); p++) {
        const k = new Float32Array(W);
        const v = new Float32Array(W);
        c.readKeys(id, l, p, k);
        c.readValues(id, l, p, v);
        rows.push([Array.from(k), Array.from(v)]);
      }
      layers.push(rows);
    }
    return [id, layers];
  });
  return { seqs, stats: c.stats() };
}

describe('KVCacheConfig', () => {
  it('has the documented defaults and the CacheConfig alias', () => {
    const c = new KVCacheConfig();
    expect(c).toMatchObject({
      maxBytes: 512 * 1024 * 1024,
      maxSeqLen: 4096,
      blockSize: 16,
      evictionPolicy: 'lru',
      compressOldEntries: false,
      recentWindow: 256,
      onFull: 'evict',
    });
    expect(c.validate()).toBe(c);
    expect(new CacheConfig({ evictionPolicy: EvictionPolicy.LFU })).toBeInstanceOf(KVCacheConfig);
    expect(EvictionPolicy).toEqual({ LRU: 'lru', FIFO: 'fifo', LFU: 'lfu' });
  });

  it('rejects nonsense', () => {
    const bad: Record<string, unknown>[] = [
      { maxBytes: 0 },
      { maxBytes: 1.5 },
      { maxSeqLen: -1 },
      { blockSize: 0 },
      { recentWindow: -1 },
      { evictionPolicy: 'random' },
      { compressOldEntries: 'yes' },
      { onFull: 'panic' },
    ];
    for (const b of bad) {
      expectError(() => new KVCacheConfig(b as KVCacheConfigInit).validate(), 'Config', 'INVALID_KV_CACHE_CONFIG');
    }
    expectError(() => new KVCacheConfig({ maxbytes: 1 } as KVCacheConfigInit), 'Config', 'INVALID_KV_CACHE_CONFIG');
  });

  it('the cache validates its config and shape', () => {
    expectError(() => new KVCache({ maxSeqLen: 0 }, SHAPE), 'Config', 'INVALID_KV_CACHE_CONFIG');
    expectError(() => new KVCache({}, { nLayers: 0, nKvHeads: 1, headDim: 1 }), 'Config', 'KV_BAD_SHAPE');
    expectError(() => cache({ maxBytes: BLOCK - 1 }), 'Config', 'KV_CACHE_TOO_SMALL');
  });
});

describe('KVCache', () => {
  it('round-trips K and V through f16 exactly, and counts hits and misses', () => {
    const c = cache();
    const data = fill(c, 's', 10);
    for (let l = 0; l < 2; l++) {
      for (let p = 0; p < 10; p++) {
        const got = c.get('s', l, p)!;
        expect(Array.from(got.k)).toEqual(Array.from(data[l][p].k, f16));
        expect(Array.from(got.v)).toEqual(Array.from(data[l][p].v, f16));
      }
    }
    expect(c.get('s', 0, 10)).toBeUndefined();
    expect(c.get('nope', 0, 0)).toBeUndefined();
    expect(c.stats()).toMatchObject({ hits: 20, misses: 2, sequences: 1 });
  });

  it('appends in order, overwrites existing positions, and rejects gaps and bad input', () => {
    const c = cache();
    fill(c, 's', 3);
    const k = row();
    c.store('s', 0, 1, k, k); // overwrite
    expect(Array.from(c.get('s', 0, 1)!.v)).toEqual(Array.from(k, f16));
    expect(c.layerLength('s', 0)).toBe(3);
    expectError(() => c.store('s', 0, 5, k, k), 'Config', 'KV_POS_GAP');
    expectError(() => c.store('t', 0, 1, k, k), 'Config', 'KV_POS_GAP');
    expectError(() => c.store('s', 2, 3, k, k), 'Config', 'KV_BAD_LAYER');
    expectError(() => c.store('s', 0, -1, k, k), 'Config', 'KV_BAD_POSITION');
    expectError(() => c.store('s', 0, 3, new Float32Array(7), k), 'Config', 'KV_BAD_VECTOR_LENGTH');
    const big = new Float32Array(W);
    big[3] = 65520;
    expectError(() => c.store('s', 0, 3, k, big), 'Model', 'KV_VALUE_OUT_OF_RANGE');
    big[3] = Number.NaN;
    expectError(() => c.store('s', 0, 3, big, k), 'Model', 'KV_VALUE_OUT_OF_RANGE');
    big[3] = 65519;
    c.store('s', 0, 3, big, k);
    expect(c.get('s', 0, 3)!.k[3]).toBe(65504);
    expect(c.contains('t')).toBe(false);
  });

  it('reports lengths and containment per layer', () => {
    const c = cache();
    fill(c, 's', 5);
    c.store('s', 0, 5, row(), row()); // layer 0 is one ahead (mid forward pass)
    expect(c.length('s')).toBe(5);
    expect(c.layerLength('s', 0)).toBe(6);
    expect(c.length('none')).toBe(0);
    expect(c.contains('s')).toBe(true);
    expect(c.contains('s', 1)).toBe(true);
    expect(c.contains('s', 0, 5)).toBe(true);
    expect(c.contains('s', 1, 5)).toBe(false);
    expect(c.contains('s', 7)).toBe(false);
    expect(c.contains('x', 0, 0)).toBe(false);
  });

  it('allocates per block as positions are written', () => {
    const c = cache({ maxBytes: 100 * BLOCK });
    expect(c.size()).toBe(0);
    c.store('s', 0, 0, row(), row());
    expect(c.size()).toBe(BLOCK);
    for (let p = 1; p < 4; p++) c.store('s', 0, p, row(), row());
    expect(c.size()).toBe(BLOCK);
    c.store('s', 0, 4, row(), row());
    c.store('s', 1, 0, row(), row());
    expect(c.stats()).toMatchObject({ blocks: 3, bytes: 3 * BLOCK, maxBytes: 100 * BLOCK, compressedBlocks: 0 });
    expect(c.usagePercent()).toBeCloseTo(3, 10);
  });

  it('enforces maxSeqLen with a Capacity error', () => {
    const c = cache({ maxSeqLen: 6 });
    fill(c, 's', 6);
    const before = snapshot(c);
    const d = expectError(() => c.store('s', 0, 6, row(), row()), 'Capacity', 'KV_SEQ_TOO_LONG');
    expect(d).toMatchObject({ pos: 6, maxSeqLen: 6 });
    expect(snapshot(c)).toEqual(before);
  });

  it('truncates for prefix reuse, freeing whole blocks', () => {
    const c = cache();
    const data = fill(c, 's', 10); // 3 blocks per layer
    expect(c.size()).toBe(6 * BLOCK);
    c.truncate('s', 5);
    expect(c.length('s')).toBe(5);
    expect(c.size()).toBe(4 * BLOCK);
    expect(c.contains('s', 0, 5)).toBe(false);
    expect(Array.from(c.get('s', 1, 4)!.k)).toEqual(Array.from(data[1][4].k, f16));
    fill(c, 's', 2, 5); // append again from the cut
    expect(c.length('s')).toBe(7);
    c.truncate('s', 100); // longer than stored: nothing happens
    expect(c.length('s')).toBe(7);
    c.truncate('s', 0);
    expect(c.size()).toBe(0);
    expect(c.contains('s')).toBe(true);
    c.truncate('unknown', 0);
    expectError(() => c.truncate('s', -1), 'Config', 'KV_BAD_LENGTH');
  });

  it('evicts the least recently used other sequence (LRU)', () => {
    const c = cache({ maxBytes: 3 * BLOCK, evictionPolicy: EvictionPolicy.LRU });
    for (const s of ['a', 'b', 'c']) c.store(s, 0, 0, row(), row());
    c.get('a', 0, 0); // a is now more recent than b
    c.store('d', 0, 0, row(), row());
    expect(c.sequenceIds().sort()).toEqual(['a', 'c', 'd']);
    c.keysF16('c', 0); // views count as access: a is now the oldest
    c.store('e', 0, 0, row(), row());
    expect(c.sequenceIds().sort()).toEqual(['c', 'd', 'e']);
    expect(c.stats().evictions).toBe(2);
  });

  it('evicts the first created other sequence (FIFO), regardless of use', () => {
    const c = cache({ maxBytes: 3 * BLOCK, evictionPolicy: EvictionPolicy.FIFO });
    for (const s of ['a', 'b', 'c']) c.store(s, 0, 0, row(), row());
    c.get('a', 0, 0);
    c.touch('a');
    c.store('d', 0, 0, row(), row());
    expect(c.sequenceIds().sort()).toEqual(['b', 'c', 'd']);
  });

  it('evicts the least frequently used other sequence (LFU), ties by LRU', () => {
    const c = cache({ maxBytes: 3 * BLOCK, evictionPolicy: EvictionPolicy.LFU });
    for (const s of ['a', 'b', 'c']) c.store(s, 0, 0, row(), row());
    for (let i = 0; i < 3; i++) c.get('a', 0, 0); // a: 4 accesses
    c.get('b', 0, 0); // b: 2, c: 1
    c.store('d', 0, 0, row(), row()); // d: 1
    expect(c.sequenceIds().sort()).toEqual(['a', 'b', 'd']);
    c.touch('b'); // b: 3; d (1) is the least used
    c.store('e', 0, 0, row(), row());
    expect(c.sequenceIds().sort()).toEqual(['a', 'b', 'e']);
    c.get('e', 0, 0);
    c.store('e', 0, 1, row(), row()); // e: 3 (no new block needed)
    c.get('a', 0, 0); // a: 5
    c.store('f', 0, 0, row(), row()); // b and e tie at 3; b was used less recently
    expect(c.sequenceIds().sort()).toEqual(['a', 'e', 'f']);
  });

  it('never evicts the sequence being written, and evicts as many others as needed', () => {
    const c = cache({ maxBytes: 4 * BLOCK });
    fill(c, 'w', 4); // w: 2 blocks (one per layer)
    c.store('a', 0, 0, row(), row());
    c.store('b', 0, 0, row(), row()); // full; w is the least recently used
    c.store('w', 0, 4, row(), row()); // evicts a, the LRU among the others
    expect(c.sequenceIds().sort()).toEqual(['b', 'w']);
    c.store('w', 1, 4, row(), row());
    expect(c.sequenceIds()).toEqual(['w']);
    expect(c.stats().evictions).toBe(2);
  });

  it("with onFull 'error' throws KV_CACHE_FULL and changes nothing", () => {
    const c = cache({ maxBytes: 2 * BLOCK, onFull: 'error' });
    fill(c, 'a', 4); // 2 blocks: full
    c.get('a', 0, 0);
    const before = snapshot(c);
    const d = expectError(() => c.store('b', 0, 0, row(), row()), 'Capacity', 'KV_CACHE_FULL');
    expect(d).toEqual({ needed: BLOCK, maxBytes: 2 * BLOCK, used: 2 * BLOCK });
    expectError(() => c.store('a', 0, 4, row(), row()), 'Capacity', 'KV_CACHE_FULL');
    expect(snapshot(c)).toEqual(before);
    expect(c.contains('b')).toBe(false);
    c.store('a', 0, 3, row(), row()); // overwrites need no room
  });

  it('idle sequences go first under every policy, and even with onFull error; in use again, they are ordinary', () => {
    for (const policy of [EvictionPolicy.LRU, EvictionPolicy.FIFO, EvictionPolicy.LFU]) {
      const c = cache({ maxBytes: 3 * BLOCK, evictionPolicy: policy });
      for (const s of ['a', 'b', 'c']) c.store(s, 0, 0, row(), row());
      for (let i = 0; i < 5; i++) c.get('c', 0, 0); // c: the newest and most used
      c.setIdle('c', true);
      c.store('d', 0, 0, row(), row());
      expect(c.sequenceIds().sort(), policy).toEqual(['a', 'b', 'd']);
    }
    const e = cache({ maxBytes: 2 * BLOCK, onFull: 'error' });
    e.store('a', 0, 0, row(), row());
    e.store('b', 0, 0, row(), row());
    e.setIdle('a', true);
    e.setIdle('a', false); // taken back into use: no longer evictable with onFull 'error'
    expectError(() => e.store('c', 0, 0, row(), row()), 'Capacity', 'KV_CACHE_FULL');
    e.setIdle('b', true);
    e.store('c', 0, 0, row(), row());
    expect(e.sequenceIds().sort()).toEqual(['a', 'c']);
    e.setIdle('nope', true); // unknown ids are ignored
  });

  it('a store that cannot fit even after evicting every other sequence changes nothing', () => {
    const c = cache({ maxBytes: 3 * BLOCK });
    fill(c, 'a', 4); // a: 2 blocks
    c.store('b', 0, 0, row(), row());
    c.truncate('b', 0); // b stays, holding 0 bytes
    c.store('c', 0, 0, row(), row()); // full
    c.store('a', 0, 4, row(), row()); // evicts c, the only sequence holding bytes
    expect(c.sequenceIds().sort()).toEqual(['a', 'b']);
    const before = snapshot(c);
    const d = expectError(() => c.store('a', 1, 4, row(), row()), 'Capacity', 'KV_CACHE_FULL');
    expect(d).toEqual({ needed: BLOCK, maxBytes: 3 * BLOCK, used: 3 * BLOCK });
    expect(snapshot(c)).toEqual(before);
    // A new sequence, by contrast, may evict a.
    c.store('new', 0, 0, row(), row());
    expect(c.sequenceIds().sort()).toEqual(['b', 'new']);
  });

  it('compresses old full blocks to int8 within scale/2 and exposes them through the views', () => {
    const shape = { nLayers: 1, nKvHeads: 2, headDim: 4 };
    const c = cache({ compressOldEntries: true, recentWindow: 4, maxBytes: 1 << 20 }, shape);
    const data = fill(c, 's', 12)[0]; // limit 12 - 4 = 8: blocks 0 and 1 compressed, block 2 f16
    expect(c.stats()).toMatchObject({ blocks: 3, compressedBlocks: 2, bytes: 2 * QBLOCK + BLOCK });
    const kv = c.keysF16('s', 0);
    expect(kv.blocks.map((b) => b === null)).toEqual([true, true, false]);
    expect(kv.length).toBe(12);
    const rowBuf = new Float32Array(4);
    for (let p = 0; p < 12; p++) {
      const b = Math.floor(p / 4);
      for (let h = 0; h < 2; h++) {
        c.readKeyRow('s', 0, p, h, rowBuf);
        for (let d = 0; d < 4; d++) {
          const x = f16(data[p].k[h * 4 + d]);
          const off = ((p % 4) * 2 + h) * 4 + d;
          if (b < 2) {
            const scale = kv.scales[b]![h];
            // scale = max |x| over the block's rows of this head, / 127
            let maxAbs = 0;
            for (let r = 0; r < 4; r++)
              for (let e = 0; e < 4; e++) maxAbs = Math.max(maxAbs, Math.abs(f16(data[b * 4 + r].k[h * 4 + e])));
            expect(scale).toBe(Math.fround(maxAbs / 127));
            expect(Math.abs(rowBuf[d] - x)).toBeLessThanOrEqual(scale / 2 + Math.abs(x) * 2 ** -23);
            expect(rowBuf[d]).toBe(Math.fround(kv.q8[b]![off] * scale)); // documented view formula
          } else {
            expect(rowBuf[d]).toBe(x); // the recent block is still exact f16
            expect(f16ToF32(kv.blocks[b]![off])).toBe(x);
          }
        }
      }
      const got = c.get('s', 0, p)!;
      const all = new Float32Array(8);
      c.readKeys('s', 0, p, all);
      expect(Array.from(got.k)).toEqual(Array.from(all));
    }
  });

  it('requantises full int8 blocks in place and expands cut ones back to f16', () => {
    const shape = { nLayers: 1, nKvHeads: 2, headDim: 4 };
    const c = cache({ compressOldEntries: true, recentWindow: 4, maxBytes: 1 << 20 }, shape);
    fill(c, 's', 12);
    const bytes = c.size();
    const k = row(0.5);
    c.store('s', 0, 1, k, k); // overwrite inside compressed block 0
    expect(c.size()).toBe(bytes);
    expect(c.stats().compressedBlocks).toBe(2);
    const got = c.get('s', 0, 1)!.k;
    const scale = c.keysF16('s', 0).scales[0]!;
    for (let i = 0; i < 8; i++) expect(Math.abs(got[i] - f16(k[i]))).toBeLessThanOrEqual(scale[i >> 2] / 2 + 1e-6);
    c.truncate('s', 6); // cuts into compressed block 1
    expect(c.stats()).toMatchObject({ blocks: 2, compressedBlocks: 2, bytes: 2 * QBLOCK });
    const kept = c.get('s', 0, 5)!.k;
    c.store('s', 0, 6, row(), row()); // appending into the cut block expands it
    expect(c.stats()).toMatchObject({ compressedBlocks: 1, bytes: QBLOCK + BLOCK });
    expect(Array.from(c.get('s', 0, 5)!.k)).toEqual(Array.from(kept, f16)); // dequantised values kept
    fill(c, 's', 6, 7); // length 13: limit 9 -> block 1 full and old again
    expect(c.stats()).toMatchObject({ blocks: 4, compressedBlocks: 2 });
  });

  it('stats, usagePercent and clearing', () => {
    const c = cache({ maxBytes: 10 * BLOCK });
    fill(c, 'a', 4);
    fill(c, 'b', 8);
    expect(c.stats()).toMatchObject({ sequences: 2, blocks: 6, bytes: 6 * BLOCK, maxBytes: 10 * BLOCK });
    expect(c.usagePercent()).toBeCloseTo(60, 10);
    c.clearLayer(1);
    expect(c.size()).toBe(3 * BLOCK);
    expect(c.layerLength('b', 1)).toBe(0);
    expect(c.length('b')).toBe(0);
    expect(c.layerLength('b', 0)).toBe(8);
    expect(c.clearSequence('a')).toBe(true);
    expect(c.clearSequence('a')).toBe(false);
    expect(c.stats()).toMatchObject({ sequences: 1, blocks: 2, bytes: 2 * BLOCK });
    c.clear();
    expect(c.stats()).toMatchObject({ sequences: 0, blocks: 0, bytes: 0 });
    expect(c.usagePercent()).toBe(0);
  });

  it('keysF16/valuesF16 give zero-copy f16 blocks; forSequence adapts to write/readK/readV', () => {
    const c = cache();
    const kv = c.forSequence('s');
    const k = row();
    const v = row();
    kv.write(0, 0, k, v);
    const out = new Float32Array(W);
    kv.readK(0, 0, out);
    expect(Array.from(out)).toEqual(Array.from(k, f16));
    kv.readV(0, 0, out);
    expect(Array.from(out)).toEqual(Array.from(v, f16));
    const view = c.valuesF16('s', 0);
    expect(view).toMatchObject({ length: 1, blockSize: 4, nKvHeads: 2, headDim: 4, rowWidth: 8 });
    expect(view.blocks[0]![5]).toBe(f32ToF16(v[5]));
    expect(c.keysF16('missing', 1)).toMatchObject({ length: 0, blocks: [] });
    expectError(() => kv.readK(0, 1, out), 'Config', 'KV_POS_MISSING');
    expectError(() => c.readKeyRow('s', 0, 0, 2, out), 'Config', 'KV_BAD_HEAD');
  });
});
