/**
 * Model locations written as URLs: the one percent-decoding rule for every scheme, and the path of
 * a local location. A leaf module (only errors.ts), so the sources and kernels that need it do not
 * pull in the dispatcher (open.ts) and its caches.
 */
import { BitNetError } from '../errors.ts';

/**
 * Decodes the percent-escapes of one part of a URL model location: a `file://` path, an `s3://`
 * or `r2://` key segment. The one rule for every scheme: a location written as a URL is
 * percent-encoded, so every `%` must start an escape (`%XX`, and the escapes together must be
 * UTF-8); a literal `%` is written `%25`. Anything else is `Config/BAD_LOCATION`, naming the
 * location and the bad escape. A stray `%` is not kept as it is: `100%.gguf` and `100%25.gguf`
 * would then name the same object, and `100%41.gguf` would silently mean `100A.gguf`. Plain paths
 * (no scheme) are never decoded: `/models/100%.gguf` is that file.
 */
export function decodeLocationPart(part: string, location: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    // the first % without two hex digits after it; else the first run of escapes that is not UTF-8
    const stray = /%(?![0-9a-f]{2})/i.exec(part);
    const bad =
      stray !== null
        ? part.slice(stray.index, stray.index + 3)
        : ([...part.matchAll(/(?:%[0-9a-f]{2})+/gi)].map((m) => m[0]).find((run) => !utf8(run)) ?? part);
    const why = stray !== null ? 'is not a percent-escape' : 'does not decode to UTF-8';
    throw BitNetError.Config(
      'BAD_LOCATION',
      `model location "${location}": "${bad}" ${why} (a location with a scheme is percent-encoded: write a literal % as %25)`,
      { location, escape: bad },
    );
  }
}

function utf8(escapes: string): boolean {
  try {
    decodeURIComponent(escapes);
    return true;
  } catch {
    return false;
  }
}

/** The path of a local location: a plain path as it is, a `file://` URL's path decoded. */
export function localPath(location: string): string {
  return /^file:\/\//i.test(location) ? decodeLocationPart(new URL(location).pathname, location) : location;
}
