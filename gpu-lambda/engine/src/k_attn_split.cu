// Split-KV attention of the fast numerics (bn_fast.h), one block per (q head, range, token),
// 128 threads: grid (n_head, splits, M).
//
// Why: the exact kernel (k_attn.cu) runs one block per head and token, 20 blocks for a
// 2B-4T decode step, and each output dimension walks every position in order in one thread.
// Here a token's T positions are cut into `splits` ranges of fast_split_len(T, splits) (the last
// ranges may be empty), so a decode step runs n_head × splits blocks.
//
// Per range (staging, tiles and the score chains as in k_attn.cu):
//   scores s_t = f32((f32(Σ_d q_d·k_td in f64) · scale in f64)), exactly the reference's;
//   mx = max s_t; e_t = f32(exp(s_t − mx)) (f64 exp); l = Σ e_t in f64 (thread j sums positions
//   j, j+128, ..., xor butterfly per warp, warps in order);
//   o_d = Σ_t e_t·v_td in f32 in position order (thread d);
//   part_o[m][h][range][d] = o_d, part_ml[m][h][range] = (mx, f32(l)); an empty range leaves
//   (−inf, 0) and zeros.
// The last range of (m, h) to finish (ticket counter[2 + m*n_head + h]) combines the ranges:
//   g = max mx_r; w_r = f32(exp(mx_r − g)); L = Σ_r w_r·l_r in f64 (range order);
//   out_d = f32(Σ_r w_r·o_rd in f64 (range order) / L).
// With f.so set it then leaves this head's part of the attn_sub_norm statistics (one part per
// head), and the last head of all (ticket counter[1]) reduces them (bn_fast.cuh).
// Mirrored by bn_emu.cpp (EmuOps::attention_split).
#include <math_constants.h>

#include "bn_attn.cuh"
#include "bn_fast.cuh"

namespace bn {

BN_PDL_MODE(pdl_set_early_attn_split)

__global__ void __launch_bounds__(kAttnThreads) attn_split_kernel(AttnParams p, FastAttn f, int M, unsigned *counter) {
  BN_PDL_ENTER_LONG();
  BN_DYN_SHARED(float, sc);
  BN_SHARED(double, qd, [256]);
  BN_SHARED(float, wmax, [kAttnThreads / 32]);
  BN_SHARED(double, wsum, [kAttnThreads / 32]);
  const int h = blockIdx.x, r = blockIdx.y, m = blockIdx.z, S = f.splits;
  const int hd = p.head_dim, kvh = h / (p.n_head / p.n_head_kv);
  const int T = p.pos[m] + 1;
  const int C = fast_split_len(T, S), t_lo = r * C, n_all = max(0, min(T, t_lo + C) - t_lo);
  const int KT = attn_tile_rows(hd), ts = attn_tile_stride(hd);
  uint16_t *tile = (uint16_t *)(sc + ((fast_split_len(p.max_t, S) + 3) & ~3));
  const int32_t *bt = p.block_table + (size_t)p.slot[m] * p.max_pages;
  const size_t head_row = (size_t)m * p.n_head + h;
  float *po = f.part_o + (head_row * S + r) * hd;
  float *pml = f.part_ml + (head_row * S + r) * 2;

  float acc[2] = {0.f, 0.f};  // d = threadIdx.x and threadIdx.x + 128 (head_dim <= 256)
  if (n_all > 0) {
    auto stage_k = [&](int j0, int n) {
      stage_rows(tile, ts, p.kc, bt, t_lo + j0, n, p.page_shift, p.kv_dim, kvh * hd, hd);
    };
    auto stage_v = [&](int j0, int n) {
      stage_rows(tile, ts, p.vc, bt, t_lo + j0, n, p.page_shift, p.kv_dim, kvh * hd, hd);
    };
    stage_k(0, min(KT, n_all));
    for (int d = threadIdx.x; d < hd; d += kAttnThreads) qd[d] = f16_to_f64(p.q16[(size_t)m * p.ldq + h * hd + d]);
    const float lmax = score_range(sc, tile, ts, KT, n_all, qd, hd, p.scale, stage_k);
    __syncthreads();  // every thread is done with the last K tile
    stage_v(0, min(KT, n_all));
    const float mx = block_max_f(lmax, wmax);
    const double tot = exp_and_sum(sc, n_all, mx, wsum);
    pv_range(acc, sc, tile, ts, KT, n_all, hd, stage_v);
    if (threadIdx.x == 0) {
      pml[0] = mx;
      pml[1] = (float)tot;
    }
  } else if (threadIdx.x == 0) {
    pml[0] = -CUDART_INF_F;
    pml[1] = 0.f;
  }
  pdl_launch_dependents();
#pragma unroll
  for (int i = 0; i < 2; i++) {
    const int d = threadIdx.x + i * kAttnThreads;
    if (d < hd) po[d] = acc[i];
  }

  // The head's last range combines.
  if (!last_arrival(counter + 2 + head_row, (unsigned)S)) return;
  BN_SHARED(float, wr, [kFastMaxSplits]);
  BN_SHARED(float, mr, [kFastMaxSplits]);
  BN_SHARED(float, lr, [kFastMaxSplits]);
  BN_SHARED(double, Lsh);
  const float *ml0 = f.part_ml + head_row * S * 2;
  // The ranges' (mx, l) pairs come in through shared memory, one thread each: thread 0's loops
  // below run exp() (branches), and ptxas keeps a global load behind a branch, so loading there
  // cost one L2 round trip per range.
  if (threadIdx.x < S) {
    mr[threadIdx.x] = __ldcg(ml0 + 2 * threadIdx.x);
    lr[threadIdx.x] = __ldcg(ml0 + 2 * threadIdx.x + 1);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float g = -CUDART_INF_F;
    for (int q = 0; q < S; q++) g = fmaxf(g, mr[q]);
    double L = 0.0;
    for (int q = 0; q < S; q++) {
      const float w = (float)exp((double)mr[q] - (double)g);
      wr[q] = w;
      L += (double)w * (double)lr[q];
    }
    Lsh = L;
  }
  __syncthreads();
  const float *o0 = f.part_o + head_row * S * hd;
  double ss = 0.0;
  uint64_t key = 0;
#pragma unroll
  for (int i = 0; i < 2; i++) {
    const int d = threadIdx.x + i * kAttnThreads;
    if (d < hd) {
      double o = 0.0;
      for (int q = 0; q < S; q++) o += (double)wr[q] * (double)__ldcg(o0 + (size_t)q * hd + d);
      const float out = (float)(o / Lsh);
      const int e = h * hd + d;
      p.out[(size_t)m * p.ldo + e] = out;
      if (f.so.ns.stats) {
        ss += (double)fmul(out, out);
        const uint64_t k = fast_key(out, __ldg(f.so.ns.w + e), e);
        key = k > key ? k : key;
      }
    }
  }
  if (!f.so.ns.stats) return;
  block_sum_key(ss, key);
  if (threadIdx.x == 0) {
    f.so.part_ss[(size_t)m * f.so.part_ld + h] = ss;
    ((unsigned long long *)f.so.part_key)[(size_t)m * f.so.part_ld + h] = key;
  }
  if (last_arrival(counter + 1, (unsigned)(M * p.n_head))) block_stats_finish(f.so, M, p.n_head);
}

cudaError_t set_attention_split_smem(int bytes) {
  return cudaFuncSetAttribute(attn_split_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
}

bn_status launch_attention_split(const AttnParams &p, const FastAttn &f, int M, unsigned *counter, cudaStream_t s) {
  if (!fast_attn_ok(p, f, M)) return BN_ERR_INVALID_ARGUMENT;
  if (2 + (size_t)M * p.n_head > (size_t)kTickets) {
    set_error("split attention: %d tokens x %d heads exceed the %d combine tickets", M, p.n_head, kTickets - 2);
    return BN_ERR_UNSUPPORTED;
  }
  const dim3 grid(p.n_head, f.splits, M);
  const size_t smem = attn_smem_bytes(fast_split_len(p.max_t, f.splits), p.head_dim);
  return launch_k("attn_split_kernel", attn_split_kernel, grid, kAttnThreads, smem, s, p, f, M, counter);
}

}  // namespace bn
