/**
 * The integer LM heads of the reference (Q8_0, Q4_0, Q6_K weights), computed the way ggml's
 * vec_dot for those types is built: the hidden state is quantized per block (Q8_0 activations for
 * Q8_0/Q4_0 weights, Q8_K for Q6_K), each block gives an exact integer dot product I_b, and the row
 * is the f32 sum, in block order, of f32(f32(d_w,b · d_x,b) · f32(I_b)):
 *
 *   s = 0; for b: s = f32(s + f32(f32(d_w,b · d_x,b) · f32(I_b)))
 *
 * - Q8_0 × Q8_0 (block 32): I_b = Σ qw·qx (|I_b| < 2^20, exact in f32); d_w, d_x are f16 values.
 * - Q4_0 × Q8_0 (block 32): I_b = Σ (nib − 8)·qx; the Q4_0 block is f16 d + 16 bytes, element j
 *   in the low nibble of byte j, element j + 16 in its high nibble.
 * - Q6_K × Q8_K (block 256): I_b = Σ_j sc_j · Σ_{i in sub-block j} (u_i − 32)·q_i over the 16
 *   sub-blocks of 16 (|I_b| < 2^28: f32(I_b) rounds to nearest even, like ggml's int→float);
 *   d_w is the block's f16 d, d_x the Q8_K block's f32 d.
 *
 * Every step is an f32 operation in a fixed order, so a SIMD kernel that keeps one row per lane
 * (wasm/src/floatdot.ts) reproduces it bit for bit. The scalar order is ggml's reference order;
 * llama.cpp's SIMD paths sum the same block terms in other orders (docs/numerics.md).
 */
import { GGMLType } from '../gguf/ggml-types.ts';
import { F16_TABLE } from '../quant/float-codecs.ts';
import { QK_K } from '../quant/tq.ts';
import { f32ToF16 } from '../util/f16.ts';

const fround = Math.fround;

export const INTEGER_HEAD_TYPES: readonly number[] = [GGMLType.Q8_0, GGMLType.Q4_0, GGMLType.Q6_K];

/** Quantized hidden state: int8 values and one scale per activation block (32 or 256). */
export interface HeadActs {
  q: Int8Array;
  d: Float32Array;
}

export function headActs(k: number): HeadActs {
  return { q: new Int8Array(k), d: new Float32Array(Math.ceil(k / 32)) };
}

/**
 * ggml's Q8_0 quantization (quantize_row_q8_0_ref): per 32-block, d = amax/127 (stored as f16),
 * q = round-half-away-from-zero(x · (1/d)) with the f32 (unrounded) d.
 */
export function quantizeQ8_0Acts(x: Float32Array, a: HeadActs): void {
  for (let b = 0; b < x.length / 32; b++) {
    const o = b * 32;
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[o + j]));
    const d = fround(amax / 127);
    const id = d ? fround(1 / d) : 0;
    for (let j = 0; j < 32; j++) {
      const v = fround(x[o + j] * id);
      a.q[o + j] = Math.sign(v) * Math.round(Math.abs(v));
    }
    a.d[b] = F16_TABLE[f32ToF16(d)];
  }
}

/** Row `row` of a Q8_0 head (k columns) against Q8_0 activations. */
export function headRowQ8_0(w: Uint8Array, row: number, k: number, a: HeadActs): number {
  const nb = k / 32;
  let o = row * nb * 34;
  let s = 0;
  for (let b = 0; b < nb; b++, o += 34) {
    let I = 0;
    const qo = b * 32;
    for (let j = 0; j < 32; j++) I += ((w[o + 2 + j] << 24) >> 24) * a.q[qo + j];
    const dw = F16_TABLE[w[o] | (w[o + 1] << 8)];
    s = fround(s + fround(fround(dw * a.d[b]) * I));
  }
  return s;
}

/** Row `row` of a Q4_0 head against Q8_0 activations. */
export function headRowQ4_0(w: Uint8Array, row: number, k: number, a: HeadActs): number {
  const nb = k / 32;
  let o = row * nb * 18;
  let s = 0;
  for (let b = 0; b < nb; b++, o += 18) {
    let I = 0;
    const qo = b * 32;
    for (let j = 0; j < 16; j++) {
      const byte = w[o + 2 + j];
      I += ((byte & 15) - 8) * a.q[qo + j] + ((byte >> 4) - 8) * a.q[qo + 16 + j];
    }
    const dw = F16_TABLE[w[o] | (w[o + 1] << 8)];
    s = fround(s + fround(fround(dw * a.d[b]) * I));
  }
  return s;
}

/** Row `row` of a Q6_K head against Q8_K activations (a.d holds one f32 d per 256-block). */
export function headRowQ6_K(w: Uint8Array, row: number, k: number, a: HeadActs): number {
  const nb = k / QK_K;
  let o = row * nb * 210;
  let s = 0;
  for (let b = 0; b < nb; b++, o += 210) {
    let I = 0;
    // element e of the block: half h = e >> 7, l = e & 31, quarter c = (e >> 5) & 3 (see float-codecs.ts)
    for (let e = 0; e < QK_K; e++) {
      const h = e >> 7;
      const l = e & 31;
      const c = (e >> 5) & 3;
      const ql = w[o + 64 * h + l + (c & 1 ? 32 : 0)];
      const lo = c < 2 ? ql & 15 : ql >> 4;
      const hi = (w[o + 128 + 32 * h + l] >> (2 * c)) & 3;
      const sc = (w[o + 192 + (e >> 4)] << 24) >> 24;
      I += sc * ((lo | (hi << 4)) - 32) * a.q[b * QK_K + e];
    }
    const dw = F16_TABLE[w[o + 208] | (w[o + 209] << 8)];
    s = fround(s + fround(fround(dw * a.d[b]) * fround(I)));
  }
  return s;
}
