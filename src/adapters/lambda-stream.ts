/**
 * A fetch handler (Request → Response) as a Lambda response-streaming handler (Function URL with
 * InvokeMode RESPONSE_STREAM), through the Node runtimes' `awslambda` global: `streamifyResponse`
 * and `HttpResponseStream.from(stream, {statusCode, headers, cookies})`.
 *
 * In place of hono/aws-lambda's `streamHandle` (deprecated), which copied the body with
 * `pipeline` and never cancelled it: a client that went away mid-stream left the body's producer
 * (a generation holding a limiter slot) waiting forever. Here:
 *   - the Request carries an AbortSignal, aborted when the response stream errors or closes before
 *     the response is complete (a non-streaming generation stops; a queued request leaves the queue);
 *   - the body is pumped chunk by chunk (with backpressure) and its reader is cancelled at once when
 *     the response stream errors or closes, so the SSE stream's cancel runs and frees the slot;
 *   - an error before the response (a malformed event, e.g. a GET with a body or a body that is not
 *     base64 though isBase64Encoded says so) is answered with a real status (400 for a malformed
 *     request, 500 otherwise) and the app's JSON error body, through HttpResponseStream.from;
 *   - a body that fails after the status went out cuts the response short (the stream is destroyed)
 *     instead of appending text to it.
 *
 * Events: Function URL / API Gateway HTTP API (payload 2.0: rawPath, rawQueryString, cookies),
 * API Gateway REST (1.0: path, (multiValue)queryStringParameters, (multiValue)headers) and ALB
 * (requestContext.elb; query values passed as they came). Header values with non-ASCII characters
 * are percent-encoded (as Hono did; Headers takes Latin-1 only). A missing body is no body.
 */
import type { Writable } from 'node:stream';
import { BitNetError, isBitNetError } from '../errors.ts';
import { errorResponse } from '../http/errors.ts';
import { requestIdOf } from '../http/request-id.ts';

/** What the runtime hands the handler as its response stream (a Node writable). */
export type LambdaResponseStream = Writable;

export interface HttpResponseMetadata {
  statusCode: number;
  headers: Record<string, string>;
  cookies?: string[];
}

/** The part of the Node runtimes' `awslambda` global used here. */
export interface AwsLambdaGlobal {
  streamifyResponse<H>(handler: H): H;
  HttpResponseStream: {
    from(stream: LambdaResponseStream, metadata: HttpResponseMetadata): LambdaResponseStream;
  };
}

export type LambdaStreamingHandler = (event: unknown, stream: LambdaResponseStream, context: unknown) => Promise<void>;

export type FetchHandler = (request: Request, env: Record<string, unknown>) => Response | Promise<Response>;

export function awslambdaGlobal(): AwsLambdaGlobal | undefined {
  return (globalThis as { awslambda?: AwsLambdaGlobal }).awslambda;
}

// ---------------------------------------------------------------------------------------------
// event → Request

type Dict<T> = Record<string, T | undefined> | null | undefined;

interface LambdaEvent {
  version?: string;
  rawPath?: string;
  rawQueryString?: string;
  cookies?: string[];
  path?: string;
  httpMethod?: string;
  headers?: Dict<string>;
  multiValueHeaders?: Dict<string[]>;
  queryStringParameters?: Dict<string>;
  multiValueQueryStringParameters?: Dict<string[]>;
  requestContext?: { domainName?: string; http?: { method?: string }; elb?: unknown };
  body?: string | null;
  isBase64Encoded?: boolean;
}

const malformed = (message: string, cause?: unknown) =>
  BitNetError.Config('INVALID_REQUEST', `malformed request: ${message}`, {}, cause);

/** Latin-1 only in Headers: a value with anything beyond ASCII is sent percent-encoded. */
const headerValue = (v: string) => ([...v].some((ch) => ch.charCodeAt(0) > 0x7f) ? encodeURIComponent(v) : v);

function decodeBase64(s: string): Uint8Array {
  let bin: string;
  try {
    bin = atob(s);
  } catch (e) {
    throw malformed('the body is not valid base64 (isBase64Encoded is true)', e);
  }
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function isV2(e: LambdaEvent): boolean {
  return typeof e.rawPath === 'string' && e.requestContext?.http !== undefined;
}

function queryOf(e: LambdaEvent): string {
  if (isV2(e)) return e.rawQueryString ?? '';
  const alb = e.requestContext?.elb !== undefined;
  const enc = alb ? (s: string) => s : encodeURIComponent;
  const multi = e.multiValueQueryStringParameters;
  const pairs: string[] = [];
  if (multi) {
    for (const [k, vs] of Object.entries(multi)) for (const v of vs ?? []) pairs.push(`${enc(k)}=${enc(v)}`);
  } else {
    for (const [k, v] of Object.entries(e.queryStringParameters ?? {}))
      if (v !== undefined && v !== null) pairs.push(`${enc(k)}=${enc(v)}`);
  }
  return pairs.join('&');
}

function headersOf(e: LambdaEvent): Headers {
  const h = new Headers();
  if (isV2(e) && Array.isArray(e.cookies) && e.cookies.length) h.set('cookie', e.cookies.join('; '));
  for (const [k, vs] of Object.entries(e.multiValueHeaders ?? {})) {
    if (k.toLowerCase() === 'cookie') {
      if (vs?.length) h.set('cookie', headerValue(vs.join('; ')));
    } else for (const v of vs ?? []) h.append(k, headerValue(v));
  }
  for (const [k, v] of Object.entries(e.headers ?? {}))
    if (typeof v === 'string' && v !== '' && !h.has(k)) h.set(k, headerValue(v));
  return h;
}

/** The Request for a Lambda HTTP event. A malformed event is a Config INVALID_REQUEST (400). */
export function eventToRequest(event: unknown, signal?: AbortSignal): Request {
  if (typeof event !== 'object' || event === null) throw malformed('the event is not an HTTP event');
  const e = event as LambdaEvent;
  try {
    const v2 = isV2(e);
    const method = (v2 ? e.requestContext?.http?.method : e.httpMethod) ?? 'GET';
    const path = (v2 ? e.rawPath : e.path) ?? '/';
    const headers = headersOf(e);
    const host = e.requestContext?.domainName ?? headers.get('host') ?? 'localhost';
    const query = queryOf(e);
    const url = `https://${host}${path.startsWith('/') ? '' : '/'}${path}${query ? `?${query}` : ''}`;
    let body: Uint8Array<ArrayBuffer> | undefined;
    if (typeof e.body === 'string' && e.body !== '') {
      body = (e.isBase64Encoded ? decodeBase64(e.body) : new TextEncoder().encode(e.body)) as Uint8Array<ArrayBuffer>;
      headers.set('content-length', String(body.length));
    }
    return new Request(url, { method, headers, body, signal });
  } catch (err) {
    if (isBitNetError(err)) throw err;
    // new Request/new Headers/URL: a GET or HEAD with a body, a bad method, header or host
    throw malformed((err as Error)?.message ?? String(err), err);
  }
}

// ---------------------------------------------------------------------------------------------
// Response → response stream

function metadataOf(res: Response): HttpResponseMetadata {
  const headers: Record<string, string> = {};
  res.headers.forEach((v, k) => {
    if (k !== 'set-cookie') headers[k] = v;
  });
  const cookies = res.headers.getSetCookie();
  return cookies.length ? { statusCode: res.status, headers, cookies } : { statusCode: res.status, headers };
}

/**
 * Watches a response stream for the end of the client: an 'error', or a 'close' before the
 * response was ended by us. `onGone` runs at most once.
 */
function watch(stream: LambdaResponseStream, onGone: (reason: unknown) => void) {
  let done = false;
  let gone = false;
  const fire = (reason: unknown) => {
    if (done || gone) return;
    gone = true;
    onGone(reason);
  };
  const onError = (err: unknown) => fire(err);
  const onClose = () => fire(new Error('the response stream closed before the response ended'));
  const watched: LambdaResponseStream[] = [];
  const add = (s: LambdaResponseStream) => {
    if (watched.includes(s)) return;
    watched.push(s);
    s.on('error', onError);
    s.on('close', onClose);
    if (s.destroyed) fire(new Error('the response stream was already closed'));
  };
  add(stream);
  return {
    add,
    get gone() {
      return gone;
    },
    /** The response ended normally: a later 'close' is no disconnect. */
    finish() {
      done = true;
    },
    stop() {
      for (const s of watched) {
        s.off('error', onError);
        s.off('close', onClose);
        // An 'error' after the handler returned (a destroy's, a late disconnect) must not be an
        // unhandled 'error' event, which would end the process.
        s.on('error', ignore);
      }
    },
  };
}

const ignore = () => {};

/** Resolves on 'drain', or once the client is gone (checked by the caller). */
function drained(out: LambdaResponseStream, wake: Set<() => void>): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      out.off('drain', done);
      wake.delete(done);
      resolve();
    };
    out.on('drain', done);
    wake.add(done);
  });
}

/** The fetch handler as a response-streaming Lambda handler. Needs the `awslambda` global. */
export function streamingHandler(fetch: FetchHandler): LambdaStreamingHandler {
  const rt = awslambdaGlobal();
  if (!rt) throw new Error('bitnet-edge/aws-lambda: the awslambda global is missing (not in a Lambda Node runtime)');

  return rt.streamifyResponse(async (event: unknown, stream: LambdaResponseStream, context: unknown) => {
    const ac = new AbortController();
    let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
    const wake = new Set<() => void>();
    // The client went away (or the runtime's stream broke): stop the request's work at once.
    const client = watch(stream, (reason) => {
      ac.abort(reason);
      reader?.cancel(reason).catch(() => {});
      for (const w of [...wake]) w();
    });
    try {
      let res: Response;
      try {
        const request = eventToRequest(event, ac.signal);
        const requestContext = (event as LambdaEvent).requestContext;
        res = await fetch(request, { event, requestContext, context });
      } catch (e) {
        if (!isBitNetError(e)) console.error('bitnet: the request failed before its response:', e);
        const id = (event as LambdaEvent | null)?.headers?.['x-request-id'];
        res = errorResponse(e, { 'x-bitnet-route': 'edge', 'x-request-id': requestIdOf(id) });
      }
      if (client.gone) {
        await res.body?.cancel().catch(() => {});
        return;
      }
      const out = rt.HttpResponseStream.from(stream, metadataOf(res));
      client.add(out);
      if (!res.body) {
        // One write, empty: the runtime sends the status and headers before the first write.
        out.write('');
        client.finish();
        out.end();
        return;
      }
      reader = res.body.getReader();
      try {
        for (;;) {
          const r = await reader.read();
          if (r.done || client.gone) break;
          if (!out.write(r.value) && !client.gone) await drained(out, wake);
          if (client.gone) break;
        }
      } catch (e) {
        // The body failed after the status went out: cut the response short, visibly.
        if (!client.gone) {
          console.error('bitnet: the response body failed mid-stream:', e);
          client.finish();
          out.destroy(e instanceof Error ? e : new Error(String(e)));
        }
        return;
      }
      if (client.gone) return;
      client.finish();
      out.end();
    } finally {
      client.stop();
      if (client.gone) reader?.cancel().catch(() => {});
    }
  });
}
