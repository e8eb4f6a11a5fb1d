/**
 * A BlockStore in a local directory (Node, Lambda's /tmp, the container). One file per block,
 * `<dir>/<ns>/<blockSize>/<block>.blk`, written to a temporary name and renamed, so a crash never
 * leaves a half block under a real name. Least recently used blocks are deleted once the directory
 * holds more than `maxBytes` (the files found at start-up count, oldest first by mtime).
 * A block whose length is wrong is ignored by the cache (it reads through).
 */
import { mkdir, readdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { envInt, envString } from '../util/env.ts';
import type { BlockStore } from './block-cache.ts';

export interface DiskCacheOptions {
  /** Default: $BITNET_DISK_CACHE_DIR, else <os tmpdir>/bitnet-edge-cache (/tmp on Lambda). */
  dir?: string;
  /** Default: $BITNET_DISK_CACHE_MAX_BYTES, else 1 GiB. */
  maxBytes?: number;
}

export class DiskBlockStore implements BlockStore {
  readonly persistent = true;
  readonly dir: string;
  readonly maxBytes: number;
  /** key → size, in least-recently-used order. */
  private readonly index = new Map<string, number>();
  private total = 0;
  private scanned: Promise<void> | undefined;

  constructor(o: DiskCacheOptions = {}) {
    // A bad BITNET_DISK_CACHE_MAX_BYTES is INVALID_ENV: read loosely, "abc" was NaN and evicted
    // every block as soon as it was written.
    this.dir = o.dir ?? envString(process.env, 'BITNET_DISK_CACHE_DIR') ?? join(tmpdir(), 'bitnet-edge-cache');
    this.maxBytes = o.maxBytes ?? envInt(process.env, 'BITNET_DISK_CACHE_MAX_BYTES', { min: 1 }) ?? 1 << 30;
  }

  get bytes(): number {
    return this.total;
  }

  private path(key: string): string {
    if (key.split('/').some((p) => p === '' || p === '.' || p === '..')) throw new Error(`bad cache key ${key}`);
    return join(this.dir, `${key}.blk`);
  }

  /** Learns what earlier processes left, oldest first. */
  private scan(): Promise<void> {
    this.scanned ??= (async () => {
      const found: { key: string; size: number; mtime: number }[] = [];
      const walk = async (d: string): Promise<void> => {
        let entries: import('node:fs').Dirent[];
        try {
          entries = await readdir(d, { withFileTypes: true });
        } catch {
          return;
        }
        for (const e of entries) {
          const p = join(d, e.name);
          if (e.isDirectory()) await walk(p);
          else if (e.name.endsWith('.blk')) {
            const s = await stat(p).catch(() => undefined);
            if (s) found.push({ key: relative(this.dir, p).slice(0, -4), size: s.size, mtime: s.mtimeMs });
          }
        }
      };
      await walk(this.dir);
      found.sort((a, b) => a.mtime - b.mtime);
      for (const f of found) {
        if (this.index.has(f.key)) continue;
        this.index.set(f.key, f.size);
        this.total += f.size;
      }
    })();
    return this.scanned;
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    try {
      const b = await readFile(this.path(key));
      const size = this.index.get(key);
      if (size !== undefined) {
        this.index.delete(key);
        this.index.set(key, size);
      }
      return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
    } catch {
      return undefined;
    }
  }

  async put(key: string, bytes: Uint8Array): Promise<void> {
    if (bytes.byteLength > this.maxBytes) return;
    await this.scan();
    const p = this.path(key);
    await mkdir(dirname(p), { recursive: true });
    const tmp = `${p}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
    await writeFile(tmp, bytes);
    await rename(tmp, p);
    const old = this.index.get(key);
    if (old !== undefined) {
      this.total -= old;
      this.index.delete(key);
    }
    this.index.set(key, bytes.byteLength);
    this.total += bytes.byteLength;
    for (const [k, size] of this.index) {
      if (this.total <= this.maxBytes) break;
      this.index.delete(k);
      this.total -= size;
      await unlink(this.path(k)).catch(() => {});
    }
  }
}
