// fromPretrained on a hub repo that holds only a safetensors checkpoint (as microsoft/bitnet-b1.58-2B-4T
// does): the checkpoint is downloaded, converted once per commit into the cache, and served from
// there, offline too. A local checkpoint directory loads the same way. The pack equals
// `bitnet convert`'s, so the logits equal the GGUF's.

import { execFile } from 'node:child_process';
import { readdir, readFile, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { BitNetModel } from '../../src/api/bitnet-model.ts';
import { GenerationConfig } from '../../src/api/generation-config.ts';
import { encodeGGUF } from '../../src/gguf/writer.ts';
import { synthModel } from '../../src/model/synth.ts';
import { convertCheckpointDirectory } from '../../src/shards/convert-checkpoint.ts';
import { MemorySource } from '../../src/sources/byte-source.ts';
import { resolveHubModel } from '../../src/sources/hf-hub.ts';
import { FakeHub } from '../sources/hf-hub-fake.ts';
import { isCode, logitsOf, sameBits, tempDir } from '../sources/util.ts';
import { HF_SHAPE, LLAMA_CONFIG, writeHfCheckpoint } from './hf-fixture.ts';

const SEED = 31;
const C1 = 'a'.repeat(40);
const C2 = 'b'.repeat(40);
const hub = new FakeHub();
let ggufBytes: Uint8Array;
let files: Record<string, Buffer>;

async function dirFiles(dir: string): Promise<Record<string, Buffer>> {
  const out: Record<string, Buffer> = {};
  for (const f of await readdir(dir)) out[f] = await readFile(join(dir, f));
  return out;
}

beforeAll(async () => {
  const m = synthModel({ ...HF_SHAPE, seed: SEED });
  ggufBytes = await encodeGGUF(m.metadata, m.tensors);
  files = await dirFiles(await writeHfCheckpoint(SEED, { weights: 'packed', floats: 'exact' }));
  await hub.start();
  hub.put('acme/ckpt', 'main', C1, { 'README.md': Buffer.from('# ckpt'), ...files });
  // A checkpoint the converter refuses: another model type.
  hub.put('acme/llama', 'main', C2, { ...files, 'config.json': Buffer.from(JSON.stringify(LLAMA_CONFIG)) });
});
afterAll(() => hub.stop());
beforeEach(() => hub.reset());

const counting = () => {
  const calls: string[] = [];
  const convert = async (dir: string, out: string) => {
    calls.push(dir);
    await convertCheckpointDirectory(dir, out);
  };
  return { calls, convert };
};

describe('fromPretrained on a safetensors checkpoint repo', () => {
  it('converts once per commit into the cache; the logits are the GGUF’s bit for bit; later calls and offline reuse it', async () => {
    const cacheDir = await tempDir('bitnet-hubck-');
    const { calls, convert } = counting();
    const o = { endpoint: hub.endpoint, cacheDir, convertCheckpoint: convert };
    const manifest = await resolveHubModel('acme/ckpt', o);
    expect(manifest).toBe(join(cacheDir, 'acme--ckpt', 'converted', C1, 'manifest.json'));
    expect(calls).toEqual([join(cacheDir, 'acme--ckpt', 'snapshots', C1)]);
    expect(sameBits(await logitsOf(manifest), await logitsOf(new MemorySource(ggufBytes)))).toBe(true);
    // the snapshot holds the hub's files only; the pack is complete and alone in converted/
    expect((await readdir(join(cacheDir, 'acme--ckpt', 'snapshots', C1))).sort()).toEqual(Object.keys(files).sort());
    expect(await readdir(join(cacheDir, 'acme--ckpt', 'converted'))).toEqual([C1]);

    hub.hits.length = 0;
    expect(await resolveHubModel('acme/ckpt', o)).toBe(manifest);
    expect(calls).toHaveLength(1);
    expect(hub.hits.map((h) => h.url.split('?')[0])).toEqual(['/api/models/acme/ckpt/revision/main']);
    hub.hits.length = 0;
    expect(await resolveHubModel('acme/ckpt', { ...o, offline: true })).toBe(manifest);
    expect(await resolveHubModel('acme/ckpt', { ...o, endpoint: 'http://127.0.0.1:1', attempts: 1 })).toBe(manifest);
    expect([hub.hits, calls.length]).toEqual([[], 1]);
  });

  it('BitNetModel.fromPretrained serves it: the same text as the GGUF', async () => {
    const cacheDir = await tempDir('bitnet-hubck-');
    const seen: { phase: string; name: string; doneBytes: number; totalBytes?: number }[] = [];
    const onProgress = (p: (typeof seen)[number]) => void seen.push(p);
    const model = await BitNetModel.fromPretrainedWithConfig(
      'acme/ckpt',
      { hfEndpoint: hub.endpoint, cacheDir },
      { onProgress },
    );
    // each checkpoint file's download, then the conversion, each ending complete
    const last = (phase: string, name: string) => seen.filter((p) => p.phase === phase && p.name === name).at(-1);
    for (const f of Object.keys(files)) expect(last('download', f)?.doneBytes, f).toBe(files[f].length);
    const conv = seen.filter((p) => p.phase === 'convert');
    expect(conv.length).toBeGreaterThan(0);
    expect(conv.at(-1)?.doneBytes).toBe(conv.at(-1)?.totalBytes);
    seen.length = 0;
    await BitNetModel.fromPretrainedWithConfig('acme/ckpt', { hfEndpoint: hub.endpoint, cacheDir }, { onProgress });
    expect(seen).toEqual([]); // all cached
    const gguf = await BitNetModel.fromFile(new MemorySource(ggufBytes, 'gguf'));
    const cfg = GenerationConfig.greedy().withMaxNewTokens(8);
    expect(await model.generate('the function returns', cfg)).toBe(await gguf.generate('the function returns', cfg));
    // opting out keeps the old answer
    const off = await BitNetModel.fromPretrainedWithConfig(
      'acme/ckpt',
      { hfEndpoint: hub.endpoint, cacheDir: await tempDir('bitnet-hubck-') },
      { convertCheckpoints: false },
    ).catch((e) => e);
    expect(off.code).toBe('HUB_NO_GGUF');
    expect(off.details.checkpoint).toBe(true);
  });

  it('a checkpoint the converter refuses is its typed error, and leaves nothing in converted/', async () => {
    const cacheDir = await tempDir('bitnet-hubck-');
    const { calls, convert } = counting();
    const o = { endpoint: hub.endpoint, cacheDir, convertCheckpoint: convert };
    await expect(resolveHubModel('acme/llama', o)).rejects.toSatisfy(isCode('HF_UNSUPPORTED_MODEL'));
    expect(calls).toHaveLength(1);
    expect(await readdir(join(cacheDir, 'acme--llama', 'converted'))).toEqual([]);
    // nothing cached to serve offline either
    await expect(resolveHubModel('acme/llama', { ...o, offline: true })).rejects.toSatisfy(isCode('HUB_UNREACHABLE'));
  });
});

describe('a local checkpoint directory as a model location', () => {
  it('loads through a pack converted once into the cache; an edited checkpoint is converted again, its old pack removed', async () => {
    const dir = await writeHfCheckpoint(SEED, { weights: 'packed', floats: 'exact' });
    const cache = await tempDir('bitnet-ckcache-');
    process.env.BITNET_CACHE_DIR = cache;
    try {
      expect(sameBits(await logitsOf(dir), await logitsOf(new MemorySource(ggufBytes)))).toBe(true);
      const packs = await readdir(join(cache, 'checkpoints'));
      expect(packs).toHaveLength(1);
      const manifest = join(cache, 'checkpoints', packs[0], 'manifest.json');
      const made = (await stat(manifest)).mtimeMs;
      // the API, with a trailing slash: the same pack, not converted again
      const model = await BitNetModel.fromFile(`${dir}/`);
      const gguf = await BitNetModel.fromFile(new MemorySource(ggufBytes, 'gguf'));
      const cfg = GenerationConfig.greedy().withMaxNewTokens(6);
      expect(await model.generate('the function', cfg)).toBe(await gguf.generate('the function', cfg));
      expect([await readdir(join(cache, 'checkpoints')), (await stat(manifest)).mtimeMs]).toEqual([packs, made]);
      // an edited checkpoint: a new pack, and the old one (of files that no longer exist) removed
      await utimes(join(dir, 'config.json'), new Date(), new Date(Date.now() + 5000));
      await logitsOf(dir);
      const now = await readdir(join(cache, 'checkpoints'));
      expect([now.length, now.includes(packs[0])]).toEqual([1, false]);
      // another checkpoint directory's pack is left alone
      const other = await writeHfCheckpoint(SEED + 1, { weights: 'packed', floats: 'exact' });
      await logitsOf(other);
      const both = await readdir(join(cache, 'checkpoints'));
      expect([both.length, both.includes(now[0])]).toEqual([2, true]);
      // ModelConfig.cacheDir (the hub's setting) wins over the environment
      const own = await tempDir('bitnet-ckcache-');
      await BitNetModel.fromFile(dir, { cacheDir: own });
      expect(await readdir(join(own, 'checkpoints'))).toHaveLength(1);
    } finally {
      delete process.env.BITNET_CACHE_DIR;
    }
  });

  it('the CLI shows the conversion once, then loads the pack; a directory that is neither is FILE_NOT_FOUND', async () => {
    const dir = await writeHfCheckpoint(SEED, { weights: 'packed', floats: 'exact' });
    const env = { ...process.env, BITNET_CACHE_DIR: await tempDir('bitnet-ckcache-') };
    const gen = ['generate', '--prompt-ids', '1,2,3', '--max-tokens', '5', '--temperature', '0', '--json'];
    const run = (model: string) =>
      promisify(execFile)(process.execPath, ['bin/bitnet.js', ...gen, '--model', model], { env }).then(
        (r) => ({ code: 0, ...r }),
        (e: { code: number; stdout: string; stderr: string }) => e,
      );
    const gguf = join(await tempDir('bitnet-ckcache-'), 'm.gguf');
    await writeFile(gguf, ggufBytes);
    const want = JSON.parse((await run(gguf)).stdout).tokenIds;
    const first = await run(dir);
    expect(JSON.parse(first.stdout).tokenIds).toEqual(want);
    expect(first.stderr).toMatch(/^convert .*ckpt \[#+/m);
    const second = await run(`${dir}/`);
    expect(JSON.parse(second.stdout).tokenIds).toEqual(want);
    expect(second.stderr).not.toMatch(/convert/);
    const neither = await run(await tempDir('bitnet-ckcache-'));
    expect([neither.code !== 0, neither.stderr]).toEqual([true, expect.stringContaining('FILE_NOT_FOUND')]);
  });
});
