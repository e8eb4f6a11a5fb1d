/**
 * Writes a shard pack into a local directory (Node). Each file is written under `<name>.partial`
 * and renamed when complete; an old `manifest.json` is removed first and the new one is written
 * last, so a directory with a manifest always holds a complete pack. After the manifest, shard
 * files of an earlier conversion that the new manifest does not name (`shard-NNNNN.bin`, and
 * `.partial` leftovers of an interrupted run) are removed, so the directory holds exactly the new
 * pack. Only names of that pattern are touched: other files in the directory are the user's.
 */
import { createHash } from 'node:crypto';
import { type FileHandle, mkdir, open, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BitNetError } from '../errors.ts';
import type { PackSink, ShardWriter } from './convert.ts';
import { MANIFEST_NAME, type PackManifest } from './format.ts';

/** The converter's shard file names (convert.ts placeGroups), with or without `.partial`. */
const SHARD_FILE = /^shard-\d{5,}\.bin(?:\.partial)?$/;

/**
 * A failed write of a local output (a pack directory, a synthesized GGUF) as a typed error:
 * Io/OUTPUT_WRITE_FAILED, with a message that says what is wrong with the path.
 */
export function outputWriteError(e: unknown, path: string, what?: string): BitNetError {
  if (e instanceof BitNetError) return e;
  const errno = (e as NodeJS.ErrnoException).code;
  const why =
    errno === 'ENOENT'
      ? 'its directory does not exist'
      : errno === 'EEXIST'
        ? 'it exists and is not a directory'
        : errno === 'ENOTDIR'
          ? 'a component of the path is a file, not a directory'
          : errno === 'EISDIR'
            ? 'it is a directory'
            : errno === 'EACCES' || errno === 'EPERM'
              ? 'permission denied'
              : errno === 'ENOSPC'
                ? 'no space left on the device'
                : (e as Error).message;
  return BitNetError.Io(
    'OUTPUT_WRITE_FAILED',
    `cannot write ${what ? `${what} ` : ''}${path}: ${why}`,
    { path, errno },
    e,
  );
}

export class DirectoryPackSink implements PackSink {
  readonly dir: string;
  private prepared: Promise<void> | undefined;

  constructor(dir: string) {
    this.dir = dir;
  }

  private prepare(): Promise<void> {
    this.prepared ??= (async () => {
      try {
        await mkdir(this.dir, { recursive: true });
        await rm(join(this.dir, MANIFEST_NAME), { force: true });
      } catch (e) {
        // mkdir of an existing FILE is EEXIST; a file on the way is ENOTDIR.
        throw outputWriteError(e, this.dir, 'the pack directory');
      }
    })();
    return this.prepared;
  }

  async openShard(file: string): Promise<ShardWriter> {
    await this.prepare();
    const final = join(this.dir, file);
    const partial = `${final}.partial`;
    let fh: FileHandle;
    try {
      fh = await open(partial, 'w');
    } catch (e) {
      throw outputWriteError(e, partial, 'shard');
    }
    const hash = createHash('sha256');
    let size = 0;
    return {
      write: async (b) => {
        hash.update(b);
        let o = 0;
        try {
          while (o < b.byteLength) o += (await fh.write(b, o, b.byteLength - o)).bytesWritten;
        } catch (e) {
          await fh.close().catch(() => {});
          await rm(partial, { force: true }).catch(() => {});
          throw outputWriteError(e, partial, 'shard');
        }
        size += b.byteLength;
      },
      close: async () => {
        try {
          await fh.close();
          await rename(partial, final);
        } catch (e) {
          throw outputWriteError(e, final, 'shard');
        }
        return { size, sha256: hash.digest('hex') };
      },
    };
  }

  async writeText(name: string, text: string): Promise<void> {
    await this.prepare();
    const final = join(this.dir, name);
    try {
      await writeFile(`${final}.partial`, text);
      await rename(`${final}.partial`, final);
    } catch (e) {
      throw outputWriteError(e, final);
    }
  }

  /** Removes shard files the new manifest does not name (left by an earlier, larger conversion). */
  async finish(manifest: PackManifest): Promise<void> {
    const keep = new Set(manifest.shards.map((s) => s.file));
    for (const f of await readdir(this.dir)) {
      if (SHARD_FILE.test(f) && !keep.has(f)) await rm(join(this.dir, f), { force: true });
    }
  }
}
