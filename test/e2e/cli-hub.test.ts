// `hf://owner/repo[@revision][/file]` model locations in the CLI, against a local stand-in for the
// hub (never the internet): resolved through the cache as fromPretrained does, checkpoints
// converted once, offline served from the cache, bad locations refused before any request.
import { execFile, spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { parseHubLocation } from '../../src/cli/model-location.ts';
import { encodeGGUF } from '../../src/gguf/writer.ts';
import { synthModel } from '../../src/model/synth.ts';
import { HF_SHAPE, writeHfCheckpoint } from '../shards/hf-fixture.ts';
import { FakeHub } from '../sources/hf-hub-fake.ts';
import { tempDir } from '../sources/util.ts';

const run = promisify(execFile);
const hub = new FakeHub();
const SEED = 31;
const C1 = 'c'.repeat(40);
const C2 = 'd'.repeat(40);
let gguf: string;

beforeAll(async () => {
  const m = synthModel({ ...HF_SHAPE, seed: SEED });
  const bytes = Buffer.from(await encodeGGUF(m.metadata, m.tensors));
  gguf = join(await tempDir('bitnet-clihub-'), 'm.gguf');
  await (await import('node:fs/promises')).writeFile(gguf, bytes);
  const ckptDir = await writeHfCheckpoint(SEED, { weights: 'packed', floats: 'exact' });
  const ckpt: Record<string, Buffer> = {};
  for (const f of await (await import('node:fs/promises')).readdir(ckptDir)) ckpt[f] = await readFile(join(ckptDir, f));
  await hub.start();
  hub.put('acme/tiny-gguf', 'main', C1, { 'ggml-model-i2_s.gguf': bytes, 'README.md': Buffer.from('# tiny') });
  hub.put('acme/ckpt', 'main', C2, ckpt);
});
afterAll(() => hub.stop());
beforeEach(() => hub.reset());

async function cli(args: string[], env: Record<string, string>) {
  try {
    const r = await run(process.execPath, ['bin/bitnet.js', ...args], {
      env: { ...process.env, HF_ENDPOINT: hub.endpoint, ...env },
      maxBuffer: 64 << 20,
    });
    return { code: 0, ...r };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, stdout: x.stdout, stderr: x.stderr };
  }
}

const gen = ['--prompt-ids', '1,2,3', '--max-tokens', '6', '--temperature', '0', '--json'];

describe('hf:// locations', () => {
  it('parse as huggingface_hub writes them; anything else is not one', () => {
    expect(parseHubLocation('hf://acme/tiny')).toEqual({ repo: 'acme/tiny', revision: undefined, filename: undefined });
    expect(parseHubLocation('hf://acme/tiny@refs%2Fpr%2F1/sub/m%25.gguf')).toEqual({
      repo: 'acme/tiny',
      revision: 'refs/pr/1',
      filename: 'sub/m%.gguf',
    });
    expect(parseHubLocation('HF://acme/tiny@v1.0')?.revision).toBe('v1.0');
    expect(parseHubLocation('/models/hf://x')).toBeUndefined();
    expect(parseHubLocation('acme/tiny')).toBeUndefined();
  });

  it('generate and logits on a GGUF repo give what the local file gives; offline uses the cache', async () => {
    const env = { BITNET_CACHE_DIR: await tempDir('bitnet-clihub-') };
    const local = JSON.parse((await cli(['generate', '--model', gguf, ...gen], env)).stdout);
    const viaHub = await cli(['generate', '--model', 'hf://acme/tiny-gguf', ...gen], env);
    expect(viaHub.code, viaHub.stderr).toBe(0);
    expect(JSON.parse(viaHub.stdout).tokenIds).toEqual(local.tokenIds);
    const logits = ['logits', '--prompt-ids', '1,2', '--json'];
    const a = await cli([...logits, '--model', gguf], env);
    const b = await cli([...logits, '--model', 'hf://acme/tiny-gguf@main/ggml-model-i2_s.gguf'], env);
    expect(b.stdout).toBe(a.stdout);
    hub.hits.length = 0;
    const offline = await cli(['generate', '--model', 'hf://acme/tiny-gguf', ...gen], { ...env, HF_HUB_OFFLINE: '1' });
    expect(JSON.parse(offline.stdout).tokenIds).toEqual(local.tokenIds);
    expect(hub.hits).toEqual([]);
  });

  it('a safetensors-only repo is converted once and generates what the GGUF does; header-only commands refuse it', async () => {
    const env = { BITNET_CACHE_DIR: await tempDir('bitnet-clihub-') };
    const local = JSON.parse((await cli(['generate', '--model', gguf, ...gen], env)).stdout);
    const r = await cli(['generate', '--model', 'hf://acme/ckpt', ...gen], env);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).tokenIds).toEqual(local.tokenIds);
    const manifest = join(env.BITNET_CACHE_DIR, 'acme--ckpt', 'converted', C2, 'manifest.json');
    const before = await readFile(manifest, 'utf8');
    expect(JSON.parse((await cli(['generate', '--model', 'hf://acme/ckpt', ...gen], env)).stdout).tokenIds).toEqual(
      local.tokenIds,
    );
    expect(await readFile(manifest, 'utf8')).toBe(before);
    const inspect = await cli(['inspect', 'hf://acme/ckpt', '--json'], env);
    expect(inspect.code).not.toBe(0);
    expect(inspect.stderr).toMatch(/HUB_NO_GGUF/);
  });

  it('serve takes BITNET_MODEL=hf://…', async () => {
    const env = { BITNET_CACHE_DIR: await tempDir('bitnet-clihub-') };
    const child = spawn(process.execPath, ['bin/bitnet.js', 'serve', '--port', '0', '--json'], {
      env: {
        ...process.env,
        HF_ENDPOINT: hub.endpoint,
        BITNET_API_KEYS: '',
        BITNET_MODEL: 'hf://acme/tiny-gguf',
        ...env,
      },
    });
    try {
      let out = '';
      const line = await new Promise<{ url: string; model: string }>((resolve, reject) => {
        child.stdout.on('data', (d) => {
          out += d;
          const l = out.split('\n').find((x) => x.startsWith('{'));
          if (l) resolve(JSON.parse(l));
        });
        child.on('exit', (c) => reject(new Error(`serve exited ${c}`)));
      });
      const models = await (await fetch(`${line.url}/v1/models`)).json();
      expect(models.data.map((m: { id: string }) => m.id)).toEqual([line.model]);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('bad hf:// locations are refused before any request', async () => {
    const env = { BITNET_CACHE_DIR: await tempDir('bitnet-clihub-') };
    for (const [loc, code] of [
      ['hf://acme', 'BAD_LOCATION'],
      ['hf://acme/tiny-gguf//x.gguf', 'BAD_LOCATION'],
      ['hf://acme/tiny-gguf@a..b', 'BAD_REVISION'],
      ['hf://acme/tiny-gguf@main/%zz.gguf', 'BAD_LOCATION'],
    ]) {
      const r = await cli(['generate', '--model', loc, ...gen], env);
      expect([loc, r.code !== 0, r.stderr.includes(code)]).toEqual([loc, true, true]);
    }
    expect(hub.hits).toEqual([]);
  });
});
