/**
 * `hf://owner/repo[@revision][/file]` model locations for the CLI (`--model`, `BITNET_MODEL`), as
 * huggingface_hub's HfFileSystem writes them: the repo is resolved through the hub cache with
 * fromPretrained's rules (the revision's commit, files checked, the cache used offline or when the
 * hub does not answer; a safetensors-only repo converted once into a shard pack), and the command
 * then opens the local GGUF or pack (`convert: false` for the commands that read GGUF headers only:
 * there a safetensors-only repo is HUB_NO_GGUF). Any other location is returned as it is. Node only.
 *
 * The revision is percent-encoded where it has a `/` (`@refs%2Fpr%2F1`), and so is any `%` in the
 * file name (src/sources/location.ts). Progress bars go to stderr unless `quiet`.
 */
import { BitNetError } from '../errors.ts';
import { convertCheckpointDirectory } from '../shards/convert-checkpoint.ts';
import { ProgressBars } from '../shards/progress-bar.ts';
import { resolveHubModel } from '../sources/hf-hub.ts';
import { decodeLocationPart } from '../sources/location.ts';

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
 * The local path an `hf://` location stands for (downloading and converting what the cache lacks),
 * or the location itself. Repo, revision and file names are checked by the hub client
 * (BAD_REPO_ID, BAD_REVISION, BAD_FILENAME) before any request.
 */
export async function resolveHubLocation(
  location: string,
  o: { quiet?: boolean; convert?: boolean } = {},
): Promise<string> {
  const hub = parseHubLocation(location);
  if (!hub) return location;
  const bars = new ProgressBars(process.stderr);
  try {
    return await resolveHubModel(hub.repo, {
      revision: hub.revision,
      filename: hub.filename,
      onProgress: o.quiet ? undefined : (p) => bars.get(p.file).update(p.doneBytes, p.totalBytes),
      convertCheckpoint:
        o.convert === false
          ? undefined
          : async (dir, out) => {
              const b = o.quiet ? undefined : bars.get(`convert ${hub.repo}`);
              await convertCheckpointDirectory(dir, out, {
                onProgress: (p) => b?.update(p.doneBytes, p.totalBytes, p.tensor),
              });
            },
    });
  } finally {
    bars.finish();
  }
}
