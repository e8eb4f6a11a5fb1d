/**
 * `bitnet pull owner/repo [--file F ...] [--out DIR] [--revision R] [--json]`: downloads a model
 * from the Hugging Face hub (HF_ENDPOINT and HF_TOKEN honoured): the repo's GGUF, or its shard pack
 * (manifest + shards), or the named files. Downloads resume and are checked against a sha256 where
 * the hub or the manifest gives one. A progress bar goes to stderr; the local paths to stdout.
 */
import { parseArgs } from 'node:util';
import { ProgressBar } from '../shards/progress-bar.ts';
import { pullHubRepo } from '../sources/hf-hub.ts';
import { required, str } from './args.ts';

export async function pullCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      file: { type: 'string', multiple: true },
      out: { type: 'string' },
      revision: { type: 'string' },
      endpoint: { type: 'string' },
      quiet: { type: 'boolean' },
      json: { type: 'boolean' },
    },
    allowPositionals: true,
    strict: true,
  });
  const repo = required(positionals[0], 'owner/repo');
  const bars = new Map<string, ProgressBar>();
  const r = await pullHubRepo(repo, {
    files: values.file,
    out: str(values, 'out'),
    revision: str(values, 'revision'),
    endpoint: str(values, 'endpoint'),
    onProgress: values.quiet
      ? undefined
      : (p) => {
          let bar = bars.get(p.file);
          if (!bar) {
            bar = new ProgressBar(process.stderr, p.file);
            bars.set(p.file, bar);
          }
          bar.update(p.doneBytes, p.totalBytes);
        },
  });
  for (const b of bars.values()) b.finish();
  if (values.json) {
    console.log(JSON.stringify(r));
  } else {
    for (const f of r.files) {
      console.log(
        `${f.path} (${f.bytes} bytes${f.resumedFrom ? `, resumed at ${f.resumedFrom}` : ''}${f.sha256 ? ', sha256 ok' : ''})`,
      );
    }
    if (r.model) console.log(`model: ${r.model}`);
  }
  return 0;
}
