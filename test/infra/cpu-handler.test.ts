// The CPU function as deployed: the bundle the stack's NodejsFunction built with the local esbuild
// (the asset in cdk.out), run under a stand-in for the Lambda Node runtime's `awslambda` global,
// with a stand-in for the Parameters and Secrets extension on localhost. Checks that the client
// keys come from the secret named by BITNET_API_KEYS_SECRET_ARN, that a secret that cannot be read
// gives a 503 and is tried again on the next request, and that the model is read from a shard pack
// in S3 (s3rver) given as BITNET_MODEL=s3://bucket/prefix/, the form the stack sets. Plus
// secrets.ts on its own.
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { pathToFileURL } from 'node:url';
import { CreateBucketCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import S3rver from 's3rver';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { resolveSecretEnv, SecretError } from '../../infra/lambda/secrets.ts';
import { makeFixture, tempDir } from '../sources/util.ts';
import { cleanup, idOf, synth } from './synth.ts';

const TOKEN = 'session-token-for-test';
const API_KEYS_ARN = 'arn:aws:secretsmanager:us-east-1:123456789012:secret:ApiKeys-abc123';
const MISSING_ARN = 'arn:aws:secretsmanager:us-east-1:123456789012:secret:Later-def456';

/** The extension: GET /secretsmanager/get?secretId=ARN with the session token header. */
class FakeExtension {
  readonly secrets = new Map<string, string>([[API_KEYS_ARN, ' key-one,key-two \n']]);
  readonly calls: string[] = [];
  server!: Server;
  port = 0;

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      const url = new URL(req.url!, 'http://localhost');
      const id = url.searchParams.get('secretId') ?? '';
      this.calls.push(id);
      if (url.pathname !== '/secretsmanager/get' || req.headers['x-aws-parameters-secrets-token'] !== TOKEN) {
        res.writeHead(401).end('unauthorized');
        return;
      }
      const value = this.secrets.get(id);
      if (value === undefined) {
        res.writeHead(404).end(JSON.stringify({ message: 'ResourceNotFoundException' }));
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ ARN: id, SecretString: value }));
    });
    this.server.listen(0); // all interfaces, IPv4 and IPv6: the handler asks for `localhost`
    await once(this.server, 'listening');
    this.port = (this.server.address() as AddressInfo).port;
  }
}

type Handler = (event: unknown, stream: PassThrough, context: unknown) => Promise<unknown>;

/** One Function URL request through the handler; the stand-in writes the prelude, 8 NULs, the body. */
async function invoke(handler: Handler, path: string, headers: Record<string, string> = {}, body?: unknown) {
  const stream = new PassThrough();
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  const method = body === undefined ? 'GET' : 'POST';
  await handler(
    {
      version: '2.0',
      rawPath: path,
      rawQueryString: '',
      headers: {
        host: 'x.lambda-url.us-east-1.on.aws',
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        ...headers,
      },
      requestContext: {
        domainName: 'x.lambda-url.us-east-1.on.aws',
        http: { method, path, sourceIp: '127.0.0.1' },
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      isBase64Encoded: false,
    },
    stream,
    {},
  );
  const all = Buffer.concat(chunks);
  const cut = all.indexOf(Buffer.alloc(8));
  const meta = JSON.parse(all.subarray(0, cut).toString()) as { statusCode: number };
  return { status: meta.statusCode, body: all.subarray(cut + 8).toString() };
}

describe('the deployed CPU handler (the NodejsFunction bundle)', () => {
  const ext = new FakeExtension();
  let bundle: string;
  const saved = { ...process.env };
  let instance = 0;
  const load = async (): Promise<Handler> =>
    (await import(`${pathToFileURL(bundle).href}?instance=${++instance}`)).handler as Handler;

  beforeAll(async () => {
    const s = synth({ gpu: 'none' });
    const fn = idOf(s, 'AWS::Lambda::Function', 'CpuFunction');
    const key = (s.json.Resources[fn].Properties!.Code as { S3Key: string }).S3Key.replace(/\.zip$/, '');
    bundle = join(s.outdir, `asset.${key}`, 'index.mjs');
    expect(existsSync(bundle)).toBe(true);
    await ext.start();
    (globalThis as { awslambda?: unknown }).awslambda = {
      streamifyResponse: <F>(fn: F) => fn,
      HttpResponseStream: {
        from(stream: PassThrough, meta: unknown) {
          stream.write(JSON.stringify(meta));
          stream.write(new Uint8Array(8));
          return stream;
        },
      },
    };
    Object.assign(process.env, {
      AWS_SESSION_TOKEN: TOKEN,
      PARAMETERS_SECRETS_EXTENSION_HTTP_PORT: String(ext.port),
    });
    delete process.env.BITNET_API_KEYS;
    delete process.env.BITNET_MODEL; // the demo model (random weights), built in memory
  });

  afterAll(async () => {
    delete (globalThis as { awslambda?: unknown }).awslambda;
    for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
    Object.assign(process.env, saved);
    ext.server?.close();
    cleanup();
  });

  it('reads the client keys from Secrets Manager on the first request, then serves with them', async () => {
    process.env.BITNET_API_KEYS_SECRET_ARN = API_KEYS_ARN;
    const handler = await load();
    expect(ext.calls).toEqual([]); // nothing at init
    const denied = await invoke(handler, '/v1/models');
    expect(denied.status).toBe(401);
    expect(ext.calls).toEqual([API_KEYS_ARN]);
    const ok = await invoke(handler, '/v1/models', { authorization: 'Bearer key-two' });
    expect(ok.status).toBe(200);
    expect(JSON.parse(ok.body).data[0].id).toBe('bitnet-demo-random-weights');
    expect((await invoke(handler, '/v1/models', { authorization: 'Bearer key-one' })).status).toBe(200);
    expect((await invoke(handler, '/readyz')).status).toBe(200);
    expect(ext.calls).toHaveLength(1); // read once per execution environment
  });

  it('answers 503 while the secret cannot be read, and tries again on the next request', async () => {
    process.env.BITNET_API_KEYS_SECRET_ARN = MISSING_ARN;
    delete process.env.BITNET_API_KEYS;
    const handler = await load();
    const log = vi.spyOn(console, 'error').mockImplementation(() => {});
    const failed = await invoke(handler, '/v1/models', { authorization: 'Bearer later-key' });
    const logged = log.mock.calls.map((c) => String(c[1]));
    log.mockRestore();
    expect(failed.status).toBe(503);
    expect(JSON.parse(failed.body).error.code).toBe('SECRETS_UNAVAILABLE');
    expect(logged.join('\n')).toMatch(/ResourceNotFoundException/);
    ext.secrets.set(MISSING_ARN, 'later-key');
    const ok = await invoke(handler, '/v1/models', { authorization: 'Bearer later-key' });
    expect(ok.status).toBe(200);
  });

  it('serves a shard pack from S3 (BITNET_MODEL=s3://bucket/prefix/), through the bundled AWS SDK', async () => {
    const fx = await makeFixture();
    const server = new S3rver({ port: 0, address: '127.0.0.1', silent: true, directory: await tempDir('bitnet-s3-') });
    const { port } = await server.run();
    const endpoint = `http://127.0.0.1:${port}`;
    const client = new S3Client({
      region: 'us-east-1',
      endpoint,
      forcePathStyle: true,
      credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
    });
    try {
      await client.send(new CreateBucketCommand({ Bucket: 'shards' }));
      // Shards first, the manifest last (docs/deploy.md).
      const files = [...fx.pack].sort(([a], [b]) => Number(a === 'manifest.json') - Number(b === 'manifest.json'));
      for (const [name, bytes] of files)
        await client.send(new PutObjectCommand({ Bucket: 'shards', Key: `models/tiny/${name}`, Body: bytes }));
      Object.assign(process.env, {
        BITNET_MODEL: 's3://shards/models/tiny/',
        BITNET_MODEL_ID: 'tiny',
        BITNET_API_KEYS_SECRET_ARN: API_KEYS_ARN,
        AWS_ENDPOINT_URL_S3: endpoint,
        BITNET_S3_FORCE_PATH_STYLE: '1',
        AWS_ACCESS_KEY_ID: 'S3RVER',
        AWS_SECRET_ACCESS_KEY: 'S3RVER',
        AWS_REGION: 'us-east-1',
      });
      delete process.env.BITNET_API_KEYS;
      const handler = await load();
      const auth = { authorization: 'Bearer key-one' };
      const models = await invoke(handler, '/v1/models', auth);
      expect(JSON.parse(models.body).data[0].id).toBe('tiny');
      const r = await invoke(handler, '/v1/completions', auth, { model: 'tiny', prompt: 'hello', max_tokens: 3 });
      expect(r.status, r.body).toBe(200);
      expect(JSON.parse(r.body)).toMatchObject({ object: 'text_completion', model: 'tiny' });
      expect(JSON.parse((await invoke(handler, '/readyz')).body)).toMatchObject({ status: 'ready', backend: 'wasm' });
    } finally {
      client.destroy();
      await server.close();
      delete process.env.BITNET_MODEL;
    }
  });
});

describe('resolveSecretEnv', () => {
  const reply = (status: number, body: unknown) =>
    new Response(typeof body === 'string' ? body : JSON.stringify(body), { status });

  it('sets NAME from NAME_SECRET_ARN, trimmed, through the extension with the session token', async () => {
    const seen: [string, string | null][] = [];
    const env: Record<string, string | undefined> = {
      AWS_SESSION_TOKEN: 't',
      BITNET_API_KEYS_SECRET_ARN: 'arn:a',
      BITNET_GPU_API_KEY_SECRET_ARN: 'arn:g',
    };
    const set = await resolveSecretEnv(env, {
      fetch: async (url, init) => {
        seen.push([String(url), new Headers(init?.headers).get('x-aws-parameters-secrets-token')]);
        return reply(200, { SecretString: String(url).endsWith('arn%3Aa') ? 'k1,k2\n' : 'gpu' });
      },
    });
    expect(set).toEqual(['BITNET_API_KEYS', 'BITNET_GPU_API_KEY']);
    expect(env).toMatchObject({ BITNET_API_KEYS: 'k1,k2', BITNET_GPU_API_KEY: 'gpu' });
    expect(seen).toEqual([
      ['http://localhost:2773/secretsmanager/get?secretId=arn%3Aa', 't'],
      ['http://localhost:2773/secretsmanager/get?secretId=arn%3Ag', 't'],
    ]);
  });

  it('retries while the extension starts (400, 5xx, network), not on 403/404', async () => {
    let n = 0;
    const env = { AWS_SESSION_TOKEN: 't', BITNET_API_KEYS_SECRET_ARN: 'arn:a' } as Record<string, string | undefined>;
    await resolveSecretEnv(env, {
      backoffMs: 1,
      fetch: async () => {
        n++;
        if (n === 1) throw new TypeError('fetch failed');
        if (n === 2) return reply(400, 'not ready');
        if (n === 3) return reply(500, 'oops');
        return reply(200, { SecretString: 'k' });
      },
    });
    expect([n, env.BITNET_API_KEYS]).toEqual([4, 'k']);
    n = 0;
    await expect(
      resolveSecretEnv(
        { AWS_SESSION_TOKEN: 't', BITNET_API_KEYS_SECRET_ARN: 'arn:a' },
        {
          backoffMs: 1,
          fetch: async () => {
            n++;
            return reply(403, 'AccessDenied');
          },
        },
      ),
    ).rejects.toThrow(/HTTP 403: AccessDenied/);
    expect(n).toBe(1);
  });

  it('refuses outside Lambda and for binary secrets; does nothing without *_SECRET_ARN', async () => {
    await expect(resolveSecretEnv({ BITNET_API_KEYS_SECRET_ARN: 'arn:a' })).rejects.toThrow(SecretError);
    await expect(
      resolveSecretEnv(
        { AWS_SESSION_TOKEN: 't', BITNET_API_KEYS_SECRET_ARN: 'arn:a' },
        { fetch: async () => reply(200, { SecretBinary: 'AAAA' }) },
      ),
    ).rejects.toThrow(/binary/);
    const env = { BITNET_API_KEYS: 'literal' };
    expect(await resolveSecretEnv(env)).toEqual([]);
    expect(env.BITNET_API_KEYS).toBe('literal');
  });
});
