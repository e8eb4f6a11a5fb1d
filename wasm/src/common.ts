/**
 * Shared helpers for the kernels: the int8 dot primitive of each build, horizontal sums, f16
 * conversions and the per-process constant tables.
 *
 * Two builds come from these sources (wasm/build.ts): SIMD128 and SIMD128 + relaxed SIMD.
 * `ASC_FEATURE_RELAXED_SIMD` is a compile-time constant, so each build contains one branch only.
 */

/**
 * dot16(a, c): i16x8 partial sums of a[i]·c[i] over 16 lanes, where `a` holds int8 activations
 * and `c` unsigned weight codes in 0..127 (the "i7" operand, deterministic on every engine).
 * Relaxed: one i16x8.relaxed_dot (lane k = a[2k]c[2k] + a[2k+1]c[2k+1]).
 * SIMD128: two extending multiplies (lane k = a[k]c[k] + a[k+8]c[k+8]).
 * Either way each lane is a sum of two products, so the accumulation bounds below hold for both.
 */
@inline export function dot16(a: v128, c: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) {
    return i16x8.relaxed_dot_i8x16_i7x16_s(a, c);
  } else {
    return i16x8.add(i16x8.extmul_low_i8x16_s(a, c), i16x8.extmul_high_i8x16_s(a, c));
  }
}

/**
 * a·b + c per lane, for products a·b that are exact (products of f16 values: at most 22
 * significant bits, exact in f32 and f64). Fused or not, the result then rounds once, so the
 * relaxed multiply-add is deterministic here: the same bits as f32x4/f64x2 mul then add.
 */
@inline export function madd32(a: v128, b: v128, c: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return f32x4.relaxed_madd(a, b, c);
  return f32x4.add(f32x4.mul(a, b), c);
}

/** madd32 on f64x2 lanes (the same precondition: a·b exact). */
@inline export function madd64(a: v128, b: v128, c: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return f64x2.relaxed_madd(a, b, c);
  return f64x2.add(f64x2.mul(a, b), c);
}

/** Sum of the four i32 lanes. */
@inline export function hsum32(v: v128): i32 {
  const s = i32x4.add(v, v128.shuffle<i32>(v, v, 2, 3, 0, 1));
  return i32x4.extract_lane(s, 0) + i32x4.extract_lane(s, 1);
}

/** [Σa, Σb, Σc, Σd] of four i32x4 vectors. */
@inline export function hsum4x32(a: v128, b: v128, c: v128, d: v128): v128 {
  const ab = i32x4.add(v128.shuffle<i32>(a, b, 0, 4, 1, 5), v128.shuffle<i32>(a, b, 2, 6, 3, 7));
  const cd = i32x4.add(v128.shuffle<i32>(c, d, 0, 4, 1, 5), v128.shuffle<i32>(c, d, 2, 6, 3, 7));
  // ab = [a0+a2, b0+b2, a1+a3, b1+b3]
  return i32x4.add(v128.shuffle<i32>(ab, cd, 0, 1, 4, 5), v128.shuffle<i32>(ab, cd, 2, 3, 6, 7));
}

// ---------------------------------------------------------------------------------------------
// f16 <-> f32, exactly as src/util/f16.ts (round to nearest even, overflow to inf)
// ---------------------------------------------------------------------------------------------

/** The address of the 64K-entry f16 -> f32 table (set by init_tables). */
let f16Table: usize = 0;

/** Fills the table (once per process) and points this instance at it. */
export function init_tables(table: usize): void {
  f16Table = table;
  for (let h: u32 = 0; h < 65536; h++) store<f32>(table + (<usize>h << 2), f16BitsToF32(h));
}

/** Points this instance (a worker's) at a table already filled by init_tables. */
export function set_tables(table: usize): void {
  f16Table = table;
}

function f16BitsToF32(h: u32): f32 {
  const sign: u32 = (h & 0x8000) << 16;
  const exp = (h >> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp == 0) {
    const v = <f32>mant * reinterpret<f32>(<u32>0x33800000); // mant * 2^-24
    return reinterpret<f32>(reinterpret<u32>(v) | sign);
  }
  if (exp == 31) return reinterpret<f32>(sign | 0x7f800000 | (mant << 13));
  return reinterpret<f32>(sign | ((exp + 112) << 23) | (mant << 13));
}

/** f16 bits -> f32 through the table. */
@inline export function f16ToF32(h: u32): f32 {
  return load<f32>(f16Table + (<usize>(h & 0xffff) << 2));
}

/** The f16 value nearest to x (ties to even), as an f32: f16Round() of the reference. */
@inline export function f16Round(x: f32): f32 {
  const u = reinterpret<u32>(x);
  const sign = u & 0x80000000;
  const a = u & 0x7fffffff;
  if (a >= 0x477ff000) {
    // >= 65520 rounds to inf; NaN stays NaN.
    return a > 0x7f800000 ? x : reinterpret<f32>(sign | 0x7f800000);
  }
  if (a >= 0x38800000) {
    // normal f16 range: keep 10 mantissa bits, round half to even
    return reinterpret<f32>(sign | ((a + 0xfff + ((a >> 13) & 1)) & 0xffffe000));
  }
  // subnormal f16: a multiple of 2^-24; |x| + 0.5 has an ulp of exactly 2^-24
  const r = (reinterpret<f32>(a) + 0.5) - 0.5;
  return reinterpret<f32>(reinterpret<u32>(r) | sign);
}

/** f16Round on four lanes. */
@inline export function f16Round4(x: v128): v128 {
  const signMask = i32x4.splat(0x80000000);
  const sign = v128.and(x, signMask);
  const a = v128.andnot(x, signMask);
  // normal path
  const nrm = v128.and(
    i32x4.add(i32x4.add(a, i32x4.splat(0xfff)), v128.and(i32x4.shr_u(a, 13), i32x4.splat(1))),
    i32x4.splat(0xffffe000),
  );
  // subnormal path
  const half = f32x4.splat(0.5);
  const sub = f32x4.sub(f32x4.add(a, half), half);
  const isNormal = i32x4.ge_s(a, i32x4.splat(0x38800000));
  let r = v128.bitselect(nrm, sub, isNormal);
  // overflow to inf (NaN kept)
  const big = i32x4.ge_s(a, i32x4.splat(0x477ff000));
  const isNaN = i32x4.gt_s(a, i32x4.splat(0x7f800000));
  r = v128.bitselect(i32x4.splat(0x7f800000), r, big);
  r = v128.bitselect(a, r, isNaN);
  return v128.or(r, sign);
}

/** BF16 rounding of the reference (round to nearest even on the upper 16 bits). */
@inline export function bf16Round(x: f32): f32 {
  const u = reinterpret<u32>(x);
  return reinterpret<f32>((u + 0x7fff + ((u >> 16) & 1)) & 0xffff0000);
}
