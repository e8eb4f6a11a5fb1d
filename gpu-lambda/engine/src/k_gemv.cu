// W2A8 ternary GEMV straight on the I2_S layout (decode, M <= 8 tokens), dp4a.
//
// Thread mapping: a 128-thread block owns 4·(32/TPR) consecutive rows; each warp owns 32/TPR rows
// with TPR lanes per row (tx = lane % TPR, ty = lane / TPR). A row's K/4 bytes are 16-byte
// chunks; lane tx takes chunks tx, tx+TPR, ... (TPR lanes read TPR·16 contiguous bytes of a row
// per step), G chunks per round trip: the lane issues all G loads before its first dp4a. Each
// chunk (4 u32 words) is unpacked per plane with one shift+mask (bn_numerics.h i2s_plane) and
// fed to dp4a against 16-byte activation loads at the chunk's plane offsets (L1-resident: every
// row of the block reads the same activation vector).
// Raw codes 0..2 are multiplied, so D = Σ code·q; the epilogue uses D − S (§2.4), exact in int32
// (integer sums: any lane split gives the same bits, so the emulation's split need not match).
// The TPR lanes of a row combine with xor shuffles; lane tx then finishes token tx's output.
//
// Shapes (measured on an H200, 2026-11-27, graph replays, M = 1): TPR = 16, G = 4 for matrices of
// fewer than 8192 rows (qkv 3840x2560 3.74 us, o 2560x2560 3.29 us, down 2560x6912 5.58 us,
// against 4.02 / 3.87 / 7.88 us for TPR = 8 with two round trips); TPR = 8, G = 8 for the wide
// gate+up (13824x2560: 8.17 us against 9.86 us).
//
// PDL (bn_device.cuh): the first group of weight loads is issued before pdl_wait(), so it
// overlaps the previous kernel.
//
// __launch_bounds__(128, 6): caps registers at 80; the fused tail otherwise pushed ptxas to >100
// registers (4 blocks/SM).
//
// Fused tail: with `has_tail`, the block that finishes last (ticket, bn_device.cuh) runs the next
// RMSNorm + quantization over the full output vector (all other blocks' stores are visible).
#include "bn_device.cuh"
#include "bn_epilogue.h"

namespace bn {

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

template <int G, int TPR>
__device__ __forceinline__ void load_group(uint4 (&w)[G], const uint4 *wr, int c0, int cpr) {
#pragma unroll
  for (int j = 0; j < G; j++) w[j] = c0 + j * TPR < cpr ? __ldcs(wr + c0 + j * TPR) : make_uint4(0, 0, 0, 0);
}

template <int MT, int TPR, int G>
__global__ void __launch_bounds__(128, 6) gemv_kernel(Mat W, Acts A, int M, Epi e, NormQuant tail, int has_tail,
                                                   unsigned *counter) {
  static_assert(TPR >= MT && 32 % TPR == 0, "a row's lanes finish its tokens; rows pair within a warp");
  constexpr int RPW = 32 / TPR;  // rows per warp
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, ty = lane / TPR, tx = lane % TPR;
  const int row = blockIdx.x * (4 * RPW) + warp * RPW + ty;
  const int cpr = W.k >> 6;  // 16-byte chunks per row
  const bool live = row < W.n;
  const uint4 *wr = (const uint4 *)(W.w + (size_t)(live ? row : 0) * (size_t)(W.k >> 2));
  uint4 w[G];
  if (live) load_group<G, TPR>(w, wr, tx, cpr);  // weights only: allowed before pdl_wait()
  pdl_enter();
  int acc[MT];
#pragma unroll
  for (int m = 0; m < MT; m++) acc[m] = 0;
  if (live) {
    for (int c0 = tx;;) {
#pragma unroll
      for (int j = 0; j < G; j++) {
        if (c0 + j * TPR < cpr) {
#pragma unroll
          for (int m = 0; m < MT; m++)
            if (m < M) acc[m] = chunk_dot(w[j], A.q + (size_t)m * A.ld, c0 + j * TPR, acc[m]);
        }
      }
      c0 += G * TPR;
      if (c0 >= cpr) break;
      load_group<G, TPR>(w, wr, c0, cpr);
    }
  }
#pragma unroll
  for (int m = 0; m < MT; m++) {
#pragma unroll
    for (int o = TPR / 2; o > 0; o >>= 1) acc[m] += __shfl_xor_sync(0xffffffffu, acc[m], o);
  }
  int mine = 0;
#pragma unroll
  for (int m = 0; m < MT; m++)
    if (m == tx) mine = acc[m];
  const int m = tx;
  const bool valid = live && m < M;
  float y = 0.f;
  if (valid) y = bitlinear_out(mine - A.sum[m], A.scale[m], W.sm, row);
  const float yp = __shfl_xor_sync(0xffffffffu, y, TPR);  // row ^ 1 (ty ^ 1), same token
  if (valid) epi_apply(e, m, row, y, yp);
  if (has_tail && last_block(counter)) block_tail(tail, M);
}

template <int TPR, int G>
static bn_status launch_shape(const Mat &w, const Acts &a, int M, const Epi &e, const NormQuant &t, int ht,
                              unsigned *counter, cudaStream_t s) {
  const int rows = 4 * (32 / TPR);
  const dim3 grid((w.n + rows - 1) / rows);
  if (M <= 1) return launch_k("gemv_kernel", gemv_kernel<1, TPR, G>, grid, 128, 0, s, w, a, M, e, t, ht, counter);
  if (M <= 2) return launch_k("gemv_kernel", gemv_kernel<2, TPR, G>, grid, 128, 0, s, w, a, M, e, t, ht, counter);
  if (M <= 4) return launch_k("gemv_kernel", gemv_kernel<4, TPR, G>, grid, 128, 0, s, w, a, M, e, t, ht, counter);
  return launch_k("gemv_kernel", gemv_kernel<8, TPR, G>, grid, 128, 0, s, w, a, M, e, t, ht, counter);
}

bn_status launch_gemv(const Mat &w, const Acts &a, int M, const Epi &e, const NormQuant *tail, unsigned *counter,
                      cudaStream_t s) {
  NormQuant t{};
  if (tail) t = *tail;
  const int ht = tail ? 1 : 0;
  if (w.n < 8192) return launch_shape<16, 4>(w, a, M, e, t, ht, counter, s);
  return launch_shape<8, 8>(w, a, M, e, t, ht, counter, s);
}

}  // namespace bn
