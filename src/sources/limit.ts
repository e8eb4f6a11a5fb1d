/**
 * A concurrency limit in front of any ByteSource: at most `max` inner reads in flight, the rest wait
 * in order (a waiter whose signal aborts leaves the queue). Keeps a model load from opening hundreds
 * of connections, or from spending a Worker's subrequest budget at once. Runtime-free.
 */
import { type ByteSource, checkRange, type ReadOptions } from './byte-source.ts';
import { abortError, throwIfAborted } from './retry.ts';

export class ConcurrencyLimitedSource implements ByteSource {
  readonly size: number;
  readonly etag?: string;
  readonly description: string;
  readonly max: number;
  /** Highest number of inner reads seen in flight at once. */
  peak = 0;
  private readonly inner: ByteSource;
  private active = 0;
  private readonly waiting: { go: () => void; signal?: AbortSignal; onAbort?: () => void }[] = [];

  constructor(inner: ByteSource, max: number) {
    this.inner = inner;
    this.max = Math.max(1, Math.floor(max));
    this.size = inner.size;
    this.etag = inner.etag;
    this.description = inner.description;
  }

  private acquire(signal?: AbortSignal): Promise<void> {
    if (this.active < this.max) {
      this.active++;
      this.peak = Math.max(this.peak, this.active);
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const w: { go: () => void; signal?: AbortSignal; onAbort?: () => void } = {
        go: () => {
          if (w.onAbort) signal?.removeEventListener('abort', w.onAbort);
          this.active++;
          this.peak = Math.max(this.peak, this.active);
          resolve();
        },
        signal,
      };
      if (signal) {
        w.onAbort = () => {
          const i = this.waiting.indexOf(w);
          if (i >= 0) this.waiting.splice(i, 1);
          reject(abortError(signal));
        };
        signal.addEventListener('abort', w.onAbort, { once: true });
      }
      this.waiting.push(w);
    });
  }

  private releaseSlot(): void {
    this.active--;
    const next = this.waiting.shift();
    next?.go();
  }

  async read(offset: number, length: number, opts?: ReadOptions): Promise<Uint8Array> {
    throwIfAborted(opts?.signal);
    checkRange(this, offset, length);
    await this.acquire(opts?.signal);
    try {
      return await this.inner.read(offset, length, opts);
    } finally {
      this.releaseSlot();
    }
  }

  async close(): Promise<void> {
    await this.inner.close?.();
  }
}
