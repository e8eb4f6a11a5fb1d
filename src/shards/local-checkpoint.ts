/**
 * A local Hugging Face safetensors checkpoint directory as a model location (Node): the directory
 * a `huggingface-cli download` or a git clone of the repo leaves, given to fromFile, the loader or
 * the CLI. It is converted once, as `bitnet convert` does with its defaults, into the cache
 * (`{cacheDir}/checkpoints/{key}/`, cacheDir as the hub's: $BITNET_CACHE_DIR or
 * ~/.cache/bitnet-edge), and the shard pack is loaded from there.
 *
 * key: a hash of the directory's real path and of the name, size and mtime of each file the
 * converter reads, so an edited checkpoint is converted again (the old pack stays until removed).
 */
import { createHash } from 'node:crypto';
import { readdir, realpath, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { checkpointFiles, isCheckpoint } from '../sources/hf-hub.ts';
import { cacheRoot, inside, packOnce } from '../sources/hf-hub-cache.ts';
import type { ConvertOptions } from './convert.ts';
import { convertCheckpointDirectory } from './convert-checkpoint.ts';

/** The files convert would read from `dir` when it is a checkpoint without a pack; else undefined. */
async function checkpointIn(dir: string): Promise<string[] | undefined> {
  let names: string[];
  try {
    if (!(await stat(dir)).isDirectory()) return undefined;
    names = await readdir(dir);
  } catch {
    return undefined;
  }
  if (names.includes('manifest.json') || !isCheckpoint(names)) return undefined;
  return checkpointFiles(names).sort();
}

/**
 * The manifest of the pack made from checkpoint directory `dir` (converting it once), or undefined
 * when `dir` is not a checkpoint directory (a shard pack is, for example, left to the loader).
 */
export async function checkpointPack(
  dir: string,
  o: { cacheDir?: string; signal?: AbortSignal; onProgress?: ConvertOptions['onProgress'] } = {},
): Promise<string | undefined> {
  const files = await checkpointIn(dir);
  if (!files) return undefined;
  const real = await realpath(dir);
  const h = createHash('sha256').update(real);
  for (const f of files) {
    const st = await stat(join(real, f));
    h.update(`\0${f}\0${st.size}\0${st.mtimeMs}`);
  }
  const root = join(cacheRoot(o.cacheDir), 'checkpoints');
  const packDir = inside(root, join(root, h.digest('hex').slice(0, 40)));
  return packOnce(
    packDir,
    async (work) => {
      await convertCheckpointDirectory(real, work, { signal: o.signal, onProgress: o.onProgress });
    },
    o.signal,
  );
}
