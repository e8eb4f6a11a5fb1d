/**
 * The F16 LM head for two tokens at once (batched decode, logits of every position): each
 * weight is loaded and widened to f64 once for both tokens. The numerics are head_f16's
 * (floatdot.ts): Σ w·xr in f64 with a bound on its error and on the reference's, both ends rounded
 * to f32; rows whose ends differ take the reference's exact path, for that token only. So every
 * token's logits are the bits the reference gives it.
 *
 * Per 8 weights: the f16 bits become w·2^-112 as f32 (head_f16's trick), then four f64x2 (shared);
 * each token then adds w·xd with xd = xr·2^112 in f64 (products of two f16 values are exact in
 * f64, so relaxed_madd, fused or not, rounds once: the same sum either way).
 *
 * Token buffer (head_f16m_prep, token t at X + t·head_f16m_stride(k)): f64 max|xr|, f64 ‖xr‖·(1+1e-9),
 * then at 64 f64 xd[k] (xd[i] = xr[i]·2^112 exactly: |xr| ≤ 65504).
 */
import { f16ToF32, madd64 } from './common';
import { bracket, exactRow, f16Scaled4, T_F16 } from './floatdot';

/** Bytes of one token's buffer in X for width k. */
export function head_f16m_stride(k: i32): i32 {
  return 8 * k + 64;
}

/** Fills the buffers of T tokens whose rounded activations (round_act) are at xr + t·xrStride. */
export function head_f16m_prep(xr: usize, xrStride: usize, k: i32, T: i32, X: usize): void {
  const xs = <usize>head_f16m_stride(k);
  for (let t = 0; t < T; t++) {
    const x = xr + <usize>t * xrStride;
    const B = X + <usize>t * xs;
    let maxXr: f64 = 0;
    let q: f64 = 0;
    for (let i = 0; i < k; i++) {
      const v = <f64>load<f32>(x + (<usize>i << 2));
      maxXr = max(maxXr, abs(v));
      q += v * v;
      store<f64>(B + 64 + (<usize>i << 3), v * 5.192296858534828e33); // 2^112
    }
    store<f64>(B, maxXr);
    store<f64>(B + 8, sqrt<f64>(q) * (1.0 + 1.0e-9));
  }
}

/** The four lanes of two f64x2 accumulators, summed. */
@inline function sum2(a: v128, b: v128): f64 {
  const s = f64x2.add(a, b);
  return f64x2.extract_lane(s, 0) + f64x2.extract_lane(s, 1);
}

/**
 * Row r's logit for one token from its f64 lane sum v (buffer B, rounded activations x): the tail
 * past the last multiple of 8 in order, then head_f16's bracket; an undecided row takes the exact path.
 */
function logit(v: f64, B: usize, row: usize, k: i32, r: i32, x: usize, absSums: usize, tol: f64, scratch: usize): f32 {
  for (let i = k & ~7; i < k; i++) v += <f64>f16ToF32(load<u16>(row + (<usize>i << 1))) * <f64>load<f32>(x + (<usize>i << 2));
  const A = absSums + (<usize>r << 4);
  const res = bracket(v, tol * min(load<f64>(A) * load<f64>(B), load<f64>(A, 8) * load<f64>(B, 8)));
  return res != 0 ? reinterpret<f32>(<u32>res) : exactRow(T_F16, row, k, x, scratch);
}

/**
 * F16 head rows r0..r1 for two tokens: buffers at X and X + head_f16m_stride(k) (head_f16m_prep),
 * rounded activations at xr and xr + xrStride, rows stored at out and out + ostride. scratch: 4k
 * bytes (the exact path).
 *
 * Measured (16000×2560, V8 in Node 22, relaxed build): 0.69× the time of two head_f16 calls. Four
 * tokens at once ran no faster per token (0.75×): their f64 activations (80 KB) no longer fit L1.
 */
export function head_f16_2(w: usize, k: i32, r0: i32, r1: i32, X: usize, xr: usize, xrStride: usize, absSums: usize, out: usize, ostride: usize, scratch: usize): void {
  const rb = <usize>k << 1;
  const xs = <usize>head_f16m_stride(k);
  const k8 = k & ~7;
  const tol = <f64>(k + 16) * 2.220446049250313e-16;
  const mask = i32x4.splat(0x8fffe000);
  const XA = X + 64;
  const XB = XA + xs;
  for (let r = r0; r < r1; r++) {
    const row = w + <usize>r * rb;
    // two accumulators a token: dependency chains of two madds per 8 weights
    let a0 = f64x2.splat(0), a1 = f64x2.splat(0), b0 = f64x2.splat(0), b1 = f64x2.splat(0);
    for (let i = 0; i < k8; i += 8) {
      v128.load(row + (<usize>i << 1), 512); // software prefetch (a dropped load)
      const v = v128.load(row + (<usize>i << 1));
      const wl = f16Scaled4(v, false, mask); // w·2^-112
      const wh = f16Scaled4(v, true, mask);
      const w0 = f64x2.promote_low_f32x4(wl);
      const w1 = f64x2.promote_low_f32x4(v128.shuffle<i32>(wl, wl, 2, 3, 2, 3));
      const w2 = f64x2.promote_low_f32x4(wh);
      const w3 = f64x2.promote_low_f32x4(v128.shuffle<i32>(wh, wh, 2, 3, 2, 3));
      const o = <usize>i << 3;
      a0 = madd64(w0, v128.load(XA + o), a0);
      a1 = madd64(w1, v128.load(XA + o, 16), a1);
      b0 = madd64(w0, v128.load(XB + o), b0);
      b1 = madd64(w1, v128.load(XB + o, 16), b1);
      a0 = madd64(w2, v128.load(XA + o, 32), a0);
      a1 = madd64(w3, v128.load(XA + o, 48), a1);
      b0 = madd64(w2, v128.load(XB + o, 32), b0);
      b1 = madd64(w3, v128.load(XB + o, 48), b1);
    }
    const o = out + (<usize>r << 2);
    store<f32>(o, logit(sum2(a0, a1), X, row, k, r, xr, absSums, tol, scratch));
    store<f32>(o + ostride, logit(sum2(b0, b1), X + xs, row, k, r, xr + xrStride, absSums, tol, scratch));
  }
}
