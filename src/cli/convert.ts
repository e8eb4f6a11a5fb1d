/**
 * `bitnet convert --model IN --out DIR [--layout i2s|tl1|tl2] [--head keep|f16|q8_0|q6_k|int4]
 * [--shard-size 64MiB] [--alignment 64] [--json]`: a GGUF (any location openSource reads) or an HF
 * safetensors directory (packed uint8 + weight_scale, or bf16 master weights) → a shard pack in DIR.
 * A progress bar and notes go to stderr (neither with --quiet); the summary to stdout.
 */
import { parseArgs } from 'node:util';
import { BitNetError } from '../errors.ts';
import { GGUF_MAGIC } from '../gguf/reader.ts';
import { type ConvertInput, convertToPack, ggufInput } from '../shards/convert.ts';
import { DEFAULT_ALIGNMENT, type HeadType, type TensorLayout } from '../shards/format.ts';
import { DirectoryPackSink } from '../shards/fs-sink.ts';
import { hfInput } from '../shards/hf.ts';
import { ProgressBar, parseByteSize } from '../shards/progress-bar.ts';
import { locationKind, openSource, siblingLocation } from '../sources/open.ts';
import { num, oneOf, required, str } from './args.ts';

async function isLocalDir(path: string): Promise<boolean> {
  const { isDirectory } = await import('../sources/local.ts');
  return isDirectory(path);
}

/** Opens the input: an HF directory (a local directory, a URL ending in `/`, or a .safetensors file's directory) or a GGUF. */
export async function openConvertInput(model: string): Promise<ConvertInput & { warnings?: string[] }> {
  const hfDir =
    model.endsWith('/') || (locationKind(model) === 'file' && (await isLocalDir(model)))
      ? model.replace(/[\\/]+$/, '')
      : model.endsWith('.safetensors')
        ? model.slice(0, Math.max(0, model.lastIndexOf('/')))
        : undefined;
  if (hfDir !== undefined) {
    const base = `${hfDir || '.'}/config.json`;
    return hfInput((name) => openSource(siblingLocation(base, name)), hfDir);
  }
  const src = await openSource(model);
  const head = await src.read(0, Math.min(4, src.size));
  if (head.length < 4 || new DataView(head.buffer, head.byteOffset, 4).getUint32(0, true) !== GGUF_MAGIC) {
    await src.close?.();
    throw BitNetError.Model('CONVERT_UNKNOWN_INPUT', `${model} is neither a GGUF file nor an HF checkpoint directory`, {
      model,
    });
  }
  const input = await ggufInput(src);
  return { ...input, close: async () => src.close?.() };
}

export async function convertCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' },
      out: { type: 'string' },
      layout: { type: 'string' },
      head: { type: 'string' },
      'shard-size': { type: 'string' },
      alignment: { type: 'string' },
      quiet: { type: 'boolean' },
      json: { type: 'boolean' },
    },
    strict: true,
  });
  const model = required(str(values, 'model'), 'model');
  const out = required(str(values, 'out'), 'out');
  const layout = oneOf<TensorLayout>(values, 'layout', ['i2s', 'tl1', 'tl2']) ?? 'i2s';
  const head = oneOf<HeadType>(values, 'head', ['keep', 'f16', 'q8_0', 'q6_k', 'int4']) ?? 'keep';
  const rawSize = str(values, 'shard-size');
  const shardSize = rawSize === undefined ? undefined : parseByteSize(rawSize);
  if (rawSize !== undefined && shardSize === undefined) {
    throw BitNetError.Config('BAD_FLAG', `--shard-size must be a size like 64MiB, got "${rawSize}"`, {
      flag: 'shard-size',
    });
  }
  const alignment = num(values, 'alignment', { int: true, min: 8, max: 1 << 20 });
  // The pack's own rules (planPack), checked here too: a usage error before anything is opened.
  if (alignment !== undefined && (alignment & (alignment - 1)) !== 0)
    throw BitNetError.Config('BAD_FLAG', `--alignment must be a power of two, got ${alignment}`, { flag: 'alignment' });
  const align = alignment ?? DEFAULT_ALIGNMENT;
  if (shardSize !== undefined && shardSize < align)
    throw BitNetError.Config(
      'BAD_FLAG',
      `--shard-size must be at least the alignment (${align} bytes), got "${rawSize}"`,
      {
        flag: 'shard-size',
      },
    );

  const input = await openConvertInput(model);
  const bar = values.quiet ? undefined : new ProgressBar(process.stderr, 'convert');
  try {
    const r = await convertToPack(input, new DirectoryPackSink(out), {
      layout,
      head,
      shardSize,
      alignment,
      onProgress: (p) => bar?.update(p.doneBytes, p.totalBytes, p.tensor),
    });
    bar?.finish();
    const m = r.manifest;
    const summary = {
      out,
      source: m.source,
      layout: m.layout,
      head: m.head,
      shardSize: m.shardSize,
      shards: m.shards.length,
      tensors: m.tensors.length,
      bytes: r.totalBytes,
      warnings: (input as { warnings?: string[] }).warnings ?? [],
      notes: r.notes,
    };
    // Notes (e.g. a TQ → I2_S repack changes the numerics) go to stderr unless --quiet, with or
    // without --json (stdout stays one JSON line); --json also carries them as `notes`.
    if (!values.quiet) for (const n of r.notes) console.error(`note: ${n}`);
    if (values.json) console.log(JSON.stringify(summary));
    else {
      console.log(
        `wrote ${out}: ${m.tensors.length} tensors in ${m.shards.length} shards (${r.totalBytes} bytes, ${m.layout}, head ${m.head})`,
      );
      for (const w of summary.warnings) console.error(`warning: ${w}`);
    }
    return 0;
  } finally {
    await input.close?.();
  }
}
