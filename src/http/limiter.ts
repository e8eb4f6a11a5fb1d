/**
 * Concurrency limit with a bounded FIFO queue, for local generations.
 *
 * `acquire` resolves with a release function once one of `maxConcurrent` slots is free. At most
 * `maxQueue` callers wait; past that it throws Capacity QUEUE_FULL (→ 429 with Retry-After).
 * A waiter whose signal aborts (the client went away) leaves the queue at once. `release` is
 * idempotent, so every exit path may call it.
 */
import { BitNetError } from '../errors.ts';

export interface LimiterOptions {
  /** Generations running at once (default 4). */
  maxConcurrent?: number;
  /** Requests allowed to wait for a slot (default 64; 0 = no queue). */
  maxQueue?: number;
  /** Retry-After sent with a 429 (default 1 s). */
  retryAfterSeconds?: number;
}

interface Waiter {
  grant: () => void;
}

export class Limiter {
  readonly maxConcurrent: number;
  readonly maxQueue: number;
  readonly retryAfterSeconds: number;
  private running = 0;
  private readonly waiting: Waiter[] = [];

  constructor(o: LimiterOptions = {}) {
    this.maxConcurrent = o.maxConcurrent ?? 4;
    this.maxQueue = o.maxQueue ?? 64;
    this.retryAfterSeconds = o.retryAfterSeconds ?? 1;
    if (!Number.isInteger(this.maxConcurrent) || this.maxConcurrent < 1) {
      throw BitNetError.Config(
        'INVALID_LIMITS',
        `maxConcurrent must be a positive integer (got ${this.maxConcurrent})`,
      );
    }
    if (!Number.isInteger(this.maxQueue) || this.maxQueue < 0) {
      throw BitNetError.Config('INVALID_LIMITS', `maxQueue must be a non-negative integer (got ${this.maxQueue})`);
    }
  }

  get active(): number {
    return this.running;
  }

  get queued(): number {
    return this.waiting.length;
  }

  async acquire(signal?: AbortSignal): Promise<() => void> {
    signal?.throwIfAborted();
    if (this.running < this.maxConcurrent && this.waiting.length === 0) {
      this.running++;
      return this.releaser();
    }
    if (this.waiting.length >= this.maxQueue) {
      throw BitNetError.Capacity(
        'QUEUE_FULL',
        `server busy: ${this.running} generations running and ${this.waiting.length} waiting`,
        {
          running: this.running,
          queued: this.waiting.length,
          retryAfterSeconds: this.retryAfterSeconds,
        },
      );
    }
    return new Promise<() => void>((resolve, reject) => {
      const onAbort = () => {
        const i = this.waiting.indexOf(w);
        if (i >= 0) this.waiting.splice(i, 1);
        reject(BitNetError.Timeout('CANCELLED', 'the client went away while queued'));
      };
      const w: Waiter = {
        grant: () => {
          signal?.removeEventListener('abort', onAbort);
          this.running++;
          resolve(this.releaser());
        },
      };
      this.waiting.push(w);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  private releaser(): () => void {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.running--;
      const next = this.waiting.shift();
      if (next) next.grant();
    };
  }
}
