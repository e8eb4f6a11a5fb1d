/**
 * A counting semaphore with a FIFO queue: at most `size` holders at once (InferenceConfig's
 * maxConcurrentRequests; ConcurrencyLimitedSource's reads in flight). A waiter whose signal
 * aborts leaves the queue, rejected with `reasonOf(signal)` (the caller's mapping of the
 * signal's reason to its typed error). Runtime-free.
 */
import { cancelReason } from './abort.ts';

export class Slots {
  readonly size: number;
  /** Most holders seen at once. */
  peak = 0;
  private held = 0;
  private readonly waiters: { grant: () => void }[] = [];
  private readonly reasonOf: (signal: AbortSignal) => unknown;

  constructor(size: number, reasonOf: (signal: AbortSignal) => unknown = cancelReason) {
    this.size = size;
    this.reasonOf = reasonOf;
  }

  /** Resolves once a slot is this caller's; call release() exactly once after. */
  acquire(signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(this.reasonOf(signal));
    if (this.held < this.size) {
      this.held++;
      this.peak = Math.max(this.peak, this.held);
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(this.reasonOf(signal as AbortSignal));
      };
      const w = {
        grant: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(w);
    });
  }

  release(): void {
    const next = this.waiters.shift();
    if (next)
      next.grant(); // the slot passes straight on: `held` stays
    else this.held--;
  }
}
