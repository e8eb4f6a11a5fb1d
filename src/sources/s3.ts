/**
 * S3 ByteSource: `s3://bucket/key` through `@aws-sdk/client-s3` (Node, Lambda). Imported lazily by
 * `openSource`, so nothing else pulls in the AWS SDK.
 *
 * Open: `HeadObject` gives the size and the ETag, which is pinned. Reads: `GetObject` with
 * `Range: bytes=a-b` and `IfMatch: <etag>`; the answer must carry exactly that `Content-Range`, the
 * same total and the same ETag, or the read fails with `SOURCE_CHANGED` (s3rver ignores If-Match,
 * so the ETag is compared here as well). Long reads are split into parts; 5xx, throttling, network
 * errors, stalls and short bodies are retried with backoff and jitter (the SDK's own retries are
 * off so that every source retries the same way). Missing credentials (`S3_NO_CREDENTIALS`) and
 * refused ones (`ACCESS_DENIED`: 401/403, InvalidAccessKeyId, SignatureDoesNotMatch, …) fail at once.
 *
 * Endpoint: `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`, else AWS. Path-style addressing when
 * `BITNET_S3_FORCE_PATH_STYLE=1` (MinIO, s3rver, most self-hosted stores). Region: `AWS_REGION`,
 * `AWS_DEFAULT_REGION`, else us-east-1. Credentials: the SDK's default chain.
 *
 * s3rver mishandles `bytes=0-0` and suffix ranges (docs/platform-notes): this source never sends
 * either (a one-byte read at 0 asks for two bytes).
 */
import { GetObjectCommand, HeadObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { BitNetError } from '../errors.ts';
import { type ByteSource, checkRange, type ReadOptions } from './byte-source.ts';
import { decodeLocationPart } from './location.ts';
import {
  abortError,
  DEFAULT_RETRY,
  type RetryOptions,
  readBodyInto,
  StallTimer,
  throwIfAborted,
  transient,
  withRetry,
} from './retry.ts';

export interface S3SourceOptions {
  /** A client to use instead of one built from the environment (not destroyed by close). */
  client?: S3Client;
  region?: string;
  endpoint?: string;
  forcePathStyle?: boolean;
  retry?: RetryOptions;
  /** Largest single GetObject; longer reads are split (default 16 MiB). */
  maxRequestBytes?: number;
}

const CONTENT_RANGE = /^bytes (\d+)-(\d+)\/(\d+|\*)$/;

export function parseS3Url(url: string): { bucket: string; key: string } {
  const m = /^s3:\/\/([^/]+)\/(.+)$/i.exec(url);
  if (!m) throw BitNetError.Config('BAD_S3_URL', `"${url}" is not an s3://bucket/key URL`, { url });
  return {
    bucket: m[1],
    key: m[2]
      .split('/')
      .map((p) => decodeLocationPart(p, url))
      .join('/'),
  };
}

function env(name: string): string | undefined {
  return (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.[name];
}

/** Client settings from options and the environment. */
export function s3ClientConfig(o: S3SourceOptions = {}) {
  return {
    region: o.region ?? env('AWS_REGION') ?? env('AWS_DEFAULT_REGION') ?? 'us-east-1',
    endpoint: o.endpoint ?? env('AWS_ENDPOINT_URL_S3') ?? env('AWS_ENDPOINT_URL'),
    forcePathStyle: o.forcePathStyle ?? env('BITNET_S3_FORCE_PATH_STYLE') === '1',
  };
}

/** One client per configuration, shared by a manifest and its shards, destroyed with the last user. */
const clients = new Map<string, { client: S3Client; refs: number }>();

function acquire(o: S3SourceOptions): { client: S3Client; release: () => void } {
  if (o.client) return { client: o.client, release: () => {} };
  const cfg = s3ClientConfig(o);
  const key = JSON.stringify(cfg);
  let e = clients.get(key);
  if (!e) {
    const client = new S3Client({
      ...cfg,
      maxAttempts: 1,
      // Ranged GETs carry no whole-object checksum; integrity comes from the pack's sha256s.
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
    e = { client, refs: 0 };
    clients.set(key, e);
  }
  e.refs++;
  const entry = e;
  let released = false;
  return {
    client: entry.client,
    release: () => {
      if (released) return;
      released = true;
      if (--entry.refs === 0) {
        clients.delete(key);
        entry.client.destroy();
      }
    },
  };
}

interface SdkError {
  name?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
}

/** S3 error codes that mean the credentials are wrong, expired or not allowed. */
const AUTH_ERRORS = new Set([
  'AccessDenied',
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'ExpiredToken',
  'InvalidToken',
  'TokenRefreshRequired',
  'AuthorizationHeaderMalformed',
  'AllAccessDisabled',
  'AccountProblem',
  'Forbidden',
]);

function s3Error(e: unknown, where: string, timer: StallTimer, signal?: AbortSignal): BitNetError {
  if (signal?.aborted) return abortError(signal);
  if (timer.stalled) return transient('S3_STALLED', `${where}: the transfer stalled`, { url: where }, e);
  if (e instanceof BitNetError) return e;
  const x = e as SdkError;
  const status = x.$metadata?.httpStatusCode;
  const d = { url: where, status, name: x.name };
  if (status === 404 || x.name === 'NoSuchKey' || x.name === 'NotFound' || x.name === 'NoSuchBucket')
    return BitNetError.Io('NOT_FOUND', `${where}: not found`, d, e);
  // No credentials at all: the SDK's provider chain fails before any request. Not transient:
  // retrying only repeats the chain's lookups (and its metadata-service timeouts).
  if (x.name === 'CredentialsProviderError')
    return BitNetError.Io(
      'S3_NO_CREDENTIALS',
      `${where}: no AWS credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or a role)`,
      d,
      e,
    );
  // Wrong, expired or insufficient credentials are final too, whatever status the store sends
  // (a HEAD's 403 has no body, so the name may be just "Forbidden").
  if (status === 401 || status === 403 || (x.name !== undefined && AUTH_ERRORS.has(x.name)))
    return BitNetError.Io('ACCESS_DENIED', `${where}: access denied${x.name ? ` (${x.name})` : ''}`, d, e);
  if (status === 412 || status === 416 || x.name === 'PreconditionFailed')
    return BitNetError.Io('SOURCE_CHANGED', `${where}: the object changed while it was being read`, d, e);
  if (status === undefined || status === 408 || status === 429 || status >= 500)
    return transient('S3_ERROR', `${where}: ${x.name ?? 'error'}: ${x.message ?? String(e)}`, d, e);
  return BitNetError.Io('S3_ERROR', `${where}: ${x.name ?? 'error'} (${status})`, d, e);
}

export class S3Source implements ByteSource {
  readonly size: number;
  readonly etag?: string;
  readonly description: string;
  readonly bucket: string;
  readonly key: string;
  private readonly client: S3Client;
  private readonly release: () => void;
  private readonly o: S3SourceOptions;

  private constructor(
    bucket: string,
    key: string,
    o: S3SourceOptions,
    c: { client: S3Client; release: () => void },
    size: number,
    etag: string | undefined,
  ) {
    this.bucket = bucket;
    this.key = key;
    this.o = o;
    this.client = c.client;
    this.release = c.release;
    this.size = size;
    this.etag = etag;
    this.description = `s3://${bucket}/${key}`;
  }

  static async open(url: string, o: S3SourceOptions = {}, signal?: AbortSignal): Promise<S3Source> {
    const { bucket, key } = parseS3Url(url);
    const where = `s3://${bucket}/${key}`;
    const c = acquire(o);
    const stall = o.retry?.stallTimeoutMs ?? DEFAULT_RETRY.stallTimeoutMs;
    try {
      const head = await withRetry(
        `opening ${where}`,
        async () => {
          const timer = new StallTimer(stall, signal);
          try {
            return await c.client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }), {
              abortSignal: timer.signal,
            });
          } catch (e) {
            throw s3Error(e, where, timer, signal);
          } finally {
            timer.done();
          }
        },
        o.retry,
        signal,
      );
      const size = head.ContentLength;
      if (size === undefined || !Number.isSafeInteger(size)) {
        throw BitNetError.Io('S3_NO_SIZE', `${where}: HeadObject gave no size`, { url: where });
      }
      return new S3Source(bucket, key, o, c, size, head.ETag);
    } catch (e) {
      c.release();
      throw e;
    }
  }

  async read(offset: number, length: number, opts?: ReadOptions): Promise<Uint8Array> {
    throwIfAborted(opts?.signal);
    checkRange(this, offset, length);
    const out = new Uint8Array(length);
    const max = Math.max(2, this.o.maxRequestBytes ?? 16 << 20);
    const parts: Promise<void>[] = [];
    for (let at = 0; at < length; at += max)
      parts.push(this.readPart(offset + at, Math.min(max, length - at), out, at, opts?.signal));
    const results = await Promise.allSettled(parts);
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
    return out;
  }

  private async readPart(start: number, len: number, out: Uint8Array, at: number, signal?: AbortSignal) {
    let done = 0;
    const stall = this.o.retry?.stallTimeoutMs ?? DEFAULT_RETRY.stallTimeoutMs;
    await withRetry(
      `reading ${this.description} at ${start}`,
      async () => {
        const s = start + done;
        const e = start + len - 1;
        // Never `bytes=0-0` (s3rver answers it wrongly): widen to two bytes and drop the extra one.
        const widen = s === 0 && e === 0 && this.size > 1 ? 1 : 0;
        const timer = new StallTimer(stall, signal);
        const progress = { got: 0 };
        try {
          const res = await this.client.send(
            new GetObjectCommand({
              Bucket: this.bucket,
              Key: this.key,
              Range: `bytes=${s}-${e + widen}`,
              IfMatch: this.etag,
            }),
            { abortSignal: timer.signal },
          );
          timer.kick();
          const cr = res.ContentRange ?? '';
          const m = CONTENT_RANGE.exec(cr);
          if (!m || Number(m[1]) !== s || Number(m[2]) !== e + widen) {
            await res.Body?.transformToWebStream()
              .cancel()
              .catch(() => {});
            throw BitNetError.Io(
              'S3_BAD_CONTENT_RANGE',
              `${this.description}: asked for ${s}-${e + widen}, got "${cr}"`,
              {
                url: this.description,
                contentRange: cr,
              },
            );
          }
          if ((m[3] !== '*' && Number(m[3]) !== this.size) || (this.etag && res.ETag && res.ETag !== this.etag)) {
            await res.Body?.transformToWebStream()
              .cancel()
              .catch(() => {});
            throw BitNetError.Io('SOURCE_CHANGED', `${this.description}: the object changed while it was being read`, {
              url: this.description,
              pinnedEtag: this.etag,
              etag: res.ETag,
            });
          }
          if (!res.Body) throw transient('S3_TRUNCATED', `${this.description}: no body`, {});
          const want = e - s + 1;
          const buf = widen ? new Uint8Array(want + widen) : out;
          const got = await readBodyInto(
            res.Body.transformToWebStream() as ReadableStream<Uint8Array>,
            buf,
            widen ? 0 : at + done,
            want + widen,
            timer,
            this.description,
            progress,
          );
          if (widen) {
            if (got < want + widen) throw transient('S3_TRUNCATED', `${this.description}: short body`, {});
            out.set(buf.subarray(0, want), at + done);
            progress.got = want;
          } else if (got < want) {
            throw transient('S3_TRUNCATED', `${this.description}: body ended after ${got} of ${want} bytes`, {
              url: this.description,
            });
          }
        } catch (err) {
          throw s3Error(err, this.description, timer, signal);
        } finally {
          done += Math.min(progress.got, e - s + 1);
          timer.done();
        }
      },
      this.o.retry,
      signal,
    );
  }

  /** An object next to this one in the same bucket (same client). */
  async sibling(name: string, signal?: AbortSignal): Promise<ByteSource> {
    const dir = this.key.includes('/') ? this.key.slice(0, this.key.lastIndexOf('/') + 1) : '';
    const key = `${dir}${name}`;
    return S3Source.open(`s3://${this.bucket}/${key.split('/').map(encodeURIComponent).join('/')}`, this.o, signal);
  }

  async close(): Promise<void> {
    this.release();
  }
}
