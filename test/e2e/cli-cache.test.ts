// `bitnet cache`: what the model cache holds (hub snapshots, converted hub checkpoints, local
// checkpoint packs) and removing parts of it, never an entry a download is working in.
import { execFile } from 'node:child_process';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertCheckpointDirectory } from '../../src/shards/convert-checkpoint.ts';
import { checkpointPack } from '../../src/shards/local-checkpoint.ts';
import { resolveHubModel } from '../../src/sources/hf-hub.ts';
import { writeHfCheckpoint } from '../shards/hf-fixture.ts';
import { FakeHub } from '../sources/hf-hub-fake.ts';
import { tempDir } from '../sources/util.ts';

const hub = new FakeHub();
const C1 = 'e'.repeat(40);
const C2 = 'f'.repeat(40);
let ckpt: string;

beforeAll(async () => {
  ckpt = await writeHfCheckpoint(31, { weights: 'packed', floats: 'exact' });
  const files: Record<string, Buffer> = {};
  for (const f of await readdir(ckpt)) files[f] = await readFile(join(ckpt, f));
  await hub.start();
  hub.put('acme/tiny', 'main', C1, { 'ggml-model-i2_s.gguf': Buffer.alloc(5000, 7) });
  hub.put('acme/ckpt', 'main', C2, files);
});
afterAll(() => hub.stop());

async function cache(cacheDir: string, ...args: string[]) {
  return promisify(execFile)(process.execPath, ['bin/bitnet.js', 'cache', ...args], {
    env: { ...process.env, BITNET_CACHE_DIR: cacheDir },
  }).then(
    (r) => ({ code: 0, ...r }),
    (e: { code: number; stdout: string; stderr: string }) => e,
  );
}

type Listed = {
  kind: string;
  repo?: string;
  commit?: string;
  refs?: string[];
  source?: string;
  bytes: number;
  busy: boolean;
};
const listed = async (cacheDir: string) =>
  JSON.parse((await cache(cacheDir, 'ls', '--json')).stdout) as { entries: Listed[]; bytes: number };

describe('bitnet cache', () => {
  it('lists snapshots, converted packs and local checkpoint packs; removes what a target names', async () => {
    const cacheDir = await tempDir('bitnet-cache-');
    const o = { endpoint: hub.endpoint, cacheDir };
    await resolveHubModel('acme/tiny', o);
    const convertCheckpoint = async (d: string, out: string) => void (await convertCheckpointDirectory(d, out));
    await resolveHubModel('acme/ckpt', { ...o, convertCheckpoint });
    await checkpointPack(ckpt, { cacheDir });
    const all = await listed(cacheDir);
    expect(all.entries.map((e) => [e.kind, e.repo ?? e.source, e.commit, e.refs])).toEqual([
      ['snapshot', 'acme/ckpt', C2, ['main']],
      ['converted', 'acme/ckpt', C2, ['main']],
      ['snapshot', 'acme/tiny', C1, ['main']],
      ['checkpoint', expect.stringContaining('ckpt'), undefined, undefined],
    ]);
    expect(all.entries.every((e) => e.bytes > 0)).toBe(true);
    expect(all.bytes).toBe(all.entries.reduce((a, e) => a + e.bytes, 0));
    expect((await cache(cacheDir)).stdout).toMatch(/4 entries/); // `ls` is the default

    // a revision: its snapshot, its converted pack and the ref; offline it is then gone
    const r = await cache(cacheDir, 'rm', 'acme/ckpt@main', '--json');
    expect(JSON.parse(r.stdout).removed.map((e: Listed) => e.kind)).toEqual(['snapshot', 'converted']);
    await expect(resolveHubModel('acme/ckpt', { ...o, offline: true })).rejects.toMatchObject({
      code: 'HUB_UNREACHABLE',
    });
    expect((await listed(cacheDir)).entries.map((e) => e.kind)).toEqual(['snapshot', 'checkpoint']);

    // busy: a download in progress (a live lock: held by a running process, fresh) is never cut
    const local = join(cacheDir, 'acme--tiny', 'snapshots', C1, 'other.gguf');
    await writeFile(`${local}.partial`, 'x');
    await writeFile(`${local}.lock`, JSON.stringify({ pid: process.pid, host: hostname(), token: 't' }));
    expect((await listed(cacheDir)).entries.find((e) => e.repo === 'acme/tiny')?.busy).toBe(true);
    const busy = await cache(cacheDir, 'rm', 'acme/tiny');
    expect([busy.code, busy.stderr]).toEqual([1, expect.stringContaining('CACHE_BUSY')]);
    // an interrupted download's leftovers (its process gone: no live lock) are not: they go with the entry
    await writeFile(`${local}.lock`, JSON.stringify({ pid: 2 ** 22 + 12345, host: hostname(), token: 't' }));
    expect((await listed(cacheDir)).entries.find((e) => e.repo === 'acme/tiny')?.busy).toBe(false);
    expect((await cache(cacheDir, 'rm', 'acme/tiny')).stdout).toMatch(/removed .* snapshot acme\/tiny@e+ {2}\(main\)/);
    expect(await readdir(cacheDir)).not.toContain('acme--tiny');

    expect((await cache(cacheDir, 'rm', 'checkpoints')).stdout).toMatch(/freed/);
    expect((await listed(cacheDir)).entries).toEqual([]);
  });

  it('bad targets and usage are typed errors', async () => {
    const cacheDir = await tempDir('bitnet-cache-');
    const bad = await cache(cacheDir, 'rm', '../../etc');
    expect([bad.code, bad.stderr]).toEqual([2, expect.stringContaining('Config/BAD_TARGET')]); // a usage error
    const missing = await cache(cacheDir, 'rm');
    expect([missing.code, missing.stderr]).toEqual([2, expect.stringContaining('Config/MISSING_ARGUMENT')]);
    const two = await cache(cacheDir, 'rm', 'acme/a', 'acme/b');
    expect([two.code, two.stderr]).toEqual([2, expect.stringContaining('Config/UNEXPECTED_ARGUMENT')]);
    const none = await cache(cacheDir, 'rm', 'acme/nothing');
    expect(none.stderr).toContain('Io/CACHE_NOT_FOUND');
    const usage = await cache(cacheDir, 'frob');
    expect([usage.code, usage.stderr]).toEqual([2, expect.stringContaining('Config/BAD_FLAG')]);
    expect((await cache(cacheDir, 'rm', 'acme/x@a..b')).stderr).toContain('BAD_REVISION');
  });
});
