// HttpSource against servers that misbehave in ways the stall timer cannot see: a trickle (a few
// bytes a second, so the transfer never stalls) and a body compressed although identity was asked.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BitNetError } from '../../src/errors.ts';
import { DEFAULT_MIN_BYTES_PER_SECOND, HttpSource } from '../../src/sources/http.ts';

const FILE = Uint8Array.from({ length: 200_000 }, (_, i) => (i * 31 + 7) & 0xff);
type Mode = 'trickle' | 'trickle-after-probe' | 'steady' | 'gzip-200' | 'gzip-206';

let server: Server;
let base: string;
const sockets = new Set<Socket>();
const timers = new Set<ReturnType<typeof setInterval>>();

/** Writes `bytes` in pieces of `piece` every `everyMs`, then ends (unless the client left). */
function drip(res: ServerResponse, bytes: Uint8Array, piece: number, everyMs: number) {
  let at = 0;
  const t = setInterval(() => {
    if (res.destroyed || at >= bytes.length) {
      clearInterval(t);
      timers.delete(t);
      if (!res.destroyed) res.end();
      return;
    }
    res.write(bytes.subarray(at, at + piece));
    at += piece;
  }, everyMs);
  timers.add(t);
}

function handle(req: IncomingMessage, res: ServerResponse) {
  const mode = req.url!.slice(1).split('/')[0] as Mode;
  const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
  if (mode === 'gzip-200') {
    // a small file, Range ignored, compressed although the client asked for identity
    const small = FILE.subarray(0, 4419);
    const z = gzipSync(small);
    res.writeHead(200, { 'content-encoding': 'gzip', 'content-length': z.byteLength, etag: '"g"' });
    res.end(z);
    return;
  }
  const a = Number(m![1]);
  const b = Math.min(Number(m![2]), FILE.length - 1);
  const body = FILE.subarray(a, b + 1);
  const headers = {
    'content-range': `bytes ${a}-${b}/${FILE.length}`,
    'content-length': body.byteLength,
    etag: '"v1"',
  };
  if (mode === 'gzip-206') {
    const z = gzipSync(body);
    res.writeHead(206, { ...headers, 'content-encoding': 'gzip', 'content-length': z.byteLength });
    res.end(z);
    return;
  }
  res.writeHead(206, headers);
  if (mode === 'trickle' || (mode === 'trickle-after-probe' && a > 0))
    drip(res, body, 2, 20); // ~100 B/s
  else if (mode === 'steady')
    drip(res, body, 4096, 20); // ~200 KiB/s: slow, but well above the floor
  else res.end(body);
}

beforeAll(async () => {
  server = createServer(handle);
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  for (const t of timers) clearInterval(t);
  for (const s of sockets) s.destroy();
  await new Promise<void>((r) => server.close(() => r()));
});

// Bytes arrive every 20 ms, so a 1 s stall timeout never fires; the floor is judged every 250 ms.
const retry = { retries: 1, baseDelayMs: 1, maxDelayMs: 2, stallTimeoutMs: 1000 };
const slowOpts = { retry, minBytesPerSecond: 1000, speedWindowMs: 250, probeBytes: 4096 };

async function failure(p: Promise<unknown>): Promise<BitNetError> {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(BitNetError);
  return e as BitNetError;
}

describe('HttpSource: too slow to be useful', () => {
  it('a trickle while opening fails with HTTP_TOO_SLOW (retried, then RETRIES_EXHAUSTED), not never', async () => {
    const e = await failure(HttpSource.open(`${base}/trickle/m.gguf`, slowOpts));
    expect(e.code).toBe('RETRIES_EXHAUSTED');
    expect(e.details).toMatchObject({ attempts: 2, lastCode: 'HTTP_TOO_SLOW' });
    const cause = e.cause as BitNetError;
    expect(cause.code).toBe('HTTP_TOO_SLOW');
    expect(cause.details).toMatchObject({ minBytesPerSecond: 1000, windowMs: 250 });
    expect(cause.message).toMatch(/too slow: \d+ bytes in 0\.25 s, under 1000 bytes\/s/);
  });

  it('a trickle on a later read fails the same way', async () => {
    const src = await HttpSource.open(`${base}/trickle-after-probe/m.gguf`, slowOpts);
    const e = await failure(src.read(100_000, 50_000));
    expect([e.code, e.details.lastCode]).toEqual(['RETRIES_EXHAUSTED', 'HTTP_TOO_SLOW']);
  });

  it('a slow but steady transfer (above the floor) reads every byte, with the default floor too', async () => {
    const src = await HttpSource.open(`${base}/steady/m.gguf`, slowOpts);
    expect(await src.read(50_000, 60_000)).toEqual(FILE.subarray(50_000, 110_000));
    expect(DEFAULT_MIN_BYTES_PER_SECOND).toBe(4096);
    const dflt = await HttpSource.open(`${base}/steady/m.gguf`, { retry, speedWindowMs: 250, probeBytes: 4096 });
    expect(await dflt.read(0, FILE.length)).toEqual(FILE);
  });

  it('minBytesPerSecond: 0 turns the floor off', async () => {
    const src = await HttpSource.open(`${base}/trickle-after-probe/m.gguf`, { ...slowOpts, minBytesPerSecond: 0 });
    expect(await src.read(4096, 60)).toEqual(FILE.subarray(4096, 4156)); // 60 bytes at ~100 B/s
  });
});

describe('HttpSource: a compressed body although identity was asked', () => {
  it('200 + Content-Encoding: gzip is HTTP_CONTENT_ENCODED (was a misleading BODY_TOO_LONG)', async () => {
    const e = await failure(HttpSource.open(`${base}/gzip-200/small.gguf`, { retry }));
    expect(e.code).toBe('HTTP_CONTENT_ENCODED');
    expect(e.details).toMatchObject({ status: 200, contentEncoding: 'gzip' });
    expect(e.message).toMatch(/compressed the body \(Content-Encoding: gzip\) although identity was asked for/);
  });

  it('206 + Content-Encoding: gzip is refused the same way', async () => {
    const e = await failure(HttpSource.open(`${base}/gzip-206/m.gguf`, { retry }));
    expect([e.code, e.details.status]).toEqual(['HTTP_CONTENT_ENCODED', 206]);
  });
});
