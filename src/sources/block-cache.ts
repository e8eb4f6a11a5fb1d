/**
 * A block cache in front of any ByteSource. The file is cut into fixed blocks (default 1 MiB); a
 * read is served from the blocks it touches, missing blocks are fetched in runs (one inner read per
 * run of adjacent missing blocks) and two readers that need the same block share one fetch.
 *
 * Where the blocks live is a `BlockStore`: in memory (LRU by bytes, here), the Cache API in Workers
 * (cache-api.ts), or a directory in Node and Lambda (disk-cache.ts). A persistent store outlives the
 * source, so its keys include the ETag and size, and a source without an ETag is never persisted
 * (its bytes could change under the same name).
 *
 * Reads longer than `bypassAbove` (default 8 blocks) go straight to the inner source: weights are
 * read once, and caching them would only double the memory they take.
 */
import { type ByteSource, checkRange, type ReadOptions } from './byte-source.ts';
import { abortError, throwIfAborted } from './retry.ts';

export interface BlockStore {
  /** True when blocks outlive the process (then keys carry the ETag). */
  readonly persistent: boolean;
  get(key: string): Promise<Uint8Array | undefined>;
  put(key: string, bytes: Uint8Array): Promise<void>;
}

/** In-memory blocks, least recently used evicted first once `maxBytes` is exceeded. */
export class MemoryBlockStore implements BlockStore {
  readonly persistent = false;
  readonly maxBytes: number;
  private readonly map = new Map<string, Uint8Array>();
  private total = 0;

  constructor(maxBytes: number) {
    this.maxBytes = maxBytes;
  }

  get bytes(): number {
    return this.total;
  }

  get count(): number {
    return this.map.size;
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    const v = this.map.get(key);
    if (v) {
      this.map.delete(key);
      this.map.set(key, v);
    }
    return v;
  }

  async put(key: string, bytes: Uint8Array): Promise<void> {
    if (bytes.byteLength > this.maxBytes) return;
    const old = this.map.get(key);
    if (old) {
      this.total -= old.byteLength;
      this.map.delete(key);
    }
    this.map.set(key, bytes);
    this.total += bytes.byteLength;
    for (const [k, v] of this.map) {
      if (this.total <= this.maxBytes) break;
      this.map.delete(k);
      this.total -= v.byteLength;
    }
  }
}

export interface BlockCacheOptions {
  /** Block size in bytes (default 1 MiB). */
  blockSize?: number;
  /** Reads longer than this bypass the cache (default 8 blocks). */
  bypassAbove?: number;
}

export interface BlockCacheStats {
  hits: number;
  misses: number;
  innerReads: number;
  bypassed: number;
}

/** A short, stable namespace for a source version: sha-256 of description, size and ETag. */
async function namespaceOf(src: ByteSource): Promise<string> {
  const text = `${src.description}\n${src.size}\n${src.etag ?? ''}`;
  const d = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text));
  return Array.from(new Uint8Array(d).subarray(0, 16), (b) => b.toString(16).padStart(2, '0')).join('');
}

interface Deferred {
  promise: Promise<Uint8Array>;
  resolve: (v: Uint8Array) => void;
  reject: (e: unknown) => void;
}

function deferred(): Deferred {
  let resolve!: (v: Uint8Array) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<Uint8Array>((a, b) => {
    resolve = a;
    reject = b;
  });
  // A waiter may have gone away (aborted); never leave an unhandled rejection behind.
  promise.catch(() => {});
  return { promise, resolve, reject };
}

export class BlockCachedSource implements ByteSource {
  readonly size: number;
  readonly etag?: string;
  readonly description: string;
  readonly blockSize: number;
  readonly stats: BlockCacheStats = { hits: 0, misses: 0, innerReads: 0, bypassed: 0 };
  private readonly inner: ByteSource;
  private readonly store: BlockStore;
  private readonly bypassAbove: number;
  private readonly inflight = new Map<number, Promise<Uint8Array>>();
  private ns: Promise<string> | undefined;

  constructor(inner: ByteSource, store: BlockStore, o: BlockCacheOptions = {}) {
    this.inner = inner;
    this.store = store;
    this.size = inner.size;
    this.etag = inner.etag;
    this.description = inner.description;
    this.blockSize = Math.max(1, o.blockSize ?? 1 << 20);
    this.bypassAbove = o.bypassAbove ?? 8 * this.blockSize;
  }

  async read(offset: number, length: number, opts?: ReadOptions): Promise<Uint8Array> {
    throwIfAborted(opts?.signal);
    checkRange(this, offset, length);
    if (length === 0) return new Uint8Array(0);
    if (length > this.bypassAbove || (this.store.persistent && !this.inner.etag)) {
      this.stats.bypassed++;
      return this.inner.read(offset, length, opts);
    }
    const bs = this.blockSize;
    const b0 = Math.floor(offset / bs);
    const b1 = Math.floor((offset + length - 1) / bs);
    const claimed = new Map<number, Deferred>();
    const waits: Promise<Uint8Array>[] = [];
    for (let b = b0; b <= b1; b++) {
      let p = this.inflight.get(b);
      if (!p) {
        const d = deferred();
        claimed.set(b, d);
        this.inflight.set(b, d.promise);
        p = d.promise;
      }
      waits.push(p);
    }
    if (claimed.size) void this.fill(claimed);
    const all = Promise.all(waits);
    const blocks = opts?.signal ? await raceAbort(all, opts.signal) : await all;
    const out = new Uint8Array(length);
    for (let i = 0; i < blocks.length; i++) {
      const blockStart = (b0 + i) * bs;
      const from = Math.max(offset, blockStart);
      const to = Math.min(offset + length, blockStart + blocks[i].byteLength);
      out.set(blocks[i].subarray(from - blockStart, to - blockStart), from - offset);
    }
    return out;
  }

  private key(ns: string, b: number): string {
    return `${ns}/${this.blockSize}/${b}`;
  }

  private blockLength(b: number): number {
    return Math.min(this.blockSize, this.size - b * this.blockSize);
  }

  /** Resolves every claimed block: from the store, else fetched in runs of adjacent blocks. */
  private async fill(claimed: Map<number, Deferred>): Promise<void> {
    try {
      this.ns ??= namespaceOf(this.inner);
      const ns = await this.ns;
      const ids = [...claimed.keys()].sort((a, b) => a - b);
      const stored = await Promise.all(ids.map((b) => this.store.get(this.key(ns, b)).catch(() => undefined)));
      const missing: number[] = [];
      ids.forEach((b, i) => {
        const v = stored[i];
        if (v && v.byteLength === this.blockLength(b)) {
          this.stats.hits++;
          claimed.get(b)!.resolve(v);
        } else {
          missing.push(b);
        }
      });
      this.stats.misses += missing.length;
      const runs: number[][] = [];
      for (const b of missing) {
        const last = runs[runs.length - 1];
        if (last && last[last.length - 1] === b - 1) last.push(b);
        else runs.push([b]);
      }
      await Promise.all(
        runs.map(async (run) => {
          try {
            const start = run[0] * this.blockSize;
            const end = Math.min(this.size, (run[run.length - 1] + 1) * this.blockSize);
            this.stats.innerReads++;
            const bytes = await this.inner.read(start, end - start);
            for (const b of run) {
              const o = b * this.blockSize - start;
              const block = bytes.slice(o, o + this.blockLength(b));
              // A failed cache write must never fail the read.
              await this.store.put(this.key(ns, b), block).catch(() => {});
              claimed.get(b)!.resolve(block);
            }
          } catch (e) {
            for (const b of run) claimed.get(b)!.reject(e);
          }
        }),
      );
    } catch (e) {
      for (const d of claimed.values()) d.reject(e);
    } finally {
      for (const [b, d] of claimed) if (this.inflight.get(b) === d.promise) this.inflight.delete(b);
    }
  }

  async close(): Promise<void> {
    await this.inner.close?.();
  }
}

/** Waits for `p` unless `signal` aborts first (the work itself goes on for other waiters). */
export function raceAbort<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(abortError(signal));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(abortError(signal));
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}
