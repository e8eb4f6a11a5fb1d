// The persistent chains' pieces (k_ffn_chain.cu, k_layer_chain.cu): one GEMV phase of a
// cooperative launch for one token (this block's row groups, the exact GEMV's mapping and bits)
// and the per-block norm that makes a phase's int8 input in shared memory.
#pragma once

#include "bn_device.cuh"
#include "bn_epilogue.h"
#include "bn_gemv.cuh"

namespace bn {

// Row group `vb` of a GEMV with one token: gemv_block's mapping and arithmetic for M = 1. q: the
// int8 row (shared memory when SH), qsum/qscale its Σq and scale. `loaded`: w already holds the
// row's first G chunks (chain_phase's prefetch).
template <int TPR, int G, bool SH>
__device__ __forceinline__ void chain_rows(const Mat &W, const int8_t *q, int32_t qsum, float qscale, const Epi &e,
                                           int vb, uint4 (&w)[G], bool loaded) {
  constexpr int RPW = 32 / TPR;  // rows per warp
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, ty = lane / TPR, tx = lane % TPR;
  const int row = vb * (4 * RPW) + warp * RPW + ty;
  const int cpr = W.k >> 6;  // 16-byte chunks per row
  const bool live = row < W.n;
  const uint4 *wr = (const uint4 *)(W.w + (size_t)(live ? row : 0) * (size_t)(W.k >> 2));
  int acc = 0;
  if (live) {
    if (!loaded) load_group<G, TPR>(w, wr, tx, cpr);
    for (int c0 = tx;;) {
#pragma unroll
      for (int j = 0; j < G; j++)
        if (c0 + j * TPR < cpr) acc = chunk_dot<SH>(w[j], q, c0 + j * TPR, acc);
      c0 += G * TPR;
      if (c0 >= cpr) break;
      load_group<G, TPR>(w, wr, c0, cpr);
    }
  }
#pragma unroll
  for (int o = TPR / 2; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  const bool valid = live && tx == 0;  // lane 0 of a row finishes the (one) token
  float y = 0.f;
  if (valid) y = bitlinear_out(acc - qsum, qscale, W.sm, row);
  const float yp = __shfl_xor_sync(0xffffffffu, y, TPR);  // row ^ 1, for the gate/up pairs
  if (valid) epi_apply(e, 0, row, y, yp);
}

template <int TPR, int G, bool SH, typename Before>
__device__ __forceinline__ void chain_phase_t(const Mat &W, const int8_t *q, const int32_t *qsum, const float *qscale,
                                              const Epi &e, Before before) {
  constexpr int RPB = 4 * (32 / TPR);  // rows per group
  const int groups = (W.n + RPB - 1) / RPB;
  // The weights do not depend on the data: the first group's first chunks load before `before`
  // (the barrier and the norm that make this phase's input), so that round trip overlaps them.
  uint4 w[G];
  {
    const int lane = threadIdx.x & 31, row = (int)blockIdx.x * RPB + (threadIdx.x >> 5) * (32 / TPR) + lane / TPR;
    if ((int)blockIdx.x < groups && row < W.n)
      load_group<G, TPR>(w, (const uint4 *)(W.w + (size_t)row * (size_t)(W.k >> 2)), lane % TPR, W.k >> 6);
  }
  before();
  const int32_t S = *qsum;
  const float sc = *qscale;
  for (int vb = blockIdx.x; vb < groups; vb += gridDim.x) chain_rows<TPR, G, SH>(W, q, S, sc, e, vb, w, vb == (int)blockIdx.x);
}

// This block's row groups of one GEMV phase, after `before()` (its first weights load before it).
// qsum, qscale: read after `before()` (shared memory when SH).
template <bool SH, typename Before>
__device__ __forceinline__ void chain_phase(const Mat &W, const int8_t *q, const int32_t *qsum, const float *qscale,
                                            const Epi &e, Before before) {
  if (gemv_lanes_per_row(W.n) == 16) chain_phase_t<16, 4, SH>(W, q, qsum, qscale, e, before);
  else chain_phase_t<8, 8, SH>(W, q, qsum, qscale, e, before);
}

// Normalizes and quantizes nq's vector (token 0) into this block's shared row q, *qscale, *qsum.
// STAGED: ws (nullable) holds nq.w, staged by stage_norm_w before the phase's barrier.
template <bool STAGED = false>
__device__ __forceinline__ void chain_norm(const NormQuant &nq, int8_t *q, float *qscale, int32_t *qsum, float4 *xs,
                                           const float4 *ws = nullptr) {
  NormQuant p = nq;
  p.q = q;
  p.scale = qscale;
  p.sum = qsum;
  p.ldq = 0;
  p.f16_out = nullptr;
  p.f32_out = nullptr;
  block_norm_quant_t<STAGED>(p, 0, xs, ws);  // ends with __syncthreads: q, *qscale and *qsum are visible
}

// ---- host side of the persistent kernels ------------------------------------------------------

// How many blocks of 128 threads with `smem` bytes of dynamic shared memory can be resident on
// sm_count SMs at once (0: none; the simulation: its cooperative limit, 8192 threads).
template <typename K>
int chain_resident_blocks(K kernel, int sm_count, size_t smem) {
#if defined(BN_SIM)
  (void)kernel;
  (void)sm_count;
  (void)smem;
  return 8192 / 128;
#else
  int per_sm = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, 128, smem) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return per_sm * sm_count;
#endif
}

// One cooperative launch of a persistent kernel (`blocks` of 128 threads) after zeroing its
// `sync_bytes` of synchronization words at bar (the barrier's counter first): they start at 0
// for every launch and graph replay (the memset is a node of the graph).
template <typename... P, typename... A>
bn_status launch_chain(const char *what, void (*k)(P...), int blocks, size_t smem, unsigned long long *bar,
                       size_t sync_bytes, cudaStream_t s, A... args) {
  if (blocks < 1) {
    set_error("%s: %d blocks", what, blocks);
    return BN_ERR_INVALID_ARGUMENT;
  }
  if (const bn_status st = check_launch(what, cudaMemsetAsync(bar, 0, sync_bytes, s))) return st;
  return launch_coop(what, k, dim3((unsigned)blocks), dim3(128), smem, s, args...);
}

}  // namespace bn
