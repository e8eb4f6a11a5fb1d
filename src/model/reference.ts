/**
 * The reference forward pass: plain TypeScript, one token at a time, read top to bottom.
 * It is the oracle every other backend (wasm, CUDA) is tested against.
 *
 * Numerics mirror bitnet.cpp's CPU path (docs/bitnet-formats.md §2.3, §2.4, §4.3):
 * - ternary matmuls: per-token int8 activations (absmax with a 1e-5 floor, s = (float)(127/amax),
 *   q = round-half-even((float)(x·s)), clamp to [−128, 127]), an exact integer dot product, then
 *   y = ((float)(D − S) / s) · w_scale in f32 (I2_S). D − S is Σ (code−1)·q, computed directly.
 *   TQ2_0/TQ1_0 use the same per-token activations with their per-256-block f16 scales:
 *   y = (Σ_b d_b · D_b) / s, accumulated in f32 in block order. (llama.cpp instead quantizes
 *   activations per 256-block (Q8_K), see docs/numerics.md.)
 * - float projections (F32/F16/BF16 weights): the activation is rounded to the weight's
 *   precision (f16/bf16) and dotted with the weight in f64, like ggml's vec_dot for that type.
 * - RMSNorm sums squares in f64; RoPE (NEOX pairs (i, i + nRot/2)) builds angles by repeated f32
 *   multiplication; K and V are stored as f16; Q and the softmax probabilities are rounded to f16
 *   before their dot products; the LM head sees the hidden state rounded the way its type's dot
 *   product rounds it (f16 for F16, bf16 for BF16); Q8_0/Q4_0/Q6_K heads quantize it per block and
 *   sum integer block dot products like ggml (integer-head.ts).
 *
 * Shapes: nEmbd = hidden size, kvDim = nHeadKv·headDim, nFF = FFN width. Weights are [out][in]
 * row-major (GGUF ne = [in, out]).
 */
import { BitNetError } from '../errors.ts';
import { GGMLType } from '../gguf/ggml-types.ts';
import { dequantizeRow, F16_TABLE, rowBytes, type TensorView } from '../quant/float-codecs.ts';
import { decodeTLRow, readTLHeader } from '../quant/tl.ts';
import { QK_K, TQ1_0_BLOCK_BYTES, TQ2_0_BLOCK_BYTES, tq1Digit, tq1Element } from '../quant/tq.ts';
import { f32ToF16 } from '../util/f16.ts';
import type { HParams } from './hparams.ts';
import {
  type HeadActs,
  headActs,
  headRowQ4_0,
  headRowQ6_K,
  headRowQ8_0,
  INTEGER_HEAD_TYPES,
  quantizeQ8_0Acts,
} from './integer-head.ts';
import type { Linear, ModelWeights } from './weights.ts';

const fround = Math.fround;

/** Where the forward pass keeps K and V (f16 storage). Positions are written in order. */
export interface KVStore {
  write(layer: number, pos: number, k: Float32Array, v: Float32Array): void;
  /** Reads the K (or V) row of `pos` for all KV heads into out[0..kvDim). */
  readK(layer: number, pos: number, out: Float32Array): void;
  readV(layer: number, pos: number, out: Float32Array): void;
}

// ---------------------------------------------------------------------------------------------
// Small ops
// ---------------------------------------------------------------------------------------------

/** Round half to even, as bitnet.cpp's nearest_int (the 1.5·2^23 magic-number trick). */
export function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return r - v === 0.5 && (r & 1) !== 0 ? r - 1 : r;
}

export function f16Round(x: number): number {
  return F16_TABLE[f32ToF16(x)];
}

/** Per-token int8 activation quantization (I8_S). Returns the f32 scale s and S = Σq. */
export function quantizeActivations(x: Float32Array, q: Int8Array): { scale: number; sum: number } {
  let amax = 1e-5;
  for (let i = 0; i < x.length; i++) {
    const a = Math.abs(x[i]);
    if (a > amax) amax = a;
  }
  const scale = fround(127 / amax);
  let sum = 0;
  for (let i = 0; i < x.length; i++) {
    let r = roundHalfEven(fround(x[i] * scale));
    if (r > 127) r = 127;
    else if (r < -128) r = -128;
    q[i] = r;
    sum += r;
  }
  return { scale, sum };
}

/** out = x / sqrt(mean(x²) + eps) · w, with the sum of squares in f64 (ggml's rms_norm). */
export function rmsNorm(x: Float32Array, w: Float32Array, eps: number, out: Float32Array): void {
  let sum = 0;
  for (let i = 0; i < x.length; i++) sum += fround(x[i] * x[i]);
  const mean = fround(sum / x.length);
  const scale = fround(1 / fround(Math.sqrt(fround(mean + eps))));
  for (let i = 0; i < x.length; i++) out[i] = fround(fround(x[i] * scale) * w[i]);
}

/** NEOX RoPE on one head vector in place: pairs (i, i + nRot/2), angle pos·base^(−2i/nRot). */
export function ropeNeox(x: Float32Array, off: number, nRot: number, pos: number, base: number): void {
  const half = nRot / 2;
  const thetaScale = fround(base ** (-2 / nRot));
  let theta = fround(pos);
  for (let i = 0; i < half; i++) {
    const c = fround(Math.cos(theta));
    const s = fround(Math.sin(theta));
    const x0 = x[off + i];
    const x1 = x[off + i + half];
    x[off + i] = fround(fround(x0 * c) - fround(x1 * s));
    x[off + i + half] = fround(fround(x0 * s) + fround(x1 * c));
    theta = fround(theta * thetaScale);
  }
}

// ---------------------------------------------------------------------------------------------
// Matmuls
// ---------------------------------------------------------------------------------------------

/** Σ (code−1)·q over one I2_S row (128-element blocks, MSB-first planes of 32). */
export function dotI2S(w: Uint8Array, rowOff: number, q: Int8Array, k: number): number {
  let acc = 0;
  for (let blk = 0; blk < k; blk += 128) {
    const bo = rowOff + (blk >> 2);
    for (let t = 0; t < 32; t++) {
      const b = w[bo + t];
      const j = blk + t;
      acc +=
        (((b >> 6) & 3) - 1) * q[j] +
        (((b >> 4) & 3) - 1) * q[j + 32] +
        (((b >> 2) & 3) - 1) * q[j + 64] +
        ((b & 3) - 1) * q[j + 96];
    }
  }
  return acc;
}

/**
 * Σ_b d_b·D_b over one TQ2_0 row, in f32, blocks in order. With `act` (Q8_K activation block
 * scales, llama.cpp's scheme) each block's multiplier is f32(d_b·act[b]) instead of d_b.
 */
export function dotTQ2_0(w: Uint8Array, rowOff: number, q: Int8Array, k: number, act?: Float32Array): number {
  let acc = 0;
  for (let blk = 0; blk < k / QK_K; blk++) {
    const bo = rowOff + blk * TQ2_0_BLOCK_BYTES;
    const x = blk * QK_K;
    let d = 0;
    for (let g = 0; g < 2; g++) {
      for (let m = 0; m < 32; m++) {
        const b = w[bo + 32 * g + m];
        const j = x + 128 * g + m;
        d +=
          ((b & 3) - 1) * q[j] +
          (((b >> 2) & 3) - 1) * q[j + 32] +
          (((b >> 4) & 3) - 1) * q[j + 64] +
          (((b >> 6) & 3) - 1) * q[j + 96];
      }
    }
    const dw = F16_TABLE[w[bo + 64] | (w[bo + 65] << 8)];
    acc = fround(acc + fround(d * (act ? fround(dw * act[blk]) : dw)));
  }
  return acc;
}

/** Σ_b d_b·D_b over one TQ1_0 row (`act` as in dotTQ2_0). */
export function dotTQ1_0(w: Uint8Array, rowOff: number, q: Int8Array, k: number, act?: Float32Array): number {
  let acc = 0;
  for (let blk = 0; blk < k / QK_K; blk++) {
    const bo = rowOff + blk * TQ1_0_BLOCK_BYTES;
    const x = blk * QK_K;
    let d = 0;
    for (let byteIdx = 0; byteIdx < 52; byteIdx++) {
      const digits = byteIdx < 48 ? 5 : 4;
      const b = w[bo + byteIdx];
      for (let kk = 0; kk < digits; kk++) d += (tq1Digit(b, kk) - 1) * q[x + tq1Element(byteIdx, kk)];
    }
    const dw = F16_TABLE[w[bo + 52] | (w[bo + 53] << 8)];
    acc = fround(acc + fround(d * (act ? fround(dw * act[blk]) : dw)));
  }
  return acc;
}

/** Scratch for one linear layer's activations: the int8 copy and its scale, shared by q/k/v etc. */
export interface QuantizedActs {
  q: Int8Array;
  scale: number;
  sum: number;
  /** The f32 input, for float-weight projections. */
  x: Float32Array;
  /**
   * Set in llama.cpp-compatible mode: Q8_K activation scales, one per 256-block (then `q` holds
   * the per-block quantized values and `scale`/`sum` are unused by the TQ kernels).
   */
  blockScales?: Float32Array;
}

/**
 * llama.cpp's Q8_K activation quantization, for comparison only (docs/numerics.md): per 256-block,
 * iscale = −127/m with m the element of largest |x| (signed), q = min(127, roundHalfEven(iscale·x)),
 * d = 1/iscale (0 for an all-zero block).
 */
export function quantizeActivationsQ8K(x: Float32Array, q: Int8Array, d: Float32Array): void {
  for (let b = 0; b < x.length / QK_K; b++) {
    const o = b * QK_K;
    let amax = 0;
    let max = 0;
    for (let j = 0; j < QK_K; j++) {
      const a = Math.abs(x[o + j]);
      if (a > amax) {
        amax = a;
        max = x[o + j];
      }
    }
    if (amax === 0) {
      d[b] = 0;
      q.fill(0, o, o + QK_K);
      continue;
    }
    const iscale = fround(-127 / max);
    for (let j = 0; j < QK_K; j++) q[o + j] = Math.min(127, roundHalfEven(fround(iscale * x[o + j])));
    d[b] = fround(1 / iscale);
  }
}

/** y[0..n) = W·x for one token. Ternary weights take the exact integer path. */
export function linear(w: Linear, a: QuantizedActs, y: Float32Array, rowScratch: Float32Array): void {
  const { k, n } = w;
  if (w.layout) {
    linearTL(w, a, y);
    if (w.outScale !== 1) for (let r = 0; r < n; r++) y[r] = fround(y[r] * w.outScale);
    return;
  }
  const rb = rowBytes(w.type, k);
  switch (w.type) {
    case GGMLType.I2_S:
      for (let r = 0; r < n; r++) {
        const dms = dotI2S(w.bytes, r * rb, a.q, k); // = D − S, exact integer
        y[r] = fround(fround(fround(dms) / a.scale) * w.scale);
      }
      break;
    case GGMLType.TQ2_0:
      if (a.blockScales) for (let r = 0; r < n; r++) y[r] = dotTQ2_0(w.bytes, r * rb, a.q, k, a.blockScales);
      else for (let r = 0; r < n; r++) y[r] = fround(dotTQ2_0(w.bytes, r * rb, a.q, k) / a.scale);
      break;
    case GGMLType.TQ1_0:
      if (a.blockScales) for (let r = 0; r < n; r++) y[r] = dotTQ1_0(w.bytes, r * rb, a.q, k, a.blockScales);
      else for (let r = 0; r < n; r++) y[r] = fround(dotTQ1_0(w.bytes, r * rb, a.q, k) / a.scale);
      break;
    default: {
      // Float weights: ggml converts the activation to the weight's type for the dot product.
      const xr = roundedForType(w.type, a.x, rowScratch.subarray(k, 2 * k));
      for (let r = 0; r < n; r++) {
        dequantizeRow(w, r, rowScratch);
        let s = 0;
        for (let i = 0; i < k; i++) s += rowScratch[i] * xr[i];
        y[r] = fround(s);
      }
    }
  }
  if (w.outScale !== 1) for (let r = 0; r < n; r++) y[r] = fround(y[r] * w.outScale);
}

// one decoded TL row (ternary, nb·256) and its block scales; grown on demand, shared (single-threaded)
let tlRow = new Int8Array(0);
let tlScales = new Float32Array(0);

/**
 * linear() over a TL1/TL2 tile image (src/quant/tl.ts): each row is decoded to ternary values on
 * the fly, then the source type's numerics exactly. Kind 0 (I2_S): D − S = Σ t·q, then
 * y = ((D − S)/s)·wscale in f32. Kind 1 (TQ2_0/TQ1_0): y = (Σ_b d_b·D_b)/s accumulated in f32 in
 * block order, or with Q8_K activations Σ_b f32(d_b·act_b)·D_b, as dotTQ2_0/dotTQ1_0.
 */
function linearTL(w: Linear, a: QuantizedActs, y: Float32Array): void {
  const h = readTLHeader(w.bytes); // validated against the tensor when the pack was loaded
  const { k, n } = w;
  if (tlRow.length < h.nb * 256) tlRow = new Int8Array(h.nb * 256);
  if (tlScales.length < h.nb) tlScales = new Float32Array(h.nb);
  const t = tlRow;
  const sc = tlScales;
  const q = a.q;
  for (let r = 0; r < n; r++) {
    decodeTLRow(w.bytes, h, r, t, sc);
    if (h.kind === 0) {
      let dms = 0;
      for (let i = 0; i < k; i++) dms += t[i] * q[i];
      y[r] = fround(fround(fround(dms) / a.scale) * h.wscale);
      continue;
    }
    let acc = 0;
    for (let b = 0; b < h.nb; b++) {
      let d = 0;
      for (let i = b * QK_K, e = Math.min(k, i + QK_K); i < e; i++) d += t[i] * q[i];
      const act = a.blockScales;
      acc = fround(acc + fround(d * (act ? fround(sc[b] * act[b]) : sc[b])));
    }
    y[r] = a.blockScales ? acc : fround(acc / a.scale);
  }
}

const BF16_U32 = new Uint32Array(1);
const BF16_F32 = new Float32Array(BF16_U32.buffer);

/** The activation as a dot product against a tensor of `type` sees it. */
function roundedForType(type: number, x: Float32Array, out: Float32Array): Float32Array {
  switch (type) {
    case GGMLType.F32:
      return x;
    case GGMLType.F16:
      for (let i = 0; i < x.length; i++) out[i] = f16Round(x[i]);
      return out;
    case GGMLType.BF16:
      for (let i = 0; i < x.length; i++) {
        BF16_F32[0] = x[i];
        // round to nearest even on the upper 16 bits
        BF16_U32[0] = (BF16_U32[0] + 0x7fff + ((BF16_U32[0] >> 16) & 1)) & 0xffff0000;
        out[i] = BF16_F32[0];
      }
      return out;
    default:
      throw BitNetError.Model('UNSUPPORTED_TENSOR_TYPE', `no float dot product for type ${type}`, { type });
  }
}

// ---------------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------------

export class ReferenceForward {
  readonly hp: HParams;
  readonly w: ModelWeights;
  // Scratch buffers, allocated once: the per-token loop allocates nothing.
  private readonly x: Float32Array; // residual stream [nEmbd]
  private readonly xn: Float32Array; // normed input [max(nEmbd, nFF)]
  private readonly q8: Int8Array; // quantized activations [max(nEmbd, nFF)]
  private readonly qv: Float32Array; // Q [nEmbd]
  private readonly kv: Float32Array; // K [kvDim]
  private readonly vv: Float32Array; // V [kvDim]
  private readonly att: Float32Array; // attention output [nEmbd]
  private readonly tmp: Float32Array; // projection output [max(nEmbd, nFF)]
  private readonly gate: Float32Array; // [nFF]
  private readonly up: Float32Array; // [nFF]
  private readonly row: Float32Array; // dequantized weight row + rounded activation [2·max(nEmbd, nFF)]
  private readonly kRow: Float32Array; // one cached K/V row [kvDim]
  private scores: Float32Array; // [context length so far]

  /** The quantized hidden state of the integer heads (allocated on first use). */
  private headActs: HeadActs | undefined;

  /** Q8_K block scales when running in llama.cpp's activation scheme (comparison only). */
  private readonly q8kScales: Float32Array | undefined;

  /**
   * `activations: 'q8k'` switches TQ1_0/TQ2_0 matmuls to llama.cpp's per-256-block Q8_K
   * activations, to measure how much of the distance to llama.cpp is activation rounding
   * (docs/numerics.md). The default, 'per-token', is bitnet.cpp's scheme and the oracle.
   */
  constructor(hp: HParams, w: ModelWeights, opts: { activations?: 'per-token' | 'q8k' } = {}) {
    this.hp = hp;
    this.w = w;
    this.q8kScales = undefined;
    if (opts.activations === 'q8k') {
      const types = new Set(
        w.layers.flatMap((L) => [L.wq, L.wk, L.wv, L.wo, L.wGate, L.wUp, L.wDown].map((x) => x.type)),
      );
      if ([...types].some((t) => t !== GGMLType.TQ2_0 && t !== GGMLType.TQ1_0)) {
        throw BitNetError.Config('Q8K_NEEDS_TQ', "the 'q8k' activation scheme applies to TQ1_0/TQ2_0 projections only");
      }
      this.q8kScales = new Float32Array(Math.max(hp.nEmbd, hp.nFF) / QK_K);
    }
    const wide = Math.max(hp.nEmbd, hp.nFF);
    const kvDim = hp.nHeadKv * hp.headDim;
    this.x = new Float32Array(hp.nEmbd);
    this.xn = new Float32Array(wide);
    this.q8 = new Int8Array(wide);
    this.qv = new Float32Array(hp.nEmbd);
    this.kv = new Float32Array(kvDim);
    this.vv = new Float32Array(kvDim);
    this.att = new Float32Array(hp.nEmbd);
    this.tmp = new Float32Array(wide);
    this.gate = new Float32Array(hp.nFF);
    this.up = new Float32Array(hp.nFF);
    this.row = new Float32Array(2 * wide);
    this.kRow = new Float32Array(kvDim);
    this.scores = new Float32Array(256);
  }

  /** Quantizes `x` (length n) into the shared int8 scratch. */
  private quant(x: Float32Array): QuantizedActs {
    const q = this.q8.subarray(0, x.length);
    if (this.q8kScales) {
      // llama.cpp-compatible mode (TQ weights only, checked in the constructor).
      const d = this.q8kScales.subarray(0, x.length / QK_K);
      quantizeActivationsQ8K(x, q, d);
      return { q, scale: 1, sum: 0, x, blockScales: d };
    }
    const { scale, sum } = quantizeActivations(x, q);
    return { q, scale, sum, x };
  }

  /**
   * Runs one token at position `pos` through the network, writing K/V for `pos` into `kv`.
   * Returns the final hidden state (after output_norm), valid until the next call.
   */
  forwardToken(token: number, pos: number, kv: KVStore): Float32Array {
    const { hp, w } = this;
    if (!Number.isInteger(token) || token < 0 || token >= hp.nVocab) {
      throw BitNetError.Model('BAD_TOKEN', `token id ${token} is outside the vocabulary (0..${hp.nVocab - 1})`, {
        token,
      });
    }
    const { nEmbd, nFF, nHead, nHeadKv, headDim } = hp;
    const x = this.x;
    dequantizeRow(w.tokenEmbd, token, x); // h = f32(token_embd[token])

    const xn = this.xn.subarray(0, nEmbd);
    const tmpE = this.tmp.subarray(0, nEmbd);
    const group = nHead / nHeadKv; // q heads per kv head
    const attnScale = 1 / Math.sqrt(headDim);
    if (this.scores.length < pos + 1) this.scores = new Float32Array(Math.max(pos + 1, this.scores.length * 2));

    for (let l = 0; l < hp.nLayer; l++) {
      const L = w.layers[l];
      // --- attention block ---
      rmsNorm(x, L.attnNorm, hp.rmsEps, xn);
      const a = this.quant(xn); // one quantization serves q, k and v (identical results)
      linear(L.wq, a, this.qv, this.row);
      linear(L.wk, a, this.kv, this.row);
      linear(L.wv, a, this.vv, this.row);
      for (let h = 0; h < nHead; h++) ropeNeox(this.qv, h * headDim, hp.nRot, pos, hp.ropeFreqBase);
      for (let h = 0; h < nHeadKv; h++) ropeNeox(this.kv, h * headDim, hp.nRot, pos, hp.ropeFreqBase);
      kv.write(l, pos, this.kv, this.vv); // stored as f16

      // Causal attention over positions 0..pos; q head h reads kv head floor(h / group).
      for (let i = 0; i < nEmbd; i++) this.qv[i] = f16Round(this.qv[i]);
      this.att.fill(0);
      const scores = this.scores;
      for (let h = 0; h < nHead; h++) {
        const kvh = Math.floor(h / group);
        const qo = h * headDim;
        const ko = kvh * headDim;
        let max = -Infinity;
        for (let t = 0; t <= pos; t++) {
          kv.readK(l, t, this.kRow);
          let s = 0;
          for (let d = 0; d < headDim; d++) s += this.qv[qo + d] * this.kRow[ko + d];
          const sc = fround(fround(s) * attnScale);
          scores[t] = sc;
          if (sc > max) max = sc;
        }
        let sum = 0;
        for (let t = 0; t <= pos; t++) {
          const e = fround(Math.exp(scores[t] - max));
          scores[t] = e;
          sum += e;
        }
        const inv = fround(1 / sum);
        for (let t = 0; t <= pos; t++) {
          const p = f16Round(fround(scores[t] * inv));
          kv.readV(l, t, this.kRow);
          for (let d = 0; d < headDim; d++) this.att[qo + d] += p * this.kRow[ko + d];
        }
      }
      rmsNorm(this.att, L.attnSubNorm, hp.rmsEps, xn); // sub-norm BEFORE o_proj
      linear(L.wo, this.quant(xn), tmpE, this.row);
      for (let i = 0; i < nEmbd; i++) x[i] = fround(x[i] + tmpE[i]);

      // --- feed-forward block ---
      rmsNorm(x, L.ffnNorm, hp.rmsEps, xn);
      const b = this.quant(xn);
      linear(L.wGate, b, this.gate, this.row);
      linear(L.wUp, b, this.up, this.row);
      const f = this.xn.subarray(0, nFF);
      for (let i = 0; i < nFF; i++) {
        const g = this.gate[i];
        const act = hp.activation === 'relu2' ? (g > 0 ? fround(g * g) : 0) : fround(g / (1 + Math.exp(-g)));
        f[i] = fround(act * this.up[i]);
      }
      const fn = this.tmp.subarray(0, nFF);
      rmsNorm(f, L.ffnSubNorm, hp.rmsEps, fn); // sub-norm over nFF BEFORE down_proj
      linear(L.wDown, this.quant(fn), tmpE, this.row);
      for (let i = 0; i < nEmbd; i++) x[i] = fround(x[i] + tmpE[i]);
    }
    rmsNorm(x, w.outputNorm, hp.rmsEps, xn);
    return xn;
  }

  /** logits[0..nVocab) = head · hidden, the hidden state rounded as the head type's dot sees it. */
  logits(hidden: Float32Array, out: Float32Array = new Float32Array(this.hp.nVocab)): Float32Array {
    const head: TensorView = this.w.output;
    const k = this.hp.nEmbd;
    if (INTEGER_HEAD_TYPES.includes(head.type)) {
      // Q8_0 / Q4_0 / Q6_K: block-quantized hidden state, integer block dots (integer-head.ts)
      const a = (this.headActs ??= headActs(k));
      const b = head.bytes;
      if (head.type === GGMLType.Q6_K) {
        quantizeActivationsQ8K(hidden, a.q, a.d);
        for (let v = 0; v < this.hp.nVocab; v++) out[v] = headRowQ6_K(b, v, k, a);
      } else {
        quantizeQ8_0Acts(hidden, a);
        const row = head.type === GGMLType.Q8_0 ? headRowQ8_0 : headRowQ4_0;
        for (let v = 0; v < this.hp.nVocab; v++) out[v] = row(b, v, k, a);
      }
      return out;
    }
    // rowScratch's upper half holds the rounded activation (the lower half a dequantized row).
    const xr = roundedForType(head.type, hidden, this.row.subarray(k, 2 * k));
    if (head.type === GGMLType.F16) {
      // Hot path (F16 head of the 2B-4T file): read the f16 bits straight through the table.
      const b = head.bytes;
      for (let v = 0; v < this.hp.nVocab; v++) {
        let s = 0;
        let o = v * 2 * k;
        for (let i = 0; i < k; i++, o += 2) s += F16_TABLE[b[o] | (b[o + 1] << 8)] * xr[i];
        out[v] = fround(s);
      }
      return out;
    }
    const row = this.row.subarray(0, k);
    for (let v = 0; v < this.hp.nVocab; v++) {
      dequantizeRow(head, v, row);
      let s = 0;
      for (let i = 0; i < k; i++) s += row[i] * xr[i];
      out[v] = fround(s);
    }
    return out;
  }
}
