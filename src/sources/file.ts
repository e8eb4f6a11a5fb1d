/**
 * Local file ByteSource (Node, Lambda, the container): positioned reads through one file handle,
 * never buffering the whole file. Imported lazily by `openSource` so the core stays runtime-free.
 */
import { type FileHandle, open } from 'node:fs/promises';
import { BitNetError } from '../errors.ts';
import { type ByteSource, checkRange, type ReadOptions } from './byte-source.ts';

export class FileSource implements ByteSource {
  readonly size: number;
  readonly description: string;
  private readonly fh: FileHandle;

  private constructor(fh: FileHandle, size: number, path: string) {
    this.fh = fh;
    this.size = size;
    this.description = path;
  }

  static async open(path: string): Promise<FileSource> {
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw BitNetError.Io(
        code === 'ENOENT' ? 'FILE_NOT_FOUND' : 'FILE_OPEN_FAILED',
        `cannot open ${path}: ${(e as Error).message}`,
        { path, errno: code },
        e,
      );
    }
    const st = await fh.stat();
    if (!st.isFile()) {
      await fh.close();
      throw BitNetError.Io('NOT_A_FILE', `${path} is not a regular file`, { path });
    }
    return new FileSource(fh, st.size, path);
  }

  async read(offset: number, length: number, opts?: ReadOptions): Promise<Uint8Array> {
    opts?.signal?.throwIfAborted();
    checkRange(this, offset, length);
    const out = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.fh.read(out, done, length - done, offset + done);
      if (bytesRead === 0) {
        throw BitNetError.Io('SHORT_READ', `file ${this.description} ended early at ${offset + done}`, {
          offset,
          length,
          got: done,
        });
      }
      done += bytesRead;
    }
    return out;
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}
