// The ByteSource decorators: block cache (memory LRU, disk, Cache API), coalescing, concurrency
// limit, and the retry policy. Counted against an in-memory source; no timing assertions.

import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { BitNetError } from '../../src/errors.ts';
import { BlockCachedSource, type BlockStore, MemoryBlockStore } from '../../src/sources/block-cache.ts';
import { type ByteSource, MemorySource } from '../../src/sources/byte-source.ts';
import { CacheApiStore, type CacheLike } from '../../src/sources/cache-api.ts';
import { CoalescingSource } from '../../src/sources/coalesce.ts';
import { DiskBlockStore } from '../../src/sources/disk-cache.ts';
import { ConcurrencyLimitedSource } from '../../src/sources/limit.ts';
import { backoffDelay, transient, withRetry } from '../../src/sources/retry.ts';
import { isCode, tempDir } from './util.ts';

const DATA = Uint8Array.from({ length: 100_000 }, (_, i) => (i * 7 + (i >> 8)) & 255);

/** An in-memory source that records every read and can be slowed down by a gate. */
class Counting implements ByteSource {
  readonly size = DATA.length;
  readonly description = 'counting';
  etag?: string = '"e1"';
  reads: [number, number][] = [];
  active = 0;
  gate: Promise<void> | undefined;
  async read(offset: number, length: number): Promise<Uint8Array> {
    this.reads.push([offset, length]);
    this.active++;
    try {
      await this.gate;
      await new Promise((r) => setTimeout(r, 1));
      return DATA.slice(offset, offset + length);
    } finally {
      this.active--;
    }
  }
}

const same = (a: Uint8Array, off: number, len: number) =>
  Buffer.from(a).equals(Buffer.from(DATA.subarray(off, off + len)));

describe('block cache', () => {
  it('serves repeated reads from memory, fetching runs of adjacent missing blocks at once', async () => {
    const inner = new Counting();
    const c = new BlockCachedSource(inner, new MemoryBlockStore(1 << 20), { blockSize: 4096 });
    expect(same(await c.read(100, 10_000), 100, 10_000)).toBe(true); // blocks 0..2
    expect(inner.reads).toEqual([[0, 12_288]]);
    expect(same(await c.read(5000, 3000), 5000, 3000)).toBe(true); // block 1 again
    expect(same(await c.read(DATA.length - 5, 5), DATA.length - 5, 5)).toBe(true); // the short last block
    expect(inner.reads).toHaveLength(2);
    expect(c.stats).toMatchObject({ hits: 1, innerReads: 2 });
  });

  it('shares one fetch between concurrent readers of the same block', async () => {
    const inner = new Counting();
    const c = new BlockCachedSource(inner, new MemoryBlockStore(1 << 20), { blockSize: 4096 });
    const rs = await Promise.all([c.read(0, 100), c.read(200, 100), c.read(4000, 200)]);
    expect(rs.map((r, i) => same(r, [0, 200, 4000][i], r.length))).toEqual([true, true, true]);
    // Block 0 is fetched once for all three readers; the third also needs block 1.
    expect(inner.reads).toEqual([
      [0, 4096],
      [4096, 4096],
    ]);
  });

  it('evicts least recently used blocks by bytes, and bypasses long reads', async () => {
    const store = new MemoryBlockStore(3 * 4096);
    const inner = new Counting();
    const c = new BlockCachedSource(inner, store, { blockSize: 4096, bypassAbove: 16_384 });
    for (const b of [0, 1, 2, 3]) await c.read(b * 4096, 10);
    expect(store.bytes).toBe(3 * 4096);
    expect(store.count).toBe(3);
    await c.read(0, 10); // block 0 was evicted
    expect(inner.reads).toHaveLength(5);
    await c.read(0, 50_000);
    expect(c.stats.bypassed).toBe(1);
    expect(inner.reads[5]).toEqual([0, 50_000]);
  });

  it('never persists blocks of a source without an ETag', async () => {
    const inner = new Counting();
    inner.etag = undefined;
    const c = new BlockCachedSource(inner, new DiskBlockStore({ dir: await tempDir() }), { blockSize: 4096 });
    await c.read(0, 10);
    await c.read(0, 10);
    expect(inner.reads).toHaveLength(2);
  });

  it('keeps blocks on disk across source instances, evicts over the limit, ignores damaged blocks', async () => {
    const dir = await tempDir('bitnet-disk-');
    const first = new Counting();
    const a = new BlockCachedSource(first, new DiskBlockStore({ dir, maxBytes: 1 << 20 }), { blockSize: 8192 });
    expect(same(await a.read(1000, 20_000), 1000, 20_000)).toBe(true);
    const second = new Counting();
    const b = new BlockCachedSource(second, new DiskBlockStore({ dir, maxBytes: 1 << 20 }), { blockSize: 8192 });
    expect(same(await b.read(1000, 20_000), 1000, 20_000)).toBe(true);
    expect(second.reads).toHaveLength(0); // all from disk

    // A damaged (short) block file is a miss, not wrong bytes.
    const ns = (await readdir(dir))[0];
    const blockDir = join(dir, ns, '8192');
    const f = join(blockDir, '1.blk');
    await writeFile(f, (await readFile(f)).subarray(0, 100));
    const third = new Counting();
    const c = new BlockCachedSource(third, new DiskBlockStore({ dir }), { blockSize: 8192 });
    expect(same(await c.read(8192, 8192), 8192, 8192)).toBe(true);
    expect(third.reads).toEqual([[8192, 8192]]);

    // A changed ETag is another namespace: nothing stale is served.
    const changed = new Counting();
    changed.etag = '"e2"';
    await new BlockCachedSource(changed, new DiskBlockStore({ dir }), { blockSize: 8192 }).read(0, 10);
    expect(changed.reads).toHaveLength(1);

    const small = new DiskBlockStore({ dir: await tempDir('bitnet-disk-'), maxBytes: 2 * 8192 });
    const d = new BlockCachedSource(new Counting(), small, { blockSize: 8192 });
    for (const blk of [0, 1, 2, 3]) await d.read(blk * 8192, 1);
    expect(small.bytes).toBe(2 * 8192);
  });

  it('BITNET_DISK_CACHE_MAX_BYTES is read strictly: a bad value is INVALID_ENV, not a cache that keeps nothing', () => {
    vi.stubEnv('BITNET_DISK_CACHE_MAX_BYTES', 'abc');
    try {
      expect(() => new DiskBlockStore()).toThrow(
        expect.objectContaining({
          code: 'INVALID_ENV',
          message: expect.stringMatching(/^BITNET_DISK_CACHE_MAX_BYTES must be/),
        }),
      );
      vi.stubEnv('BITNET_DISK_CACHE_MAX_BYTES', '0');
      expect(() => new DiskBlockStore()).toThrow(expect.objectContaining({ code: 'INVALID_ENV' }));
      vi.stubEnv('BITNET_DISK_CACHE_MAX_BYTES', '');
      expect(new DiskBlockStore().maxBytes).toBe(1 << 30); // empty: the default
      vi.stubEnv('BITNET_DISK_CACHE_MAX_BYTES', '65536');
      expect(new DiskBlockStore().maxBytes).toBe(65536);
    } finally {
      vi.unstubAllEnvs();
    }
  });

  it('stores blocks through the Cache API', async () => {
    const map = new Map<string, Uint8Array>();
    const cache: CacheLike = {
      match: async (url) => (map.has(url) ? new Response(map.get(url)!.slice()) : undefined),
      put: async (url, res) => {
        expect(res.headers.get('cache-control')).toContain('immutable');
        map.set(url, new Uint8Array(await res.arrayBuffer()));
      },
    };
    const first = new Counting();
    await new BlockCachedSource(first, new CacheApiStore(cache), { blockSize: 4096 }).read(10, 9000);
    expect([...map.keys()].every((k) => k.startsWith('https://bitnet-edge.cache/'))).toBe(true);
    const second = new Counting();
    const r = await new BlockCachedSource(second, new CacheApiStore(cache), { blockSize: 4096 }).read(10, 9000);
    expect(same(r, 10, 9000)).toBe(true);
    expect(second.reads).toHaveLength(0);
  });

  it('a failing store never fails the read', async () => {
    const broken: BlockStore = {
      persistent: false,
      get: async () => {
        throw new Error('disk gone');
      },
      put: async () => {
        throw new Error('disk full');
      },
    };
    const c = new BlockCachedSource(new Counting(), broken, { blockSize: 4096 });
    expect(same(await c.read(0, 5000), 0, 5000)).toBe(true);
  });
});

describe('coalescing', () => {
  it('merges adjacent and overlapping reads of one turn into one inner read', async () => {
    const inner = new Counting();
    const c = new CoalescingSource(inner);
    const spans: [number, number][] = [
      [0, 100],
      [100, 50],
      [120, 100],
      [5000, 10],
    ];
    const rs = await Promise.all(spans.map(([o, l]) => c.read(o, l)));
    expect(rs.map((r, i) => same(r, spans[i][0], spans[i][1]))).toEqual([true, true, true, true]);
    expect(inner.reads).toEqual([
      [0, 220],
      [5000, 10],
    ]);
    const g = new CoalescingSource(new Counting(), { maxGap: 10_000 });
    await Promise.all(spans.map(([o, l]) => g.read(o, l)));
    expect(g.stats.innerReads).toBe(1);
  });

  it('respects the merged-size limit', async () => {
    const c = new CoalescingSource(new Counting(), { maxBytes: 150 });
    await Promise.all([c.read(0, 100), c.read(100, 100), c.read(200, 10)]);
    expect(c.stats.innerReads).toBe(2);
  });
});

describe('concurrency limit', () => {
  it('never runs more than max inner reads at once, and a queued read can be aborted', async () => {
    const inner = new Counting();
    let open!: () => void;
    inner.gate = new Promise((r) => {
      open = r;
    });
    const c = new ConcurrencyLimitedSource(inner, 2);
    const ctl = new AbortController();
    const reads = Array.from({ length: 6 }, (_, i) => c.read(i * 10, 10));
    const aborted = c.read(0, 1, { signal: ctl.signal });
    ctl.abort();
    await expect(aborted).rejects.toSatisfy(isCode('ABORTED'));
    open();
    const rs = await Promise.all(reads);
    expect(rs.every((r, i) => same(r, i * 10, 10))).toBe(true);
    expect(c.peak).toBe(2);
    expect(inner.reads).toHaveLength(6);
  });
});

describe('retry policy', () => {
  it('uses full-jitter exponential backoff under a ceiling', () => {
    const o = { baseDelayMs: 100, maxDelayMs: 1000, random: () => 0.999 };
    expect([0, 1, 2, 3, 4, 5].map((n) => backoffDelay(n, o))).toEqual([99, 199, 399, 799, 999, 999]);
    expect(backoffDelay(3, { ...o, random: () => 0 })).toBe(0);
  });

  it('retries transient failures only, then reports the last one', async () => {
    let n = 0;
    const seen: number[] = [];
    const ok = await withRetry(
      'x',
      async () => {
        if (++n < 3) throw transient('FLAKY', 'flaky');
        return 'done';
      },
      { baseDelayMs: 1, onRetry: (i) => seen.push(i.attempt) },
    );
    expect(ok).toBe('done');
    expect(seen).toEqual([1, 2]);

    let m = 0;
    const final = BitNetError.Io('NOT_FOUND', 'gone');
    await expect(
      withRetry('x', async () => {
        m++;
        throw final;
      }),
    ).rejects.toBe(final);
    expect(m).toBe(1);

    const e = await withRetry(
      'x',
      async () => {
        throw transient('FLAKY', 'flaky');
      },
      { retries: 2, baseDelayMs: 1 },
    ).catch((x) => x);
    expect(e).toMatchObject({ code: 'RETRIES_EXHAUSTED', details: { attempts: 3, lastCode: 'FLAKY' } });
  });
});

describe('MemorySource sanity', () => {
  it('is the base the decorators wrap', async () => {
    const c = new BlockCachedSource(new MemorySource(DATA), new MemoryBlockStore(1 << 16), { blockSize: 1000 });
    expect(same(await c.read(999, 2), 999, 2)).toBe(true);
  });
});
