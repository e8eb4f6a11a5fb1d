/**
 * I2_S: bitnet.cpp's ternary layout (docs/bitnet-formats.md §2.2).
 *
 * The tensor is one flat array of n = rows·K codes (row-major, K = ne[0] a multiple of 128).
 * Each 128-element block b takes 32 bytes; element j of the block sits in byte 32b + (j mod 32)
 * at bit shift 6 − 2·floor(j/32) (MSB-first planes). Codes 0,1,2 mean −1,0,+1. After the n/4
 * code bytes comes a 32-byte tail whose first 4 bytes are the per-tensor f32 scale.
 */
import { BitNetError } from '../errors.ts';

export const I2S_BLOCK = 128;

/** Packs ternary values (−1/0/+1, row-major rows×K) and a scale into I2_S bytes. */
export function packI2S(ternary: Int8Array, scale: number): Uint8Array {
  const n = ternary.length;
  if (n % I2S_BLOCK !== 0) {
    throw BitNetError.Quantization('I2S_BAD_LENGTH', `I2_S needs a multiple of ${I2S_BLOCK} elements, got ${n}`, { n });
  }
  const out = new Uint8Array(n / 4 + 32);
  for (let base = 0; base < n; base += I2S_BLOCK) {
    const ob = base / 4;
    for (let j = 0; j < I2S_BLOCK; j++) {
      const t = ternary[base + j];
      if (t < -1 || t > 1) throw BitNetError.Quantization('NOT_TERNARY', `value ${t} at ${base + j} is not ternary`);
      out[ob + (j & 31)] |= (t + 1) << (6 - 2 * (j >> 5));
    }
  }
  new DataView(out.buffer).setFloat32(n / 4, scale, true);
  return out;
}

/** The per-tensor scale stored after the codes. */
export function i2sScale(bytes: Uint8Array, n: number): number {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getFloat32(n / 4, true);
}

/** Unpacks n codes to ternary values (−1/0/+1). A code of 3 is invalid and raises. */
export function unpackI2S(bytes: Uint8Array, n: number): Int8Array {
  const out = new Int8Array(n);
  for (let base = 0; base < n; base += I2S_BLOCK) {
    const ob = base / 4;
    for (let j = 0; j < I2S_BLOCK; j++) {
      const code = (bytes[ob + (j & 31)] >> (6 - 2 * (j >> 5))) & 3;
      if (code === 3) throw BitNetError.Quantization('I2S_BAD_CODE', `I2_S code 3 at element ${base + j}`);
      out[base + j] = code - 1;
    }
  }
  return out;
}
