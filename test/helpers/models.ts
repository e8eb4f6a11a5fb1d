/** Test helpers: small synthetic GGUF models built in memory. */
import { encodeGGUF } from '../../src/gguf/writer.ts';
import { type SynthOptions, synthModel } from '../../src/model/synth.ts';

export const TINY: Omit<SynthOptions, 'qtype' | 'seed'> = {
  arch: 'bitnet',
  hidden: 256,
  layers: 2,
  heads: 4,
  kvHeads: 2,
  ffn: 512,
  vocab: 300,
  ctx: 128,
  embdType: 'f16',
  activation: 'silu',
};

export async function synthBytes(o: Partial<SynthOptions> & Pick<SynthOptions, 'qtype' | 'seed'>): Promise<Uint8Array> {
  const m = synthModel({ ...TINY, ...o } as SynthOptions);
  return encodeGGUF(m.metadata, m.tensors);
}

/** synthBytes written to a new temporary directory; returns the file's path. */
export async function synthFile(o: Partial<SynthOptions> & Pick<SynthOptions, 'qtype' | 'seed'>): Promise<string> {
  const { mkdtemp, writeFile } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const path = join(await mkdtemp(join(tmpdir(), 'bitnet-synth-')), 'model.gguf');
  await writeFile(path, await synthBytes(o));
  return path;
}
