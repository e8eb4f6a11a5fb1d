/**
 * Synthetic BitNet models with random ternary weights, for tests, benchmarks and the llama.cpp
 * oracle. Runtime-free: it produces GGUF metadata and lazily-built tensors for the writer.
 *
 * Weight scales are init-like so the models discriminate structural bugs (platform-notes):
 * - ternary weights uniform over {−1, 0, +1} with a per-tensor scale ≈ 1/√(2·fan_in/3), so each
 *   projection roughly preserves variance; q and k get ×1.2;
 * - embeddings ~ N(0, 0.15²), so top-token probabilities spread over 0.2–0.9 instead of saturating;
 * - norm weights 1 ± 0.1, so a skipped or misplaced norm changes the result.
 * Every tensor draws from its own stream seeded by (seed, tensor name): the same seed gives the
 * same ternary values in every qtype. Scales are rounded to f16 first, so I2_S (f32 scale) and
 * TQ1_0/TQ2_0 (f16 block scales) files hold exactly the same weights.
 */
import { BitNetError } from '../errors.ts';
import { createRng, type Xoshiro128 } from '../generate/prng.ts';
import { GGMLType } from '../gguf/ggml-types.ts';
import type { GGUFEntry } from '../gguf/metadata.ts';
import { meta, type TensorToWrite } from '../gguf/writer.ts';
import { quantizeF16, quantizeQ4_0, quantizeQ6_K, quantizeQ8_0 } from '../quant/float-codecs.ts';
import { packI2S } from '../quant/i2s.ts';
import { packTQ1_0, packTQ2_0 } from '../quant/tq.ts';
import { makeSyntheticVocab } from '../tokenizer/synthetic-vocab.ts';
import { f16ToF32, f32ToF16 } from '../util/f16.ts';
import { B158_ARCHS } from './hparams.ts';

export type SynthQType = 'i2_s' | 'tq2_0' | 'tq1_0' | 'f16';
export type SynthEmbdType = 'f16' | 'q8_0' | 'q4_0' | 'q6_k';

export interface SynthShape {
  arch: string;
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  ffn: number;
  vocab: number;
  ctx: number;
  /**
   * Only for arch `bitnet`: written as `bitnet.hidden_activation` (default silu). The b1.58 archs
   * have no such key: their graph is always relu², so this field is ignored for them
   * (`synthActivation` says what a file holds; the CLI refuses `--activation silu` there).
   */
  activation?: 'silu' | 'relu2';
  ropeFreqBase?: number;
}

export interface SynthOptions extends SynthShape {
  qtype: SynthQType;
  embdType: SynthEmbdType;
  seed: number;
  embdStd?: number;
}

export const SYNTH_PRESETS: Record<string, Omit<SynthShape, 'arch'>> = {
  tiny: { hidden: 256, layers: 2, heads: 4, kvHeads: 2, ffn: 512, vocab: 512, ctx: 512 },
  large: { hidden: 1536, layers: 24, heads: 16, kvHeads: 16, ffn: 4096, vocab: 32002, ctx: 2048, ropeFreqBase: 10000 },
  '2b-4t': {
    hidden: 2560,
    layers: 30,
    heads: 20,
    kvHeads: 5,
    ffn: 6912,
    vocab: 128256,
    ctx: 4096,
    ropeFreqBase: 500000,
  },
};

/** Default architecture: Microsoft's for I2_S (bitnet.cpp loads it), upstream's `bitnet` otherwise. */
export function defaultArch(qtype: SynthQType): string {
  return qtype === 'i2_s' ? 'bitnet-b1.58' : 'bitnet';
}

/** The activation a synthetic model with this shape runs (what its metadata says). */
export function synthActivation(o: Pick<SynthShape, 'arch' | 'activation'>): 'silu' | 'relu2' {
  return o.arch === 'bitnet' ? (o.activation ?? 'silu') : 'relu2';
}

function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

function streamFor(seed: number, name: string): Xoshiro128 {
  return createRng((BigInt(seed >>> 0) << 32n) | BigInt(fnv1a(name)));
}

function gaussian(rng: Xoshiro128): number {
  const u = 1 - rng.nextFloat(); // (0, 1]
  const v = rng.nextFloat();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

/** Uniform ternary values for a [rows × k] weight from the tensor's own stream. */
export function synthTernary(seed: number, name: string, n: number): Int8Array {
  const rng = streamFor(seed, name);
  const out = new Int8Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.floor((rng.nextU32() / 4294967296) * 3) - 1;
  return out;
}

/** The per-tensor scale, rounded to f16 so every qtype stores it exactly. */
export function synthScale(seed: number, name: string, fanIn: number): number {
  const rng = streamFor(seed, `${name}#scale`);
  const qk = /attn_[qk]\.weight$/.test(name) ? 1.2 : 1;
  const jitter = 0.9 + 0.2 * rng.nextFloat();
  return f16ToF32(f32ToF16((qk * jitter) / Math.sqrt((2 * fanIn) / 3)));
}

function validateShape(o: SynthOptions): void {
  const bad = (m: string) => BitNetError.Config('BAD_SYNTH_SHAPE', m, { ...o });
  for (const k of ['hidden', 'layers', 'heads', 'kvHeads', 'ffn', 'vocab', 'ctx'] as const) {
    if (!Number.isInteger(o[k]) || o[k] <= 0) throw bad(`--${k} must be a positive integer`);
  }
  if (o.hidden % o.heads) throw bad('hidden must be a multiple of heads');
  if (o.heads % o.kvHeads) throw bad('heads must be a multiple of kv-heads');
  if ((o.hidden / o.heads) % 2) throw bad('head dim must be even');
  const block = o.qtype === 'i2_s' ? 128 : o.qtype === 'f16' ? 1 : 256;
  if (o.hidden % block || o.ffn % block) throw bad(`hidden and ffn must be multiples of ${block} for ${o.qtype}`);
  const eb = o.embdType === 'q6_k' ? 256 : o.embdType === 'q8_0' || o.embdType === 'q4_0' ? 32 : 1;
  if (o.hidden % eb) throw bad(`hidden must be a multiple of ${eb} for ${o.embdType} embeddings`);
  if (o.vocab < 262) throw bad('vocab must be at least 262 (256 bytes + merges + 3 specials)');
  if (o.arch !== 'bitnet' && !(B158_ARCHS as readonly string[]).includes(o.arch)) throw bad(`unknown arch ${o.arch}`);
  if (!Number.isInteger(o.seed) || o.seed < 0 || o.seed > 0xffffffff) throw bad('seed must be an integer in 0..2^32-1');
}

const FILE_TYPE: Record<SynthQType, number> = { f16: 1, tq1_0: 36, tq2_0: 37, i2_s: 40 };
const QTYPE_ID: Record<SynthQType, number> = {
  f16: GGMLType.F16,
  tq1_0: GGMLType.TQ1_0,
  tq2_0: GGMLType.TQ2_0,
  i2_s: GGMLType.I2_S,
};
const EMBD_ID: Record<SynthEmbdType, number> = {
  f16: GGMLType.F16,
  q8_0: GGMLType.Q8_0,
  q4_0: GGMLType.Q4_0,
  q6_k: GGMLType.Q6_K,
};

export interface SynthModel {
  metadata: [string, GGUFEntry][];
  tensors: TensorToWrite[];
}

export function synthModel(o: SynthOptions): SynthModel {
  validateShape(o);
  const a = o.arch;
  const vocab = makeSyntheticVocab(o.vocab);
  const md: [string, GGUFEntry][] = [
    ['general.architecture', meta.str(a)],
    ['general.name', meta.str(`bitnet-edge synthetic (random weights, seed ${o.seed})`)],
    ['general.file_type', meta.u32(FILE_TYPE[o.qtype])],
    ['general.quantization_version', meta.u32(2)],
    [`${a}.vocab_size`, meta.u32(o.vocab)],
    [`${a}.context_length`, meta.u32(o.ctx)],
    [`${a}.embedding_length`, meta.u32(o.hidden)],
    [`${a}.block_count`, meta.u32(o.layers)],
    [`${a}.feed_forward_length`, meta.u32(o.ffn)],
    [`${a}.rope.dimension_count`, meta.u32(o.hidden / o.heads)],
    [`${a}.attention.head_count`, meta.u32(o.heads)],
    [`${a}.attention.head_count_kv`, meta.u32(o.kvHeads)],
    [`${a}.attention.layer_norm_rms_epsilon`, meta.f32(1e-5)],
    [`${a}.rope.freq_base`, meta.f32(o.ropeFreqBase ?? 500000)],
  ];
  if (a === 'bitnet') md.push(['bitnet.hidden_activation', meta.str(synthActivation(o))]);
  md.push(
    ['tokenizer.ggml.model', meta.str('gpt2')],
    ['tokenizer.ggml.tokens', meta.strs(vocab.tokens)],
    ['tokenizer.ggml.token_type', meta.i32s(vocab.tokenTypes)],
    ['tokenizer.ggml.merges', meta.strs(vocab.merges)],
    ['tokenizer.ggml.bos_token_id', meta.u32(vocab.bosId)],
    ['tokenizer.ggml.eos_token_id', meta.u32(vocab.eosId)],
    ['tokenizer.ggml.eot_token_id', meta.u32(vocab.eotId)],
    ['tokenizer.ggml.padding_token_id', meta.u32(vocab.eosId)],
    ['tokenizer.ggml.add_bos_token', meta.bool(true)],
  );

  const tensors: TensorToWrite[] = [];
  const embdStd = o.embdStd ?? 0.15;
  tensors.push({
    name: 'token_embd.weight',
    ne: [o.hidden, o.vocab],
    type: EMBD_ID[o.embdType],
    data: () => {
      const rng = streamFor(o.seed, 'token_embd.weight');
      const x = new Float32Array(o.hidden * o.vocab);
      for (let i = 0; i < x.length; i++) x[i] = gaussian(rng) * embdStd;
      return o.embdType === 'f16'
        ? quantizeF16(x)
        : o.embdType === 'q8_0'
          ? quantizeQ8_0(x)
          : o.embdType === 'q4_0'
            ? quantizeQ4_0(x)
            : quantizeQ6_K(x);
    },
  });
  const norm = (name: string, n: number): TensorToWrite => ({
    name,
    ne: [n],
    type: GGMLType.F32,
    data: () => {
      const rng = streamFor(o.seed, name);
      const x = new Float32Array(n);
      for (let i = 0; i < n; i++) x[i] = 0.9 + 0.2 * rng.nextFloat();
      return new Uint8Array(x.buffer);
    },
  });
  const proj = (name: string, k: number, n: number): TensorToWrite => ({
    name,
    ne: [k, n],
    type: QTYPE_ID[o.qtype],
    data: () => {
      const t = synthTernary(o.seed, name, k * n);
      const s = synthScale(o.seed, name, k);
      switch (o.qtype) {
        case 'i2_s':
          return packI2S(t, s);
        case 'tq2_0':
          return packTQ2_0(t, s);
        case 'tq1_0':
          return packTQ1_0(t, s);
        default: {
          const x = new Float32Array(t.length);
          for (let i = 0; i < t.length; i++) x[i] = t[i] * s;
          return quantizeF16(x);
        }
      }
    },
  });
  tensors.push(norm('output_norm.weight', o.hidden));
  const kvDim = (o.hidden / o.heads) * o.kvHeads;
  for (let l = 0; l < o.layers; l++) {
    const b = `blk.${l}.`;
    tensors.push(
      norm(`${b}attn_norm.weight`, o.hidden),
      proj(`${b}attn_q.weight`, o.hidden, o.hidden),
      proj(`${b}attn_k.weight`, o.hidden, kvDim),
      proj(`${b}attn_v.weight`, o.hidden, kvDim),
      norm(`${b}attn_sub_norm.weight`, o.hidden),
      proj(`${b}attn_output.weight`, o.hidden, o.hidden),
      norm(`${b}ffn_norm.weight`, o.hidden),
      proj(`${b}ffn_gate.weight`, o.hidden, o.ffn),
      proj(`${b}ffn_up.weight`, o.hidden, o.ffn),
      norm(`${b}ffn_sub_norm.weight`, o.ffn),
      proj(`${b}ffn_down.weight`, o.ffn, o.hidden),
    );
  }
  return { metadata: md, tensors };
}
