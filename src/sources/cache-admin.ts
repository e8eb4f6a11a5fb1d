/**
 * What the model cache holds, and removing parts of it (`bitnet cache`). Node only.
 *
 * Entries (layout: hf-hub-cache.ts, local-checkpoint.ts):
 *   snapshot     {owner}--{name}/snapshots/{commit}     a hub commit's files (refs naming it listed)
 *   converted    {owner}--{name}/converted/{commit}     the pack made from that commit's checkpoint
 *   legacy       {owner}--{name}/{revision}             the pre-snapshot layout
 *   checkpoint   checkpoints/{key}                      the pack of a local checkpoint directory
 * An entry is busy while a download or conversion works in it: a live lock (`.lock`, held by a
 * running process and refreshed; hf-hub-cache.ts acquireLock) inside or beside it. Removing a busy
 * entry is refused (CACHE_BUSY), so a running download is never cut. The `.partial` files and
 * private directories an interrupted download or conversion left behind hold no live lock: they
 * are removed with their entry (the next download starts over or resumes from the hub).
 */
import { readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { BitNetError } from '../errors.ts';
import { checkRevision, inside, isCommit, isStale, isWorkName, readRef, repoDir } from './hf-hub-cache.ts';

export interface CacheEntry {
  kind: 'snapshot' | 'converted' | 'legacy' | 'checkpoint';
  /** owner/repo (hub entries). */
  repo?: string;
  /** The commit (snapshot, converted) or revision (legacy). */
  commit?: string;
  /** The refs (branches, tags) that name this commit. */
  refs?: string[];
  /** The local checkpoint directory a checkpoint pack was made from. */
  source?: string;
  bytes: number;
  path: string;
  busy: boolean;
}

async function names(dir: string): Promise<string[]> {
  return readdir(dir).catch(() => [] as string[]);
}

/** A lock a running writer holds (not stale by acquireLock's rules, with its default 60 s). */
const liveLock = async (path: string) => path.endsWith('.lock') && !(await isStale(path, 60_000));

/** Total bytes of the files under `path`, and whether a writer works in it (a live lock). */
async function usage(path: string): Promise<{ bytes: number; busy: boolean }> {
  let bytes = 0;
  let busy = false;
  try {
    for (const d of await readdir(path, { recursive: true, withFileTypes: true })) {
      if (!d.isFile()) continue;
      const p = join(d.parentPath, d.name);
      if (!busy && (await liveLock(p))) busy = true;
      bytes += (await stat(p).catch(() => ({ size: 0 }))).size;
    }
  } catch {
    // gone meanwhile
  }
  return { bytes, busy };
}

async function entry(
  e: Omit<CacheEntry, 'bytes' | 'busy'>,
  siblings: string[],
  name: string,
  dir: string,
): Promise<CacheEntry> {
  const u = await usage(e.path);
  // packOnce's lock sits beside the pack (its private directory too, removed with the entry)
  let beside = false;
  for (const s of siblings) if (!beside && s === `${name}.lock` && (await liveLock(join(dir, s)))) beside = true;
  return { ...e, bytes: u.bytes, busy: u.busy || beside };
}

/** Every entry under the cache root `root`. */
export async function listCache(root: string): Promise<CacheEntry[]> {
  const out: CacheEntry[] = [];
  for (const top of (await names(root)).sort()) {
    if (top === 'checkpoints') {
      const dir = join(root, top);
      const keys = await names(dir);
      for (const key of keys.filter((k) => /^[0-9a-f]{40}$/.test(k)).sort()) {
        const path = join(dir, key);
        const src = await readFile(join(path, 'source.json'), 'utf8')
          .then((t) => (JSON.parse(t) as { dir?: string }).dir)
          .catch(() => undefined);
        out.push(await entry({ kind: 'checkpoint', source: src, path }, keys, key, dir));
      }
      continue;
    }
    const m = /^(.+?)--(.+)$/.exec(top);
    if (!m) continue;
    const repo = `${m[1]}/${m[2]}`;
    const base = join(root, top);
    const refs = new Map<string, string[]>();
    for (const r of await names(join(base, 'refs'))) {
      const rev = decodeURIComponent(r);
      const c = await readRef(root, repo, rev).catch(() => undefined);
      if (c) refs.set(c, [...(refs.get(c) ?? []), rev]);
    }
    for (const kind of ['snapshots', 'converted'] as const) {
      const dir = join(base, kind);
      const commits = await names(dir);
      for (const commit of commits.filter((c) => !isWorkName(c)).sort()) {
        const e = {
          kind: kind === 'snapshots' ? ('snapshot' as const) : ('converted' as const),
          repo,
          commit,
          refs: refs.get(commit) ?? [],
          path: join(dir, commit),
        };
        out.push(await entry(e, commits, commit, dir));
      }
    }
    const layout = ['refs', 'snapshots', 'converted', 'blobs'];
    for (const rev of (await names(base)).filter((n) => !layout.includes(n) && !isWorkName(n))) {
      const path = join(base, rev);
      if ((await stat(path).catch(() => undefined))?.isDirectory())
        out.push(await entry({ kind: 'legacy', repo, commit: rev, path }, [], rev, base));
    }
  }
  return out;
}

/**
 * Removes what `target` names: `owner/repo` (all of it), `owner/repo@REV` (the commit REV is or
 * last resolved to: its snapshot, its converted pack and the refs naming it), `checkpoints` (every
 * local checkpoint's pack) or one checkpoint key. Nothing is removed when any of it is busy.
 */
export async function removeFromCache(root: string, target: string): Promise<CacheEntry[]> {
  const all = await listCache(root);
  let picked: CacheEntry[];
  let extra: string[] = []; // paths removed with the entries (refs, the repo directory)
  if (target === 'checkpoints') picked = all.filter((e) => e.kind === 'checkpoint');
  else if (/^[0-9a-f]{40}$/.test(target))
    picked = all.filter((e) => e.kind === 'checkpoint' && e.path.endsWith(target));
  else {
    const m = /^([^@]+)@(.+)$/.exec(target);
    const repo = m ? m[1] : target;
    if (!/^[\w.-]+\/[\w.-]+$/.test(repo))
      throw BitNetError.Config(
        'BAD_TARGET',
        `"${target}" is not owner/repo, owner/repo@REVISION, checkpoints or a checkpoint key (bitnet cache ls)`,
        { target },
      );
    const dir = repoDir(root, repo);
    if (!m) {
      picked = all.filter((e) => e.repo === repo);
      extra = [dir];
    } else {
      checkRevision(m[2]);
      const commit = isCommit(m[2]) ? m[2] : ((await readRef(root, repo, m[2])) ?? m[2]);
      picked = all.filter((e) => e.repo === repo && e.commit === commit);
      extra = picked
        .flatMap((e) => e.refs ?? [])
        .map((r) => inside(join(dir, 'refs'), join(dir, 'refs', encodeURIComponent(r))));
    }
  }
  if (picked.length === 0)
    throw BitNetError.Io('CACHE_NOT_FOUND', `the cache (${root}) has nothing for "${target}"`, { target, root });
  const busy = picked.filter((e) => e.busy);
  // a whole repo: also work that has no entry yet (a first download or conversion)
  for (const p of extra) if (busy.length === 0 && (await usage(p)).busy) busy.push({ ...picked[0], path: p });
  if (busy.length)
    throw BitNetError.Io(
      'CACHE_BUSY',
      `a download or conversion is working in ${busy[0].path}; try again when it ends`,
      {
        target,
        paths: busy.map((e) => e.path),
      },
    );
  for (const p of [...picked.map((e) => e.path), ...extra]) await rm(inside(root, p), { recursive: true, force: true });
  return picked;
}
