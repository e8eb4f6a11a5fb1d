/**
 * The HTTP half of the hub client (src/sources/hf-hub.ts): the endpoint (`HF_ENDPOINT`), requests
 * with the token, redirects followed by hand, the hub's error headers mapped to typed errors, and
 * retries with `Retry-After`.
 *
 * Redirects are followed one hop at a time (`redirect: 'manual'`) so the hub's own answer to a
 * `/resolve/` request is seen even when the bytes come from a CDN on another host: its
 * `X-Linked-Etag` (the LFS sha256), `X-Linked-Size` and `X-Repo-Commit` are collected on the way.
 * The token (or the endpoint's `user:password@`, as Basic auth) is only sent to the endpoint's
 * origin, never to the CDN. URLs in messages and details never carry a password or a signed query.
 */
import { BitNetError } from '../errors.ts';
import { abortError, backoffDelay, type StallTimer } from './retry.ts';

const DEFAULT_ENDPOINT = 'https://huggingface.co';
/** Retry-After values above this are cut to it (ms). */
const MAX_RETRY_AFTER_MS = 30_000;

export interface Endpoint {
  /** scheme://host[:port][/path], no credentials, no trailing slash. */
  base: string;
  origin: string;
  /** `base` with the password replaced by `***`: what messages show. */
  display: string;
  /** `Basic …` from the endpoint's `user:password@`, if any. */
  basicAuth?: string;
}

/** Replaces the password of any `scheme://user:password@` in `s` with `***`. */
export function redact(s: string): string {
  return s.replace(/(\/\/[^/@\s:]*):[^/@\s]*@/g, '$1:***@');
}

/**
 * The hub endpoint: `endpoint`, else `$HF_ENDPOINT`, else huggingface.co (an empty string counts as
 * unset). Anything but an absolute http(s) URL is `BAD_ENDPOINT` (kind Config).
 */
export function parseEndpoint(endpoint?: string): Endpoint {
  const raw = endpoint || process.env.HF_ENDPOINT || DEFAULT_ENDPOINT;
  const bad = (why: string) =>
    BitNetError.Config('BAD_ENDPOINT', `hub endpoint "${redact(raw)}" ${why} (HF_ENDPOINT or the endpoint option)`, {
      endpoint: redact(raw),
    });
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw bad('is not a URL: expected http(s)://host[:port][/path]');
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw bad('is not an http(s) URL');
  if (u.search || u.hash) throw bad('has a query or fragment');
  let basicAuth: string | undefined;
  let display: string;
  const path = u.pathname.replace(/\/+$/, '');
  if (u.username || u.password) {
    let user: string;
    let pw: string;
    try {
      user = decodeURIComponent(u.username);
      pw = decodeURIComponent(u.password);
    } catch {
      throw bad('has a malformed %-escape in its user or password');
    }
    basicAuth = `Basic ${Buffer.from(`${user}:${pw}`).toString('base64')}`;
    display = `${u.protocol}//${u.username}${u.password ? ':***' : ''}@${u.host}${path}`;
  } else {
    display = `${u.origin}${path}`;
  }
  return { base: `${u.origin}${path}`, origin: u.origin, display, basicAuth };
}

/** What a request is about, for messages. */
export interface HubWhat {
  /** e.g. "listing acme/tiny". */
  what: string;
  repo: string;
  revision: string;
  file?: string;
}

export interface HubCtx {
  ep: Endpoint;
  token?: string;
  /** The caller's signal (aborts everything). */
  signal?: AbortSignal;
}

/** Headers of the hub's own answer on the way to the bytes (the first hop that has them). */
export interface Linked {
  etag?: string;
  size?: number;
  commit?: string;
}

/** A URL fit for a message: a host other than the endpoint's loses its query (signed URLs). */
export function showUrl(url: string, ep: Endpoint): string {
  try {
    const u = new URL(url);
    if (u.origin === ep.origin) return redact(url);
    return `${u.origin}${u.pathname}`;
  } catch {
    return redact(url);
  }
}

/** Retry-After (seconds or an HTTP date) in ms, capped at MAX_RETRY_AFTER_MS; undefined if absent or bad. */
export function parseRetryAfter(v: string | null | undefined, now = Date.now()): number | undefined {
  if (!v) return undefined;
  const t = v.trim();
  let ms: number;
  if (/^\d+(\.\d+)?$/.test(t)) ms = Number(t) * 1000;
  else {
    const d = Date.parse(t);
    if (Number.isNaN(d)) return undefined;
    ms = d - now;
  }
  return Math.min(MAX_RETRY_AFTER_MS, Math.max(0, Math.round(ms)));
}

function gatedMessage(w: HubWhat): string {
  return `${w.what}: ${w.repo} is gated: accept its license on the hub, and set HF_TOKEN to a token of that account`;
}

/** Maps a refusal from the hub (or its CDN) to a typed error. `retryable` marks 5xx/429/408. */
export function hubHttpError(res: Response, url: string, w: HubWhat, ctx: HubCtx, fromCdn: boolean): BitNetError {
  const status = res.status;
  const hubCode = res.headers.get('x-error-code') ?? undefined;
  const hubMessage = res.headers.get('x-error-message') ?? undefined;
  const shown = showUrl(url, ctx.ep);
  const details: Record<string, unknown> = { status, url: shown, repo: w.repo, revision: w.revision };
  if (w.file) details.file = w.file;
  if (hubCode) details.hubErrorCode = hubCode;
  if (hubMessage) details.hubMessage = hubMessage;
  const hasToken = !!(ctx.token || ctx.ep.basicAuth);
  if (fromCdn && (status === 401 || status === 403)) {
    return BitNetError.Io(
      'HUB_CDN_FORBIDDEN',
      `${w.what}: the download host ${new URL(url).host} refused the signed URL the hub gave (${status}); it may have expired`,
      details,
    );
  }
  if (hubCode === 'GatedRepo') return BitNetError.Io('HUB_UNAUTHORIZED', gatedMessage(w), details);
  if (status === 401 || status === 403) {
    const msg = hasToken
      ? `${w.what}: the hub refused the token (${status}): check that HF_TOKEN is valid and can read ${w.repo}`
      : status === 401
        ? `${w.what}: ${w.repo} not found, or private: check the repo id, or set HF_TOKEN (${status})`
        : `${w.what}: the hub refused access (${status}); set HF_TOKEN`;
    return BitNetError.Io('HUB_UNAUTHORIZED', msg, details);
  }
  if (status === 404) {
    let msg: string;
    if (hubCode === 'RevisionNotFound') msg = `${w.what}: ${w.repo} has no revision "${w.revision}"`;
    else if (hubCode === 'EntryNotFound')
      msg = `${w.what}: ${w.repo} has no file ${w.file ?? ''} at revision "${w.revision}"`;
    else if (hubCode === 'RepoNotFound' || hubCode === 'RepositoryNotFound')
      msg = `${w.what}: repository ${w.repo} not found on the hub${hasToken ? '' : ' (or it is private: set HF_TOKEN)'}`;
    else msg = `${w.what}: not found on the hub (404) at revision "${w.revision}"`;
    return BitNetError.Model('HUB_NOT_FOUND', msg, details);
  }
  const retryable = status >= 500 || status === 429 || status === 408;
  if (retryable) {
    details.retryable = true;
    const ra = parseRetryAfter(res.headers.get('retry-after'));
    if (ra !== undefined) details.retryAfterMs = ra;
  }
  return BitNetError.Io('HUB_HTTP_ERROR', `${w.what}: the hub answered ${status}`, details);
}

export interface HubResponse {
  res: Response;
  /** The URL that answered (after redirects). */
  url: string;
  linked: Linked;
  /** True when the answer came from another origin than the endpoint's (a CDN). */
  fromCdn: boolean;
}

const REDIRECT = new Set([301, 302, 303, 307, 308]);

/**
 * One request, redirects followed by hand (at most 10). `accept` lets a non-2xx status through
 * (416 on a resume). Network failures and stalls are retryable `HUB_UNREACHABLE` / `HUB_STALLED`.
 */
export async function hubRequest(
  url: string,
  ctx: HubCtx,
  w: HubWhat,
  extra: Record<string, string>,
  timer: StallTimer,
  accept: (status: number) => boolean = () => false,
): Promise<HubResponse> {
  const linked: Linked = {};
  let current = url;
  for (let hop = 0; hop <= 10; hop++) {
    const target = new URL(current);
    const sameOrigin = target.origin === ctx.ep.origin;
    const headers: Record<string, string> = { ...extra };
    if (sameOrigin) {
      if (ctx.token) headers.authorization = `Bearer ${ctx.token}`;
      else if (ctx.ep.basicAuth) headers.authorization = ctx.ep.basicAuth;
    }
    let res: Response;
    try {
      res = await fetch(current, { headers, signal: timer.signal, redirect: 'manual' });
    } catch (e) {
      if (ctx.signal?.aborted) throw abortError(ctx.signal);
      const shown = showUrl(current, ctx.ep);
      if (timer.stalled)
        throw BitNetError.Io(
          'HUB_STALLED',
          `${w.what}: no answer from ${target.host} in time`,
          { url: shown, retryable: true },
          e,
        );
      const cause = (e as { cause?: { code?: string; message?: string } }).cause;
      const why = cause?.code ?? cause?.message ?? (e as Error).message;
      throw BitNetError.Io(
        'HUB_UNREACHABLE',
        `${w.what}: cannot reach ${sameOrigin ? ctx.ep.display : target.host} (${why})`,
        { url: shown, retryable: true },
        e,
      );
    }
    timer.kick();
    const h = res.headers;
    const le = h.get('x-linked-etag');
    if (le && linked.etag === undefined) linked.etag = le.replace(/^(W\/)?"|"$/g, '');
    const ls = h.get('x-linked-size');
    if (ls && linked.size === undefined && /^\d+$/.test(ls)) linked.size = Number(ls);
    const rc = h.get('x-repo-commit');
    if (rc && linked.commit === undefined && /^[0-9a-f]{40}$/.test(rc)) linked.commit = rc;
    if (REDIRECT.has(res.status) && h.get('location')) {
      await res.body?.cancel().catch(() => {});
      let next: URL;
      try {
        next = new URL(h.get('location')!, current);
      } catch {
        next = new URL('invalid:');
      }
      if (next.protocol !== 'http:' && next.protocol !== 'https:')
        throw BitNetError.Io('HUB_BAD_RESPONSE', `${w.what}: the hub redirected to an unusable location`, {
          url: showUrl(current, ctx.ep),
        });
      current = next.href;
      continue;
    }
    const fromCdn = !sameOrigin;
    if (!res.ok && !accept(res.status)) {
      await res.body?.cancel().catch(() => {});
      throw hubHttpError(res, current, w, ctx, fromCdn);
    }
    return { res, url: current, linked, fromCdn };
  }
  throw BitNetError.Io('HUB_BAD_RESPONSE', `${w.what}: too many redirects`, { url: showUrl(url, ctx.ep) });
}

/** The wait before attempt `attempt + 1`: the server's Retry-After if it gave one, else jittered backoff. */
export function retryDelay(e: BitNetError, attempt: number): number {
  const ra = e.details.retryAfterMs;
  if (typeof ra === 'number') return ra;
  return backoffDelay(attempt, { baseDelayMs: 200, maxDelayMs: 5000 });
}
