/** Local-path helpers for `resolveModelLocation` (node:fs; imported lazily). */
import { stat } from 'node:fs/promises';

export async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}
