/**
 * Hugging Face hub resolution for `fromPretrained("owner/repo")` and `bitnet pull` (Node, Lambda,
 * container). docs/hub.md has the whole story; in short:
 *
 * - URL scheme (the hub's own): listing `GET {endpoint}/api/models/{repo}/revision/{rev}?blobs=true`
 *   → `{sha, siblings: [{rfilename, size, blobId, lfs: {sha256, size}}]}`; bytes
 *   `GET {endpoint}/{repo}/resolve/{commit}/{file}`, usually a 302 to a CDN. `HF_ENDPOINT` overrides
 *   the endpoint (src/sources/hf-hub-http.ts), `HF_TOKEN` is sent as a bearer token to it.
 * - Each call resolves the revision to its commit (the listing's `sha`) and serves that commit's
 *   files from `{cacheDir}/{owner}--{name}/snapshots/{commit}/`; `refs/{revision}` remembers the
 *   commit, so a moved branch gets its new files and an unreachable hub (network error, 5xx, or
 *   `offline` / `HF_HUB_OFFLINE=1`) still serves the last commit it resolved to
 *   (src/sources/hf-hub-cache.ts has the layout).
 * - Every downloaded file is checked before it gets its name: against the listing's LFS sha256, else
 *   the hub's `X-Linked-Etag` when it is a sha256, else the listing's git blob id (non-LFS files);
 *   a shard pack's shards against its manifest. A mismatch is `HUB_CHECKSUM_MISMATCH` and leaves
 *   nothing behind; a resumed download that fails the check is restarted from zero once first.
 * - Downloads resume a `.partial` (`Range` + `If-Range`), retry 5xx/429/network errors/stalls
 *   (`Retry-After` honoured, bounded), and hold `{file}.lock` (O_EXCL; stale when its process is
 *   gone or it was not refreshed for a minute) so two processes never write one file; two calls in
 *   one process share one download.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BitNetError } from '../errors.ts';
import {
  acquireLock,
  cacheRoot,
  checkRevision,
  completeFiles,
  convertedDir,
  inside,
  isCommit,
  legacyDir,
  packOnce,
  readRef,
  repoDir,
  sizeOf,
  snapshotDir,
  writeRef,
} from './hf-hub-cache.ts';
import {
  type HubCtx,
  type HubResponse,
  type HubWhat,
  hubRequest,
  parseEndpoint,
  retryDelay,
  showUrl,
} from './hf-hub-http.ts';
import { abortError, isRetryable, StallTimer, sleep, withRetry } from './retry.ts';

export { checkRevision } from './hf-hub-cache.ts';
export { parseEndpoint, parseRetryAfter } from './hf-hub-http.ts';

export interface HubOptions {
  endpoint?: string;
  token?: string;
  revision?: string;
  filename?: string;
  cacheDir?: string;
  signal?: AbortSignal;
  /** Attempts per request: the listing, and each file download, resuming (default 5). */
  attempts?: number;
  /** A request that receives no byte for this long is abandoned and retried (default 30000 ms, or $BITNET_HUB_STALL_TIMEOUT_MS). */
  stallTimeoutMs?: number;
  /**
   * With a cached snapshot that can answer, the listing is asked once, and abandoned after this long
   * without a byte (default 10000 ms, or $HF_HUB_ETAG_TIMEOUT seconds, as huggingface_hub reads it):
   * an unreachable hub then costs this, not `attempts` × `stallTimeoutMs`. Never longer than the stall timeout.
   */
  metadataTimeoutMs?: number;
  /**
   * Makes a shard pack in `packDir` from the safetensors checkpoint in `checkpointDir` (fromPretrained
   * passes `bitnet convert`'s). With it, a repo that holds only a checkpoint is downloaded, converted
   * once per commit into the cache (`converted/{commit}/`), and served from there, offline too;
   * without it, such a repo is `HUB_NO_GGUF`.
   */
  convertCheckpoint?: (checkpointDir: string, packDir: string) => Promise<void>;
  /** Never contact the hub; serve what the cache has (default: $HF_HUB_OFFLINE is 1/true/yes/on). */
  offline?: boolean;
  /** Called before each wait between attempts (the listing's, a download's): which attempt comes next, the wait, and why. */
  onRetry?: (info: { attempt: number; delayMs: number; error: BitNetError }) => void;
}

const REPO_PART = '[A-Za-z0-9_](?:[\\w.-]{0,94}[A-Za-z0-9_])?';
const REPO_RE = new RegExp(`^${REPO_PART}/${REPO_PART}$`);
/** Preferred file when a repo holds several GGUFs. */
const PREFERRED = ['ggml-model-i2_s.gguf'];
const SHA256_RE = /^[0-9a-f]{64}$/;
const SHA1_RE = /^[0-9a-f]{40}$/;

function badEnv(name: string, value: string, want: string): BitNetError {
  return BitNetError.Config('INVALID_ENV', `${name}=${JSON.stringify(value)} is not ${want}`, { name, value });
}

function stallMs(o: HubOptions): number {
  if (o.stallTimeoutMs !== undefined) {
    const v = o.stallTimeoutMs;
    return Number.isFinite(v) && v > 0 ? v : 30_000;
  }
  const raw = (process.env.BITNET_HUB_STALL_TIMEOUT_MS ?? '').trim();
  if (raw === '') return 30_000;
  const v = Number(raw);
  if (!Number.isFinite(v) || v <= 0) throw badEnv('BITNET_HUB_STALL_TIMEOUT_MS', raw, 'a positive number of ms');
  return v;
}

function metadataMs(o: HubOptions): number {
  const stall = stallMs(o);
  if (o.metadataTimeoutMs !== undefined) {
    const v = o.metadataTimeoutMs;
    return Math.min(stall, Number.isFinite(v) && v > 0 ? v : 10_000);
  }
  const raw = (process.env.HF_HUB_ETAG_TIMEOUT ?? '').trim();
  if (raw === '') return Math.min(stall, 10_000);
  const v = /^\d+(\.\d+)?$/.test(raw) ? Number(raw) * 1000 : Number.NaN;
  if (!(v > 0)) throw badEnv('HF_HUB_ETAG_TIMEOUT', raw, 'a positive number of seconds');
  return Math.min(stall, v);
}

/** HF_HUB_OFFLINE as huggingface_hub reads it (1/true/yes/on), with 0/false/no/off (and unset) off; else INVALID_ENV. */
function isOffline(o: HubOptions): boolean {
  if (o.offline !== undefined) return o.offline;
  const raw = (process.env.HF_HUB_OFFLINE ?? '').trim();
  if (/^(1|true|yes|on)$/i.test(raw)) return true;
  if (/^(|0|false|no|off)$/i.test(raw)) return false;
  throw badEnv('HF_HUB_OFFLINE', raw, 'a boolean (1/0, true/false, yes/no, on/off)');
}

function hubCtx(o: HubOptions): HubCtx {
  return { ep: parseEndpoint(o.endpoint), token: o.token || process.env.HF_TOKEN || undefined, signal: o.signal };
}

export function hubEndpoint(o: HubOptions = {}): string {
  return parseEndpoint(o.endpoint).base;
}

export interface HubEntry {
  file: string;
  size?: number;
  /** The LFS object's sha256, when the hub gives it. */
  sha256?: string;
  /** The git blob sha1 of a non-LFS file (the listing's `blobId`). */
  gitSha1?: string;
}

export interface HubListing {
  /** The commit the revision resolved to (the listing's `sha`), when the hub gives one. */
  commit?: string;
  entries: HubEntry[];
}

function checkRepo(repo: string): void {
  if (typeof repo !== 'string' || !REPO_RE.test(repo) || repo.includes('--') || repo.includes('..'))
    throw BitNetError.Config('BAD_REPO_ID', `"${repo}" is not a hub repository id (owner/name)`, { repo });
}

function safeFileName(file: string): boolean {
  return (
    file.length > 0 &&
    !file.includes('\\') &&
    // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
    !/[\x00-\x1f\x7f]/.test(file) &&
    !file.split('/').some((p) => p === '..' || p === '' || p === '.')
  );
}

function checkFileName(file: string): void {
  if (typeof file !== 'string' || !safeFileName(file))
    throw BitNetError.Config('BAD_FILENAME', `bad file name ${JSON.stringify(file)}`, { file });
}

function parseListing(body: unknown, url: string, what: string): HubListing {
  const b = body as {
    sha?: unknown;
    siblings?: { rfilename?: unknown; size?: unknown; blobId?: unknown; lfs?: { sha256?: unknown; size?: unknown } }[];
  };
  if (!b || typeof b !== 'object' || !Array.isArray(b.siblings))
    throw BitNetError.Io('HUB_BAD_RESPONSE', `${what}: no file list in the hub's answer`, { url });
  const entries: HubEntry[] = [];
  for (const s of b.siblings) {
    // A name that would leave the snapshot directory is not a file this client will write.
    if (!s || typeof s.rfilename !== 'string' || !safeFileName(s.rfilename)) continue;
    const lfs = s.lfs && typeof s.lfs === 'object' ? s.lfs : undefined;
    const sha256 = typeof lfs?.sha256 === 'string' && SHA256_RE.test(lfs.sha256) ? lfs.sha256 : undefined;
    const gitSha1 = !lfs && typeof s.blobId === 'string' && SHA1_RE.test(s.blobId) ? s.blobId : undefined;
    const size = typeof lfs?.size === 'number' ? lfs.size : typeof s.size === 'number' ? s.size : undefined;
    entries.push({ file: s.rfilename, size, sha256, gitSha1 });
  }
  const commit = typeof b.sha === 'string' && SHA1_RE.test(b.sha) ? b.sha : undefined;
  return { commit, entries };
}

/** The revision's listing with sizes, LFS sha256s and the commit (`?blobs=true`), retried on 5xx/429/network errors. */
export async function fetchHubListing(repo: string, o: HubOptions = {}): Promise<HubListing> {
  checkRepo(repo);
  const rev = o.revision ?? 'main';
  checkRevision(rev);
  const ctx = hubCtx(o);
  const url = `${ctx.ep.base}/api/models/${repo}/revision/${encodeURIComponent(rev)}?blobs=true`;
  const w: HubWhat = { what: `listing ${repo}`, repo, revision: rev };
  const retry = {
    retries: Math.max(0, (o.attempts ?? 5) - 1),
    delayFor: retryDelay,
    rethrowLast: true,
    onRetry: o.onRetry,
  };
  return withRetry(
    w.what,
    async () => {
      const timer = new StallTimer(stallMs(o), o.signal);
      try {
        const { res } = await hubRequest(url, ctx, w, { accept: 'application/json' }, timer);
        let body: unknown;
        try {
          body = await res.json();
        } catch (e) {
          if (o.signal?.aborted) throw abortError(o.signal);
          if (timer.stalled)
            throw BitNetError.Io('HUB_STALLED', `${w.what}: the answer stalled`, {
              url: showUrl(url, ctx.ep),
              retryable: true,
            });
          throw BitNetError.Io(
            'HUB_BAD_RESPONSE',
            `${w.what}: the hub's answer is not JSON`,
            { url: showUrl(url, ctx.ep) },
            e,
          );
        }
        return parseListing(body, showUrl(url, ctx.ep), w.what);
      } finally {
        timer.done();
      }
    },
    retry,
    o.signal,
  );
}

export async function listHubFiles(repo: string, o: HubOptions = {}): Promise<string[]> {
  return (await fetchHubListing(repo, o)).entries.map((e) => e.file);
}

/** The file list with sizes and LFS sha256s (`?blobs=true`). */
export async function listHubEntries(repo: string, o: HubOptions = {}): Promise<HubEntry[]> {
  return (await fetchHubListing(repo, o)).entries;
}

/** The snapshot a listing stands for: its commit, else a hash of the listing (a hub without `sha`). */
function snapshotId(l: HubListing, rev: string): string {
  if (l.commit) return l.commit;
  if (isCommit(rev)) return rev;
  const canon = l.entries
    .map((e) => [e.file, e.size ?? null, e.sha256 ?? null, e.gitSha1 ?? null])
    .sort((a, b) => String(a[0]).localeCompare(String(b[0])));
  return `listing-${createHash('sha256').update(JSON.stringify(canon)).digest('hex').slice(0, 40)}`;
}

/**
 * The cache directory of `repo`: `{cacheDir}/{owner}--{name}`; with a `revision` that is a commit,
 * its snapshot directory. (Branches and tags resolve through `refs/`: see hf-hub-cache.ts.)
 */
export function hubCacheDir(repo: string, o: HubOptions = {}): string {
  checkRepo(repo);
  const root = cacheRoot(o.cacheDir);
  if (o.revision && isCommit(o.revision)) return snapshotDir(root, repo, o.revision);
  return repoDir(root, repo);
}

function resolveUrl(base: string, repo: string, rev: string, file: string): string {
  return `${base}/${repo}/resolve/${encodeURIComponent(rev)}/${file.split('/').map(encodeURIComponent).join('/')}`;
}

/** Whether a file list is a safetensors checkpoint: config.json and at least one .safetensors file. */
export function isCheckpoint(files: string[]): boolean {
  return files.includes('config.json') && files.some((f) => f.endsWith('.safetensors'));
}

/** Picks the GGUF to use from a file list (the preferred name, else the only one). */
function chooseGGUF(repo: string, files: string[]): string | undefined {
  const ggufs = files.filter((f) => f.endsWith('.gguf'));
  const file = PREFERRED.find((p) => ggufs.includes(p)) ?? (ggufs.length === 1 ? ggufs[0] : undefined);
  if (!file && ggufs.length) {
    throw BitNetError.Model(
      'HUB_AMBIGUOUS_FILE',
      `${repo} has several GGUF files (${ggufs.join(', ')}); choose one with the \`filename\` option (fromPretrained) or \`--file\` (bitnet pull)`,
      { repo, files: ggufs },
    );
  }
  return file;
}

function noGGUF(repo: string, files: string[]): BitNetError {
  if (isCheckpoint(files)) {
    return BitNetError.Model(
      'HUB_NO_GGUF',
      `${repo} is a Hugging Face safetensors checkpoint with no GGUF: it must be converted first ` +
        '(fromPretrained does that itself unless convertCheckpoints is false). ' +
        `\`bitnet pull ${repo}\` downloads it, \`bitnet convert --model DIR --out PACK\` makes a shard pack, ` +
        'and fromFile(PACK/manifest.json) loads that',
      { repo, files, checkpoint: true },
    );
  }
  return BitNetError.Model('HUB_NO_GGUF', `${repo} has no GGUF file and no shard pack (manifest.json)`, {
    repo,
    files,
  });
}

async function fileDigest(path: string, algo: 'sha256' | 'git-sha1'): Promise<string> {
  const h = createHash(algo === 'sha256' ? 'sha256' : 'sha1');
  if (algo === 'git-sha1') h.update(`blob ${(await stat(path)).size}\0`);
  await pipeline(createReadStream(path), h);
  return h.digest('hex');
}

interface Expect {
  sha256?: string;
  gitSha1?: string;
  size?: number;
}

type Verdict = { ok: boolean; algo: 'sha256' | 'git-sha1'; expected: string; got: string };

interface StreamHash {
  hash: ReturnType<typeof createHash>;
  result(): Verdict;
}

/**
 * A hash fed with a download's bytes as they arrive, when there is one to check and (for a git blob
 * id, whose header holds the size) the size is known up front; undefined otherwise.
 */
function streamHash(ex: Expect, total: number | undefined): StreamHash | undefined {
  const algo = ex.sha256 ? 'sha256' : ex.gitSha1 ? 'git-sha1' : undefined;
  if (!algo) return undefined;
  const expected = (algo === 'sha256' ? ex.sha256 : ex.gitSha1)!;
  const hash = createHash(algo === 'sha256' ? 'sha256' : 'sha1');
  if (algo === 'git-sha1') {
    // The size checks before the verdict make sure the file has exactly this many bytes.
    const size = total ?? ex.size;
    if (size === undefined) return undefined;
    hash.update(`blob ${size}\0`);
  }
  return {
    hash,
    result() {
      const got = hash.digest('hex');
      return { ok: got === expected, algo, expected, got };
    },
  };
}

/** A local failure on a cache file (ENOSPC, EACCES, EROFS, EISDIR...): final, not retried. */
function writeFailed(path: string, e: unknown): BitNetError {
  const errno = (e as NodeJS.ErrnoException)?.code;
  return BitNetError.Io(
    'HUB_CACHE_WRITE_FAILED',
    `cannot write ${path}${errno ? ` (${errno})` : ''}: ${(e as Error)?.message ?? String(e)}`,
    { path, ...(errno ? { errno } : {}) },
    e,
  );
}

/** Runs a file operation on the cache, mapping its failure to HUB_CACHE_WRITE_FAILED. */
async function local_<T>(path: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw writeFailed(path, e);
  }
}

/** Checks `path` against what is known; undefined when nothing but the size is known. */
async function verifyFile(path: string, ex: Expect): Promise<Verdict | undefined> {
  const algo = ex.sha256 ? 'sha256' : ex.gitSha1 ? 'git-sha1' : undefined;
  if (!algo) return undefined;
  const expected = (algo === 'sha256' ? ex.sha256 : ex.gitSha1)!;
  const got = await fileDigest(path, algo);
  return { ok: got === expected, algo, expected, got };
}

/** Whether `path` exists and matches everything known about it (hashing it when a hash is known). */
async function upToDate(path: string, ex: Expect): Promise<{ bytes: number } | undefined> {
  const size = await sizeOf(path);
  if (size === undefined || (ex.size !== undefined && size !== ex.size)) return undefined;
  const v = await verifyFile(path, ex);
  return v?.ok ? { bytes: size } : undefined;
}

export interface DownloadOptions extends HubOptions {
  /** Expected sha256 (lower-case hex); checked after the download. */
  sha256?: string;
  /** Expected git blob sha1 of a non-LFS file (the listing's `blobId`); checked when no sha256 is known. */
  gitSha1?: string;
  /** Expected size in bytes. */
  size?: number;
  onProgress?: (p: { file: string; doneBytes: number; totalBytes?: number }) => void;
}

/** The result for a file already on disk that matched `ex`: nothing was downloaded for it. */
function kept(path: string, bytes: number, ex: Expect, upToDate = true): DownloadResult {
  return {
    path,
    bytes,
    resumedFrom: 0,
    sha256: ex.sha256,
    gitSha1: ex.sha256 ? undefined : ex.gitSha1,
    ...(upToDate ? { upToDate } : {}),
  };
}

export interface DownloadResult {
  path: string;
  bytes: number;
  /** Bytes already on disk from an earlier, interrupted download. */
  resumedFrom: number;
  /** The sha256 that was checked, if any. */
  sha256?: string;
  /** The git blob sha1 that was checked (non-LFS files), if any. */
  gitSha1?: string;
  /** Already there and matching: nothing was downloaded. */
  upToDate?: boolean;
}

const inflight = new Map<string, Promise<DownloadResult>>();

/**
 * Downloads `file` of `repo` (at `revision`) to `local`, resuming a `.partial` left by an earlier
 * attempt, and checks it where a hash is known. The file appears under its name only when complete
 * and checked. Identical calls in one process share one download; across processes `{local}.lock`
 * makes a second writer wait for the first and then check the first one's file.
 */
export async function downloadHubFile(
  repo: string,
  file: string,
  local: string,
  o: DownloadOptions = {},
): Promise<DownloadResult> {
  checkFileName(file);
  checkRevision(o.revision ?? 'main');
  const key = resolve(local);
  const running = inflight.get(key);
  if (running) return running;
  const p = lockedDownload(repo, file, key, o).finally(() => inflight.delete(key));
  inflight.set(key, p);
  return p;
}

async function lockedDownload(repo: string, file: string, local: string, o: DownloadOptions): Promise<DownloadResult> {
  const ctx = hubCtx(o);
  const stall = stallMs(o);
  try {
    await mkdir(dirname(local), { recursive: true });
  } catch (e) {
    throw BitNetError.Io('HUB_CACHE_WRITE_FAILED', `cannot create ${dirname(local)}: ${(e as Error).message}`, {}, e);
  }
  const since = Date.now();
  const lock = await acquireLock(`${local}.lock`, { signal: o.signal, staleMs: Math.max(60_000, 2 * stall) });
  try {
    if (lock.waited) {
      // Another writer had it: use its file if it is the one we want.
      const ex: Expect = { sha256: o.sha256, gitSha1: o.gitSha1, size: o.size };
      const st = await stat(local).catch(() => undefined);
      if (st?.isFile()) {
        const hashed = ex.sha256 || ex.gitSha1;
        const ok = hashed ? await upToDate(local, ex) : st.mtimeMs >= since - 1000 && (ex.size ?? st.size) === st.size;
        if (ok) return kept(local, st.size, ex, false); // downloaded by the other writer, not before
      }
    }
    return await transfer(repo, file, local, o, ctx, stall);
  } finally {
    await lock.release();
  }
}

function shaOf(etag: string | null | undefined): string | undefined {
  const v = (etag ?? '').replace(/^(W\/)?"|"$/g, '');
  return SHA256_RE.test(v) ? v : undefined;
}

async function transfer(
  repo: string,
  file: string,
  local: string,
  o: DownloadOptions,
  ctx: HubCtx,
  stall: number,
): Promise<DownloadResult> {
  const rev = o.revision ?? 'main';
  const url = resolveUrl(ctx.ep.base, repo, rev, file);
  const shown = showUrl(url, ctx.ep);
  const w: HubWhat = { what: `downloading ${repo}/${file}`, repo, revision: rev, file };
  const partial = `${local}.partial`;
  const side = `${local}.partial.json`;
  const attempts = o.attempts ?? 5;
  let resumedFrom = 0;
  let lastError: unknown;
  let retriedCdn = false;
  let restarted = false;
  let backOff = false; // the last attempt failed: wait before the next one
  for (let attempt = 0; attempt < attempts; attempt++) {
    if (backOff && lastError instanceof BitNetError) {
      // The one place a failed attempt waits: every retryable failure below ends in `continue`.
      const delayMs = retryDelay(lastError, attempt - 1);
      o.onRetry?.({ attempt, delayMs, error: lastError });
      await sleep(delayMs, o.signal);
    }
    backOff = true;
    let have = (await sizeOf(partial)) ?? 0;
    let saved: { etag?: string; sha256?: string; gitSha1?: string } = {};
    try {
      saved = JSON.parse(await readFile(side, 'utf8'));
    } catch {
      saved = {};
    }
    // A partial without its validator, of another version of the file, or too long cannot be trusted.
    if (
      have > 0 &&
      (!saved.etag ||
        (o.sha256 && saved.sha256 && saved.sha256 !== o.sha256) ||
        (o.gitSha1 && saved.gitSha1 && saved.gitSha1 !== o.gitSha1) ||
        (o.size !== undefined && have > o.size))
    )
      have = 0;
    const headers: Record<string, string> = { 'accept-encoding': 'identity' };
    if (have > 0) {
      headers.range = `bytes=${have}-`;
      headers['if-range'] = saved.etag!;
    }
    const timer = new StallTimer(stall, o.signal);
    let total: number | undefined;
    let ex: Expect = {};
    let mixed = false; // the partial holds bytes that arrived before this request
    let hashing: StreamHash | undefined;
    try {
      let r: HubResponse;
      try {
        r = await hubRequest(url, ctx, w, headers, timer, (s) => s === 416);
      } catch (e) {
        const err = e as BitNetError;
        if (err.code === 'HUB_CDN_FORBIDDEN' && !retriedCdn) {
          // An expired signed URL: ask the hub again for a fresh one, once.
          retriedCdn = true;
          lastError = err;
          backOff = false;
          attempt--;
          continue;
        }
        if (!isRetryable(err)) throw err;
        lastError = err;
        continue;
      }
      const { res, linked } = r;
      ex = {
        sha256: o.sha256 ?? shaOf(linked.etag) ?? shaOf(res.headers.get('etag')),
        gitSha1: o.gitSha1,
        size: o.size ?? linked.size,
      };
      const ce = (res.headers.get('content-encoding') ?? 'identity').toLowerCase();
      const encoded = ce !== 'identity' && ce !== '';
      let append = false;
      if (res.status === 416) {
        await res.body?.cancel().catch(() => {});
        const m = /^bytes \*\/(\d+)$/.exec(res.headers.get('content-range') ?? '');
        if (!m || Number(m[1]) !== have) {
          await local_(partial, () => rm(partial, { force: true }));
          await local_(side, () => rm(side, { force: true }));
          lastError = BitNetError.Io('HUB_BAD_RESPONSE', `${w.what}: the partial download does not fit the file`, {
            url: shown,
          });
          continue;
        }
        total = have; // the partial file is already complete
        mixed = true;
        if (attempt === 0) resumedFrom = have;
      } else {
        if (res.status === 206) {
          const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(res.headers.get('content-range') ?? '');
          if (!m || Number(m[1]) !== have || encoded) {
            await res.body?.cancel().catch(() => {});
            await local_(partial, () => rm(partial, { force: true }));
            lastError = BitNetError.Io('HUB_BAD_RESPONSE', `${file}: bad Content-Range on resume`, { url: shown });
            continue;
          }
          // A server that ignores If-Range answers from whatever version it has now: its ETag
          // must still be the one the partial was saved under, or the file would mix versions.
          const now = res.headers.get('etag');
          if (now && saved.etag && now !== saved.etag) {
            await res.body?.cancel().catch(() => {});
            await local_(partial, () => rm(partial, { force: true }));
            await local_(side, () => rm(side, { force: true }));
            lastError = BitNetError.Io(
              'HUB_BAD_RESPONSE',
              `${file}: the file changed under the resumed download (ETag ${now}, was ${saved.etag}); starting over`,
              { url: shown },
            );
            continue;
          }
          total = Number(m[3]);
          append = true;
          mixed = have > 0;
          if (attempt === 0) resumedFrom = have;
        } else {
          // The whole file (a server that ignores Range, or a changed file under If-Range).
          const len = res.headers.get('content-length');
          total = encoded || len === null ? undefined : Number(len);
        }
        if (!append) await local_(partial, () => rm(partial, { force: true }));
        const etag = res.headers.get('etag');
        if (etag && !etag.startsWith('W/') && !encoded)
          await local_(side, () => writeFile(side, JSON.stringify({ etag, sha256: ex.sha256, gitSha1: ex.gitSha1 })));
        else await local_(side, () => rm(side, { force: true }));
        if (!res.body) throw BitNetError.Io('HUB_BAD_RESPONSE', `${w.what}: empty body`, { url: shown });
        let done = append ? have : 0;
        // A download from byte 0 is hashed as it streams (no read-back); a resumed one is re-read.
        hashing = append ? undefined : streamHash(ex, total);
        const body = Readable.fromWeb(res.body as import('node:stream/web').ReadableStream);
        body.on('data', (c: Buffer) => {
          timer.kick();
          hashing?.hash.update(c);
          done += c.byteLength;
          o.onProgress?.({ file, doneBytes: done, totalBytes: total ?? ex.size });
        });
        const out = createWriteStream(partial, { flags: append ? 'a' : 'w' });
        let writeError: unknown;
        out.on('error', (e: NodeJS.ErrnoException) => {
          // The file system's own errors carry `syscall`; a broken body or an abort only passes through.
          if (typeof e.syscall === 'string') writeError ??= e;
        });
        try {
          await pipeline(body, out, { signal: timer.signal });
        } catch (e) {
          if (o.signal?.aborted) throw abortError(o.signal);
          // A local failure (disk full, read-only, no permission) will not get better by retrying.
          if (writeError) throw writeFailed(partial, writeError);
          hashing = undefined;
          lastError = timer.stalled
            ? BitNetError.Io(
                'HUB_STALLED',
                `${w.what}: no data for ${stall} ms`,
                { url: shown, stallTimeoutMs: stall },
                e,
              )
            : BitNetError.Io('HUB_DOWNLOAD_INTERRUPTED', `${w.what}: ${(e as Error).message}`, { url: shown }, e);
          continue; // resume from what arrived
        }
      }
    } finally {
      timer.done();
    }
    const got = (await sizeOf(partial)) ?? 0;
    const want = total ?? ex.size;
    if ((total !== undefined && got > total) || (ex.size !== undefined && got > ex.size)) {
      await local_(partial, () => rm(partial, { force: true }));
      await local_(side, () => rm(side, { force: true }));
      lastError = BitNetError.Io('HUB_BAD_RESPONSE', `${w.what}: got ${got} bytes, more than the ${want} expected`, {
        url: shown,
        expected: want,
        got,
      });
      continue;
    }
    if ((total !== undefined && got < total) || (ex.size !== undefined && got < ex.size)) {
      lastError = BitNetError.Io('HUB_SHORT_DOWNLOAD', `${w.what}: got ${got} of ${want} bytes`, {
        url: shown,
        expected: want,
        got,
      });
      continue; // resume from what arrived
    }
    const v = hashing ? hashing.result() : await verifyFile(partial, ex);
    if (v && !v.ok) {
      await rm(partial, { force: true });
      await rm(side, { force: true });
      const err = BitNetError.Io(
        'HUB_CHECKSUM_MISMATCH',
        `${repo}/${file}: ${v.algo} ${v.got} does not match ${v.expected}`,
        { url: shown, algo: v.algo, expected: v.expected, got: v.got },
      );
      if (mixed && !restarted) {
        // The bytes kept from before were bad: start from zero, once.
        restarted = true;
        lastError = err;
        backOff = false;
        attempt--;
        continue;
      }
      throw err;
    }
    try {
      await rename(partial, local);
    } catch (e) {
      throw BitNetError.Io(
        'HUB_CACHE_WRITE_FAILED',
        `cannot move ${partial} into place: ${(e as Error).message}`,
        {},
        e,
      );
    }
    await rm(side, { force: true });
    const final = await sizeOf(local);
    if (final !== got)
      throw BitNetError.Io('HUB_CACHE_WRITE_FAILED', `${local} changed under the download (${final} bytes)`, {});
    return {
      path: local,
      bytes: got,
      resumedFrom,
      sha256: v?.algo === 'sha256' ? v.expected : undefined,
      gitSha1: v?.algo === 'git-sha1' ? v.expected : undefined,
    };
  }
  throw lastError instanceof BitNetError
    ? lastError
    : BitNetError.Io('HUB_SHORT_DOWNLOAD', `${w.what} failed`, { url: shown }, lastError);
}

function entryExpect(known: HubEntry[], file: string): Expect {
  const e = known.find((k) => k.file === file);
  return { sha256: e?.sha256, gitSha1: e?.sha256 ? undefined : e?.gitSha1, size: e?.size };
}

/**
 * Downloads a shard pack (`manifest.json` and the shards it names) into `dir`: shards first, each
 * checked against the manifest's sha256, the manifest last. Files already there and matching are
 * kept (`upToDate`). Returns the manifest's path.
 */
export async function downloadHubPack(
  repo: string,
  dir: string,
  o: DownloadOptions = {},
  known: HubEntry[] = [],
): Promise<{ manifest: string; files: DownloadResult[] }> {
  const manifestPath = inside(dir, join(dir, 'manifest.json'));
  const files: DownloadResult[] = [];
  const mex = entryExpect(known, 'manifest.json');
  let source = manifestPath;
  const have = await upToDate(manifestPath, mex);
  if (have) files.push(kept(manifestPath, have.bytes, mex));
  else {
    source = join(dir, 'manifest.json.download');
    const m = await downloadHubFile(repo, 'manifest.json', source, { ...o, ...mex });
    files.push({ ...m, path: manifestPath });
  }
  try {
    await pullShards(repo, dir, source, o, files);
  } catch (e) {
    // the staged manifest of a pull that failed is not kept (the next pull fetches it again)
    if (source !== manifestPath) await rm(source, { force: true }).catch(() => {});
    throw e;
  }
  if (source !== manifestPath) {
    try {
      await rename(source, manifestPath);
    } catch (e) {
      // Another process finished the same pack first: its manifest is the same file.
      if (!(await upToDate(manifestPath, mex)) && (await sizeOf(manifestPath)) === undefined) throw e;
    }
  }
  return { manifest: manifestPath, files };
}

/** The shards `source` (a pack manifest) names, each checked against its sha256, into `dir`. */
async function pullShards(
  repo: string,
  dir: string,
  source: string,
  o: DownloadOptions,
  files: DownloadResult[],
): Promise<void> {
  let manifest: { shards?: { file?: unknown; sha256?: unknown; size?: unknown }[] };
  try {
    manifest = JSON.parse(await readFile(source, 'utf8'));
  } catch (e) {
    throw BitNetError.Model('PACK_BAD_JSON', `${repo}/manifest.json is not valid JSON`, {}, e);
  }
  if (!Array.isArray(manifest.shards))
    throw BitNetError.Model('PACK_BAD_MANIFEST', `${repo}/manifest.json lists no shards`, {});
  for (const sh of manifest.shards) {
    const file = String(sh.file);
    checkFileName(file);
    const local = inside(dir, join(dir, file));
    const ex: Expect = {
      sha256: typeof sh.sha256 === 'string' ? sh.sha256 : undefined,
      size: typeof sh.size === 'number' ? sh.size : undefined,
    };
    const have = ex.sha256 ? await upToDate(local, ex) : undefined;
    if (have) {
      files.push(kept(local, have.bytes, ex));
      continue;
    }
    files.push(await downloadHubFile(repo, file, local, { ...o, ...ex }));
  }
}

/** Whether the hub could not be asked at all (network error, stall, 5xx): the cache may answer instead. */
function unreachable(e: unknown): e is BitNetError {
  if (!(e instanceof BitNetError)) return false;
  if (e.code === 'HUB_UNREACHABLE' || e.code === 'HUB_STALLED') return true;
  return e.code === 'HUB_HTTP_ERROR' && Number(e.details.status) >= 500;
}

/** What the cache has for `file` (or the repo's GGUF / pack) in `dir`, if anything. */
async function cachedModel(repo: string, dir: string, filename?: string): Promise<string | undefined> {
  const files = await completeFiles(dir);
  if (filename) return files.includes(filename) ? inside(dir, join(dir, filename)) : undefined;
  const gguf = chooseGGUF(repo, files);
  if (gguf) return inside(dir, join(dir, gguf));
  if (files.includes('manifest.json')) return inside(dir, join(dir, 'manifest.json'));
  return undefined;
}

/** What the cache would serve for `rev` without the hub: the commit its ref names, else the old layout. */
async function cachedAnswer(repo: string, rev: string, root: string, filename: string | undefined) {
  const commit = (await readRef(root, repo, rev)) ?? (isCommit(rev) ? rev : undefined);
  if (commit) {
    const hit = await cachedModel(repo, snapshotDir(root, repo, commit), filename);
    if (hit) return hit;
    const manifest = join(convertedDir(root, repo, commit), 'manifest.json');
    if (filename === undefined && (await sizeOf(manifest)) !== undefined) return manifest;
  }
  const legacy = legacyDir(root, repo, rev);
  return legacy ? await cachedModel(repo, legacy, filename) : undefined;
}

async function resolveOffline(
  repo: string,
  rev: string,
  root: string,
  filename: string | undefined,
  cause?: BitNetError,
): Promise<string> {
  const hit = await cachedAnswer(repo, rev, root, filename);
  if (hit) return hit;
  const what = `${repo}@${rev}${filename ? ` (${filename})` : ''}`;
  if (cause) {
    // The hub's failure, as it was (same kind and code), saying that the cache could not stand in.
    throw new BitNetError(
      cause.kind,
      cause.code,
      `${cause.message}; and the cache has nothing for ${what}`,
      { ...cause.details, repo, revision: rev, cacheDir: root },
      cause,
    );
  }
  throw BitNetError.Io(
    'HUB_UNREACHABLE',
    `offline (HF_HUB_OFFLINE or the offline option), and the cache has nothing for ${what}`,
    { repo, revision: rev, cacheDir: root, offline: true },
  );
}

/** Moves a file of the pre-snapshot layout into the snapshot when it matches the hub's hash. */
async function adoptLegacy(root: string, repo: string, rev: string, file: string, local: string, ex: Expect) {
  const dir = legacyDir(root, repo, rev);
  if (!dir || !(ex.sha256 || ex.gitSha1)) return false;
  const old = inside(dir, join(dir, file));
  if (!(await upToDate(old, ex))) return false;
  try {
    await mkdir(dirname(local), { recursive: true });
    await rename(old, local);
    return true;
  } catch {
    return false;
  }
}

/**
 * Resolves `owner/repo` to a local model path (a GGUF, or a pack's manifest.json) of the revision's
 * current commit, downloading what the cache lacks. When the hub cannot be reached, the commit the
 * revision last resolved to is served from the cache (or `HUB_UNREACHABLE` when there is none).
 */
export async function resolveHubModel(
  repo: string,
  o: HubOptions & Pick<DownloadOptions, 'onProgress'> = {},
): Promise<string> {
  checkRepo(repo);
  const rev = o.revision ?? 'main';
  checkRevision(rev);
  if (o.filename !== undefined) checkFileName(o.filename);
  hubCtx(o); // a bad endpoint is a Config error, even offline
  const root = cacheRoot(o.cacheDir);
  if (isOffline(o)) return resolveOffline(repo, rev, root, o.filename);
  // When the cache can answer, the hub gets one short try: a user with the model on disk should not
  // wait out five stalled attempts (2.5 min by default) for a hub that does not answer.
  const quick = metadataMs(o); // a bad $HF_HUB_ETAG_TIMEOUT is INVALID_ENV whether or not it is needed
  const canFallBack = (await cachedAnswer(repo, rev, root, o.filename)) !== undefined;
  let listing: HubListing;
  try {
    listing = await fetchHubListing(repo, canFallBack ? { ...o, attempts: 1, stallTimeoutMs: quick } : o);
  } catch (e) {
    if (unreachable(e) && !o.signal?.aborted) return resolveOffline(repo, rev, root, o.filename, e);
    throw e;
  }
  const commit = snapshotId(listing, rev);
  const dir = snapshotDir(root, repo, commit);
  // Download by commit, so a branch that moves during the download cannot mix two versions.
  const dlRev = listing.commit ?? rev;
  const names = listing.entries.map((e) => e.file);
  let file = o.filename;
  if (file !== undefined && !names.includes(file))
    throw BitNetError.Model('HUB_NOT_FOUND', `${repo} has no file ${file} at revision "${rev}"`, {
      repo,
      revision: rev,
      file,
      files: names,
    });
  file ??= chooseGGUF(repo, names);
  if (!file) {
    if (!names.includes('manifest.json')) {
      if (!o.convertCheckpoint || !isCheckpoint(names)) throw noGGUF(repo, names);
      const manifest = await convertedCheckpoint(repo, root, commit, listing, o.convertCheckpoint, {
        ...o,
        revision: dlRev,
      });
      await writeRef(root, repo, rev, commit);
      return manifest;
    }
    const manifest = join(dir, 'manifest.json');
    if ((await sizeOf(manifest)) === undefined)
      await downloadHubPack(repo, dir, { ...o, revision: dlRev }, listing.entries);
    await writeRef(root, repo, rev, commit);
    return manifest;
  }
  const local = inside(dir, join(dir, file));
  const ex = entryExpect(listing.entries, file);
  const size = await sizeOf(local);
  // Files get their name in a snapshot only once checked: a matching size is enough here.
  if (!(size !== undefined && (ex.size === undefined || size === ex.size))) {
    if (!(await adoptLegacy(root, repo, rev, file, local, ex)))
      await downloadHubFile(repo, file, local, { ...o, revision: dlRev, ...ex });
  }
  await writeRef(root, repo, rev, commit);
  return local;
}

/**
 * The shard pack of a commit's safetensors checkpoint: made once (the checkpoint downloaded into the
 * snapshot, converted under a lock into a private directory, renamed into `converted/{commit}`
 * complete), then reused. A failed conversion leaves nothing behind and throws its own error.
 */
async function convertedCheckpoint(
  repo: string,
  root: string,
  commit: string,
  listing: HubListing,
  convert: NonNullable<HubOptions['convertCheckpoint']>,
  o: HubOptions,
): Promise<string> {
  const packDir = convertedDir(root, repo, commit);
  const manifest = join(packDir, 'manifest.json');
  if ((await sizeOf(manifest)) !== undefined) return manifest;
  const dir = snapshotDir(root, repo, commit);
  for (const f of checkpointFiles(listing.entries.map((e) => e.file))) {
    const local = inside(dir, join(dir, f));
    const ex = entryExpect(listing.entries, f);
    const size = await sizeOf(local);
    // as for a GGUF: files get their name in a snapshot only once checked
    if (size === undefined || (ex.size !== undefined && size !== ex.size))
      await downloadHubFile(repo, f, local, { ...o, ...ex });
  }
  return packOnce(packDir, (work) => convert(dir, work), o.signal);
}

export interface PullOptions extends DownloadOptions {
  /** Files to fetch; default: the repo's GGUF, or its shard pack, or its safetensors checkpoint. */
  files?: string[];
  /** Where to put them (default: the hub cache's snapshot of the commit, where fromPretrained looks). */
  out?: string;
}

export interface PullResult {
  dir: string;
  /** The model to load (a GGUF or a pack's manifest.json). */
  model?: string;
  /** A safetensors checkpoint directory (to convert with `bitnet convert`). */
  checkpoint?: string;
  /** The commit the revision resolved to, when the hub gave one. */
  commit?: string;
  files: DownloadResult[];
}

/** The files of a safetensors checkpoint that `bitnet convert` reads. */
export function checkpointFiles(names: string[]): string[] {
  const extra = [
    'config.json',
    'generation_config.json',
    'model.safetensors.index.json',
    'tokenizer.json',
    'tokenizer_config.json',
    'special_tokens_map.json',
    'tokenizer.model',
  ];
  return names.filter((f) => extra.includes(f) || (f.endsWith('.safetensors') && !f.includes('/')));
}

/**
 * `bitnet pull`: downloads a GGUF, a shard pack, a safetensors checkpoint, or the named files of a
 * repo. Files already there that match the hub's hash are not downloaded again (`upToDate`).
 */
export async function pullHubRepo(repo: string, o: PullOptions = {}): Promise<PullResult> {
  checkRepo(repo);
  const rev = o.revision ?? 'main';
  checkRevision(rev);
  for (const f of o.files ?? []) checkFileName(f);
  const root = cacheRoot(o.cacheDir);
  if (isOffline(o))
    throw BitNetError.Io(
      'HUB_UNREACHABLE',
      `offline (HF_HUB_OFFLINE or the offline option): pulling ${repo} needs the hub; fromPretrained and hf:// locations serve the cache offline`,
      { repo, revision: rev, offline: true },
    );
  const listing = await fetchHubListing(repo, o);
  const commit = snapshotId(listing, rev);
  const toCache = o.out === undefined;
  const dir = toCache ? snapshotDir(root, repo, commit) : resolve(o.out!);
  const dl: DownloadOptions = { ...o, revision: listing.commit ?? rev };
  const names = listing.entries.map((e) => e.file);
  const one = async (f: string): Promise<DownloadResult> => {
    const local = inside(dir, join(dir, f));
    const ex = entryExpect(listing.entries, f);
    if (o.sha256 && o.files?.length === 1) ex.sha256 = o.sha256;
    const have = await upToDate(local, ex);
    if (have) return kept(local, have.bytes, ex);
    return downloadHubFile(repo, f, local, { ...dl, ...ex });
  };
  const done = async (r: Omit<PullResult, 'dir' | 'commit'>): Promise<PullResult> => {
    if (toCache) await writeRef(root, repo, rev, commit);
    return { dir, commit: listing.commit, ...r };
  };
  if (o.files?.length) {
    const files: DownloadResult[] = [];
    for (const f of o.files) {
      if (!names.includes(f))
        throw BitNetError.Model('HUB_NOT_FOUND', `${repo} has no file ${f} at revision "${rev}"`, {
          repo,
          revision: rev,
          file: f,
          files: names,
        });
      files.push(await one(f));
    }
    return done({ model: files.length === 1 ? files[0].path : undefined, files });
  }
  const gguf = chooseGGUF(repo, names);
  if (gguf) {
    const r = await one(gguf);
    return done({ model: r.path, files: [r] });
  }
  if (names.includes('manifest.json')) {
    const r = await downloadHubPack(repo, dir, dl, listing.entries);
    return done({ model: r.manifest, files: r.files });
  }
  if (isCheckpoint(names)) {
    const files: DownloadResult[] = [];
    for (const f of checkpointFiles(names)) files.push(await one(f));
    return done({ checkpoint: dir, files });
  }
  throw BitNetError.Model(
    'HUB_NO_MODEL',
    `${repo} has no GGUF file, no shard pack and no safetensors checkpoint; name files with --file`,
    { repo, files: names },
  );
}
