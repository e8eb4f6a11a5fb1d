/**
 * The GPU endpoint client: forwards a request to the GPU server (this same app running the CUDA
 * backend) with the GPU's own key, and streams its response back untouched.
 *
 * "Before the first byte" is the window in which the request can still be served elsewhere:
 * a connection error, a 5xx, 429, 401 or 403 status, a body that fails before its first chunk, or no
 * first chunk within `firstByteTimeoutMs`. After the first chunk the bytes are passed through
 * as they arrive (no buffering, the consumer's reads drive the upstream reads); a failure then
 * can only end the stream: for SSE at an event boundary, with a final `data: {"error": …}`
 * event so the client sees an error rather than a short answer.
 */
import { BitNetError } from '../errors.ts';
import { ApiKeys } from './auth.ts';

export interface GpuEndpointOptions {
  /** Base URL of the GPU server, e.g. https://gpu.example.com (paths are appended). */
  url: string;
  /** The GPU server's own API key (never the client's). */
  apiKey?: string;
  /** Time allowed until the first response byte (default 30 s). */
  firstByteTimeoutMs?: number;
  /** Health path probed while the circuit is half-open (default /readyz). */
  probePath?: string;
  probeTimeoutMs?: number;
}

export type ForwardResult =
  | { ok: true; response: Response }
  | { ok: false; phase: 'connect' | 'status' | 'first_byte' | 'timeout'; error: BitNetError; countsAsFailure: boolean };

export interface ForwardHooks {
  /** The upstream failed after the first byte. */
  onMidStreamFailure(e: unknown): void;
  /** The passed-through body ended, however it ended. */
  onEnd(how: 'done' | 'cancelled' | 'error'): void;
}

const HOP_BY_HOP = [
  'connection',
  'keep-alive',
  'transfer-encoding',
  'content-length',
  'content-encoding',
  'upgrade',
  'trailer',
  'te',
  'proxy-authenticate',
  'proxy-authorization',
];
const enc = new TextEncoder();

function linkSignals(client: AbortSignal | undefined): { ac: AbortController; unlink: () => void } {
  const ac = new AbortController();
  if (!client) return { ac, unlink: () => {} };
  const on = () => ac.abort(client.reason);
  if (client.aborted) on();
  else client.addEventListener('abort', on, { once: true });
  return { ac, unlink: () => client.removeEventListener('abort', on) };
}

export class GpuEndpoint {
  readonly url: string;
  private readonly key: string | undefined;
  private readonly ownKey: ApiKeys | undefined;
  private readonly firstByteTimeoutMs: number;
  private readonly probePath: string;
  private readonly probeTimeoutMs: number;
  private readonly fetchFn: typeof fetch;

  constructor(o: GpuEndpointOptions, fetchFn: typeof fetch = (...a) => fetch(...a)) {
    this.url = o.url.replace(/\/+$/, '');
    this.key = o.apiKey;
    this.ownKey = o.apiKey ? new ApiKeys([o.apiKey]) : undefined;
    this.firstByteTimeoutMs = o.firstByteTimeoutMs ?? 30_000;
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
    path: string,
    body: string,
    reqHeaders: Headers,
    clientSignal: AbortSignal | undefined,
    hooks: ForwardHooks,
    /** How many times the request will have been forwarded once this hop is made (x-bitnet-forwarded). */
    hops = 1,
  ): Promise<ForwardResult> {
    const { ac, unlink } = linkSignals(clientSignal);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      ac.abort(
        BitNetError.Timeout('GPU_TIMEOUT', `the GPU endpoint sent nothing within ${this.firstByteTimeoutMs} ms`),
      );
    }, this.firstByteTimeoutMs);
    const fail = (
      phase: 'connect' | 'status' | 'first_byte' | 'timeout',
      message: string,
      countsAsFailure = true,
    ): ForwardResult => {
      clearTimeout(timer);
      unlink();
      if (clientSignal?.aborted) throw BitNetError.Timeout('CANCELLED', 'the client went away');
      const error =
        phase === 'timeout'
          ? BitNetError.Timeout('GPU_TIMEOUT', message)
          : BitNetError.Io('GPU_UNAVAILABLE', message, { phase });
      return { ok: false, phase, error, countsAsFailure };
    };

    const headers = new Headers({ 'content-type': 'application/json', 'x-bitnet-forwarded': String(hops) });
    for (const h of ['accept', 'x-request-id']) {
      const v = reqHeaders.get(h);
      if (v) headers.set(h, v);
    }
    if (this.key) headers.set('authorization', `Bearer ${this.key}`);

    let res: Response;
    try {
      res = await this.fetchFn(this.url + path, { method: 'POST', headers, body, signal: ac.signal });
    } catch (e) {
      return timedOut
        ? fail('timeout', `GPU endpoint timed out before responding`)
        : fail('connect', `GPU endpoint unreachable: ${(e as Error)?.message ?? e}`);
    }
    // 5xx: broken; 429: busy; 401/403: this app's GPU key is wrong (the client's was checked here).
    if (res.status >= 500 || res.status === 429 || res.status === 401 || res.status === 403) {
      await res.body?.cancel().catch(() => {});
      return fail('status', `GPU endpoint answered ${res.status}`, res.status !== 429);
    }

    const reader = res.body?.getReader();
    let first: ReadableStreamReadResult<Uint8Array> | undefined;
    if (reader) {
      try {
        first = await reader.read();
      } catch (e) {
        return timedOut
          ? fail('timeout', 'GPU endpoint timed out before its first byte')
          : fail('first_byte', `GPU endpoint failed before its first byte: ${(e as Error)?.message ?? e}`);
      }
    }
    clearTimeout(timer);

    const out = new Headers();
    res.headers.forEach((v, k) => {
      if (!HOP_BY_HOP.includes(k)) out.set(k, v);
    });
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
    // SSE events end with a blank line; a failure is reported in-band only at such a boundary.
    let tail = '';
    const remember = (chunk: Uint8Array) => {
      if (sse) tail = (tail + new TextDecoder().decode(chunk.subarray(Math.max(0, chunk.length - 2)))).slice(-2);
    };
    const head = first.value;
    remember(head);
    const stream = new ReadableStream<Uint8Array>(
      {
        start(controller) {
          controller.enqueue(head);
        },
        async pull(controller) {
          try {
            const r = await reader.read();
            if (r.done) {
              controller.close();
              end('done');
              return;
            }
            remember(r.value);
            controller.enqueue(r.value);
          } catch (e) {
            if (clientSignal?.aborted) {
              controller.error(e);
              end('cancelled');
              return;
            }
            hooks.onMidStreamFailure(e);
            if (sse && tail === '\n\n') {
              const err = {
                error: {
                  message: 'the GPU endpoint failed mid-stream',
                  type: 'server_error',
                  param: null,
                  code: 'GPU_STREAM_FAILED',
                },
              };
              controller.enqueue(enc.encode(`data: ${JSON.stringify(err)}\n\n`));
              controller.close();
            } else controller.error(e);
            end('error');
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
