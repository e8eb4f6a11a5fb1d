/**
 * Vitest setup file (vitest.config.ts): each test file gets its own temporary directory as
 * TMPDIR, removed after the file's own afterAll hooks have run (setup-file hooks run last).
 *
 * Many tests make scratch directories with mkdtemp(join(tmpdir(), ...)) and leave them to the OS,
 * and the processes they start (servers, the CLI, compilers) write there too. Node's tmpdir()
 * reads TMPDIR on every call and child processes inherit it, so all of it lands in one place,
 * and a CI machine running the suite again and again keeps nothing of it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';

const saved = process.env.TMPDIR;
const dir = mkdtempSync(join(tmpdir(), 'bitnet-vitest-'));
process.env.TMPDIR = dir;

afterAll(() => {
  if (saved === undefined) delete process.env.TMPDIR;
  else process.env.TMPDIR = saved;
  // Retries: a child that a test stopped may still be closing a file in there.
  rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
});
