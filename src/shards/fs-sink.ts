/**
 * Writes a shard pack into a local directory (Node). Each file is written under `<name>.partial`
 * and renamed when complete; an old `manifest.json` is removed first and the new one is written
 * last, so a directory with a manifest always holds a complete pack.
 */
import { createHash } from 'node:crypto';
import { type FileHandle, mkdir, open, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { PackSink, ShardWriter } from './convert.ts';
import { MANIFEST_NAME } from './format.ts';

export class DirectoryPackSink implements PackSink {
  readonly dir: string;
  private prepared: Promise<void> | undefined;

  constructor(dir: string) {
    this.dir = dir;
  }

  private prepare(): Promise<void> {
    this.prepared ??= (async () => {
      await mkdir(this.dir, { recursive: true });
      await rm(join(this.dir, MANIFEST_NAME), { force: true });
    })();
    return this.prepared;
  }

  async openShard(file: string): Promise<ShardWriter> {
    await this.prepare();
    const final = join(this.dir, file);
    const partial = `${final}.partial`;
    const fh: FileHandle = await open(partial, 'w');
    const hash = createHash('sha256');
    let size = 0;
    return {
      write: async (b) => {
        hash.update(b);
        let o = 0;
        while (o < b.byteLength) o += (await fh.write(b, o, b.byteLength - o)).bytesWritten;
        size += b.byteLength;
      },
      close: async () => {
        await fh.close();
        await rename(partial, final);
        return { size, sha256: hash.digest('hex') };
      },
    };
  }

  async writeText(name: string, text: string): Promise<void> {
    await this.prepare();
    const final = join(this.dir, name);
    await writeFile(`${final}.partial`, text);
    await rename(`${final}.partial`, final);
  }
}
