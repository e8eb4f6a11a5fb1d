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
// Thread mapping (the orders above fix what each thread computes; the tiles only decide when the
// K/V bytes arrive): positions go in tiles of KT rows staged in shared memory by all 128 threads
// with 16-byte cp.async copies (a K or V row of one head is hd contiguous halves; rows of a tile
// come from the block table page by page), so each tile costs one memory round trip instead of
// one per row.
//   scores: thread i takes the tile's row i (positions i, i+KT, ...: with KT = 128 the same
//           positions as one thread per position), the head dimension in order, from shared
//           memory (row stride hd + 8 halves: 16-byte aligned rows, conflict-free 16-byte reads);
//   softmax: threads stride over the positions (unchanged);
//   PV: thread d walks the staged V tile rows in order, tile after tile (the first V tile is
//       staged before the softmax, so its loads overlap it).
// Dynamic shared memory: scores (max_t floats), then the K/V tile (KT × (hd + 8) halves).
#include <math_constants.h>

#include <algorithm>

#include "bn_attn.cuh"

namespace bn {

BN_PDL_MODE(pdl_set_early_attn)

// The norm tail (attn_sub_norm and quantization) of token m: the last of its n_head blocks to
// finish runs it, over the token's whole attention output (ticket counter[m]). At M = 1 that is
// the last block of the grid; at larger M the tokens' norms run in parallel, each in a block of
// its own, and no norm_quant launch follows. has_tail 2: the scores/tile buffer (free once PV is
// done) holds the norm's vector.
__device__ __forceinline__ void attn_token_tail(const NormQuant &tail, int has_tail, unsigned *counter, int m,
                                                int n_head, float *sc) {
  if (has_tail && last_arrival(counter + m, (unsigned)n_head))
    block_norm_quant(tail, m, has_tail == 2 ? (float4 *)sc : nullptr);
}

// pdl_wait(), then the dependents' signal at entry under BN_PDL=early, or when this grid is one
// wave (`early`: n_head · M <= the SM count, as a decode step of a few tokens): the next
// kernel's blocks (the o GEMV) then take the SMs attention leaves idle and load their weights
// while it runs; with one wave no block of this grid waits for a slot they hold. (A no-op
// without PDL: BN_PDL=1.)
__device__ __forceinline__ void attn_pdl_enter(int early) {
  pdl_wait();
  if (c_pdl_early || early) pdl_launch_dependents();
}

template <bool FAST>
__global__ void __launch_bounds__(kAttnThreads) attn_kernel(AttnParams p, NormQuant tail, int has_tail,
                                                            unsigned *counter, int early) {
  attn_pdl_enter(early);
  BN_DYN_SHARED(float, sc);
  const int h = blockIdx.x, m = blockIdx.y;
  attn_head<FAST>(p, h, m, sc);
  attn_token_tail(tail, has_tail, counter, m, p.n_head, sc);
}

// ---- BN_ATTN=ring (written 2026-11-28, not yet run on a GPU): a ring of kAttnRing tile buffers ----
// Why: attn_kernel stages one tile at a time, so every K and V tile is one exposed memory round
// trip (at T = 256: four in a row, K0 K1 V0 V1) and each thread scores its rows with one f64 chain
// (128 dependent DFMAs per row). Here the K tiles and then the V tiles of (head, token) form one
// sequence of units, unit u in buffer u % kAttnRing; the first kAttnRing units are issued at entry
// and each consumed buffer is refilled with the unit kAttnRing ahead, so at T <= 256 all four
// tiles are in flight together and later tiles land while earlier ones are used. K tiles are
// scored two at a time: thread i takes row i of both with two interleaved chains (row_scores<2>).
// The values and their orders are attn_kernel's: same bits (checked against the emulation).
// It needs kAttnRing tiles of shared memory (139 KB at head_dim 128), so one block per SM: the
// launcher takes it only while the grid fits one wave (n_head · M <= g_attn_ring_max_blocks, the
// SM count), else attn_kernel<true>.
constexpr int kAttnRing = 4;

// Stages rows t0..t0+n-1 like stage_rows_fast without its barrier and shared offsets: thread
// (c = tid % cpr, rows tid / cpr + k·(128 / cpr)) computes its own rows' pool offsets (block-table
// reads hit L1: consecutive rows share a page). Issues the copies; the caller commits.
__device__ __forceinline__ void stage_rows_direct(uint16_t *tile, int ts, const uint16_t *pool, const int32_t *bt,
                                                  int t0, int n, int page_shift, int kv_dim, int col0, int hd) {
  const int cpr = hd >> 3, c = threadIdx.x % cpr, jstep = kAttnThreads / cpr, mask = (1 << page_shift) - 1;
  uint16_t *dst = tile + c * 8;
  const uint16_t *src = pool + col0 + c * 8;
#pragma unroll 4
  for (int j = threadIdx.x / cpr; j < n; j += jstep) {
    const int t = t0 + j;
    const size_t row = ((size_t)__ldg(bt + (t >> page_shift)) << page_shift) + (size_t)(t & mask);
    cp_async16(dst + j * ts, src + row * kv_dim);
  }
}

inline size_t attn_ring_smem_bytes(int cap, int hd) {
  return (size_t)((cap + 3) & ~3) * 4 + (size_t)kAttnRing * attn_tile_rows(hd) * attn_tile_stride(hd) * 2;
}

template <int NB>
__global__ void __launch_bounds__(kAttnThreads) attn_ring_kernel(AttnParams p, NormQuant tail, int has_tail,
                                                                 unsigned *counter, int early) {
  static_assert(NB >= 2, "K tiles are consumed two at a time");
  attn_pdl_enter(early);
  BN_DYN_SHARED(float, sc);
  BN_SHARED(double, qd, [256]);
  BN_SHARED(float, wmax, [kAttnThreads / 32]);
  BN_SHARED(double, wsum, [kAttnThreads / 32]);
  const int h = blockIdx.x, m = blockIdx.y, i = threadIdx.x;
  const int hd = p.head_dim, kvh = h / (p.n_head / p.n_head_kv);
  const int T = p.pos[m] + 1;
  const int KT = attn_tile_rows(hd), ts = attn_tile_stride(hd), nk = (T + KT - 1) / KT;
  uint16_t *ring = (uint16_t *)(sc + ((p.max_t + 3) & ~3));
  const int32_t *bt = p.block_table + (size_t)p.slot[m] * p.max_pages;
  auto buf = [&](int u) { return ring + (size_t)(u % NB) * KT * ts; };
  // Unit u: K tile u (u < nk) or V tile u − nk (u < 2·nk). Every issue commits one group, empty
  // past the last unit, so when units [u, u + c) are next, exactly u + NB groups are committed
  // and cp_async_wait<NB − c> lands those c.
  auto issue = [&](int u) {
    if (u < 2 * nk) {
      const int j = u < nk ? u : u - nk;
      stage_rows_direct(buf(u), ts, u < nk ? p.kc : p.vc, bt, j * KT, min(KT, T - j * KT), p.page_shift, p.kv_dim,
                        kvh * hd, hd);
    }
    cp_async_commit();
  };
  // Refills the buffers of the units just consumed: a barrier first (every thread is done reading
  // them) unless nothing is left to stage.
  auto refill = [&](int u, int c) {
    if (u < 2 * nk) __syncthreads();
    for (int k = 0; k < c; k++) issue(u + k);
  };
#pragma unroll
  for (int u = 0; u < NB; u++) issue(u);
  for (int d = i; d < hd; d += kAttnThreads) qd[d] = f16_to_f64(p.q16[(size_t)m * p.ldq + h * hd + d]);

  // Scores: thread i takes row i of each tile (position u·KT + i), two tiles at a time.
  float lmax = -INFINITY;
  int u = 0;
  for (; u + 1 < nk; u += 2) {
    cp_async_wait<NB - 2>();
    __syncthreads();  // every thread's copies (and qd) visible
    const int n1 = min(KT, T - (u + 1) * KT);  // tile u is full
    if (i < n1) {
      const uint16_t *const rows[2] = {buf(u) + i * ts, buf(u + 1) + i * ts};
      float s[2];
      row_scores<2>(rows, qd, hd, p.scale, s);
      sc[u * KT + i] = s[0];
      sc[(u + 1) * KT + i] = s[1];
      lmax = fmaxf(lmax, fmaxf(s[0], s[1]));
    } else if (i < KT) {
      const float s0 = row_score(buf(u) + i * ts, qd, hd, p.scale);
      sc[u * KT + i] = s0;
      lmax = fmaxf(lmax, s0);
    }
    refill(u + NB, 2);
  }
  if (u < nk) {  // an odd last K tile
    cp_async_wait<NB - 1>();
    __syncthreads();
    if (i < T - u * KT) {
      const float s0 = row_score(buf(u) + i * ts, qd, hd, p.scale);
      sc[u * KT + i] = s0;
      lmax = fmaxf(lmax, s0);
    }
    refill(u + NB, 1);
    u++;
  }
  softmax_weights(sc, T, lmax, wmax, wsum);

  // PV: thread d walks the V tiles' rows in order (units nk..2·nk−1).
  float acc[2] = {0.f, 0.f};
  for (int v = 0; v < nk; v++, u++) {
    cp_async_wait<NB - 1>();
    __syncthreads();  // the tile and every thread's weights written
    pv_tile(acc, sc + v * KT, buf(u), ts, min(KT, T - v * KT), hd);
    refill(u + NB, 1);
  }
  pdl_launch_dependents();
#pragma unroll
  for (int k = 0; k < 2; k++) {
    const int d = i + k * kAttnThreads;
    if (d < hd) p.out[(size_t)m * p.ldo + h * hd + d] = acc[k];
  }
  attn_token_tail(tail, has_tail, counter, m, p.n_head, sc);
}

// The dynamic shared-memory limit is a per-function, per-device attribute: only ever raise it, so
// an engine created later with a shorter context cannot break one with a longer context
// (SmemMark: each device keeps its own high-water mark).
static SmemMark g_attn_smem_max, g_attn_ring_smem_max;

bn_status configure_attention(int max_ctx) {
  const int bytes = (int)std::max(attn_smem_bytes(max_ctx, 128), attn_smem_bytes(max_ctx, 256));
  if (bytes > g_attn_smem_max.get()) {
    cudaError_t e = cudaFuncSetAttribute(attn_kernel<false>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
    if (e == cudaSuccess)
      e = cudaFuncSetAttribute(attn_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
    if (e == cudaSuccess) e = set_attention_split_smem(bytes);
    if (e != cudaSuccess) {
      cudaGetLastError();
      set_error("attention needs %d bytes of shared memory for a context of %d: %s", bytes, max_ctx,
                cudaGetErrorString(e));
      return BN_ERR_UNSUPPORTED;
    }
  }
  if (bytes > g_attn_smem_max.get()) g_attn_smem_max.set(bytes);
  // The ring kernel only where its buffers fit (else launch_attention takes attn_kernel).
  const int ring = (int)std::max(attn_ring_smem_bytes(max_ctx, 128), attn_ring_smem_bytes(max_ctx, 256));
  if (ring > g_attn_ring_smem_max.get()) {
    if (cudaFuncSetAttribute(attn_ring_kernel<kAttnRing>, cudaFuncAttributeMaxDynamicSharedMemorySize, ring) ==
        cudaSuccess)
      g_attn_ring_smem_max.set(ring);
    else
      cudaGetLastError();
  }
  return BN_OK;
}

int g_attn_variant = 0;
int g_attn_ring_max_blocks = 0;
long g_attn_ring_launches = 0;
int g_attn_token_tail = 0;
long g_attn_tail_batched_launches = 0;

bn_status launch_attention(const AttnParams &p, int M, const NormQuant *tail, unsigned *counter, cudaStream_t s,
                           const FastAttn *split) {
  if (p.head_dim > 256 || (p.head_dim & 7)) {
    set_error("attention supports head_dim <= 256 and a multiple of 8 (got %d)", p.head_dim);
    return BN_ERR_UNSUPPORTED;
  }
  if (split) {
    if (tail) {
      set_error("split attention (fast numerics) takes statistics, not an exact norm tail");
      return BN_ERR_INVALID_ARGUMENT;
    }
    return launch_attention_split(p, *split, M, counter, s);
  }
  NormQuant t{};
  if (tail) t = *tail;
  if (tail && M > kAttnTailTokens) {
    set_error("attention: a norm tail for %d tokens (at most %d: one ticket each)", M, kAttnTailTokens);
    return BN_ERR_UNSUPPORTED;
  }
  if (tail && M > kGemvMaxM) g_attn_tail_batched_launches++;
  const dim3 grid(p.n_head, M);
  const bool direct = kAttnThreads % (p.head_dim >> 3) == 0;  // the cheaper staging's thread mapping
  const int one_wave = (long)p.n_head * M <= g_attn_ring_max_blocks ? 1 : 0;
  const bool ring = g_attn_variant == 2 && direct && one_wave &&
                    attn_ring_smem_bytes(p.max_t, p.head_dim) <= (size_t)g_attn_ring_smem_max.get();
  const size_t smem = ring ? attn_ring_smem_bytes(p.max_t, p.head_dim) : attn_smem_bytes(p.max_t, p.head_dim);
  const int ht = !tail ? 0 : g_tail_cache && (size_t)t.n * 4 <= smem ? 2 : 1;
  if (ring) {
    g_attn_ring_launches++;
    return launch_k("attn_ring_kernel", attn_ring_kernel<kAttnRing>, grid, kAttnThreads, smem, s, p, t, ht, counter,
                    one_wave);
  }
  if (g_attn_variant >= 1 && direct)
    return launch_k("attn_kernel", attn_kernel<true>, grid, kAttnThreads, smem, s, p, t, ht, counter, one_wave);
  return launch_k("attn_kernel", attn_kernel<false>, grid, kAttnThreads, smem, s, p, t, ht, counter, one_wave);
}

}  // namespace bn
