/**
 * llama.cpp's ternary block types (docs/bitnet-formats.md §7.1-7.2). Both use 256-element blocks
 * with one f16 scale `d` per block at the end of the block.
 *
 * TQ2_0 (66 B): qs[64] then d. Element n of a block: g = n>>7, l = (n>>5)&3, m = n&31,
 *   code = (qs[32g+m] >> 2l) & 3 (LSB-first planes), value = code − 1.
 * TQ1_0 (54 B): qs[48], qh[4], d. Base-3 digits, 5 per byte in qs and 4 per byte in qh, stored
 *   as the fixed-point fraction ceil(v·256/243); digit k of byte B is ((B·3^k mod 256)·3) >> 8.
 *   Elements 0..159: qs[j] holds j+32k (k=0..4); 160..239: qs[32+j] holds 160+j+16k;
 *   240..255: qh[j] holds 240+j+4k (k=0..3, the fifth digit is 0).
 */
import { BitNetError } from '../errors.ts';
import { f16ToF32, f32ToF16 } from '../util/f16.ts';

export const QK_K = 256;
export const TQ2_0_BLOCK_BYTES = 66;
export const TQ1_0_BLOCK_BYTES = 54;
const POW3 = [1, 3, 9, 27, 81, 243];

function checkLength(n: number, type: string): void {
  if (n % QK_K !== 0) {
    throw BitNetError.Quantization('TQ_BAD_LENGTH', `${type} needs a multiple of ${QK_K} elements, got ${n}`, { n });
  }
}

/** Packs ternary values with one scale for every block (the scale is stored as f16). */
export function packTQ2_0(ternary: Int8Array, scale: number): Uint8Array {
  checkLength(ternary.length, 'TQ2_0');
  const nb = ternary.length / QK_K;
  const out = new Uint8Array(nb * TQ2_0_BLOCK_BYTES);
  const dv = new DataView(out.buffer);
  const d = f32ToF16(scale);
  for (let b = 0; b < nb; b++) {
    const o = b * TQ2_0_BLOCK_BYTES;
    const x = b * QK_K;
    for (let n = 0; n < QK_K; n++) {
      const code = ternary[x + n] + 1;
      out[o + 32 * (n >> 7) + (n & 31)] |= code << (2 * ((n >> 5) & 3));
    }
    dv.setUint16(o + 64, d, true);
  }
  return out;
}

export function unpackTQ2_0(bytes: Uint8Array, n: number): { ternary: Int8Array; scales: Float32Array } {
  checkLength(n, 'TQ2_0');
  const nb = n / QK_K;
  const ternary = new Int8Array(n);
  const scales = new Float32Array(nb);
  for (let b = 0; b < nb; b++) {
    const o = b * TQ2_0_BLOCK_BYTES;
    for (let e = 0; e < QK_K; e++) {
      ternary[b * QK_K + e] = ((bytes[o + 32 * (e >> 7) + (e & 31)] >> (2 * ((e >> 5) & 3))) & 3) - 1;
    }
    scales[b] = f16ToF32(bytes[o + 64] | (bytes[o + 65] << 8));
  }
  return { ternary, scales };
}

/** Digit k (0 = most significant) of a TQ1_0 byte. */
export function tq1Digit(byte: number, k: number): number {
  return (((byte * POW3[k]) & 255) * 3) >> 8;
}

/** Element index of (byte index within the 52 packed bytes, digit k) inside a TQ1_0 block. */
export function tq1Element(byteIdx: number, k: number): number {
  if (byteIdx < 32) return byteIdx + 32 * k;
  if (byteIdx < 48) return 160 + (byteIdx - 32) + 16 * k;
  return 240 + (byteIdx - 48) + 4 * k;
}

export function packTQ1_0(ternary: Int8Array, scale: number): Uint8Array {
  checkLength(ternary.length, 'TQ1_0');
  const nb = ternary.length / QK_K;
  const out = new Uint8Array(nb * TQ1_0_BLOCK_BYTES);
  const dv = new DataView(out.buffer);
  const d = f32ToF16(scale);
  for (let b = 0; b < nb; b++) {
    const o = b * TQ1_0_BLOCK_BYTES;
    const x = b * QK_K;
    for (let byteIdx = 0; byteIdx < 52; byteIdx++) {
      const digits = byteIdx < 48 ? 5 : 4;
      let v = 0;
      for (let k = 0; k < 5; k++) {
        v = v * 3 + (k < digits ? ternary[x + tq1Element(byteIdx, k)] + 1 : 0);
      }
      out[o + byteIdx] = Math.floor((v * 256 + 242) / 243);
    }
    dv.setUint16(o + 52, d, true);
  }
  return out;
}

export function unpackTQ1_0(bytes: Uint8Array, n: number): { ternary: Int8Array; scales: Float32Array } {
  checkLength(n, 'TQ1_0');
  const nb = n / QK_K;
  const ternary = new Int8Array(n);
  const scales = new Float32Array(nb);
  for (let b = 0; b < nb; b++) {
    const o = b * TQ1_0_BLOCK_BYTES;
    for (let byteIdx = 0; byteIdx < 52; byteIdx++) {
      const digits = byteIdx < 48 ? 5 : 4;
      for (let k = 0; k < digits; k++) {
        ternary[b * QK_K + tq1Element(byteIdx, k)] = tq1Digit(bytes[o + byteIdx], k) - 1;
      }
    }
    scales[b] = f16ToF32(bytes[o + 52] | (bytes[o + 53] << 8));
  }
  return { ternary, scales };
}
