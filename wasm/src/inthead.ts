/**
 * The integer LM heads: Q8_0 and Q4_0 weights against Q8_0 activations, Q6_K against Q8_K, with
 * the reference's numerics (src/model/integer-head.ts): exact integer block dots I_b, then per row
 * s = f32(s + f32(f32(d_w,b · d_x,b) · f32(I_b))) in block order. Each f32 lane below holds one
 * row and performs exactly that sequence, so results are bit-identical to the reference.
 *
 * Activation buffer P (bytes, K = k, a multiple of 32):
 *   q   i8[K]        at 0          the quantized hidden state
 *   d   f32[K/32]    at K          Q8_0: one f16-valued d per 32-block; Q8_K: one f32 d per 256-block
 *   sum             at K + K/8     Q8_0: i32 Σq per 32-block (Q4_0's −8 offset);
 *                                  Q8_K: i16 Σq per 16 elements (Q6_K's −32 offset)
 */
import { dot16, f16Round, f16ToF32, hsum32, hsum4x32 } from './common';

@inline function emit(out: usize, r: i32, y: f32, mode: i32): void {
  const o = out + (<usize>r << 2);
  if (mode == 1) y = load<f32>(o) + y;
  store<f32>(o, y);
}

/** ggml's Q8_0 activation quantization (reference quantizeQ8_0Acts). */
export function head_prep_q8_0(x: usize, k: i32, P: usize): void {
  const K = <usize>k;
  for (let b = 0; b < k; b += 32) {
    let amax: f64 = 0;
    for (let j = 0; j < 32; j++) amax = max(amax, <f64>abs(load<f32>(x + (<usize>(b + j) << 2))));
    const d = <f32>(amax / 127.0);
    const id: f32 = d != 0 ? <f32>(1.0 / <f64>d) : 0;
    let sum = 0;
    for (let j = 0; j < 32; j++) {
      const i = <usize>(b + j);
      const v = load<f32>(x + (i << 2)) * id;
      const a = <i32>floor<f64>(<f64>abs(v) + 0.5); // Math.round(|v|): half away from zero
      const q = v < 0 ? -a : a;
      store<i8>(P + i, <i8>q);
      sum += q;
    }
    store<f32>(P + K + (<usize>(b >> 5) << 2), f16Round(d));
    store<i32>(P + K + (K >> 3) + (<usize>(b >> 5) << 2), sum);
  }
}

/** ggml's Q8_K activation quantization (reference quantizeActivationsQ8K) and the Σq per 16. */
export function head_prep_q8k(x: usize, k: i32, P: usize): void {
  const K = <usize>k;
  for (let b = 0; b < k; b += 256) {
    let amax: f32 = 0;
    let mx: f32 = 0;
    for (let j = 0; j < 256; j++) {
      const v = load<f32>(x + (<usize>(b + j) << 2));
      if (abs(v) > amax) {
        amax = abs(v);
        mx = v;
      }
    }
    const bi = <usize>(b >> 8);
    if (amax == 0) {
      memory.fill(P + <usize>b, 0, 256);
      store<f32>(P + K + (bi << 2), 0);
    } else {
      const iscale = <f32>(-127.0 / <f64>mx);
      for (let j = 0; j < 256; j++) {
        const i = <usize>(b + j);
        store<i8>(P + i, <i8>(<i32>min<f32>(127, nearest<f32>(iscale * load<f32>(x + (i << 2))))));
      }
      store<f32>(P + K + (bi << 2), <f32>(1.0 / <f64>iscale));
    }
  }
  const S = P + K + (K >> 3);
  for (let j: usize = 0; j < K / 16; j++) {
    let s = 0;
    for (let t: usize = 0; t < 16; t++) s += <i32>load<i8>(P + 16 * j + t);
    store<i16>(S + (j << 1), <i16>s);
  }
}

/** Q8_0 block dot of one row's block at p (qs at p + 2) with activations extended to i16. */
@inline function q8Dot(p: usize, x0: v128, x1: v128, x2: v128, x3: v128): v128 {
  const w0 = v128.load(p + 2);
  const w1 = v128.load(p + 18);
  let acc = i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(w0), x0);
  acc = i32x4.add(acc, i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(w0), x1));
  acc = i32x4.add(acc, i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(w1), x2));
  return i32x4.add(acc, i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(w1), x3));
}

/** Σ u·q of one Q4_0 block at p (u the unsigned nibbles, 0..15) as i32x4. */
@inline function q4Dot(p: usize, xa: v128, xb: v128): v128 {
  const v = v128.load(p + 2);
  const lo = v128.and(v, i8x16.splat(15));
  const hi = i8x16.shr_u(v, 4);
  return i32x4.extadd_pairwise_i16x8_s(i16x8.add(dot16(xa, lo), dot16(xb, hi)));
}

/**
 * The heads with 32-element blocks against Q8_0 activations: Q8_0 (34-byte blocks) and Q4_0
 * (18-byte blocks). `q4` is a constant at both call sites, so each export compiles to its own loop.
 * One row at a time; mode 0 stores, 1 adds. A version with four rows at once (one per f32 lane,
 * sharing the activation loads) took 1.3× (Q8_0) and 1.14× (Q4_0) the time on a 128256×2560 head
 * (relaxed build, V8 in Node 22): V8 spilled its registers.
 */
@inline function head32(q4: bool, w: usize, k: i32, r0: i32, r1: i32, P: usize, oscale: f32, out: usize, mode: i32): void {
  const K = <usize>k;
  const nb = k >> 5;
  const bb = q4 ? 18 : 34;
  const rb = <usize>(nb * bb);
  const sums = P + K + (K >> 3);
  for (let r = r0; r < r1; r++) {
    const row = w + <usize>r * rb;
    let s: f32 = 0;
    for (let b = 0; b < nb; b++) {
      const a = P + (<usize>b << 5);
      const xa = v128.load(a);
      const xb = v128.load(a, 16);
      const p = row + <usize>(b * bb);
      const I = q4
        ? hsum32(q4Dot(p, xa, xb)) - (load<i32>(sums + (<usize>b << 2)) << 3)
        : hsum32(q8Dot(p, i16x8.extend_low_i8x16_s(xa), i16x8.extend_high_i8x16_s(xa), i16x8.extend_low_i8x16_s(xb), i16x8.extend_high_i8x16_s(xb)));
      s += (f16ToF32(load<u16>(p)) * load<f32>(P + K + (<usize>b << 2))) * <f32>I;
    }
    emit(out, r, s * oscale, mode);
  }
}

/** Token t's f32 at byte offset o of its activation buffer (P + t·ps), for t = 0..3, as an f32x4. */
@inline function lanes4f(P: usize, ps: usize, o: usize): v128 {
  let v = f32x4.splat(load<f32>(P + o));
  v = f32x4.replace_lane(v, 1, load<f32>(P + ps + o));
  v = f32x4.replace_lane(v, 2, load<f32>(P + 2 * ps + o));
  return f32x4.replace_lane(v, 3, load<f32>(P + 3 * ps + o));
}

/** The same for an i32. */
@inline function lanes4i(P: usize, ps: usize, o: usize): v128 {
  let v = i32x4.splat(load<i32>(P + o));
  v = i32x4.replace_lane(v, 1, load<i32>(P + ps + o));
  v = i32x4.replace_lane(v, 2, load<i32>(P + 2 * ps + o));
  return i32x4.replace_lane(v, 3, load<i32>(P + 3 * ps + o));
}

/**
 * head32 for four tokens at once (activations at P + t·ps, rows stored at out + t·os): each block's
 * weights are loaded and widened once for the four, the four block dots I_b go to the lanes of one
 * vector, and the f32 steps s = f32(s + f32(f32(d_w·d_x)·f32(I_b))) run in those lanes: each lane
 * performs its token's sequence of head32, so each token gets head32's bits.
 */
@inline function head32T4(q4: bool, w: usize, k: i32, r0: i32, r1: i32, P: usize, ps: usize, out: usize, os: usize): void {
  const K = <usize>k;
  const nb = k >> 5;
  const bb = q4 ? 18 : 34;
  const rb = <usize>(nb * bb);
  const PB = P + ps;
  const PC = P + 2 * ps;
  const PD = P + 3 * ps;
  for (let r = r0; r < r1; r++) {
    const row = w + <usize>r * rb;
    let s = f32x4.splat(0);
    for (let b = 0; b < nb; b++) {
      const a = <usize>b << 5;
      const p = row + <usize>(b * bb);
      let I: v128;
      if (q4) {
        const v = v128.load(p + 2);
        const lo = v128.and(v, i8x16.splat(15));
        const hi = i8x16.shr_u(v, 4);
        const dA = i32x4.extadd_pairwise_i16x8_s(i16x8.add(dot16(v128.load(P + a), lo), dot16(v128.load(P + a, 16), hi)));
        const dB = i32x4.extadd_pairwise_i16x8_s(i16x8.add(dot16(v128.load(PB + a), lo), dot16(v128.load(PB + a, 16), hi)));
        const dC = i32x4.extadd_pairwise_i16x8_s(i16x8.add(dot16(v128.load(PC + a), lo), dot16(v128.load(PC + a, 16), hi)));
        const dD = i32x4.extadd_pairwise_i16x8_s(i16x8.add(dot16(v128.load(PD + a), lo), dot16(v128.load(PD + a, 16), hi)));
        // Σ(u − 8)·q = Σu·q − 8·Σq
        I = i32x4.sub(hsum4x32(dA, dB, dC, dD), i32x4.shl(lanes4i(P, ps, K + (K >> 3) + (<usize>b << 2)), 3));
      } else {
        const w0 = v128.load(p + 2);
        const w1 = v128.load(p + 18);
        const e0 = i16x8.extend_low_i8x16_s(w0);
        const e1 = i16x8.extend_high_i8x16_s(w0);
        const e2 = i16x8.extend_low_i8x16_s(w1);
        const e3 = i16x8.extend_high_i8x16_s(w1);
        I = hsum4x32(q8DotT(e0, e1, e2, e3, P + a), q8DotT(e0, e1, e2, e3, PB + a), q8DotT(e0, e1, e2, e3, PC + a), q8DotT(e0, e1, e2, e3, PD + a));
      }
      const dw = f32x4.splat(f16ToF32(load<u16>(p)));
      s = f32x4.add(s, f32x4.mul(f32x4.mul(dw, lanes4f(P, ps, K + (<usize>b << 2))), f32x4.convert_i32x4_s(I)));
    }
    const o = out + (<usize>r << 2);
    store<f32>(o, f32x4.extract_lane(s, 0));
    store<f32>(o + os, f32x4.extract_lane(s, 1));
    store<f32>(o + 2 * os, f32x4.extract_lane(s, 2));
    store<f32>(o + 3 * os, f32x4.extract_lane(s, 3));
  }
}

/** One token's Q8_0 block dot against weights already widened to i16 (e0..e3), activations at x. */
@inline function q8DotT(e0: v128, e1: v128, e2: v128, e3: v128, x: usize): v128 {
  const xa = v128.load(x);
  const xb = v128.load(x, 16);
  let acc = i32x4.dot_i16x8_s(e0, i16x8.extend_low_i8x16_s(xa));
  acc = i32x4.add(acc, i32x4.dot_i16x8_s(e1, i16x8.extend_high_i8x16_s(xa)));
  acc = i32x4.add(acc, i32x4.dot_i16x8_s(e2, i16x8.extend_low_i8x16_s(xb)));
  return i32x4.add(acc, i32x4.dot_i16x8_s(e3, i16x8.extend_high_i8x16_s(xb)));
}

/** Q8_0 head rows r0..r1 for four tokens at once (see head32T4). */
export function head_q8_0_4(w: usize, k: i32, r0: i32, r1: i32, P: usize, ps: usize, out: usize, os: usize): void {
  head32T4(false, w, k, r0, r1, P, ps, out, os);
}

/** Q4_0 head rows r0..r1 for four tokens at once (see head32T4). */
export function head_q4_0_4(w: usize, k: i32, r0: i32, r1: i32, P: usize, ps: usize, out: usize, os: usize): void {
  head32T4(true, w, k, r0, r1, P, ps, out, os);
}

/** Q8_0 head rows r0..r1 (activations by head_prep_q8_0): out[r] = row sum (× oscale). */
export function head_q8_0(w: usize, k: i32, r0: i32, r1: i32, P: usize, oscale: f32, out: usize, mode: i32): void {
  head32(false, w, k, r0, r1, P, oscale, out, mode);
}

/** Q4_0 head rows r0..r1 (activations by head_prep_q8_0). */
export function head_q4_0(w: usize, k: i32, r0: i32, r1: i32, P: usize, oscale: f32, out: usize, mode: i32): void {
  head32(true, w, k, r0, r1, P, oscale, out, mode);
}

/**
 * The scale of Q6_K sub-block j (i8 at sc) as an i16x8 splat: a byte splat load, sign-extended.
 * Two instructions, where a scalar load, splat and store to scratch per sub-block took ~4 and
 * a reload.
 */
@inline function scale16(sc: usize): v128 {
  return i16x8.extend_low_i8x16_s(v128.load8_splat(sc));
}

/**
 * One quarter (h, c) of a Q6_K block at p: 64 codes in four sub-blocks j = 8h + c + {0, 2, 4, 6},
 * elements 128h + 16c + {0, 32, 64, 96} + 0..15, against the activations a0..a3 of those
 * elements. Returns acc + Σ_j sc_j·Σ u·q (u ∈ 0..63, the "i7" operand of dot16; lanes stay
 * within i16: two products of at most 127·63 each).
 */
@inline function q6Quarter(acc: v128, p: usize, h: usize, c: usize, a0: v128, a1: v128, a2: v128, a3: v128): v128 {
  const m15 = i8x16.splat(15);
  const m48 = i8x16.splat(0x30);
  const ph = p + 64 * h + 16 * c;
  const L0 = v128.load(ph);
  const L1 = v128.load(ph, 32);
  const H = v128.load(p + 128 + 32 * h + 16 * c);
  const sc = p + 192 + 8 * h + c;
  let u = v128.or(v128.and(L0, m15), v128.and(i16x8.shl(H, 4), m48));
  acc = i32x4.add(acc, i32x4.dot_i16x8_s(dot16(a0, u), scale16(sc)));
  u = v128.or(v128.and(L1, m15), v128.and(i16x8.shl(H, 2), m48));
  acc = i32x4.add(acc, i32x4.dot_i16x8_s(dot16(a1, u), scale16(sc + 2)));
  u = v128.or(v128.and(i16x8.shr_u(L0, 4), m15), v128.and(H, m48));
  acc = i32x4.add(acc, i32x4.dot_i16x8_s(dot16(a2, u), scale16(sc + 4)));
  u = v128.or(v128.and(i16x8.shr_u(L1, 4), m15), v128.and(i16x8.shr_u(H, 2), m48));
  return i32x4.add(acc, i32x4.dot_i16x8_s(dot16(a3, u), scale16(sc + 6)));
}

/**
 * Q6_K head rows r0..r1 (activations by head_prep_q8k), one row at a time. Per 16-element
 * sub-block j the codes u ∈ 0..63 give Σ u·q, scaled by sc_j; the −32 offset is subtracted once
 * per block as 32·Σ_j sc_j·Σq_j.
 *
 * Measured (2560 wide, 16000 rows, V8 in Node 22): the four quarters written out with constant
 * offsets run 1.46× faster than a loop over them (V8 neither unrolls nor keeps the loop's
 * accumulator in a register). Versions that share each activation load between 2 or 4 rows
 * ran 2-4× slower: V8 spilled their registers (16 xmm).
 */
export function head_q6_k(w: usize, k: i32, r0: i32, r1: i32, P: usize, oscale: f32, out: usize, mode: i32): void {
  const K = <usize>k;
  const nb = k >> 8;
  const rb = <usize>(nb * 210);
  const S = P + K + (K >> 3);
  for (let r = r0; r < r1; r++) {
    const row = w + <usize>r * rb;
    let s: f32 = 0;
    for (let b = 0; b < nb; b++) {
      const p = row + <usize>(b * 210);
      v128.load(p, 512); // software prefetch (dropped loads), see ternary.ts
      v128.load(p, 640);
      const aq = P + (<usize>b << 8);
      let acc = q6Quarter(i32x4.splat(0), p, 0, 0, v128.load(aq), v128.load(aq, 32), v128.load(aq, 64), v128.load(aq, 96));
      acc = q6Quarter(acc, p, 0, 1, v128.load(aq, 16), v128.load(aq, 48), v128.load(aq, 80), v128.load(aq, 112));
      acc = q6Quarter(acc, p, 1, 0, v128.load(aq, 128), v128.load(aq, 160), v128.load(aq, 192), v128.load(aq, 224));
      acc = q6Quarter(acc, p, 1, 1, v128.load(aq, 144), v128.load(aq, 176), v128.load(aq, 208), v128.load(aq, 240));
      // the −32 offset of the codes: Σ_j sc_j·32·Σq_j
      const scv = v128.load(p + 192);
      const sq = S + (<usize>b << 5);
      const cq = i32x4.add(
        i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(scv), v128.load(sq)),
        i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(scv), v128.load(sq, 16)),
      );
      const I = hsum32(i32x4.sub(acc, i32x4.shl(cq, 5)));
      s += (f16ToF32(load<u16>(p + 208)) * load<f32>(P + K + (<usize>b << 2))) * <f32>I;
    }
    emit(out, r, s * oscale, mode);
  }
}
// The other tokens' accumulators of the multi-token Q6_K heads (per-instance, hence per-thread, globals).
let q6AccB: v128 = i32x4.splat(0);
let q6AccC: v128 = i32x4.splat(0);
let q6AccD: v128 = i32x4.splat(0);

/** One sub-block's term: acc + Σ_lanes-pairs s·(u·a) (s the sub-block's scale splat). */
@inline function q6Term(acc: v128, a: v128, u: v128, s: v128): v128 {
  return i32x4.add(acc, i32x4.dot_i16x8_s(dot16(a, u), s));
}

/** The code vector j (0..3) of quarter (L0, L1, H) of q6Quarter, u ∈ 0..63. */
@inline function q6Codes(L0: v128, L1: v128, H: v128, j: i32): v128 {
  const m15 = i8x16.splat(15);
  const m48 = i8x16.splat(0x30);
  if (j == 0) return v128.or(v128.and(L0, m15), v128.and(i16x8.shl(H, 4), m48));
  if (j == 1) return v128.or(v128.and(L1, m15), v128.and(i16x8.shl(H, 2), m48));
  if (j == 2) return v128.or(v128.and(i16x8.shr_u(L0, 4), m15), v128.and(H, m48));
  return v128.or(v128.and(i16x8.shr_u(L1, 4), m15), v128.and(i16x8.shr_u(H, 2), m48));
}

/**
 * q6Quarter for T = 2 or 4 tokens at once (activations at A, B, C, D; o the quarter's offset, as
 * q6Quarter's a0..a3 at o, o + 32, o + 64, o + 96): each code vector and scale is unpacked once and
 * dotted with every token's. Returns token A's accumulator; the others' are q6AccB/C/D, in place.
 */
@inline function q6QuarterT(T: i32, acc: v128, p: usize, h: usize, c: usize, A: usize, B: usize, C: usize, D: usize, o: usize): v128 {
  const ph = p + 64 * h + 16 * c;
  const L0 = v128.load(ph);
  const L1 = v128.load(ph, 32);
  const H = v128.load(p + 128 + 32 * h + 16 * c);
  const sc = p + 192 + 8 * h + c;
  let accB = q6AccB;
  let accC = q6AccC;
  let accD = q6AccD;
  for (let j = 0; j < 4; j++) {
    const u = q6Codes(L0, L1, H, j);
    const s = scale16(sc + <usize>(2 * j));
    const oj = o + <usize>(32 * j);
    acc = q6Term(acc, v128.load(A + oj), u, s);
    accB = q6Term(accB, v128.load(B + oj), u, s);
    if (T == 4) {
      accC = q6Term(accC, v128.load(C + oj), u, s);
      accD = q6Term(accD, v128.load(D + oj), u, s);
    }
  }
  q6AccB = accB;
  if (T == 4) {
    q6AccC = accC;
    q6AccD = accD;
  }
  return acc;
}

/** Σ_j sc_j·Σq_j of one block (scales extended in scLo/scHi, Σq per 16 at sq): the −32 offset's factor. */
@inline function q6Offset(scLo: v128, scHi: v128, sq: usize): v128 {
  return i32x4.add(i32x4.dot_i16x8_s(scLo, v128.load(sq)), i32x4.dot_i16x8_s(scHi, v128.load(sq, 16)));
}

/** Token X's block integer I and its sum's step: s + f32(dw·d_x)·I, as head_q6_k. */
@inline function q6Step(s: f32, acc: v128, scLo: v128, scHi: v128, P: usize, K: usize, b: i32, dw: f32): f32 {
  const I = hsum32(i32x4.sub(acc, i32x4.shl(q6Offset(scLo, scHi, P + K + (K >> 3) + (<usize>b << 5)), 5)));
  return s + (dw * load<f32>(P + K + (<usize>b << 2))) * <f32>I;
}

/**
 * Q6_K head rows r0..r1 for T = 2 or 4 tokens: activations at P + t·pstride (head_prep_q8k),
 * rows stored at out + t·ostride. Each token's sum is head_q6_k's, in the same order: the same bits.
 */
@inline function headQ6T(T: i32, w: usize, k: i32, r0: i32, r1: i32, P: usize, pstride: usize, out: usize, ostride: usize): void {
  const K = <usize>k;
  const nb = k >> 8;
  const rb = <usize>(nb * 210);
  const PB = P + pstride;
  const PC = P + 2 * pstride;
  const PD = P + 3 * pstride;
  for (let r = r0; r < r1; r++) {
    const row = w + <usize>r * rb;
    let sA: f32 = 0;
    let sB: f32 = 0;
    let sC: f32 = 0;
    let sD: f32 = 0;
    for (let b = 0; b < nb; b++) {
      const p = row + <usize>(b * 210);
      v128.load(p, 512); // software prefetch (dropped loads), see ternary.ts
      v128.load(p, 640);
      const bo = <usize>b << 8;
      const A = P + bo;
      const B = PB + bo;
      const C = PC + bo;
      const D = PD + bo;
      const z = i32x4.splat(0);
      q6AccB = z;
      q6AccC = z;
      q6AccD = z;
      let acc = q6QuarterT(T, z, p, 0, 0, A, B, C, D, 0);
      acc = q6QuarterT(T, acc, p, 0, 1, A, B, C, D, 16);
      acc = q6QuarterT(T, acc, p, 1, 0, A, B, C, D, 128);
      acc = q6QuarterT(T, acc, p, 1, 1, A, B, C, D, 144);
      const scv = v128.load(p + 192);
      const scLo = i16x8.extend_low_i8x16_s(scv);
      const scHi = i16x8.extend_high_i8x16_s(scv);
      const dw = f16ToF32(load<u16>(p + 208));
      sA = q6Step(sA, acc, scLo, scHi, P, K, b, dw);
      sB = q6Step(sB, q6AccB, scLo, scHi, PB, K, b, dw);
      if (T == 4) {
        sC = q6Step(sC, q6AccC, scLo, scHi, PC, K, b, dw);
        sD = q6Step(sD, q6AccD, scLo, scHi, PD, K, b, dw);
      }
    }
    const o = out + (<usize>r << 2);
    store<f32>(o, sA);
    store<f32>(o + ostride, sB);
    if (T == 4) {
      store<f32>(o + 2 * ostride, sC);
      store<f32>(o + 3 * ostride, sD);
    }
  }
}

/** Q6_K head, two tokens at once (see headQ6T). */
export function head_q6_k_2(w: usize, k: i32, r0: i32, r1: i32, P: usize, pstride: usize, out: usize, ostride: usize): void {
  headQ6T(2, w, k, r0, r1, P, pstride, out, ostride);
}

/** Q6_K head, four tokens at once (see headQ6T). */
export function head_q6_k_4(w: usize, k: i32, r0: i32, r1: i32, P: usize, pstride: usize, out: usize, ostride: usize): void {
  headQ6T(4, w, k, r0, r1, P, pstride, out, ostride);
}
