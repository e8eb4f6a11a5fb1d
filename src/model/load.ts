/**
 * Loading a GGUF model: header and tensor table first, capability checks (architecture,
 * hyper-parameters, tensor types and shapes, memory budget) before any weight byte is read,
 * then the weights tensor by tensor.
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

/** Reads and checks everything except the weights. */
export async function inspectModel(
  source: ByteSource,
  opts: LoadOptions = {},
): Promise<{ file: GGUFFile; hparams: HParams; weightBytes: number }> {
  const file = await readGGUF(source, opts);
  const embd = file.tensorsByName.get('token_embd.weight');
  const hparams = readHParams(file.metadata, embd?.ne[1]);
  const { bytes } = planWeights(file, hparams);
  if (opts.maxMemoryBytes !== undefined && bytes > opts.maxMemoryBytes) {
    throw BitNetError.Memory(
      'MODEL_TOO_LARGE',
      `model weights need ${bytes} bytes, over the budget of ${opts.maxMemoryBytes}`,
      {
        needed: bytes,
        budget: opts.maxMemoryBytes,
      },
    );
  }
  return { file, hparams, weightBytes: bytes };
}

export async function loadModel(location: string | URL | ByteSource, opts: LoadOptions = {}): Promise<LoadedModel> {
  const owned = typeof location === 'string' || location instanceof URL;
  const source = await openSource(location);
  try {
    const { file, hparams, weightBytes } = await inspectModel(source, opts);
    let tokenizer: Tokenizer | undefined;
    let tokenizerError: BitNetError | undefined;
    try {
      tokenizer = createTokenizerFromGGUF(file.metadata, { preTokenizer: opts.preTokenizer });
    } catch (e) {
      if (!(e instanceof BitNetError)) throw e;
      tokenizerError = e;
    }
    const weights = await loadWeights(file, hparams, opts);
    return { location: source.description, file, hparams, weights, tokenizer, tokenizerError, weightBytes };
  } finally {
    // Weights are in memory now; a source we opened is no longer needed.
    if (owned) await source.close?.();
  }
}
