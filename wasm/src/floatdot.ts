/**
 * Float-weight matmuls (F32/F16/BF16 projections and the F32/F16/BF16 LM head), the embedding row
 * dequantization (every embedding type), and the activation rounding each float type's dot sees.
 * The integer heads (Q8_0, Q4_0, Q6_K) are in inthead.ts.
 *
 * The reference computes these dots as Σ_i w_i·xr_i in f64, one term at a time in i order, with
 * w_i and xr_i f32 values (their products are exact in f64), and rounds once to f32.
 *
 * - Exact path (`mv_exact`): the same sum in the same order, vectorised across rows (f64x2 lanes
 *   hold two rows). Used for float projections and float heads, and as the fallback of:
 * - The F16 head (`head_f16`): the sum in f64 lanes with a known error bound, plus the reference's
 *   own worst-case rounding error (γ_K·Σ|w_i·xr_i| ≤ K·2^-53·A_r·max|xr|, A_r = Σ_i|w_i| of the
 *   row, computed at load by row_abs_sums); both ends of the interval are rounded to f32: when they
 *   agree, that is the reference's result; when not (about one row in 10^3), the row is recomputed
 *   by the exact path.
 */
import { bf16Round, f16Round, f16ToF32 } from './common';

export const T_F32: i32 = 0;
export const T_F16: i32 = 1;
export const T_Q4_0: i32 = 2;
export const T_Q8_0: i32 = 8;
export const T_Q6_K: i32 = 14;
export const T_BF16: i32 = 30;

/** Bytes per row of a float/quantized type (0 if unsupported). */
export function row_bytes(type: i32, k: i32): i32 {
  if (type == T_F32) return k * 4;
  if (type == T_F16 || type == T_BF16) return k * 2;
  if (type == T_Q8_0) return (k / 32) * 34;
  if (type == T_Q4_0) return (k / 32) * 18;
  if (type == T_Q6_K) return (k / 256) * 210;
  return 0;
}

/** Dequantizes one row into out[i·stride] (stride in bytes), values exactly as the reference's dequantizeRow. */
export function dequant_row(type: i32, src: usize, k: i32, out: usize, stride: usize): void {
  if (type == T_F32) {
    for (let i = 0; i < k; i++) store<f32>(out + <usize>i * stride, load<f32>(src + (<usize>i << 2)));
  } else if (type == T_F16) {
    for (let i = 0; i < k; i++) store<f32>(out + <usize>i * stride, f16ToF32(load<u16>(src + (<usize>i << 1))));
  } else if (type == T_BF16) {
    for (let i = 0; i < k; i++) store<f32>(out + <usize>i * stride, reinterpret<f32>(<u32>load<u16>(src + (<usize>i << 1)) << 16));
  } else if (type == T_Q8_0) {
    for (let b = 0; b < k / 32; b++) {
      const p = src + <usize>(b * 34);
      const d = f16ToF32(load<u16>(p));
      for (let j = 0; j < 32; j++) store<f32>(out + <usize>(b * 32 + j) * stride, d * <f32>load<i8>(p + 2 + <usize>j));
    }
  } else if (type == T_Q4_0) {
    for (let b = 0; b < k / 32; b++) {
      const p = src + <usize>(b * 18);
      const d = f16ToF32(load<u16>(p));
      for (let j = 0; j < 16; j++) {
        const v = <i32>load<u8>(p + 2 + <usize>j);
        store<f32>(out + <usize>(b * 32 + j) * stride, d * <f32>((v & 15) - 8));
        store<f32>(out + <usize>(b * 32 + 16 + j) * stride, d * <f32>((v >> 4) - 8));
      }
    }
  } else if (type == T_Q6_K) {
    for (let b = 0; b < k / 256; b++) {
      const p = src + <usize>(b * 210);
      const d = f16ToF32(load<u16>(p + 208));
      for (let h = 0; h < 2; h++) {
        const ql = p + <usize>(64 * h);
        const qh = p + 128 + <usize>(32 * h);
        const sc = p + 192 + <usize>(8 * h);
        for (let l = 0; l < 32; l++) {
          const is = <usize>(l >> 4);
          const hb = <i32>load<u8>(qh + <usize>l);
          const a = <i32>load<u8>(ql + <usize>l);
          const c = <i32>load<u8>(ql + <usize>l + 32);
          const q1 = ((a & 15) | ((hb & 3) << 4)) - 32;
          const q2 = ((c & 15) | (((hb >> 2) & 3) << 4)) - 32;
          const q3 = ((a >> 4) | (((hb >> 4) & 3) << 4)) - 32;
          const q4 = ((c >> 4) | (((hb >> 6) & 3) << 4)) - 32;
          const base = b * 256 + 128 * h + l;
          // d·sc·q is exact in f32 (at most 11 + 8 + 6 significant bits), as in the reference
          store<f32>(out + <usize>base * stride, (d * <f32>load<i8>(sc + is)) * <f32>q1);
          store<f32>(out + <usize>(base + 32) * stride, (d * <f32>load<i8>(sc + is + 2)) * <f32>q2);
          store<f32>(out + <usize>(base + 64) * stride, (d * <f32>load<i8>(sc + is + 4)) * <f32>q3);
          store<f32>(out + <usize>(base + 96) * stride, (d * <f32>load<i8>(sc + is + 6)) * <f32>q4);
        }
      }
    }
  }
}

/**
 * xr = the activation as a dot product against `type` sees it (reference roundedForType), f32.
 * (The integer heads quantize it instead: inthead.ts.)
 */
export function round_act(type: i32, x: usize, k: i32, xr: usize): void {
  for (let i = 0; i < k; i++) {
    const o = <usize>i << 2;
    const v = load<f32>(x + o);
    store<f32>(xr + o, type == T_F16 ? f16Round(v) : type == T_BF16 ? bf16Round(v) : v);
  }
}

/**
 * The exact path: out[r] (r in r0..r1) = f32(Σ_i w_ri·xr_i in f64, i in order) · oscale.
 * scratch: 4·k f32 (one tile of 4 dequantized rows, interleaved [i][4]).
 * mode 0 stores, 1 adds f32(out + y).
 */
export function mv_exact(
  type: i32, w: usize, k: i32, r0: i32, r1: i32, xr: usize, oscale: f32, out: usize, mode: i32, scratch: usize,
): void {
  const rb = <usize>row_bytes(type, k);
  for (let r = r0; r < r1; r += 4) {
    const nr = min(4, r1 - r);
    for (let j = 0; j < 4; j++) {
      // rows past r1 repeat the last row (their results are discarded)
      const rr = r + min(j, nr - 1);
      dequant_row(type, w + <usize>rr * rb, k, scratch + (<usize>j << 2), 16);
    }
    let a01 = f64x2.splat(0), a23 = f64x2.splat(0);
    for (let i = 0; i < k; i++) {
      const x = f64x2.splat(<f64>load<f32>(xr + (<usize>i << 2)));
      const v = v128.load(scratch + (<usize>i << 4));
      a01 = f64x2.add(a01, f64x2.mul(x, f64x2.promote_low_f32x4(v)));
      a23 = f64x2.add(a23, f64x2.mul(x, f64x2.promote_low_f32x4(v128.shuffle<i32>(v, v, 2, 3, 2, 3))));
    }
    const y0 = <f32>f64x2.extract_lane(a01, 0) * oscale;
    const y1 = <f32>f64x2.extract_lane(a01, 1) * oscale;
    const y2 = <f32>f64x2.extract_lane(a23, 0) * oscale;
    const y3 = <f32>f64x2.extract_lane(a23, 1) * oscale;
    const o = out + (<usize>r << 2);
    if (mode == 1) {
      store<f32>(o, load<f32>(o) + y0);
      if (nr > 1) store<f32>(o, load<f32>(o, 4) + y1, 4);
      if (nr > 2) store<f32>(o, load<f32>(o, 8) + y2, 8);
      if (nr > 3) store<f32>(o, load<f32>(o, 12) + y3, 12);
    } else {
      store<f32>(o, y0);
      if (nr > 1) store<f32>(o, y1, 4);
      if (nr > 2) store<f32>(o, y2, 8);
      if (nr > 3) store<f32>(o, y3, 12);
    }
  }
}

let fallbacks: i32 = 0;

/** Rows this instance recomputed by the exact path since the last call (for profiling). */
export function head_fallbacks(): i32 {
  const n = fallbacks;
  fallbacks = 0;
  return n;
}

/** One row by the exact path (the fallback of the integer heads). scratch: k f32. */
export function exactRow(type: i32, row: usize, k: i32, xr: usize, scratch: usize): f32 {
  fallbacks++;
  dequant_row(type, row, k, scratch, 4);
  let s: f64 = 0;
  for (let i = 0; i < k; i++) s += <f64>load<f32>(scratch + (<usize>i << 2)) * <f64>load<f32>(xr + (<usize>i << 2));
  return <f32>s;
}

/**
 * Per row: A = Σ_i |w_i| and N = sqrt(Σ_i w_i²), both in f64 and rounded up slightly (out: 2 f64
 * per row). With the activation's max|xr| and ||xr||₂ they bound Σ|w_i·xr_i| (min of the two
 * products, Hölder and Cauchy-Schwarz), hence the reference's rounding error.
 */
export function row_abs_sums(type: i32, w: usize, k: i32, r0: i32, r1: i32, out: usize, scratch: usize): void {
  const rb = <usize>row_bytes(type, k);
  for (let r = r0; r < r1; r++) {
    dequant_row(type, w + <usize>r * rb, k, scratch, 4);
    let s1 = f64x2.splat(0), s2 = f64x2.splat(0);
    let i = 0;
    for (; i + 4 <= k; i += 4) {
      const v = f32x4.abs(v128.load(scratch + (<usize>i << 2)));
      const lo = f64x2.promote_low_f32x4(v);
      const hi = f64x2.promote_low_f32x4(v128.shuffle<i32>(v, v, 2, 3, 2, 3));
      s1 = f64x2.add(s1, f64x2.add(lo, hi));
      s2 = f64x2.add(s2, f64x2.add(f64x2.mul(lo, lo), f64x2.mul(hi, hi)));
    }
    let a = f64x2.extract_lane(s1, 0) + f64x2.extract_lane(s1, 1);
    let q = f64x2.extract_lane(s2, 0) + f64x2.extract_lane(s2, 1);
    for (; i < k; i++) {
      const v = <f64>abs(load<f32>(scratch + (<usize>i << 2)));
      a += v;
      q += v * v;
    }
    store<f64>(out + (<usize>r << 4), a * (1.0 + 1.0e-9));
    store<f64>(out + (<usize>r << 4) + 8, sqrt<f64>(q) * (1.0 + 1.0e-9));
  }
}

/** Bytes of the head's activation buffer for width k (F16: xr f32[k]; integer heads: inthead.ts). */
export function head_prep_bytes(k: i32): i32 {
  return 4 * k + 64;
}

/** The bracket test: f32 of [v − δ, v + δ] if both ends agree bit for bit, else NaN-flag via ok=false. */
/**
 * The low (hi false) or high four f16 values of v as f32 lanes holding w·2^-112 exactly (see
 * head_f16); mask = i32x4.splat(0x8fffe000), hoisted by the caller.
 */
@inline export function f16Scaled4(v: v128, hi: bool, mask: v128): v128 {
  return v128.and(i32x4.shl(hi ? i32x4.extend_high_i16x8_s(v) : i32x4.extend_low_i16x8_s(v), 13), mask);
}

@inline export function bracket(v: f64, delta: f64): u64 {
  const lo = <f32>(v - delta);
  const hi = <f32>(v + delta);
  // high word 1 = decided, low word = the f32 bits
  return reinterpret<u32>(lo) == reinterpret<u32>(hi) ? ((<u64>1 << 32) | <u64>reinterpret<u32>(lo)) : 0;
}

@inline function emit(out: usize, r: i32, y: f32, mode: i32): void {
  const o = out + (<usize>r << 2);
  if (mode == 1) y = load<f32>(o) + y;
  store<f32>(o, y);
}

/**
 * F16 head rows r0..r1 with the bracket: products of f16 values are exact in
 * f32, summed in f64 (4 lanes, then the lanes) with a known error; rows whose interval straddles an
 * f32 rounding boundary (rows with inf weights always do) are recomputed in the reference's order.
 * xr: the activation rounded to f16 (round_act). absSums: row_abs_sums of the head (maxXr and
 * ||xr|| are computed here). scratch: 8k bytes (k f32 for the exact path, then xr·2^112).
 *
 * The weights are never rebiased. Each f16 value h, sign-extended to an i32 lane, gives
 * (h << 13) & 0x8fffe000: exponent and mantissa at their f32 places, the sign at bit 31 and its
 * three copies at bits 30..28 cleared. Read as f32 that is w·2^-112 exactly, subnormals included
 * (inf/NaN come out finite and wrong; their rows take the exact path, see below). It meets
 * xr·2^112, which is exact (a power of two; |xr| ≤ 65504 keeps it under 2^128), so each product is
 * still w·xr exactly (at most 22 significant bits, at least 2^-48 in magnitude). That saves a
 * multiply per 4 weights over rebiasing w: 0.89× the time on a 128256×2560 head (Zen 4, Node 22).
 * Two rows at a time, sharing the activation loads, ran 1.26× slower (V8 spilled registers).
 */
export function head_f16(w: usize, k: i32, r0: i32, r1: i32, xr: usize, absSums: usize, oscale: f32, out: usize, mode: i32, scratch: usize): void {
  const rb = <usize>k << 1;
  let maxXr: f64 = 0;
  let q: f64 = 0;
  for (let i = 0; i < k; i++) {
    const v = <f64>load<f32>(xr + (<usize>i << 2));
    maxXr = max(maxXr, abs(v));
    q += v * v;
  }
  const normXr = sqrt<f64>(q) * (1.0 + 1.0e-9);
  const tol = <f64>(k + 16) * 2.220446049250313e-16;
  const k8 = k & ~7;
  const xs = scratch + (<usize>k << 2);
  const up = f32x4.splat(5.192296858534828e33); // 2^112
  for (let i = 0; i < k8; i += 4) v128.store(xs + (<usize>i << 2), f32x4.mul(v128.load(xr + (<usize>i << 2)), up));
  const mask = i32x4.splat(0x8fffe000);
  for (let r = r0; r < r1; r++) {
    const row = w + <usize>r * rb;
    let a0 = f64x2.splat(0), a1 = f64x2.splat(0), a2 = f64x2.splat(0), a3 = f64x2.splat(0);
    for (let i = 0; i < k8; i += 8) {
      v128.load(row + (<usize>i << 1), 512); // software prefetch (a dropped load)
      const v = v128.load(row + (<usize>i << 1));
      const wl = f16Scaled4(v, false, mask);
      const wh = f16Scaled4(v, true, mask);
      const pl = f32x4.mul(wl, v128.load(xs + (<usize>i << 2)));
      const ph = f32x4.mul(wh, v128.load(xs + (<usize>i << 2), 16));
      a0 = f64x2.add(a0, f64x2.promote_low_f32x4(pl));
      a1 = f64x2.add(a1, f64x2.promote_low_f32x4(v128.shuffle<i32>(pl, pl, 2, 3, 2, 3)));
      a2 = f64x2.add(a2, f64x2.promote_low_f32x4(ph));
      a3 = f64x2.add(a3, f64x2.promote_low_f32x4(v128.shuffle<i32>(ph, ph, 2, 3, 2, 3)));
    }
    const s4 = f64x2.add(f64x2.add(a0, a1), f64x2.add(a2, a3));
    let v = f64x2.extract_lane(s4, 0) + f64x2.extract_lane(s4, 1);
    for (let i = k8; i < k; i++) {
      v += <f64>f16ToF32(load<u16>(row + (<usize>i << 1))) * <f64>load<f32>(xr + (<usize>i << 2));
    }
    let y: f32;
    // A row with an inf weight has infinite |w| sums (row_abs_sums): its interval is unbounded, so
    // it takes the exact path (the fast sum read inf as a finite value); with a NaN weight the
    // sums, the bound and the result are NaN, as the reference's is.
    const res = bracket(v, tol * min(load<f64>(absSums + (<usize>r << 4)) * maxXr, load<f64>(absSums + (<usize>r << 4) + 8) * normXr));
    y = res != 0 ? reinterpret<f32>(<u32>res) : exactRow(T_F16, row, k, xr, scratch);
    emit(out, r, y * oscale, mode);
  }
}
