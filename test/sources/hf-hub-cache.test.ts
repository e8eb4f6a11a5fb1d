// The hub cache: revisions checked before they touch a path, files kept per commit with a
// ref → commit pointer (a moved branch is noticed; an unreachable hub falls back to the last commit),
// the old layout adopted, concurrent downloads (one process or several) never corrupting each other,
// and `pull` keeping files that are already up to date.

import { execFile, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { type AddressInfo, createServer, type Socket } from 'node:net';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { BitNetModel } from '../../src/api/bitnet-model.ts';
import { BitNetError } from '../../src/errors.ts';
import { downloadHubFile, pullHubRepo, resolveHubModel } from '../../src/sources/hf-hub.ts';
import { inside } from '../../src/sources/hf-hub-cache.ts';
import { FakeHub, sha256 } from './hf-hub-fake.ts';
import { isCode, tempDir, walk } from './util.ts';

const C1 = '1'.repeat(40);
const C2 = '2'.repeat(40);
const GGUF = 'ggml-model-i2_s.gguf';
const m1 = randomBytes(300_000);
const m2 = randomBytes(310_000);
const hub = new FakeHub();
const HUB_MODULE = resolve('src/sources/hf-hub.ts');

beforeAll(async () => {
  await hub.start();
  hub.put('acme/tiny', 'main', C1, { [GGUF]: m1 });
  hub.put('acme/tiny', 'refs/pr/1', C2, { [GGUF]: m2 });
  hub.put('acme/tiny', 'v1.0', C2, { [GGUF]: m2 });
});
afterAll(() => hub.stop());
beforeEach(() => hub.reset());

const opts = (cacheDir: string, more: object = {}) => ({ endpoint: hub.endpoint, cacheDir, ...more });
const snap = (cacheDir: string, repo: string, c: string) => join(cacheDir, repo.replace('/', '--'), 'snapshots', c);
const cdnHits = () => hub.hits.filter((h) => h.host === 'cdn');

describe('revisions', () => {
  const bad = [
    '',
    '..',
    '../../../../tmp/bitnet-escape',
    '/tmp/abs',
    'a/../b',
    'a\\b',
    'a b',
    'a\nb',
    'a\u0000b',
    'x/',
    'x//y',
    '.hidden',
    'feature.lock',
    'a~1',
    'a^',
    'C:x',
    'a?',
    'a*',
    'a[1]',
    '@',
    'main@{1}',
    'x'.repeat(256),
  ];

  it('anything git would not take as a ref or commit is BAD_REVISION (Config), before any request', async () => {
    const cacheDir = await tempDir('bitnet-hubc-');
    for (const revision of bad) {
      for (const call of [
        () => resolveHubModel('acme/tiny', opts(cacheDir, { revision })),
        () => pullHubRepo('acme/tiny', opts(cacheDir, { revision })),
        () => downloadHubFile('acme/tiny', GGUF, join(cacheDir, 'f'), opts(cacheDir, { revision })),
      ]) {
        const err = await call().catch((e) => e);
        expect(err, JSON.stringify(revision)).toBeInstanceOf(BitNetError);
        expect(err.code, JSON.stringify(revision)).toBe('BAD_REVISION');
        expect(err.kind).toBe('Config');
      }
    }
    await expect(
      BitNetModel.fromPretrainedWithConfig('acme/tiny', { hfEndpoint: hub.endpoint, cacheDir, revision: '../x' }),
    ).rejects.toSatisfy(isCode('BAD_REVISION'));
    expect(hub.hits).toEqual([]);
    expect(await walk(cacheDir)).toEqual([]);
    expect(existsSync('/tmp/bitnet-escape')).toBe(false);
  });

  it('branches with slashes, tags and commit shas resolve, each to its commit', async () => {
    const cacheDir = await tempDir('bitnet-hubc-');
    const pr = await resolveHubModel('acme/tiny', opts(cacheDir, { revision: 'refs/pr/1' }));
    expect(pr).toBe(join(snap(cacheDir, 'acme/tiny', C2), GGUF));
    expect(hub.hits[0].url).toBe('/api/models/acme/tiny/revision/refs%2Fpr%2F1?blobs=true');
    expect(await readFile(join(cacheDir, 'acme--tiny', 'refs', 'refs%2Fpr%2F1'), 'utf8')).toBe(`${C2}\n`);
    // The tag points at the same commit: no second download.
    hub.hits.length = 0;
    expect(await resolveHubModel('acme/tiny', opts(cacheDir, { revision: 'v1.0' }))).toBe(pr);
    expect(cdnHits()).toEqual([]);
    const byCommit = await resolveHubModel('acme/tiny', opts(cacheDir, { revision: C1 }));
    expect(byCommit).toBe(join(snap(cacheDir, 'acme/tiny', C1), GGUF));
    expect(sha256(await readFile(byCommit))).toBe(sha256(m1));
    // Bytes are fetched by commit, so a branch moving mid-download cannot mix versions.
    expect(hub.hits.some((h) => h.url === `/acme/tiny/resolve/${C1}/${GGUF}`)).toBe(true);
  });

  it('inside() refuses any path that leaves its base', () => {
    expect(inside('/a/b', '/a/b/c/d')).toBe('/a/b/c/d');
    expect(inside('/a/b', '/a/b')).toBe('/a/b');
    for (const p of ['/a/b/../c', '/a/bc', '/', '/a/b/c/../../x']) {
      expect(() => inside('/a/b', p), p).toThrow(expect.objectContaining({ code: 'CACHE_PATH_ESCAPE' }));
    }
  });

  it('listing entries whose names would leave the snapshot are ignored', async () => {
    const cacheDir = await tempDir('bitnet-hubc-');
    hub.put('acme/evil', 'main', C1, { '../../../evil.gguf': m1, 'x/../../evil2.gguf': m1, 'ok.gguf': m2 });
    const p = await resolveHubModel('acme/evil', opts(cacheDir));
    expect(p).toBe(join(snap(cacheDir, 'acme/evil', C1), 'ok.gguf'));
    expect(await walk(cacheDir)).toEqual(['acme--evil/refs/main', `acme--evil/snapshots/${C1}/ok.gguf`]);
  });
});

/**
 * A hub that accepts connections, reads requests and never answers (a black-holed route ends the
 * same way). Counts requests, not connections: fetch may open a spare connection after an abort.
 */
async function silentServer() {
  const sockets: Socket[] = [];
  let requests = 0;
  const server = createServer((s) => {
    sockets.push(s);
    s.on('data', (d) => {
      requests += d.toString('latin1').match(/^GET /gm)?.length ?? 0;
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests: () => requests,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise<void>((r) => server.close(() => r()));
    },
  };
}

describe('refs and snapshots', () => {
  it('a moved branch gets the new commit; the old snapshot stays for pinned users', async () => {
    const cacheDir = await tempDir('bitnet-hubc-');
    hub.put('acme/moving', 'main', C1, { [GGUF]: m1 });
    const first = await resolveHubModel('acme/moving', opts(cacheDir));
    hub.put('acme/moving', 'main', C2, { [GGUF]: m2 });
    const second = await resolveHubModel('acme/moving', opts(cacheDir));
    expect(second).toBe(join(snap(cacheDir, 'acme/moving', C2), GGUF));
    expect(sha256(await readFile(second))).toBe(sha256(m2));
    expect(sha256(await readFile(first))).toBe(sha256(m1));
    expect(await readFile(join(cacheDir, 'acme--moving', 'refs', 'main'), 'utf8')).toBe(`${C2}\n`);
  });

  it('an unreachable hub serves the commit the ref last resolved to; a warm cache works offline', async () => {
    const cacheDir = await tempDir('bitnet-hubc-');
    const online = await resolveHubModel('acme/tiny', opts(cacheDir));
    // Network error (nothing listens on port 1).
    expect(await resolveHubModel('acme/tiny', { cacheDir, endpoint: 'http://127.0.0.1:1', attempts: 1 })).toBe(online);
    // 5xx after the retries.
    hub.cfg.status.push({ prefix: '/api/', status: 503, times: 2 });
    expect(await resolveHubModel('acme/tiny', opts(cacheDir, { attempts: 2 }))).toBe(online);
    // offline: no request at all; HF_HUB_OFFLINE=1 the same.
    hub.hits.length = 0;
    expect(await resolveHubModel('acme/tiny', opts(cacheDir, { offline: true }))).toBe(online);
    process.env.HF_HUB_OFFLINE = '1';
    try {
      expect(await resolveHubModel('acme/tiny', opts(cacheDir))).toBe(online);
    } finally {
      delete process.env.HF_HUB_OFFLINE;
    }
    expect(hub.hits).toEqual([]);
    // And the model loads from there.
  });

  it('with nothing cached, the hub failure is reported (HUB_UNREACHABLE), naming the cache', async () => {
    const cacheDir = await tempDir('bitnet-hubc-');
    const err = await resolveHubModel('acme/tiny', { cacheDir, endpoint: 'http://127.0.0.1:1', attempts: 1 }).catch(
      (e) => e,
    );
    expect(err.code).toBe('HUB_UNREACHABLE');
    expect(err.message).toMatch(/cache has nothing for acme\/tiny@main/);
    const off = await resolveHubModel('acme/tiny', opts(cacheDir, { offline: true, revision: 'v1.0' })).catch((e) => e);
    expect(off.code).toBe('HUB_UNREACHABLE');
    expect(off.details.offline).toBe(true);
    // A 5xx keeps its own code.
    hub.cfg.status.push({ prefix: '/api/', status: 502, times: 1 });
    await expect(resolveHubModel('acme/tiny', opts(cacheDir, { attempts: 1 }))).rejects.toSatisfy(
      isCode('HUB_HTTP_ERROR'),
    );
  });

  it('with a snapshot cached, a hub that accepts connections and never answers gets one short try', async () => {
    const cacheDir = await tempDir('bitnet-hubc-');
    const online = await resolveHubModel('acme/tiny', opts(cacheDir));
    const silent = await silentServer();
    try {
      // The stall timeout is far beyond the test's limit: only the listing limit can end the wait.
      const slow = { cacheDir, endpoint: silent.endpoint, stallTimeoutMs: 3_600_000 };
      const retries: number[] = [];
      const quick = { ...slow, metadataTimeoutMs: 200, onRetry: (i: { attempt: number }) => retries.push(i.attempt) };
      expect(await resolveHubModel('acme/tiny', quick)).toBe(online);
      expect([silent.requests(), retries]).toEqual([1, []]);
      // huggingface_hub's variable, in seconds
      process.env.HF_HUB_ETAG_TIMEOUT = '0.2';
      try {
        expect(await resolveHubModel('acme/tiny', slow)).toBe(online);
        expect(silent.requests()).toBe(2);
        process.env.HF_HUB_ETAG_TIMEOUT = '10s';
        await expect(resolveHubModel('acme/tiny', slow)).rejects.toSatisfy(isCode('INVALID_ENV'));
      } finally {
        delete process.env.HF_HUB_ETAG_TIMEOUT;
      }
      // With nothing cached the listing is needed: it keeps its attempts and the stall timeout.
      const empty = await tempDir('bitnet-hubc-');
      const before = silent.requests();
      const err = await resolveHubModel('acme/tiny', {
        cacheDir: empty,
        endpoint: silent.endpoint,
        stallTimeoutMs: 300,
        metadataTimeoutMs: 1,
        attempts: 3,
      }).catch((e) => e);
      expect(err.code).toBe('HUB_STALLED');
      expect(silent.requests() - before).toBe(3);
    } finally {
      await silent.close();
    }
  });

  it('a 4xx is never masked by the cache', async () => {
    const cacheDir = await tempDir('bitnet-hubc-');
    await resolveHubModel('acme/tiny', opts(cacheDir));
    hub.cfg.status.push({ prefix: '/api/', status: 404, times: 1, errorCode: 'RepoNotFound' });
    await expect(resolveHubModel('acme/tiny', opts(cacheDir))).rejects.toSatisfy(isCode('HUB_NOT_FOUND'));
  });

  it('the old layout (owner--repo/<rev>/file) is adopted when its sha256 matches, replaced when not, served offline', async () => {
    const cacheDir = await tempDir('bitnet-hubc-');
    const legacy = join(cacheDir, 'acme--tiny', 'main', GGUF);
    await mkdir(join(cacheDir, 'acme--tiny', 'main'), { recursive: true });
    // Offline, before any ref exists: the old file is what there is.
    await writeFile(legacy, m1);
    expect(await resolveHubModel('acme/tiny', opts(cacheDir, { offline: true }))).toBe(legacy);
    // Online: moved into the snapshot without a download.
    const p = await resolveHubModel('acme/tiny', opts(cacheDir));
    expect(p).toBe(join(snap(cacheDir, 'acme/tiny', C1), GGUF));
    expect(cdnHits()).toEqual([]);
    expect(existsSync(legacy)).toBe(false);
    // A corrupt old file is not adopted.
    const cacheDir2 = await tempDir('bitnet-hubc-');
    const legacy2 = join(cacheDir2, 'acme--tiny', 'main', GGUF);
    await mkdir(join(cacheDir2, 'acme--tiny', 'main'), { recursive: true });
    const bad = Buffer.from(m1);
    bad[9] ^= 1;
    await writeFile(legacy2, bad);
    const p2 = await resolveHubModel('acme/tiny', opts(cacheDir2));
    expect(sha256(await readFile(p2))).toBe(sha256(m1));
    expect(cdnHits()).toHaveLength(1);
  });
});

describe('concurrent downloads', () => {
  it('two calls in one process share one download', async () => {
    const cacheDir = await tempDir('bitnet-hubc-');
    hub.cfg.throttleMs = 5;
    const [a, b, c] = await Promise.all([
      resolveHubModel('acme/tiny', opts(cacheDir)),
      resolveHubModel('acme/tiny', opts(cacheDir)),
      pullHubRepo('acme/tiny', opts(cacheDir)).then((r) => r.model),
    ]);
    expect(new Set([a, b, c]).size).toBe(1);
    expect(sha256(await readFile(a))).toBe(sha256(m1));
    expect(cdnHits()).toHaveLength(1);
    expect(await walk(cacheDir)).toEqual(['acme--tiny/refs/main', `acme--tiny/snapshots/${C1}/${GGUF}`]);
  });

  it('several processes downloading the same file all get the complete file, and leave no lock or partial', async () => {
    const cacheDir = await tempDir('bitnet-hubc-');
    hub.cfg.throttleMs = 15;
    const script = `
      const { resolveHubModel } = await import(process.env.HUB_MODULE);
      const { createHash } = await import('node:crypto');
      const { readFileSync } = await import('node:fs');
      try {
        const p = await resolveHubModel('acme/tiny');
        console.log(JSON.stringify({ p, sha: createHash('sha256').update(readFileSync(p)).digest('hex') }));
      } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); }`;
    const env = { ...process.env, HUB_MODULE, HF_ENDPOINT: hub.endpoint, BITNET_CACHE_DIR: cacheDir };
    const runs = await Promise.all(
      [0, 1, 2].map(() =>
        promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], { env }).then((r) =>
          JSON.parse(r.stdout.trim().split('\n').at(-1)!),
        ),
      ),
    );
    for (const r of runs) expect(r).toEqual({ p: join(snap(cacheDir, 'acme/tiny', C1), GGUF), sha: sha256(m1) });
    expect(await walk(cacheDir)).toEqual(['acme--tiny/refs/main', `acme--tiny/snapshots/${C1}/${GGUF}`]);
  });

  async function lockFile(cacheDir: string, info: object, mtime?: Date) {
    const dir = snap(cacheDir, 'acme/tiny', C1);
    await mkdir(dir, { recursive: true });
    const lock = join(dir, `${GGUF}.lock`);
    await writeFile(lock, JSON.stringify(info));
    if (mtime) await utimes(lock, mtime, mtime);
    return { dir, lock };
  }

  it('a lock left by a dead process, or not refreshed for long, is taken over', async () => {
    const cacheDir = await tempDir('bitnet-hubc-');
    const dead = spawnSync(process.execPath, ['-e', '']).pid!;
    await lockFile(cacheDir, { pid: dead, host: hostname(), token: 'x' });
    expect(sha256(await readFile(await resolveHubModel('acme/tiny', opts(cacheDir))))).toBe(sha256(m1));
    const cacheDir2 = await tempDir('bitnet-hubc-');
    await lockFile(cacheDir2, { pid: 1, host: 'another-host', token: 'y' }, new Date(Date.now() - 3_600_000));
    expect(sha256(await readFile(await resolveHubModel('acme/tiny', opts(cacheDir2))))).toBe(sha256(m1));
    expect(await walk(cacheDir2)).toEqual(['acme--tiny/refs/main', `acme--tiny/snapshots/${C1}/${GGUF}`]);
  });

  it("a waiter uses the lock holder's file when it checks out, and downloads itself when not", async () => {
    for (const winnerBytes of [m1, m2]) {
      const cacheDir = await tempDir('bitnet-hubc-');
      const { dir, lock } = await lockFile(cacheDir, { pid: process.pid, host: hostname(), token: 'live' });
      hub.hits.length = 0;
      const waiting = resolveHubModel('acme/tiny', opts(cacheDir));
      // The "other writer" finishes: the file appears, then the lock goes.
      await new Promise((r) => setTimeout(r, 300));
      await writeFile(join(dir, GGUF), winnerBytes);
      await rm(lock);
      const p = await waiting;
      expect(sha256(await readFile(p))).toBe(sha256(m1));
      expect(cdnHits()).toHaveLength(winnerBytes === m1 ? 0 : 1);
    }
  });
});

describe('bitnet pull keeps what is up to date', () => {
  it('a second pull hashes the file and downloads nothing; a changed file is downloaded again', async () => {
    const cacheDir = await tempDir('bitnet-hubc-');
    const first = await pullHubRepo('acme/tiny', opts(cacheDir));
    expect(first.files[0].upToDate).toBeUndefined();
    expect(first.files[0].sha256).toBe(sha256(m1));
    expect(first.commit).toBe(C1);
    hub.hits.length = 0;
    const second = await pullHubRepo('acme/tiny', opts(cacheDir));
    expect(second.files[0]).toMatchObject({ upToDate: true, sha256: sha256(m1), bytes: m1.length });
    expect(hub.hits.map((h) => h.url)).toEqual(['/api/models/acme/tiny/revision/main?blobs=true']);
    const bad = Buffer.from(m1);
    bad[100] ^= 1;
    await writeFile(first.model!, bad);
    const third = await pullHubRepo('acme/tiny', opts(cacheDir));
    expect(third.files[0].upToDate).toBeUndefined();
    expect(sha256(await readFile(third.model!))).toBe(sha256(m1));
  });

  it('the CLI says "up to date"', async () => {
    const out = await tempDir('bitnet-hubc-out-');
    const run = () =>
      promisify(execFile)(process.execPath, ['bin/bitnet.js', 'pull', 'acme/tiny', '--out', out, '--quiet'], {
        env: { ...process.env, HF_ENDPOINT: hub.endpoint },
      });
    expect((await run()).stdout).not.toMatch(/up to date/);
    const again = await run();
    expect(again.stdout).toContain(`${join(out, GGUF)} (${m1.length} bytes, up to date, sha256 ok)`);
    expect(again.stdout).toContain(`model: ${join(out, GGUF)}`);
  });
});
