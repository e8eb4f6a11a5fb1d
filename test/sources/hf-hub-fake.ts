/**
 * A stand-in for the Hugging Face hub and its CDN on 127.0.0.1 (two ports, both chosen by the OS),
 * for the hub client tests. Like the real one:
 *
 * - `GET /api/models/{owner}/{name}/revision/{rev}[?blobs=true]` → `{id, sha, siblings}`; with
 *   blobs, LFS files carry `lfs: {sha256, size}` and others `blobId` (git blob sha1) and `size`.
 *   A revision is a branch/tag name or a commit sha.
 * - `GET /{owner}/{name}/resolve/{rev}/{file}` → LFS files: a 302 to the CDN with `X-Linked-Etag`,
 *   `X-Linked-Size`, `X-Repo-Commit`; other files: served by the hub itself.
 * - Errors carry `X-Error-Code` (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo); with
 *   `anonymous401`, a missing repo answers 401 to a request without a token, as the real hub does.
 * - The CDN serves blobs with Range, If-Range (ETag: the sha256, or an md5 like S3's), 416.
 *
 * Knobs in `cfg` misbehave on purpose (corrupt, drop, stall, gzip, status overrides, CDN 403).
 */
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { gzipSync } from 'node:zlib';
import { TRUNCATE_GRACE_MS } from './range-server.ts';

export const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
export const md5 = (b: Uint8Array) => createHash('md5').update(b).digest('hex');
export const gitSha1 = (b: Uint8Array) => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');

export interface FakeFile {
  bytes: Buffer;
  /** Stored in LFS (default: names ending .gguf/.bin/.safetensors). */
  lfs?: boolean;
  /** The sha256 the listing and X-Linked-Etag claim (default: the real one). */
  claimedSha256?: string;
}

export interface FakeRev {
  commit: string;
  files: Record<string, FakeFile>;
}

export interface Hit {
  host: 'hub' | 'cdn';
  method: string;
  url: string;
  range?: string;
  ifRange?: string;
  auth?: string;
  acceptEncoding?: string;
  status?: number;
}

export interface FakeCfg {
  /** ETag style of the CDN ('md5' like S3, so it tells nothing about the sha256). */
  cdnEtag: 'sha256' | 'md5';
  /** X-Linked-Etag on the hub's redirect (default true). */
  linkedEtag: boolean;
  /** Leave `lfs` out of the listing (no sha256 known from it). */
  listingWithoutLfs: boolean;
  /** Leave `sha` out of the listing. */
  listingWithoutSha: boolean;
  /** Flip this byte in served bodies, for the next `corruptTimes` bodies (default: all). */
  corruptByte?: number;
  corruptTimes?: number;
  /** Destroy the socket after this many body bytes, for the next `dropTimes` bodies. */
  dropAfter?: number;
  dropTimes?: number;
  /** Called when a body is dropped (a test changes the file there). */
  onDrop?: () => void;
  /** Serve a range whatever If-Range says (a server that ignores it). */
  ignoreIfRange?: boolean;
  /** Send this many bytes and then nothing (the socket stays open), once. */
  stallAfter?: number;
  /** gzip bodies to clients that accept it. */
  gzip: boolean;
  /** Serve 16 KiB every N ms. */
  throttleMs?: number;
  /** Missing repos answer 401 to anonymous requests (the real hub's way). */
  anonymous401: boolean;
  /** Repos that answer 403 GatedRepo to everyone. */
  gated: Set<string>;
  /** Path prefix → status answers, `times` of them (then normal service). */
  status: { prefix: string; status: number; times: number; retryAfter?: string; errorCode?: string }[];
  /** The CDN answers 403 (an expired signed URL) this many times. */
  cdn403: number;
}

export function defaultCfg(): FakeCfg {
  return {
    cdnEtag: 'sha256',
    linkedEtag: true,
    listingWithoutLfs: false,
    listingWithoutSha: false,
    gzip: false,
    anonymous401: false,
    gated: new Set(),
    status: [],
    cdn403: 0,
  };
}

const isLfs = (name: string, f: FakeFile) => f.lfs ?? /\.(gguf|bin|safetensors)$/.test(name);

export class FakeHub {
  /** repo → branch/tag → revision. */
  readonly repos = new Map<string, Map<string, FakeRev>>();
  readonly hits: Hit[] = [];
  cfg: FakeCfg = defaultCfg();
  endpoint = '';
  cdnBase = '';
  private hub: Server | undefined;
  private cdn: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private readonly blobs = new Map<string, Buffer>();

  /** Sets `ref` of `repo` to a new commit with `files` (a moved branch when it existed). */
  put(repo: string, ref: string, commit: string, files: Record<string, Buffer | FakeFile>): void {
    const revs = this.repos.get(repo) ?? new Map<string, FakeRev>();
    const fs: Record<string, FakeFile> = {};
    for (const [k, v] of Object.entries(files)) fs[k] = Buffer.isBuffer(v) ? { bytes: v } : v;
    const rev = { commit, files: fs };
    revs.set(ref, rev);
    revs.set(commit, rev);
    this.repos.set(repo, revs);
  }

  reset(): void {
    this.cfg = defaultCfg();
    this.hits.length = 0;
  }

  async start(): Promise<void> {
    const track = (s: Server) =>
      s.on('connection', (c: Socket) => {
        this.sockets.add(c);
        c.on('close', () => this.sockets.delete(c));
      });
    this.cdn = createServer((q, r) => this.serveCdn(q, r));
    this.hub = createServer((q, r) => this.serveHub(q, r));
    track(this.cdn);
    track(this.hub);
    await new Promise<void>((r) => this.cdn!.listen(0, '127.0.0.1', r));
    await new Promise<void>((r) => this.hub!.listen(0, '127.0.0.1', r));
    this.cdnBase = `http://127.0.0.1:${(this.cdn.address() as AddressInfo).port}`;
    this.endpoint = `http://127.0.0.1:${(this.hub.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await Promise.all([this.hub, this.cdn].map((s) => new Promise((r) => (s ? s.close(r) : r(undefined)))));
  }

  private record(host: 'hub' | 'cdn', req: IncomingMessage, res: ServerResponse): Hit {
    const hit: Hit = {
      host,
      method: req.method ?? '',
      url: req.url ?? '',
      range: req.headers.range,
      ifRange: req.headers['if-range'] as string | undefined,
      auth: req.headers.authorization,
      acceptEncoding: req.headers['accept-encoding'] as string | undefined,
    };
    this.hits.push(hit);
    res.on('finish', () => (hit.status = res.statusCode));
    return hit;
  }

  private fail(res: ServerResponse, status: number, code?: string, extra: Record<string, string> = {}): ServerResponse {
    res.statusCode = status;
    if (code) res.setHeader('x-error-code', code);
    for (const [k, v] of Object.entries(extra)) res.setHeader(k, v);
    res.setHeader('content-type', 'application/json');
    return res.end(JSON.stringify({ error: code ?? `status ${status}` }));
  }

  private serveHub(req: IncomingMessage, res: ServerResponse): unknown {
    this.record('hub', req, res);
    const u = new URL(req.url ?? '/', 'http://x');
    const path = u.pathname;
    const forced = this.cfg.status.find((s) => s.times > 0 && path.startsWith(s.prefix));
    if (forced) {
      forced.times--;
      return this.fail(
        res,
        forced.status,
        forced.errorCode,
        forced.retryAfter ? { 'retry-after': forced.retryAfter } : {},
      );
    }
    const listing = /^\/api\/models\/([^/]+)\/([^/]+)\/revision\/([^/]+)$/.exec(path);
    const resolve = /^\/([^/]+)\/([^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(path);
    const m = listing ?? resolve;
    if (!m) return this.fail(res, 404);
    const repo = `${m[1]}/${m[2]}`;
    const revs = this.repos.get(repo);
    if (this.cfg.gated.has(repo)) return this.fail(res, 403, 'GatedRepo');
    if (!revs) {
      if (this.cfg.anonymous401 && !req.headers.authorization) return this.fail(res, 401, 'RepoNotFound');
      return this.fail(res, 404, 'RepoNotFound');
    }
    const rev = revs.get(decodeURIComponent(m[3]));
    if (!rev) return this.fail(res, 404, 'RevisionNotFound');
    if (listing) {
      const blobs = u.searchParams.get('blobs') === 'true';
      const siblings = Object.entries(rev.files).map(([name, f]) => {
        if (!blobs) return { rfilename: name };
        if (isLfs(name, f) && !this.cfg.listingWithoutLfs)
          return {
            rfilename: name,
            size: f.bytes.length,
            blobId: gitSha1(Buffer.from('pointer')),
            lfs: { sha256: f.claimedSha256 ?? sha256(f.bytes), size: f.bytes.length, pointerSize: 134 },
          };
        return { rfilename: name, size: f.bytes.length, ...(isLfs(name, f) ? {} : { blobId: gitSha1(f.bytes) }) };
      });
      res.setHeader('content-type', 'application/json');
      return res.end(
        JSON.stringify({ id: repo, ...(this.cfg.listingWithoutSha ? {} : { sha: rev.commit }), siblings }),
      );
    }
    const name = resolve![4].split('/').map(decodeURIComponent).join('/');
    const f = rev.files[name];
    if (!f) return this.fail(res, 404, 'EntryNotFound');
    res.setHeader('x-repo-commit', rev.commit);
    if (isLfs(name, f)) {
      const s = f.claimedSha256 ?? sha256(f.bytes);
      const key = sha256(f.bytes);
      this.blobs.set(key, f.bytes);
      res.statusCode = 302;
      if (this.cfg.linkedEtag) res.setHeader('x-linked-etag', `"${s}"`);
      res.setHeader('x-linked-size', String(f.bytes.length));
      res.setHeader('location', `${this.cdnBase}/blobs/${key}?X-Amz-Signature=secret-signature`);
      return res.end();
    }
    this.serveBytes(req, res, f.bytes, gitSha1(f.bytes));
  }

  private serveCdn(req: IncomingMessage, res: ServerResponse): unknown {
    this.record('cdn', req, res);
    if (this.cfg.cdn403 > 0) {
      this.cfg.cdn403--;
      res.statusCode = 403;
      return res.end('<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>');
    }
    const m = /^\/blobs\/([0-9a-f]{64})/.exec(req.url ?? '');
    const b = m && this.blobs.get(m[1]);
    if (!b) {
      res.statusCode = 404;
      return res.end();
    }
    this.serveBytes(req, res, b, this.cfg.cdnEtag === 'sha256' ? m[1] : md5(b));
  }

  private serveBytes(req: IncomingMessage, res: ServerResponse, data: Buffer, etag: string): unknown {
    let body = data;
    if (this.cfg.corruptByte !== undefined && (this.cfg.corruptTimes ?? 1) > 0) {
      if (this.cfg.corruptTimes !== undefined) this.cfg.corruptTimes--;
      body = Buffer.from(data);
      body[this.cfg.corruptByte] ^= 0xff;
    }
    res.setHeader('etag', `"${etag}"`);
    res.setHeader('accept-ranges', 'bytes');
    const range = /^bytes=(\d+)-$/.exec(String(req.headers.range ?? ''));
    const ifRange = req.headers['if-range'];
    let start = 0;
    if (range && (!ifRange || ifRange === `"${etag}"` || this.cfg.ignoreIfRange)) {
      start = Number(range[1]);
      if (start >= body.length) {
        res.statusCode = 416;
        res.setHeader('content-range', `bytes */${body.length}`);
        return void res.end();
      }
      res.statusCode = 206;
      res.setHeader('content-range', `bytes ${start}-${body.length - 1}/${body.length}`);
    }
    let chunk = body.subarray(start);
    if (this.cfg.gzip && String(req.headers['accept-encoding'] ?? '').includes('gzip')) {
      chunk = gzipSync(chunk);
      res.setHeader('content-encoding', 'gzip');
    }
    res.setHeader('content-length', String(chunk.length));
    if (this.cfg.dropAfter !== undefined && (this.cfg.dropTimes ?? 1) > 0) {
      this.cfg.dropTimes = (this.cfg.dropTimes ?? 1) - 1;
      this.cfg.onDrop?.();
      // Destroyed a while after the bytes went to the OS: the client keeps only what it has read
      // and written by then (range-server.ts, 'truncate').
      return void res.write(chunk.subarray(0, this.cfg.dropAfter), () =>
        setTimeout(() => res.socket?.destroy(), TRUNCATE_GRACE_MS),
      );
    }
    if (this.cfg.stallAfter !== undefined) {
      const n = this.cfg.stallAfter;
      this.cfg.stallAfter = undefined;
      return void res.write(chunk.subarray(0, n));
    }
    if (this.cfg.throttleMs) {
      let off = 0;
      const tick = () => {
        if (res.destroyed) return;
        if (off >= chunk.length) return void res.end();
        res.write(chunk.subarray(off, off + 16384));
        off += 16384;
        setTimeout(tick, this.cfg.throttleMs);
      };
      return tick();
    }
    res.end(chunk);
  }
}
