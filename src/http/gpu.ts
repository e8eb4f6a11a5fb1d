/**
 * The GPU endpoint client: forwards a request to the GPU server (this same app running the CUDA
 * backend) with the GPU's own key, and streams its response back.
 *
 * "Before the first byte" is the window in which the request can still be served elsewhere:
 * a connection error, a 5xx, 429, 401 or 403 status, a body that fails before its first chunk, or no
 * first chunk in time. "In time" depends on the request: a streaming request's first event comes
 * once its prompt is in (`firstByteTimeoutMs`, 30 s), while a non-streaming answer is sent only
 * when the whole generation is done (`responseTimeoutMs`, 300 s: the GPU function's timeout in
 * the stack). After the first chunk the bytes are passed through as they arrive (no buffering,
 * the consumer's reads drive the upstream reads), and a gap of more than `idleTimeoutMs` (60 s)
 * between two chunks is a failure. A failure then can only end the stream: for SSE at an event
 * boundary, with this endpoint's failure event (gpu-stream.ts) so the client sees an error rather
 * than a short answer; a stream that ends cleanly without its final event counts as such a failure.
 *
 * Only the headers that describe the body cross over (RESPONSE_HEADERS): whatever else a proxy or
 * runtime in front of the GPU adds (cookies, CORS, server names) stays there.
 */
import { BitNetError } from '../errors.ts';
import { retryAfterMs } from '../sources/retry.ts';
import { ApiKeys } from './auth.ts';
import { failureEvent, SseTail, type StreamWire, streamFinished } from './gpu-stream.ts';

export interface GpuEndpointOptions {
  /** Base URL of the GPU server, e.g. https://gpu.example.com (paths are appended). */
  url: string;
  /** The GPU server's own API key (never the client's). */
  apiKey?: string;
  /** Streaming requests: time allowed until the first response byte (default 30 s). */
  firstByteTimeoutMs?: number;
  /** Non-streaming requests: time allowed until the first byte, i.e. the whole generation (default 300 s). */
  responseTimeoutMs?: number;
  /** After the first byte: the longest wait for the next chunk (default 60 s). */
  idleTimeoutMs?: number;
  /** Health path probed while the circuit is half-open (default /readyz). */
  probePath?: string;
  probeTimeoutMs?: number;
}

/** One forwarded request: how its answer comes back. */
export interface ForwardRequest {
  path: string;
  body: string;
  /** The edge's id for the request (the client's x-request-id, or one made up): sent on, so both logs match. */
  requestId: string;
  /** How many times the request will have been forwarded once this hop is made (x-bitnet-forwarded). */
  hops: number;
  /** The client asked for a stream (SSE): the first byte comes early. */
  stream: boolean;
  /** The endpoint's stream format: its final event and its failure event. */
  wire: StreamWire;
  accept?: string | null;
}

export type ForwardPhase = 'connect' | 'status' | 'first_byte' | 'timeout';
export type ForwardResult =
  | { ok: true; response: Response }
  | {
      ok: false;
      phase: ForwardPhase;
      error: BitNetError;
      countsAsFailure: boolean;
      /** The GPU's own Retry-After (seconds), when it sent one with a 429 or 503. */
      retryAfterSeconds?: number;
    };

export interface ForwardHooks {
  /** The upstream failed after the first byte (an error, a stall, or a stream cut short). */
  onMidStreamFailure(e: unknown): void;
  /** The passed-through body ended, however it ended. */
  onEnd(how: 'done' | 'cancelled' | 'error'): void;
}

/** The response headers passed on to the client; everything else the GPU side sent is dropped. */
const RESPONSE_HEADERS = ['content-type', 'cache-control', 'x-accel-buffering'];
const enc = new TextEncoder();

function linkSignals(client: AbortSignal | undefined): { ac: AbortController; unlink: () => void } {
  const ac = new AbortController();
  if (!client) return { ac, unlink: () => {} };
  const on = () => ac.abort(client.reason);
  if (client.aborted) on();
  else client.addEventListener('abort', on, { once: true });
  return { ac, unlink: () => client.removeEventListener('abort', on) };
}

/** reader.read(), or a timeout error after `ms` (the timer is always cleared). */
async function readWithin<T>(
  reader: ReadableStreamDefaultReader<T>,
  ms: number,
  onTimeout: () => Error,
): Promise<ReadableStreamReadResult<T>> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(onTimeout()), ms);
  });
  try {
    return await Promise.race([reader.read(), late]);
  } finally {
    clearTimeout(timer);
  }
}

export class GpuEndpoint {
  readonly url: string;
  private readonly key: string | undefined;
  private readonly ownKey: ApiKeys | undefined;
  private readonly firstByteTimeoutMs: number;
  private readonly responseTimeoutMs: number;
  private readonly idleTimeoutMs: number;
  private readonly probePath: string;
  private readonly probeTimeoutMs: number;
  private readonly fetchFn: typeof fetch;

  constructor(o: GpuEndpointOptions, fetchFn: typeof fetch = (...a) => fetch(...a)) {
    this.url = o.url.replace(/\/+$/, '');
    this.key = o.apiKey;
    this.ownKey = o.apiKey ? new ApiKeys([o.apiKey]) : undefined;
    this.firstByteTimeoutMs = o.firstByteTimeoutMs ?? 30_000;
    this.responseTimeoutMs = o.responseTimeoutMs ?? 300_000;
    this.idleTimeoutMs = o.idleTimeoutMs ?? 60_000;
    this.probePath = o.probePath ?? '/readyz';
    this.probeTimeoutMs = o.probeTimeoutMs ?? 2_000;
    this.fetchFn = fetchFn;
  }

  /** Whether requests to the endpoint carry a key of this app's own (GpuEndpointOptions.apiKey). */
  get hasKey(): boolean {
    return this.ownKey?.enabled === true;
  }

  /**
   * Whether an incoming request's Authorization header holds this endpoint's key (constant time):
   * then it was sent by an instance configured like this one (or by whoever holds the GPU key,
   * who may call the GPU directly anyway), which is what makes its x-bitnet-forwarded trustworthy.
   */
  async isOwnKey(authorization: string | undefined | null): Promise<boolean> {
    return this.ownKey !== undefined && (await this.ownKey.matches(authorization));
  }

  /** One health check: true when the GPU server answers 2xx in time. */
  async probe(): Promise<boolean> {
    const ac = new AbortController();
    const t = setTimeout(() => ac.abort(), this.probeTimeoutMs);
    try {
      const r = await this.fetchFn(this.url + this.probePath, { signal: ac.signal });
      await r.body?.cancel().catch(() => {});
      return r.ok;
    } catch {
      return false;
    } finally {
      clearTimeout(t);
    }
  }

  async forward(
    req: ForwardRequest,
    clientSignal: AbortSignal | undefined,
    hooks: ForwardHooks,
  ): Promise<ForwardResult> {
    const { ac, unlink } = linkSignals(clientSignal);
    const firstByteMs = req.stream ? this.firstByteTimeoutMs : this.responseTimeoutMs;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      ac.abort(BitNetError.Timeout('GPU_TIMEOUT', `the GPU endpoint sent nothing within ${firstByteMs} ms`));
    }, firstByteMs);
    const fail = (
      phase: ForwardPhase,
      message: string,
      countsAsFailure = true,
      retryAfterSeconds?: number,
    ): ForwardResult => {
      clearTimeout(timer);
      unlink();
      if (clientSignal?.aborted) throw BitNetError.Timeout('CANCELLED', 'the client went away');
      const error =
        phase === 'timeout'
          ? BitNetError.Timeout('GPU_TIMEOUT', message, { timeoutMs: firstByteMs })
          : BitNetError.Io('GPU_UNAVAILABLE', message, { phase });
      return { ok: false, phase, error, countsAsFailure, retryAfterSeconds };
    };

    const headers = new Headers({
      'content-type': 'application/json',
      'x-bitnet-forwarded': String(req.hops),
      'x-request-id': req.requestId,
    });
    if (req.accept) headers.set('accept', req.accept);
    if (this.key) headers.set('authorization', `Bearer ${this.key}`);

    let res: Response;
    try {
      res = await this.fetchFn(this.url + req.path, { method: 'POST', headers, body: req.body, signal: ac.signal });
    } catch (e) {
      return timedOut
        ? fail('timeout', `GPU endpoint sent no answer within ${firstByteMs / 1000} s`)
        : fail('connect', `GPU endpoint unreachable: ${(e as Error)?.message ?? e}`);
    }
    // 5xx: broken; 429: busy; 401/403: this app's GPU key is wrong (the client's was checked here).
    if (res.status >= 500 || res.status === 429 || res.status === 401 || res.status === 403) {
      await res.body?.cancel().catch(() => {});
      const ms = res.status === 429 || res.status === 503 ? retryAfterMs(res.headers.get('retry-after')) : undefined;
      const retry = ms === undefined ? undefined : Math.ceil(ms / 1000);
      return fail('status', `GPU endpoint answered ${res.status}`, res.status !== 429, retry);
    }

    const reader = res.body?.getReader();
    let first: ReadableStreamReadResult<Uint8Array> | undefined;
    if (reader) {
      try {
        first = await reader.read();
      } catch (e) {
        await reader.cancel().catch(() => {});
        return timedOut
          ? fail('timeout', `GPU endpoint sent no answer within ${firstByteMs / 1000} s`)
          : fail('first_byte', `GPU endpoint failed before its first byte: ${(e as Error)?.message ?? e}`);
      }
    }
    clearTimeout(timer);

    const out = new Headers();
    for (const k of RESPONSE_HEADERS) {
      const v = res.headers.get(k);
      if (v !== null) out.set(k, v);
    }
    const sse = (res.headers.get('content-type') ?? '').startsWith('text/event-stream');
    let ended = false;
    const end = (how: 'done' | 'cancelled' | 'error') => {
      if (ended) return;
      ended = true;
      unlink();
      hooks.onEnd(how);
    };
    if (!reader || !first || first.done) {
      reader?.releaseLock();
      end('done');
      return { ok: true, response: new Response(null, { status: res.status, headers: out }) };
    }
    const tail = new SseTail();
    const head = first.value;
    if (sse) tail.feed(head);
    const idleMs = this.idleTimeoutMs;
    const stalled = () =>
      BitNetError.Timeout('GPU_TIMEOUT', `the GPU endpoint sent nothing for ${idleMs / 1000} s mid-stream`);
    // A failure after the first byte: this wire's failure event where the stream is at an event
    // boundary, else the connection is cut (a half-written event cannot be finished).
    const failMidStream = (controller: ReadableStreamDefaultController<Uint8Array>, e: unknown, message: string) => {
      hooks.onMidStreamFailure(e);
      if (sse && tail.atBoundary) {
        const err = BitNetError.Io('GPU_STREAM_FAILED', message);
        controller.enqueue(enc.encode(failureEvent(req.wire, err, tail)));
        controller.close();
      } else controller.error(e);
      end('error');
    };
    const stream = new ReadableStream<Uint8Array>(
      {
        start(controller) {
          controller.enqueue(head);
        },
        async pull(controller) {
          try {
            const r = await readWithin(reader, idleMs, stalled);
            if (r.done) {
              if (sse && !streamFinished(req.wire, tail)) {
                failMidStream(
                  controller,
                  new Error('the GPU stream ended early'),
                  'the GPU endpoint ended its stream before the final event',
                );
                return;
              }
              controller.close();
              end('done');
              return;
            }
            if (sse) tail.feed(r.value);
            controller.enqueue(r.value);
          } catch (e) {
            if (clientSignal?.aborted) {
              controller.error(e);
              end('cancelled');
              return;
            }
            // a stall: stop the upstream request too
            ac.abort(e);
            await reader.cancel(e).catch(() => {});
            const stall = e instanceof BitNetError && e.code === 'GPU_TIMEOUT';
            failMidStream(controller, e, stall ? e.message : 'the GPU endpoint failed mid-stream');
          }
        },
        async cancel(reason) {
          end('cancelled');
          await reader.cancel(reason).catch(() => {});
          ac.abort();
        },
      },
      { highWaterMark: 0 },
    );
    return { ok: true, response: new Response(stream, { status: res.status, headers: out }) };
  }
}
