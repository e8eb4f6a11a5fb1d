// S3 credential and authorization failures are final: no retries, a typed error at once.
// Missing credentials (the SDK's provider chain fails before any request) are S3_NO_CREDENTIALS;
// refused ones ACCESS_DENIED. A real server (s3rver) serves the object to good credentials.

import { CreateBucketCommand, PutObjectCommand, S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';
import S3rver from 's3rver';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BitNetError } from '../../src/errors.ts';
import { S3Source } from '../../src/sources/s3.ts';
import { tempDir } from './util.ts';

let server: S3rver;
let endpoint: string;
const GOOD = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };

beforeAll(async () => {
  server = new S3rver({ port: 0, address: '127.0.0.1', silent: true, directory: await tempDir('bitnet-s3-auth-') });
  const { port } = await server.run();
  endpoint = `http://127.0.0.1:${port}`;
  const c = new S3Client({ region: 'us-east-1', endpoint, forcePathStyle: true, credentials: GOOD });
  await c.send(new CreateBucketCommand({ Bucket: 'models' }));
  await c.send(new PutObjectCommand({ Bucket: 'models', Key: 'm.bin', Body: new Uint8Array(1000).fill(7) }));
  c.destroy();
});

afterAll(async () => {
  await server?.close();
});

function client(credentials: S3ClientConfig['credentials']): S3Client {
  return new S3Client({ region: 'us-east-1', endpoint, forcePathStyle: true, maxAttempts: 1, credentials });
}

/** Opens with a counting retry policy; returns the error and how many retries were made. */
async function openFailure(c: S3Client): Promise<{ error: BitNetError; retries: number }> {
  let retries = 0;
  try {
    await S3Source.open('s3://models/m.bin', {
      client: c,
      retry: { retries: 4, baseDelayMs: 1, maxDelayMs: 2, onRetry: () => void retries++ },
    });
  } catch (e) {
    expect(e).toBeInstanceOf(BitNetError);
    return { error: e as BitNetError, retries };
  } finally {
    c.destroy();
  }
  throw new Error('open succeeded');
}

describe('S3 credential errors fail fast', () => {
  it('no credentials: S3_NO_CREDENTIALS, no retry', async () => {
    // What the SDK's default chain throws when it finds nothing (its class is CredentialsProviderError).
    const none = async () => {
      throw Object.assign(new Error('Could not load credentials from any providers'), {
        name: 'CredentialsProviderError',
      });
    };
    const { error, retries } = await openFailure(client(none));
    expect(retries).toBe(0);
    expect(error).toMatchObject({ kind: 'Io', code: 'S3_NO_CREDENTIALS' });
    expect(error.details.retryable).toBeUndefined();
  });

  it('refused credentials (InvalidAccessKeyId, SignatureDoesNotMatch, ExpiredToken, 403…): ACCESS_DENIED, no retry', async () => {
    // s3rver accepts any signature, so the store's refusals are injected as the SDK surfaces them:
    // a service exception with the S3 error code as its name and the HTTP status in $metadata.
    for (const [name, status] of [
      ['InvalidAccessKeyId', 403],
      ['SignatureDoesNotMatch', 403],
      ['AccessDenied', 403],
      ['Forbidden', 403], // a HEAD's 403 has no body: only the status names it
      ['ExpiredToken', 400],
      ['InvalidAccessKeyId', undefined],
      ['UnknownError', 401],
    ] as const) {
      const c = client(GOOD);
      c.middlewareStack.add(
        () => async () => {
          throw Object.assign(new Error(name), { name, $metadata: { httpStatusCode: status } });
        },
        { step: 'initialize' },
      );
      const { error, retries } = await openFailure(c);
      expect(retries, `${name} ${status}`).toBe(0);
      expect(error, `${name} ${status}`).toMatchObject({ kind: 'Io', code: 'ACCESS_DENIED' });
    }
  });

  it('a refused read (after a good open) is ACCESS_DENIED without retries too', async () => {
    let denied = false;
    let retries = 0;
    // Good credentials for HeadObject, then the store refuses the GetObject.
    const c = client(GOOD);
    c.middlewareStack.add(
      (next, ctx) => async (args) => {
        if (ctx.commandName === 'GetObjectCommand') {
          denied = true;
          throw Object.assign(new Error('Access Denied'), { name: 'AccessDenied', $metadata: { httpStatusCode: 403 } });
        }
        return next(args);
      },
      { step: 'initialize' },
    );
    const s = await S3Source.open('s3://models/m.bin', {
      client: c,
      retry: { retries: 4, baseDelayMs: 1, maxDelayMs: 2, onRetry: () => void retries++ },
    });
    try {
      await expect(s.read(0, 10)).rejects.toMatchObject({ kind: 'Io', code: 'ACCESS_DENIED' });
      expect(denied).toBe(true);
      expect(retries).toBe(0);
    } finally {
      await s.close();
      c.destroy();
    }
  });

  it('good credentials still read', async () => {
    const c = client(GOOD);
    const s = await S3Source.open('s3://models/m.bin', { client: c });
    try {
      expect(Array.from(await s.read(10, 3))).toEqual([7, 7, 7]);
    } finally {
      await s.close();
      c.destroy();
    }
  });
});
