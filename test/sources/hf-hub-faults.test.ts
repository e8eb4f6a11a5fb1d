// Local faults and retry pacing in hub downloads: a write failure on the cache is final
// (HUB_CACHE_WRITE_FAILED, not retried), every retried failure waits first, a download from byte 0
// is hashed as it streams (no read-back), and the download lock cleans up after itself.

import { randomBytes } from 'node:crypto';
import type * as FsMod from 'node:fs';
import type * as FsPromisesMod from 'node:fs/promises';
import { mkdir, readFile, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { BitNetError } from '../../src/errors.ts';
import { downloadHubFile, resolveHubModel } from '../../src/sources/hf-hub.ts';
import { acquireLock } from '../../src/sources/hf-hub-cache.ts';
import { FakeHub, sha256 } from './hf-hub-fake.ts';
import { isCode, tempDir, walk } from './util.ts';

/** Switches for the fs fakes below (off: the real thing). */
const faults = vi.hoisted(() => ({
  /** createWriteStream on a `.partial` fails its first write with this errno. */
  writeErrno: undefined as string | undefined,
  /** A `.lock` file's content cannot be written. */
  lockWriteFails: false,
  /** Paths createReadStream was asked for. */
  reads: [] as string[],
}));

vi.mock('node:fs', async (orig) => {
  const real = (await orig()) as typeof FsMod;
  return {
    ...real,
    createWriteStream: (path: string, o?: object) => {
      if (faults.writeErrno && String(path).endsWith('.partial')) {
        const code = faults.writeErrno;
        return new Writable({
          write(_c, _e, cb) {
            cb(Object.assign(new Error(`${code}: fake failure, write`), { code, errno: -28, syscall: 'write' }));
          },
        });
      }
      return real.createWriteStream(path, o as never);
    },
    createReadStream: (path: string, o?: object) => {
      faults.reads.push(String(path));
      return real.createReadStream(path, o as never);
    },
  };
});

vi.mock('node:fs/promises', async (orig) => {
  const real = (await orig()) as typeof FsPromisesMod;
  const open = async (path: string, flags?: string, mode?: number) => {
    const fh = await real.open(path, flags, mode);
    if (!faults.lockWriteFails || !String(path).endsWith('.lock')) return fh;
    return Object.assign(Object.create(fh), {
      writeFile: async () => {
        throw Object.assign(new Error('ENOSPC: fake failure, write'), { code: 'ENOSPC', syscall: 'write' });
      },
      close: () => fh.close(),
    });
  };
  return { ...real, open, default: { ...real, open } };
});

const C1 = '1'.repeat(40);
const GGUF = 'ggml-model-i2_s.gguf';
const model = randomBytes(300_000);
const hub = new FakeHub();

beforeAll(async () => {
  await hub.start();
  hub.put('acme/tiny', 'main', C1, { [GGUF]: model, 'config.json': Buffer.from('{"a":1}') });
});
afterAll(() => hub.stop());
beforeEach(() => {
  hub.reset();
  faults.writeErrno = undefined;
  faults.lockWriteFails = false;
  faults.reads.length = 0;
});

type Retry = { attempt: number; delayMs: number; error: BitNetError };
const opts = (cacheDir: string, more: object = {}) => ({ endpoint: hub.endpoint, cacheDir, ...more });
const cdnHits = () => hub.hits.filter((h) => h.host === 'cdn');
const snap = (cacheDir: string) => join(cacheDir, 'acme--tiny', 'snapshots', C1);

describe('local write failures', () => {
  it('a failing write to the .partial (ENOSPC) is HUB_CACHE_WRITE_FAILED at once, naming the path and errno', async () => {
    const cacheDir = await tempDir('bitnet-hubf-');
    faults.writeErrno = 'ENOSPC';
    const retries: Retry[] = [];
    const err = await resolveHubModel('acme/tiny', opts(cacheDir, { onRetry: (r: Retry) => retries.push(r) })).catch(
      (e) => e,
    );
    expect(err).toBeInstanceOf(BitNetError);
    expect(err.code).toBe('HUB_CACHE_WRITE_FAILED');
    expect(err.kind).toBe('Io');
    expect(err.details.path).toBe(join(snap(cacheDir), `${GGUF}.partial`));
    expect(err.details.errno).toBe('ENOSPC');
    expect(err.message).toContain('ENOSPC');
    expect(cdnHits()).toHaveLength(1);
    expect(retries).toEqual([]);
    // The lock is released.
    expect((await walk(cacheDir)).some((f) => f.endsWith('.lock'))).toBe(false);
  });

  it('a .partial that cannot be replaced (a directory) is HUB_CACHE_WRITE_FAILED, not retried', async () => {
    const cacheDir = await tempDir('bitnet-hubf-');
    const dir = snap(cacheDir);
    await mkdir(join(dir, `${GGUF}.partial`), { recursive: true });
    await writeFile(join(dir, `${GGUF}.partial`, 'x'), 'x');
    const err = await resolveHubModel('acme/tiny', opts(cacheDir)).catch((e) => e);
    expect(err.code).toBe('HUB_CACHE_WRITE_FAILED');
    expect(err.details.path).toBe(join(dir, `${GGUF}.partial`));
    expect(typeof err.details.errno).toBe('string');
    expect(cdnHits()).toHaveLength(1);
  });
});

describe('retries wait', () => {
  it('a broken body is retried after a wait, each retry counted', async () => {
    const cacheDir = await tempDir('bitnet-hubf-');
    hub.cfg.dropAfter = 60_000;
    hub.cfg.dropTimes = 2;
    const retries: Retry[] = [];
    const path = await resolveHubModel('acme/tiny', opts(cacheDir, { onRetry: (r: Retry) => retries.push(r) }));
    expect(sha256(await readFile(path))).toBe(sha256(model));
    expect(retries.map((r) => [r.attempt, r.error.code])).toEqual([
      [1, 'HUB_DOWNLOAD_INTERRUPTED'],
      [2, 'HUB_DOWNLOAD_INTERRUPTED'],
    ]);
    for (const r of retries) expect(r.delayMs).toBeGreaterThanOrEqual(0);
    expect(cdnHits()).toHaveLength(3);
  });

  it('a 416 that does not fit the partial is retried after a wait', async () => {
    const cacheDir = await tempDir('bitnet-hubf-');
    const local = join(snap(cacheDir), GGUF);
    await mkdir(snap(cacheDir), { recursive: true });
    await writeFile(`${local}.partial`, randomBytes(model.length + 10));
    await writeFile(`${local}.partial.json`, JSON.stringify({ etag: `"${sha256(model)}"` }));
    const retries: Retry[] = [];
    const r = await downloadHubFile('acme/tiny', GGUF, local, {
      ...opts(cacheDir),
      revision: C1,
      onRetry: (x: Retry) => retries.push(x),
    });
    expect(r.bytes).toBe(model.length);
    expect(retries.map((x) => x.error.code)).toEqual(['HUB_BAD_RESPONSE']);
    expect(cdnHits().map((h) => h.status)).toEqual([416, 200]);
  });

  it('the attempts run out on the last failure, with one wait fewer than attempts', async () => {
    const cacheDir = await tempDir('bitnet-hubf-');
    hub.cfg.dropAfter = 1000;
    hub.cfg.dropTimes = 10;
    const retries: Retry[] = [];
    const err = await resolveHubModel(
      'acme/tiny',
      opts(cacheDir, { attempts: 3, onRetry: (r: Retry) => retries.push(r) }),
    ).catch((e) => e);
    expect(err.code).toBe('HUB_DOWNLOAD_INTERRUPTED');
    expect(retries.map((r) => r.attempt)).toEqual([1, 2]);
    expect(cdnHits()).toHaveLength(3);
  });
});

describe('hashing', () => {
  it('a download from byte 0 is checked without reading the file back', async () => {
    const cacheDir = await tempDir('bitnet-hubf-');
    await resolveHubModel('acme/tiny', opts(cacheDir));
    expect(faults.reads.filter((p) => p.endsWith('.partial'))).toEqual([]);
  });

  it('a bad byte in a fresh download is still caught (HUB_CHECKSUM_MISMATCH)', async () => {
    const cacheDir = await tempDir('bitnet-hubf-');
    hub.cfg.corruptByte = 1234;
    await expect(resolveHubModel('acme/tiny', opts(cacheDir))).rejects.toSatisfy(isCode('HUB_CHECKSUM_MISMATCH'));
    expect(await walk(cacheDir)).toEqual([]);
  });

  it('a non-LFS file is checked against its git blob id while streaming', async () => {
    const cacheDir = await tempDir('bitnet-hubf-');
    const local = join(snap(cacheDir), 'config.json');
    const r = await downloadHubFile('acme/tiny', 'config.json', local, {
      ...opts(cacheDir),
      revision: C1,
      gitSha1: (await import('./hf-hub-fake.ts')).gitSha1(Buffer.from('{"a":1}')),
    });
    expect(r.gitSha1).toBeDefined();
    expect(faults.reads.filter((p) => p.endsWith('.partial'))).toEqual([]);
  });

  it('a resumed download is read back to be checked', async () => {
    const cacheDir = await tempDir('bitnet-hubf-');
    hub.cfg.dropAfter = 100_000;
    await resolveHubModel('acme/tiny', opts(cacheDir));
    expect(faults.reads.filter((p) => p.endsWith('.partial'))).toHaveLength(1);
  });
});

describe('the download lock', () => {
  it('a lock whose content cannot be written is removed, and the failure is HUB_CACHE_WRITE_FAILED', async () => {
    const dir = await tempDir('bitnet-hubf-');
    const path = join(dir, 'f.lock');
    faults.lockWriteFails = true;
    await expect(acquireLock(path)).rejects.toSatisfy(isCode('HUB_CACHE_WRITE_FAILED'));
    await expect(stat(path)).rejects.toThrow();
    faults.lockWriteFails = false;
    const lock = await acquireLock(path);
    expect(lock.waited).toBe(false);
    await lock.release();
  });

  it('an empty lock file a few seconds old is stale, whatever staleMs says', async () => {
    const dir = await tempDir('bitnet-hubf-');
    const path = join(dir, 'f.lock');
    await writeFile(path, '');
    const old = new Date(Date.now() - 10_000);
    await utimes(path, old, old);
    const t0 = Date.now();
    const lock = await acquireLock(path, { staleMs: 600_000, pollMs: 20 });
    expect(lock.waited).toBe(true);
    expect(Date.now() - t0).toBeLessThan(2000);
    await lock.release();
  });
});

describe('the listing retries through withRetry', () => {
  it("honours Retry-After as the wait and ends on the hub's own error", async () => {
    const cacheDir = await tempDir('bitnet-hubf-');
    hub.cfg.status.push({ prefix: '/api/', status: 503, times: 2, retryAfter: '0' });
    const retries: Retry[] = [];
    await resolveHubModel('acme/tiny', opts(cacheDir, { onRetry: (r: Retry) => retries.push(r) }));
    expect(retries.map((r) => [r.attempt, r.delayMs, r.error.code])).toEqual([
      [1, 0, 'HUB_HTTP_ERROR'],
      [2, 0, 'HUB_HTTP_ERROR'],
    ]);
    hub.reset();
    hub.cfg.status.push({ prefix: '/api/', status: 503, times: 9, retryAfter: '0' });
    const err = await resolveHubModel('acme/nothere', opts(await tempDir('bitnet-hubf-'), { attempts: 2 })).catch(
      (e) => e,
    );
    expect(err.code).toBe('HUB_HTTP_ERROR');
    expect(hub.hits.filter((h) => h.url.startsWith('/api/'))).toHaveLength(2);
  });

  it('withRetry: delayFor sets the wait, rethrowLast keeps the last failure', async () => {
    const { withRetry, transient } = await import('../../src/sources/retry.ts');
    const seen: number[] = [];
    const err = await withRetry(
      'x',
      async (n) => {
        throw transient('FLAKY', `try ${n}`);
      },
      { retries: 2, delayFor: (_e, n) => n + 1, rethrowLast: true, onRetry: (i) => seen.push(i.delayMs) },
    ).catch((e) => e);
    expect(err.code).toBe('FLAKY');
    expect(err.message).toBe('try 2');
    expect(seen).toEqual([1, 2]);
    const ex = await withRetry(
      'x',
      async () => {
        throw transient('FLAKY', 'no');
      },
      { retries: 1, baseDelayMs: 1 },
    ).catch((e) => e);
    expect(ex.code).toBe('RETRIES_EXHAUSTED');
  });
});

describe('environment', () => {
  const withEnv = async (name: string, value: string, fn: () => Promise<void>) => {
    const prev = process.env[name];
    process.env[name] = value;
    try {
      await fn();
    } finally {
      if (prev === undefined) delete process.env[name];
      else process.env[name] = prev;
    }
  };

  it('a bad BITNET_HUB_STALL_TIMEOUT_MS is INVALID_ENV naming it; an empty one is the default', async () => {
    for (const v of ['abc', '-5', '0']) {
      await withEnv('BITNET_HUB_STALL_TIMEOUT_MS', v, async () => {
        const e = await resolveHubModel('acme/tiny', opts(await tempDir('bitnet-hubf-'))).catch((x) => x);
        expect(e.code, v).toBe('INVALID_ENV');
        expect(e.kind).toBe('Config');
        expect(e.details.name).toBe('BITNET_HUB_STALL_TIMEOUT_MS');
        expect(e.message).toContain('BITNET_HUB_STALL_TIMEOUT_MS');
      });
    }
    await withEnv('BITNET_HUB_STALL_TIMEOUT_MS', '', async () => {
      await resolveHubModel('acme/tiny', opts(await tempDir('bitnet-hubf-')));
    });
  });

  it('HF_HUB_OFFLINE takes 1/0, true/false, yes/no, on/off in any case, and refuses anything else', async () => {
    for (const v of ['1', 'TRUE', 'Yes', 'on']) {
      await withEnv('HF_HUB_OFFLINE', v, async () => {
        const e = await resolveHubModel('acme/tiny', opts(await tempDir('bitnet-hubf-'))).catch((x) => x);
        expect(e.code, v).toBe('HUB_UNREACHABLE');
        expect(e.details.offline).toBe(true);
      });
    }
    for (const v of ['0', 'False', 'no', 'OFF', '']) {
      await withEnv('HF_HUB_OFFLINE', v, async () => {
        await resolveHubModel('acme/tiny', opts(await tempDir('bitnet-hubf-')));
      });
    }
    await withEnv('HF_HUB_OFFLINE', 'maybe', async () => {
      const e = await resolveHubModel('acme/tiny', opts(await tempDir('bitnet-hubf-'))).catch((x) => x);
      expect(e.code).toBe('INVALID_ENV');
      expect(e.details.name).toBe('HF_HUB_OFFLINE');
    });
  });
});
