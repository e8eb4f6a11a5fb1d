import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { withDirLock } from '../helpers/dir-lock.ts';

describe('withDirLock (test helper: one install among test files running at once)', () => {
  it('runs the holders one after another and releases the lock, also after a throw', async () => {
    const lock = join(mkdtempSync(join(tmpdir(), 'bitnet-lock-')), 'l');
    const log: string[] = [];
    const holder = (name: string) =>
      withDirLock(
        lock,
        async () => {
          log.push(`${name}+`);
          await sleep(30);
          log.push(`${name}-`);
        },
        { pollMs: 5 },
      );
    await Promise.all([holder('a'), holder('b'), holder('c')]);
    expect(log.join(' ')).toMatch(/^(\w)\+ \1- (\w)\+ \2- (\w)\+ \3-$/);
    await expect(
      withDirLock(lock, async () => {
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    expect(existsSync(lock)).toBe(false);
  });

  it("takes over a dead owner's lock; waits for a live one until its time runs out", async () => {
    const lock = join(mkdtempSync(join(tmpdir(), 'bitnet-lock-')), 'l');
    mkdirSync(lock);
    writeFileSync(join(lock, 'pid'), '2147483646'); // no such process
    expect(await withDirLock(lock, async () => 7)).toBe(7);
    mkdirSync(lock);
    writeFileSync(join(lock, 'pid'), String(process.pid)); // alive: this process
    await expect(withDirLock(lock, async () => 8, { timeoutMs: 100, pollMs: 10 })).rejects.toThrow(/still locked/);
    expect(existsSync(lock)).toBe(true);
  });
});
