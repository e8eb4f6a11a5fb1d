// W2A8 ternary GEMV straight on the I2_S layout (decode, M <= 8 tokens), dp4a.
//
// Thread mapping: a 128-thread block owns 16 consecutive rows; each warp owns 4 rows, 8 lanes per
// row (tx = lane & 7, ty = lane >> 3). A row's K/4 bytes are 16-byte chunks; lane tx takes chunks
// tx, tx+8, ... (8 lanes read 128 contiguous bytes of a row per step: full 128-byte lines), four
// chunks in flight per lane. Each chunk (4 u32 words) is unpacked per plane with one shift+mask
// (bn_numerics.h i2s_plane) and fed to dp4a against 16-byte activation loads at the chunk's
// plane offsets (L1-resident: every row of the block reads the same activation vector).
// Raw codes 0..2 are multiplied, so D = Σ code·q; the epilogue uses D − S (§2.4), exact in int32.
// The 8 lanes of a row combine with xor shuffles; lane tx then finishes token tx's output.
//
// __launch_bounds__(128, 6): caps registers at 80; the fused tail otherwise pushed ptxas to >100
// registers (4 blocks/SM) or, capped at 64, to small spills.
//
// Fused tail: with `has_tail`, the block that finishes last (ticket, bn_device.cuh) runs the next
// RMSNorm + quantization over the full output vector (all other blocks' stores are visible).
#include "bn_device.cuh"
#include "bn_epilogue.h"

namespace bn {

static_assert(kGemvRows * kGemvTPR == kNormThreads, "the fused tail runs on the GEMV block");

__device__ __forceinline__ int chunk_dot(const uint4 &w, const int8_t *q, int c, int acc) {
#pragma unroll
  for (int p = 0; p < 4; p++) {
    const uint4 a = __ldg((const uint4 *)(q + i2s_chunk_act_offset(c, p)));
    acc = dp4a(i2s_plane(w.x, p), a.x, acc);
    acc = dp4a(i2s_plane(w.y, p), a.y, acc);
    acc = dp4a(i2s_plane(w.z, p), a.z, acc);
    acc = dp4a(i2s_plane(w.w, p), a.w, acc);
  }
  return acc;
}

template <int MT>
__global__ void __launch_bounds__(128, 6) gemv_kernel(Mat W, Acts A, int M, Epi e, NormQuant tail, int has_tail,
                                                   unsigned *counter) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, ty = lane >> 3, tx = lane & 7;
  const int row = blockIdx.x * kGemvRows + warp * 4 + ty;
  const int cpr = W.k >> 6;  // 16-byte chunks per row
  int acc[MT];
#pragma unroll
  for (int m = 0; m < MT; m++) acc[m] = 0;
  if (row < W.n) {
    const uint4 *wr = (const uint4 *)(W.w + (size_t)row * (size_t)(W.k >> 2));
    int c = tx;
    for (; c + 24 < cpr; c += 32) {
      const uint4 w0 = __ldcs(wr + c), w1 = __ldcs(wr + c + 8), w2 = __ldcs(wr + c + 16), w3 = __ldcs(wr + c + 24);
#pragma unroll
      for (int m = 0; m < MT; m++) {
        if (m < M) {
          const int8_t *q = A.q + (size_t)m * A.ld;
          int s = acc[m];
          s = chunk_dot(w0, q, c, s);
          s = chunk_dot(w1, q, c + 8, s);
          s = chunk_dot(w2, q, c + 16, s);
          s = chunk_dot(w3, q, c + 24, s);
          acc[m] = s;
        }
      }
    }
    for (; c < cpr; c += 8) {
      const uint4 w0 = __ldcs(wr + c);
#pragma unroll
      for (int m = 0; m < MT; m++)
        if (m < M) acc[m] = chunk_dot(w0, A.q + (size_t)m * A.ld, c, acc[m]);
    }
  }
#pragma unroll
  for (int m = 0; m < MT; m++) {
    acc[m] += __shfl_xor_sync(0xffffffffu, acc[m], 4);
    acc[m] += __shfl_xor_sync(0xffffffffu, acc[m], 2);
    acc[m] += __shfl_xor_sync(0xffffffffu, acc[m], 1);
  }
  int mine = 0;
#pragma unroll
  for (int m = 0; m < MT; m++)
    if (m == tx) mine = acc[m];
  const int m = tx;
  const bool valid = row < W.n && m < M;
  float y = 0.f;
  if (valid) y = bitlinear_out(mine - A.sum[m], A.scale[m], W.sm, row);
  const float yp = __shfl_xor_sync(0xffffffffu, y, 8);  // row ^ 1 (ty ^ 1), same token
  if (valid) epi_apply(e, m, row, y, yp);
  if (has_tail && last_block(counter)) block_tail(tail, M);
}

bn_status launch_gemv(const Mat &w, const Acts &a, int M, const Epi &e, const NormQuant *tail, unsigned *counter,
                      cudaStream_t s) {
  const int blocks = (w.n + kGemvRows - 1) / kGemvRows;
  NormQuant t{};
  if (tail) t = *tail;
  const int ht = tail ? 1 : 0;
  if (M <= 1) gemv_kernel<1><<<blocks, 128, 0, s>>>(w, a, M, e, t, ht, counter);
  else if (M <= 2) gemv_kernel<2><<<blocks, 128, 0, s>>>(w, a, M, e, t, ht, counter);
  else if (M <= 4) gemv_kernel<4><<<blocks, 128, 0, s>>>(w, a, M, e, t, ht, counter);
  else gemv_kernel<8><<<blocks, 128, 0, s>>>(w, a, M, e, t, ht, counter);
  return check_launch("gemv_kernel");
}

}  // namespace bn
