/**
 * A concurrency limit in front of any ByteSource: at most `max` inner reads in flight, the rest wait
 * in order (a waiter whose signal aborts leaves the queue). Keeps a model load from opening hundreds
 * of connections, or from spending a Worker's subrequest budget at once. Runtime-free.
 */

import { Slots } from '../util/slots.ts';
import { type ByteSource, checkRange, type ReadOptions } from './byte-source.ts';
import { abortError, throwIfAborted } from './retry.ts';

export class ConcurrencyLimitedSource implements ByteSource {
  readonly size: number;
  readonly etag?: string;
  readonly description: string;
  readonly max: number;
  private readonly inner: ByteSource;
  private readonly slots: Slots;

  constructor(inner: ByteSource, max: number) {
    this.inner = inner;
    this.max = Math.max(1, Math.floor(max));
    this.slots = new Slots(this.max, abortError);
    this.size = inner.size;
    this.etag = inner.etag;
    this.description = inner.description;
  }

  /** Highest number of inner reads seen in flight at once. */
  get peak(): number {
    return this.slots.peak;
  }

  async read(offset: number, length: number, opts?: ReadOptions): Promise<Uint8Array> {
    throwIfAborted(opts?.signal);
    checkRange(this, offset, length);
    await this.slots.acquire(opts?.signal);
    try {
      return await this.inner.read(offset, length, opts);
    } finally {
      this.slots.release();
    }
  }

  async close(): Promise<void> {
    await this.inner.close?.();
  }
}
