/** Shared helpers for the source and shard-pack tests: fixtures on disk and bit-exact logits. */
import { mkdtemp, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Device } from '../../src/api/device.ts';
import { InferenceConfig } from '../../src/api/inference-config.ts';
import { InferenceEngine } from '../../src/api/inference-engine.ts';
import { type LoadConfigInit, type Model, ModelLoader } from '../../src/api/model-loader.ts';
import { BitNetError } from '../../src/errors.ts';
import type { ConvertOptions } from '../../src/shards/convert.ts';
import { convertToPack, ggufInput, MemoryPackSink } from '../../src/shards/convert.ts';
import type { ByteSource } from '../../src/sources/byte-source.ts';
import { MemorySource } from '../../src/sources/byte-source.ts';
import { synthBytes } from '../helpers/models.ts';

export const IDS = [5, 6, 7, 1, 42];

/** Logits at every position of IDS, through the engine `bitnet logits` uses (reference backend). */
export async function logitsOfModel(m: Model): Promise<Float32Array> {
  const eng = new InferenceEngine(m, m.tokenizer, Device.Auto, new InferenceConfig(), { backend: 'reference' });
  return (await eng.forward(IDS)).data;
}

export async function logitsOf(location: string | ByteSource, cfg: LoadConfigInit = {}): Promise<Float32Array> {
  return logitsOfModel(await new ModelLoader(cfg).load(location));
}

/** Bit-for-bit equality of two f32 arrays. */
export function sameBits(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

export const FAST_RETRY = { retries: 4, baseDelayMs: 1, maxDelayMs: 4, stallTimeoutMs: 300 };

export function isCode(code: string) {
  return (e: unknown) => e instanceof BitNetError && e.code === code;
}

export async function tempDir(prefix = 'bitnet-src-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

export interface Fixture {
  dir: string;
  gguf: Uint8Array;
  ggufPath: string;
  pack: Map<string, Uint8Array>;
  packDir: string;
}

/** A tiny I2_S model as a GGUF and as a pack (small shards: several files), both also on disk. */
export async function makeFixture(opts: ConvertOptions = { shardSize: 200_000 }, seed = 11): Promise<Fixture> {
  const dir = await tempDir();
  const gguf = await synthBytes({ qtype: 'i2_s', seed });
  const ggufPath = join(dir, 'model.gguf');
  await writeFile(ggufPath, gguf);
  const sink = new MemoryPackSink();
  await convertToPack(await ggufInput(new MemorySource(gguf)), sink, opts);
  const packDir = join(dir, 'pack');
  const { mkdir } = await import('node:fs/promises');
  await mkdir(packDir);
  for (const [name, bytes] of sink.files) await writeFile(join(packDir, name), bytes);
  return { dir, gguf, ggufPath, pack: sink.files, packDir };
}

/** Every file under `dir`, relative, `/`-separated as readdir gives them, sorted. */
export async function walk(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true, withFileTypes: true }))
    .filter((d) => d.isFile())
    .map((d) => join(d.parentPath, d.name).slice(dir.length + 1))
    .sort();
}
