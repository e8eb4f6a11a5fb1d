// Device routines of the fast numerics (bn_fast.h): the producer side of a norm point (per-block
// partials, then the last block's reduction to the two scalars per token) and the consumer side
// (a GEMV block normalizes and quantizes its input into shared memory). Mirrored by bn_emu.cpp.
#pragma once

#include "bn_device.cuh"

namespace bn {

__device__ __forceinline__ uint64_t warp_max_u64(uint64_t v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const uint64_t u = __shfl_xor_sync(0xffffffffu, v, o);
    v = u > v ? u : v;
  }
  return v;
}

// Block-wide (128 threads) reduction of one f64 sum and one key max: per-thread values, xor
// butterflies per warp, warps combined in order. All threads get the result.
__device__ __forceinline__ void block_sum_key(double &ss, uint64_t &key) {
  BN_SHARED(double, rd, [kNormThreads / 32]);
  BN_SHARED(uint64_t, rk, [kNormThreads / 32]);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  ss = warp_sum_d(ss);
  key = warp_max_u64(key);
  if (lane == 0) {
    rd[warp] = ss;
    rk[warp] = key;
  }
  __syncthreads();
  ss = rd[0];
  key = rk[0];
  for (int w = 1; w < kNormThreads / 32; w++) {
    ss += rd[w];
    key = rk[w] > key ? rk[w] : key;
  }
  __syncthreads();  // the shared slots are reused by the next call
}

// The last producer block: parts 0..nparts-1 of every token -> ns.stats (thread t sums parts t,
// t+128, ... in order, then block_sum_key); with so.q also the int8 rows, their scale and Σq.
__device__ __forceinline__ void block_stats_finish(const StatsOut &so, int M, int nparts) {
  for (int m = 0; m < M; m++) {
    double ss = 0.0;
    uint64_t key = 0;
    for (int p = threadIdx.x; p < nparts; p += kNormThreads) {
      ss += __ldcg(so.part_ss + (size_t)m * so.part_ld + p);
      const uint64_t k = __ldcg((const unsigned long long *)so.part_key + (size_t)m * so.part_ld + p);
      key = k > key ? k : key;
    }
    block_sum_key(ss, key);  // every thread has the totals, and computes the same scalars
    const int i = fast_key_index(key);
    const float *x = so.ns.x + (size_t)m * so.ns.ldx;
    float sc, s;
    fast_finish(ss, so.ns.n, so.ns.eps, __ldcg(x + i), __ldg(so.ns.w + i), &sc, &s);
    if (threadIdx.x == 0) {
      so.ns.stats[2 * m] = sc;
      so.ns.stats[2 * m + 1] = s;
    }
    if (so.q) {  // BN_FAST_QUANT=tail: the int8 rows here, once, for consumers that read them
      BN_SHARED(int, red, [kNormThreads / 32]);
      NormQuant out{};
      out.q = so.q;
      out.ldq = so.ldq;
      out.scale = so.scale;
      out.sum = so.sum;
      int sum = 0;
      for_each_normed(x, so.ns.w, so.ns.n >> 2, sc, [&](int j, const float4 &y) { quant_store(out, m, j, y, s, sum); });
      finish_quant(out, m, s, sum, red);
      __syncthreads();
    }
  }
}

// Consumer side: q[m*ldq + i] = quant(fround(fround(x·sc)·w), s) for i < ns.n (the rest of the
// row up to ldq is zero), S[m] = Σq and scale[m] = s in shared memory. ns.n % 4 == 0.
// NB: elements of x and w loaded per round (registers: 8·NB).
template <int MT, int NB = kNqBatch>
__device__ __forceinline__ void block_quant_in(const NormStats &ns, int M, int8_t *q, int ldq, int *S, float *scale) {
  BN_SHARED(int, red, [MT][kNormThreads / 32]);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int n4 = ns.n >> 2, l4 = ldq >> 2;
#pragma unroll
  for (int m = 0; m < MT; m++) {
    if (m >= M) break;
    const float sc = __ldcg(ns.stats + 2 * m), s = __ldcg(ns.stats + 2 * m + 1);
    const float *x = ns.x + (size_t)m * ns.ldx;
    char4 *qm = (char4 *)(q + (size_t)m * ldq);
    int sum = 0;
    // NB elements of x and w are loaded before the first is used: quant_one branches on the
    // data, and ptxas does not move a global load above a branch, so a plain loop (even
    // unrolled) waited one L2 round trip per element: 5 per thread at K = 2560, 14 at 6912,
    // on the critical path of every fast GEMV block.
    for (int i0 = threadIdx.x; i0 < l4; i0 += NB * kNormThreads) {
      float4 xv[NB], wv[NB];
      nq_load<true, NB>(xv, x, i0, n4);  // zeros past n4
      nq_load<false, NB>(wv, ns.w, i0, n4);
#pragma unroll
      for (int b = 0; b < NB; b++) {
        const int i = i0 + b * kNormThreads;
        if (i >= l4) break;
        qm[i] = i < n4 ? quant4(nq_norm(xv[b], sc, wv[b]), s, sum) : make_char4(0, 0, 0, 0);
      }
    }
    sum = warp_sum_i(sum);
    if (lane == 0) red[m][warp] = sum;
    if (threadIdx.x == 0) scale[m] = s;
  }
  __syncthreads();
  if (threadIdx.x < M) {
    int t = 0;
    for (int w = 0; w < kNormThreads / 32; w++) t += red[threadIdx.x][w];
    S[threadIdx.x] = t;
  }
  __syncthreads();
}

}  // namespace bn
