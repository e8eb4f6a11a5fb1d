// Models out of a real S3 server (s3rver on 127.0.0.1) through @aws-sdk/client-s3 GetObject+Range,
// configured the way a deployment is: AWS_ENDPOINT_URL_S3 and BITNET_S3_FORCE_PATH_STYLE=1.

import { CreateBucketCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import S3rver from 's3rver';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ModelLoader } from '../../src/api/model-loader.ts';
import type { ByteSource } from '../../src/sources/byte-source.ts';
import { S3Source, s3ClientConfig } from '../../src/sources/s3.ts';
import { FAST_RETRY, type Fixture, isCode, logitsOf, logitsOfModel, makeFixture, sameBits, tempDir } from './util.ts';

let server: S3rver;
let client: S3Client;
let fx: Fixture;
let local: Float32Array;
const saved: Record<string, string | undefined> = {};
const ENV = {
  AWS_ENDPOINT_URL_S3: '',
  AWS_ENDPOINT_URL: undefined as string | undefined,
  BITNET_S3_FORCE_PATH_STYLE: '1',
  AWS_ACCESS_KEY_ID: 'S3RVER',
  AWS_SECRET_ACCESS_KEY: 'S3RVER',
  AWS_REGION: 'us-east-1',
};

const put = (Key: string, Body: Uint8Array) => client.send(new PutObjectCommand({ Bucket: 'models', Key, Body }));

beforeAll(async () => {
  fx = await makeFixture();
  server = new S3rver({ port: 0, address: '127.0.0.1', silent: true, directory: await tempDir('bitnet-s3-') });
  const { port } = await server.run();
  ENV.AWS_ENDPOINT_URL_S3 = `http://127.0.0.1:${port}`;
  for (const [k, v] of Object.entries(ENV)) {
    saved[k] = process.env[k];
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  client = new S3Client({ ...s3ClientConfig(), credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
  await client.send(new CreateBucketCommand({ Bucket: 'models' }));
  await put('m/model.gguf', fx.gguf);
  for (const [name, bytes] of fx.pack) await put(`pack/${name}`, bytes);
  local = await logitsOf(fx.ggufPath);
});

afterAll(async () => {
  client?.destroy();
  await server?.close();
  for (const [k, v] of Object.entries(saved)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
});

describe('S3 source (s3rver)', () => {
  it('takes the endpoint and path style from the environment', () => {
    expect(s3ClientConfig()).toEqual({ region: 'us-east-1', endpoint: ENV.AWS_ENDPOINT_URL_S3, forcePathStyle: true });
    const keep = process.env.AWS_ENDPOINT_URL_S3;
    delete process.env.AWS_ENDPOINT_URL_S3;
    process.env.AWS_ENDPOINT_URL = 'http://127.0.0.1:9';
    process.env.BITNET_S3_FORCE_PATH_STYLE = '0';
    try {
      expect(s3ClientConfig()).toMatchObject({ endpoint: 'http://127.0.0.1:9', forcePathStyle: false });
    } finally {
      process.env.AWS_ENDPOINT_URL_S3 = keep;
      delete process.env.AWS_ENDPOINT_URL;
      process.env.BITNET_S3_FORCE_PATH_STYLE = '1';
    }
  });

  it('loads a GGUF from s3:// with logits identical to the local file', async () => {
    expect(sameBits(await logitsOf('s3://models/m/model.gguf'), local)).toBe(true);
  });

  it('loads a pack from s3:// (prefix or manifest) with identical logits', async () => {
    expect(sameBits(await logitsOf('s3://models/pack/'), local)).toBe(true);
    expect(sameBits(await logitsOf('s3://models/pack/manifest.json', { validateChecksums: true }), local)).toBe(true);
  });

  it('reads exact ranges, including a single byte at 0 (never bytes=0-0)', async () => {
    const s = await S3Source.open('s3://models/m/model.gguf');
    try {
      expect(s.size).toBe(fx.gguf.length);
      expect(s.etag).toMatch(/^".+"$/);
      expect(Array.from(await s.read(0, 1))).toEqual([fx.gguf[0]]);
      expect(Array.from(await s.read(fx.gguf.length - 1, 1))).toEqual([fx.gguf[fx.gguf.length - 1]]);
      const mid = await s.read(12345, 40_000);
      expect(Buffer.from(mid).equals(Buffer.from(fx.gguf.subarray(12345, 52345)))).toBe(true);
    } finally {
      await s.close();
    }
  });

  it('splits long reads into several GetObject calls', async () => {
    const s = await S3Source.open('s3://models/m/model.gguf', { maxRequestBytes: 65_536 });
    try {
      const all = await s.read(0, s.size);
      expect(Buffer.from(all).equals(Buffer.from(fx.gguf))).toBe(true);
    } finally {
      await s.close();
    }
  });

  it('fails with SOURCE_CHANGED when the object is replaced mid-load', async () => {
    await put('m/changing.gguf', fx.gguf);
    const s3 = await S3Source.open('s3://models/m/changing.gguf', { retry: FAST_RETRY });
    let reads = 0;
    const src: ByteSource = {
      size: s3.size,
      etag: s3.etag,
      description: s3.description,
      read: async (o, l, opts) => {
        if (++reads === 4) {
          const changed = fx.gguf.slice();
          changed[changed.length - 1] ^= 1;
          await put('m/changing.gguf', changed);
        }
        return s3.read(o, l, opts);
      },
      close: () => s3.close(),
    };
    await expect(new ModelLoader().load(src).then(logitsOfModel)).rejects.toSatisfy(isCode('SOURCE_CHANGED'));
  });

  it('maps a missing key or bucket to NOT_FOUND', async () => {
    await expect(logitsOf('s3://models/nope.gguf')).rejects.toSatisfy(isCode('NOT_FOUND'));
    await expect(logitsOf('s3://no-such-bucket/x.gguf')).rejects.toSatisfy(isCode('NOT_FOUND'));
  });
});
