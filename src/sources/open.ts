/**
 * Opens a model location as a ByteSource. Runtime-specific sources are imported lazily, so a
 * bundle that never opens a local file never pulls in node:fs.
 */
import { BitNetError } from '../errors.ts';
import type { ByteSource } from './byte-source.ts';

export async function openSource(location: string | URL | ByteSource): Promise<ByteSource> {
  if (typeof location === 'object' && !(location instanceof URL)) return location;
  const s = location.toString();
  if (/^https?:\/\//i.test(s) || /^s3:\/\//i.test(s) || /^r2:\/\//i.test(s)) {
    throw BitNetError.Io('UNSUPPORTED_SOURCE', `remote model locations (${s.split(':')[0]}) are not supported yet`, {
      location: s,
    });
  }
  const path = s.startsWith('file://') ? decodeURIComponent(new URL(s).pathname) : s;
  const { FileSource } = await import('./file.ts');
  return FileSource.open(path);
}
