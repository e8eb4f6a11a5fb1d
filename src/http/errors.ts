/**
 * The one place where errors become HTTP responses.
 *
 * Every failure the HTTP layer answers (validation, auth, limits, routing, and whatever the
 * engine throws) is a BitNetError by the time it gets here; `statusOf` maps its code (first) or
 * its kind (otherwise) to a status, and `errorResponse` writes the OpenAI-style body:
 *   { "error": { "message", "type", "param", "code" } }
 * `code` is the BitNetError code (SCREAMING_SNAKE), so clients can switch on it.
 */
import { BitNetError, isBitNetError } from '../errors.ts';

/** Status by BitNetError code; checked before the kind table. */
const STATUS_BY_CODE: Readonly<Record<string, number>> = {
  // request problems the client can fix
  INVALID_REQUEST: 400,
  MALFORMED_JSON: 400,
  PROMPT_TOO_LONG: 400,
  KV_SEQ_TOO_LONG: 400,
  UNAUTHORIZED: 401,
  NOT_FOUND: 404,
  MODEL_NOT_FOUND: 404,
  RESPONSE_NOT_STORED: 404,
  METHOD_NOT_ALLOWED: 405,
  // the request did not arrive in time (the Node server's --request-timeout)
  REQUEST_TIMEOUT: 408,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  HEADERS_TOO_LARGE: 431,
  // load: come back later
  QUEUE_FULL: 429,
  // the client went away; nobody reads this status, but logs and metrics do (nginx's 499)
  CANCELLED: 499,
  // the deployment's settings are wrong (an adapter's environment variable): the server's fault
  INVALID_ENV: 500,
  // the server cannot serve this request now
  KV_CACHE_FULL: 503,
  GPU_UNAVAILABLE: 503,
  MODEL_UNAVAILABLE: 503,
  // the server's chat template rewrites message content so that it cannot be kept apart from
  // control tokens (chat-template.ts): a property of the deployment's template, not of the request
  CHAT_TEMPLATE_CONTENT_UNLOCATED: 500,
  // the Node server is draining for shutdown (the adapter writes the same status itself)
  SHUTTING_DOWN: 503,
  // the Worker has no R2 binding to read its model from (like a missing model object)
  R2_BINDING_MISSING: 503,
  GPU_TIMEOUT: 504,
  // a request forwarded between instances too many times: a routing loop (Loop Detected)
  FORWARD_LOOP: 508,
};

/** Status by BitNetError kind, for codes not listed above. */
const STATUS_BY_KIND: Readonly<Record<string, number>> = {
  Config: 400,
  Tokenization: 400,
  Capacity: 429,
  Model: 500,
  Quantization: 500,
  Io: 503,
  Device: 503,
  Memory: 503,
  Timeout: 504,
};

export function statusOf(e: BitNetError): number {
  return STATUS_BY_CODE[e.code] ?? STATUS_BY_KIND[e.kind] ?? 500;
}

function typeOf(status: number): string {
  if (status === 401) return 'authentication_error';
  if (status === 429) return 'rate_limit_error';
  if (status >= 500) return 'server_error';
  if (status === 404) return 'not_found_error';
  return 'invalid_request_error';
}

/** Anything thrown → a BitNetError (unknown errors keep their message; their status is 500). */
export function toBitNetError(e: unknown): BitNetError {
  if (isBitNetError(e)) return e;
  // Hono's HTTPException (malformed JSON from the validator, body limit) carries a status.
  const status = (e as { status?: unknown })?.status;
  const message = e instanceof Error ? e.message : String(e);
  if (status === 400) return BitNetError.Config('MALFORMED_JSON', message || 'malformed request body');
  if (status === 413) return BitNetError.Config('PAYLOAD_TOO_LARGE', 'the request body is too large');
  if (e instanceof Error && e.name === 'AbortError')
    return BitNetError.Timeout('CANCELLED', 'the request was cancelled');
  return new BitNetError('Model', 'INTERNAL', message || 'internal error', {}, e);
}

export interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string };
}

export function errorBody(e: BitNetError): ErrorBody {
  const param = typeof e.details.param === 'string' ? e.details.param : null;
  return { error: { message: e.message, type: typeOf(statusOf(e)), param, code: e.code } };
}

/** The HTTP response for an error, with Retry-After / WWW-Authenticate where they apply. */
export function errorResponse(err: unknown, headers: Record<string, string> = {}): Response {
  const e = toBitNetError(err);
  const status = statusOf(e);
  const h = new Headers({ 'content-type': 'application/json; charset=utf-8', ...headers });
  const retry = e.details.retryAfterSeconds;
  if ((status === 429 || status === 503) && typeof retry === 'number')
    h.set('retry-after', String(Math.max(1, Math.ceil(retry))));
  if (status === 401) h.set('www-authenticate', 'Bearer');
  return new Response(JSON.stringify(errorBody(e)), { status, headers: h });
}

/** The table itself, for docs and tests: [code or kind, status]. */
export function statusTable(): { byCode: Record<string, number>; byKind: Record<string, number> } {
  return { byCode: { ...STATUS_BY_CODE }, byKind: { ...STATUS_BY_KIND } };
}
