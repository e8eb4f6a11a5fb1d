/**
 * A local GGUF file (a path or a file:// URL ending in .gguf) opened for the wasm backend's
 * weight arena, so its tensors are read once, straight into wasm memory (node-open.ts). Anything
 * else (a remote location, a shard pack, an unreadable or corrupt file, a runtime without
 * node:fs) returns undefined: the caller takes the ordinary loader, which reports the real error
 * (e.g. Io/FILE_NOT_FOUND). A malformed %-escape in a file:// URL is Config/BAD_LOCATION, as for
 * every location (the rule is in sources/location.ts). No node: import here: node-open.ts is loaded
 * lazily.
 */
import type { ByteSource } from '../../sources/byte-source.ts';
import { localPath } from '../../sources/location.ts';

export async function openLocalGguf(location: string): Promise<ByteSource | undefined> {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(location) && !/^file:\/\//i.test(location)) return undefined;
  const path = localPath(location);
  if (!path.toLowerCase().endsWith('.gguf')) return undefined;
  try {
    const { openForWasm } = await import('./node-open.ts');
    return await openForWasm(path);
  } catch {
    return undefined;
  }
}
