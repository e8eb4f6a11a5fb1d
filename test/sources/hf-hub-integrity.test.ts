// Hub downloads are checked before they get their name: LFS sha256 from the listing or from the
// hub's X-Linked-Etag (never the CDN's md5 ETag), git blob ids for small files, resumed partials
// with bad bytes restarted once, gzip-happy proxies, stalled bodies.

import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { BitNetError } from '../../src/errors.ts';
import { downloadHubFile, pullHubRepo, resolveHubModel } from '../../src/sources/hf-hub.ts';
import { FakeHub, gitSha1, sha256 } from './hf-hub-fake.ts';
import { isCode, tempDir, walk } from './util.ts';

const C1 = '1'.repeat(40);
const GGUF = 'ggml-model-i2_s.gguf';
const model = randomBytes(300_000);
const config = Buffer.from(JSON.stringify({ model_type: 'bitnet', pad: 'x'.repeat(4000) }));
const hub = new FakeHub();

beforeAll(async () => {
  await hub.start();
  hub.put('acme/tiny', 'main', C1, { [GGUF]: model, 'config.json': config });
});
afterAll(() => hub.stop());
beforeEach(() => hub.reset());

const opts = (cacheDir: string, more: object = {}) => ({ endpoint: hub.endpoint, cacheDir, ...more });
const snap = (cacheDir: string) => join(cacheDir, 'acme--tiny', 'snapshots', C1);

describe('fromPretrained downloads are checked', () => {
  it('a corrupt CDN body behind an md5 ETag is HUB_CHECKSUM_MISMATCH, and nothing stays in the cache', async () => {
    const cacheDir = await tempDir('bitnet-hubi-');
    hub.cfg.cdnEtag = 'md5';
    hub.cfg.corruptByte = 12_345;
    const err = await resolveHubModel('acme/tiny', opts(cacheDir)).catch((e) => e);
    expect(err).toBeInstanceOf(BitNetError);
    expect(err.code).toBe('HUB_CHECKSUM_MISMATCH');
    expect(err.details.expected).toBe(sha256(model));
    // The listing was asked for the LFS hashes.
    expect(hub.hits[0].url).toBe('/api/models/acme/tiny/revision/main?blobs=true');
    expect(await walk(cacheDir)).toEqual([]);

    hub.cfg.corruptByte = undefined;
    const path = await resolveHubModel('acme/tiny', opts(cacheDir));
    expect(path).toBe(join(snap(cacheDir), GGUF));
    expect(sha256(await readFile(path))).toBe(sha256(model));
  });

  it("without LFS data in the listing, the sha256 comes from the hub's X-Linked-Etag on the redirect", async () => {
    const cacheDir = await tempDir('bitnet-hubi-');
    hub.cfg.cdnEtag = 'md5';
    hub.cfg.listingWithoutLfs = true;
    hub.cfg.corruptByte = 7;
    await expect(resolveHubModel('acme/tiny', opts(cacheDir))).rejects.toSatisfy(isCode('HUB_CHECKSUM_MISMATCH'));
    expect(await walk(cacheDir)).toEqual([]);
    hub.cfg.corruptByte = undefined;
    const r = await downloadHubFile('acme/tiny', GGUF, join(cacheDir, 'x.gguf'), opts(cacheDir));
    expect(r.sha256).toBe(sha256(model));
  });

  it("a non-LFS file is checked against the listing's git blob id", async () => {
    const cacheDir = await tempDir('bitnet-hubi-');
    const ok = await pullHubRepo('acme/tiny', opts(cacheDir, { files: ['config.json'] }));
    expect(ok.files[0]).toMatchObject({ gitSha1: gitSha1(config), bytes: config.length });
    const out = await tempDir('bitnet-hubi-out-');
    hub.cfg.corruptByte = 3;
    const err = await pullHubRepo('acme/tiny', opts(cacheDir, { files: ['config.json'], out })).catch((e) => e);
    expect(err.code).toBe('HUB_CHECKSUM_MISMATCH');
    expect(err.details.algo).toBe('git-sha1');
    expect(await readdir(out)).toEqual([]);
  });

  it('a listing that claims another sha256 than the bytes have fails even when the CDN agrees with the bytes', async () => {
    const cacheDir = await tempDir('bitnet-hubi-');
    hub.put('acme/liar', 'main', C1, { [GGUF]: { bytes: model, claimedSha256: 'f'.repeat(64) } });
    await expect(resolveHubModel('acme/liar', opts(cacheDir))).rejects.toSatisfy(isCode('HUB_CHECKSUM_MISMATCH'));
    expect(await walk(cacheDir)).toEqual([]);
  });
});

describe('resumed downloads', () => {
  async function badPartial(cacheDir: string, bytes: Buffer) {
    await mkdir(snap(cacheDir), { recursive: true });
    const file = join(snap(cacheDir), GGUF);
    await writeFile(`${file}.partial`, bytes);
    await writeFile(`${file}.partial.json`, JSON.stringify({ etag: `"${sha256(model)}"` }));
    return file;
  }

  it('a .partial with bad bytes fails the check, is discarded, and the file is downloaded again once', async () => {
    const cacheDir = await tempDir('bitnet-hubi-');
    const bad = Buffer.from(model.subarray(0, 100_000));
    bad[50_000] ^= 1;
    const file = await badPartial(cacheDir, bad);
    expect(await resolveHubModel('acme/tiny', opts(cacheDir))).toBe(file);
    expect(sha256(await readFile(file))).toBe(sha256(model));
    const cdn = hub.hits.filter((h) => h.host === 'cdn');
    expect(cdn.map((h) => h.range ?? 'full')).toEqual(['bytes=100000-', 'full']);
    expect(await walk(cacheDir)).toEqual(['acme--tiny/refs/main', `acme--tiny/snapshots/${C1}/${GGUF}`]);
  });

  it('a complete-size .partial with bad bytes (416 on resume) is restarted too', async () => {
    const cacheDir = await tempDir('bitnet-hubi-');
    const bad = Buffer.from(model);
    bad[1] ^= 1;
    const file = await badPartial(cacheDir, bad);
    expect(await resolveHubModel('acme/tiny', opts(cacheDir))).toBe(file);
    expect(sha256(await readFile(file))).toBe(sha256(model));
    expect(hub.hits.filter((h) => h.host === 'cdn').map((h) => h.status)).toEqual([416, 200]);
  });

  it('but a fresh download that fails the check again is final', async () => {
    const cacheDir = await tempDir('bitnet-hubi-');
    await badPartial(cacheDir, Buffer.from(model.subarray(0, 1000)));
    hub.cfg.corruptByte = 200_000;
    await expect(resolveHubModel('acme/tiny', opts(cacheDir))).rejects.toSatisfy(isCode('HUB_CHECKSUM_MISMATCH'));
    expect(hub.hits.filter((h) => h.host === 'cdn')).toHaveLength(2);
    expect(await walk(cacheDir)).toEqual([]);
  });

  it('a dropped connection resumes with Range, and the result is checked', async () => {
    const cacheDir = await tempDir('bitnet-hubi-');
    hub.cfg.dropAfter = 120_000;
    const path = await resolveHubModel('acme/tiny', opts(cacheDir));
    expect(sha256(await readFile(path))).toBe(sha256(model));
    const cdn = hub.hits.filter((h) => h.host === 'cdn');
    expect(cdn[0].range).toBeUndefined();
    expect(cdn[1].range).toMatch(/^bytes=\d+-$/);
    expect(cdn[1].ifRange).toBe(`"${sha256(model)}"`);
  });

  it('a server that ignores If-Range and resumes from a new version: the partial is dropped, never mixed in', async () => {
    // Nothing names the file's hash (no LFS data, no X-Linked-Etag, an md5 ETag): only the ETag
    // of the answer can tell that the bytes after the partial come from another version.
    const cacheDir = await tempDir('bitnet-hubi-');
    const v2 = randomBytes(model.length);
    hub.cfg.cdnEtag = 'md5';
    hub.cfg.listingWithoutLfs = true;
    hub.cfg.linkedEtag = false;
    hub.cfg.ignoreIfRange = true;
    hub.cfg.dropAfter = 120_000;
    hub.cfg.onDrop = () => hub.put('acme/tiny', 'main', C1, { [GGUF]: v2, 'config.json': config });
    try {
      const local = join(cacheDir, 'x.gguf');
      await downloadHubFile('acme/tiny', GGUF, local, opts(cacheDir));
      expect(sha256(await readFile(local))).toBe(sha256(v2)); // the new version whole, not half of each
      const cdn = hub.hits.filter((h) => h.host === 'cdn');
      expect(cdn.map((h) => h.range !== undefined)).toEqual([false, true, false]);
    } finally {
      hub.put('acme/tiny', 'main', C1, { [GGUF]: model, 'config.json': config });
    }
  });
});

describe('transport oddities', () => {
  it('asks for identity encoding, and a gzipping server still yields the exact bytes', async () => {
    const cacheDir = await tempDir('bitnet-hubi-');
    hub.cfg.gzip = true;
    const r = await pullHubRepo('acme/tiny', opts(cacheDir, { files: ['config.json'] }));
    expect(Buffer.from(await readFile(r.files[0].path)).equals(config)).toBe(true);
    expect(hub.hits.find((h) => h.url.includes('/resolve/'))?.acceptEncoding).toBe('identity');
  });

  it('a stalled body is abandoned after stallTimeoutMs and resumed', async () => {
    const cacheDir = await tempDir('bitnet-hubi-');
    hub.cfg.stallAfter = 50_000;
    const path = await resolveHubModel('acme/tiny', opts(cacheDir, { stallTimeoutMs: 300 }));
    expect(sha256(await readFile(path))).toBe(sha256(model));
    const cdn = hub.hits.filter((h) => h.host === 'cdn');
    expect(cdn).toHaveLength(2);
    expect(cdn[1].range).toMatch(/^bytes=\d+-$/);
  });

  it("the caller's abort ends the download (ABORTED), releases the lock and keeps the partial", async () => {
    const cacheDir = await tempDir('bitnet-hubi-');
    hub.cfg.throttleMs = 20;
    const ac = new AbortController();
    const p = resolveHubModel('acme/tiny', opts(cacheDir, { signal: ac.signal }));
    const started = () => hub.hits.some((h) => h.host === 'cdn');
    while (!started()) await new Promise((r) => setTimeout(r, 10));
    ac.abort();
    const err = await p.catch((e) => e);
    expect(err).toBeInstanceOf(BitNetError);
    expect(err.code).toBe('ABORTED');
    const left = await walk(cacheDir);
    expect(left.some((f) => f.endsWith('.lock'))).toBe(false);
    expect(left.some((f) => f.endsWith(`${GGUF}`))).toBe(false);
  });

  it('a stall with no attempts left is HUB_STALLED, and the partial is kept for later', async () => {
    const cacheDir = await tempDir('bitnet-hubi-');
    hub.cfg.stallAfter = 50_000;
    const err = await resolveHubModel('acme/tiny', opts(cacheDir, { stallTimeoutMs: 300, attempts: 1 })).catch(
      (e) => e,
    );
    expect(err.code).toBe('HUB_STALLED');
    expect(await walk(cacheDir)).toEqual([
      `acme--tiny/snapshots/${C1}/${GGUF}.partial`,
      `acme--tiny/snapshots/${C1}/${GGUF}.partial.json`,
    ]);
    // The next call resumes it.
    const path = await resolveHubModel('acme/tiny', opts(cacheDir));
    expect(sha256(await readFile(path))).toBe(sha256(model));
    expect(hub.hits.filter((h) => h.host === 'cdn').at(-1)?.range).toBe('bytes=50000-');
  });
});
