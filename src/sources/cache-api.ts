/**
 * A BlockStore on the Cache API (Workers: `caches.default`; anything with `match`/`put`). Blocks are
 * stored as immutable responses under synthetic URLs `https://bitnet-edge.cache/<ns>/<size>/<block>`;
 * the namespace is derived from the source's description, size and ETag, so a changed object never
 * hits an old block. The Workers cache is per data centre and best effort: a miss just reads through.
 * Runtime-free.
 */
import type { BlockStore } from './block-cache.ts';

/** The two members of `Cache` this store uses. */
export interface CacheLike {
  match(request: string): Promise<Response | undefined>;
  put(request: string, response: Response): Promise<void>;
}

export class CacheApiStore implements BlockStore {
  readonly persistent = true;
  private readonly cache: CacheLike;
  private readonly origin: string;

  constructor(cache: CacheLike, origin = 'https://bitnet-edge.cache') {
    this.cache = cache;
    this.origin = origin.replace(/\/+$/, '');
  }

  private url(key: string): string {
    return `${this.origin}/${key}`;
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    const res = await this.cache.match(this.url(key));
    if (!res) return undefined;
    return new Uint8Array(await res.arrayBuffer());
  }

  async put(key: string, bytes: Uint8Array): Promise<void> {
    await this.cache.put(
      this.url(key),
      new Response(bytes.slice(), {
        headers: {
          'content-type': 'application/octet-stream',
          'content-length': String(bytes.byteLength),
          'cache-control': 'public, max-age=31536000, immutable',
        },
      }),
    );
  }
}

/** The Workers default cache, or a named cache where only `caches.open` exists; undefined elsewhere. */
export async function defaultCacheApi(): Promise<CacheLike | undefined> {
  const c = (globalThis as { caches?: { default?: CacheLike; open?: (n: string) => Promise<CacheLike> } }).caches;
  if (!c) return undefined;
  if (c.default) return c.default;
  return c.open ? c.open('bitnet-edge') : undefined;
}
