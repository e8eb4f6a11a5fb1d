/**
 * A tiny correctness probe run by the loader before it trusts a build (src/kernels/wasm/loader.ts):
 * some engines validate relaxed SIMD but compute it wrong (Node 20's V8 returns twice the dot and
 * drops the accumulator of i32x4.relaxed_dot_i8x16_i7x16_add_s). Writes i32 results at out[0..12):
 *   0..3  i16x8 dot16 lanes summed pairwise (i32x4), 4..7 i32x4 relaxed dot-add (relaxed build only,
 *   else the same values computed without it), 8..11 f32 nearest/trunc_sat round trip.
 * Inputs: a (16 × i8) at p, b (16 × u7) at p + 16, acc (4 × i32) at p + 32.
 */
import { dot16 } from './common';

export function selftest(p: usize, out: usize): void {
  const a = v128.load(p);
  const b = v128.load(p, 16);
  const acc = v128.load(p, 32);
  v128.store(out, i32x4.extadd_pairwise_i16x8_s(dot16(a, b)));
  if (ASC_FEATURE_RELAXED_SIMD) {
    v128.store(out, i32x4.relaxed_dot_i8x16_i7x16_add_s(a, b, acc), 16);
  } else {
    v128.store(out, i32x4.add(i32x4.extadd_pairwise_i16x8_s(dot16(a, b)), acc), 16);
  }
  const f = f32x4(2.5, -2.5, 3.5, -0.5);
  v128.store(out, i32x4.trunc_sat_f32x4_s(f32x4.nearest(f)), 32);
}
