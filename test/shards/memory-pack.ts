// A shard pack held in memory (MemoryPackSink's files) as the manifest source a loader opens: it
// opens the shards as siblings and records every file it opened.
import { BitNetError } from '../../src/errors.ts';
import type { PackManifest } from '../../src/shards/format.ts';
import { type ByteSource, MemorySource } from '../../src/sources/byte-source.ts';

export function memoryPack(files: Map<string, Uint8Array>, opened: string[] = []): ByteSource {
  const mk = (name: string): ByteSource => {
    const b = files.get(name);
    if (!b) throw BitNetError.Io('NOT_FOUND', `${name} not found`);
    opened.push(name);
    return Object.assign(new MemorySource(b, name), { sibling: async (n: string) => mk(n) });
  };
  return mk('manifest.json');
}

export const manifestOf = (files: Map<string, Uint8Array>): PackManifest =>
  JSON.parse(new TextDecoder().decode(files.get('manifest.json')));
