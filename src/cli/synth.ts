/** `bitnet synth`: writes a synthetic model with random ternary weights (streamed to disk). */
import { createWriteStream } from 'node:fs';
import { rename } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { BitNetError } from '../errors.ts';
import { writeGGUF } from '../gguf/writer.ts';
import {
  defaultArch,
  SYNTH_PRESETS,
  type SynthEmbdType,
  type SynthOptions,
  type SynthQType,
  synthModel,
} from '../model/synth.ts';
import { num, oneOf, required, str } from './args.ts';

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
  const out = required(str(values, 'out'), 'out');
  const model = synthModel(opts);

  // Write to a temporary name and rename at the end: an interrupted run leaves no half file.
  const tmp = `${out}.partial`;
  const ws = createWriteStream(tmp);
  const bytes = await writeGGUF(
    model.metadata,
    model.tensors,
    (chunk) =>
      new Promise<void>((resolve, reject) => {
        ws.write(chunk, (err) => (err ? reject(err) : resolve()));
      }),
  );
  await new Promise<void>((resolve, reject) => ws.end((err?: Error | null) => (err ? reject(err) : resolve())));
  await rename(tmp, out);
  const summary = { out, bytes, ...opts, tensors: model.tensors.length, note: 'random weights (synthetic model)' };
  console.log(
    values.json
      ? JSON.stringify(summary)
      : `wrote ${out}: ${bytes} bytes, ${model.tensors.length} tensors (${opts.arch}, ${qtype}, random weights)`,
  );
  return 0;
}
