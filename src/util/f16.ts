/**
 * IEEE 754 binary16 (f16) <-> binary32 conversion without Float16Array (Node 22 lacks it unflagged).
 *
 * f16 layout: sign(1) | exponent(5, bias 15) | mantissa(10). Exponent 0 = zero/subnormal
 * (value = mant * 2^-24), exponent 31 = inf (mant 0) or NaN.
 *
 * Encoding takes the f32 bit pattern of the input (a JS number is first rounded to f32, exactly
 * as storing it into a Float32Array would) and rounds to nearest, ties to even, in one step:
 * values >= 65520 become inf, values <= 2^-25 become (signed) zero, subnormals are rounded in
 * place. NaN stays NaN (quiet bit set, top mantissa bits kept). Decoding is exact.
 */

// Scratch view to read the f32 bit pattern of a number.
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Encodes `x` (rounded to f32 first) as f16 bits, round-to-nearest-even. */
export function f32ToF16(x: number): number {
  f32[0] = x;
  return f32BitsToF16(u32[0]);
}

/** Encodes an f32 bit pattern as f16 bits, round-to-nearest-even. */
export function f32BitsToF16(bits: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  const mant = bits & 0x7fffff;
  if (exp === 0xff) return mant === 0 ? sign | 0x7c00 : sign | 0x7e00 | (mant >>> 13);
  const e = exp - 112; // rebias 127 -> 15
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // Result is subnormal (or zero). f32 subnormals (exp 0) land far below 2^-25 and go to zero.
    if (e < -10) return sign;
    const m = mant | 0x800000; // 24-bit significand with the implicit one
    const shift = 14 - e; // 14..24: value / 2^-24 = m * 2^-(14 - e)
    let half = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && (half & 1) !== 0)) half++; // may carry into 0x400 = min normal
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1) !== 0)) half++; // carry may reach 0x7c00 = inf
  return sign | half;
}

/** Decodes f16 bits to a number (exact; every f16 is representable in f32). */
export function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant === 0 ? sign * Number.POSITIVE_INFINITY : Number.NaN;
  return sign * (1024 + mant) * 2 ** (exp - 25);
}

let table: Float32Array | null = null;

/**
 * A 65536-entry decode table (256 KiB, built on first use): `f16Table()[h]` is the value of f16
 * bits `h`. Hot loops (attention over f16 KV blocks) should index this instead of calling f16ToF32.
 */
export function f16Table(): Float32Array {
  if (table === null) {
    const t = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) t[h] = f16ToF32(h);
    table = t;
  }
  return table;
}

/** Encodes `n` values of `src` from `srcOffset` into `dst` at `dstOffset`. */
export function encodeF16(
  src: ArrayLike<number>,
  dst: Uint16Array,
  dstOffset = 0,
  srcOffset = 0,
  n = src.length - srcOffset,
): void {
  for (let i = 0; i < n; i++) {
    f32[0] = src[srcOffset + i];
    dst[dstOffset + i] = f32BitsToF16(u32[0]);
  }
}

/** Decodes `n` f16 values of `src` from `srcOffset` into `dst` at `dstOffset`. */
export function decodeF16(
  src: Uint16Array,
  dst: Float32Array,
  dstOffset = 0,
  srcOffset = 0,
  n = src.length - srcOffset,
): void {
  const t = f16Table();
  for (let i = 0; i < n; i++) dst[dstOffset + i] = t[src[srcOffset + i]];
}
