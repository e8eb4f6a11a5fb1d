// Models over HTTP Range, against a local server with fault injection: every fault either recovers
// (and the logits are still bit-for-bit those of the local file) or ends in a typed error.

import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { BitNetError } from '../../src/errors.ts';
import { readGGUF } from '../../src/gguf/reader.ts';
import { convertToPack, ggufInput, MemoryPackSink } from '../../src/shards/convert.ts';
import { MemorySource } from '../../src/sources/byte-source.ts';
import { HttpSource } from '../../src/sources/http.ts';
import { openSource } from '../../src/sources/open.ts';
import { synthBytes } from '../helpers/models.ts';
import { type Fault, RangeServer } from './range-server.ts';
import { FAST_RETRY, type Fixture, IDS, isCode, logitsOf, makeFixture, sameBits } from './util.ts';

let server: RangeServer;
let fx: Fixture;
let local: Float32Array;

beforeAll(async () => {
  fx = await makeFixture();
  server = new RangeServer();
  server.put('/m/model.gguf', fx.gguf);
  for (const [name, bytes] of fx.pack) server.put(`/p/${name}`, bytes);
  await server.start();
  local = await logitsOf(fx.ggufPath);
});
afterAll(() => server.stop());
beforeEach(() => {
  server.clearFaults();
  server.honourIfMatch = true;
  server.sendEtag = true;
  server.retryAfter = undefined;
});

const remote = (path: string, extra: Record<string, unknown> = {}) =>
  logitsOf(`${server.url}${path}`, { sourceOptions: { retry: FAST_RETRY }, ...extra });
const faulted = () => server.requests.filter((r) => r.fault);
const shardRequests = () => server.requests.filter((r) => r.path.startsWith('/p/shard-'));

describe('HTTP Range source', () => {
  it('loads a GGUF with logits identical to the local file', async () => {
    expect(sameBits(await remote('/m/model.gguf'), local)).toBe(true);
    // Every request was a range request answered with 206.
    expect(server.requests.every((r) => r.range && r.status === 206)).toBe(true);
  });

  it('loads a converted pack (directory URL or manifest URL) with identical logits, one request per layer', async () => {
    expect(sameBits(await remote('/p/'), local)).toBe(true);
    const m = JSON.parse(new TextDecoder().decode(fx.pack.get('manifest.json')));
    // One probe per shard when it is opened (size and ETag), then one range request per group.
    const probes = shardRequests().filter((r) => r.range === 'bytes=0-65535');
    expect(probes).toHaveLength(m.shards.length);
    expect(shardRequests().length - probes.length).toBe(m.groups.length);
    server.clearFaults();
    expect(sameBits(await remote('/p/manifest.json', { validateChecksums: true }), local)).toBe(true);
  });

  const recovering: [string, Fault, string, Record<string, unknown>?][] = [
    ['503 on open', { kind: '5xx', anyRequest: true, times: 2 }, '/m/model.gguf'],
    ['503 twice on a weight read', { kind: '5xx', after: 6, times: 2 }, '/m/model.gguf'],
    ['stalled headers', { kind: 'stall-headers', after: 4 }, '/m/model.gguf'],
    ['stall mid-body', { kind: 'stall-body', after: 3 }, '/m/model.gguf'],
    ['truncated bodies', { kind: 'truncate', after: 2, times: 3 }, '/m/model.gguf'],
    ['503 on a shard', { kind: '5xx', path: '/p/shard-00001.bin', times: 2 }, '/p/'],
    ['truncated shard read', { kind: 'truncate', path: '/p/shard-00000.bin', times: 2 }, '/p/'],
    [
      'corrupt bytes once (checksums on: the group is re-read)',
      { kind: 'corrupt', path: '/p/shard-00002.bin' },
      '/p/',
      { validateChecksums: true },
    ],
  ];
  it.each(recovering)('recovers from %s with identical logits', async (_name, fault, path, extra) => {
    server.fault(fault);
    expect(sameBits(await remote(path, extra), local)).toBe(true);
    expect(faulted().length).toBe(fault.times ?? 1);
  });

  const final: [string, Fault, string, string, Record<string, unknown>?][] = [
    ['ETag change mid-load (412 on If-Match)', { kind: 'etag-change', after: 5 }, '/m/model.gguf', 'SOURCE_CHANGED'],
    [
      'ETag change on a shard',
      { kind: 'etag-change', path: '/p/shard-00001.bin', after: 1, anyRequest: true },
      '/p/',
      'SOURCE_CHANGED',
    ],
    [
      'a server that ignores Range',
      { kind: 'ignore-range', anyRequest: true },
      '/m/model.gguf',
      'HTTP_RANGE_NOT_SUPPORTED',
    ],
    ['200 for a later range', { kind: 'ignore-range', after: 4 }, '/m/model.gguf', 'HTTP_RANGE_NOT_SUPPORTED'],
    ['a wrong Content-Range', { kind: 'bad-range', after: 4 }, '/m/model.gguf', 'HTTP_BAD_CONTENT_RANGE'],
    ['503 for ever', { kind: '5xx', after: 4, times: Infinity }, '/m/model.gguf', 'RETRIES_EXHAUSTED'],
    ['stalls for ever', { kind: 'stall-headers', after: 4, times: Infinity }, '/m/model.gguf', 'RETRIES_EXHAUSTED'],
    ['404', { kind: '404', anyRequest: true }, '/m/model.gguf', 'NOT_FOUND'],
    ['a missing shard', { kind: '404', path: '/p/shard-00001.bin', anyRequest: true }, '/p/', 'NOT_FOUND'],
    [
      'a corrupt shard (bad checksum)',
      { kind: 'corrupt', path: '/p/shard-00001.bin', times: Infinity },
      '/p/',
      'CHECKSUM_MISMATCH',
      { validateChecksums: true },
    ],
  ];
  it.each(final)('ends %s in a typed error', async (_name, fault, path, code, extra) => {
    server.fault(fault);
    const err = await remote(path, extra).catch((e) => e);
    expect(err).toBeInstanceOf(BitNetError);
    expect(err.code).toBe(code);
  });

  it('reports why retries ran out', async () => {
    server.fault({ kind: '5xx', after: 4, times: Infinity });
    const e = await remote('/m/model.gguf').catch((x) => x);
    expect(e.details).toMatchObject({ attempts: 5, lastCode: 'HTTP_STATUS' });
    server.clearFaults();
    server.fault({ kind: 'stall-headers', after: 4, times: Infinity });
    expect((await remote('/m/model.gguf').catch((x) => x)).details.lastCode).toBe('HTTP_STALLED');
  });

  it('notices a changed ETag even when the server ignores If-Match', async () => {
    server.honourIfMatch = false;
    server.fault({ kind: 'etag-change', after: 5 });
    await expect(remote('/m/model.gguf')).rejects.toSatisfy(isCode('SOURCE_CHANGED'));
  });

  it('notices a changed Last-Modified when the server sends no ETag and ignores If-Unmodified-Since', async () => {
    // the version pinned at open is the date; a later answer from a newer file must not be mixed in
    server.sendEtag = false;
    server.honourIfMatch = false;
    server.fault({ kind: 'etag-change', after: 5 });
    const err = await remote('/m/model.gguf').catch((e) => e);
    expect(err.code).toBe('SOURCE_CHANGED');
    expect(err.details.pinnedLastModified).not.toBe(err.details.lastModified);
    server.put('/m/model.gguf', fx.gguf); // the original bytes again, for the tests after this one
  });

  it('a server that names versions by Last-Modified only: an unchanged file reads as usual', async () => {
    server.sendEtag = false;
    const src = await HttpSource.open(`${server.url}/m/model.gguf`, { retry: FAST_RETRY, probeBytes: 16 });
    const bytes = await src.read(100, 5000);
    expect(Buffer.from(bytes).equals(Buffer.from(fx.gguf.subarray(100, 5100)))).toBe(true);
  });

  it('user:password in the URL is sent as Basic authorization, and never shown', async () => {
    const url = new URL(`${server.url}/m/model.gguf`);
    url.username = 'reader';
    url.password = 's3cret:x';
    const src = await HttpSource.open(url, { retry: FAST_RETRY, probeBytes: 16 });
    await src.read(100, 5000);
    const basic = `Basic ${Buffer.from('reader:s3cret:x').toString('base64')}`;
    expect(server.requests.map((r) => r.auth)).toEqual(server.requests.map(() => basic));
    expect(src.description).not.toContain('s3cret');
    server.fault({ kind: '404', times: Infinity, anyRequest: true });
    const err = await HttpSource.open(url, { retry: FAST_RETRY }).catch((e) => e);
    expect(err.code).toBe('NOT_FOUND');
    expect(JSON.stringify({ m: err.message, d: err.details })).not.toContain('s3cret');
  });

  it("a 503's Retry-After is waited at least (the backoff alone would retry within milliseconds)", async () => {
    server.retryAfter = '1';
    server.fault({ kind: '5xx', times: 1, anyRequest: true });
    const waits: number[] = [];
    const src = await HttpSource.open(`${server.url}/m/model.gguf`, {
      retry: { ...FAST_RETRY, onRetry: (r) => waits.push(r.delayMs), delayFor: undefined },
      probeBytes: 16,
    });
    expect(src.size).toBe(fx.gguf.length);
    expect(waits).toEqual([1000]);
  });

  it('resumes a truncated part after the bytes already received', async () => {
    const src = await HttpSource.open(`${server.url}/m/model.gguf`, { retry: FAST_RETRY, probeBytes: 16 });
    server.clearFaults();
    server.fault({ kind: 'truncate' });
    const bytes = await src.read(1000, 200_000);
    expect(Buffer.from(bytes).equals(Buffer.from(fx.gguf.subarray(1000, 201_000)))).toBe(true);
    const [first, second] = server.requests;
    expect(first.range).toBe('bytes=1000-200999');
    expect(second.range).toBe('bytes=101000-200999'); // half arrived before the socket died
  });

  it('splits long reads into parts and honours AbortSignal', async () => {
    const src = await HttpSource.open(`${server.url}/m/model.gguf`, { maxRequestBytes: 50_000, parallel: 2 });
    server.clearFaults();
    const bytes = await src.read(0, fx.gguf.length);
    expect(Buffer.from(bytes).equals(Buffer.from(fx.gguf))).toBe(true);
    expect(server.requests.length).toBe(Math.ceil(fx.gguf.length / 50_000));

    const ctl = new AbortController();
    server.fault({ kind: 'stall-headers', times: Infinity });
    const p = src.read(70_000, 1000, { signal: ctl.signal });
    setTimeout(() => ctl.abort(), 20);
    await expect(p).rejects.toSatisfy(isCode('ABORTED'));
    await expect(src.read(0, 10, { signal: AbortSignal.abort() })).rejects.toSatisfy(isCode('ABORTED'));
  });

  it('opens siblings with the same options, and refuses names that leave the directory', async () => {
    const m = await openSource(`${server.url}/p/manifest.json`, { retry: FAST_RETRY });
    const s = await (m as unknown as { sibling(n: string): Promise<{ size: number }> }).sibling('shard-00000.bin');
    expect(s.size).toBe(fx.pack.get('shard-00000.bin')!.length);
    await expect(
      (m as unknown as { sibling(n: string): Promise<unknown> }).sibling('../m/model.gguf'),
    ).rejects.toSatisfy(isCode('PACK_BAD_FILE_NAME'));
  });
});

describe('bitnet logits (CLI) over HTTP', () => {
  it('prints the same logits for the local file, the GGUF URL and the pack URL', async () => {
    const run = async (model: string) =>
      (
        await promisify(execFile)(
          process.execPath,
          ['bin/bitnet.js', 'logits', '--model', model, '--prompt-ids', IDS.join(','), '--json'],
          { maxBuffer: 64 << 20 },
        )
      ).stdout;
    const [a, b, c] = await Promise.all([
      run(fx.ggufPath),
      run(`${server.url}/m/model.gguf`),
      run(`${server.url}/p/manifest.json`),
    ]);
    expect(JSON.parse(a).logits).toHaveLength(IDS.length);
    expect(b).toBe(a);
    expect(c).toBe(a);
  });
});

describe('memory budget over HTTP', () => {
  it('refuses a model over the budget before any weight byte is requested (GGUF and pack)', async () => {
    // vocab 4096: a 2 MiB embedding, so the weights extend past the header reader's 1 MiB window.
    const big = await synthBytes({ qtype: 'i2_s', seed: 5, vocab: 4096 });
    const { dataOffset } = await readGGUF(new MemorySource(big));
    server.put('/big/model.gguf', big);
    const sink = new MemoryPackSink();
    await convertToPack(await ggufInput(new MemorySource(big)), sink, { shardSize: 1 << 20 });
    for (const [n, b] of sink.files) server.put(`/big/pack/${n}`, b);

    server.clearFaults();
    const e = await remote('/big/model.gguf', { maxMemoryBytes: 1_000_000 }).catch((x) => x);
    expect(e).toMatchObject({ kind: 'Memory', code: 'MODEL_TOO_LARGE', details: { budget: 1_000_000 } });
    expect(e.details.needed).toBeGreaterThan(2 << 20);
    expect(e.message).toMatch(/need .*budget/);
    const starts = server.requests.map((r) => Number(/bytes=(\d+)/.exec(r.range ?? '')?.[1]));
    expect(starts.every((s) => s < dataOffset)).toBe(true);

    server.clearFaults();
    await expect(remote('/big/pack/', { maxMemoryBytes: 1_000_000 })).rejects.toSatisfy(isCode('MODEL_TOO_LARGE'));
    expect(server.requests.length).toBeGreaterThan(0);
    expect(server.requests.every((r) => r.path === '/big/pack/manifest.json')).toBe(true);
  });
});
