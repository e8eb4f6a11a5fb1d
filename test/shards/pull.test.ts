// `bitnet pull` and fromPretrained against a local stand-in for the Hugging Face hub's URL scheme:
// listings with LFS sha256s, Range resume, checksums, HF_ENDPOINT / HF_TOKEN, GGUF and pack repos.

import { execFile } from 'node:child_process';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { BitNetModel } from '../../src/api/bitnet-model.ts';
import { sha256Hex } from '../../src/shards/hash.ts';
import { pullHubRepo } from '../../src/sources/hf-hub.ts';
import { RangeServer } from '../sources/range-server.ts';
import { type Fixture, IDS, isCode, logitsOf, makeFixture, sameBits, tempDir } from '../sources/util.ts';

const TOKEN = 'hf_test_token';
let hub: RangeServer;
let fx: Fixture;
let local: Float32Array;
let ggufSha: string;

function listing(repo: string, files: { name: string; bytes: Uint8Array; sha256?: string }[]) {
  const siblings = files.map((f) => ({
    rfilename: f.name,
    size: f.bytes.length,
    ...(f.sha256 ? { lfs: { sha256: f.sha256, size: f.bytes.length, pointerSize: 134 } } : {}),
  }));
  hub.put(`/api/models/${repo}/revision/main`, new TextEncoder().encode(JSON.stringify({ id: repo, siblings })));
  for (const f of files) hub.put(`/${repo}/resolve/main/${f.name}`, f.bytes);
}

beforeAll(async () => {
  fx = await makeFixture();
  local = await logitsOf(fx.ggufPath);
  ggufSha = await sha256Hex(fx.gguf);
  hub = new RangeServer();
  hub.token = TOKEN;
  const readme = { name: 'README.md', bytes: new TextEncoder().encode('# tiny') };
  listing('acme/tiny-gguf', [readme, { name: 'ggml-model-i2_s.gguf', bytes: fx.gguf, sha256: ggufSha }]);
  listing('acme/bad-sum', [{ name: 'model.gguf', bytes: fx.gguf, sha256: 'a'.repeat(64) }]);
  listing('acme/tiny-pack', [readme, ...[...fx.pack].map(([name, bytes]) => ({ name, bytes }))]);
  // a pack whose second shard is not the one its manifest hashes
  const badShard = (name: string, bytes: Uint8Array) => {
    if (name !== 'shard-00001.bin') return bytes;
    const b = bytes.slice();
    b[100] ^= 0xff;
    return b;
  };
  listing(
    'acme/bad-pack',
    [...fx.pack].map(([name, bytes]) => ({ name, bytes: badShard(name, bytes) })),
  );
  await hub.start();
});
afterAll(() => hub.stop());
beforeEach(() => hub.clearFaults());

const opts = (out: string) => ({ endpoint: hub.url, token: TOKEN, out });
const same = async (path: string, bytes: Uint8Array) => Buffer.from(await readFile(path)).equals(Buffer.from(bytes));

describe('pull from the hub', () => {
  it('downloads the GGUF with the token, checks the LFS sha256', async () => {
    const out = await tempDir('bitnet-pull-');
    const r = await pullHubRepo('acme/tiny-gguf', opts(out));
    expect(r.model).toBe(join(out, 'ggml-model-i2_s.gguf'));
    expect(r.files[0]).toMatchObject({ bytes: fx.gguf.length, resumedFrom: 0, sha256: ggufSha });
    expect(await same(r.model!, fx.gguf)).toBe(true);
    expect(hub.requests.every((q) => q.auth === `Bearer ${TOKEN}`)).toBe(true);
    expect(hub.requests[0].path).toBe('/api/models/acme/tiny-gguf/revision/main');
    expect(await readdir(out)).toEqual(['ggml-model-i2_s.gguf']);
  });

  it('resumes an interrupted download with Range, and starts over when the file changed', async () => {
    const out = await tempDir('bitnet-pull-');
    const file = join(out, 'ggml-model-i2_s.gguf');
    const etag = hub.files.get('/acme/tiny-gguf/resolve/main/ggml-model-i2_s.gguf')!.etag;
    await writeFile(`${file}.partial`, fx.gguf.subarray(0, 100_000));
    await writeFile(`${file}.partial.json`, JSON.stringify({ etag }));
    const r = await pullHubRepo('acme/tiny-gguf', opts(out));
    expect(r.files[0].resumedFrom).toBe(100_000);
    expect(hub.requests.find((q) => q.path.endsWith('.gguf'))).toMatchObject({ range: 'bytes=100000-', status: 206 });
    expect(await same(file, fx.gguf)).toBe(true);

    // A partial of an older version (stale validator): If-Range makes the server send it all again.
    const out2 = await tempDir('bitnet-pull-');
    const file2 = join(out2, 'ggml-model-i2_s.gguf');
    await writeFile(`${file2}.partial`, new Uint8Array(100_000).fill(7));
    await writeFile(`${file2}.partial.json`, JSON.stringify({ etag: '"old"' }));
    hub.clearFaults();
    const r2 = await pullHubRepo('acme/tiny-gguf', opts(out2));
    expect(r2.files[0].resumedFrom).toBe(0);
    expect(hub.requests.find((q) => q.path.endsWith('.gguf'))?.status).toBe(200);
    expect(await same(file2, fx.gguf)).toBe(true);
  });

  it('recovers from truncated transfers and 5xx by resuming', async () => {
    const out = await tempDir('bitnet-pull-');
    const path = '/acme/tiny-gguf/resolve/main/ggml-model-i2_s.gguf';
    hub.fault({ kind: 'truncate', path, anyRequest: true });
    hub.fault({ kind: '5xx', path, anyRequest: true });
    hub.fault({ kind: 'truncate', path, anyRequest: true });
    const r = await pullHubRepo('acme/tiny-gguf', opts(out));
    expect(await same(r.model!, fx.gguf)).toBe(true);
    const gets = hub.requests.filter((q) => q.path.endsWith('.gguf'));
    expect(gets.map((g) => g.fault)).toEqual(['truncate', '5xx', 'truncate', undefined]);
    expect(gets[3].range).toMatch(/^bytes=\d+-$/);
  });

  it('deletes a download whose sha256 does not match', async () => {
    const out = await tempDir('bitnet-pull-');
    await expect(pullHubRepo('acme/bad-sum', opts(out))).rejects.toSatisfy(isCode('HUB_CHECKSUM_MISMATCH'));
    expect(await readdir(out)).toEqual([]);
  });

  it('a pack shard that fails its manifest sha256: no manifest is left, staged or final', async () => {
    const out = await tempDir('bitnet-pull-');
    await expect(pullHubRepo('acme/bad-pack', opts(out))).rejects.toSatisfy(isCode('HUB_CHECKSUM_MISMATCH'));
    const left = await readdir(out);
    expect(left.filter((f) => f.startsWith('manifest.json'))).toEqual([]);
    expect(left).not.toContain('shard-00001.bin');
  });

  it('pulls a shard pack (shards checked against the manifest) that loads with identical logits', async () => {
    const out = await tempDir('bitnet-pull-');
    const r = await pullHubRepo('acme/tiny-pack', opts(out));
    expect(r.model).toBe(join(out, 'manifest.json'));
    expect((await readdir(out)).sort()).toEqual([...fx.pack.keys()].sort());
    expect(r.files.filter((f) => f.path.endsWith('.bin')).every((f) => f.sha256)).toBe(true);
    expect(sameBits(await logitsOf(out, { validateChecksums: true }), local)).toBe(true);
    // Named files only.
    const out2 = await tempDir('bitnet-pull-');
    const r2 = await pullHubRepo('acme/tiny-pack', { ...opts(out2), files: ['README.md'] });
    expect(r2.files).toHaveLength(1);
    await expect(pullHubRepo('acme/tiny-pack', { ...opts(out2), files: ['nope.bin'] })).rejects.toSatisfy(
      isCode('HUB_NOT_FOUND'),
    );
  });

  it('needs the token, and maps refusals to typed errors', async () => {
    await expect(pullHubRepo('acme/tiny-gguf', { endpoint: hub.url, out: await tempDir() })).rejects.toSatisfy(
      isCode('HUB_UNAUTHORIZED'),
    );
    await expect(pullHubRepo('not a repo', opts(await tempDir()))).rejects.toSatisfy(isCode('BAD_REPO_ID'));
  });
});

describe('fromPretrained and bitnet pull (CLI) with HF_ENDPOINT / HF_TOKEN', () => {
  it('fromPretrained loads a pack repo into the cache and runs it like the local GGUF', async () => {
    const cacheDir = await tempDir('bitnet-cache-');
    const m = await BitNetModel.fromPretrainedWithConfig('acme/tiny-pack', {
      hfEndpoint: hub.url,
      hfToken: TOKEN,
      cacheDir,
      backend: 'reference',
    });
    const ref = await BitNetModel.fromFile(fx.ggufPath, { backend: 'reference' });
    expect(sameBits((await m.engine.forward(IDS)).data, (await ref.engine.forward(IDS)).data)).toBe(true);
    // The cache keeps the snapshot of the commit `main` resolved to (refs/main names it).
    const snap = (await readFile(join(cacheDir, 'acme--tiny-pack', 'refs', 'main'), 'utf8')).trim();
    expect((await readdir(join(cacheDir, 'acme--tiny-pack', 'snapshots', snap))).sort()).toEqual(
      [...fx.pack.keys()].sort(),
    );
    const before = hub.requests.length;
    await BitNetModel.fromPretrainedWithConfig('acme/tiny-pack', { hfEndpoint: hub.url, hfToken: TOKEN, cacheDir });
    expect(hub.requests.length).toBe(before + 1); // the listing only: the pack came from the cache
  });

  it('bitnet pull prints where the files went, with a progress bar on stderr', async () => {
    const out = join(await tempDir('bitnet-pullcli-'), 'dl');
    await mkdir(out);
    const r = await promisify(execFile)(
      process.execPath,
      ['bin/bitnet.js', 'pull', 'acme/tiny-gguf', '--out', out, '--json'],
      {
        env: { ...process.env, HF_ENDPOINT: hub.url, HF_TOKEN: TOKEN },
      },
    );
    const j = JSON.parse(r.stdout);
    expect(j.model).toBe(join(out, 'ggml-model-i2_s.gguf'));
    expect(r.stderr).toMatch(/ggml-model-i2_s\.gguf \[#+\] 100%/);
    expect(await same(j.model, fx.gguf)).toBe(true);
  });
});
