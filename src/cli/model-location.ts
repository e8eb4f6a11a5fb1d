/**
 * What the CLI does to a model location (`--model`, `BITNET_MODEL`) before a command opens it,
 * with progress bars on stderr (unless `quiet`):
 *
 * - `hf://owner/repo[@revision][/file]`, as huggingface_hub's HfFileSystem writes it: the repo is
 *   resolved through the hub cache with fromPretrained's rules (the revision's commit, files
 *   checked, the cache used offline or when the hub does not answer; a safetensors-only repo
 *   converted once into a shard pack). `convert: false` is for the commands that read GGUF
 *   headers only: there a safetensors-only repo is HUB_NO_GGUF. The revision is percent-encoded
 *   where it has a `/` (`@refs%2Fpr%2F1`), and so is any `%` in the file name (src/sources/location.ts).
 * - a local safetensors checkpoint directory: converted once into the cache
 *   (src/shards/local-checkpoint.ts; the loader would do the same, without a progress bar).
 *
 * Any other location is returned as it is. Node only.
 */
import { stat } from 'node:fs/promises';
import type { BitNetModel } from '../api/bitnet-model.ts';
import type { ModelConfigInit } from '../api/model-config.ts';
import { BitNetError } from '../errors.ts';
import { ProgressBars } from '../shards/progress-bar.ts';
import { decodeLocationPart, localPath } from '../sources/location.ts';
import { locationKind } from '../sources/open.ts';

export interface HubLocation {
  repo: string;
  revision?: string;
  filename?: string;
}

/** The parts of an `hf://` location, or undefined for any other location. */
export function parseHubLocation(location: string): HubLocation | undefined {
  const m = /^hf:\/\/(.*)$/i.exec(location);
  if (!m) return undefined;
  const parts = m[1].split('/');
  const [owner, nameRev = ''] = parts;
  const at = nameRev.indexOf('@');
  const name = at < 0 ? nameRev : nameRev.slice(0, at);
  if (!owner || !name || parts.slice(2).some((p) => p === ''))
    throw BitNetError.Config(
      'BAD_LOCATION',
      `model location "${location}": write a hub repo as hf://owner/repo[@revision][/file]`,
      { location },
    );
  const file = parts.slice(2).join('/');
  return {
    repo: `${owner}/${name}`,
    revision: at < 0 ? undefined : decodeLocationPart(nameRev.slice(at + 1), location),
    filename: file === '' ? undefined : decodeLocationPart(file, location),
  };
}

/**
 * The local path an `hf://` location or a checkpoint directory stands for (downloading and
 * converting what the cache lacks), or the location itself. Repo, revision and file names are
 * checked by the hub client (BAD_REPO_ID, BAD_REVISION, BAD_FILENAME) before any request.
 */
export async function resolveCliLocation(
  location: string,
  o: { quiet?: boolean; convert?: boolean } = {},
): Promise<string> {
  const hub = parseHubLocation(location);
  const bars = new ProgressBars(process.stderr);
  // a bar appears with the first progress report (a location that needs no work prints nothing)
  const convertProgress = (what: string) =>
    o.quiet
      ? undefined
      : (p: { doneBytes: number; totalBytes: number; tensor: string }) =>
          bars.get(`convert ${what}`).update(p.doneBytes, p.totalBytes, p.tensor);
  if (!hub) {
    if (o.convert === false || locationKind(location) !== 'file') return location;
    // only a directory can be a checkpoint: the converter (most of the model code) loads for one
    // only, so a command with a bad flag fails before it has loaded anything heavy
    const path = localPath(location);
    if (
      !(await stat(path).then(
        (st) => st.isDirectory(),
        () => false,
      ))
    )
      return location;
    const { checkpointPack } = await import('../shards/local-checkpoint.ts');
    try {
      return (await checkpointPack(path, { onProgress: convertProgress(location) })) ?? location;
    } finally {
      bars.finish();
    }
  }
  const { resolveHubModel } = await import('../sources/hf-hub.ts');
  const { convertCheckpointDirectory } = await import('../shards/convert-checkpoint.ts');
  try {
    return await resolveHubModel(hub.repo, {
      revision: hub.revision,
      filename: hub.filename,
      onProgress: o.quiet ? undefined : (p) => bars.get(p.file).update(p.doneBytes, p.totalBytes),
      convertCheckpoint:
        o.convert === false
          ? undefined
          : async (dir, out) => {
              await convertCheckpointDirectory(dir, out, { onProgress: convertProgress(hub.repo) });
            },
    });
  } finally {
    bars.finish();
  }
}

/**
 * BitNetModel.fromFile for a command, with the model code loaded only now: a command checks its
 * flags first, so a bad flag fails before anything heavy is loaded.
 */
export async function openCliModel(location: string, config: ModelConfigInit = {}): Promise<BitNetModel> {
  const { BitNetModel } = await import('../api/bitnet-model.ts');
  return BitNetModel.fromFile(location, config);
}
