/**
 * Ternary matmuls straight from the file bytes: I2_S, TQ2_0, TQ1_0. Decode (m = 1, GEMV) and
 * prefill (m > 1, GEMM: each weight vector is decoded once and used for 4 tokens).
 *
 * Integer core. Codes c in {0,1,2} (weight c−1) are dotted with int8 activations by dot16();
 * Σ(c−1)q = Σc·q − Σq, the second term being the per-token (I2_S) or per-256-block (TQ) sums
 * written by quantize_act. All integer results are exact; no lane of an i16 accumulator can
 * overflow (bounds next to each widening).
 *
 * Code extraction from one 16-byte vector v of 2-bit fields (four "planes" per byte):
 *   v & 3 -> c (×1), v & 12 -> 4c (×4), (v >>16 4) & 3 -> c, (v >>16 4) & 12 -> 4c
 * i.e. 1 shift + 4 ands per 64 codes. The ×1 planes accumulate in x1 and the ×4 planes in x4
 * (i16 lanes); at each widening Σc·q = x1 + x4/4 (x4 is a multiple of 4, so the shift is exact). Which activations each plane meets (element offsets):
 *   I2_S  block of 128, byte t: bits 7:6 -> t, 5:4 -> t+32, 3:2 -> t+64, 1:0 -> t+96
 *         so (v&3, v&12, h&3, h&12) meet offsets (96, 64, 32, 0)
 *   TQ2_0 half-block of 128 (qs[32g..]), byte t: bits 1:0 -> t, 3:2 -> t+32, 5:4 -> t+64, 7:6 -> t+96
 *         so (v&3, v&12, h&3, h&12) meet offsets (0, 32, 64, 96)
 *
 * Float epilogues, exactly as the reference:
 *   I2_S:  y = f32(f32(f32(D − S) / s) · w_scale) · out_scale
 *   TQ:    acc = f32(acc + f32(f32(D_b − S_b) · d_b)) over blocks in order; y = f32(acc / s) · out_scale
 * Output (token t, row r) goes to out[t·outStride + r]; mode 0 stores, mode 1 adds (residual:
 * out = f32(out + y)).
 */
import { dot16, f16ToF32, hsum32, hsum4x32 } from './common';

const TQ2_BLOCK: i32 = 66;
// The second row's result of the 2-row × 4-token kernels (a per-instance, hence per-thread, global).
let row1Acc: v128 = i32x4.splat(0);
/** Bytes ahead of the current weights touched as a software prefetch (tensors have PREFETCH of slack after them). */
export const PREFETCH: usize = 512;
/**
 * The I2_S kernels' distance. These "prefetches" are real loads, so one that misses to DRAM holds
 * the pipeline: they help only where the hardware prefetcher has already brought the line to L2.
 * Measured on a DRAM-resident 55296×2560 I2_S matrix (Zen 4, V8 in Node 22, relaxed build),
 * decode: 128 B 8.4 ms, 192-448 B 3.9-4.3 ms, 512-768 B 8.0-9.0 ms, 1024 B 5.1 ms. TQ2_0 did not
 * change between 256 and 512 (its loads come once per 66-byte block, not per 32 bytes).
 */
const PREFETCH_I2S: usize = 384;
/**
 * From this width on, decode (one token) walks one row at a time instead of two. Two rows are two
 * address streams, and on long rows the hardware prefetcher kept up with them worse than with
 * one (DRAM-resident TQ2_0, Zen 4, Node 22): one row took 0.71× the time at k = 6912 and
 * 0.62-0.73× at k = 4096, but 1.27× at k = 2560, where two rows share the activation loads at
 * no cost. I2_S prefill (4 tokens at a time) gains too, 0.68-0.78× at k = 4096 and 6912; TQ2_0
 * prefill did not change (0.98×), so it keeps two rows. Both ways give the same bits.
 */
const LONG_ROW_K: i32 = 4096;
/** Weight bytes of a prefill tile (tileRows). */
export const TILE_BYTES: usize = 131072;
const TQ1_BLOCK: i32 = 54;

// One 16-byte code vector (64 codes) against four activation vectors, in two accumulators:
// x1 gets the planes extracted as c (×1), x4 those extracted as 4c (×4); Σc·q = x1 + x4/4.
@inline function quad1(acc: v128, v: v128, h: v128, a: usize, oA: i32, oC: i32): v128 {
  const m3 = i8x16.splat(3);
  acc = i16x8.add(acc, dot16(v128.load(a + <usize>oA), v128.and(v, m3)));
  acc = i16x8.add(acc, dot16(v128.load(a + <usize>oC), v128.and(h, m3)));
  return acc;
}
@inline function quad4(acc: v128, v: v128, h: v128, a: usize, oB: i32, oD: i32): v128 {
  const m12 = i8x16.splat(12);
  acc = i16x8.add(acc, dot16(v128.load(a + <usize>oB), v128.and(v, m12)));
  acc = i16x8.add(acc, dot16(v128.load(a + <usize>oD), v128.and(h, m12)));
  return acc;
}

/**
 * A load whose value is dropped: a software prefetch. Compilers keep it because a wasm load may
 * trap (binaryen without -tnh, V8's protected loads).
 */
@inline function prefetch(p: usize): void {
  v128.load(p);
}

// Single-accumulator decode for the token-tiled (GEMM) kernels: the four planes of v as codes 0..2.
@inline function plane(v: v128, shift: i32): v128 {
  return v128.and(i16x8.shr_u(v, shift), i8x16.splat(3));
}

/** [a0+a1+a2+a3, b0+…, a0+…, b0+…] for two i32x4 vectors (lanes 2, 3 repeat 0, 1). */
@inline function hsum2x32(a: v128, b: v128): v128 {
  const ab = i32x4.add(v128.shuffle<i32>(a, b, 0, 4, 1, 5), v128.shuffle<i32>(a, b, 2, 6, 3, 7));
  return i32x4.add(ab, v128.shuffle<i32>(ab, ab, 2, 3, 0, 1));
}

/** acc32 + x1 + x4/4 (x4 holds 4·Σc·q, so the shift is exact). */
@inline function widen(acc32: v128, x1: v128, x4: v128): v128 {
  return i32x4.add(acc32, i32x4.add(i32x4.extadd_pairwise_i16x8_s(x1), i32x4.shr_s(i32x4.extadd_pairwise_i16x8_s(x4), 2)));
}

@inline function store4(out: usize, y: v128, mode: i32): void {
  if (mode == 1) y = f32x4.add(v128.load(out), y);
  v128.store(out, y);
}

@inline function storeLane(out: usize, y: f32, mode: i32): void {
  if (mode == 1) y = load<f32>(out) + y;
  store<f32>(out, y);
}

// 4 outputs strided by `stride` bytes (one token, 4 tokens of one row)
@inline function store4s(out: usize, stride: usize, y: v128, mode: i32): void {
  storeLane(out, f32x4.extract_lane(y, 0), mode);
  storeLane(out + stride, f32x4.extract_lane(y, 1), mode);
  storeLane(out + 2 * stride, f32x4.extract_lane(y, 2), mode);
  storeLane(out + 3 * stride, f32x4.extract_lane(y, 3), mode);
}

// ---------------------------------------------------------------------------------------------
// I2_S
// ---------------------------------------------------------------------------------------------

/** Σc·q for 2 rows (row pointers) and one token: [D_r0, D_r1, D_r0, D_r1]. */
@inline function i2sR2T1(w0: usize, w1: usize, k: i32, q: usize): v128 {
  let c0 = i32x4.splat(0), c1 = i32x4.splat(0);
  for (let j = 0; j < k; j += 256) {
    // per 128-block a lane of x gains at most 4·512, of y 4·2048: two blocks fit i16
    let x0 = i16x8.splat(0), y0 = i16x8.splat(0), x1 = i16x8.splat(0), y1 = i16x8.splat(0);
    const end = min(j + 256, k);
    for (let b = j; b < end; b += 128) {
      const o = <usize>(b >> 2);
      prefetch(w0 + o + PREFETCH_I2S);
      prefetch(w1 + o + PREFETCH_I2S);
      for (let half: usize = 0; half < 32; half += 16) {
        const a = q + <usize>b + half;
        const a96 = v128.load(a, 96), a64 = v128.load(a, 64), a32 = v128.load(a, 32), a0 = v128.load(a);
        let v = v128.load(w0 + o + half);
        let h = i16x8.shr_u(v, 4);
        x0 = i16x8.add(x0, dot16(a96, v128.and(v, i8x16.splat(3))));
        y0 = i16x8.add(y0, dot16(a64, v128.and(v, i8x16.splat(12))));
        x0 = i16x8.add(x0, dot16(a32, v128.and(h, i8x16.splat(3))));
        y0 = i16x8.add(y0, dot16(a0, v128.and(h, i8x16.splat(12))));
        v = v128.load(w1 + o + half);
        h = i16x8.shr_u(v, 4);
        x1 = i16x8.add(x1, dot16(a96, v128.and(v, i8x16.splat(3))));
        y1 = i16x8.add(y1, dot16(a64, v128.and(v, i8x16.splat(12))));
        x1 = i16x8.add(x1, dot16(a32, v128.and(h, i8x16.splat(3))));
        y1 = i16x8.add(y1, dot16(a0, v128.and(h, i8x16.splat(12))));
      }
    }
    c0 = widen(c0, x0, y0);
    c1 = widen(c1, x1, y1);
  }
  return hsum2x32(c0, c1);
}

/** Σc·q for one row and one token (rows of LONG_ROW_K or more): as i2sR2T1, one address stream. */
@inline function i2sR1T1(w0: usize, k: i32, q: usize): i32 {
  let c0 = i32x4.splat(0);
  for (let j = 0; j < k; j += 256) {
    // per 128-block a lane of x gains at most 4·512, of y 4·2048: two blocks fit i16
    let x0 = i16x8.splat(0), y0 = i16x8.splat(0);
    const end = min(j + 256, k);
    for (let b = j; b < end; b += 128) {
      const o = <usize>(b >> 2);
      prefetch(w0 + o + PREFETCH_I2S);
      for (let half: usize = 0; half < 32; half += 16) {
        const a = q + <usize>b + half;
        const v = v128.load(w0 + o + half);
        const h = i16x8.shr_u(v, 4);
        x0 = i16x8.add(x0, dot16(v128.load(a, 96), v128.and(v, i8x16.splat(3))));
        y0 = i16x8.add(y0, dot16(v128.load(a, 64), v128.and(v, i8x16.splat(12))));
        x0 = i16x8.add(x0, dot16(v128.load(a, 32), v128.and(h, i8x16.splat(3))));
        y0 = i16x8.add(y0, dot16(v128.load(a), v128.and(h, i8x16.splat(12))));
      }
    }
    c0 = widen(c0, x0, y0);
  }
  return hsum32(c0);
}

/** Σc·q for one row and 4 tokens (activation rows qs bytes apart): [D_t0..D_t3]. */
@inline function i2sR1T4(w: usize, k: i32, q: usize, qs: usize): v128 {
  let c0 = i32x4.splat(0), c1 = i32x4.splat(0), c2 = i32x4.splat(0), c3 = i32x4.splat(0);
  for (let j = 0; j < k; j += 512) {
    // single accumulators: a lane gains at most 8·512 per 128-block; four blocks fit i16
    let x0 = i16x8.splat(0), x1 = i16x8.splat(0), x2 = i16x8.splat(0), x3 = i16x8.splat(0);
    const end = min(j + 512, k);
    for (let b = j; b < end; b += 128) {
      const o = <usize>(b >> 2);
      prefetch(w + o + PREFETCH_I2S);
      for (let half: usize = 0; half < 32; half += 16) {
        const v = v128.load(w + o + half);
        const a = q + <usize>b + half;
        // bits 7:6 -> +0, 5:4 -> +32, 3:2 -> +64, 1:0 -> +96
        let c = plane(v, 6);
        x0 = i16x8.add(x0, dot16(v128.load(a), c));
        x1 = i16x8.add(x1, dot16(v128.load(a + qs), c));
        x2 = i16x8.add(x2, dot16(v128.load(a + 2 * qs), c));
        x3 = i16x8.add(x3, dot16(v128.load(a + 3 * qs), c));
        c = plane(v, 4);
        x0 = i16x8.add(x0, dot16(v128.load(a, 32), c));
        x1 = i16x8.add(x1, dot16(v128.load(a + qs, 32), c));
        x2 = i16x8.add(x2, dot16(v128.load(a + 2 * qs, 32), c));
        x3 = i16x8.add(x3, dot16(v128.load(a + 3 * qs, 32), c));
        c = plane(v, 2);
        x0 = i16x8.add(x0, dot16(v128.load(a, 64), c));
        x1 = i16x8.add(x1, dot16(v128.load(a + qs, 64), c));
        x2 = i16x8.add(x2, dot16(v128.load(a + 2 * qs, 64), c));
        x3 = i16x8.add(x3, dot16(v128.load(a + 3 * qs, 64), c));
        c = v128.and(v, i8x16.splat(3));
        x0 = i16x8.add(x0, dot16(v128.load(a, 96), c));
        x1 = i16x8.add(x1, dot16(v128.load(a + qs, 96), c));
        x2 = i16x8.add(x2, dot16(v128.load(a + 2 * qs, 96), c));
        x3 = i16x8.add(x3, dot16(v128.load(a + 3 * qs, 96), c));
      }
    }
    c0 = i32x4.add(c0, i32x4.extadd_pairwise_i16x8_s(x0));
    c1 = i32x4.add(c1, i32x4.extadd_pairwise_i16x8_s(x1));
    c2 = i32x4.add(c2, i32x4.extadd_pairwise_i16x8_s(x2));
    c3 = i32x4.add(c3, i32x4.extadd_pairwise_i16x8_s(x3));
  }
  return hsum4x32(c0, c1, c2, c3);
}

/** I2_S, 2 rows × 4 tokens (tokens in lanes): returns Σc·q of row 0, leaves row 1's in row1Acc. */
@inline function i2sR2T4(w0: usize, w1: usize, k: i32, q: usize, qs: usize): v128 {
  let c0 = i32x4.splat(0), c1 = i32x4.splat(0), c2 = i32x4.splat(0), c3 = i32x4.splat(0);
  let e0 = i32x4.splat(0), e1 = i32x4.splat(0), e2 = i32x4.splat(0), e3 = i32x4.splat(0);
  for (let j = 0; j < k; j += 512) {
    // single accumulators: a lane gains at most 8·512 per 128-block; four blocks fit i16
    let x0 = i16x8.splat(0), x1 = i16x8.splat(0), x2 = i16x8.splat(0), x3 = i16x8.splat(0);
    let z0 = i16x8.splat(0), z1 = i16x8.splat(0), z2 = i16x8.splat(0), z3 = i16x8.splat(0);
    const end = min(j + 512, k);
    for (let b = j; b < end; b += 128) {
      const o = <usize>(b >> 2);
      prefetch(w0 + o + PREFETCH_I2S);
      prefetch(w1 + o + PREFETCH_I2S);
      for (let half: usize = 0; half < 32; half += 16) {
        const v = v128.load(w0 + o + half);
        const u = v128.load(w1 + o + half);
        const a = q + <usize>b + half;
        {
          const cv = plane(v, 6);
          const cu = plane(u, 6);
          let t = v128.load(a, 0);
          x0 = i16x8.add(x0, dot16(t, cv));
          z0 = i16x8.add(z0, dot16(t, cu));
          t = v128.load(a + qs, 0);
          x1 = i16x8.add(x1, dot16(t, cv));
          z1 = i16x8.add(z1, dot16(t, cu));
          t = v128.load(a + 2 * qs, 0);
          x2 = i16x8.add(x2, dot16(t, cv));
          z2 = i16x8.add(z2, dot16(t, cu));
          t = v128.load(a + 3 * qs, 0);
          x3 = i16x8.add(x3, dot16(t, cv));
          z3 = i16x8.add(z3, dot16(t, cu));
        }
        {
          const cv = plane(v, 4);
          const cu = plane(u, 4);
          let t = v128.load(a, 32);
          x0 = i16x8.add(x0, dot16(t, cv));
          z0 = i16x8.add(z0, dot16(t, cu));
          t = v128.load(a + qs, 32);
          x1 = i16x8.add(x1, dot16(t, cv));
          z1 = i16x8.add(z1, dot16(t, cu));
          t = v128.load(a + 2 * qs, 32);
          x2 = i16x8.add(x2, dot16(t, cv));
          z2 = i16x8.add(z2, dot16(t, cu));
          t = v128.load(a + 3 * qs, 32);
          x3 = i16x8.add(x3, dot16(t, cv));
          z3 = i16x8.add(z3, dot16(t, cu));
        }
        {
          const cv = plane(v, 2);
          const cu = plane(u, 2);
          let t = v128.load(a, 64);
          x0 = i16x8.add(x0, dot16(t, cv));
          z0 = i16x8.add(z0, dot16(t, cu));
          t = v128.load(a + qs, 64);
          x1 = i16x8.add(x1, dot16(t, cv));
          z1 = i16x8.add(z1, dot16(t, cu));
          t = v128.load(a + 2 * qs, 64);
          x2 = i16x8.add(x2, dot16(t, cv));
          z2 = i16x8.add(z2, dot16(t, cu));
          t = v128.load(a + 3 * qs, 64);
          x3 = i16x8.add(x3, dot16(t, cv));
          z3 = i16x8.add(z3, dot16(t, cu));
        }
        {
          const cv = v128.and(v, i8x16.splat(3));
          const cu = v128.and(u, i8x16.splat(3));
          let t = v128.load(a, 96);
          x0 = i16x8.add(x0, dot16(t, cv));
          z0 = i16x8.add(z0, dot16(t, cu));
          t = v128.load(a + qs, 96);
          x1 = i16x8.add(x1, dot16(t, cv));
          z1 = i16x8.add(z1, dot16(t, cu));
          t = v128.load(a + 2 * qs, 96);
          x2 = i16x8.add(x2, dot16(t, cv));
          z2 = i16x8.add(z2, dot16(t, cu));
          t = v128.load(a + 3 * qs, 96);
          x3 = i16x8.add(x3, dot16(t, cv));
          z3 = i16x8.add(z3, dot16(t, cu));
        }
      }
    }
    c0 = i32x4.add(c0, i32x4.extadd_pairwise_i16x8_s(x0));
    c1 = i32x4.add(c1, i32x4.extadd_pairwise_i16x8_s(x1));
    c2 = i32x4.add(c2, i32x4.extadd_pairwise_i16x8_s(x2));
    c3 = i32x4.add(c3, i32x4.extadd_pairwise_i16x8_s(x3));
    e0 = i32x4.add(e0, i32x4.extadd_pairwise_i16x8_s(z0));
    e1 = i32x4.add(e1, i32x4.extadd_pairwise_i16x8_s(z1));
    e2 = i32x4.add(e2, i32x4.extadd_pairwise_i16x8_s(z2));
    e3 = i32x4.add(e3, i32x4.extadd_pairwise_i16x8_s(z3));
  }
  row1Acc = hsum4x32(e0, e1, e2, e3);
  return hsum4x32(c0, c1, c2, c3);
}

/** mm_i2s over all of r0..r1 for each group of 4 tokens, then the last m % 4 tokens one by one. */
function i2sBody(
  w: usize, k: i32, r0: i32, r1: i32,
  m: i32, q: usize, qStride: i32, scales: usize, sums: usize,
  wscale: f32, oscale: f32, out: usize, outStride: i32, mode: i32,
): void {
  const rb = <usize>(k >> 2);
  const qs = <usize>qStride;
  const os = <usize>outStride << 2;
  const ws = f32x4.splat(wscale);
  const oss = f32x4.splat(oscale);
  let t = 0;
  for (; t + 4 <= m; t += 4) {
    const S = v128.load(sums + (<usize>t << 2));
    const s = v128.load(scales + (<usize>t << 2));
    const qt = q + <usize>t * qs;
    let r = r0;
    for (; r + 2 <= r1 && k < LONG_ROW_K; r += 2) { // long rows: i2sR1T4 below, one stream
      const d = i32x4.sub(i2sR2T4(w + <usize>r * rb, w + <usize>(r + 1) * rb, k, qt, qs), S);
      const y = f32x4.mul(f32x4.mul(f32x4.div(f32x4.convert_i32x4_s(d), s), ws), oss);
      store4s(out + <usize>t * os + (<usize>r << 2), os, y, mode);
      const d1 = i32x4.sub(row1Acc, S);
      const y1 = f32x4.mul(f32x4.mul(f32x4.div(f32x4.convert_i32x4_s(d1), s), ws), oss);
      store4s(out + <usize>t * os + (<usize>(r + 1) << 2), os, y1, mode);
    }
    for (; r < r1; r++) {
      const d = i32x4.sub(i2sR1T4(w + <usize>r * rb, k, qt, qs), S);
      const y = f32x4.mul(f32x4.mul(f32x4.div(f32x4.convert_i32x4_s(d), s), ws), oss);
      store4s(out + <usize>t * os + (<usize>r << 2), os, y, mode);
    }
  }
  for (; t < m; t++) {
    const S = i32x4.splat(load<i32>(sums + (<usize>t << 2)));
    const s = f32x4.splat(load<f32>(scales + (<usize>t << 2)));
    const qt = q + <usize>t * qs;
    const ot = out + <usize>t * os;
    if (k >= LONG_ROW_K) {
      const S1 = i32x4.extract_lane(S, 0);
      const s1 = f32x4.extract_lane(s, 0);
      for (let r = r0; r < r1; r++) {
        const y = ((<f32>(i2sR1T1(w + <usize>r * rb, k, qt) - S1) / s1) * wscale) * oscale;
        storeLane(ot + (<usize>r << 2), y, mode);
      }
      continue;
    }
    for (let r = r0; r < r1; r += 2) {
      const p = w + <usize>r * rb;
      const two = r + 1 < r1;
      const d = i32x4.sub(i2sR2T1(p, two ? p + rb : p, k, qt), S);
      const y = f32x4.mul(f32x4.mul(f32x4.div(f32x4.convert_i32x4_s(d), s), ws), oss);
      storeLane(ot + (<usize>r << 2), f32x4.extract_lane(y, 0), mode);
      if (two) storeLane(ot + (<usize>r << 2) + 4, f32x4.extract_lane(y, 1), mode);
    }
  }
}

/**
 * Rows of a prefill tile: ~TILE_BYTES of weights (an even count, at least 2). The bodies stream
 * every row once per group of 4 tokens; without tiles, a 64-token chunk re-read each matrix 16
 * times from L3 or DRAM. With them a tile's weights stay in L2 while the token groups go by, and
 * the activations (m·k bytes, 160-440 KB at m = 64) are what is re-read.
 */
@inline function tileRows(rb: usize): i32 {
  return max(2, <i32>(TILE_BYTES / rb) & ~1);
}

/**
 * y[t][r] for rows r0..r1 and tokens 0..m of an I2_S matrix (rows of k/4 bytes).
 * Activations: q[t·qStride ..], scale[t] (f32), sum[t] (i32). With more than one group of 4
 * tokens, the groups run tile by tile (tileRows), then the last m % 4 tokens over all rows; each
 * output is the same kernel's, so the bits do not depend on the tiling.
 */
export function mm_i2s(
  w: usize, k: i32, r0: i32, r1: i32,
  m: i32, q: usize, qStride: i32, scales: usize, sums: usize,
  wscale: f32, oscale: f32, out: usize, outStride: i32, mode: i32,
): void {
  const m4 = m & ~3;
  if (m4 <= 4) {
    i2sBody(w, k, r0, r1, m, q, qStride, scales, sums, wscale, oscale, out, outStride, mode);
    return;
  }
  const R = tileRows(<usize>(k >> 2));
  for (let rc = r0; rc < r1; rc += R) i2sBody(w, k, rc, min(r1, rc + R), m4, q, qStride, scales, sums, wscale, oscale, out, outStride, mode);
  if (m4 < m) {
    const t = <usize>m4;
    i2sBody(w, k, r0, r1, m - m4, q + t * <usize>qStride, qStride, scales + (t << 2), sums + (t << 2), wscale, oscale, out + ((t * <usize>outStride) << 2), outStride, mode);
  }
}

// ---------------------------------------------------------------------------------------------
// TQ2_0 (66-byte blocks of 256: qs[64], f16 d)
// ---------------------------------------------------------------------------------------------

/** TQ2_0, 2 rows and one token: acc (f32 lanes 0, 1) += f32(D_b − S_b)·d_b over the row's blocks in order. */
@inline function tq2R2T1(w0: usize, w1: usize, nb: i32, q: usize, bsum: usize): v128 {
  let acc = f32x4.splat(0);
  for (let b = 0; b < nb; b++) {
    const o = <usize>(b * TQ2_BLOCK);
    const a = q + (<usize>b << 8);
    // per block a lane of x gains at most 8·512, of y 8·2048 = 16384
    let x0 = i16x8.splat(0), y0 = i16x8.splat(0), x1 = i16x8.splat(0), y1 = i16x8.splat(0);
    for (let g: usize = 0; g < 64; g += 16) {
      const ag = a + (g & 16) + ((g & 32) << 2); // bytes 0-31 -> elements 0..127, 32-63 -> 128..255
      const aA = v128.load(ag), aB = v128.load(ag, 32), aC = v128.load(ag, 64), aD = v128.load(ag, 96);
      let v = v128.load(w0 + o + g);
      let h = i16x8.shr_u(v, 4);
      x0 = i16x8.add(x0, dot16(aA, v128.and(v, i8x16.splat(3))));
      y0 = i16x8.add(y0, dot16(aB, v128.and(v, i8x16.splat(12))));
      x0 = i16x8.add(x0, dot16(aC, v128.and(h, i8x16.splat(3))));
      y0 = i16x8.add(y0, dot16(aD, v128.and(h, i8x16.splat(12))));
      v = v128.load(w1 + o + g);
      h = i16x8.shr_u(v, 4);
      x1 = i16x8.add(x1, dot16(aA, v128.and(v, i8x16.splat(3))));
      y1 = i16x8.add(y1, dot16(aB, v128.and(v, i8x16.splat(12))));
      x1 = i16x8.add(x1, dot16(aC, v128.and(h, i8x16.splat(3))));
      y1 = i16x8.add(y1, dot16(aD, v128.and(h, i8x16.splat(12))));
    }
    // touch the weights PREFETCH bytes ahead: without it DRAM latency is not hidden (measured
    // 35 -> 60 GOP/s on a DRAM-resident 6912×2560 matrix)
    prefetch(w0 + o + PREFETCH);
    prefetch(w1 + o + PREFETCH);
    const z = i32x4.splat(0);
    const D = hsum2x32(widen(z, x0, y0), widen(z, x1, y1));
    const db = i32x4.sub(D, i32x4.splat(load<i32>(bsum + (<usize>b << 2))));
    let d = f32x4.splat(f16ToF32(load<u16>(w0 + o + 64)));
    d = f32x4.replace_lane(d, 1, f16ToF32(load<u16>(w1 + o + 64)));
    acc = f32x4.add(acc, f32x4.mul(f32x4.convert_i32x4_s(db), d));
  }
  return acc;
}

/** TQ2_0, one row and one token (rows of LONG_ROW_K or more): as tq2R2T1, one address stream. */
@inline function tq2R1T1(w0: usize, nb: i32, q: usize, bsum: usize): f32 {
  let acc: f32 = 0;
  for (let b = 0; b < nb; b++) {
    const o = <usize>(b * TQ2_BLOCK);
    const a = q + (<usize>b << 8);
    let x0 = i16x8.splat(0), y0 = i16x8.splat(0);
    for (let g: usize = 0; g < 64; g += 16) {
      const ag = a + (g & 16) + ((g & 32) << 2);
      const v = v128.load(w0 + o + g);
      const h = i16x8.shr_u(v, 4);
      x0 = i16x8.add(x0, dot16(v128.load(ag), v128.and(v, i8x16.splat(3))));
      y0 = i16x8.add(y0, dot16(v128.load(ag, 32), v128.and(v, i8x16.splat(12))));
      x0 = i16x8.add(x0, dot16(v128.load(ag, 64), v128.and(h, i8x16.splat(3))));
      y0 = i16x8.add(y0, dot16(v128.load(ag, 96), v128.and(h, i8x16.splat(12))));
    }
    prefetch(w0 + o + PREFETCH);
    const D = hsum32(widen(i32x4.splat(0), x0, y0));
    acc += <f32>(D - load<i32>(bsum + (<usize>b << 2))) * f16ToF32(load<u16>(w0 + o + 64));
  }
  return acc;
}

@inline function tq2R1T4(w: usize, nb: i32, q: usize, qs: usize, bsum: usize, bsStride: usize): v128 {
  let acc = f32x4.splat(0);
  for (let b = 0; b < nb; b++) {
    const p = w + <usize>(b * TQ2_BLOCK);
    const a = q + (<usize>b << 8);
    prefetch(p + PREFETCH);
    // single accumulators: a lane gains at most 16·512 = 8192 per block
    let x0 = i16x8.splat(0), x1 = i16x8.splat(0), x2 = i16x8.splat(0), x3 = i16x8.splat(0);
    for (let g: usize = 0; g < 64; g += 16) {
      const v = v128.load(p + g);
      const ag = a + (g & 16) + ((g & 32) << 2);
      // bits 1:0 -> +0, 3:2 -> +32, 5:4 -> +64, 7:6 -> +96
      let c = v128.and(v, i8x16.splat(3));
      x0 = i16x8.add(x0, dot16(v128.load(ag), c));
      x1 = i16x8.add(x1, dot16(v128.load(ag + qs), c));
      x2 = i16x8.add(x2, dot16(v128.load(ag + 2 * qs), c));
      x3 = i16x8.add(x3, dot16(v128.load(ag + 3 * qs), c));
      c = plane(v, 2);
      x0 = i16x8.add(x0, dot16(v128.load(ag, 32), c));
      x1 = i16x8.add(x1, dot16(v128.load(ag + qs, 32), c));
      x2 = i16x8.add(x2, dot16(v128.load(ag + 2 * qs, 32), c));
      x3 = i16x8.add(x3, dot16(v128.load(ag + 3 * qs, 32), c));
      c = plane(v, 4);
      x0 = i16x8.add(x0, dot16(v128.load(ag, 64), c));
      x1 = i16x8.add(x1, dot16(v128.load(ag + qs, 64), c));
      x2 = i16x8.add(x2, dot16(v128.load(ag + 2 * qs, 64), c));
      x3 = i16x8.add(x3, dot16(v128.load(ag + 3 * qs, 64), c));
      c = plane(v, 6);
      x0 = i16x8.add(x0, dot16(v128.load(ag, 96), c));
      x1 = i16x8.add(x1, dot16(v128.load(ag + qs, 96), c));
      x2 = i16x8.add(x2, dot16(v128.load(ag + 2 * qs, 96), c));
      x3 = i16x8.add(x3, dot16(v128.load(ag + 3 * qs, 96), c));
    }
    const D = hsum4x32(i32x4.extadd_pairwise_i16x8_s(x0), i32x4.extadd_pairwise_i16x8_s(x1), i32x4.extadd_pairwise_i16x8_s(x2), i32x4.extadd_pairwise_i16x8_s(x3));
    const bo = bsum + (<usize>b << 2);
    let S = i32x4.splat(load<i32>(bo));
    S = i32x4.replace_lane(S, 1, load<i32>(bo + bsStride));
    S = i32x4.replace_lane(S, 2, load<i32>(bo + 2 * bsStride));
    S = i32x4.replace_lane(S, 3, load<i32>(bo + 3 * bsStride));
    const d = f32x4.splat(f16ToF32(load<u16>(p + 64)));
    acc = f32x4.add(acc, f32x4.mul(f32x4.convert_i32x4_s(i32x4.sub(D, S)), d));
  }
  return acc;
}

/** TQ2_0, 2 rows × 4 tokens (tokens in lanes): returns row 0, leaves row 1 in row1Acc. */
@inline function tq2R2T4(w0: usize, w1: usize, nb: i32, q: usize, qs: usize, bsum: usize, bsStride: usize): v128 {
  let acc = f32x4.splat(0);
  let accB = f32x4.splat(0);
  for (let b = 0; b < nb; b++) {
    const o = <usize>(b * TQ2_BLOCK);
    const a = q + (<usize>b << 8);
    prefetch(w0 + o + PREFETCH);
    prefetch(w1 + o + PREFETCH);
    let x0 = i16x8.splat(0), x1 = i16x8.splat(0), x2 = i16x8.splat(0), x3 = i16x8.splat(0);
    let z0 = i16x8.splat(0), z1 = i16x8.splat(0), z2 = i16x8.splat(0), z3 = i16x8.splat(0);
    for (let g: usize = 0; g < 64; g += 16) {
      const v = v128.load(w0 + o + g);
      const u = v128.load(w1 + o + g);
      const ag = a + (g & 16) + ((g & 32) << 2);
      {
        const cv = v128.and(v, i8x16.splat(3));
        const cu = v128.and(u, i8x16.splat(3));
        let t = v128.load(ag, 0);
        x0 = i16x8.add(x0, dot16(t, cv));
        z0 = i16x8.add(z0, dot16(t, cu));
        t = v128.load(ag + qs, 0);
        x1 = i16x8.add(x1, dot16(t, cv));
        z1 = i16x8.add(z1, dot16(t, cu));
        t = v128.load(ag + 2 * qs, 0);
        x2 = i16x8.add(x2, dot16(t, cv));
        z2 = i16x8.add(z2, dot16(t, cu));
        t = v128.load(ag + 3 * qs, 0);
        x3 = i16x8.add(x3, dot16(t, cv));
        z3 = i16x8.add(z3, dot16(t, cu));
      }
      {
        const cv = plane(v, 2);
        const cu = plane(u, 2);
        let t = v128.load(ag, 32);
        x0 = i16x8.add(x0, dot16(t, cv));
        z0 = i16x8.add(z0, dot16(t, cu));
        t = v128.load(ag + qs, 32);
        x1 = i16x8.add(x1, dot16(t, cv));
        z1 = i16x8.add(z1, dot16(t, cu));
        t = v128.load(ag + 2 * qs, 32);
        x2 = i16x8.add(x2, dot16(t, cv));
        z2 = i16x8.add(z2, dot16(t, cu));
        t = v128.load(ag + 3 * qs, 32);
        x3 = i16x8.add(x3, dot16(t, cv));
        z3 = i16x8.add(z3, dot16(t, cu));
      }
      {
        const cv = plane(v, 4);
        const cu = plane(u, 4);
        let t = v128.load(ag, 64);
        x0 = i16x8.add(x0, dot16(t, cv));
        z0 = i16x8.add(z0, dot16(t, cu));
        t = v128.load(ag + qs, 64);
        x1 = i16x8.add(x1, dot16(t, cv));
        z1 = i16x8.add(z1, dot16(t, cu));
        t = v128.load(ag + 2 * qs, 64);
        x2 = i16x8.add(x2, dot16(t, cv));
        z2 = i16x8.add(z2, dot16(t, cu));
        t = v128.load(ag + 3 * qs, 64);
        x3 = i16x8.add(x3, dot16(t, cv));
        z3 = i16x8.add(z3, dot16(t, cu));
      }
      {
        const cv = plane(v, 6);
        const cu = plane(u, 6);
        let t = v128.load(ag, 96);
        x0 = i16x8.add(x0, dot16(t, cv));
        z0 = i16x8.add(z0, dot16(t, cu));
        t = v128.load(ag + qs, 96);
        x1 = i16x8.add(x1, dot16(t, cv));
        z1 = i16x8.add(z1, dot16(t, cu));
        t = v128.load(ag + 2 * qs, 96);
        x2 = i16x8.add(x2, dot16(t, cv));
        z2 = i16x8.add(z2, dot16(t, cu));
        t = v128.load(ag + 3 * qs, 96);
        x3 = i16x8.add(x3, dot16(t, cv));
        z3 = i16x8.add(z3, dot16(t, cu));
      }
    }
    const bo = bsum + (<usize>b << 2);
    let S = i32x4.splat(load<i32>(bo));
    S = i32x4.replace_lane(S, 1, load<i32>(bo + bsStride));
    S = i32x4.replace_lane(S, 2, load<i32>(bo + 2 * bsStride));
    S = i32x4.replace_lane(S, 3, load<i32>(bo + 3 * bsStride));
    const D = hsum4x32(i32x4.extadd_pairwise_i16x8_s(x0), i32x4.extadd_pairwise_i16x8_s(x1), i32x4.extadd_pairwise_i16x8_s(x2), i32x4.extadd_pairwise_i16x8_s(x3));
    const E = hsum4x32(i32x4.extadd_pairwise_i16x8_s(z0), i32x4.extadd_pairwise_i16x8_s(z1), i32x4.extadd_pairwise_i16x8_s(z2), i32x4.extadd_pairwise_i16x8_s(z3));
    acc = f32x4.add(acc, f32x4.mul(f32x4.convert_i32x4_s(i32x4.sub(D, S)), f32x4.splat(f16ToF32(load<u16>(w0 + o + 64)))));
    accB = f32x4.add(accB, f32x4.mul(f32x4.convert_i32x4_s(i32x4.sub(E, S)), f32x4.splat(f16ToF32(load<u16>(w1 + o + 64)))));
  }
  row1Acc = accB;
  return acc;
}

/** mm_tq2 over all of r0..r1 for each group of 4 tokens, then the last m % 4 tokens one by one. */
function tq2Body(
  w: usize, k: i32, r0: i32, r1: i32,
  m: i32, q: usize, qStride: i32, scales: usize, bsum: usize, bsStride: i32,
  oscale: f32, out: usize, outStride: i32, mode: i32,
): void {
  const nb = k >> 8;
  const rb = <usize>(nb * TQ2_BLOCK);
  const qs = <usize>qStride;
  const bss = <usize>bsStride << 2;
  const os = <usize>outStride << 2;
  const oss = f32x4.splat(oscale);
  let t = 0;
  for (; t + 4 <= m; t += 4) {
    const s = v128.load(scales + (<usize>t << 2));
    const qt = q + <usize>t * qs;
    const bt = bsum + <usize>t * bss;
    let r = r0;
    for (; r + 2 <= r1; r += 2) {
      const acc = tq2R2T4(w + <usize>r * rb, w + <usize>(r + 1) * rb, nb, qt, qs, bt, bss);
      store4s(out + <usize>t * os + (<usize>r << 2), os, f32x4.mul(f32x4.div(acc, s), oss), mode);
      store4s(out + <usize>t * os + (<usize>(r + 1) << 2), os, f32x4.mul(f32x4.div(row1Acc, s), oss), mode);
    }
    for (; r < r1; r++) {
      const acc = tq2R1T4(w + <usize>r * rb, nb, qt, qs, bt, bss);
      store4s(out + <usize>t * os + (<usize>r << 2), os, f32x4.mul(f32x4.div(acc, s), oss), mode);
    }
  }
  for (; t < m; t++) {
    const s = f32x4.splat(load<f32>(scales + (<usize>t << 2)));
    const qt = q + <usize>t * qs;
    const bt = bsum + <usize>t * bss;
    const ot = out + <usize>t * os;
    if (k >= LONG_ROW_K) {
      const s1 = f32x4.extract_lane(s, 0);
      for (let r = r0; r < r1; r++) storeLane(ot + (<usize>r << 2), (tq2R1T1(w + <usize>r * rb, nb, qt, bt) / s1) * oscale, mode);
      continue;
    }
    for (let r = r0; r < r1; r += 2) {
      const p = w + <usize>r * rb;
      const two = r + 1 < r1;
      const y = f32x4.mul(f32x4.div(tq2R2T1(p, two ? p + rb : p, nb, qt, bt), s), oss);
      storeLane(ot + (<usize>r << 2), f32x4.extract_lane(y, 0), mode);
      if (two) storeLane(ot + (<usize>r << 2) + 4, f32x4.extract_lane(y, 1), mode);
    }
  }
}

/**
 * TQ2_0 matmul, tiled as mm_i2s. bsum: per-token 256-block sums (i32), token t's block b at
 * bsum + (t·bsStride + b)·4.
 */
export function mm_tq2(
  w: usize, k: i32, r0: i32, r1: i32,
  m: i32, q: usize, qStride: i32, scales: usize, bsum: usize, bsStride: i32,
  oscale: f32, out: usize, outStride: i32, mode: i32,
): void {
  const m4 = m & ~3;
  if (m4 <= 4) {
    tq2Body(w, k, r0, r1, m, q, qStride, scales, bsum, bsStride, oscale, out, outStride, mode);
    return;
  }
  const R = tileRows(<usize>((k >> 8) * TQ2_BLOCK));
  for (let rc = r0; rc < r1; rc += R) tq2Body(w, k, rc, min(r1, rc + R), m4, q, qStride, scales, bsum, bsStride, oscale, out, outStride, mode);
  if (m4 < m) {
    const t = <usize>m4;
    tq2Body(w, k, r0, r1, m - m4, q + t * <usize>qStride, qStride, scales + (t << 2), bsum + ((t * <usize>bsStride) << 2), bsStride, oscale, out + ((t * <usize>outStride) << 2), outStride, mode);
  }
}

// ---------------------------------------------------------------------------------------------
// TQ1_0 (54-byte blocks of 256: qs[48] five base-3 digits per byte, qh[4] four, f16 d)
// Digit k of byte B: ((B·3^k mod 256)·3) >> 8 = (x >= 86) + (x >= 171) with x = B·3^k mod 256.
// ---------------------------------------------------------------------------------------------

/** The trit (0..2) in each lane of x (bytes already multiplied by 3^k mod 256). */
@inline function trit(x: v128): v128 {
  const s = v128.xor(x, i8x16.splat(-128)); // unsigned -> signed order
  const m1 = i8x16.gt_s(s, i8x16.splat(-43)); // x >= 86
  const m2 = i8x16.gt_s(s, i8x16.splat(42)); // x >= 171
  return i8x16.neg(i8x16.add(m1, m2));
}

@inline function times3(x: v128): v128 {
  return i8x16.add(x, i8x16.add(x, x));
}

/** The trits of a TQ1_0 block's qh[0..4) (elements 240..255): byte j holds elements 240 + j + 4k; lane i needs digit i>>2 of byte i&3. */
@inline function tq1HighTrits(p: usize): v128 {
  const h = i8x16.swizzle(v128.load32_zero(p + 48), i8x16(0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3));
  const h3 = times3(h);
  const h9 = times3(h3);
  const h27 = times3(h9);
  const lo = i8x16.shuffle(h, h3, 0, 1, 2, 3, 20, 21, 22, 23, 0, 0, 0, 0, 0, 0, 0, 0);
  const hi = i8x16.shuffle(h9, h27, 8, 9, 10, 11, 28, 29, 30, 31, 0, 0, 0, 0, 0, 0, 0, 0);
  return trit(i8x16.shuffle(lo, hi, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23));
}

/** Σc·q over one TQ1_0 block for one row, as i32x4 lanes. */
@inline function tq1Block(p: usize, a: usize): v128 {
  // 16 dots of at most 512 per lane: 8192
  let acc = i16x8.splat(0);
  // qs[0..32): byte j holds elements j + 32k
  let x = v128.load(p);
  let y = v128.load(p, 16);
  acc = i16x8.add(acc, dot16(v128.load(a), trit(x)));
  acc = i16x8.add(acc, dot16(v128.load(a, 16), trit(y)));
  x = times3(x); y = times3(y);
  acc = i16x8.add(acc, dot16(v128.load(a, 32), trit(x)));
  acc = i16x8.add(acc, dot16(v128.load(a, 48), trit(y)));
  x = times3(x); y = times3(y);
  acc = i16x8.add(acc, dot16(v128.load(a, 64), trit(x)));
  acc = i16x8.add(acc, dot16(v128.load(a, 80), trit(y)));
  x = times3(x); y = times3(y);
  acc = i16x8.add(acc, dot16(v128.load(a, 96), trit(x)));
  acc = i16x8.add(acc, dot16(v128.load(a, 112), trit(y)));
  x = times3(x); y = times3(y);
  acc = i16x8.add(acc, dot16(v128.load(a, 128), trit(x)));
  acc = i16x8.add(acc, dot16(v128.load(a, 144), trit(y)));
  // qs[32..48): byte j holds elements 160 + j + 16k
  let z = v128.load(p, 32);
  acc = i16x8.add(acc, dot16(v128.load(a, 160), trit(z)));
  z = times3(z);
  acc = i16x8.add(acc, dot16(v128.load(a, 176), trit(z)));
  z = times3(z);
  acc = i16x8.add(acc, dot16(v128.load(a, 192), trit(z)));
  z = times3(z);
  acc = i16x8.add(acc, dot16(v128.load(a, 208), trit(z)));
  z = times3(z);
  acc = i16x8.add(acc, dot16(v128.load(a, 224), trit(z)));
  acc = i16x8.add(acc, dot16(v128.load(a, 240), tq1HighTrits(p)));
  return i32x4.extadd_pairwise_i16x8_s(acc);
}

/**
 * One TQ1_0 block of one row against 4 tokens (activation rows qs bytes apart): each trit vector
 * is decoded once and dotted with the 4 tokens. Returns [D_t0, D_t1, D_t2, D_t3] (Σc·q).
 */
@inline function tq1BlockT4(p: usize, a: usize, qs: usize): v128 {
  // per token, 16 dots of at most 512 per lane: 8192
  let c0 = i16x8.splat(0), c1 = i16x8.splat(0), c2 = i16x8.splat(0), c3 = i16x8.splat(0);
  let x = v128.load(p);
  let y = v128.load(p, 16);
  for (let j: usize = 0; j < 160; j += 32) {
    // qs[0..32): byte j holds elements j + 32k (digit k: x, y multiplied by 3^k)
    let c = trit(x);
    c0 = i16x8.add(c0, dot16(v128.load(a + j), c));
    c1 = i16x8.add(c1, dot16(v128.load(a + qs + j), c));
    c2 = i16x8.add(c2, dot16(v128.load(a + 2 * qs + j), c));
    c3 = i16x8.add(c3, dot16(v128.load(a + 3 * qs + j), c));
    c = trit(y);
    c0 = i16x8.add(c0, dot16(v128.load(a + j, 16), c));
    c1 = i16x8.add(c1, dot16(v128.load(a + qs + j, 16), c));
    c2 = i16x8.add(c2, dot16(v128.load(a + 2 * qs + j, 16), c));
    c3 = i16x8.add(c3, dot16(v128.load(a + 3 * qs + j, 16), c));
    x = times3(x);
    y = times3(y);
  }
  let z = v128.load(p, 32);
  for (let j: usize = 160; j < 240; j += 16) {
    // qs[32..48): byte j holds elements 160 + j + 16k
    const c = trit(z);
    c0 = i16x8.add(c0, dot16(v128.load(a + j), c));
    c1 = i16x8.add(c1, dot16(v128.load(a + qs + j), c));
    c2 = i16x8.add(c2, dot16(v128.load(a + 2 * qs + j), c));
    c3 = i16x8.add(c3, dot16(v128.load(a + 3 * qs + j), c));
    z = times3(z);
  }
  const c = tq1HighTrits(p);
  c0 = i16x8.add(c0, dot16(v128.load(a, 240), c));
  c1 = i16x8.add(c1, dot16(v128.load(a + qs, 240), c));
  c2 = i16x8.add(c2, dot16(v128.load(a + 2 * qs, 240), c));
  c3 = i16x8.add(c3, dot16(v128.load(a + 3 * qs, 240), c));
  return hsum4x32(
    i32x4.extadd_pairwise_i16x8_s(c0),
    i32x4.extadd_pairwise_i16x8_s(c1),
    i32x4.extadd_pairwise_i16x8_s(c2),
    i32x4.extadd_pairwise_i16x8_s(c3),
  );
}

/**
 * TQ1_0 rows r0..r1, one row at a time: groups of 4 tokens share each decoded trit vector
 * (tq1BlockT4: 0.39× the time of token by token at m = 16, 6912×2560), then the last m % 4 tokens
 * one by one. A version with four rows at once (rows in lanes) took 1.7× (relaxed) and 1.45×
 * (SIMD128) the time at 6912×2560 (V8 spilled its registers).
 */
export function mm_tq1(
  w: usize, k: i32, r0: i32, r1: i32,
  m: i32, q: usize, qStride: i32, scales: usize, bsum: usize, bsStride: i32,
  oscale: f32, out: usize, outStride: i32, mode: i32,
): void {
  const nb = k >> 8;
  const rb = <usize>(nb * TQ1_BLOCK);
  const qs = <usize>qStride;
  const bss = <usize>bsStride << 2;
  const os = <usize>outStride << 2;
  let t = 0;
  for (; t + 4 <= m; t += 4) {
    const s = v128.load(scales + (<usize>t << 2));
    const qt = q + <usize>t * qs;
    const bt = bsum + <usize>t * bss;
    const oss = f32x4.splat(oscale);
    for (let r = r0; r < r1; r++) {
      const p = w + <usize>r * rb;
      let acc = f32x4.splat(0); // tokens in lanes
      for (let b = 0; b < nb; b++) {
        const o = <usize>(b * TQ1_BLOCK);
        const bo = bt + (<usize>b << 2);
        let S = i32x4.splat(load<i32>(bo));
        S = i32x4.replace_lane(S, 1, load<i32>(bo + bss));
        S = i32x4.replace_lane(S, 2, load<i32>(bo + 2 * bss));
        S = i32x4.replace_lane(S, 3, load<i32>(bo + 3 * bss));
        const D = i32x4.sub(tq1BlockT4(p + o, qt + (<usize>b << 8), qs), S);
        acc = f32x4.add(acc, f32x4.mul(f32x4.convert_i32x4_s(D), f32x4.splat(f16ToF32(load<u16>(p + o + 52)))));
      }
      store4s(out + <usize>t * os + (<usize>r << 2), os, f32x4.mul(f32x4.div(acc, s), oss), mode);
    }
  }
  for (; t < m; t++) {
    const s = load<f32>(scales + (<usize>t << 2));
    const qt = q + <usize>t * qs;
    const bt = bsum + <usize>t * bss;
    const ot = out + <usize>t * os;
    for (let r = r0; r < r1; r++) {
      const p = w + <usize>r * rb;
      let acc: f32 = 0;
      for (let b = 0; b < nb; b++) {
        const o = <usize>(b * TQ1_BLOCK);
        const D = hsum32(tq1Block(p + o, qt + (<usize>b << 8))) - load<i32>(bt + (<usize>b << 2));
        acc = acc + <f32>D * f16ToF32(load<u16>(p + o + 52));
      }
      storeLane(ot + (<usize>r << 2), (acc / s) * oscale, mode);
    }
  }
}
