/**
 * HTTP(S) Range ByteSource over `fetch` (Node, Workers, Lambda alike; no node: imports).
 *
 * Open: one probe `GET Range: bytes=0-(probe-1)` must answer 206 with `Content-Range: bytes
 * 0-E/TOTAL`; TOTAL is the size, and the response's ETag (or Last-Modified) is pinned. A 200 is
 * accepted only when the whole file fits the probe (a server that ignores Range on a small file);
 * otherwise the server does not do ranges and the open fails with `HTTP_RANGE_NOT_SUPPORTED`.
 *
 * Reads: split into parts of at most `maxRequestBytes`, a few fetched at once. Each part must come
 * back as 206 with exactly the asked-for `Content-Range` and the same total and ETag; a strong ETag
 * is sent as `If-Match`, so a changed file answers 412. Any sign that the file changed is final
 * (`SOURCE_CHANGED`): mixing bytes of two versions would give wrong numbers. 5xx, 408, 429, network
 * errors, stalls (no byte for `stallTimeoutMs`) and truncated bodies are retried with backoff and
 * jitter; a retry asks only for the bytes still missing. The caller's AbortSignal ends everything.
 *
 * A transfer that trickles (bytes keep coming, so the stall timer never fires, but fewer than
 * `minBytesPerSecond` on average over each `speedWindowMs`, by default 4 KiB/s over the stall
 * timeout) is abandoned with `HTTP_TOO_SLOW` and retried like a stall. A 1.2 GB model over a
 * 10 MB/s link runs each request at hundreds of KB/s, far above the floor.
 *
 * Every request asks for `Accept-Encoding: identity`. A response that is content-encoded anyway
 * (gzip, br, …) does not carry the file's bytes, and its Content-Length/Content-Range count the
 * encoded ones: it is refused with `HTTP_CONTENT_ENCODED` (final), whatever its status.
 */
import { BitNetError } from '../errors.ts';
import { type ByteSource, checkRange, type ReadOptions } from './byte-source.ts';
import {
  abortError,
  DEFAULT_RETRY,
  type RetryOptions,
  readBodyInto,
  retryAfterMs,
  StallTimer,
  throwIfAborted,
  transient,
  withRetry,
} from './retry.ts';

export interface HttpSourceOptions {
  /** Extra request headers (e.g. authorization). */
  headers?: Record<string, string>;
  retry?: RetryOptions;
  /** Largest single range request; longer reads are split (default 16 MiB). */
  maxRequestBytes?: number;
  /** Parts of one read fetched at once (default 4). */
  parallel?: number;
  /** Bytes fetched by the opening probe and kept to serve small reads at the start (default 64 KiB). */
  probeBytes?: number;
  /** The fetch to use (default: the global one). */
  fetch?: typeof fetch;
  /**
   * Slowest transfer accepted, in bytes a second averaged over `speedWindowMs` (default 4096;
   * 0 = no floor). Slower requests fail with HTTP_TOO_SLOW and are retried.
   */
  minBytesPerSecond?: number;
  /** The window of `minBytesPerSecond` in ms (default: the retry policy's stall timeout, 30 s). */
  speedWindowMs?: number;
}

export const DEFAULT_MIN_BYTES_PER_SECOND = 4096;

/**
 * Aborts a request that receives fewer than `min` bytes a second over each window (or, near its
 * end, fewer than the bytes still missing). `signal` goes to the StallTimer as its outer signal.
 */
class SpeedGuard {
  readonly signal: AbortSignal | undefined;
  error: BitNetError | undefined;
  private readonly ctl = new AbortController();
  private timer: ReturnType<typeof setInterval> | undefined;

  constructor(
    o: HttpSourceOptions,
    stallMs: number,
    expected: number,
    progress: { got: number },
    where: string,
    outer: AbortSignal | undefined,
  ) {
    const min = o.minBytesPerSecond ?? DEFAULT_MIN_BYTES_PER_SECOND;
    const windowMs = o.speedWindowMs ?? stallMs;
    if (!(min > 0) || !(windowMs > 0)) {
      this.signal = outer;
      return;
    }
    this.signal = outer ? AbortSignal.any([outer, this.ctl.signal]) : this.ctl.signal;
    let last = progress.got;
    this.timer = setInterval(() => {
      const got = progress.got - last;
      const need = Math.min((min * windowMs) / 1000, expected - last);
      last = progress.got;
      if (got >= need) return;
      // not a byte in a window as long as the stall timeout: that is the stall timer's (HTTP_STALLED)
      if (got === 0 && windowMs >= stallMs) return;
      this.error = transient(
        'HTTP_TOO_SLOW',
        `${where}: the transfer is too slow: ${got} bytes in ${windowMs / 1000} s, under ${min} bytes/s`,
        { url: where, bytes: got, windowMs, minBytesPerSecond: min },
      );
      this.done();
      this.ctl.abort(this.error);
    }, windowMs);
  }

  done(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }
}

/** A content-encoded response does not carry the file's bytes (see the top of this file). */
function checkIdentity(res: Response, where: string): void {
  const ce = (res.headers.get('content-encoding') ?? '').trim().toLowerCase();
  if (ce === '' || ce === 'identity') return;
  res.body?.cancel().catch(() => {});
  throw BitNetError.Io(
    'HTTP_CONTENT_ENCODED',
    `${where}: the server compressed the body (Content-Encoding: ${ce}) although identity was asked for; ` +
      'serve the file uncompressed (turn off compression for it)',
    { url: where, status: res.status, contentEncoding: ce },
  );
}

const CONTENT_RANGE = /^bytes (\d+)-(\d+)\/(\d+|\*)$/;

/** Two HTTP dates for the same instant (or, unparsable, the same text). */
function sameDate(a: string, b: string): boolean {
  const x = Date.parse(a);
  const y = Date.parse(b);
  return Number.isNaN(x) || Number.isNaN(y) ? a.trim() === b.trim() : x === y;
}

/**
 * user:password in the URL (http://user:pass@host/…) becomes Basic authorization, as browsers and
 * curl send it: fetch() refuses URLs with credentials, and the URL (with them) would otherwise end
 * up in error messages. An Authorization header given in the options wins.
 */
function credentialsToHeader(u: URL, o: HttpSourceOptions): { u: URL; o: HttpSourceOptions } {
  if (u.username === '' && u.password === '') return { u, o };
  const dec = (x: string) => {
    try {
      return decodeURIComponent(x);
    } catch {
      return x; // a stray % is taken as it is
    }
  };
  const plain = `${dec(u.username)}:${dec(u.password)}`;
  const bytes = new TextEncoder().encode(plain);
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  const bare = new URL(u);
  bare.username = '';
  bare.password = '';
  const given = Object.keys(o.headers ?? {}).some((k) => k.toLowerCase() === 'authorization');
  return given
    ? { u: bare, o }
    : { u: bare, o: { ...o, headers: { ...o.headers, authorization: `Basic ${btoa(bin)}` } } };
}

function publicUrl(u: URL): string {
  // Presigned URLs carry credentials in the query: never put them in messages.
  return `${u.origin}${u.pathname}`;
}

function statusError(status: number, where: string, size?: number, res?: Response): BitNetError {
  const wait = status === 429 || status === 503 ? retryAfterMs(res?.headers.get('retry-after')) : undefined;
  const d = wait === undefined ? { status, url: where } : { status, url: where, retryAfterMs: wait };
  if (status === 404 || status === 410) return BitNetError.Io('NOT_FOUND', `${where}: not found (${status})`, d);
  if (status === 401 || status === 403)
    return BitNetError.Io('ACCESS_DENIED', `${where}: access denied (${status})`, d);
  if (status === 412)
    return BitNetError.Io('SOURCE_CHANGED', `${where}: the file changed while it was being read (412)`, d);
  if (status === 416 && size !== undefined)
    return BitNetError.Io('SOURCE_CHANGED', `${where}: the range is no longer satisfiable; the file changed`, d);
  if (status === 408 || status === 429 || status >= 500)
    return transient('HTTP_STATUS', `${where}: the server answered ${status}`, d);
  return BitNetError.Io('HTTP_STATUS', `${where}: unexpected status ${status}`, d);
}

/** Classifies a failure of fetch() or of reading a body. */
function fetchFailure(
  e: unknown,
  timer: StallTimer,
  signal: AbortSignal | undefined,
  where: string,
  guard?: SpeedGuard,
): BitNetError {
  if (signal?.aborted) return abortError(signal);
  if (guard?.error) return guard.error;
  if (timer.stalled) return transient('HTTP_STALLED', `${where}: the transfer stalled`, { url: where }, e);
  if (e instanceof BitNetError) return e;
  return transient('HTTP_NETWORK', `${where}: ${(e as Error)?.message ?? String(e)}`, { url: where }, e);
}

async function mapLimit<T>(items: T[], limit: number, fn: (t: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed: unknown;
  const worker = async () => {
    while (next < items.length && failed === undefined) {
      const t = items[next++];
      try {
        await fn(t);
      } catch (e) {
        failed ??= e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failed !== undefined) throw failed;
}

export class HttpSource implements ByteSource {
  readonly size: number;
  readonly etag?: string;
  readonly description: string;
  readonly url: URL;
  private readonly lastModified?: string;
  private readonly head: Uint8Array;
  private readonly o: HttpSourceOptions;
  private readonly fetchFn: typeof fetch;

  private constructor(
    url: URL,
    o: HttpSourceOptions,
    size: number,
    head: Uint8Array,
    etag: string | undefined,
    lastModified: string | undefined,
  ) {
    this.url = url;
    this.o = o;
    this.fetchFn = o.fetch ?? globalThis.fetch.bind(globalThis);
    this.size = size;
    this.head = head;
    this.etag = etag;
    this.lastModified = lastModified;
    this.description = publicUrl(url);
  }

  static async open(url: string | URL, given: HttpSourceOptions = {}, signal?: AbortSignal): Promise<HttpSource> {
    const { u, o } = credentialsToHeader(new URL(url), given);
    const where = publicUrl(u);
    const probe = Math.max(2, o.probeBytes ?? 64 * 1024);
    const fetchFn = o.fetch ?? globalThis.fetch.bind(globalThis);
    const stall = o.retry?.stallTimeoutMs ?? DEFAULT_RETRY.stallTimeoutMs;
    return withRetry(
      `opening ${where}`,
      async () => {
        const progress = { got: 0 };
        const guard = new SpeedGuard(o, stall, probe, progress, where, signal);
        const timer = new StallTimer(stall, guard.signal);
        try {
          let res: Response;
          try {
            res = await fetchFn(u, {
              // identity: a compressed body would not be the asked-for bytes.
              headers: { ...o.headers, range: `bytes=0-${probe - 1}`, 'accept-encoding': 'identity' },
              signal: timer.signal,
              redirect: 'follow',
            });
          } catch (e) {
            throw fetchFailure(e, timer, signal, where, guard);
          }
          timer.kick();
          if (res.status === 200 || res.status === 206) checkIdentity(res, where);
          const etag = res.headers.get('etag') ?? undefined;
          const lastModified = res.headers.get('last-modified') ?? undefined;
          if (res.status === 416) {
            await res.body?.cancel();
            const m = /^bytes \*\/(\d+)$/.exec(res.headers.get('content-range') ?? '');
            if (m && Number(m[1]) === 0) return new HttpSource(u, o, 0, new Uint8Array(0), etag, lastModified);
            throw statusError(416, where);
          }
          let size: number;
          let expected: number;
          if (res.status === 206) {
            const m = CONTENT_RANGE.exec(res.headers.get('content-range') ?? '');
            if (!m || Number(m[1]) !== 0 || Number(m[2]) > probe - 1 || m[3] === '*' || Number(m[2]) >= Number(m[3])) {
              await res.body?.cancel();
              throw BitNetError.Io(
                'HTTP_BAD_CONTENT_RANGE',
                `${where}: bad Content-Range "${res.headers.get('content-range')}" for bytes=0-${probe - 1}`,
                { url: where, contentRange: res.headers.get('content-range') },
              );
            }
            size = Number(m[3]);
            expected = Number(m[2]) + 1;
          } else if (res.status === 200) {
            const len = Number(res.headers.get('content-length') ?? Number.NaN);
            if (!(len <= probe)) {
              await res.body?.cancel();
              throw BitNetError.Io(
                'HTTP_RANGE_NOT_SUPPORTED',
                `${where}: the server ignored the Range header (200 instead of 206); it cannot serve models by range`,
                { url: where },
              );
            }
            size = len;
            expected = len;
          } else {
            await res.body?.cancel();
            throw statusError(res.status, where, undefined, res);
          }
          const head = new Uint8Array(expected);
          const got = res.body ? await readBodyInto(res.body, head, 0, expected, timer, where, progress) : 0;
          if (got < expected) {
            throw transient('HTTP_TRUNCATED', `${where}: body ended after ${got} of ${expected} bytes`, { url: where });
          }
          return new HttpSource(u, o, size, head, etag, lastModified);
        } catch (e) {
          throw fetchFailure(e, timer, signal, where, guard);
        } finally {
          timer.done();
          guard.done();
        }
      },
      o.retry,
      signal,
    );
  }

  async read(offset: number, length: number, opts?: ReadOptions): Promise<Uint8Array> {
    throwIfAborted(opts?.signal);
    checkRange(this, offset, length);
    if (offset + length <= this.head.byteLength) return this.head.slice(offset, offset + length);
    const out = new Uint8Array(length);
    if (length === 0) return out;
    const max = Math.max(1, this.o.maxRequestBytes ?? 16 << 20);
    const parts: { at: number; len: number }[] = [];
    for (let at = 0; at < length; at += max) parts.push({ at, len: Math.min(max, length - at) });
    await mapLimit(parts, Math.max(1, this.o.parallel ?? 4), (p) =>
      this.readPart(offset + p.at, p.len, out, p.at, opts?.signal),
    );
    return out;
  }

  /** One range request (retried), resuming after the bytes already received. */
  private async readPart(
    start: number,
    len: number,
    out: Uint8Array,
    at: number,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    let done = 0;
    const stall = this.o.retry?.stallTimeoutMs ?? DEFAULT_RETRY.stallTimeoutMs;
    await withRetry(
      `reading ${this.description} at ${start}`,
      async () => {
        const s = start + done;
        const e = start + len - 1;
        const progress = { got: 0 };
        const guard = new SpeedGuard(this.o, stall, e - s + 1, progress, this.description, signal);
        const timer = new StallTimer(stall, guard.signal);
        try {
          const headers: Record<string, string> = {
            ...this.o.headers,
            range: `bytes=${s}-${e}`,
            'accept-encoding': 'identity',
          };
          if (this.etag && !this.etag.startsWith('W/')) headers['if-match'] = this.etag;
          else if (this.lastModified) headers['if-unmodified-since'] = this.lastModified;
          let res: Response;
          try {
            res = await this.fetchFn(this.url, { headers, signal: timer.signal, redirect: 'follow' });
          } catch (err) {
            throw fetchFailure(err, timer, signal, this.description, guard);
          }
          timer.kick();
          if (res.status === 200 || res.status === 206) checkIdentity(res, this.description);
          if (res.status !== 206) {
            await res.body?.cancel();
            if (res.status === 200) {
              throw BitNetError.Io(
                'HTTP_RANGE_NOT_SUPPORTED',
                `${this.description}: the server answered a range request with 200 (no ranges)`,
                { url: this.description },
              );
            }
            throw statusError(res.status, this.description, this.size, res);
          }
          this.checkSame(res, s, e);
          if (!res.body) throw transient('HTTP_TRUNCATED', `${this.description}: empty body`, {});
          const got = await readBodyInto(res.body, out, at + done, e - s + 1, timer, this.description, progress);
          if (done + got < len) {
            throw transient('HTTP_TRUNCATED', `${this.description}: body ended after ${got} of ${e - s + 1} bytes`, {
              url: this.description,
              offset: s,
            });
          }
        } catch (err) {
          throw fetchFailure(err, timer, signal, this.description, guard);
        } finally {
          // Keep what arrived: the next attempt asks only for the rest.
          done += progress.got;
          timer.done();
          guard.done();
        }
      },
      this.o.retry,
      signal,
    );
  }

  /** The response must be exactly the asked-for range of the same version of the file. */
  private checkSame(res: Response, s: number, e: number): void {
    const cr = res.headers.get('content-range') ?? '';
    const m = CONTENT_RANGE.exec(cr);
    if (!m || Number(m[1]) !== s || Number(m[2]) !== e) {
      void res.body?.cancel();
      throw BitNetError.Io('HTTP_BAD_CONTENT_RANGE', `${this.description}: asked for bytes ${s}-${e}, got "${cr}"`, {
        url: this.description,
        asked: [s, e],
        contentRange: cr,
      });
    }
    const etag = res.headers.get('etag') ?? undefined;
    // The version pinned at open: the ETag, or the Last-Modified date (a server that ignores
    // If-Match / If-Unmodified-Since still names the version it answered from).
    const lastModified = res.headers.get('last-modified') ?? undefined;
    const otherDate =
      this.lastModified !== undefined && lastModified !== undefined && !sameDate(lastModified, this.lastModified);
    if ((m[3] !== '*' && Number(m[3]) !== this.size) || (this.etag && etag && etag !== this.etag) || otherDate) {
      void res.body?.cancel();
      throw BitNetError.Io('SOURCE_CHANGED', `${this.description}: the file changed while it was being read`, {
        url: this.description,
        pinnedEtag: this.etag,
        etag,
        pinnedLastModified: this.lastModified,
        lastModified,
        pinnedSize: this.size,
        size: m[3],
      });
    }
  }

  /** A file next to this one (same options), e.g. a shard next to its manifest. */
  async sibling(name: string, signal?: AbortSignal): Promise<ByteSource> {
    return HttpSource.open(new URL(name, this.url), this.o, signal);
  }
}
