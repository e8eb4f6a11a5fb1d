/**
 * Hugging Face hub resolution for `fromPretrained("owner/repo")` (Node, Lambda, container).
 *
 * URL scheme (the hub's own): file listing `GET {endpoint}/api/models/{repo}/revision/{rev}` →
 * `{siblings: [{rfilename}]}`; file bytes `GET {endpoint}/{repo}/resolve/{rev}/{file}`.
 * `HF_ENDPOINT` overrides the endpoint, `HF_TOKEN` is sent as a bearer token. Files are cached in
 * `{cacheDir}/{owner}--{name}/{rev}/{file}` (default cacheDir: $BITNET_CACHE_DIR or
 * ~/.cache/bitnet-edge) and written through a `.partial` file so an interrupted download is never
 * mistaken for a complete one.
 *
 * Downloads resume: a `.partial` file left by an interrupted download is continued with
 * `Range: bytes=N-` and `If-Range: <etag>` (a changed file answers 200 and starts over). A file is
 * checked against a sha256 where one is known: the pack manifest's, the hub's LFS sha256 from
 * `?blobs=true` listings, or an `X-Linked-Etag`/`ETag` that is a sha256; a mismatch deletes the
 * download (`HUB_CHECKSUM_MISMATCH`). A repo with no GGUF but a `manifest.json` is a shard pack:
 * its shards are downloaded first and the manifest last, so a cached manifest means a whole pack.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BitNetError } from '../errors.ts';
import { backoffDelay, sleep } from './retry.ts';

export interface HubOptions {
  endpoint?: string;
  token?: string;
  revision?: string;
  filename?: string;
  cacheDir?: string;
  signal?: AbortSignal;
}

const REPO_RE = /^[A-Za-z0-9][\w.-]{0,95}\/[A-Za-z0-9][\w.-]{0,95}$/;
/** Preferred file when a repo holds several GGUFs. */
const PREFERRED = ['ggml-model-i2_s.gguf'];

function httpError(status: number, url: string, what: string): BitNetError {
  if (status === 401 || status === 403)
    return BitNetError.Io('HUB_UNAUTHORIZED', `${what}: the hub refused access (${status}); set HF_TOKEN`, {
      status,
      url,
    });
  if (status === 404) return BitNetError.Model('HUB_NOT_FOUND', `${what}: not found on the hub (404)`, { status, url });
  return BitNetError.Io('HUB_HTTP_ERROR', `${what}: the hub answered ${status}`, { status, url });
}

async function hubFetch(
  url: string,
  o: HubOptions,
  what: string,
  extra: Record<string, string> = {},
  accept: (status: number) => boolean = () => false,
): Promise<Response> {
  const headers: Record<string, string> = { ...extra };
  const token = o.token ?? process.env.HF_TOKEN;
  if (token) headers.authorization = `Bearer ${token}`;
  let res: Response;
  try {
    res = await fetch(url, { headers, signal: o.signal, redirect: 'follow' });
  } catch (e) {
    if (o.signal?.aborted) throw e;
    throw BitNetError.Io('HUB_UNREACHABLE', `${what}: cannot reach ${url}: ${(e as Error).message}`, { url }, e);
  }
  if (!res.ok && !accept(res.status)) {
    await res.body?.cancel();
    throw httpError(res.status, url, what);
  }
  return res;
}

export function hubEndpoint(o: HubOptions = {}): string {
  return (o.endpoint ?? process.env.HF_ENDPOINT ?? 'https://huggingface.co').replace(/\/+$/, '');
}

export async function listHubFiles(repo: string, o: HubOptions = {}): Promise<string[]> {
  const rev = o.revision ?? 'main';
  const url = `${hubEndpoint(o)}/api/models/${repo}/revision/${encodeURIComponent(rev)}`;
  const res = await hubFetch(url, o, `listing ${repo}`);
  const body = (await res.json()) as { siblings?: { rfilename?: unknown }[] };
  if (!Array.isArray(body.siblings))
    throw BitNetError.Io('HUB_BAD_RESPONSE', `listing ${repo}: no file list in the hub's answer`, { url });
  return body.siblings.map((s) => s.rfilename).filter((f): f is string => typeof f === 'string');
}

export interface HubEntry {
  file: string;
  size?: number;
  /** The LFS object's sha256, when the hub gives it. */
  sha256?: string;
}

/** The file list with sizes and LFS sha256s (`?blobs=true`). */
export async function listHubEntries(repo: string, o: HubOptions = {}): Promise<HubEntry[]> {
  const rev = o.revision ?? 'main';
  const url = `${hubEndpoint(o)}/api/models/${repo}/revision/${encodeURIComponent(rev)}?blobs=true`;
  const res = await hubFetch(url, o, `listing ${repo}`);
  const body = (await res.json()) as {
    siblings?: { rfilename?: unknown; size?: unknown; lfs?: { sha256?: unknown; size?: unknown } }[];
  };
  if (!Array.isArray(body.siblings))
    throw BitNetError.Io('HUB_BAD_RESPONSE', `listing ${repo}: no file list in the hub's answer`, { url });
  const out: HubEntry[] = [];
  for (const s of body.siblings) {
    if (typeof s.rfilename !== 'string') continue;
    const sha = typeof s.lfs?.sha256 === 'string' && /^[0-9a-f]{64}$/.test(s.lfs.sha256) ? s.lfs.sha256 : undefined;
    const size = typeof s.lfs?.size === 'number' ? s.lfs.size : typeof s.size === 'number' ? s.size : undefined;
    out.push({ file: s.rfilename, size, sha256: sha });
  }
  return out;
}

function checkRepo(repo: string): void {
  if (!REPO_RE.test(repo))
    throw BitNetError.Config('BAD_REPO_ID', `"${repo}" is not a hub repository id (owner/name)`, { repo });
}

function checkFileName(file: string): void {
  if (file.split('/').some((p) => p === '..' || p === '' || p === '.') || file.includes('\\'))
    throw BitNetError.Config('BAD_FILENAME', `bad file name ${file}`, { file });
}

export function hubCacheDir(repo: string, o: HubOptions = {}): string {
  const cacheDir = o.cacheDir ?? process.env.BITNET_CACHE_DIR ?? join(homedir(), '.cache', 'bitnet-edge');
  return join(cacheDir, repo.replace('/', '--'), o.revision ?? 'main');
}

function resolveUrl(repo: string, file: string, o: HubOptions): string {
  const rev = o.revision ?? 'main';
  return `${hubEndpoint(o)}/${repo}/resolve/${encodeURIComponent(rev)}/${file.split('/').map(encodeURIComponent).join('/')}`;
}

/** Picks the GGUF to use from a file list (the preferred name, else the only one). */
function chooseGGUF(repo: string, files: string[]): string | undefined {
  const ggufs = files.filter((f) => f.endsWith('.gguf'));
  const file = PREFERRED.find((p) => ggufs.includes(p)) ?? (ggufs.length === 1 ? ggufs[0] : undefined);
  if (!file && ggufs.length) {
    throw BitNetError.Model('HUB_AMBIGUOUS_FILE', `${repo} has several GGUF files; choose one with filename`, {
      repo,
      files: ggufs,
    });
  }
  return file;
}

async function fileSha256(path: string): Promise<string> {
  const h = createHash('sha256');
  await pipeline(createReadStream(path), h);
  return h.digest('hex');
}

async function sizeOf(path: string): Promise<number | undefined> {
  try {
    const st = await stat(path);
    return st.isFile() ? st.size : undefined;
  } catch {
    return undefined;
  }
}

const SHA256_RE = /^[0-9a-f]{64}$/;

export interface DownloadOptions extends HubOptions {
  /** Expected sha256 (lower-case hex); checked after the download. */
  sha256?: string;
  onProgress?: (p: { file: string; doneBytes: number; totalBytes?: number }) => void;
  /** Attempts, each resuming where the last stopped (default 5). */
  attempts?: number;
}

export interface DownloadResult {
  path: string;
  bytes: number;
  /** Bytes already on disk from an earlier, interrupted download. */
  resumedFrom: number;
  /** The sha256 that was checked, if any. */
  sha256?: string;
}

/**
 * Downloads `file` of `repo` to `local`, resuming a `.partial` left by an earlier attempt, and
 * checks its sha256 where one is known. The file appears under its name only when complete.
 */
export async function downloadHubFile(
  repo: string,
  file: string,
  local: string,
  o: DownloadOptions = {},
): Promise<DownloadResult> {
  checkFileName(file);
  const url = resolveUrl(repo, file, o);
  const partial = `${local}.partial`;
  const side = `${local}.partial.json`;
  await mkdir(dirname(local), { recursive: true });
  let resumedFrom = 0;
  let lastError: unknown;
  for (let attempt = 0; attempt < (o.attempts ?? 5); attempt++) {
    let have = (await sizeOf(partial)) ?? 0;
    let validator: string | undefined;
    try {
      validator = (JSON.parse(await readFile(side, 'utf8')) as { etag?: string }).etag;
    } catch {
      validator = undefined;
    }
    if (have > 0 && !validator) have = 0; // a partial without its validator cannot be trusted
    const headers: Record<string, string> = {};
    if (have > 0) {
      headers.range = `bytes=${have}-`;
      if (validator) headers['if-range'] = validator;
    }
    let res: Response;
    try {
      res = await hubFetch(url, o, `downloading ${repo}/${file}`, headers, (s) => s === 416);
    } catch (e) {
      // A 5xx or an unreachable hub is worth another attempt (resuming); anything else is final.
      const code = (e as BitNetError).code;
      const status = Number((e as BitNetError).details?.status);
      if (!(code === 'HUB_UNREACHABLE' || (code === 'HUB_HTTP_ERROR' && (status >= 500 || status === 429)))) throw e;
      lastError = e;
      await sleep(backoffDelay(attempt, { baseDelayMs: 200 }), o.signal);
      continue;
    }
    let total: number | undefined;
    let append = false;
    if (res.status === 416) {
      await res.body?.cancel();
      const m = /^bytes \*\/(\d+)$/.exec(res.headers.get('content-range') ?? '');
      if (m && Number(m[1]) === have) {
        total = have; // the partial file is already complete
        if (attempt === 0) resumedFrom = have;
      } else {
        await rm(partial, { force: true });
        continue;
      }
    } else if (res.status === 206) {
      const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(res.headers.get('content-range') ?? '');
      if (!m || Number(m[1]) !== have) {
        await res.body?.cancel();
        await rm(partial, { force: true });
        lastError = BitNetError.Io('HUB_BAD_RESPONSE', `${file}: bad Content-Range on resume`, { url });
        continue;
      }
      total = Number(m[3]);
      append = true;
      if (attempt === 0) resumedFrom = have;
    } else {
      const len = res.headers.get('content-length');
      total = len === null ? undefined : Number(len);
    }
    const etag = res.headers.get('etag') ?? undefined;
    const linked = (res.headers.get('x-linked-etag') ?? etag ?? '').replace(/^(W\/)?"|"$/g, '');
    const expectSha = o.sha256 ?? (SHA256_RE.test(linked) ? linked : undefined);
    if (res.status !== 416) {
      if (!append) await rm(partial, { force: true });
      if (etag && !etag.startsWith('W/')) await writeFile(side, JSON.stringify({ etag, url }));
      else await rm(side, { force: true });
      if (!res.body) throw BitNetError.Io('HUB_BAD_RESPONSE', `downloading ${file}: empty body`, { url });
      const start = append ? have : 0;
      let done = start;
      const body = Readable.fromWeb(res.body as import('node:stream/web').ReadableStream);
      body.on('data', (c: Buffer) => {
        done += c.byteLength;
        o.onProgress?.({ file, doneBytes: done, totalBytes: total });
      });
      try {
        await pipeline(body, createWriteStream(partial, { flags: append ? 'a' : 'w' }), { signal: o.signal });
      } catch (e) {
        if (o.signal?.aborted) throw e;
        lastError = BitNetError.Io(
          'HUB_DOWNLOAD_INTERRUPTED',
          `downloading ${file}: ${(e as Error).message}`,
          { url },
          e,
        );
        continue;
      }
    }
    const got = (await sizeOf(partial)) ?? 0;
    if (total !== undefined && Number.isFinite(total) && got !== total) {
      lastError = BitNetError.Io('HUB_SHORT_DOWNLOAD', `downloading ${file}: got ${got} of ${total} bytes`, {
        url,
        expected: total,
        got,
      });
      continue; // resume from what arrived
    }
    if (expectSha) {
      const sha = await fileSha256(partial);
      if (sha !== expectSha) {
        await rm(partial, { force: true });
        await rm(side, { force: true });
        throw BitNetError.Io('HUB_CHECKSUM_MISMATCH', `${repo}/${file}: sha256 ${sha} does not match ${expectSha}`, {
          url,
          expected: expectSha,
          got: sha,
        });
      }
    }
    await rename(partial, local);
    await rm(side, { force: true });
    return { path: local, bytes: got, resumedFrom, sha256: expectSha };
  }
  throw lastError instanceof BitNetError
    ? lastError
    : BitNetError.Io('HUB_SHORT_DOWNLOAD', `downloading ${file} failed`, { url }, lastError);
}

/**
 * Downloads a shard pack (`manifest.json` and the shards it names) into `dir`: shards first, each
 * checked against the manifest's sha256, the manifest last. Returns the manifest's path.
 */
export async function downloadHubPack(
  repo: string,
  dir: string,
  o: DownloadOptions = {},
  known: HubEntry[] = [],
): Promise<{ manifest: string; files: DownloadResult[] }> {
  const manifestPath = join(dir, 'manifest.json');
  const staged = join(dir, 'manifest.json.download');
  const files: DownloadResult[] = [];
  const m = await downloadHubFile(repo, 'manifest.json', staged, {
    ...o,
    sha256: known.find((e) => e.file === 'manifest.json')?.sha256,
  });
  files.push({ ...m, path: manifestPath });
  let manifest: { shards?: { file?: unknown; sha256?: unknown }[] };
  try {
    manifest = JSON.parse(await readFile(staged, 'utf8'));
  } catch (e) {
    throw BitNetError.Model('PACK_BAD_JSON', `${repo}/manifest.json is not valid JSON`, {}, e);
  }
  if (!Array.isArray(manifest.shards))
    throw BitNetError.Model('PACK_BAD_MANIFEST', `${repo}/manifest.json lists no shards`, {});
  for (const sh of manifest.shards) {
    const file = String(sh.file);
    checkFileName(file);
    const local = join(dir, file);
    const sha = typeof sh.sha256 === 'string' ? sh.sha256 : undefined;
    if (sha && (await sizeOf(local)) !== undefined && (await fileSha256(local)) === sha) {
      files.push({ path: local, bytes: (await sizeOf(local))!, resumedFrom: 0, sha256: sha });
      continue;
    }
    files.push(await downloadHubFile(repo, file, local, { ...o, sha256: sha }));
  }
  await rename(staged, manifestPath);
  return { manifest: manifestPath, files };
}

/** Resolves `owner/repo` to a local model path (a GGUF, or a pack's manifest.json), downloading it into the cache if needed. */
export async function resolveHubModel(repo: string, o: HubOptions = {}): Promise<string> {
  checkRepo(repo);
  let file = o.filename;
  if (!file) {
    const all = await listHubFiles(repo, o);
    file = chooseGGUF(repo, all);
    if (!file) {
      if (all.includes('manifest.json')) {
        const dir = hubCacheDir(repo, o);
        const manifest = join(dir, 'manifest.json');
        if ((await sizeOf(manifest)) !== undefined) return manifest;
        return (await downloadHubPack(repo, dir, o)).manifest;
      }
      throw BitNetError.Model('HUB_NO_GGUF', `${repo} has no GGUF file`, { repo, files: all });
    }
  }
  checkFileName(file);
  const local = join(hubCacheDir(repo, o), file);
  if ((await sizeOf(local)) !== undefined) return local;
  return (await downloadHubFile(repo, file, local, o)).path;
}

export interface PullOptions extends DownloadOptions {
  /** Files to fetch; default: the repo's GGUF, or its shard pack. */
  files?: string[];
  /** Where to put them (default: the hub cache, where fromPretrained looks). */
  out?: string;
}

/** `bitnet pull`: downloads a GGUF, a shard pack, or the named files of a repo. */
export async function pullHubRepo(
  repo: string,
  o: PullOptions = {},
): Promise<{ dir: string; model?: string; files: DownloadResult[] }> {
  checkRepo(repo);
  const dir = o.out ?? hubCacheDir(repo, o);
  const entries = await listHubEntries(repo, o);
  const names = entries.map((e) => e.file);
  const sha = (f: string) => entries.find((e) => e.file === f)?.sha256;
  if (o.files?.length) {
    const files: DownloadResult[] = [];
    for (const f of o.files) {
      checkFileName(f);
      if (!names.includes(f))
        throw BitNetError.Model('HUB_NOT_FOUND', `${repo} has no file ${f}`, { repo, file: f, files: names });
      files.push(await downloadHubFile(repo, f, join(dir, f), { ...o, sha256: o.sha256 ?? sha(f) }));
    }
    return { dir, model: files.length === 1 ? files[0].path : undefined, files };
  }
  const gguf = chooseGGUF(repo, names);
  if (gguf) {
    const r = await downloadHubFile(repo, gguf, join(dir, gguf), { ...o, sha256: sha(gguf) });
    return { dir, model: r.path, files: [r] };
  }
  if (names.includes('manifest.json')) {
    const r = await downloadHubPack(repo, dir, o, entries);
    return { dir, model: r.manifest, files: r.files };
  }
  throw BitNetError.Model('HUB_NO_MODEL', `${repo} has no GGUF file and no shard pack; name files with --file`, {
    repo,
    files: names,
  });
}
