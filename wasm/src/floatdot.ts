/**
 * Float-weight matmuls (F32/F16/BF16 projections and the F32/F16/BF16/Q8_0/Q6_K LM head), the
 * embedding row dequantization, and the activation rounding each type's dot product sees.
 *
 * The reference computes these dots as Σ_i w_i·xr_i in f64, one term at a time in i order, with
 * w_i and xr_i f32 values (their products are exact in f64), and rounds once to f32.
 *
 * - Exact path (`mv_exact`): the same sum in the same order, vectorised across rows (f64x2 lanes
 *   hold two rows). Used for float projections and float heads, and as the fallback of:
 * - Integer heads (Q8_0, Q6_K): the exact value of the sum is an integer combination of int8 dot
 *   products (below). We evaluate it in f64 with a known error bound, add the reference's own
 *   worst-case rounding error (γ_K·Σ|w_i·xr_i| ≤ K·2^-53·A_r·max|xr|, A_r = Σ_i|w_i| of the row,
 *   computed at load) and round both ends of the interval to f32: when they agree, that is the
 *   reference's result; when not (about one row in 10^3), the row is recomputed by the exact path.
 *
 * Q8_0 head: xr_i = dh_b·q_i exactly (dh_b = f16(amax/127) of 32-block b), w_i = d_w,b·qw_i, so
 *   Σ w_i·xr_i = Σ_b (d_w,b·dh_b)·I_b with I_b = Σ qw_i·q_i (exact int).
 * Q6_K head: xr_i = f32(d_b·q_i) (Q8_K block b, d_b = f32(1/iscale)). Writing d_b = M_b·U_b
 *   (M_b the signed 24-bit integer significand, U_b a power of two), f32(M_b·q_i) = M_b·q_i + e_i with a
 *   small integer e_i (|e_i| <= 64), so xr_i = U_b·(M_b·q_i + e_i) and
 *   Σ w_i·xr_i = Σ_b d_w,b·U_b·(M_b·I1_b + I2_b), I1_b = Σ sq_i·q_i, I2_b = Σ sq_i·e_i,
 *   sq_i = sc_j·(u_i − 32) the integer weight. M_b·I1_b + I2_b < 2^52 is exact in f64.
 */
import { bf16Round, dot16, f16Round, f16ToF32 } from './common';

export const T_F32: i32 = 0;
export const T_F16: i32 = 1;
export const T_Q8_0: i32 = 8;
export const T_Q6_K: i32 = 14;
export const T_BF16: i32 = 30;

/** Bytes per row of a float/quantized type (0 if unsupported). */
export function row_bytes(type: i32, k: i32): i32 {
  if (type == T_F32) return k * 4;
  if (type == T_F16 || type == T_BF16) return k * 2;
  if (type == T_Q8_0) return (k / 32) * 34;
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
 * For Q8_0 and Q6_K use head_prep_* (they also produce the integer form).
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
function exactRow(type: i32, row: usize, k: i32, xr: usize, scratch: usize): f32 {
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

// ---------------------------------------------------------------------------------------------
// Activation preparation for the integer heads. Layout of the prep buffer P (offsets in bytes,
// K = k): xr f32[K] at 0 | q i8[K] at 4K | e i8[K] at 5K | q16 i16[K] at 6K |
// blocks f64 at 8K: Q8_0 -> dh_b (K/32); Q6_K -> M_b, U_b pairs (K/256·2) |
// sums i32 at 8K + 8·(K/16): Q6_K S16q_j, S16e_j per 16 elements (2·K/16)
// header (f64) at the end: [maxXr, safe, ||xr||₂]
// ---------------------------------------------------------------------------------------------

@inline function prepHdr(P: usize, k: i32): usize {
  return P + <usize>(8 * k + 8 * (k / 16) + 8 * (k / 16) + 16);
}

/** Bytes the prep buffer needs for width k. */
export function head_prep_bytes(k: i32): i32 {
  return 8 * k + 16 * (k / 16) + 16 + 32;
}

/** Q8_0 activation of the reference (blockQuantized, block 32). */
export function head_prep_q8_0(x: usize, k: i32, P: usize): void {
  const K = <usize>k;
  let maxXr: f64 = 0;
  for (let b = 0; b < k; b += 32) {
    let amax: f64 = 0;
    for (let j = 0; j < 32; j++) amax = max(amax, <f64>abs(load<f32>(x + (<usize>(b + j) << 2))));
    const d = <f32>(amax / 127.0);
    const id: f32 = d != 0 ? <f32>(1.0 / <f64>d) : 0;
    const dh = f16Round(d);
    store<f64>(P + 8 * K + (<usize>(b >> 5) << 3), <f64>dh);
    for (let j = 0; j < 32; j++) {
      const i = <usize>(b + j);
      const v = load<f32>(x + (i << 2)) * id;
      const a = floor<f64>(<f64>abs(v) + 0.5); // Math.round(|v|): half away from zero
      const q = v < 0 ? -<i32>a : <i32>a;
      store<i8>(P + 4 * K + i, <i8>q);
      store<i16>(P + 6 * K + (i << 1), <i16>q);
      const xv = <f32>(<f64>dh * <f64>q);
      store<f32>(P + (i << 2), xv);
      maxXr = max(maxXr, <f64>abs(xv));
    }
  }
  const hdr = prepHdr(P, k);
  store<f64>(hdr, maxXr);
  store<f64>(hdr + 8, 1);
  store<f64>(hdr + 16, norm2(P, k));
}

/** ||xr||₂ of the f32 values at P[0..k), rounded up slightly. */
function norm2(P: usize, k: i32): f64 {
  let q: f64 = 0;
  for (let i = 0; i < k; i++) {
    const v = <f64>load<f32>(P + (<usize>i << 2));
    q += v * v;
  }
  return sqrt<f64>(q) * (1.0 + 1.0e-9);
}

/** Q8_K activation of the reference (blockQuantized, block 256), plus the integer form. */
export function head_prep_q8k(x: usize, k: i32, P: usize): void {
  const K = <usize>k;
  let maxXr: f64 = 0;
  let safe: f64 = 1;
  for (let b = 0; b < k; b += 256) {
    let amax: f32 = 0;
    let mx: f32 = 0;
    for (let j = 0; j < 256; j++) {
      const v = load<f32>(x + (<usize>(b + j) << 2));
      const a = abs(v);
      if (a > amax) {
        amax = a;
        mx = v;
      }
    }
    const bi = <usize>(b >> 8);
    if (amax == 0) {
      for (let j = 0; j < 256; j++) {
        const i = <usize>(b + j);
        store<f32>(P + (i << 2), 0);
        store<i8>(P + 4 * K + i, 0);
        store<i8>(P + 5 * K + i, 0);
      }
      store<f64>(P + 8 * K + (bi << 4), 0);
      store<f64>(P + 8 * K + (bi << 4) + 8, 0);
    } else {
      const iscale = <f32>(-127.0 / <f64>mx);
      const d = <f32>(1.0 / <f64>iscale);
      // d = M·U with M the 24-bit significand; needs a normal d well away from underflow
      const bits = reinterpret<u32>(d);
      const ex = <i32>((bits >> 23) & 0xff);
      if (ex < 30 || ex == 255) safe = 0;
      const Mabs = <f64>(<i32>((bits & 0x7fffff) | 0x800000));
      const M = d < 0 ? -Mabs : Mabs; // d = M·U, signed
      const U = reinterpret<f64>(<u64>(ex - 23 - 127 + 1023) << 52);
      store<f64>(P + 8 * K + (bi << 4), M);
      store<f64>(P + 8 * K + (bi << 4) + 8, U);
      for (let j = 0; j < 256; j++) {
        const i = <usize>(b + j);
        const f = nearest<f32>(iscale * load<f32>(x + (i << 2)));
        const qq = min<f32>(127, f);
        const q = <i32>qq;
        const xv = <f32>(<f64>d * <f64>q);
        store<f32>(P + (i << 2), xv);
        store<i8>(P + 4 * K + i, <i8>q);
        const r = <f64>xv / U; // exact: U is a power of two
        const e = r - M * <f64>q;
        if (!(abs(e) <= 127)) safe = 0;
        store<i8>(P + 5 * K + i, <i8>(<i32>e));
        maxXr = max(maxXr, <f64>abs(xv));
      }
    }
  }
  // sums per 16 elements (the −32 offset of Q6_K codes), i16: S16q[K/16] then S16e[K/16]
  const S = P + 8 * K + 8 * (K / 16);
  for (let j: usize = 0; j < K / 16; j++) {
    let sq = 0, se = 0;
    for (let t: usize = 0; t < 16; t++) {
      sq += <i32>load<i8>(P + 4 * K + 16 * j + t);
      se += <i32>load<i8>(P + 5 * K + 16 * j + t);
    }
    store<i16>(S + (j << 1), <i16>sq);
    store<i16>(S + (K / 8) + (j << 1), <i16>se);
  }
  const hdr = prepHdr(P, k);
  store<f64>(hdr, maxXr);
  store<f64>(hdr + 8, safe);
  store<f64>(hdr + 16, norm2(P, k));
}

/** The bracket test: f32 of [v − δ, v + δ] if both ends agree bit for bit, else NaN-flag via ok=false. */
@inline function bracket(v: f64, delta: f64): u64 {
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

/** Four f16 values (low 64 bits of v) as f32 lanes; `bad` gets all-ones lanes for inf/NaN. */
@inline function f16x4ToF32(v: v128): v128 {
  const h = i32x4.extend_low_i16x8_u(v);
  const em = v128.and(h, i32x4.splat(0x7fff));
  // exponent and mantissa moved to f32 position and rebiased by a multiply (exact, subnormals too)
  const f = f32x4.mul(i32x4.shl(em, 13), f32x4.splat(5.192296858534828e33)); // 2^112
  return v128.or(f, i32x4.shl(v128.and(h, i32x4.splat(0x8000)), 16));
}

/**
 * F16 head rows r0..r1 with the bracket of the integer heads: products of f16 values are exact in
 * f32, summed in f64 (4 lanes, then the lanes) with a known error; rows whose interval straddles an
 * f32 rounding boundary, or that hold inf/NaN weights, are recomputed in the reference's order.
 * xr: the activation rounded to f16 (round_act). absSums/normXr as head_q8_0 (prep header not used:
 * maxXr and ||xr|| are computed here).
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
  for (let r = r0; r < r1; r++) {
    const row = w + <usize>r * rb;
    let a0 = f64x2.splat(0), a1 = f64x2.splat(0), a2 = f64x2.splat(0), a3 = f64x2.splat(0);
    let bad = i32x4.splat(0);
    for (let i = 0; i < k8; i += 8) {
      v128.load(row + (<usize>i << 1), 512); // software prefetch (a dropped load)
      const v = v128.load(row + (<usize>i << 1));
      bad = v128.or(bad, v128.or(i16x8.ge_u(v128.and(v, i16x8.splat(0x7c00)), i16x8.splat(0x7c00)), i32x4.splat(0)));
      const wl = f16x4ToF32(v);
      const wh = f16x4ToF32(v128.shuffle<i32>(v, v, 2, 3, 2, 3));
      const pl = f32x4.mul(wl, v128.load(xr + (<usize>i << 2)));
      const ph = f32x4.mul(wh, v128.load(xr + (<usize>i << 2), 16));
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
    const res = v128.any_true(bad) ? 0 : bracket(v, tol * min(load<f64>(absSums + (<usize>r << 4)) * maxXr, load<f64>(absSums + (<usize>r << 4) + 8) * normXr));
    y = res != 0 ? reinterpret<f32>(<u32>res) : exactRow(T_F16, row, k, xr, scratch);
    emit(out, r, y * oscale, mode);
  }
}

/** Q8_0 head rows r0..r1: out[r] = f32(Σ w·xr) (× oscale). absSums: f64 per row. */
export function head_q8_0(w: usize, k: i32, r0: i32, r1: i32, P: usize, absSums: usize, oscale: f32, out: usize, mode: i32, scratch: usize): void {
  const K = <usize>k;
  const rb = <usize>((k / 32) * 34);
  const hdr = prepHdr(P, k);
  const maxXr = load<f64>(hdr);
  const normXr = load<f64>(hdr + 16);
  const tol = <f64>(k + 16) * 2.220446049250313e-16; // (K + 16)·2^-52
  const q16 = P + 6 * K;
  for (let r = r0; r < r1; r++) {
    const row = w + <usize>r * rb;
    let v: f64 = 0;
    for (let b = 0; b < k / 32; b++) {
      const p = row + <usize>(b * 34);
      v128.load(p, 512); // software prefetch (a dropped load), see ternary.ts
      const a = q16 + (<usize>(b * 32) << 1);
      const w0 = v128.load(p + 2);
      const w1 = v128.load(p + 18);
      let acc = i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(w0), v128.load(a));
      acc = i32x4.add(acc, i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(w0), v128.load(a, 16)));
      acc = i32x4.add(acc, i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(w1), v128.load(a, 32)));
      acc = i32x4.add(acc, i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(w1), v128.load(a, 48)));
      const I = i32x4.extract_lane(acc, 0) + i32x4.extract_lane(acc, 1) + i32x4.extract_lane(acc, 2) + i32x4.extract_lane(acc, 3);
      v += (<f64>f16ToF32(load<u16>(p)) * load<f64>(P + 8 * K + (<usize>b << 3))) * <f64>I;
    }
    const delta = tol * min(load<f64>(absSums + (<usize>r << 4)) * maxXr, load<f64>(absSums + (<usize>r << 4) + 8) * normXr);
    const res = bracket(v, delta);
    const y = res != 0 ? reinterpret<f32>(<u32>res) : exactRow(T_Q8_0, row, k, P, scratch);
    emit(out, r, y * oscale, mode);
  }
}

// i16 lane j of a vector broadcast to all lanes (swizzle patterns)
@inline function bcast16(v: v128, j: i32): v128 {
  const lo = <u8>(2 * j);
  const hi = <u8>(2 * j + 1);
  return i8x16.swizzle(v, i8x16(lo, hi, lo, hi, lo, hi, lo, hi, lo, hi, lo, hi, lo, hi, lo, hi));
}

// One 16-element sub-block: i1 += sc·Σu·q, i2 += sc·Σu·e (returned as the pair via globals would
// spill; the caller passes and receives each accumulator separately).
@inline function q6Sub(acc: v128, a: usize, u: v128, sc: v128): v128 {
  return i32x4.add(acc, i32x4.dot_i16x8_s(dot16(v128.load(a), u), sc));
}

/** Q6_K head rows r0..r1 (prep by head_prep_q8k; falls back to the exact path if !safe). */
export function head_q6_k(w: usize, k: i32, r0: i32, r1: i32, P: usize, absSums: usize, oscale: f32, out: usize, mode: i32, scratch: usize): void {
  const K = <usize>k;
  const nb = k / 256;
  const rb = <usize>(nb * 210);
  const hdr = prepHdr(P, k);
  const maxXr = load<f64>(hdr);
  const normXr = load<f64>(hdr + 16);
  const safe = load<f64>(hdr + 8) != 0;
  const tol = <f64>(k + 16) * 2.220446049250313e-16;
  const S = P + 8 * K + 8 * (K / 16);
  const m15 = i8x16.splat(15);
  const m48 = i8x16.splat(0x30);
  const scr = scratch + (K << 2); // 16 scale splats after the fallback row
  for (let r = r0; r < r1; r++) {
    const row = w + <usize>r * rb;
    if (!safe) {
      emit(out, r, exactRow(T_Q6_K, row, k, P, scratch) * oscale, mode);
      continue;
    }
    let v: f64 = 0;
    for (let b = 0; b < nb; b++) {
      const p = row + <usize>(b * 210);
      v128.load(p, 512); // software prefetch (a dropped load), see ternary.ts
      v128.load(p, 576);
      v128.load(p, 640);
      v128.load(p, 704);
      const aq = P + 4 * K + (<usize>b << 8);
      const ae = P + 5 * K + (<usize>b << 8);
      const scv = v128.load(p + 192);
      const scLo = i16x8.extend_low_i8x16_s(scv);
      const scHi = i16x8.extend_high_i8x16_s(scv);
      // the 16 sub-block scales as i16 splats, once per block
      for (let j = 0; j < 16; j++) v128.store(scr + (<usize>j << 4), i16x8.splat(<i16>load<i8>(p + 192 + <usize>j)));
      let i1 = i32x4.splat(0);
      let i2 = i32x4.splat(0);
      for (let g = 0; g < 4; g++) {
        const h = g >> 1;
        const c = g & 1;
        const ph = p + <usize>(64 * h + 16 * c);
        const L0 = v128.load(ph);
        const L1 = v128.load(ph, 32);
        const H = v128.load(p + 128 + <usize>(32 * h + 16 * c));
        const o = <usize>(128 * h + 16 * c);
        const sp = scr + (<usize>(8 * h + c) << 4);
        const a1 = aq + o;
        const a2 = ae + o;
        let u = v128.or(v128.and(L0, m15), v128.and(i16x8.shl(H, 4), m48));
        let sc = v128.load(sp);
        i1 = i32x4.add(i1, i32x4.dot_i16x8_s(dot16(v128.load(a1), u), sc));
        i2 = i32x4.add(i2, i32x4.dot_i16x8_s(dot16(v128.load(a2), u), sc));
        u = v128.or(v128.and(L1, m15), v128.and(i16x8.shl(H, 2), m48));
        sc = v128.load(sp, 32);
        i1 = i32x4.add(i1, i32x4.dot_i16x8_s(dot16(v128.load(a1, 32), u), sc));
        i2 = i32x4.add(i2, i32x4.dot_i16x8_s(dot16(v128.load(a2, 32), u), sc));
        u = v128.or(v128.and(i16x8.shr_u(L0, 4), m15), v128.and(H, m48));
        sc = v128.load(sp, 64);
        i1 = i32x4.add(i1, i32x4.dot_i16x8_s(dot16(v128.load(a1, 64), u), sc));
        i2 = i32x4.add(i2, i32x4.dot_i16x8_s(dot16(v128.load(a2, 64), u), sc));
        u = v128.or(v128.and(i16x8.shr_u(L1, 4), m15), v128.and(i16x8.shr_u(H, 2), m48));
        sc = v128.load(sp, 96);
        i1 = i32x4.add(i1, i32x4.dot_i16x8_s(dot16(v128.load(a1, 96), u), sc));
        i2 = i32x4.add(i2, i32x4.dot_i16x8_s(dot16(v128.load(a2, 96), u), sc));
      }
      // the −32 offset of the codes: Σ_j sc_j·32·S16_j
      const sq = S + (<usize>b << 5);
      const se = S + (K >> 3) + (<usize>b << 5);
      const cq = i32x4.add(i32x4.dot_i16x8_s(scLo, v128.load(sq)), i32x4.dot_i16x8_s(scHi, v128.load(sq, 16)));
      const ce = i32x4.add(i32x4.dot_i16x8_s(scLo, v128.load(se)), i32x4.dot_i16x8_s(scHi, v128.load(se, 16)));
      i1 = i32x4.sub(i1, i32x4.shl(cq, 5));
      i2 = i32x4.sub(i2, i32x4.shl(ce, 5));
      const I1 = i32x4.extract_lane(i1, 0) + i32x4.extract_lane(i1, 1) + i32x4.extract_lane(i1, 2) + i32x4.extract_lane(i1, 3);
      const I2 = i32x4.extract_lane(i2, 0) + i32x4.extract_lane(i2, 1) + i32x4.extract_lane(i2, 2) + i32x4.extract_lane(i2, 3);
      const M = load<f64>(P + 8 * K + (<usize>b << 4));
      const U = load<f64>(P + 8 * K + (<usize>b << 4) + 8);
      v += (<f64>f16ToF32(load<u16>(p + 208)) * U) * (M * <f64>I1 + <f64>I2);
    }
    const delta = tol * min(load<f64>(absSums + (<usize>r << 4)) * maxXr, load<f64>(absSums + (<usize>r << 4) + 8) * normXr);
    const res = bracket(v, delta);
    const y = res != 0 ? reinterpret<f32>(<u32>res) : exactRow(T_Q6_K, row, k, P, scratch);
    emit(out, r, y * oscale, mode);
  }
}
