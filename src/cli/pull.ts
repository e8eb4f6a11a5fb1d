/**
 * `bitnet pull owner/repo [--file F ...] [--out DIR] [--revision R] [--endpoint URL]
 * [--stall-timeout S] [--quiet] [--json]`: downloads a model from the Hugging Face hub (HF_ENDPOINT
 * and HF_TOKEN honoured): the repo's GGUF, or its shard pack (manifest + shards), or its safetensors
 * checkpoint (to convert with `bitnet convert`), or the named files. Downloads resume and are
 * checked against the hub's hashes; files already there and matching are kept ("up to date").
 * A progress bar goes to stderr; the local paths to stdout. docs/hub.md has the details.
 */
import { parseArgs } from 'node:util';
import { ProgressBars } from '../shards/progress-bar.ts';
import { pullHubRepo } from '../sources/hf-hub.ts';
import { noMoreArgs, num, requiredArg, str } from './args.ts';

export async function pullCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      file: { type: 'string', multiple: true },
      out: { type: 'string' },
      revision: { type: 'string' },
      endpoint: { type: 'string' },
      'stall-timeout': { type: 'string' },
      quiet: { type: 'boolean' },
      json: { type: 'boolean' },
    },
    allowPositionals: true,
    strict: true,
  });
  const repo = requiredArg(positionals[0], 'owner/repo');
  noMoreArgs(positionals, 1);
  const stall = num(values, 'stall-timeout', { min: 0.001 });
  const bars = new ProgressBars(process.stderr);
  const r = await pullHubRepo(repo, {
    files: values.file,
    out: str(values, 'out'),
    revision: str(values, 'revision'),
    endpoint: str(values, 'endpoint'),
    stallTimeoutMs: stall === undefined ? undefined : Math.round(stall * 1000),
    onProgress: values.quiet ? undefined : (p) => bars.get(p.file).update(p.doneBytes, p.totalBytes),
  });
  bars.finish();
  if (values.json) {
    console.log(JSON.stringify(r));
  } else {
    for (const f of r.files) {
      const notes = [`${f.bytes} bytes`];
      if (f.upToDate) notes.push('up to date');
      if (f.resumedFrom) notes.push(`resumed at ${f.resumedFrom}`);
      if (f.sha256) notes.push('sha256 ok');
      else if (f.gitSha1) notes.push('git blob sha1 ok');
      console.log(`${f.path} (${notes.join(', ')})`);
    }
    if (r.model) console.log(`model: ${r.model}`);
    if (r.checkpoint) {
      console.log(`checkpoint: ${r.checkpoint}`);
      console.log(`convert it with: bitnet convert --model ${r.checkpoint} --out PACK_DIR`);
    }
  }
  return 0;
}
