// fromPretrained against a local stand-in for the Hugging Face hub's URL scheme (never the internet).

import { mkdtemp, readdir, readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BitNetError, BitNetModel, GenerationConfig } from 'bitnet-edge';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { synthBytes } from '../helpers/models.ts';

let server: Server;
let endpoint: string;
const hits: string[] = [];
let model: Uint8Array;
const COMMIT = 'c0ffee'.padEnd(40, '0');

beforeAll(async () => {
  model = await synthBytes({ qtype: 'i2_s', seed: 4, arch: 'bitnet-b1.58' });
  server = createServer((req, res) => {
    hits.push(`${req.method} ${req.url} ${req.headers.authorization ?? ''}`);
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    if (path === '/api/models/acme/tiny-bitnet/revision/main') {
      res.setHeader('content-type', 'application/json');
      res.end(
        JSON.stringify({
          sha: COMMIT,
          siblings: [{ rfilename: 'README.md' }, { rfilename: 'ggml-model-i2_s.gguf' }, { rfilename: 'other.gguf' }],
        }),
      );
    } else if (path === `/acme/tiny-bitnet/resolve/${COMMIT}/ggml-model-i2_s.gguf`) {
      res.setHeader('content-length', String(model.length));
      res.end(model);
    } else if (req.url?.startsWith('/api/models/acme/private')) {
      res.statusCode = 401;
      res.end('{}');
    } else {
      res.statusCode = 404;
      res.end('not found');
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

describe('fromPretrained', () => {
  it('resolves owner/repo through the hub URL scheme, caches, and runs', async () => {
    const cacheDir = await mkdtemp(join(tmpdir(), 'bitnet-hub-'));
    const cfg = { hfEndpoint: endpoint, cacheDir, hfToken: 'tok123' };
    const m = await BitNetModel.fromPretrainedWithConfig('acme/tiny-bitnet', cfg);
    expect(m.modelInfo().architecture).toBe('bitnet-b1.58');
    expect(hits.some((h) => h.includes(`/resolve/${COMMIT}/ggml-model-i2_s.gguf`) && h.includes('Bearer tok123'))).toBe(
      true,
    );
    // Cached by commit: snapshots/{commit}/, with refs/main naming the commit.
    expect(await readdir(join(cacheDir, 'acme--tiny-bitnet', 'snapshots', COMMIT))).toEqual(['ggml-model-i2_s.gguf']);
    expect(await readFile(join(cacheDir, 'acme--tiny-bitnet', 'refs', 'main'), 'utf8')).toBe(`${COMMIT}\n`);
    const before = hits.length;
    const again = await BitNetModel.fromPretrainedWithConfig('acme/tiny-bitnet', cfg);
    expect(hits.length).toBe(before + 1); // listing only: the file came from the cache
    const g = GenerationConfig.greedy().withMaxNewTokens(4);
    expect(await again.generate('a', g)).toBe(await m.generate('a', g));
  });

  it('honours HF_ENDPOINT', async () => {
    const cacheDir = await mkdtemp(join(tmpdir(), 'bitnet-hub-'));
    process.env.HF_ENDPOINT = endpoint;
    try {
      const m = await BitNetModel.fromPretrainedWithConfig('acme/tiny-bitnet', { cacheDir });
      expect(m.modelInfo().vocabSize).toBe(300);
    } finally {
      delete process.env.HF_ENDPOINT;
    }
  });

  it('maps hub errors to typed errors', async () => {
    const cacheDir = await mkdtemp(join(tmpdir(), 'bitnet-hub-'));
    const is = (code: string) => (e: unknown) => e instanceof BitNetError && e.code === code;
    await expect(
      BitNetModel.fromPretrainedWithConfig('acme/missing', { hfEndpoint: endpoint, cacheDir }),
    ).rejects.toSatisfy(is('HUB_NOT_FOUND'));
    await expect(
      BitNetModel.fromPretrainedWithConfig('acme/private', { hfEndpoint: endpoint, cacheDir }),
    ).rejects.toSatisfy(is('HUB_UNAUTHORIZED'));
    await expect(
      BitNetModel.fromPretrainedWithConfig('not a repo', { hfEndpoint: endpoint, cacheDir }),
    ).rejects.toSatisfy(is('BAD_REPO_ID'));
    await expect(
      BitNetModel.fromPretrainedWithConfig('acme/tiny-bitnet', { hfEndpoint: 'http://127.0.0.1:1', cacheDir }),
    ).rejects.toSatisfy(is('HUB_UNREACHABLE'));
  });
});
