/** `bitnet synth`: writes a synthetic model with random ternary weights (streamed to disk). */
import { type FileHandle, open, rename, rm, stat } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { BitNetError } from '../errors.ts';
import { writeGGUF } from '../gguf/writer.ts';
import { B158_ARCHS } from '../model/hparams.ts';
import {
  defaultArch,
  SYNTH_PRESETS,
  type SynthEmbdType,
  type SynthOptions,
  type SynthQType,
  synthActivation,
  synthModel,
} from '../model/synth.ts';
import { outputWriteError } from '../shards/fs-sink.ts';
import { num, oneOf, required, str } from './args.ts';

/** `--out` must name a file: refuse a directory before any work (the rename would fail at the end). */
async function checkOutputPath(out: string): Promise<void> {
  const isDir =
    /[\\/]$/.test(out) ||
    (await stat(out).then(
      (st) => st.isDirectory(),
      () => false,
    ));
  if (isDir) {
    throw BitNetError.Io('OUTPUT_WRITE_FAILED', `cannot write ${out}: it is a directory; --out takes a file name`, {
      path: out,
      errno: 'EISDIR',
    });
  }
}

/**
 * Writes `out` through a temporary `out.partial` renamed at the end: an interrupted run leaves no
 * half file under the real name, and a failed one (no such directory, no space) removes the partial
 * file and reports Io/OUTPUT_WRITE_FAILED. (A write stream would report a failed open as an
 * 'error' event, which crashes the process when nobody listens; a file handle rejects instead.)
 */
async function writeFileAtomically(
  out: string,
  write: (sink: (chunk: Uint8Array) => Promise<void>) => Promise<number>,
): Promise<number> {
  const tmp = `${out}.partial`;
  let fh: FileHandle;
  try {
    fh = await open(tmp, 'w');
  } catch (e) {
    throw outputWriteError(e, out);
  }
  try {
    const bytes = await write(async (chunk) => {
      let o = 0;
      while (o < chunk.byteLength) o += (await fh.write(chunk, o, chunk.byteLength - o)).bytesWritten;
    });
    await fh.close();
    await rename(tmp, out);
    return bytes;
  } catch (e) {
    await fh.close().catch(() => {}); // already closed after a failed rename: ignored
    await rm(tmp, { force: true }).catch(() => {});
    throw outputWriteError(e, out);
  }
}

export async function synthCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      preset: { type: 'string' },
      arch: { type: 'string' },
      hidden: { type: 'string' },
      layers: { type: 'string' },
      heads: { type: 'string' },
      'kv-heads': { type: 'string' },
      ffn: { type: 'string' },
      vocab: { type: 'string' },
      ctx: { type: 'string' },
      activation: { type: 'string' },
      qtype: { type: 'string' },
      'embd-type': { type: 'string' },
      'embd-std': { type: 'string' },
      seed: { type: 'string' },
      out: { type: 'string' },
      json: { type: 'boolean' },
    },
    strict: true,
  });
  const qtype = required(oneOf<SynthQType>(values, 'qtype', ['i2_s', 'tq2_0', 'tq1_0', 'f16']), 'qtype');
  const presetName = oneOf(values, 'preset', Object.keys(SYNTH_PRESETS));
  const preset = presetName ? SYNTH_PRESETS[presetName] : undefined;
  const pick = (flag: string, key: keyof typeof SYNTH_PRESETS.tiny) => {
    const v = num(values, flag, { int: true, min: 1 });
    if (v !== undefined) return v;
    if (preset) return preset[key] as number;
    throw BitNetError.Config('MISSING_FLAG', `--${flag} is required without --preset`, { flag });
  };
  const opts: SynthOptions = {
    arch: str(values, 'arch') ?? defaultArch(qtype),
    hidden: pick('hidden', 'hidden'),
    layers: pick('layers', 'layers'),
    heads: pick('heads', 'heads'),
    kvHeads: pick('kv-heads', 'kvHeads'),
    ffn: pick('ffn', 'ffn'),
    vocab: pick('vocab', 'vocab'),
    ctx: pick('ctx', 'ctx'),
    ropeFreqBase: preset?.ropeFreqBase,
    activation: oneOf(values, 'activation', ['silu', 'relu2'] as const),
    qtype,
    embdType: oneOf<SynthEmbdType>(values, 'embd-type', ['f16', 'q8_0', 'q4_0', 'q6_k']) ?? 'f16',
    embdStd: num(values, 'embd-std', { min: 0 }),
    seed: required(num(values, 'seed', { int: true, min: 0, max: 0xffffffff }), 'seed'),
  };
  // The b1.58 graph is always relu² (it has no activation key); only arch `bitnet` can be told.
  if (
    opts.activation !== undefined &&
    (B158_ARCHS as readonly string[]).includes(opts.arch) &&
    opts.activation !== synthActivation(opts)
  ) {
    throw BitNetError.Config(
      'BAD_FLAG',
      `--activation ${opts.activation}: arch ${opts.arch} always uses relu2; only --arch bitnet takes --activation silu|relu2`,
      { flag: 'activation', value: opts.activation, arch: opts.arch },
    );
  }
  const out = required(str(values, 'out'), 'out');
  await checkOutputPath(out);
  const model = synthModel(opts);
  const bytes = await writeFileAtomically(out, (sink) => writeGGUF(model.metadata, model.tensors, sink));
  // What the file holds: the b1.58 archs write no activation key and run relu².
  const summary = {
    out,
    bytes,
    ...opts,
    activation: synthActivation(opts),
    tensors: model.tensors.length,
    note: 'random weights (synthetic model)',
  };
  console.log(
    values.json
      ? JSON.stringify(summary)
      : `wrote ${out}: ${bytes} bytes, ${model.tensors.length} tensors (${opts.arch}, ${qtype}, random weights)`,
  );
  return 0;
}
