/**
 * `bitnet cache [ls] [--json]` lists what the model cache holds ($BITNET_CACHE_DIR, else
 * ~/.cache/bitnet-edge): hub snapshots, packs converted from hub checkpoints, old-layout
 * revisions and the packs of local checkpoint directories, with their sizes.
 * `bitnet cache rm TARGET [--json]` removes owner/repo, owner/repo@REVISION, `checkpoints` or one
 * checkpoint key (src/sources/cache-admin.ts; never an entry that a download is working in).
 */
import { parseArgs } from 'node:util';
import { BitNetError } from '../errors.ts';
import { human } from '../shards/progress-bar.ts';
import { type CacheEntry, listCache, removeFromCache } from '../sources/cache-admin.ts';
import { cacheRoot } from '../sources/hf-hub-cache.ts';
import { noMoreArgs, requiredArg } from './args.ts';

function line(e: CacheEntry): string {
  const what =
    e.kind === 'checkpoint'
      ? `checkpoint ${e.path.slice(-40)}  (from ${e.source ?? 'an unknown directory'})`
      : `${e.kind} ${e.repo}@${e.commit}${e.refs?.length ? `  (${e.refs.join(', ')})` : ''}`;
  return `${human(e.bytes).padStart(10)}  ${what}${e.busy ? '  [busy]' : ''}`;
}

export async function cacheCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { json: { type: 'boolean' } },
    allowPositionals: true,
    strict: true,
  });
  const [sub = 'ls', target, ...rest] = positionals;
  const root = cacheRoot();
  if (sub === 'ls' && target === undefined) {
    const entries = await listCache(root);
    const bytes = entries.reduce((a, e) => a + e.bytes, 0);
    if (values.json) console.log(JSON.stringify({ root, entries, bytes }));
    else {
      console.log(`${root}: ${entries.length} entries, ${human(bytes)}`);
      for (const e of entries) console.log(line(e));
    }
    return 0;
  }
  if (sub === 'rm') requiredArg(target, 'TARGET (owner/repo[@REVISION], checkpoints or a checkpoint key)');
  if (sub === 'rm') noMoreArgs(positionals, 2);
  if (sub === 'rm' && target !== undefined && rest.length === 0) {
    const removed = await removeFromCache(root, target);
    const bytes = removed.reduce((a, e) => a + e.bytes, 0);
    if (values.json) console.log(JSON.stringify({ root, removed, bytes }));
    else {
      for (const e of removed) console.log(`removed ${line(e).trimStart()}`);
      console.log(`freed ${human(bytes)}`);
    }
    return 0;
  }
  throw BitNetError.Config('BAD_FLAG', 'usage: bitnet cache [ls] [--json] | bitnet cache rm TARGET [--json]', {
    command: 'cache',
  });
}
