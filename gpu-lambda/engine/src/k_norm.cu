// Embedding gather and the stand-alone RMSNorm+quantize kernel: one 128-thread block per token.
// (In small decode batches the norm runs as the tail of the kernel before it instead; see
// bn_device.cuh.)
#include "bn_device.cuh"

namespace bn {

// x[m] = f32(table[token[m]]), then the first layer's attn_norm + quantization of x[m].
// cache: the launch gave nq.n floats of dynamic shared memory for block_norm_quant's vector.
__global__ void __launch_bounds__(kNormThreads, 8) embed_kernel(EmbedParams p, NormQuant nq, int cache) {
  pdl_enter();
  const int m = blockIdx.x;
  const int tok = p.tokens[m];
  float *x = p.x + (size_t)m * p.ldx;
  const int n4 = p.n_embd / 4;
  if (p.type == BN_TYPE_F16) {
    const ushort4 *row = (const ushort4 *)((const uint16_t *)p.table + (size_t)tok * p.n_embd);
    for (int i = threadIdx.x; i < n4; i += kNormThreads) {
      const ushort4 h = __ldg(row + i);
      ((float4 *)x)[i] = make_float4(f16_to_f32(h.x), f16_to_f32(h.y), f16_to_f32(h.z), f16_to_f32(h.w));
    }
  } else {
    const float4 *row = (const float4 *)((const float *)p.table + (size_t)tok * p.n_embd);
    for (int i = threadIdx.x; i < n4; i += kNormThreads) ((float4 *)x)[i] = __ldg(row + i);
  }
  __threadfence_block();
  __syncthreads();
  BN_DYN_SHARED(__align__(16) float4, xs);  // nq.n floats, or none (the launch decides)
  block_norm_quant(nq, m, cache ? xs : nullptr);
}

__global__ void __launch_bounds__(kNormThreads, 8) norm_quant_kernel(NormQuant nq, int cache) {
  pdl_enter();
  BN_DYN_SHARED(__align__(16) float4, xs);
  block_norm_quant(nq, blockIdx.x, cache ? xs : nullptr);
}

// The same norm with the token's row held in registers (BN_NORM=regs; run 6: 2% faster at batch 64): every
// x and w element of the thread is loaded in one round trip, and the three passes of
// block_norm_quant become one load and three register walks. Same elements per thread in the
// same order (float4 i = tid + 128·j, j ascending), the same butterflies: the same bits.
// n <= 128·4·kNormRegs.
constexpr int kNormRegs = 16;

__global__ void __launch_bounds__(kNormThreads) norm_quant_regs_kernel(NormQuant p) {
  pdl_enter();
  BN_SHARED(double, red_d, [kNormThreads / 32]);
  BN_SHARED(float, red_f, [kNormThreads / 32]);
  BN_SHARED(int, red_i, [kNormThreads / 32]);
  const int m = blockIdx.x, tid = threadIdx.x;
  const int n4 = p.n / 4;
  const float4 *x4 = (const float4 *)(p.x + (size_t)m * p.ldx);
  const float4 *w4 = (const float4 *)p.w;
  float4 x[kNormRegs], w[kNormRegs];
#pragma unroll
  for (int j = 0; j < kNormRegs; j++) {
    const int i = tid + j * kNormThreads;
    x[j] = i < n4 ? __ldcg(x4 + i) : make_float4(0.f, 0.f, 0.f, 0.f);
    w[j] = i < n4 ? __ldg(w4 + i) : make_float4(0.f, 0.f, 0.f, 0.f);
  }
  double ss = 0.0;
#pragma unroll
  for (int j = 0; j < kNormRegs; j++)
    if (tid + j * kNormThreads < n4) add_sq4(ss, x[j]);
  const float sc = rms_scale(block_total_d(ss, red_d), p.n, p.eps);
  float amax = 0.f;
#pragma unroll
  for (int j = 0; j < kNormRegs; j++) {
    const int i = tid + j * kNormThreads;
    if (i < n4) {
      const float4 y = nq_norm(x[j], sc, w[j]);
      amax = fmaxf(amax, amax4(y));
      store_normed(p, m, i, y);
    }
  }
  if (!p.q) return;
  const float s = act_scale(block_max_f(amax, red_f));
  int sum = 0;
#pragma unroll
  for (int j = 0; j < kNormRegs; j++) {
    const int i = tid + j * kNormThreads;
    if (i < n4) quant_store(p, m, i, nq_norm(x[j], sc, w[j]), s, sum);
  }
  finish_quant(p, m, s, sum, red_i);
}

int g_norm_variant = 0;
int g_tail_cache = 0;

bn_status launch_embed(const EmbedParams &p, int M, const NormQuant &nq, cudaStream_t s) {
  const int cache = tail_cache_fits(nq.n) ? 1 : 0;
  return launch_k("embed_kernel", embed_kernel, M, kNormThreads, cache ? (size_t)nq.n * 4 : 0, s, p, nq, cache);
}

bn_status launch_norm_quant(const NormQuant &nq, int M, cudaStream_t s) {
  if (g_norm_variant == 1 && nq.n <= 4 * kNormThreads * kNormRegs)
    return launch_k("norm_quant_regs_kernel", norm_quant_regs_kernel, M, kNormThreads, 0, s, nq);
  const int cache = tail_cache_fits(nq.n) ? 1 : 0;
  return launch_k("norm_quant_kernel", norm_quant_kernel, M, kNormThreads, cache ? (size_t)nq.n * 4 : 0, s, nq, cache);
}

}  // namespace bn
