/**
 * Retries with exponential backoff and full jitter, abortable sleeps, and stall timers: the
 * transport-independent half of every remote ByteSource. Runtime-free (timers and AbortSignal only).
 *
 * A failure is retried only when it is a BitNetError whose `details.retryable` is true (5xx, 408,
 * 429, network errors, stalls, truncated bodies). Everything else (404, 403, a changed ETag, a wrong
 * Content-Range) is final at once. When the attempts run out the error is `RETRIES_EXHAUSTED`, with
 * the last failure's code in `details.lastCode` and the failure itself as `cause`.
 */
import { BitNetError } from '../errors.ts';

export interface RetryOptions {
  /** Retries after the first attempt (default 4: five attempts in all). */
  retries?: number;
  /** First backoff ceiling in ms (default 100); doubles each retry. */
  baseDelayMs?: number;
  /** Backoff ceiling in ms (default 5000). */
  maxDelayMs?: number;
  /** A request that receives no byte for this long is abandoned and retried (default 30000). */
  stallTimeoutMs?: number;
  /** Jitter source in [0, 1) (tests inject a fixed one). */
  random?: () => number;
  onRetry?: (info: { attempt: number; delayMs: number; error: BitNetError }) => void;
  /** The wait after failure `e` of attempt `n` (e.g. the server's Retry-After); default: jittered backoff. */
  delayFor?: (e: BitNetError, n: number) => number;
  /** When the retries run out, throw the last failure itself instead of RETRIES_EXHAUSTED. */
  rethrowLast?: boolean;
}

export const DEFAULT_RETRY: Required<Omit<RetryOptions, 'onRetry' | 'delayFor' | 'rethrowLast'>> = {
  retries: 4,
  baseDelayMs: 100,
  maxDelayMs: 5000,
  stallTimeoutMs: 30_000,
  random: Math.random,
};

/** The longest Retry-After a transient error makes withRetry wait. */
const MAX_HINT_MS = 60_000;

/** A Retry-After header (seconds or an HTTP date) in ms, when sane. */
export function retryAfterMs(v: string | null | undefined, nowMs = Date.now()): number | undefined {
  if (v === null || v === undefined) return undefined;
  const t = v.trim();
  if (/^\d{1,9}$/.test(t)) return Number(t) * 1000;
  const at = Date.parse(t);
  return Number.isNaN(at) ? undefined : Math.max(0, at - nowMs);
}

/** The typed error for an aborted read: the signal's reason when it is already a BitNetError. */
export function abortError(signal: AbortSignal | undefined): BitNetError {
  const r = signal?.reason;
  if (r instanceof BitNetError) return r;
  return BitNetError.Timeout('ABORTED', 'the read was aborted', {}, r);
}

export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortError(signal);
}

/** A transient failure: retried by `withRetry`. */
export function transient(code: string, message: string, details: Record<string, unknown> = {}, cause?: unknown) {
  return BitNetError.Io(code, message, { ...details, retryable: true }, cause);
}

export function isRetryable(e: unknown): e is BitNetError {
  return e instanceof BitNetError && e.details.retryable === true;
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortError(signal));
    const onAbort = () => {
      clearTimeout(t);
      reject(abortError(signal));
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Full-jitter backoff: a uniform delay in [0, min(max, base·2^attempt)). */
export function backoffDelay(attempt: number, o: RetryOptions = {}): number {
  const base = o.baseDelayMs ?? DEFAULT_RETRY.baseDelayMs;
  const max = o.maxDelayMs ?? DEFAULT_RETRY.maxDelayMs;
  const rnd = o.random ?? DEFAULT_RETRY.random;
  return Math.floor(rnd() * Math.min(max, base * 2 ** attempt));
}

/** Runs `attempt(n)` until it succeeds, fails finally, or the retries run out. */
export async function withRetry<T>(
  what: string,
  attempt: (n: number) => Promise<T>,
  o: RetryOptions = {},
  signal?: AbortSignal,
): Promise<T> {
  const retries = o.retries ?? DEFAULT_RETRY.retries;
  for (let n = 0; ; n++) {
    throwIfAborted(signal);
    try {
      return await attempt(n);
    } catch (e) {
      if (signal?.aborted) throw abortError(signal);
      if (!isRetryable(e)) throw e;
      if (n >= retries) {
        if (o.rethrowLast) throw e;
        throw BitNetError.Io(
          'RETRIES_EXHAUSTED',
          `${what}: gave up after ${n + 1} attempts (${e.code}: ${e.message})`,
          { attempts: n + 1, lastCode: e.code, last: e.details },
          e,
        );
      }
      // A server's own Retry-After (details.retryAfterMs, up to a minute) is waited at least.
      const hint = typeof e.details.retryAfterMs === 'number' ? Math.min(e.details.retryAfterMs, MAX_HINT_MS) : 0;
      const delayMs = o.delayFor ? o.delayFor(e, n) : Math.max(backoffDelay(n, o), hint);
      o.onRetry?.({ attempt: n + 1, delayMs, error: e });
      await sleep(delayMs, signal);
    }
  }
}

/**
 * An idle timer for one request: `signal` aborts when `kick()` has not been called for `ms`.
 * Combined with the caller's signal, so either one ends the request.
 */
export class StallTimer {
  readonly signal: AbortSignal;
  private readonly ctl = new AbortController();
  private timer: ReturnType<typeof setTimeout> | undefined;
  private readonly ms: number;

  constructor(ms: number, outer?: AbortSignal) {
    this.ms = ms;
    this.signal = outer ? AbortSignal.any([outer, this.ctl.signal]) : this.ctl.signal;
    this.kick();
  }

  get stalled(): boolean {
    return this.ctl.signal.aborted;
  }

  kick(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    if (this.ctl.signal.aborted) return;
    this.timer = setTimeout(
      () => this.ctl.abort(transient('STALLED', `no data for ${this.ms} ms`, { stallTimeoutMs: this.ms })),
      this.ms,
    );
  }

  done(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }
}

/**
 * Reads a body stream into `out[at .. at+expected)`. Returns the bytes received; a body longer than
 * `expected` is a protocol error (final), a shorter one is reported by the count (the caller decides).
 * `progress.got` follows the bytes stored so far, so a caller can resume after a failure mid-body.
 */
export async function readBodyInto(
  body: ReadableStream<Uint8Array>,
  out: Uint8Array,
  at: number,
  expected: number,
  timer: StallTimer,
  what: string,
  progress: { got: number } = { got: 0 },
): Promise<number> {
  const reader = body.getReader();
  let got = 0;
  let finished = false;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) {
        finished = true;
        break;
      }
      timer.kick();
      if (got + value.byteLength > expected) {
        throw BitNetError.Io('BODY_TOO_LONG', `${what}: the body is longer than the ${expected} bytes asked for`, {
          expected,
        });
      }
      out.set(value, at + got);
      got += value.byteLength;
      progress.got = got;
    }
  } finally {
    // Free the connection when we stop early (an error, a stall, an over-long body).
    if (!finished) await reader.cancel().catch(() => {});
    reader.releaseLock();
  }
  return got;
}
