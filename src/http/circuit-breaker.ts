/**
 * Circuit breaker for the GPU endpoint.
 *
 *   closed ──(failureThreshold consecutive failures)──▶ open
 *   open ──(openMs elapsed; next request asks)──▶ half-open: one health probe, shared by every
 *   request that asks meanwhile ──ok──▶ closed │ ──fails──▶ open again (the wait restarts)
 *
 * Requests never serve as the probe: while the circuit is not closed they go elsewhere (or get
 * a 503), and only the probe's answer closes it. A success in closed resets the failure count.
 */

export type BreakerState = 'closed' | 'open' | 'half-open';

export interface BreakerOptions {
  /** Consecutive failures that open the circuit (default 3). */
  failureThreshold?: number;
  /** How long it stays open before a probe is allowed (default 10 s). */
  openMs?: number;
}

export class CircuitBreaker {
  readonly failureThreshold: number;
  readonly openMs: number;
  private st: BreakerState = 'closed';
  private failures = 0;
  private openedAt = 0;
  private probing: Promise<boolean> | undefined;
  private readonly now: () => number;
  private readonly onChange: (s: BreakerState) => void;

  constructor(
    o: BreakerOptions = {},
    now: () => number = () => Date.now(),
    onChange: (s: BreakerState) => void = () => {},
  ) {
    this.failureThreshold = o.failureThreshold ?? 3;
    this.openMs = o.openMs ?? 10_000;
    this.now = now;
    this.onChange = onChange;
  }

  get state(): BreakerState {
    return this.st;
  }

  /**
   * Milliseconds until an open circuit lets the next request try the GPU again (its probe), so a
   * 503's Retry-After says when asking again can help; 0 when the circuit is not open.
   */
  retryAfterMs(): number {
    return this.st === 'open' ? Math.max(0, this.openMs - (this.now() - this.openedAt)) : 0;
  }

  private to(s: BreakerState): void {
    if (this.st === s) return;
    this.st = s;
    if (s === 'open') this.openedAt = this.now();
    if (s === 'closed') this.failures = 0;
    this.onChange(s);
  }

  /** Whether a request may go to the GPU now; past the open wait, runs (or joins) the probe. */
  async allow(probe: () => Promise<boolean>): Promise<boolean> {
    if (this.st === 'closed') return true;
    if (this.st === 'open' && this.now() - this.openedAt < this.openMs) return false;
    if (!this.probing) {
      this.to('half-open');
      this.probing = probe()
        .catch(() => false)
        .then((ok) => {
          this.probing = undefined;
          this.to(ok ? 'closed' : 'open');
          return ok;
        });
    }
    return this.probing;
  }

  success(): void {
    if (this.st === 'closed') this.failures = 0;
  }

  failure(): void {
    if (this.st !== 'closed') return;
    if (++this.failures >= this.failureThreshold) this.to('open');
  }
}
