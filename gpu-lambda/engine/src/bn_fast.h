// Fast numerics (bn_options.numerics = BN_NUMERICS_FAST): host/device helpers shared by the
// kernels and the CPU emulation.
//
// Why: at batch 1 the exact engine spends most of a layer in work that must be serial to
// reproduce the reference's bits: every RMSNorm's f64 sum runs in one 128-thread block after its
// producer has finished (4 per layer), and every attention output dimension sums p·v over all
// positions in order in one thread. The fast mode keeps the ternary matmuls exact (integer
// accumulators) and changes only these orders:
//
// RMSNorm + quantization ("norm point"): the producer kernel's blocks each sum x² (f64) over
//   their own outputs and keep the element with the largest |fround(x·w)| (fast_key); its last
//   block sums the parts in a fixed order and writes two scalars per token: sc (as rms_scale)
//   and s = act_scale(|fround(fround(x[i*]·sc)·w[i*])|) for that element i*. Every block of the
//   consumer then quantizes x itself with the reference's formula q = quant(fround(fround(x·sc)·w), s).
//   Both differ from the exact mode only when the f64 sum's rounding reaches the f32 mean or when
//   two elements tie within an f32 rounding for the maximum: q is nearly always bit-identical.
// Attention (split-KV, "flash decoding"): token m's T positions are cut into `splits` ranges;
//   each range's block computes the exact f64 scores, its own max, e = exp(s − max) (f32 of an
//   f64 exp), Σe (f64) and Σ e·v in f32 in position order (no f16 rounding of the weights); the
//   head's last block combines the ranges in order in f64. Differs from the exact
//   softmax·V by more than f32 rounding: the exact path rounds each weight p to f16 before p·V
//   (as bitnet.cpp's non-flash path does) and this one does not, ~2^-11 relative per weight. On the
//   random 2B-4T model (gpu/fast_agreement_2b4t, 64 teacher-forced steps) greedy tokens agree at
//   54/64, mean softmax TVD 0.103 (run 6 and the emulation). Rounding p the exact way (tried on the
//   emulation; it needs the global max and sum before p·V, another pass) gives 57/64, TVD 0.075:
//   the random model amplifies any last-bit difference alike, so it was not kept (RESULTS.md).
//
// Everything is deterministic: fixed reduction orders, tickets instead of float atomics.
#pragma once

#include "bn_numerics.h"

namespace bn {

constexpr int kFastMaxSplits = 16;

// Orders elements by fround(|x·w|), ties to the lower index (max of the keys wins).
// (The sign bit is cleared rather than negating: −0.0 must key as 0.)
BN_HD uint64_t fast_key(float x, float w, int i) {
  const uint32_t a = f32_bits(fmul(x, w)) & 0x7fffffffu;
  return ((uint64_t)a << 32) | (uint64_t)(0xffffffffu - (uint32_t)i);
}
BN_HD int fast_key_index(uint64_t key) { return (int)(0xffffffffu - (uint32_t)(key & 0xffffffffu)); }

// The two scalars of a norm point from the reduced parts (x_best, w_best: the key's element).
BN_HD void fast_finish(double sumsq, int n, float eps, float x_best, float w_best, float *sc, float *s) {
  *sc = rms_scale(sumsq, n, eps);
  *s = act_scale(bits_f32(f32_bits(fmul(fmul(x_best, *sc), w_best)) & 0x7fffffffu));
}

// Positions per split range for a token attending to T positions.
BN_HD int fast_split_len(int T, int splits) { return (T + splits - 1) / splits; }

// Split ranges per head: enough blocks to cover the GPU about twice at this batch (the count is
// fixed when a decode graph is captured, so it depends on n_head and M only).
inline int fast_attn_splits(int n_head, int M) {
  int s = (256 + n_head * M - 1) / (n_head * M);
  return s < 1 ? 1 : (s > kFastMaxSplits ? kFastMaxSplits : s);
}

}  // namespace bn
