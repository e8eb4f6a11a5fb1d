/**
 * R2 ByteSource through a Workers binding: `bucket.get(key, {range: {offset, length}})`.
 * Runtime-free: it is written against the few members of `R2Bucket` it uses, so it type-checks and
 * unit-tests anywhere (miniflare's R2 in Node, the real binding inside workerd).
 *
 * Open: `head(key)` gives the size and the ETag, which is pinned. Reads pass
 * `onlyIf: {etagMatches}`; R2 then answers a changed object with an R2Object that has no body,
 * which is `SOURCE_CHANGED`, as is a missing object, a different ETag or a short body from a
 * changed object. Exceptions thrown by the binding (internal errors) are retried with backoff.
 */
import { BitNetError } from '../errors.ts';
import { type ByteSource, checkRange, type ReadOptions } from './byte-source.ts';
import { decodeLocationPart } from './location.ts';
import { type RetryOptions, throwIfAborted, transient, withRetry } from './retry.ts';

/** The members of an R2 object (metadata) this source reads. */
export interface R2ObjectLike {
  key: string;
  size: number;
  etag: string;
}

/** An R2 object with a body, as `get` returns it when the precondition holds. */
export interface R2ObjectBodyLike extends R2ObjectLike {
  arrayBuffer(): Promise<ArrayBuffer>;
}

export interface R2GetOptionsLike {
  range?: { offset: number; length: number };
  onlyIf?: { etagMatches?: string };
}

/** The members of the `R2Bucket` binding this source calls. */
export interface R2BucketLike {
  head(key: string): Promise<R2ObjectLike | null>;
  get(key: string, options?: R2GetOptionsLike): Promise<R2ObjectLike | R2ObjectBodyLike | null>;
}

export interface R2SourceOptions {
  retry?: RetryOptions;
  /** Largest single get; longer reads are split (default 16 MiB). */
  maxRequestBytes?: number;
}

function hasBody(o: R2ObjectLike | R2ObjectBodyLike): o is R2ObjectBodyLike {
  return typeof (o as Partial<R2ObjectBodyLike>).arrayBuffer === 'function';
}

/** `r2://BINDING/key` → the binding name and the key. */
export function parseR2Url(url: string): { binding: string; key: string } {
  const m = /^r2:\/\/([^/]+)\/(.+)$/i.exec(url);
  if (!m) throw BitNetError.Config('BAD_R2_URL', `"${url}" is not an r2://BINDING/key URL`, { url });
  return {
    binding: m[1],
    key: m[2]
      .split('/')
      .map((p) => decodeLocationPart(p, url))
      .join('/'),
  };
}

/** Finds an R2 binding by name in an env/bindings object, with a typed error when absent. */
export function r2Binding(bindings: Record<string, unknown> | undefined, name: string): R2BucketLike {
  const b = bindings?.[name] as Partial<R2BucketLike> | undefined;
  if (!b || typeof b.get !== 'function' || typeof b.head !== 'function') {
    throw BitNetError.Config('R2_BINDING_MISSING', `no R2 bucket binding named "${name}" was given`, {
      binding: name,
      available: Object.keys(bindings ?? {}),
    });
  }
  return b as R2BucketLike;
}

export class R2Source implements ByteSource {
  readonly size: number;
  readonly etag: string;
  readonly description: string;
  readonly key: string;
  private readonly bucket: R2BucketLike;
  private readonly o: R2SourceOptions;
  private readonly label: string;

  private constructor(bucket: R2BucketLike, label: string, key: string, o: R2SourceOptions, obj: R2ObjectLike) {
    this.bucket = bucket;
    this.label = label;
    this.key = key;
    this.o = o;
    this.size = obj.size;
    this.etag = obj.etag;
    this.description = `r2://${label}/${key}`;
  }

  /** Opens `key` in `bucket`; `label` names the binding in messages. */
  static async open(
    bucket: R2BucketLike,
    key: string,
    o: R2SourceOptions = {},
    label = 'BUCKET',
    signal?: AbortSignal,
  ): Promise<R2Source> {
    const where = `r2://${label}/${key}`;
    const obj = await withRetry(
      `opening ${where}`,
      async () => {
        try {
          return await bucket.head(key);
        } catch (e) {
          throw transient('R2_ERROR', `${where}: ${(e as Error)?.message ?? String(e)}`, { url: where }, e);
        }
      },
      o.retry,
      signal,
    );
    if (!obj) throw BitNetError.Io('NOT_FOUND', `${where}: not found`, { url: where });
    return new R2Source(bucket, label, key, o, obj);
  }

  async read(offset: number, length: number, opts?: ReadOptions): Promise<Uint8Array> {
    throwIfAborted(opts?.signal);
    checkRange(this, offset, length);
    const out = new Uint8Array(length);
    const max = Math.max(1, this.o.maxRequestBytes ?? 16 << 20);
    for (let at = 0; at < length; at += max) {
      const len = Math.min(max, length - at);
      out.set(await this.readPart(offset + at, len, opts?.signal), at);
    }
    return out;
  }

  private readPart(offset: number, length: number, signal?: AbortSignal): Promise<Uint8Array> {
    return withRetry(
      `reading ${this.description} at ${offset}`,
      async () => {
        let obj: R2ObjectLike | R2ObjectBodyLike | null;
        let bytes: ArrayBuffer;
        try {
          obj = await this.bucket.get(this.key, { range: { offset, length }, onlyIf: { etagMatches: this.etag } });
          if (obj && hasBody(obj) && obj.etag === this.etag) bytes = await obj.arrayBuffer();
          else bytes = new ArrayBuffer(0);
        } catch (e) {
          const msg = (e as Error)?.message ?? String(e);
          // The range we validated against the pinned size is gone: the object shrank.
          if (/not satisfiable|10039/i.test(msg)) {
            throw BitNetError.Io(
              'SOURCE_CHANGED',
              `${this.description}: the object changed while it was being read`,
              {
                url: this.description,
              },
              e,
            );
          }
          throw transient('R2_ERROR', `${this.description}: ${msg}`, {}, e);
        }
        throwIfAborted(signal);
        if (!obj || !hasBody(obj) || obj.etag !== this.etag || obj.size !== this.size) {
          throw BitNetError.Io('SOURCE_CHANGED', `${this.description}: the object changed while it was being read`, {
            url: this.description,
            pinnedEtag: this.etag,
            etag: obj?.etag ?? null,
          });
        }
        if (bytes.byteLength !== length) {
          throw transient('R2_TRUNCATED', `${this.description}: got ${bytes.byteLength} of ${length} bytes`, {
            offset,
            length,
          });
        }
        return new Uint8Array(bytes);
      },
      this.o.retry,
      signal,
    );
  }

  /** An object next to this one in the same bucket. */
  async sibling(name: string, signal?: AbortSignal): Promise<ByteSource> {
    const dir = this.key.includes('/') ? this.key.slice(0, this.key.lastIndexOf('/') + 1) : '';
    return R2Source.open(this.bucket, `${dir}${name}`, this.o, this.label, signal);
  }
}
