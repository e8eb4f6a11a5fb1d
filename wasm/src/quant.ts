/**
 * Per-token int8 activation quantization (I8_S, docs/bitnet-formats.md §2.3), bit-exact with
 * quantizeActivations() of src/model/reference.ts:
 *   amax = max(1e-5, max|x|) (f64 compare), s = f32(127 / amax), q = clamp(rhe(f32(x·s)), −128, 127)
 * plus S = Σq and the per-256-block sums S_b that the ternary kernels subtract (their codes are 0..2).
 *
 * Layout written for one token: q[0..k) int8 (k padded with zeros to a multiple of 16 by the
 * caller's buffer), scale (f32), sum (i32), bsum[0..ceil(k/256)) (i32).
 */

/** max |x_i| over n floats, NaN ignored (like the reference's `a > amax`). */
export function absmax(x: usize, n: i32): f32 {
  let m = f32x4.splat(0);
  let i = 0;
  for (; i + 4 <= n; i += 4) m = f32x4.pmax(m, f32x4.abs(v128.load(x + (<usize>i << 2))));
  let r = max(max(f32x4.extract_lane(m, 0), f32x4.extract_lane(m, 1)), max(f32x4.extract_lane(m, 2), f32x4.extract_lane(m, 3)));
  for (; i < n; i++) {
    const a = abs(load<f32>(x + (<usize>i << 2)));
    if (a > r) r = a;
  }
  return r;
}

/**
 * Quantizes x[0..k) into q (int8), returns the scale; writes Σq to *sumOut and the 256-block
 * sums to bsum[0..ceil(k/256)).
 */
export function quantize_act(x: usize, k: i32, q: usize, sumOut: usize, bsum: usize): f32 {
  let amax: f64 = 1e-5;
  const m = <f64>absmax(x, k);
  if (m > amax) amax = m;
  const s = <f32>(127.0 / amax);
  const sv = f32x4.splat(s);
  let total = 0;
  for (let b = 0; b < k; b += 256) {
    const end = min(b + 256, k);
    let acc = i32x4.splat(0);
    let i = b;
    for (; i + 16 <= end; i += 16) {
      const p = x + (<usize>i << 2);
      const q0 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v128.load(p), sv)));
      const q1 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v128.load(p, 16), sv)));
      const q2 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v128.load(p, 32), sv)));
      const q3 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v128.load(p, 48), sv)));
      const v = i8x16.narrow_i16x8_s(i16x8.narrow_i32x4_s(q0, q1), i16x8.narrow_i32x4_s(q2, q3));
      v128.store(q + <usize>i, v);
      acc = i32x4.add(acc, i32x4.extadd_pairwise_i16x8_s(i16x8.extadd_pairwise_i8x16_s(v)));
    }
    let bs = i32x4.extract_lane(acc, 0) + i32x4.extract_lane(acc, 1) + i32x4.extract_lane(acc, 2) + i32x4.extract_lane(acc, 3);
    for (; i < end; i++) {
      // NaN -> 0 and clamping, as an Int8Array store of the reference's clamped value
      const f = nearest<f32>(load<f32>(x + (<usize>i << 2)) * s);
      const r = isNaN(f) ? 0 : f >= 127 ? 127 : f <= -128 ? -128 : <i32>f;
      store<i8>(q + <usize>i, <i8>r);
      bs += r;
    }
    store<i32>(bsum + (<usize>(b >> 8) << 2), bs);
    total += bs;
  }
  // zero padding up to a multiple of 16 so kernels may read whole vectors
  for (let i = k; (i & 15) != 0; i++) store<i8>(q + <usize>i, 0);
  store<i32>(sumOut, total);
  return s;
}
