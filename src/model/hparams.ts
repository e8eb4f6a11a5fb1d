/**
 * Hyper-parameters per architecture, read from GGUF metadata and validated before any weight is
 * touched (docs/bitnet-formats.md §3.3, §4, §7.5).
 *
 * - `bitnet-b1.58`, `bitnet-25`, `bitnet-1.58`: the 2B-4T graph (relu², sub-norms, GQA, NEOX RoPE,
 *   tied head).
 * - `bitnet`: the same graph with SiLU gating unless `bitnet.hidden_activation = "relu2"`, and
 *   optional per-projection `*.scale` tensors.
 */
import { BitNetError } from '../errors.ts';
import type { GGUFMetadata } from '../gguf/metadata.ts';
import { metaNumber, metaString } from '../gguf/reader.ts';

export const B158_ARCHS = ['bitnet-b1.58', 'bitnet-25', 'bitnet-1.58'] as const;
export const SUPPORTED_ARCHS = [...B158_ARCHS, 'bitnet'] as const;

export type Activation = 'relu2' | 'silu';

export interface HParams {
  arch: string;
  activation: Activation;
  nVocab: number;
  nCtx: number;
  nEmbd: number;
  nLayer: number;
  nFF: number;
  nHead: number;
  nHeadKv: number;
  headDim: number;
  /** Rotated dimensions per head (NEOX pairs (i, i + nRot/2)). */
  nRot: number;
  ropeFreqBase: number;
  rmsEps: number;
}

function bad(message: string, details: Record<string, unknown>): BitNetError {
  return BitNetError.Model('BAD_HPARAMS', message, details);
}

function req(meta: GGUFMetadata, key: string): number {
  const v = metaNumber(meta, key);
  if (v === undefined) throw BitNetError.Model('MISSING_METADATA', `required metadata ${key} is missing`, { key });
  return v;
}

function posInt(name: string, v: number, max = 1 << 24): number {
  if (!Number.isInteger(v) || v <= 0 || v > max)
    throw bad(`${name} must be a positive integer <= ${max}, got ${v}`, { name, value: v });
  return v;
}

/** Reads and validates hyper-parameters. `vocabFallback` is used when `<arch>.vocab_size` is absent. */
export function readHParams(meta: GGUFMetadata, vocabFallback?: number): HParams {
  const arch = metaString(meta, 'general.architecture');
  if (arch === undefined) throw BitNetError.Model('MISSING_METADATA', 'general.architecture is missing', {});
  if (!(SUPPORTED_ARCHS as readonly string[]).includes(arch)) {
    throw BitNetError.Model('UNSUPPORTED_ARCH', `architecture "${arch}" is not supported`, {
      arch,
      supported: [...SUPPORTED_ARCHS],
    });
  }
  const p = (k: string) => `${arch}.${k}`;
  let activation: Activation = 'relu2';
  if (arch === 'bitnet') {
    const act = metaString(meta, p('hidden_activation')) ?? 'silu';
    if (act !== 'silu' && act !== 'relu2') {
      throw bad(`${p('hidden_activation')} must be "silu" or "relu2", got "${act}"`, { activation: act });
    }
    activation = act;
  }
  const nEmbd = posInt('embedding_length', req(meta, p('embedding_length')));
  const nHead = posInt('attention.head_count', req(meta, p('attention.head_count')));
  const nHeadKv = posInt('attention.head_count_kv', metaNumber(meta, p('attention.head_count_kv')) ?? nHead);
  if (nEmbd % nHead !== 0)
    throw bad(`embedding_length ${nEmbd} is not a multiple of head_count ${nHead}`, { nEmbd, nHead });
  if (nHead % nHeadKv !== 0)
    throw bad(`head_count ${nHead} is not a multiple of head_count_kv ${nHeadKv}`, { nHead, nHeadKv });
  const headDim = nEmbd / nHead;
  const nRot = posInt('rope.dimension_count', metaNumber(meta, p('rope.dimension_count')) ?? headDim);
  if (nRot > headDim || nRot % 2 !== 0)
    throw bad(`rope.dimension_count ${nRot} must be even and <= head dim ${headDim}`, { nRot, headDim });
  const vocab = metaNumber(meta, p('vocab_size')) ?? vocabFallback;
  if (vocab === undefined) throw BitNetError.Model('MISSING_METADATA', `${p('vocab_size')} is missing`, {});
  const ropeFreqBase = metaNumber(meta, p('rope.freq_base')) ?? 10000;
  const rmsEps = metaNumber(meta, p('attention.layer_norm_rms_epsilon')) ?? 1e-5;
  if (!(ropeFreqBase > 0) || !Number.isFinite(ropeFreqBase))
    throw bad(`rope.freq_base must be > 0, got ${ropeFreqBase}`, {});
  if (!(rmsEps > 0) || rmsEps > 1) throw bad(`layer_norm_rms_epsilon must be in (0, 1], got ${rmsEps}`, {});
  return {
    arch,
    activation,
    nVocab: posInt('vocab_size', vocab),
    nCtx: posInt('context_length', metaNumber(meta, p('context_length')) ?? 2048),
    nEmbd,
    nLayer: posInt('block_count', req(meta, p('block_count')), 4096),
    nFF: posInt('feed_forward_length', req(meta, p('feed_forward_length'))),
    nHead,
    nHeadKv,
    headDim,
    nRot,
    ropeFreqBase,
    rmsEps,
  };
}
