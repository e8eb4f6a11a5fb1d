// Causal attention over the paged f16 KV cache, one block per (q head, token), 128 threads.
// Decode and prefill both use it: token m attends to positions 0..pos[m] of its sequence (the
// QKV kernel has already written every K/V row of the batch).
//
// Numerics mirror reference.ts (bitnet.cpp's non-flash path, §4.3): q is f16-rounded; each score
// is Σ q·k over the head in f64 (products of f16 values are exact), rounded to f32, times
// 1/sqrt(head_dim) in f64, rounded to f32; softmax weights e = (float)exp(s − max) in f64 summed
// in f64; p = f16(fround(e · fround(1/sum))); the output dimension d accumulates p·v in f32 in
// position order (one thread per d walks the positions sequentially: the exact reference order).
//
// Thread mapping: scores: thread i takes positions i, i+128, ... and walks the head dimension in
// order (u32 loads of two halves; the 4 q heads of a GQA group read the same K rows from L2).
// Softmax: threads stride over the positions. PV: thread d walks the pages of the block table,
// reading v rows coalesced across d.
// Scores live in dynamic shared memory (max_ctx floats).
#include <math_constants.h>

#include "bn_device.cuh"

namespace bn {

static_assert(kAttnThreads == kNormThreads, "the fused tail runs on the attention block");

__global__ void __launch_bounds__(kAttnThreads) attn_kernel(AttnParams p, int M, NormQuant tail, int has_tail,
                                                            unsigned *counter) {
  extern __shared__ float sc[];
  __shared__ float qs[256];
  __shared__ float wmax[kAttnThreads / 32];
  __shared__ double wsum[kAttnThreads / 32];
  const int h = blockIdx.x, m = blockIdx.y;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int hd = p.head_dim, kvh = h / (p.n_head / p.n_head_kv);
  const int T = p.pos[m] + 1;
  const int P = 1 << p.page_shift, mask = P - 1;
  const int32_t *bt = p.block_table + (size_t)p.slot[m] * p.max_pages;
  for (int d = threadIdx.x; d < hd; d += kAttnThreads) qs[d] = f16_to_f32(p.q16[(size_t)m * p.ldq + h * hd + d]);
  __syncthreads();

  // Scores: one thread per position, the head's dot product summed in f64 in dimension order
  // (the reference's order; every product of two f16 values is exact, so the fma is too).
  float lmax = -CUDART_INF_F;
  for (int t = threadIdx.x; t < T; t += kAttnThreads) {
    const uint16_t *kr = p.kc + ((size_t)bt[t >> p.page_shift] * P + (t & mask)) * p.kv_dim + kvh * hd;
    double acc = 0.0;
#pragma unroll 4
    for (int d = 0; d < hd; d += 2) {
      const uint32_t kk = __ldg((const uint32_t *)(kr + d));
      acc = __fma_rn((double)qs[d], (double)f16_to_f32((uint16_t)(kk & 0xffffu)), acc);
      acc = __fma_rn((double)qs[d + 1], (double)f16_to_f32((uint16_t)(kk >> 16)), acc);
    }
    const float s = (float)((double)(float)acc * p.scale);
    sc[t] = s;
    lmax = fmaxf(lmax, s);
  }
  lmax = warp_max_f(lmax);
  if (lane == 0) wmax[warp] = lmax;
  __syncthreads();
  float mx = wmax[0];
  for (int w = 1; w < kAttnThreads / 32; w++) mx = fmaxf(mx, wmax[w]);
  double ls = 0.0;
  for (int t = threadIdx.x; t < T; t += kAttnThreads) {
    const float ev = (float)exp((double)sc[t] - (double)mx);
    sc[t] = ev;
    ls += (double)ev;
  }
  ls = warp_sum_d(ls);
  if (lane == 0) wsum[warp] = ls;
  __syncthreads();
  double tot = wsum[0];
  for (int w = 1; w < kAttnThreads / 32; w++) tot += wsum[w];
  const float inv = (float)(1.0 / tot);
  for (int t = threadIdx.x; t < T; t += kAttnThreads) sc[t] = f16_round(fmul(sc[t], inv));
  __syncthreads();

  for (int d = threadIdx.x; d < hd; d += kAttnThreads) {
    float acc = 0.f;
    for (int pg = 0; pg * P < T; pg++) {
      const uint16_t *vr = p.vc + (size_t)bt[pg] * P * p.kv_dim + kvh * hd + d;
      const int tn = min(P, T - pg * P);
      const float *pp = sc + pg * P;
#pragma unroll 8
      for (int o = 0; o < tn; o++) acc = fadd(acc, fmul(pp[o], f16_to_f32(__ldg(vr + (size_t)o * p.kv_dim))));
    }
    p.out[(size_t)m * p.ldo + h * hd + d] = acc;
  }
  if (has_tail && last_block(counter)) block_tail(tail, M);
}

// The dynamic shared-memory limit is a per-function attribute: only ever raise it, so an engine
// created later with a shorter context cannot break one with a longer context.
static int g_attn_smem_max = 48 * 1024;

bn_status configure_attention(int max_ctx) {
  const int bytes = max_ctx * 4;
  if (bytes > g_attn_smem_max) {
    cudaError_t e = cudaFuncSetAttribute(attn_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
    if (e != cudaSuccess) {
      cudaGetLastError();
      set_error("attention needs %d bytes of shared memory for a context of %d: %s", bytes, max_ctx,
                cudaGetErrorString(e));
      return BN_ERR_UNSUPPORTED;
    }
  }
  if (bytes > g_attn_smem_max) g_attn_smem_max = bytes;
  return BN_OK;
}

bn_status launch_attention(const AttnParams &p, int M, const NormQuant *tail, unsigned *counter, cudaStream_t s) {
  NormQuant t{};
  if (tail) t = *tail;
  dim3 grid(p.n_head, M);
  attn_kernel<<<grid, kAttnThreads, (size_t)p.max_t * 4, s>>>(p, M, t, tail ? 1 : 0, counter);
  return check_launch("attn_kernel");
}

}  // namespace bn
