// Attention helpers shared by the exact kernel (k_attn.cu) and the split-KV kernel of the fast
// numerics (k_attn_split.cu): K/V tile geometry, cp.async staging of paged rows, f16 -> f64.
#pragma once

#include "bn_device.cuh"

namespace bn {

static_assert(kAttnThreads == kNormThreads, "the fused tail runs on the attention block");

// Rows per K/V tile: 128 for head_dim <= 128, 64 up to 256 (tile <= 35 KB).
__host__ __device__ constexpr int attn_tile_rows(int hd) { return hd <= 128 ? 128 : 64; }
__host__ __device__ constexpr int attn_tile_stride(int hd) { return hd + 8; }

// Stages rows t0..t0+n-1 of this (sequence, kv head) from the pool into tile (row stride ts
// halves, 16-byte aligned) with cp.async: the copies run in the background until stage_wait().
__device__ __forceinline__ void stage_rows(uint16_t *tile, int ts, const uint16_t *pool, const int32_t *bt, int t0,
                                           int n, int page_shift, int kv_dim, int col0, int hd) {
  const int cpr = hd >> 3;  // 16-byte pieces per row
  const int mask = (1 << page_shift) - 1;
  for (int idx = threadIdx.x; idx < n * cpr; idx += kAttnThreads) {
    const int j = idx / cpr, c = idx - j * cpr, t = t0 + j;
    const uint16_t *src =
        pool + (((size_t)__ldg(bt + (t >> page_shift)) << page_shift) + (size_t)(t & mask)) * kv_dim + col0 + c * 8;
    cp_async16(tile + j * ts + c * 8, src);
  }
  cp_async_commit();
}

// Waits for this thread's staged copies, then for every thread's (the tile is shared).
__device__ __forceinline__ void stage_wait() {
  cp_async_wait_all();
  __syncthreads();
}

// f16 -> f64 in one conversion (exact, like the f16 -> f32 -> f64 it replaces).
__device__ __forceinline__ double f16_to_f64(uint16_t h) {
#if defined(BN_SIM)
  return (double)f16_to_f32(h);
#else
  double d;
  asm("cvt.f64.f16 %0, %1;" : "=d"(d) : "h"(h));
  return d;
#endif
}

// A score from its f64 dot product: rounded to f32, times `scale` in f64, rounded to f32.
__device__ __forceinline__ float score_of(double dot, double scale) { return (float)((double)(float)dot * scale); }

// The scores of N staged K rows: each is Σ_d q_d·k_d in f64 in dimension order (every product of
// two f16 values is exact, so the fma is too), rounded to f32, times `scale` in f64, rounded to
// f32. With N = 2 (the ring kernel) the rows' chains interleave: two independent f64 chains per
// thread hide half of each DFMA's latency, and each row still gets the one-row chain's bits.
template <int N>
__device__ __forceinline__ void row_scores(const uint16_t *const (&rows)[N], const double *qd, int hd, double scale,
                                           float (&out)[N]) {
  double acc[N];
#pragma unroll
  for (int r = 0; r < N; r++) acc[r] = 0.0;
  for (int c = 0; c < (hd >> 3); c++) {
    uint32_t k2[N][4];  // dimensions 8c..8c+7 of each row (16-byte reads: conflict-free across rows)
#pragma unroll
    for (int r = 0; r < N; r++) {
      const uint4 kk = ((const uint4 *)rows[r])[c];
      k2[r][0] = kk.x, k2[r][1] = kk.y, k2[r][2] = kk.z, k2[r][3] = kk.w;
    }
#pragma unroll
    for (int e = 0; e < 4; e++) {
      const int d = 8 * c + 2 * e;
#pragma unroll
      for (int r = 0; r < N; r++) acc[r] = __fma_rn(qd[d], f16_to_f64((uint16_t)(k2[r][e] & 0xffffu)), acc[r]);
#pragma unroll
      for (int r = 0; r < N; r++) acc[r] = __fma_rn(qd[d + 1], f16_to_f64((uint16_t)(k2[r][e] >> 16)), acc[r]);
    }
  }
#pragma unroll
  for (int r = 0; r < N; r++) out[r] = score_of(acc[r], scale);
}

// The score of one staged K row (row_scores with N = 1).
__device__ __forceinline__ float row_score(const uint16_t *row, const double *qd, int hd, double scale) {
  const uint16_t *const rows[1] = {row};
  float s[1];
  row_scores<1>(rows, qd, hd, scale, s);
  return s[0];
}

// e_j = f32(exp(sc_j − mx)) in place for j < n, and the block's Σ e_j in f64 (thread i sums
// j = i, i+128, ... in order; warp butterflies; the warps in order, through wsum).
__device__ __forceinline__ double exp_and_sum(float *sc, int n, float mx, double *wsum) {
  double ls = 0.0;
  for (int t = threadIdx.x; t < n; t += kAttnThreads) {
    const float ev = (float)exp((double)sc[t] - (double)mx);
    sc[t] = ev;
    ls += (double)ev;
  }
  return block_total_d(ls, wsum);
}

// The exact softmax weights in place, from the scores sc[0..T) and this thread's max of them:
// sc[t] = p_t = f16(fround(e_t · fround(1/Σe))) (e_t and Σe as exp_and_sum). block_max_f
// synchronises before any thread reads another's scores; each thread then rewrites only its own
// positions t ≡ threadIdx.x (mod 128), so the caller synchronises before reading all weights.
__device__ __forceinline__ void softmax_weights(float *sc, int T, float lmax, float *wmax, double *wsum) {
  const float mx = block_max_f(lmax, wmax);
  const double tot = exp_and_sum(sc, T, mx, wsum);
  const float inv = (float)(1.0 / tot);
  for (int t = threadIdx.x; t < T; t += kAttnThreads) sc[t] = f16_round(fmul(sc[t], inv));
}

// acc[i] += Σ_o p_o·v_o[d] in f32 in row order for this thread's dimensions d = threadIdx.x + 128·i
// over the n staged V rows.
__device__ __forceinline__ void pv_tile(float (&acc)[2], const float *pp, const uint16_t *tile, int ts, int n, int hd) {
#pragma unroll
  for (int i = 0; i < 2; i++) {
    const int d = threadIdx.x + i * kAttnThreads;
    if (d < hd) {
      float a = acc[i];
#pragma unroll 8
      for (int o = 0; o < n; o++) a = fadd(a, fmul(pp[o], f16_to_f32(tile[o * ts + d])));
      acc[i] = a;
    }
  }
}

// The tile walks of both kernels. A range of n rows is staged KT rows at a time; the caller has
// already issued the first tile's copies (so they overlap its own work), and stage(j0, n) issues
// those of rows j0..j0+n-1 of the range.
//   score_range: sc[j] = row_score of row j (thread j % KT); returns the thread's max score.
//   pv_range: acc += Σ_j sc[j]·v_j (thread d, rows in order), over the staged V tiles.
template <typename Stage>
__device__ __forceinline__ float score_range(float *sc, const uint16_t *tile, int ts, int KT, int n_all,
                                             const double *qd, int hd, double scale, Stage stage) {
  float lmax = -INFINITY;
  for (int j0 = 0; j0 < n_all; j0 += KT) {
    const int n = min(KT, n_all - j0);
    if (j0 > 0) {
      __syncthreads();  // the previous tile consumed
      stage(j0, n);
    }
    stage_wait();  // the tile (and qd) written
    if (threadIdx.x < n) {
      const float s = row_score(tile + threadIdx.x * ts, qd, hd, scale);
      sc[j0 + threadIdx.x] = s;
      lmax = fmaxf(lmax, s);
    }
  }
  return lmax;
}

template <typename Stage>
__device__ __forceinline__ void pv_range(float (&acc)[2], const float *sc, const uint16_t *tile, int ts, int KT,
                                         int n_all, int hd, Stage stage) {
  for (int j0 = 0; j0 < n_all; j0 += KT) {
    const int n = min(KT, n_all - j0);
    if (j0 > 0) {
      __syncthreads();  // the previous tile consumed
      stage(j0, n);
    }
    stage_wait();  // the tile and the weights are written
    pv_tile(acc, sc + j0, tile, ts, n, hd);
  }
}

// stage_rows with cheaper addressing (the default since run 6; BN_ATTN=generic takes stage_rows). The generic loop above spends ~27 PTX instructions per 16-byte piece (a division by the pieces per row, a
// block-table load, 64-bit offsets), a large part of the kernel's issue slots by the ncu counts
// of run 4. Here one thread per row computes the row's pool offset once into shared memory, and since 128 is a multiple of the pieces per row (head_dim 64, 128 or 256:
// the launcher checks), each thread keeps one piece column c and steps rows by 128 / cpr.
// All threads must call it (it synchronises); callers have synchronised after the previous
// tile's copies were issued, so the offsets can be overwritten.
__device__ __forceinline__ void stage_rows_fast(uint16_t *tile, int ts, const uint16_t *pool, const int32_t *bt,
                                                int t0, int n, int page_shift, int kv_dim, int col0, int hd) {
  BN_SHARED(size_t, rowoff, [kAttnThreads]);
  if (threadIdx.x < n) {
    const int t = t0 + threadIdx.x;
    rowoff[threadIdx.x] =
        (((size_t)__ldg(bt + (t >> page_shift)) << page_shift) + (size_t)(t & ((1 << page_shift) - 1))) * kv_dim + col0;
  }
  __syncthreads();
  const int cpr = hd >> 3, c = threadIdx.x % cpr, jstep = kAttnThreads / cpr;
  uint16_t *dst = tile + c * 8;
  const uint16_t *src = pool + c * 8;
#pragma unroll 4
  for (int j = threadIdx.x / cpr; j < n; j += jstep) cp_async16(dst + j * ts, src + rowoff[j]);
  cp_async_commit();
}

template <bool FAST>
__device__ __forceinline__ void stage(uint16_t *tile, int ts, const uint16_t *pool, const int32_t *bt, int t0, int n,
                                      int page_shift, int kv_dim, int col0, int hd) {
  if (FAST) stage_rows_fast(tile, ts, pool, bt, t0, n, page_shift, kv_dim, col0, hd);
  else stage_rows(tile, ts, pool, bt, t0, n, page_shift, kv_dim, col0, hd);
}

// One (q head h, token m) of the exact attention (attn_kernel's block; the persistent layer's
// heads, k_layer_chain.cu): stages K and V of its positions, scores, softmax and PV in the orders
// above, and stores the head's output row (p.out, token m). sc: the dynamic shared memory
// (attn_smem_bytes: max_t scores, then the tile). Returns without a final barrier: a caller that
// reuses sc or the static buffers synchronises first. pdl_launch_dependents() before the stores is
// a no-op in a launch without programmatic dependents.
template <bool FAST>
__device__ __forceinline__ void attn_head(const AttnParams &p, int h, int m, float *sc) {
  BN_SHARED(double, qd, [256]);  // q in f64 once (the scores multiply in f64: no per-product conversion)
  BN_SHARED(float, wmax, [kAttnThreads / 32]);
  BN_SHARED(double, wsum, [kAttnThreads / 32]);
  const int hd = p.head_dim, kvh = h / (p.n_head / p.n_head_kv);
  const int T = p.pos[m] + 1;
  const int KT = attn_tile_rows(hd), ts = attn_tile_stride(hd);
  uint16_t *tile = (uint16_t *)(sc + ((p.max_t + 3) & ~3));
  const int32_t *bt = p.block_table + (size_t)p.slot[m] * p.max_pages;
  auto stage_k = [&](int t0, int n) { stage<FAST>(tile, ts, p.kc, bt, t0, n, p.page_shift, p.kv_dim, kvh * hd, hd); };
  auto stage_v = [&](int t0, int n) { stage<FAST>(tile, ts, p.vc, bt, t0, n, p.page_shift, p.kv_dim, kvh * hd, hd); };
  stage_k(0, min(KT, T));  // lands during the q load
  // q through L2 (ld.global.cg): the persistent step's blocks read the same head's q again in each
  // layer after other blocks rewrote it, and a line an earlier read left in L1 would be stale.
  for (int d = threadIdx.x; d < hd; d += kAttnThreads) qd[d] = f16_to_f64(__ldcg(p.q16 + (size_t)m * p.ldq + h * hd + d));

  // Scores: one thread per position, the head's dot product summed in f64 in dimension order
  // (the reference's order; every product of two f16 values is exact, so the fma is too).
  const float lmax = score_range(sc, tile, ts, KT, T, qd, hd, p.scale, stage_k);
  // The first V tile's copies go out now and land while the softmax runs (it reads only sc).
  __syncthreads();  // every thread is done with the last K tile
  stage_v(0, min(KT, T));
  softmax_weights(sc, T, lmax, wmax, wsum);

  // PV: thread d accumulates over the positions in order, one staged V tile at a time.
  float acc[2] = {0.f, 0.f};  // d = threadIdx.x and threadIdx.x + 128 (head_dim <= 256)
  pv_range(acc, sc, tile, ts, KT, T, hd, stage_v);
  pdl_launch_dependents();
#pragma unroll
  for (int i = 0; i < 2; i++) {
    const int d = threadIdx.x + i * kAttnThreads;
    if (d < hd) p.out[(size_t)m * p.ldo + h * hd + d] = acc[i];
  }
}

// Dynamic shared memory of one attention block: `cap` score floats, then the K/V tile.
inline size_t attn_smem_bytes(int cap, int hd) {
  return (size_t)((cap + 3) & ~3) * 4 + (size_t)attn_tile_rows(hd) * attn_tile_stride(hd) * 2;
}

}  // namespace bn
