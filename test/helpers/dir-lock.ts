/**
 * A lock between processes, for test files that run at the same time (vitest.config.ts runs
 * several at once) and prepare one shared thing, such as the llama.cpp oracle's install.
 *
 * The lock is a directory (mkdir is atomic) holding its owner's pid. A lock whose owner has died
 * is taken over; so is one still without a pid after `staleMs` (its owner died between the mkdir
 * and the write).
 */
import { mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Whether the lock at `path` is abandoned: its owner is gone, or it never wrote its pid. */
function abandoned(path: string, staleMs: number): boolean {
  try {
    const pid = Number(readFileSync(join(path, 'pid'), 'utf8'));
    if (pid > 0) return !alive(pid);
  } catch {
    // no pid yet
  }
  try {
    return Date.now() - statSync(path).mtimeMs > staleMs;
  } catch {
    return false; // released meanwhile
  }
}

/** Runs `fn` holding the lock `path` (a directory that must not exist otherwise). */
export async function withDirLock<T>(
  path: string,
  fn: () => Promise<T>,
  { timeoutMs = 15 * 60_000, staleMs = 60_000, pollMs = 200 } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      mkdirSync(path);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    if (abandoned(path, staleMs)) {
      rmSync(path, { recursive: true, force: true });
      continue;
    }
    if (Date.now() > deadline) throw new Error(`${path}: still locked after ${timeoutMs / 1000} s`);
    await sleep(pollMs);
  }
  try {
    writeFileSync(join(path, 'pid'), String(process.pid));
    return await fn();
  } finally {
    rmSync(path, { recursive: true, force: true });
  }
}
