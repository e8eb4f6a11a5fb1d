// What the hub client says when things go wrong: listing retries (Retry-After), the hub's
// X-Error-Code, expired CDN URLs, bad endpoints and redacted credentials, ambiguous repos, bad repo
// ids, and safetensors repos (which must be converted first).

import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { BitNetModel } from '../../src/api/bitnet-model.ts';
import { BitNetError } from '../../src/errors.ts';
import {
  downloadHubFile,
  parseEndpoint,
  parseRetryAfter,
  pullHubRepo,
  resolveHubModel,
} from '../../src/sources/hf-hub.ts';
import { FakeHub } from './hf-hub-fake.ts';
import { isCode, tempDir } from './util.ts';

const C1 = '1'.repeat(40);
const GGUF = 'ggml-model-i2_s.gguf';
const m1 = randomBytes(50_000);
const hub = new FakeHub();

beforeAll(async () => {
  await hub.start();
  hub.put('acme/tiny', 'main', C1, { [GGUF]: m1 });
  hub.put('acme/multi', 'main', C1, { 'a-i2_s.gguf': m1, 'b-tq2_0.gguf': m1 });
  hub.put('acme/st', 'main', C1, {
    'README.md': Buffer.from('# st'),
    'config.json': Buffer.from('{"model_type":"bitnet"}'),
    'model-00001-of-00002.safetensors': randomBytes(1000),
    'model-00002-of-00002.safetensors': randomBytes(1000),
    'model.safetensors.index.json': Buffer.from('{"weight_map":{}}'),
    'tokenizer.json': Buffer.from('{}'),
    'tokenizer_config.json': Buffer.from('{}'),
  });
});
afterAll(() => hub.stop());
beforeEach(() => hub.reset());

const opts = async (more: object = {}) => ({
  endpoint: hub.endpoint,
  cacheDir: await tempDir('bitnet-hube-'),
  ...more,
});
const fail = (p: Promise<unknown>) =>
  p.then(
    () => {
      throw new Error('expected a failure');
    },
    (e) => {
      expect(e).toBeInstanceOf(BitNetError);
      return e as BitNetError;
    },
  );
const listings = () => hub.hits.filter((h) => h.url.startsWith('/api/'));

describe('retries', () => {
  it('the listing is retried on 503 and 429, honouring Retry-After', async () => {
    hub.cfg.status.push({ prefix: '/api/', status: 503, times: 2, retryAfter: '0' });
    await resolveHubModel('acme/tiny', await opts());
    expect(listings().map((h) => h.status)).toEqual([503, 503, 200]);
    hub.reset();
    hub.cfg.status.push({ prefix: '/api/', status: 429, times: 1, retryAfter: '0' });
    const r = await pullHubRepo('acme/tiny', await opts());
    expect(r.files[0].bytes).toBe(m1.length);
    expect(listings().map((h) => h.status)).toEqual([429, 200]);
  });

  it('a 5xx on every try ends as HUB_HTTP_ERROR after `attempts`, a 4xx at once', async () => {
    hub.cfg.status.push({ prefix: '/api/', status: 503, times: 10, retryAfter: '0' });
    const e = await fail(pullHubRepo('acme/tiny', await opts({ attempts: 3 })));
    expect(e.code).toBe('HUB_HTTP_ERROR');
    expect(e.details).toMatchObject({ status: 503, retryAfterMs: 0 });
    expect(listings()).toHaveLength(3);
    hub.reset();
    hub.cfg.status.push({ prefix: '/api/', status: 400, times: 10 });
    await fail(pullHubRepo('acme/tiny', await opts()));
    expect(listings()).toHaveLength(1);
  });

  it('file downloads honour Retry-After too', async () => {
    hub.cfg.status.push({ prefix: '/acme/tiny/resolve/', status: 503, times: 1, retryAfter: '0' });
    await resolveHubModel('acme/tiny', await opts());
    expect(hub.hits.filter((h) => h.url.includes('/resolve/')).map((h) => h.status)).toEqual([503, 302]);
  });

  it('parseRetryAfter reads seconds and HTTP dates, bounded', () => {
    const now = Date.parse('2025-01-01T00:00:00Z');
    expect(parseRetryAfter('2', now)).toBe(2000);
    expect(parseRetryAfter('0', now)).toBe(0);
    expect(parseRetryAfter('86400', now)).toBe(30_000);
    expect(parseRetryAfter('Wed, 01 Jan 2025 00:00:05 GMT', now)).toBe(5000);
    expect(parseRetryAfter('Tue, 31 Dec 2024 00:00:00 GMT', now)).toBe(0);
    expect(parseRetryAfter('soon', now)).toBeUndefined();
    expect(parseRetryAfter(null, now)).toBeUndefined();
  });
});

describe("the hub's refusals", () => {
  it('GatedRepo: accept the license and set HF_TOKEN', async () => {
    hub.cfg.gated.add('acme/tiny');
    const e = await fail(resolveHubModel('acme/tiny', await opts({ token: 'hf_x' })));
    expect(e.code).toBe('HUB_UNAUTHORIZED');
    expect(e.message).toMatch(/acme\/tiny is gated: accept its license on the hub, and set HF_TOKEN/);
    expect(e.details.hubErrorCode).toBe('GatedRepo');
  });

  it('an anonymous 401 on an unknown repo says "not found, or private"; with a token, the token is blamed', async () => {
    hub.cfg.anonymous401 = true;
    const prev = process.env.HF_TOKEN;
    delete process.env.HF_TOKEN;
    try {
      const e = await fail(resolveHubModel('acme/nope', await opts()));
      expect(e.code).toBe('HUB_UNAUTHORIZED');
      expect(e.message).toMatch(/acme\/nope not found, or private: check the repo id, or set HF_TOKEN/);
    } finally {
      if (prev !== undefined) process.env.HF_TOKEN = prev;
    }
    hub.cfg.status.push({ prefix: '/api/', status: 401, times: 1 });
    const t = await fail(resolveHubModel('acme/tiny', await opts({ token: 'hf_bad' })));
    expect(t.code).toBe('HUB_UNAUTHORIZED');
    expect(t.message).toMatch(/refused the token/);
  });

  it('a missing revision, file or repo is HUB_NOT_FOUND naming what is missing', async () => {
    const rev = await fail(resolveHubModel('acme/tiny', await opts({ revision: 'v9' })));
    expect(rev.code).toBe('HUB_NOT_FOUND');
    expect(rev.message).toMatch(/acme\/tiny has no revision "v9"/);
    expect(rev.details).toMatchObject({ revision: 'v9', hubErrorCode: 'RevisionNotFound' });
    // Without X-Error-Code the revision is still named.
    hub.cfg.status.push({ prefix: '/api/', status: 404, times: 1 });
    const plain = await fail(resolveHubModel('acme/tiny', await opts({ revision: 'v2' })));
    expect(plain.message).toMatch(/revision "v2"/);
    const o = await opts();
    const entry = await fail(downloadHubFile('acme/tiny', 'nope.gguf', `${o.cacheDir}/nope.gguf`, o));
    expect(entry.code).toBe('HUB_NOT_FOUND');
    expect(entry.message).toMatch(/has no file nope\.gguf at revision "main"/);
    const named = await fail(resolveHubModel('acme/tiny', await opts({ filename: 'nope.gguf' })));
    expect(named.code).toBe('HUB_NOT_FOUND');
    const repo = await fail(resolveHubModel('acme/nope', await opts({ token: 'hf_x' })));
    expect(repo.message).toMatch(/repository acme\/nope not found/);
  });

  it('an expired signed CDN URL (403) is asked for again once; twice is HUB_CDN_FORBIDDEN with the CDN url', async () => {
    hub.cfg.cdn403 = 1;
    await resolveHubModel('acme/tiny', await opts());
    expect(hub.hits.filter((h) => h.url.includes('/resolve/'))).toHaveLength(2);
    hub.reset();
    hub.cfg.cdn403 = 2;
    const e = await fail(resolveHubModel('acme/tiny', await opts()));
    expect(e.code).toBe('HUB_CDN_FORBIDDEN');
    expect(e.message).toMatch(/refused the signed URL.*may have expired/);
    expect(String(e.details.url).startsWith(`${hub.cdnBase}/blobs/`)).toBe(true);
    expect(JSON.stringify(e.toJSON())).not.toContain('secret-signature');
  });
});

describe('endpoints, ids and names', () => {
  it('a malformed endpoint is BAD_ENDPOINT (Config); an empty HF_ENDPOINT counts as unset', async () => {
    for (const endpoint of [
      'not a url',
      '127.0.0.1:18140',
      'ftp://127.0.0.1:18140',
      'localhost:8080',
      'http://h/?q=1',
      'https://user:p%zz@host',
      'https://us%e0r:pw@host',
    ]) {
      const e = await fail(resolveHubModel('acme/tiny', await opts({ endpoint })));
      expect(e.code, endpoint).toBe('BAD_ENDPOINT');
      expect(e.kind).toBe('Config');
      await expect(pullHubRepo('acme/tiny', await opts({ endpoint }))).rejects.toSatisfy(isCode('BAD_ENDPOINT'));
    }
    const prev = process.env.HF_ENDPOINT;
    process.env.HF_ENDPOINT = 'not a url';
    try {
      await expect(BitNetModel.fromPretrainedWithConfig('acme/tiny', { cacheDir: await tempDir() })).rejects.toSatisfy(
        isCode('BAD_ENDPOINT'),
      );
      process.env.HF_ENDPOINT = '';
      expect(parseEndpoint().base).toBe('https://huggingface.co');
    } finally {
      if (prev === undefined) delete process.env.HF_ENDPOINT;
      else process.env.HF_ENDPOINT = prev;
    }
    expect(parseEndpoint('http://127.0.0.1:9/mirror/').base).toBe('http://127.0.0.1:9/mirror');
  });

  it("an endpoint's user:password is sent as Basic auth to the hub only, and never shown", async () => {
    const url = new URL(hub.endpoint);
    const endpoint = `http://user:s3cret@${url.host}`;
    const prev = process.env.HF_TOKEN;
    delete process.env.HF_TOKEN;
    try {
      await resolveHubModel('acme/tiny', await opts({ endpoint }));
      const basic = `Basic ${Buffer.from('user:s3cret').toString('base64')}`;
      expect(hub.hits.filter((h) => h.host === 'hub').every((h) => h.auth === basic)).toBe(true);
      expect(hub.hits.filter((h) => h.host === 'cdn').every((h) => h.auth === undefined)).toBe(true);
      for (const call of [
        async () => resolveHubModel('acme/nope', await opts({ endpoint })),
        async () =>
          resolveHubModel('acme/tiny', await opts({ endpoint: 'http://user:s3cret@127.0.0.1:1', attempts: 1 })),
        async () => resolveHubModel('acme/tiny', await opts({ endpoint: 'ftp://user:s3cret@host' })),
      ]) {
        const e = await fail(call());
        expect(e.message).not.toContain('s3cret');
        expect(JSON.stringify(e.toJSON())).not.toContain('s3cret');
      }
    } finally {
      if (prev !== undefined) process.env.HF_TOKEN = prev;
    }
  });

  it('HUB_AMBIGUOUS_FILE names the option and the flag; filename picks one', async () => {
    const e = await fail(resolveHubModel('acme/multi', await opts()));
    expect(e.code).toBe('HUB_AMBIGUOUS_FILE');
    expect(e.message).toContain('`filename`');
    expect(e.message).toContain('--file');
    expect(e.details.files).toEqual(['a-i2_s.gguf', 'b-tq2_0.gguf']);
    expect(await resolveHubModel('acme/multi', await opts({ filename: 'b-tq2_0.gguf' }))).toMatch(/b-tq2_0\.gguf$/);
  });

  it('bad repo ids and file names are refused before any request', async () => {
    for (const id of [
      'acme',
      'acme/tiny/extra',
      'acme/',
      '/tiny',
      'acme/tiny ',
      'acme/../x',
      'a--b/c',
      'acme/tiny.',
      'https://huggingface.co/acme/tiny',
    ]) {
      await expect(resolveHubModel(id, await opts()), id).rejects.toSatisfy(isCode('BAD_REPO_ID'));
    }
    for (const filename of ['../x.gguf', 'a/../../x.gguf', '/etc/x', 'a\\b.gguf', 'a\nb.gguf']) {
      await expect(resolveHubModel('acme/tiny', await opts({ filename })), filename).rejects.toSatisfy(
        isCode('BAD_FILENAME'),
      );
    }
    expect(hub.hits).toEqual([]);
  });

  it('pull honours HF_HUB_OFFLINE: refused without a request; a bad value is INVALID_ENV', async () => {
    const o = await opts();
    process.env.HF_HUB_OFFLINE = '1';
    try {
      const e = await fail(pullHubRepo('acme/tiny', o));
      expect([e.code, e.details.offline]).toEqual(['HUB_UNREACHABLE', true]);
      process.env.HF_HUB_OFFLINE = 'maybe';
      expect((await fail(pullHubRepo('acme/tiny', o))).code).toBe('INVALID_ENV');
    } finally {
      delete process.env.HF_HUB_OFFLINE;
    }
    expect(hub.hits).toEqual([]);
  });

  it('offline through fromPretrainedWithConfig: no request, HUB_UNREACHABLE on an empty cache', async () => {
    const e = await fail(
      BitNetModel.fromPretrainedWithConfig(
        'acme/tiny',
        { hfEndpoint: hub.endpoint, cacheDir: await tempDir() },
        { offline: true },
      ),
    );
    expect(e.code).toBe('HUB_UNREACHABLE');
    expect(hub.hits).toEqual([]);
  });
});

describe('safetensors repos', () => {
  it('fromPretrained says they must be converted', async () => {
    const e = await fail(resolveHubModel('acme/st', await opts()));
    expect(e.code).toBe('HUB_NO_GGUF');
    expect(e.details.checkpoint).toBe(true);
    expect(e.message).toMatch(/safetensors checkpoint.*bitnet convert --model DIR --out PACK/);
  });

  it('pull downloads the checkpoint files convert reads, checked, into one directory', async () => {
    const o = await opts();
    const r = await pullHubRepo('acme/st', o);
    expect(r.model).toBeUndefined();
    expect(r.checkpoint).toBe(r.dir);
    expect((await readdir(r.dir)).sort()).toEqual([
      'config.json',
      'model-00001-of-00002.safetensors',
      'model-00002-of-00002.safetensors',
      'model.safetensors.index.json',
      'tokenizer.json',
      'tokenizer_config.json',
    ]);
    expect(r.files.every((f) => f.sha256 || f.gitSha1)).toBe(true);
  });
});
