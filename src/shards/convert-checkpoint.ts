/**
 * A local Hugging Face safetensors checkpoint directory → a shard pack directory (Node), as
 * `bitnet convert --model DIR --out PACK` does with its defaults: I2_S projections, the head kept.
 * fromPretrained uses it for hub repos that hold only a checkpoint (hf-hub.ts convertCheckpoint).
 * Node only (local directories): the Worker bundle stubs it, as every lazily imported node: module.
 */
import { join, resolve } from 'node:path';
import { openSource, siblingLocation } from '../sources/open.ts';
import { type ConvertOptions, type ConvertResult, convertToPack } from './convert.ts';
import { DirectoryPackSink } from './fs-sink.ts';
import { hfInput } from './hf.ts';

export async function convertCheckpointDirectory(
  dir: string,
  out: string,
  opts: ConvertOptions = {},
): Promise<ConvertResult> {
  const base = join(resolve(dir), 'config.json');
  const input = await hfInput((name) => openSource(siblingLocation(base, name)), dir, opts);
  try {
    return await convertToPack(input, new DirectoryPackSink(out), opts);
  } finally {
    await input.close?.();
  }
}
