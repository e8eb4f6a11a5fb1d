// The persistent chains' pieces (k_ffn_chain.cu, k_layer_chain.cu): one GEMV phase of a
// cooperative launch for one token (this block's row groups, the exact GEMV's mapping and bits)
// and the per-block norm that makes a phase's int8 input in shared memory.
#pragma once

#include "bn_device.cuh"
#include "bn_epilogue.h"
#include "bn_gemv.cuh"

namespace bn {

// This thread's row in row group vb (TPR lanes per row, 4 warps): gemv_block's mapping.
template <int TPR>
__device__ __forceinline__ int chain_row(int vb) {
  constexpr int RPW = 32 / TPR;  // rows per warp
  const int lane = threadIdx.x & 31;
  return vb * (4 * RPW) + (int)(threadIdx.x >> 5) * RPW + lane / TPR;
}

// A row's lane sums to its output: the butterfly over the row's TPR lanes, then lane 0 of the row
// scales it and runs the epilogue (the (one) token).
template <int TPR>
__device__ __forceinline__ void chain_finish(const Mat &W, int32_t qsum, float qscale, const Epi &e, int row, int acc) {
#pragma unroll
  for (int o = TPR / 2; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  const bool valid = row < W.n && (threadIdx.x & 31) % TPR == 0;
  float y = 0.f;
  if (valid) y = bitlinear_out(acc - qsum, qscale, W.sm, row);
  const float yp = __shfl_xor_sync(0xffffffffu, y, TPR);  // row ^ 1, for the gate/up pairs
  if (valid) epi_apply(e, 0, row, y, yp);
}

// This lane's sum over its chunks of row group `vb` (gemv_block's mapping and arithmetic for
// M = 1). q: the int8 row (shared memory when SH). `loaded`: w already holds the row's first G
// chunks (chain_phase's prefetch).
template <int TPR, int G, bool SH>
__device__ __forceinline__ int chain_acc(const Mat &W, const int8_t *q, int vb, uint4 (&w)[G], bool loaded) {
  const int tx = (threadIdx.x & 31) % TPR, row = chain_row<TPR>(vb);
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
  return acc;
}

// Row group `vb` of a GEMV with one token, to its outputs: qsum/qscale are q's Σq and scale.
template <int TPR, int G, bool SH>
__device__ __forceinline__ void chain_rows(const Mat &W, const int8_t *q, int32_t qsum, float qscale, const Epi &e,
                                           int vb, uint4 (&w)[G], bool loaded) {
  chain_finish<TPR>(W, qsum, qscale, e, chain_row<TPR>(vb), chain_acc<TPR, G, SH>(W, q, vb, w, loaded));
}

// ---- staged weights (the persistent layer and step, LayerChain::stage_weights) ----------------
// A block runs its row groups blockIdx.x, + gridDim.x, … one after another. Without staging, the
// first group's chunks load into registers before the phase's barrier and norm, and every later
// group (and every later round of G chunks) waits for its own L2 or DRAM round trip after them:
// at the 2B-4T shapes and 264 blocks, gate/up runs up to 4 groups per block, down 2 groups of 2
// rounds each, QKV and o 2 groups. Staged, the groups after the first are copied into shared
// memory with cp.async while the phase's norm waits for x (block_norm_quant_t's after_x), so
// after the norm the GEMV reads them there. Slot s of thread t is wst[s * 128 + t]: each thread
// copies exactly the chunks it later reads (no barrier), and a quarter-warp's 8 lanes read 128
// contiguous bytes (no bank conflict). kChainWSlots slots per thread (32 KB per block); groups
// beyond them load as before. Integer sums: the same bits.
constexpr int kChainWSlots = 16;
constexpr size_t kChainWStageBytes = (size_t)kChainWSlots * 128 * 16;

// chain_acc from the staged slots ws of row group vb (slot k: the lane's chunk tx + k·TPR), cpl
// per row.
template <int TPR, bool SH>
__device__ __forceinline__ int chain_acc_staged(const Mat &W, const int8_t *q, int vb, const uint4 *ws, int cpl) {
  const int tx = (threadIdx.x & 31) % TPR, row = chain_row<TPR>(vb), cpr = W.k >> 6;
  int acc = 0;
  if (row < W.n)
#pragma unroll 1
    for (int k = 0; k < cpl; k++)
      if (tx + k * TPR < cpr) acc = chunk_dot<SH>(ws[k * 128 + threadIdx.x], q, tx + k * TPR, acc);
  return acc;
}

// STG: `before` takes `issue`, which copies this block's groups 1..ns into wst (one commit group,
// possibly empty) and must be called once; without STG (or wst null) nothing is staged.
template <int TPR, int G, bool SH, bool STG, typename Before>
__device__ __forceinline__ void chain_phase_t(const Mat &W, const int8_t *q, const int32_t *qsum, const float *qscale,
                                              const Epi &e, Before before, uint4 *wst) {
  constexpr int RPB = 4 * (32 / TPR);  // rows per group
  const int groups = (W.n + RPB - 1) / RPB;
  // The weights do not depend on the data: the first group's first chunks load before `before`
  // (the barrier and the norm that make this phase's input), so that round trip overlaps them.
  uint4 w[G];
  {
    const int row = chain_row<TPR>((int)blockIdx.x);
    if ((int)blockIdx.x < groups && row < W.n)
      load_group<G, TPR>(w, (const uint4 *)(W.w + (size_t)row * (size_t)(W.k >> 2)), (threadIdx.x & 31) % TPR,
                         W.k >> 6);
  }
  if constexpr (STG) {
    const int cpr = W.k >> 6, cpl = (cpr + TPR - 1) / TPR, b = (int)blockIdx.x, nb = (int)gridDim.x;
    const int mine = b < groups ? (groups - 1 - b) / nb + 1 : 0;
    const int ns = wst ? min(mine - 1, kChainWSlots / cpl) : 0;  // staged groups (after the first)
    before([&] {
      const int tx = (threadIdx.x & 31) % TPR;
#pragma unroll 1
      for (int i = 1; i <= ns; i++) {
        const int row = chain_row<TPR>(b + i * nb);
        if (row >= W.n) continue;
        const uint4 *wr = (const uint4 *)(W.w + (size_t)row * (size_t)(W.k >> 2));
#pragma unroll 1
        for (int k = 0; k < cpl; k++)
          if (tx + k * TPR < cpr) cp_async16(wst + ((i - 1) * cpl + k) * 128 + threadIdx.x, wr + tx + k * TPR);
      }
      cp_async_commit();
    });
    const int32_t S = *qsum;
    const float sc = *qscale;
    int i = 0;
    for (int vb = b; vb < groups; vb += nb, i++) {
      int acc;
      if (i == 0 || i > ns) {
        acc = chain_acc<TPR, G, SH>(W, q, vb, w, i == 0);
      } else {
        if (i == 1) cp_async_wait_all();  // this thread's own copies: no barrier needed
        acc = chain_acc_staged<TPR, SH>(W, q, vb, wst + (i - 1) * cpl * 128, cpl);
      }
      chain_finish<TPR>(W, S, sc, e, chain_row<TPR>(vb), acc);  // (one epilogue in the code)
    }
  } else {
    before();
    const int32_t S = *qsum;
    const float sc = *qscale;
    for (int vb = blockIdx.x; vb < groups; vb += gridDim.x)
      chain_rows<TPR, G, SH>(W, q, S, sc, e, vb, w, vb == (int)blockIdx.x);
  }
}

// This block's row groups of one GEMV phase, after `before()` (its first weights load before it).
// qsum, qscale: read after `before()` (shared memory when SH).
template <bool SH, typename Before>
__device__ __forceinline__ void chain_phase(const Mat &W, const int8_t *q, const int32_t *qsum, const float *qscale,
                                            const Epi &e, Before before) {
  if (gemv_lanes_per_row(W.n) == 16) chain_phase_t<16, 4, SH, false>(W, q, qsum, qscale, e, before, nullptr);
  else chain_phase_t<8, 8, SH, false>(W, q, qsum, qscale, e, before, nullptr);
}

// The same with staged weights (wst: kChainWStageBytes of shared memory, or null: none staged):
// `before(issue)` calls issue() once, where the copies should start (after x's, in the norm).
template <bool SH, typename Before>
__device__ __forceinline__ void chain_phase_staged(const Mat &W, const int8_t *q, const int32_t *qsum,
                                                   const float *qscale, const Epi &e, Before before, uint4 *wst) {
  if (gemv_lanes_per_row(W.n) == 16) chain_phase_t<16, 4, SH, true>(W, q, qsum, qscale, e, before, wst);
  else chain_phase_t<8, 8, SH, true>(W, q, qsum, qscale, e, before, wst);
}

// Normalizes and quantizes nq's vector (token 0) into this block's shared row q, *qscale, *qsum.
// STAGED: ws holds nq.w, copied by stage_norm_w (barrier_norm, k_layer_chain.cu), and after_x()
// (one commit group) runs once x's copies are in flight (block_norm_quant_t).
template <bool STAGED = false, typename AfterX = NoCopies>
__device__ __forceinline__ void chain_norm(const NormQuant &nq, int8_t *q, float *qscale, int32_t *qsum, float4 *xs,
                                           const float4 *ws = nullptr, AfterX after_x = AfterX()) {
  NormQuant p = nq;
  p.q = q;
  p.scale = qscale;
  p.sum = qsum;
  p.ldq = 0;
  p.f16_out = nullptr;
  p.f32_out = nullptr;
  block_norm_quant_t<STAGED>(p, 0, xs, ws, after_x);  // ends with __syncthreads: q, *qscale and *qsum are visible
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
