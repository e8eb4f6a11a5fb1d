/**
 * A Range-capable HTTP file server on 127.0.0.1 with fault injection, for the HTTP source tests.
 *
 * Serves `files` (path → bytes) with strong ETags, `Range: bytes=a-b` / `bytes=a-` (206 +
 * Content-Range), `If-Match` (412), `If-Range` (a stale validator gets the whole file, 200) and
 * HEAD; with `token` set, requests without `Authorization: Bearer <token>` get 401. Faults are consumed in order by the requests they
 * match (`path`, only ranged requests unless `anyRequest`, from the `after`-th matching request on):
 *   5xx           503, no body
 *   stall-headers never answers (the client's stall timer must fire)
 *   stall-body    headers and half the body, then nothing
 *   truncate      headers with the full Content-Length, half the body, then the socket is closed
 *   etag-change   the file is replaced (new bytes and ETag) before this request is served
 *   ignore-range  200 with the whole file
 *   bad-range     206 with a Content-Range for other bytes
 *   corrupt       one byte of the body flipped
 *   404           not found
 * Every request is recorded. `stop()` destroys open sockets (stalled ones included).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/** How long a truncated response stays open after its half body was sent (see 'truncate'). */
export const TRUNCATE_GRACE_MS = 250;

export type FaultKind =
  | '5xx'
  | 'stall-headers'
  | 'stall-body'
  | 'truncate'
  | 'etag-change'
  | 'ignore-range'
  | 'bad-range'
  | 'corrupt'
  | '404';

export interface Fault {
  kind: FaultKind;
  path?: string;
  /** How many requests it hits (default 1; Infinity for a permanent fault). */
  times?: number;
  /** Skip this many matching requests first. */
  after?: number;
  /** Also hit requests without a Range header (default: ranged requests only). */
  anyRequest?: boolean;
}

export interface Served {
  method: string;
  path: string;
  range?: string;
  status: number;
  fault?: FaultKind;
  auth?: string;
}

export class RangeServer {
  readonly files = new Map<string, { bytes: Uint8Array; etag: string; modified: string }>();
  readonly requests: Served[] = [];
  private faults: (Fault & { left: number; seen: number })[] = [];
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private version = 0;
  /** Answer a stale If-Match with 412 (off: a server that ignores it; the ETag header must give the change away). */
  honourIfMatch = true;
  /** When set, every request must carry this bearer token. */
  token: string | undefined = undefined;
  /** Send ETag headers (off: a server that names versions by Last-Modified only). */
  sendEtag = true;
  /** Retry-After on the '5xx' fault's 503. */
  retryAfter: string | undefined = undefined;
  url = '';

  put(path: string, bytes: Uint8Array): void {
    // each version a minute later than the one before (Last-Modified has 1 s resolution)
    const modified = new Date(Date.UTC(2030, 0, 1) + 60_000 * ++this.version).toUTCString();
    this.files.set(path, { bytes, etag: `"v${this.version}-${bytes.byteLength}"`, modified });
  }

  fault(f: Fault): void {
    this.faults.push({ ...f, left: f.times ?? 1, seen: 0 });
  }

  clearFaults(): void {
    this.faults = [];
    this.requests.length = 0;
  }

  async start(): Promise<string> {
    this.server = createServer((req, res) => this.handle(req, res));
    this.server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this.url;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }

  private take(path: string, ranged: boolean): FaultKind | undefined {
    for (const f of this.faults) {
      if (f.left <= 0 || (f.path !== undefined && f.path !== path) || (!ranged && !f.anyRequest)) continue;
      if (f.seen++ < (f.after ?? 0)) continue;
      f.left--;
      return f.kind;
    }
    return undefined;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    const range = req.headers.range;
    const fault = this.take(path, range !== undefined);
    const auth = req.headers.authorization;
    const log = (status: number) =>
      this.requests.push({ method: req.method ?? 'GET', path, range, status, fault, auth });
    if (this.token && auth !== `Bearer ${this.token}`) {
      log(401);
      res.statusCode = 401;
      res.end('unauthorized');
      return;
    }
    if (fault === 'etag-change') {
      const f = this.files.get(path);
      if (f) {
        const changed = f.bytes.slice();
        changed[changed.length - 1] ^= 0xff;
        this.put(path, changed);
      }
    }
    const f = this.files.get(path);
    if (!f || fault === '404') {
      log(404);
      res.statusCode = 404;
      res.end('not found');
      return;
    }
    if (fault === '5xx') {
      log(503);
      res.statusCode = 503;
      if (this.retryAfter !== undefined) res.setHeader('retry-after', this.retryAfter);
      res.end('try later');
      return;
    }
    if (fault === 'stall-headers') {
      log(0);
      return; // never answer
    }
    const ifMatch = req.headers['if-match'];
    if (this.honourIfMatch && ifMatch && ifMatch !== f.etag) {
      log(412);
      res.statusCode = 412;
      res.end();
      return;
    }
    const size = f.bytes.byteLength;
    let start = 0;
    let end = size - 1;
    let status = 200;
    const ifRange = req.headers['if-range'];
    const m = range && (!ifRange || ifRange === f.etag) ? /^bytes=(\d+)-(\d*)$/.exec(range) : null;
    if (m && fault !== 'ignore-range') {
      start = Number(m[1]);
      end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
      if (start >= size) {
        log(416);
        res.writeHead(416, { 'content-range': `bytes */${size}` });
        res.end();
        return;
      }
      status = 206;
    }
    let body = f.bytes.subarray(start, end + 1);
    const headers: Record<string, string> = {
      ...(this.sendEtag ? { etag: f.etag } : {}),
      'last-modified': f.modified,
      'accept-ranges': 'bytes',
      'content-length': String(body.byteLength),
      'content-type': 'application/octet-stream',
    };
    if (status === 206) {
      headers['content-range'] =
        fault === 'bad-range' ? `bytes ${start + 1}-${end + 1}/${size}` : `bytes ${start}-${end}/${size}`;
    }
    if (fault === 'corrupt') {
      body = body.slice();
      body[body.byteLength >> 1] ^= 0x55;
    }
    log(status);
    res.writeHead(status, headers);
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    if (fault === 'stall-body' || fault === 'truncate') {
      // truncate: the socket is destroyed TRUNCATE_GRACE_MS after the half went to the OS. The
      // client keeps only what it has read and written by then: a broken body discards chunks
      // still queued in its streams. With 5 ms, a loaded machine (two test files at once) left
      // it nothing, and it started over instead of resuming.
      const half = body.subarray(0, body.byteLength >> 1);
      if (fault === 'truncate') res.write(half, () => setTimeout(() => res.socket?.destroy(), TRUNCATE_GRACE_MS));
      else res.write(half);
      return;
    }
    res.end(body);
  }
}
