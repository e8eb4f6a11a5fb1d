/**
 * A local Hugging Face safetensors checkpoint directory as a model location (Node): the directory
 * a `huggingface-cli download` or a git clone of the repo leaves, given to fromFile, the loader or
 * the CLI. It is converted once, as `bitnet convert` does with its defaults, into the cache
 * (`{cacheDir}/checkpoints/{key}/`, cacheDir as the hub's: $BITNET_CACHE_DIR or
 * ~/.cache/bitnet-edge), and the shard pack is loaded from there.
 *
 * key: a hash of the directory's real path and of the name, size and mtime of each file the
 * converter reads, so an edited checkpoint is converted again. Each pack records its directory in
 * `source.json`; once a new pack of a directory is complete, the older packs of that directory are
 * removed (they describe files that no longer exist).
 */
import { createHash } from 'node:crypto';
import { readdir, readFile, realpath, rm, stat, writeFile } from 'node:fs/promises';
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
  const key = h.digest('hex').slice(0, 40);
  const packDir = inside(root, join(root, key));
  let made = false;
  const manifest = await packOnce(
    packDir,
    async (work) => {
      await convertCheckpointDirectory(real, work, { signal: o.signal, onProgress: o.onProgress });
      await writeFile(join(work, SOURCE), JSON.stringify({ dir: real }));
      made = true;
    },
    o.signal,
  );
  if (made) await removeOlderPacks(root, key, real);
  return manifest;
}

const SOURCE = 'source.json';

/** Removes the packs of `dir` other than `key` (best effort: a pack that cannot be read is left). */
async function removeOlderPacks(root: string, key: string, dir: string): Promise<void> {
  for (const other of await readdir(root).catch(() => [] as string[])) {
    if (other === key || !/^[0-9a-f]{40}$/.test(other)) continue;
    try {
      const src = JSON.parse(await readFile(join(root, other, SOURCE), 'utf8')) as { dir?: unknown };
      if (src.dir === dir) await rm(join(root, other), { recursive: true, force: true });
    } catch {
      // not ours to judge
    }
  }
}
