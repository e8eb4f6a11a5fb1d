/**
 * A counting semaphore with a FIFO queue: at most `size` holders at once (InferenceConfig's
 * maxConcurrentRequests). A waiter whose signal aborts leaves the queue with the signal's typed
 * error (util/abort.ts).
 */
import { cancelReason, throwIfCancelled } from './abort.ts';

export class Slots {
  private held = 0;
  private readonly waiters: { grant: () => void }[] = [];
  readonly size: number;
  constructor(size: number) {
    this.size = size;
  }

  /** Holders now. */
  get inUse(): number {
    return this.held;
  }
  /** Waiters now. */
  get queued(): number {
    return this.waiters.length;
  }

  /** Resolves once a slot is this caller's; call release() exactly once after. */
  async acquire(signal?: AbortSignal): Promise<void> {
    throwIfCancelled(signal);
    if (this.held < this.size) {
      this.held++;
      return;
    }
    await new Promise<void>((resolve, reject) => {
      const w = {
        grant: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
      };
      const onAbort = () => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(cancelReason(signal as AbortSignal));
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
