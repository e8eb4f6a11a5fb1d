/**
 * Codecs for the non-ternary types the engine reads: F32, F16, BF16, Q8_0, Q4_0 and Q6_K (embeddings
 * and LM head), plus row dequantization for every supported type so the reference can read any
 * tensor row as f32.
 *
 * Q8_0 block (34 B, 32 elements): f16 d, int8 qs[32]; x = d·q.
 * Q4_0 block (18 B, 32 elements): f16 d, qs[16]; element j in the low nibble of qs[j], element
 *   j + 16 in its high nibble; x = d·(nibble − 8).
 * Q6_K block (210 B, 256 elements): ql[128], qh[64], int8 scales[16], f16 d. Each half h of 128
 *   elements uses ql[64h..], qh[32h..], scales[8h..]; for l in 0..31 the four 6-bit values
 *   q1..q4 (elements l, l+32, l+64, l+96 of the half) are
 *   q1 = (ql[l] & 15) | ((qh[l] >> 0 & 3) << 4), q2 = (ql[l+32] & 15) | ((qh[l] >> 2 & 3) << 4),
 *   q3 = (ql[l] >> 4) | ((qh[l] >> 4 & 3) << 4),  q4 = (ql[l+32] >> 4) | ((qh[l] >> 6 & 3) << 4),
 *   minus 32, each times d·scales[sub-block of 16].
 */
import { BitNetError } from '../errors.ts';
import { GGMLType, typeName } from '../gguf/ggml-types.ts';
import { f16Table, f16ToF32, f32ToF16 } from '../util/f16.ts';
import { I2S_BLOCK } from './i2s.ts';
import { QK_K, TQ1_0_BLOCK_BYTES, TQ2_0_BLOCK_BYTES, tq1Digit, tq1Element } from './tq.ts';

/** f16 bit pattern → f32 value, as a 64K-entry table (hot paths: embeddings, LM head, KV). */
export const F16_TABLE: Float32Array = f16Table();

export function quantizeF16(x: Float32Array): Uint8Array {
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = f32ToF16(x[i]);
  return new Uint8Array(out.buffer);
}

export function quantizeQ8_0(x: Float32Array): Uint8Array {
  if (x.length % 32 !== 0) throw BitNetError.Quantization('Q8_0_BAD_LENGTH', 'Q8_0 needs a multiple of 32 elements');
  const nb = x.length / 32;
  const out = new Uint8Array(nb * 34);
  const dv = new DataView(out.buffer);
  for (let b = 0; b < nb; b++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[b * 32 + j]));
    const d = amax / 127;
    const id = d ? 1 / d : 0;
    dv.setUint16(b * 34, f32ToF16(d), true);
    for (let j = 0; j < 32; j++) dv.setInt8(b * 34 + 2 + j, Math.round(x[b * 32 + j] * id));
  }
  return out;
}

/**
 * ggml's Q4_0 quantizer (quantize_row_q4_0_ref): per 32-block, m = the element of largest |x|
 * (signed), d = m / −8 (stored as f16), q = min(15, trunc(x·(1/d) + 8.5)); x = d·(q − 8).
 */
export function quantizeQ4_0(x: Float32Array): Uint8Array {
  if (x.length % 32 !== 0) throw BitNetError.Quantization('Q4_0_BAD_LENGTH', 'Q4_0 needs a multiple of 32 elements');
  const nb = x.length / 32;
  const out = new Uint8Array(nb * 18);
  const dv = new DataView(out.buffer);
  const f = Math.fround;
  for (let b = 0; b < nb; b++) {
    const o = b * 32;
    let amax = 0;
    let max = 0;
    for (let j = 0; j < 32; j++) {
      if (Math.abs(x[o + j]) > amax) {
        amax = Math.abs(x[o + j]);
        max = x[o + j];
      }
    }
    const d = f(max / -8);
    const id = d ? f(1 / d) : 0;
    dv.setUint16(b * 18, f32ToF16(d), true);
    const q = (v: number) => Math.min(15, Math.trunc(f(f(v * id) + 8.5)));
    for (let j = 0; j < 16; j++) out[b * 18 + 2 + j] = q(x[o + j]) | (q(x[o + 16 + j]) << 4);
  }
  return out;
}

/**
 * A simple Q6_K quantizer: per 16-element sub-block scale amax/32, an 8-bit scale per sub-block
 * relative to the block's f16 `d`. Any valid encoding decodes identically everywhere, so this need
 * not match llama.cpp's (error-minimising) quantizer bit for bit.
 */
export function quantizeQ6_K(x: Float32Array): Uint8Array {
  if (x.length % QK_K !== 0) throw BitNetError.Quantization('Q6_K_BAD_LENGTH', 'Q6_K needs a multiple of 256 elements');
  const nb = x.length / QK_K;
  const out = new Uint8Array(nb * 210);
  const dv = new DataView(out.buffer);
  const L = new Uint8Array(QK_K);
  const subScale = new Float32Array(16);
  for (let b = 0; b < nb; b++) {
    const xb = b * QK_K;
    let maxScale = 0;
    for (let s = 0; s < 16; s++) {
      let amax = 0;
      for (let j = 0; j < 16; j++) amax = Math.max(amax, Math.abs(x[xb + s * 16 + j]));
      subScale[s] = amax / 32;
      maxScale = Math.max(maxScale, subScale[s]);
    }
    const d = Math.fround(maxScale / 127);
    const dh = f32ToF16(d);
    const dq = f16ToF32(dh);
    const o = b * 210;
    for (let s = 0; s < 16; s++) {
      const sc = dq ? Math.max(-128, Math.min(127, Math.round(subScale[s] / dq))) : 0;
      dv.setInt8(o + 192 + s, sc);
      const eff = dq * sc;
      for (let j = 0; j < 16; j++) {
        const q = eff ? Math.max(-32, Math.min(31, Math.round(x[xb + s * 16 + j] / eff))) : 0;
        L[s * 16 + j] = q + 32;
      }
    }
    for (let h = 0; h < 2; h++) {
      for (let l = 0; l < 32; l++) {
        const q1 = L[128 * h + l];
        const q2 = L[128 * h + l + 32];
        const q3 = L[128 * h + l + 64];
        const q4 = L[128 * h + l + 96];
        out[o + 64 * h + l] = (q1 & 15) | ((q3 & 15) << 4);
        out[o + 64 * h + l + 32] = (q2 & 15) | ((q4 & 15) << 4);
        out[o + 128 + 32 * h + l] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
      }
    }
    dv.setUint16(o + 208, dh, true);
  }
  return out;
}

function dequantQ6_KBlock(b: Uint8Array, o: number, out: Float32Array, oo: number): void {
  const d = F16_TABLE[b[o + 208] | (b[o + 209] << 8)];
  for (let h = 0; h < 2; h++) {
    const ql = o + 64 * h;
    const qh = o + 128 + 32 * h;
    const sc = o + 192 + 8 * h;
    for (let l = 0; l < 32; l++) {
      const is = l >> 4;
      const hb = b[qh + l];
      const q1 = ((b[ql + l] & 15) | ((hb & 3) << 4)) - 32;
      const q2 = ((b[ql + l + 32] & 15) | (((hb >> 2) & 3) << 4)) - 32;
      const q3 = ((b[ql + l] >> 4) | (((hb >> 4) & 3) << 4)) - 32;
      const q4 = ((b[ql + l + 32] >> 4) | (((hb >> 6) & 3) << 4)) - 32;
      const base = oo + 128 * h + l;
      out[base] = d * ((b[sc + is] << 24) >> 24) * q1;
      out[base + 32] = d * ((b[sc + is + 2] << 24) >> 24) * q2;
      out[base + 64] = d * ((b[sc + is + 4] << 24) >> 24) * q3;
      out[base + 96] = d * ((b[sc + is + 6] << 24) >> 24) * q4;
    }
  }
}

const BF16_U32 = new Uint32Array(1);
const BF16_F32 = new Float32Array(BF16_U32.buffer);

/** Tensor bytes plus the shape facts needed to address rows. */
export interface TensorView {
  name: string;
  type: number;
  /** ne[0] = K (row length), ne[1] = rows. */
  ne: number[];
  bytes: Uint8Array;
}

/** Bytes per row for row-addressable types (I2_S rows are K/4 bytes; its scale is per tensor). */
export function rowBytes(type: number, k: number): number {
  switch (type) {
    case GGMLType.F32:
      return 4 * k;
    case GGMLType.F16:
    case GGMLType.BF16:
      return 2 * k;
    case GGMLType.Q8_0:
      return (k / 32) * 34;
    case GGMLType.Q4_0:
      return (k / 32) * 18;
    case GGMLType.Q6_K:
      return (k / QK_K) * 210;
    case GGMLType.TQ2_0:
      return (k / QK_K) * TQ2_0_BLOCK_BYTES;
    case GGMLType.TQ1_0:
      return (k / QK_K) * TQ1_0_BLOCK_BYTES;
    case GGMLType.I2_S:
      return k / 4;
    default:
      throw BitNetError.Model('UNSUPPORTED_TENSOR_TYPE', `tensor type ${typeName(type)} is not supported`, { type });
  }
}

/** Dequantizes row `row` of a 2-D tensor into out[0..K). */
export function dequantizeRow(t: TensorView, row: number, out: Float32Array): void {
  const k = t.ne[0];
  const b = t.bytes;
  const o = row * rowBytes(t.type, k);
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  switch (t.type) {
    case GGMLType.F32:
      for (let i = 0; i < k; i++) out[i] = dv.getFloat32(o + 4 * i, true);
      return;
    case GGMLType.F16:
      for (let i = 0; i < k; i++) out[i] = F16_TABLE[b[o + 2 * i] | (b[o + 2 * i + 1] << 8)];
      return;
    case GGMLType.BF16:
      for (let i = 0; i < k; i++) {
        BF16_U32[0] = dv.getUint16(o + 2 * i, true) << 16;
        out[i] = BF16_F32[0];
      }
      return;
    case GGMLType.Q8_0:
      for (let blk = 0; blk < k / 32; blk++) {
        const bo = o + blk * 34;
        const d = F16_TABLE[b[bo] | (b[bo + 1] << 8)];
        for (let j = 0; j < 32; j++) out[blk * 32 + j] = d * ((b[bo + 2 + j] << 24) >> 24);
      }
      return;
    case GGMLType.Q4_0:
      for (let blk = 0; blk < k / 32; blk++) {
        const bo = o + blk * 18;
        const d = F16_TABLE[b[bo] | (b[bo + 1] << 8)];
        for (let j = 0; j < 16; j++) {
          out[blk * 32 + j] = d * ((b[bo + 2 + j] & 15) - 8);
          out[blk * 32 + 16 + j] = d * ((b[bo + 2 + j] >> 4) - 8);
        }
      }
      return;
    case GGMLType.Q6_K:
      for (let blk = 0; blk < k / QK_K; blk++) dequantQ6_KBlock(b, o + blk * 210, out, blk * QK_K);
      return;
    case GGMLType.TQ2_0:
      for (let blk = 0; blk < k / QK_K; blk++) {
        const bo = o + blk * TQ2_0_BLOCK_BYTES;
        const d = F16_TABLE[b[bo + 64] | (b[bo + 65] << 8)];
        for (let e = 0; e < QK_K; e++) {
          out[blk * QK_K + e] = d * (((b[bo + 32 * (e >> 7) + (e & 31)] >> (2 * ((e >> 5) & 3))) & 3) - 1);
        }
      }
      return;
    case GGMLType.TQ1_0:
      for (let blk = 0; blk < k / QK_K; blk++) {
        const bo = o + blk * TQ1_0_BLOCK_BYTES;
        const d = F16_TABLE[b[bo + 52] | (b[bo + 53] << 8)];
        for (let byteIdx = 0; byteIdx < 52; byteIdx++) {
          const digits = byteIdx < 48 ? 5 : 4;
          for (let kk = 0; kk < digits; kk++) {
            out[blk * QK_K + tq1Element(byteIdx, kk)] = d * (tq1Digit(b[bo + byteIdx], kk) - 1);
          }
        }
      }
      return;
    case GGMLType.I2_S: {
      const n = k * t.ne[1];
      const scale = dv.getFloat32(n / 4, true);
      for (let base = 0; base < k; base += I2S_BLOCK) {
        const bo = o + base / 4;
        for (let j = 0; j < I2S_BLOCK; j++) {
          out[base + j] = (((b[bo + (j & 31)] >> (6 - 2 * (j >> 5))) & 3) - 1) * scale;
        }
      }
      return;
    }
    default:
      throw BitNetError.Model('UNSUPPORTED_TENSOR_TYPE', `cannot dequantize ${typeName(t.type)} (${t.name})`, {
        name: t.name,
        type: t.type,
      });
  }
}
