/**
 * Opens a model location as a ByteSource:
 *
 *   /path/model.gguf, file:///path/model.gguf   FileSource (node:fs)
 *   https://host/path/model.gguf                HttpSource (fetch + Range)
 *   s3://bucket/key                             S3Source (@aws-sdk/client-s3)
 *   r2://BINDING/key                            R2Source (the binding from `opts.bindings`)
 *
 * Runtime-specific sources are imported lazily, so a Worker bundle that only opens r2:// or https://
 * never pulls in node:fs or the AWS SDK. Remote sources get the decorators: a concurrency limit
 * (default 4), coalescing of adjacent reads, and, when asked for, a persistent block cache (a
 * directory in Node/Lambda: `diskCache` or $BITNET_DISK_CACHE_DIR; the Cache API in Workers:
 * `cacheApi`) and an in-memory LRU block cache (`memoryCache`).
 *
 * Shard packs refer to files next to their manifest: `siblingLocation` / `openSibling` resolve them.
 */
import { BitNetError } from '../errors.ts';
import { BlockCachedSource, MemoryBlockStore } from './block-cache.ts';
import type { ByteSource } from './byte-source.ts';
import type { CacheLike } from './cache-api.ts';
import { type CoalesceOptions, CoalescingSource } from './coalesce.ts';
import type { DiskCacheOptions } from './disk-cache.ts';
import type { HttpSourceOptions } from './http.ts';
import { ConcurrencyLimitedSource } from './limit.ts';
import { decodeLocationPart, localPath } from './location.ts';
import type { R2SourceOptions } from './r2.ts';
import type { RetryOptions } from './retry.ts';
import type { S3SourceOptions } from './s3.ts';

export interface OpenOptions {
  signal?: AbortSignal;
  /** Bindings by name for `r2://BINDING/key` (a Worker's `env`). */
  bindings?: Record<string, unknown>;
  /** Retry policy of every remote source (overrides the per-transport ones). */
  retry?: RetryOptions;
  http?: HttpSourceOptions;
  s3?: S3SourceOptions;
  r2?: R2SourceOptions;
  /** Inner reads in flight at once, per remote source (default 4). */
  concurrency?: number;
  /** Merge adjacent reads of one turn into one request (default on for remote sources). */
  coalesce?: CoalesceOptions | boolean;
  /** An in-memory LRU block cache (default off). */
  memoryCache?: { maxBytes: number; blockSize?: number } | false;
  /** A block cache on disk (Node, Lambda /tmp). Default: on when $BITNET_DISK_CACHE_DIR is set. */
  diskCache?: DiskCacheOptions | boolean;
  /** A block cache on the Cache API (Workers). `true`: `caches.default`. Default off. */
  cacheApi?: CacheLike | boolean;
  /** Block size of the block caches (default 1 MiB). */
  cacheBlockSize?: number;
}

export type SourceKind = 'file' | 'http' | 's3' | 'r2';

export function locationKind(location: string): SourceKind {
  if (/^https?:\/\//i.test(location)) return 'http';
  if (/^s3:\/\//i.test(location)) return 's3';
  if (/^r2:\/\//i.test(location)) return 'r2';
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(location) && !/^file:\/\//i.test(location)) {
    throw BitNetError.Io(
      'UNSUPPORTED_SOURCE',
      `model locations with scheme ${location.split(':')[0]} are not supported`,
      {
        location,
      },
    );
  }
  return 'file';
}

function env(name: string): string | undefined {
  return (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.[name];
}

async function openRaw(location: string, o: OpenOptions): Promise<ByteSource> {
  const kind = locationKind(location);
  switch (kind) {
    case 'http': {
      // the one rule for a location with a scheme: a `%` must start an escape (location.ts); the
      // URL parser would send `a%zz` as it is, and fetch a different name than the one written
      const u = new URL(location);
      decodeLocationPart(u.pathname + u.search, location);
      const { HttpSource } = await import('./http.ts');
      return HttpSource.open(location, { ...o.http, retry: o.retry ?? o.http?.retry }, o.signal);
    }
    case 's3': {
      const { S3Source } = await import('./s3.ts');
      return S3Source.open(location, { ...o.s3, retry: o.retry ?? o.s3?.retry }, o.signal);
    }
    case 'r2': {
      const { R2Source, parseR2Url, r2Binding } = await import('./r2.ts');
      const { binding, key } = parseR2Url(location);
      return R2Source.open(
        r2Binding(o.bindings, binding),
        key,
        { ...o.r2, retry: o.retry ?? o.r2?.retry },
        binding,
        o.signal,
      );
    }
    default: {
      const { FileSource } = await import('./file.ts');
      return FileSource.open(localPath(location));
    }
  }
}

/** Wraps a remote source in the decorators the options ask for. */
export async function decorate(raw: ByteSource, o: OpenOptions = {}, remote = true): Promise<ByteSource> {
  let src = raw;
  if (remote) src = new ConcurrencyLimitedSource(src, o.concurrency ?? 4);
  const blockSize = o.cacheBlockSize;
  const disk = o.diskCache ?? Boolean(env('BITNET_DISK_CACHE_DIR'));
  if (remote && disk) {
    const { DiskBlockStore } = await import('./disk-cache.ts');
    src = new BlockCachedSource(src, new DiskBlockStore(disk === true ? {} : disk), { blockSize });
  }
  if (remote && o.cacheApi) {
    const { CacheApiStore, defaultCacheApi } = await import('./cache-api.ts');
    const cache = o.cacheApi === true ? await defaultCacheApi() : o.cacheApi;
    if (cache) src = new BlockCachedSource(src, new CacheApiStore(cache), { blockSize });
  }
  if (remote && o.coalesce !== false) src = new CoalescingSource(src, o.coalesce === true ? {} : (o.coalesce ?? {}));
  if (o.memoryCache) src = new BlockCachedSource(src, new MemoryBlockStore(o.memoryCache.maxBytes), { blockSize });
  return src;
}

/**
 * Opens a location. A source opened from a location can open the files next to it with the same
 * options (`sibling(name)`), so it can stand for a shard pack's manifest wherever a ByteSource goes.
 */
export async function openSource(location: string | URL | ByteSource, o: OpenOptions = {}): Promise<ByteSource> {
  if (typeof location === 'object' && !(location instanceof URL)) return location;
  const s = location.toString();
  const raw = await openRaw(s, o);
  const kind = locationKind(s);
  const src = kind === 'file' && !o.memoryCache ? raw : await decorate(raw, o, kind !== 'file');
  return Object.assign(src, {
    sibling: (name: string, signal?: AbortSignal) => openSibling(s, name, { ...o, signal: signal ?? o.signal }),
  });
}

const SAFE_NAME = /^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/;

/** Checks a file name taken from a manifest: relative, no `..`, no scheme, no odd characters. */
export function checkRelativeName(name: string): string {
  if (!SAFE_NAME.test(name) || name.split('/').some((p) => p === '.' || p === '..')) {
    throw BitNetError.Model('PACK_BAD_FILE_NAME', `"${name}" is not a plain relative file name`, { name });
  }
  return name;
}

/** The location of `name` next to `location` (same directory, same scheme). */
export function siblingLocation(location: string | URL, name: string): string {
  checkRelativeName(name);
  const s = location.toString();
  const kind = locationKind(s);
  if (kind === 'http' || /^file:\/\//i.test(s))
    return new URL(name.split('/').map(encodeURIComponent).join('/'), s).toString();
  const cut = s.lastIndexOf('/');
  if (kind === 'file') {
    const sep = Math.max(cut, s.lastIndexOf('\\'));
    return sep < 0 ? name : `${s.slice(0, sep + 1)}${name}`;
  }
  // s3://bucket/key, r2://BINDING/key: the bucket part always has a slash after it.
  return `${s.slice(0, cut + 1)}${name.split('/').map(encodeURIComponent).join('/')}`;
}

/** A source that knows how to open the files next to it. */
export interface SiblingSource extends ByteSource {
  sibling(name: string, signal?: AbortSignal): Promise<ByteSource>;
}

export function hasSibling(src: ByteSource): src is SiblingSource {
  return typeof (src as Partial<SiblingSource>).sibling === 'function';
}

/** Opens the file `name` next to `base` (a location, or a source that can open its siblings). */
export async function openSibling(
  base: string | URL | ByteSource,
  name: string,
  o: OpenOptions = {},
): Promise<ByteSource> {
  checkRelativeName(name);
  if (typeof base === 'object' && !(base instanceof URL)) {
    if (hasSibling(base)) return base.sibling(name, o.signal);
    throw BitNetError.Model(
      'PACK_NO_SIBLINGS',
      `${base.description} was given as a ByteSource that cannot open ${name}; pass the manifest's location instead`,
      { name, source: base.description },
    );
  }
  return openSource(siblingLocation(base, name), o);
}

/**
 * A model location as the loader reads it: a directory (or a URL ending in `/`) means the shard
 * pack's `manifest.json` inside it.
 */
export async function resolveModelLocation(location: string | URL): Promise<string> {
  const s = location.toString();
  if (s.endsWith('/')) return `${s}manifest.json`;
  if (locationKind(s) === 'file') {
    const { isDirectory } = await import('./local.ts');
    if (await isDirectory(localPath(s))) return siblingLocation(`${s.replace(/[\\/]+$/, '')}/x`, 'manifest.json');
  }
  return s;
}
