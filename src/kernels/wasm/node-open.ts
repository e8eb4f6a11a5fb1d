/**
 * Node: open a local GGUF file so that its tensors are read straight into a WeightArena (see
 * weight-arena.ts): `loadModel(await openForWasm(path))` then `WasmBackend.create(model)` holds
 * the weights once. Node-only (node:fs); import it lazily.
 */
import { open } from 'node:fs/promises';
import { readGGUF } from '../../gguf/reader.ts';
import type { ByteSource } from '../../sources/byte-source.ts';
import { FileSource } from '../../sources/file.ts';
import { arenaSource, type WeightArena } from './weight-arena.ts';

export async function openForWasm(path: string): Promise<ByteSource & { arena: WeightArena }> {
  const inner = await FileSource.open(path);
  let file: Awaited<ReturnType<typeof readGGUF>>;
  let fh: Awaited<ReturnType<typeof open>>;
  try {
    file = await readGGUF(inner);
    fh = await open(path, 'r');
  } catch (e) {
    // A corrupt or truncated file: nobody else will ever close this descriptor (callers fall back
    // to the ordinary loader, which opens the file again), so close it before rethrowing.
    await inner.close();
    throw e;
  }
  const src = arenaSource(inner, {
    tensors: file.tensors,
    readInto: async (dst, offset) => {
      let done = 0;
      while (done < dst.length) {
        const { bytesRead } = await fh.read(dst, done, dst.length - done, offset + done);
        if (bytesRead === 0) throw new Error(`${path} ended early at ${offset + done}`);
        done += bytesRead;
      }
    },
  });
  const close = src.close;
  src.close = async () => {
    await fh.close();
    await close?.();
  };
  return src;
}
