/**
 * The hub cache's layout, checks on everything that becomes part of a path, and the lock that keeps
 * two writers (two processes, or two calls) off the same download.
 *
 * Layout (like huggingface_hub's, without the blob dedupe):
 *
 *   {cacheDir}/{owner}--{name}/
 *     refs/{revision}                  the commit a branch or tag last resolved to (one line);
 *                                      the revision is percent-encoded (refs%2Fpr%2F1)
 *     snapshots/{commit}/{file}        the files of that commit, complete and checked
 *     snapshots/{commit}/{file}.partial, .partial.json, .lock   a download in progress
 *     converted/{commit}/              a shard pack made from that commit's safetensors checkpoint
 *                                      (fromPretrained; complete once it has its manifest.json)
 *     {revision}/{file}                the old layout, before snapshots (moved into snapshots/ once its
 *                                      sha256 matches the hub's; served as is when offline)
 *
 * `{commit}` is the 40-hex commit sha the hub reports (`sha` of the listing). A hub whose listing
 * has no sha gets `listing-{40 hex}`: a hash of its file list (names, sizes, sha256s), so a change
 * to a file the hub describes still gives a new snapshot.
 *
 * cacheDir: the `cacheDir` option, else `$BITNET_CACHE_DIR`, else `~/.cache/bitnet-edge`.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { homedir, hostname } from 'node:os';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { BitNetError } from '../errors.ts';
import { abortError, sleep } from './retry.ts';

const COMMIT_RE = /^[0-9a-f]{40}$/;
const SNAPSHOT_RE = /^(?:[0-9a-f]{40}|listing-[0-9a-f]{40})$/;
/** Names in a repo's cache directory that belong to the current layout, never a legacy revision. */
const RESERVED = new Set(['refs', 'snapshots', 'blobs', 'converted']);

/**
 * A revision: a commit sha, or a branch/tag name as git allows it (`main`, `v1.0`, `refs/pr/1`).
 * Refused (`BAD_REVISION`, kind Config): empty, `..`, a leading or trailing `/`, `//`, a part that
 * starts with `.` or ends with `.lock`, `\`, control characters, space and `~^:?*[`, `@{`, over 255.
 */
export function checkRevision(rev: unknown): asserts rev is string {
  const bad = (why: string) =>
    BitNetError.Config('BAD_REVISION', `revision ${JSON.stringify(rev)} is not a branch, tag or commit: ${why}`, {
      revision: rev,
    });
  if (typeof rev !== 'string' || rev === '') throw bad('empty');
  if (rev.length > 255) throw bad('too long');
  // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
  if (/[\x00-\x20\x7f~^:?*[\\]/.test(rev)) throw bad('it has a space, a control character or one of ~^:?*[\\');
  if (rev.includes('..')) throw bad('it contains ".."');
  if (rev.includes('@{') || rev === '@') throw bad('"@{" or "@"');
  if (rev.startsWith('/') || rev.endsWith('/') || rev.includes('//')) throw bad('a leading, trailing or double "/"');
  for (const part of rev.split('/')) {
    if (part.startsWith('.') || part.endsWith('.lock')) throw bad('a part starts with "." or ends with ".lock"');
  }
}

export function isCommit(rev: string): boolean {
  return COMMIT_RE.test(rev);
}

/** `p` resolved, checked to be `base` or below it (`CACHE_PATH_ESCAPE` otherwise). */
export function inside(base: string, p: string): string {
  const b = resolve(base);
  const r = resolve(p);
  if (r !== b && !r.startsWith(b.endsWith(sep) ? b : b + sep))
    throw BitNetError.Config('CACHE_PATH_ESCAPE', `${r} is outside ${b}`, { base: b, path: r });
  return r;
}

export function cacheRoot(cacheDir?: string): string {
  return resolve(cacheDir || process.env.BITNET_CACHE_DIR || join(homedir(), '.cache', 'bitnet-edge'));
}

export function repoDir(root: string, repo: string): string {
  return inside(root, join(root, repo.replace('/', '--')));
}

export function snapshotDir(root: string, repo: string, commit: string): string {
  if (!SNAPSHOT_RE.test(commit)) throw BitNetError.Io('HUB_BAD_RESPONSE', `bad commit id ${commit}`, { commit });
  const dir = repoDir(root, repo);
  return inside(dir, join(dir, 'snapshots', commit));
}

/** Where the shard pack converted from `commit`'s safetensors checkpoint lives (beside the snapshot, not in it). */
export function convertedDir(root: string, repo: string, commit: string): string {
  if (!SNAPSHOT_RE.test(commit)) throw BitNetError.Io('HUB_BAD_RESPONSE', `bad commit id ${commit}`, { commit });
  const dir = repoDir(root, repo);
  return inside(dir, join(dir, 'converted', commit));
}

function refFile(root: string, repo: string, rev: string): string {
  checkRevision(rev);
  const dir = repoDir(root, repo);
  return inside(join(dir, 'refs'), join(dir, 'refs', encodeURIComponent(rev)));
}

/** The commit `rev` last resolved to, if known. */
export async function readRef(root: string, repo: string, rev: string): Promise<string | undefined> {
  try {
    const c = (await readFile(refFile(root, repo, rev), 'utf8')).trim();
    return SNAPSHOT_RE.test(c) ? c : undefined;
  } catch {
    return undefined;
  }
}

/** Records that `rev` resolved to `commit` (atomically; best effort: a failure only costs offline use). */
export async function writeRef(root: string, repo: string, rev: string, commit: string): Promise<void> {
  if (rev === commit) return;
  const f = refFile(root, repo, rev);
  const tmp = `${f}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    await mkdir(dirname(f), { recursive: true });
    if ((await readFile(f, 'utf8').catch(() => '')).trim() === commit) return;
    await writeFile(tmp, `${commit}\n`);
    await rename(tmp, f);
  } catch {
    await rm(tmp, { force: true }).catch(() => {});
  }
}

/** The pre-snapshot directory of `rev` (`{owner}--{name}/{rev}`), unless its name is the new layout's. */
export function legacyDir(root: string, repo: string, rev: string): string | undefined {
  checkRevision(rev);
  if (RESERVED.has(rev.split('/')[0])) return undefined;
  const dir = repoDir(root, repo);
  return inside(dir, join(dir, rev));
}

const WORK_SUFFIX = /\.(partial|partial\.json|lock|download|lock\.stale-[\w-]+)$|\.tmp-[\w-]+$/;
/** packOnce's private directory beside a pack: `{packDir}.partial-{pid}-{8 hex}`. */
const PACK_WORK = /\.partial-\d+-[0-9a-f]{8}$/;

/** Whether a name in the cache is work in progress (a download, a lock, a pack being made), not content. */
export function isWorkName(name: string): boolean {
  return WORK_SUFFIX.test(name) || PACK_WORK.test(name);
}

/** Complete files under `dir` (relative, `/`-separated): no download in progress, no lock. */
export async function completeFiles(dir: string): Promise<string[]> {
  let names: string[];
  try {
    names = (await readdir(dir, { recursive: true, withFileTypes: true }))
      .filter((d) => d.isFile())
      .map((d) => relative(dir, join(d.parentPath, d.name)));
  } catch {
    return [];
  }
  return names
    .map((n) => n.split(sep).join('/'))
    .filter((n) => !isWorkName(n))
    .sort();
}

export async function sizeOf(path: string): Promise<number | undefined> {
  try {
    const st = await stat(path);
    return st.isFile() ? st.size : undefined;
  } catch {
    return undefined;
  }
}

// ---- the download lock ----

export interface LockOptions {
  signal?: AbortSignal;
  /** A lock not refreshed for this long is stale (default 60 s). Holders refresh it every staleMs/4. */
  staleMs?: number;
  /** Poll interval while waiting (default 100 ms). */
  pollMs?: number;
}

interface LockInfo {
  pid: number;
  host: string;
  token: string;
}

/** A lock file without readable content is stale once this old (ms). */
const HALF_WRITTEN_MS = 5000;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Whether the lock at `path` is stale: its process is gone (same host), or it was not refreshed for staleMs. */
export async function isStale(path: string, staleMs: number): Promise<boolean> {
  let info: Partial<LockInfo> | undefined;
  let mtime: number;
  try {
    mtime = (await stat(path)).mtimeMs;
    info = JSON.parse(await readFile(path, 'utf8'));
  } catch {
    // Unreadable or half-written: stale once a few seconds old (a writer may be between open and
    // write, which takes milliseconds; one that failed there leaves it empty for good).
    try {
      mtime = (await stat(path)).mtimeMs;
    } catch {
      return false; // gone: the next try takes it
    }
    return Date.now() - mtime > Math.min(staleMs, HALF_WRITTEN_MS);
  }
  if (info && info.host === hostname() && typeof info.pid === 'number' && info.pid !== process.pid && !alive(info.pid))
    return true;
  return Date.now() - mtime > staleMs;
}

export interface HeldLock {
  /** True when another writer held the lock first (its result may be on disk now). */
  waited: boolean;
  release(): Promise<void>;
}

/**
 * Takes the lock file `path` (created with O_EXCL, holding pid, host and a token), waiting while a
 * live writer holds it. A stale lock (dead pid on this host, or not refreshed for staleMs) is moved
 * aside and taken. The holder refreshes its mtime until released.
 */
export async function acquireLock(path: string, o: LockOptions = {}): Promise<HeldLock> {
  const staleMs = o.staleMs ?? 60_000;
  const pollMs = o.pollMs ?? 100;
  const info: LockInfo = { pid: process.pid, host: hostname(), token: randomBytes(8).toString('hex') };
  let waited = false;
  for (;;) {
    if (o.signal?.aborted) throw abortError(o.signal);
    try {
      const fh = await open(path, 'wx');
      try {
        await fh.writeFile(JSON.stringify(info));
        await fh.close();
      } catch (e) {
        // Created but not written (disk full...): remove it, or others would wait for it to go stale.
        await fh.close().catch(() => {});
        await rm(path, { force: true }).catch(() => {});
        throw e;
      }
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw BitNetError.Io(
          'HUB_CACHE_WRITE_FAILED',
          `cannot create the lock ${path}: ${(e as Error).message}`,
          { path },
          e,
        );
      }
    }
    waited = true;
    if (await isStale(path, staleMs)) {
      // Move it aside under a unique name: of several waiters that judged it stale, one wins.
      const aside = `${path}.stale-${process.pid}-${randomBytes(4).toString('hex')}`;
      try {
        await rename(path, aside);
        await rm(aside, { force: true });
      } catch {
        // another waiter moved it first
      }
      continue;
    }
    await sleep(pollMs, o.signal);
  }
  const refresh = setInterval(
    () => {
      const now = new Date();
      utimes(path, now, now).catch(() => {});
    },
    Math.max(250, Math.floor(staleMs / 4)),
  );
  refresh.unref?.();
  return {
    waited,
    async release() {
      clearInterval(refresh);
      try {
        const cur = JSON.parse(await readFile(path, 'utf8')) as LockInfo;
        if (cur.token !== info.token) return; // taken over as stale: not ours to remove
      } catch {
        return;
      }
      await rm(path, { force: true }).catch(() => {});
    },
  };
}

/**
 * The shard pack in `packDir`, made once: under the lock `{packDir}.lock`, `make` writes a private
 * directory that is renamed to `packDir` when complete, so readers see a whole pack or none. A pack
 * that another writer finished meanwhile is used as it is; a failed `make` leaves nothing behind.
 * Returns the pack's manifest path.
 */
export async function packOnce(
  packDir: string,
  make: (workDir: string) => Promise<void>,
  signal?: AbortSignal,
): Promise<string> {
  const manifest = join(packDir, 'manifest.json');
  if ((await sizeOf(manifest)) !== undefined) return manifest;
  await mkdir(dirname(packDir), { recursive: true });
  const lock = await acquireLock(`${packDir}.lock`, { signal });
  const work = `${packDir}.partial-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    if ((await sizeOf(manifest)) !== undefined) return manifest;
    await make(work);
    await rm(packDir, { recursive: true, force: true }); // an incomplete one (no manifest) from a crash
    await rename(work, packDir);
    return manifest;
  } finally {
    await rm(work, { recursive: true, force: true }).catch(() => {});
    await lock.release();
  }
}
