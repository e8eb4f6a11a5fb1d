/**
 * Loading a GGUF model: header and tensor table first, capability checks (architecture,
 * hyper-parameters, tensor types and shapes, memory budget) before any weight byte is read,
 * then the weights tensor by tensor. Shard packs reuse `checkModelFile` / `loadModelFile` on the
 * GGUF-like view of the pack (src/shards/reader.ts).
 */
import { BitNetError } from '../errors.ts';
import { type GGUFFile, readGGUF } from '../gguf/reader.ts';
import type { ByteSource, ReadOptions } from '../sources/byte-source.ts';
import { openSource } from '../sources/open.ts';
import { createTokenizerFromGGUF } from '../tokenizer/bpe.ts';
import type { Tokenizer } from '../tokenizer/types.ts';
import { type HParams, readHParams } from './hparams.ts';
import { type LoadProgress, loadWeights, type ModelWeights, planWeights } from './weights.ts';

export interface LoadOptions extends ReadOptions {
  /** Refuse models whose weights need more bytes than this (checked from the tensor table). */
  maxMemoryBytes?: number;
  onProgress?: (p: LoadProgress) => void;
  /** Override the tokenizer's pre-tokenizer (`default`, `llama-bpe`). */
  preTokenizer?: string;
}

export interface LoadedModel {
  location: string;
  file: GGUFFile;
  hparams: HParams;
  weights: ModelWeights;
  /** Absent when the file has no tokenizer metadata (token-id prompts still work). */
  tokenizer?: Tokenizer;
  tokenizerError?: BitNetError;
  weightBytes: number;
}

/**
 * Checks a parsed model file (a GGUF, or a shard pack seen as one): hyper-parameters, every
 * tensor's presence, type and shape, and the memory budget. Reads no byte.
 */
export function checkModelFile(file: GGUFFile, opts: LoadOptions = {}): { hparams: HParams; weightBytes: number } {
  const embd = file.tensorsByName.get('token_embd.weight');
  const hparams = readHParams(file.metadata, embd?.ne[1]);
  const { bytes } = planWeights(file, hparams);
  if (opts.maxMemoryBytes !== undefined && bytes > opts.maxMemoryBytes) {
    const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
    throw BitNetError.Memory(
      'MODEL_TOO_LARGE',
      `model weights need ${bytes} bytes (${mib(bytes)}), over the memory budget of ${opts.maxMemoryBytes} bytes (${mib(opts.maxMemoryBytes)})`,
      {
        needed: bytes,
        budget: opts.maxMemoryBytes,
      },
    );
  }
  return { hparams, weightBytes: bytes };
}

/** Reads and checks everything except the weights. */
export async function inspectModel(
  source: ByteSource,
  opts: LoadOptions = {},
): Promise<{ file: GGUFFile; hparams: HParams; weightBytes: number }> {
  const file = await readGGUF(source, opts);
  return { file, ...checkModelFile(file, opts) };
}

/** Builds the tokenizer and reads the weights of a checked model file. */
export async function loadModelFile(
  file: GGUFFile,
  checked: { hparams: HParams; weightBytes: number },
  location: string,
  opts: LoadOptions = {},
): Promise<LoadedModel> {
  let tokenizer: Tokenizer | undefined;
  let tokenizerError: BitNetError | undefined;
  try {
    tokenizer = createTokenizerFromGGUF(file.metadata, { preTokenizer: opts.preTokenizer });
  } catch (e) {
    if (!(e instanceof BitNetError)) throw e;
    tokenizerError = e;
  }
  const weights = await loadWeights(file, checked.hparams, opts);
  return {
    location,
    file,
    hparams: checked.hparams,
    weights,
    tokenizer,
    tokenizerError,
    weightBytes: checked.weightBytes,
  };
}

export async function loadModel(location: string | URL | ByteSource, opts: LoadOptions = {}): Promise<LoadedModel> {
  const owned = typeof location === 'string' || location instanceof URL;
  const source = await openSource(location);
  try {
    const { file, ...checked } = await inspectModel(source, opts);
    return await loadModelFile(file, checked, source.description, opts);
  } finally {
    // Weights are in memory now; a source we opened is no longer needed.
    if (owned) await source.close?.();
  }
}
