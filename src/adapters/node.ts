/**
 * bitnet-edge/node: the app on Node's HTTP server (@hono/node-server). Backs `bitnet serve`.
 *
 * Without an API key the server binds to 127.0.0.1 whatever host was asked for, and warns:
 * an unauthenticated model server is for the local machine only.
 *
 * Receiving a request (headers and body) must finish within `requestTimeoutMs` (default 30 s;
 * Node's `requestTimeout`/`headersTimeout`), else the client gets 408 and the connection closes.
 * The limit covers receiving the request only: a response, an SSE stream included, may last as
 * long as it needs.
 *
 * Shutdown: `shutdown(graceMs)` drains: the server stops accepting connections, `/readyz`
 * answers 503 on the connections still open, and requests in flight run to their end for up to
 * `graceMs`. What is left then is cut: an SSE stream gets a last error event (code
 * `SHUTTING_DOWN`, in the stream's own format) and ends, a request whose response has not begun
 * gets 503 `SHUTTING_DOWN` with `Retry-After`, and their generations are aborted; then every
 * connection is closed. `close()` cuts at once.
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type Http2Bindings, type HttpBindings, serve } from '@hono/node-server';
import { BitNetError } from '../errors.ts';
import { type AppDeps, createApp } from '../http/app.ts';
import { parseKeyList } from '../http/auth.ts';
import { answerClientError } from './node-client-error.ts';

export const LOOPBACK = '127.0.0.1';

/** Default limit on receiving one request, headers and body (ms). */
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;
/** Default time in-flight requests get to finish on shutdown (ms). */
export const DEFAULT_SHUTDOWN_GRACE_MS = 10_000;
/** After the grace: how long the cut responses (error events, 503s) get to go out before the sockets close. */
const FLUSH_MS = 1_000;

export interface NodeServeOptions {
  host?: string;
  /** 0 = any free port (the chosen one is in the result). Default 8080. */
  port?: number;
  warn?: (message: string) => void;
  /**
   * Limit on receiving one request, headers and body, in ms (default 30 000; 0 = none). A client
   * slower than this gets 408. Responses are not limited by it.
   */
  requestTimeoutMs?: number;
}

export interface ShutdownResult {
  /** Requests that finished during the grace period. */
  finished: number;
  /** Requests cut when the grace period ran out (or close() was called). */
  cut: number;
}

export interface RunningServer {
  url: string;
  host: string;
  port: number;
  /** The limit on receiving one request, in ms (0: none), as the server applies it. */
  readonly requestTimeoutMs: number;
  /** Requests being answered now (their responses not yet finished). */
  readonly inFlight: number;
  /** True once shutdown() or close() has begun. */
  readonly draining: boolean;
  /**
   * Graceful shutdown: stops accepting, lets in-flight requests finish for up to `graceMs`
   * (default 10 000), then cuts the rest (see the module comment). Resolves when closed. A second
   * call returns the same promise; close() meanwhile cuts at once.
   */
  shutdown(graceMs?: number): Promise<ShutdownResult>;
  /** Stops accepting, cuts open requests (streams get their error event) and resolves when closed. */
  close(): Promise<void>;
}

/** Keys from --api-key flags plus the comma-separated BITNET_API_KEYS variable. */
export function resolveApiKeys(
  flags: readonly string[] = [],
  env: Record<string, string | undefined> = process.env,
): string[] {
  return [...new Set([...flags.map((k) => k.trim()).filter(Boolean), ...parseKeyList(env.BITNET_API_KEYS)])];
}

/** The host to bind: as asked with keys; loopback only without. */
export function safeHost(host: string | undefined, hasKeys: boolean, warn: (m: string) => void = console.warn): string {
  const asked = host ?? LOOPBACK;
  if (hasKeys) return asked;
  if (asked !== LOOPBACK && asked !== 'localhost' && asked !== '::1') {
    warn(
      `no API key configured: binding to ${LOOPBACK} instead of ${asked} (set --api-key or BITNET_API_KEYS to serve other hosts)`,
    );
  } else {
    warn('no API key configured: serving without authentication on the loopback interface only');
  }
  return LOOPBACK;
}

/** The reason in-flight requests are aborted with when the grace period runs out. */
function shuttingDown(): BitNetError {
  return BitNetError.Capacity('SHUTTING_DOWN', 'the server is shutting down; retry the request', {
    retryAfterSeconds: 1,
  });
}

/** A Request the app sees, with a signal this adapter can abort as well as the client. */
function withSignal(req: Request, signal: AbortSignal): Request {
  const hasBody = req.method !== 'GET' && req.method !== 'HEAD';
  return new Request(req.url, {
    method: req.method,
    headers: req.headers,
    body: hasBody ? req.body : undefined,
    signal: AbortSignal.any([req.signal, signal]),
    ...(hasBody ? { duplex: 'half' } : {}),
  } as RequestInit);
}

export async function serveNode(deps: AppDeps, opts: NodeServeOptions = {}): Promise<RunningServer> {
  const host = safeHost(opts.host, (deps.apiKeys?.length ?? 0) > 0, opts.warn);
  const app = createApp(deps);
  const requestTimeout = Math.max(0, opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS);
  // one controller per request being answered: aborting it (reason SHUTTING_DOWN) cuts the request
  const flights = new Set<AbortController>();
  let draining = false;
  let finished = 0;
  let server: Server;
  let onIdle: (() => void) | undefined; // set while shutdown waits for the last request

  const handle = (req: Request, env: HttpBindings | Http2Bindings) => {
    const outgoing = (env as HttpBindings).outgoing; // an HTTP/1 server (serve() without createServer)
    if (draining && new URL(req.url).pathname === '/readyz') {
      outgoing.shouldKeepAlive = false;
      return Response.json({ status: 'draining' }, { status: 503, headers: { 'retry-after': '1' } });
    }
    const flight = new AbortController();
    flights.add(flight);
    outgoing.once('close', () => {
      flights.delete(flight);
      if (draining) {
        if (!flight.signal.aborted) finished++;
        // keep-alive connections whose response just ended: close them now, not after keepAliveTimeout
        setImmediate(() => server.closeIdleConnections());
        if (flights.size === 0) onIdle?.();
      }
    });
    // a request answered while draining closes its connection when done
    if (draining) outgoing.shouldKeepAlive = false;
    // Aborted with SHUTTING_DOWN, the app answers it itself: a stream ends with an error event in
    // its own format, a response not yet begun is a 503 with Retry-After (src/http/local.ts).
    return Promise.resolve(app.fetch(withSignal(req, flight.signal), env)).then((res) => {
      if (draining) outgoing.shouldKeepAlive = false;
      return res;
    });
  };

  server = await new Promise<Server>((resolve, reject) => {
    const s = serve(
      {
        fetch: handle,
        hostname: host,
        port: opts.port ?? 8080,
        overrideGlobalObjects: false,
        serverOptions: {
          requestTimeout,
          headersTimeout: requestTimeout,
          // Node checks the two timeouts on this interval (default 30 s, which would double a 30 s limit)
          ...(requestTimeout > 0
            ? { connectionsCheckingInterval: Math.min(1000, Math.max(50, Math.floor(requestTimeout / 10))) }
            : {}),
        },
      },
      () => resolve(s as Server),
    ) as Server;
    s.once('error', reject);
    // Parser errors and request timeouts get the app's JSON error body (node-client-error.ts).
    s.on('clientError', answerClientError);
  });
  const port = (server.address() as AddressInfo).port;

  let closing: Promise<ShutdownResult> | undefined;
  let cutAll: (() => void) | undefined;

  const shutdown = (graceMs = DEFAULT_SHUTDOWN_GRACE_MS): Promise<ShutdownResult> => {
    closing ??= (async () => {
      draining = true;
      const closed = new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
      closed.catch(() => {}); // awaited below, after the grace: no unhandled rejection meanwhile
      server.closeIdleConnections();
      const idle = () =>
        new Promise<void>((resolve) => {
          if (flights.size === 0) resolve();
          else onIdle = resolve;
        });
      let cut = 0;
      if (flights.size > 0) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const graceOver = new Promise<void>((resolve) => {
          cutAll = resolve;
          // (setTimeout takes at most 2^31-1 ms; more would fire at once)
          timer = setTimeout(resolve, Math.min(2 ** 31 - 1, Math.max(0, graceMs)));
        });
        await Promise.race([idle(), graceOver]);
        clearTimeout(timer);
        if (flights.size > 0) {
          cut = flights.size;
          for (const f of [...flights]) f.abort(shuttingDown());
          // let the error events and 503s go out, then close whatever is left
          let flush: ReturnType<typeof setTimeout> | undefined;
          await Promise.race([idle(), new Promise<void>((r) => (flush = setTimeout(r, FLUSH_MS)))]);
          clearTimeout(flush);
        }
      }
      onIdle = undefined;
      server.closeAllConnections();
      await closed;
      return { finished, cut };
    })();
    return closing;
  };

  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`,
    host,
    port,
    requestTimeoutMs: server.requestTimeout,
    get inFlight() {
      return flights.size;
    },
    get draining() {
      return draining;
    },
    shutdown,
    close: async () => {
      const p = shutdown(0);
      cutAll?.();
      await p;
    },
  };
}
