/**
 * Hugging Face hub resolution for `fromPretrained("owner/repo")` (Node, Lambda, container).
 *
 * URL scheme (the hub's own): file listing `GET {endpoint}/api/models/{repo}/revision/{rev}` →
 * `{siblings: [{rfilename}]}`; file bytes `GET {endpoint}/{repo}/resolve/{rev}/{file}`.
 * `HF_ENDPOINT` overrides the endpoint, `HF_TOKEN` is sent as a bearer token. Files are cached in
 * `{cacheDir}/{owner}--{name}/{rev}/{file}` (default cacheDir: $BITNET_CACHE_DIR or
 * ~/.cache/bitnet-edge) and written through a `.partial` file so an interrupted download is never
 * mistaken for a complete one.
 */
import { createWriteStream } from 'node:fs';
import { mkdir, rename, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BitNetError } from '../errors.ts';

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

async function hubFetch(url: string, o: HubOptions, what: string): Promise<Response> {
  const headers: Record<string, string> = {};
  const token = o.token ?? process.env.HF_TOKEN;
  if (token) headers.authorization = `Bearer ${token}`;
  let res: Response;
  try {
    res = await fetch(url, { headers, signal: o.signal, redirect: 'follow' });
  } catch (e) {
    throw BitNetError.Io('HUB_UNREACHABLE', `${what}: cannot reach ${url}: ${(e as Error).message}`, { url }, e);
  }
  if (!res.ok) {
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

/** Resolves `owner/repo` to a local GGUF path, downloading it into the cache if needed. */
export async function resolveHubModel(repo: string, o: HubOptions = {}): Promise<string> {
  if (!REPO_RE.test(repo))
    throw BitNetError.Config('BAD_REPO_ID', `"${repo}" is not a hub repository id (owner/name)`, { repo });
  const rev = o.revision ?? 'main';
  let file = o.filename;
  if (!file) {
    const ggufs = (await listHubFiles(repo, o)).filter((f) => f.endsWith('.gguf'));
    file = PREFERRED.find((p) => ggufs.includes(p)) ?? (ggufs.length === 1 ? ggufs[0] : undefined);
    if (!file) {
      throw BitNetError.Model(
        ggufs.length ? 'HUB_AMBIGUOUS_FILE' : 'HUB_NO_GGUF',
        ggufs.length ? `${repo} has several GGUF files; choose one with filename` : `${repo} has no GGUF file`,
        { repo, files: ggufs },
      );
    }
  }
  if (file.split('/').some((p) => p === '..' || p === ''))
    throw BitNetError.Config('BAD_FILENAME', `bad file name ${file}`, { file });
  const cacheDir = o.cacheDir ?? process.env.BITNET_CACHE_DIR ?? join(homedir(), '.cache', 'bitnet-edge');
  const local = join(cacheDir, repo.replace('/', '--'), rev, file);
  try {
    if ((await stat(local)).isFile()) return local;
  } catch {
    // not cached yet
  }
  const url = `${hubEndpoint(o)}/${repo}/resolve/${encodeURIComponent(rev)}/${file.split('/').map(encodeURIComponent).join('/')}`;
  const res = await hubFetch(url, o, `downloading ${repo}/${file}`);
  if (!res.body) throw BitNetError.Io('HUB_BAD_RESPONSE', `downloading ${file}: empty body`, { url });
  await mkdir(dirname(local), { recursive: true });
  const partial = `${local}.partial`;
  await pipeline(Readable.fromWeb(res.body as import('node:stream/web').ReadableStream), createWriteStream(partial), {
    signal: o.signal,
  });
  const expected = Number(res.headers.get('content-length') ?? Number.NaN);
  const got = (await stat(partial)).size;
  if (Number.isFinite(expected) && expected !== got) {
    throw BitNetError.Io('HUB_SHORT_DOWNLOAD', `downloading ${file}: got ${got} of ${expected} bytes`, {
      url,
      expected,
      got,
    });
  }
  await rename(partial, local);
  return local;
}
