/**
 * Writes a shard pack into a local directory (Node), all or nothing: the shards and the manifest
 * are written into a staging directory inside it (`.bitnet-convert-<random>`, the same file
 * system, so moving them is a rename) and moved into place only when the conversion has finished.
 * A conversion that fails (a source that stops answering, a lossy tensor, a full disk) removes its
 * staging directory and leaves the directory as it was, an earlier pack included.
 *
 * Moving in: the old `manifest.json` goes first and the new one comes last, so a directory with a
 * manifest always holds a complete pack; then shard files of the earlier pack that the new
 * manifest does not name (`shard-NNNNN.bin`, and `.partial` leftovers) are removed, so the
 * directory holds exactly the new pack. Only names of that pattern are touched: other files in the
 * directory are the user's, and a `manifest.json` that is not a shard pack's is never replaced.
 */
import { createHash } from 'node:crypto';
import { type FileHandle, mkdir, mkdtemp, open, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BitNetError } from '../errors.ts';
import type { PackSink, ShardWriter } from './convert.ts';
import { MANIFEST_NAME, PACK_FORMAT, type PackManifest } from './format.ts';

/** The converter's shard file names (convert.ts placeGroups), with or without `.partial`. */
const SHARD_FILE = /^shard-\d{5,}\.bin(?:\.partial)?$/;
/** The staging directory's name prefix (mkdtemp adds six random characters). */
const STAGING_PREFIX = '.bitnet-convert-';

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
  private prepared: Promise<string> | undefined;
  private readonly open = new Set<FileHandle>();

  constructor(dir: string) {
    this.dir = dir;
  }

  /** Creates the directory and the staging directory in it (once); checks a manifest already there. */
  private prepare(): Promise<string> {
    this.prepared ??= (async () => {
      try {
        await mkdir(this.dir, { recursive: true });
      } catch (e) {
        // mkdir of an existing FILE is EEXIST; a file on the way is ENOTDIR.
        throw outputWriteError(e, this.dir, 'the pack directory');
      }
      const old = await readFile(join(this.dir, MANIFEST_NAME), 'utf8').catch(() => undefined);
      if (old !== undefined && !isPackManifest(old))
        throw BitNetError.Io(
          'OUTPUT_WRITE_FAILED',
          `cannot write the pack into ${this.dir}: its ${MANIFEST_NAME} is not a shard pack's (left as it is); choose another --out`,
          { path: join(this.dir, MANIFEST_NAME) },
        );
      try {
        return await mkdtemp(join(this.dir, STAGING_PREFIX));
      } catch (e) {
        throw outputWriteError(e, this.dir, 'the pack directory');
      }
    })();
    return this.prepared;
  }

  async openShard(file: string): Promise<ShardWriter> {
    const staging = await this.prepare();
    const path = join(staging, file);
    let fh: FileHandle;
    try {
      fh = await open(path, 'w');
    } catch (e) {
      throw outputWriteError(e, path, 'shard');
    }
    this.open.add(fh);
    const hash = createHash('sha256');
    let size = 0;
    const closeFile = async () => {
      this.open.delete(fh);
      await fh.close();
    };
    return {
      write: async (b) => {
        hash.update(b);
        let o = 0;
        try {
          while (o < b.byteLength) o += (await fh.write(b, o, b.byteLength - o)).bytesWritten;
        } catch (e) {
          await closeFile().catch(() => {});
          throw outputWriteError(e, join(this.dir, file), 'shard');
        }
        size += b.byteLength;
      },
      close: async () => {
        try {
          await closeFile();
        } catch (e) {
          throw outputWriteError(e, join(this.dir, file), 'shard');
        }
        return { size, sha256: hash.digest('hex') };
      },
    };
  }

  async writeText(name: string, text: string): Promise<void> {
    const staging = await this.prepare();
    try {
      await writeFile(join(staging, name), text);
    } catch (e) {
      throw outputWriteError(e, join(this.dir, name));
    }
  }

  /** Moves the finished pack into the directory (see the top of this file). */
  async finish(manifest: PackManifest): Promise<void> {
    const staging = await this.prepare();
    const keep = new Set(manifest.shards.map((s) => s.file));
    try {
      await rm(join(this.dir, MANIFEST_NAME), { force: true });
      for (const s of manifest.shards) await rename(join(staging, s.file), join(this.dir, s.file));
      await rename(join(staging, MANIFEST_NAME), join(this.dir, MANIFEST_NAME));
    } catch (e) {
      throw outputWriteError(e, this.dir, 'the pack');
    }
    for (const f of await readdir(this.dir)) {
      if (SHARD_FILE.test(f) && !keep.has(f)) await rm(join(this.dir, f), { force: true });
    }
    await rm(staging, { recursive: true, force: true });
  }

  /** A failed conversion: closes what is open and removes the staging directory. */
  async abort(): Promise<void> {
    for (const fh of [...this.open]) await fh.close().catch(() => {});
    this.open.clear();
    const staging = this.prepared ? await this.prepared.catch(() => undefined) : undefined;
    if (staging) await rm(staging, { recursive: true, force: true }).catch(() => {});
  }
}

/** Whether a manifest.json's text is a shard pack's (its format marker), so replacing it is ours to do. */
function isPackManifest(text: string): boolean {
  try {
    return (JSON.parse(text) as { format?: unknown })?.format === PACK_FORMAT;
  } catch {
    return false;
  }
}
