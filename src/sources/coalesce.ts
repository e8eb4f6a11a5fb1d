/**
 * Coalescing of adjacent reads: reads issued in the same turn of the event loop whose ranges touch,
 * overlap or lie within `maxGap` bytes of each other become one inner read (up to `maxBytes`), and
 * each caller gets its own slice. Over HTTP, S3 or R2 this turns a layer's dozen small tensor reads
 * into one request. Runtime-free.
 */

import { raceAbort } from './block-cache.ts';
import { type ByteSource, checkRange, type ReadOptions } from './byte-source.ts';
import { throwIfAborted } from './retry.ts';

export interface CoalesceOptions {
  /** Largest gap between two reads that are still merged (the gap's bytes are read and dropped; default 0). */
  maxGap?: number;
  /** Largest merged read (default 16 MiB). */
  maxBytes?: number;
}

interface Pending {
  offset: number;
  length: number;
  signal?: AbortSignal;
  resolve: (v: Uint8Array) => void;
  reject: (e: unknown) => void;
}

export class CoalescingSource implements ByteSource {
  readonly size: number;
  readonly etag?: string;
  readonly description: string;
  readonly stats = { reads: 0, innerReads: 0 };
  private readonly inner: ByteSource;
  private readonly maxGap: number;
  private readonly maxBytes: number;
  private queue: Pending[] = [];

  constructor(inner: ByteSource, o: CoalesceOptions = {}) {
    this.inner = inner;
    this.size = inner.size;
    this.etag = inner.etag;
    this.description = inner.description;
    this.maxGap = Math.max(0, o.maxGap ?? 0);
    this.maxBytes = Math.max(1, o.maxBytes ?? 16 << 20);
  }

  read(offset: number, length: number, opts?: ReadOptions): Promise<Uint8Array> {
    throwIfAborted(opts?.signal);
    checkRange(this, offset, length);
    this.stats.reads++;
    const p = new Promise<Uint8Array>((resolve, reject) => {
      if (this.queue.length === 0) queueMicrotask(() => this.flush());
      this.queue.push({ offset, length, signal: opts?.signal, resolve, reject });
    });
    return opts?.signal ? raceAbort(p, opts.signal) : p;
  }

  private flush(): void {
    const q = this.queue.sort((a, b) => a.offset - b.offset || a.length - b.length);
    this.queue = [];
    let group: Pending[] = [];
    let gStart = 0;
    let gEnd = 0;
    const issue = (g: Pending[], start: number, end: number) => {
      this.stats.innerReads++;
      // A read of its own is cancelled with its caller; a merged one goes on for the others.
      const signal = g.length === 1 ? g[0].signal : undefined;
      this.inner.read(start, end - start, { signal }).then(
        (bytes) => {
          for (const r of g) r.resolve(bytes.subarray(r.offset - start, r.offset - start + r.length));
        },
        (e) => {
          for (const r of g) r.reject(e);
        },
      );
    };
    for (const r of q) {
      const end = r.offset + r.length;
      if (group.length && r.offset <= gEnd + this.maxGap && Math.max(gEnd, end) - gStart <= this.maxBytes) {
        group.push(r);
        gEnd = Math.max(gEnd, end);
        continue;
      }
      if (group.length) issue(group, gStart, gEnd);
      group = [r];
      gStart = r.offset;
      gEnd = end;
    }
    if (group.length) issue(group, gStart, gEnd);
  }

  async close(): Promise<void> {
    await this.inner.close?.();
  }
}
