// Device-only helpers shared by the kernels: warp reductions, the per-token RMSNorm+quantize
// block routine (the "tail" of fused kernels and the body of the norm kernels), the last-block
// ticket, and the launch declarations of every kernel (bn_launch_*), implemented one file each.
//
// Reduction orders here are mirrored step for step by the CPU emulation (bn_emu.cpp), so the
// emulation predicts the GPU's bits (f64 butterflies, f32 butterflies in the f16 head).
#pragma once

#include <cuda_runtime.h>

#include "bn_kernels.h"

namespace bn {

__device__ __forceinline__ double warp_sum_d(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_sum_f(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fadd(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ int warp_sum_i(int v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max_f(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Per-token RMSNorm + int8 quantization by one 128-thread block (token m). n % 128 == 0.
// Thread i handles float4 elements i, i+128, ... Reads x with ld.global.cg (L2): in a fused
// tail the values were written by other blocks of the same kernel.
//   pass 1: Σ fround(x²) in f64 per thread in order, xor butterfly per warp, warps summed in order;
//   pass 2: y = fround(fround(x·scale)·w), |y| max (exact), optional f32/f16 stores;
//   pass 3: q = quant(y, s), S = Σq (exact).
// Every thread of the block must call it (it synchronises). Mirrored by bn_emu.cpp.
__device__ __forceinline__ void block_norm_quant(const NormQuant &p, int m) {
  __shared__ double red_d[kNormThreads / 32];
  __shared__ float red_f[kNormThreads / 32];
  __shared__ int red_i[kNormThreads / 32];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const float *x = p.x + (size_t)m * p.ldx;
  const int n4 = p.n / 4;
  double ss = 0.0;
  for (int i = tid; i < n4; i += kNormThreads) {
    const float4 v = __ldcg((const float4 *)x + i);
    ss += (double)fmul(v.x, v.x);
    ss += (double)fmul(v.y, v.y);
    ss += (double)fmul(v.z, v.z);
    ss += (double)fmul(v.w, v.w);
  }
  ss = warp_sum_d(ss);
  if (lane == 0) red_d[warp] = ss;
  __syncthreads();
  double tot = red_d[0];
  for (int w = 1; w < kNormThreads / 32; w++) tot += red_d[w];
  const float sc = rms_scale(tot, p.n, p.eps);
  float amax = 0.f;
  for (int i = tid; i < n4; i += kNormThreads) {
    const float4 v = __ldcg((const float4 *)x + i);
    const float4 w = __ldg((const float4 *)p.w + i);
    float4 y;
    y.x = fmul(fmul(v.x, sc), w.x);
    y.y = fmul(fmul(v.y, sc), w.y);
    y.z = fmul(fmul(v.z, sc), w.z);
    y.w = fmul(fmul(v.w, sc), w.w);
    amax = fmaxf(amax, fmaxf(fmaxf(fabsf(y.x), fabsf(y.y)), fmaxf(fabsf(y.z), fabsf(y.w))));
    if (p.f32_out) ((float4 *)(p.f32_out + (size_t)m * p.ldx))[i] = y;
    if (p.f16_out) {
      ushort4 h;
      h.x = f32_to_f16(y.x);
      h.y = f32_to_f16(y.y);
      h.z = f32_to_f16(y.z);
      h.w = f32_to_f16(y.w);
      ((ushort4 *)(p.f16_out + (size_t)m * p.ldx))[i] = h;
    }
  }
  if (p.q) {
    amax = warp_max_f(amax);
    if (lane == 0) red_f[warp] = amax;
    __syncthreads();
    float am = red_f[0];
    for (int w = 1; w < kNormThreads / 32; w++) am = fmaxf(am, red_f[w]);
    const float s = act_scale(am);
    int sum = 0;
    for (int i = tid; i < n4; i += kNormThreads) {
      const float4 v = __ldcg((const float4 *)x + i);
      const float4 w = __ldg((const float4 *)p.w + i);
      char4 q;
      q.x = quant_one(fmul(fmul(v.x, sc), w.x), s);
      q.y = quant_one(fmul(fmul(v.y, sc), w.y), s);
      q.z = quant_one(fmul(fmul(v.z, sc), w.z), s);
      q.w = quant_one(fmul(fmul(v.w, sc), w.w), s);
      sum += q.x + q.y + q.z + q.w;
      ((char4 *)(p.q + (size_t)m * p.ldq))[i] = q;
    }
    sum = warp_sum_i(sum);
    if (lane == 0) red_i[warp] = sum;
    __syncthreads();
    if (tid == 0) {
      int S = 0;
      for (int w = 0; w < kNormThreads / 32; w++) S += red_i[w];
      p.scale[m] = s;
      p.sum[m] = S;
    }
  }
  __syncthreads();  // the shared partials are reused by the next call
}

// Last-block ticket: every block calls this after its stores; true in the one block that finishes
// last (which then sees every other block's stores through L2) and resets the counter.
__device__ __forceinline__ bool last_block(unsigned *counter) {
  __shared__ bool is_last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned total = gridDim.x * gridDim.y * gridDim.z;
    const unsigned t = atomicAdd(counter, 1u);
    is_last = t == total - 1;
    if (is_last) *counter = 0;  // no other block touches it again in this launch
  }
  __syncthreads();
  if (is_last) __threadfence();
  return is_last;
}

// Runs a NormQuant tail for M tokens, one after the other, with the whole (128-thread) block.
__device__ __forceinline__ void block_tail(const NormQuant &t, int M) {
  for (int m = 0; m < M; m++) block_norm_quant(t, m);
}

// ---- launchers (one .cu each) ---------------------------------------------------------------------
bn_status launch_embed(const EmbedParams &p, int M, const NormQuant &nq, cudaStream_t s);
bn_status launch_norm_quant(const NormQuant &nq, int M, cudaStream_t s);
bn_status launch_gemv(const Mat &w, const Acts &a, int M, const Epi &e, const NormQuant *tail, unsigned *counter,
                      cudaStream_t s);
bn_status launch_gemm(const Mat &w, const Acts &a, int M, const Epi &e, int *scratch, unsigned *tickets,
                      int max_tiles, int sm_count, cudaStream_t s);
bn_status launch_attention(const AttnParams &p, int M, const NormQuant *tail, unsigned *counter, cudaStream_t s);
bn_status configure_attention(int max_ctx);
bn_status launch_head(const HeadParams &p, int R, bool gemm, cudaStream_t s);
bn_status launch_select(const SelectParams &p, int R, cudaStream_t s);

// Launch-error check used by every launcher.
bn_status check_launch(const char *what);

}  // namespace bn
