// Embedding gather and the stand-alone RMSNorm+quantize kernel: one 128-thread block per token.
// (In small decode batches the norm runs as the tail of the kernel before it instead; see
// bn_device.cuh.)
#include "bn_device.cuh"

namespace bn {

// x[m] = f32(table[token[m]]), then the first layer's attn_norm + quantization of x[m].
__global__ void __launch_bounds__(kNormThreads, 8) embed_kernel(EmbedParams p, NormQuant nq) {
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
  block_norm_quant(nq, m);
}

__global__ void __launch_bounds__(kNormThreads, 8) norm_quant_kernel(NormQuant nq) {
  pdl_enter();
  block_norm_quant(nq, blockIdx.x);
}

bn_status launch_embed(const EmbedParams &p, int M, const NormQuant &nq, cudaStream_t s) {
  return launch_k("embed_kernel", embed_kernel, M, kNormThreads, 0, s, p, nq);
}

bn_status launch_norm_quant(const NormQuant &nq, int M, cudaStream_t s) {
  return launch_k("norm_quant_kernel", norm_quant_kernel, M, kNormThreads, 0, s, nq);
}

}  // namespace bn
