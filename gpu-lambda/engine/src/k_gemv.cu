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
// overlaps the previous kernel; the dependents are released after the K loop.
//
// __launch_bounds__(128, 6): caps registers at 80; the fused tail otherwise pushed ptxas to >100
// registers (4 blocks/SM).
//
// Fused tail: with `has_tail`, the block that finishes last (ticket, bn_device.cuh) runs the next
// RMSNorm + quantization over the full output vector (all other blocks' stores are visible). The
// exact kernel is launched with the vector's size of dynamic shared memory (has_tail = 2, up to
// 12,288 elements), where the tail keeps x and then y between its three passes.
//
// Fast numerics (FAST = true, bn_fast.h): the block first normalizes and quantizes its input from
// the f32 vector and the norm point's two scalars into shared memory (block_quant_in) and reads
// the activations there; with F.out set, each block leaves its part of the statistics of the
// vector it stores (Σx², the fast_key maximum) and the last block reduces them.
#include "bn_device.cuh"
#include "bn_epilogue.h"
#include "bn_fast.cuh"
#include "bn_gemv.cuh"

#include <algorithm>

namespace bn {

BN_PDL_MODE(pdl_set_early_gemv)

// The same sum for BN_GEMV=ilp (written 2026-11-28, not yet run on a GPU). Why: run 7's stacked
// rows took 3.6 times as long at M = 4 as at M = 1 for the same weight bytes, so most of a block's
// life goes to the per-token part (activation loads and dp4a), not to the weight stream, and
// chunk_dot is one dependent chain: each plane's L1 load, then its 4 dp4a into the one
// accumulator, 16 deep per chunk (80 per row at K = 2560). Here the chunk's four activation loads
// are issued first and each plane sums into its own partial (four chains of 4), added at the end.
// int32 sums are exact in any order: the same bits.
template <bool SH = false>
__device__ __forceinline__ int chunk_dot_ilp(const uint4 &w, const int8_t *q, int c, int acc) {
  uint4 a[4];
#pragma unroll
  for (int p = 0; p < 4; p++) {
    const uint4 *ap = (const uint4 *)(q + i2s_chunk_act_offset(c, p));
    a[p] = SH ? *ap : __ldg(ap);
  }
  int s[4];
#pragma unroll
  for (int p = 0; p < 4; p++) {
    s[p] = dp4a(i2s_plane(w.x, p), a[p].x, 0);
    s[p] = dp4a(i2s_plane(w.y, p), a[p].y, s[p]);
    s[p] = dp4a(i2s_plane(w.z, p), a[p].z, s[p]);
    s[p] = dp4a(i2s_plane(w.w, p), a[p].w, s[p]);
  }
  return acc + ((s[0] + s[1]) + (s[2] + s[3]));
}

// The producer side of a fast norm point: this block's part of Σx² and of the key maximum over the
// elements it stored (RESID: row `row`; GATEUP: element row/2 of the even rows), per token.
template <int MT, int RB>
__device__ __forceinline__ void fast_stats_part(const Epi &e, const StatsOut &so, int M, int rloc, int row, int m,
                                                bool valid) {
  BN_SHARED(double, sl_ss, [MT][RB]);
  BN_SHARED(uint64_t, sl_key, [MT][RB]);
  if (m < MT) {
    double ss = 0.0;
    uint64_t key = 0;
    const bool has = valid && (e.kind == EPI_RESID || !(row & 1));
    if (has) {
      const int i = e.kind == EPI_RESID ? row : row >> 1;
      const float v = e.out[(size_t)m * e.ld + i];  // this thread's own store
      ss = (double)fmul(v, v);
      key = fast_key(v, __ldg(so.ns.w + i), i);
    }
    sl_ss[m][rloc] = ss;
    sl_key[m][rloc] = key;
  }
  __syncthreads();
  if (threadIdx.x < M) {
    double ss = 0.0;
    uint64_t key = 0;
    for (int r = 0; r < RB; r++) {
      ss += sl_ss[threadIdx.x][r];
      key = sl_key[threadIdx.x][r] > key ? sl_key[threadIdx.x][r] : key;
    }
    so.part_ss[(size_t)threadIdx.x * so.part_ld + blockIdx.x] = ss;
    ((unsigned long long *)so.part_key)[(size_t)threadIdx.x * so.part_ld + blockIdx.x] = key;
  }
}

// The GEMV of one block. FAST: the fast numerics' statistics `F.out` are compiled in; FIN: the
// input is quantized from F.in into shared memory (else read from A as in the exact path). TRACE
// (bench only): the block's timeline marks (bn_device.cuh) into `trace`. ROT: the activation
// planes in the rotated order (BN_GEMV=rot); SQ: the M int8 rows copied into shared memory first
// (cp.async, M·K bytes of dynamic shared memory) and read there in the rotated order (BN_GEMV=smem).
template <int MT, int TPR, int G, bool FAST, bool FIN, bool TRACE = false, bool ILP = false, bool ROT = false,
          bool SQ = false>
__device__ __forceinline__ void gemv_block(const Mat &W, const Acts &A, int M, const Epi &e, const NormQuant &tail,
                                           int has_tail, unsigned *counter, const FastGemv &F,
                                           unsigned long long *trace = nullptr) {
  static_assert(TPR >= MT && 32 % TPR == 0, "a row's lanes finish its tokens; rows pair within a warp");
  constexpr int RPW = 32 / TPR;  // rows per warp
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, ty = lane / TPR, tx = lane % TPR;
  const int row = blockIdx.x * (4 * RPW) + warp * RPW + ty;
  const int cpr = W.k >> 6;  // 16-byte chunks per row
  const bool live = row < W.n;
  const uint4 *wr = (const uint4 *)(W.w + (size_t)(live ? row : 0) * (size_t)(W.k >> 2));
  uint4 w[G];
  trace_begin<TRACE>(trace);
  if (live) load_group<G, TPR>(w, wr, tx, cpr);  // weights only: allowed before pdl_wait()
  BN_PDL_ENTER_LONG();
  const int8_t *aq = A.q;
  BN_SHARED(int, fS, [FIN ? MT : 1]);
  BN_SHARED(float, fs, [FIN ? MT : 1]);
  if (FIN) {
    BN_DYN_SHARED(__align__(16) int8_t, fq);  // [MT][A.ld]
    // 4 x/w elements in flight per round; 2 where the kernel's weight registers (G chunks per
    // token group) leave too few (the sm_80 build spilled with 4 at MT·G = 16 and 32).
    block_quant_in<MT, MT * G >= 16 ? 2 : 4>(F.in, M, fq, A.ld, fS, fs);
    aq = fq;
  }
  int ldq = A.ld;
  if (SQ) {  // [M][K]: the launch gave max(M·K, the tail's) bytes; the tail reuses them after a barrier
    BN_DYN_SHARED(__align__(16) int8_t, sq);
    const int per = W.k >> 4;  // 16-byte pieces per token row
    for (int i = threadIdx.x; i < M * per; i += blockDim.x) {
      const int m = i / per, c = i - m * per;
      cp_async16(sq + (size_t)m * W.k + 16 * c, A.q + (size_t)m * A.ld + 16 * c);
    }
    cp_async_commit();
    cp_async_wait_all();
    __syncthreads();
    aq = sq;
    ldq = W.k;
  }
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
            if (m < M)
              acc[m] = ILP ? chunk_dot_ilp<FIN>(w[j], aq + (size_t)m * ldq, c0 + j * TPR, acc[m])
                           : chunk_dot<FIN || SQ, FIN || SQ || ROT>(w[j], aq + (size_t)m * ldq, c0 + j * TPR, acc[m]);
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
  trace_put<TRACE>(trace, 2, trace_clock());
  pdl_launch_dependents();  // the weights are read: the next kernel may start its prologue
  int mine = 0;
#pragma unroll
  for (int m = 0; m < MT; m++)
    if (m == tx) mine = acc[m];
  const int m = tx;
  const bool valid = live && m < M;
  float y = 0.f;
  if (valid) {
    y = FIN ? bitlinear_out(mine - fS[m], fs[m], W.sm, row) : bitlinear_out(mine - A.sum[m], A.scale[m], W.sm, row);
  }
  const float yp = __shfl_xor_sync(0xffffffffu, y, TPR);  // row ^ 1 (ty ^ 1), same token
  if (valid) epi_apply(e, m, row, y, yp);
  if (FAST && F.out.ns.stats) {
    fast_stats_part<MT, 4 * RPW>(e, F.out, M, warp * RPW + ty, row, m, valid);
    if (last_block(counter)) block_stats_finish(F.out, M, gridDim.x);
  }
  if (has_tail && last_block(counter)) {
    trace_put<TRACE>(trace, 3, trace_clock());
    float4 *xs = nullptr;
    if (has_tail == 2) {  // the launch gave tail.n floats of dynamic shared memory (exact kernel only)
      BN_DYN_SHARED(__align__(16) float4, tail_xs);
      xs = tail_xs;
    }
    block_tail(tail, M, xs);
  }
  trace_end<TRACE>(trace);
}

// TRACE: the bench's timeline variant (trace: kTraceSlots u64 per block); ILP: BN_GEMV=ilp
// (chunk_dot_ilp).
template <int MT, int TPR, int G, bool TRACE = false, bool ILP = false>
__global__ void __launch_bounds__(128, 6) gemv_kernel(Mat W, Acts A, int M, Epi e, NormQuant tail, int has_tail,
                                                   unsigned *counter, unsigned long long *trace) {
  gemv_block<MT, TPR, G, false, false, TRACE, ILP>(W, A, M, e, tail, has_tail, counter, FastGemv{}, trace);
}

// BN_GEMV=rot: the exact kernel with each chunk's activation planes read in the rotated order
// (chunk_dot ROT). Written 2026-11-28 night, not yet run on a GPU. Why: the stacked rows of runs
// 7-10 take 3.6 times as long at M = 4 as at M = 1 for the same weight bytes, and BN_GEMV=ilp
// (latency) did not change them: the per-token activation loads look throughput-bound. In plane
// order a quarter-warp's 16-byte loads fall in 2 of L1's 8 sixteen-byte bank groups (4-way).
// Its own kernel, so that the default's name and code stay as they are. (128, 7) up to 4 tokens:
// at most 72 registers, as the default's gemv_kernel<1, 8, 8> (cuda.test.ts): the 2B-4T
// gate+up's 864 blocks fit one wave on 132 SMs only at 7 blocks per SM (at 73 registers it would
// be 6, and the rows would time a second wave, not the loads). 8 tokens spill at 72: (128, 6).
template <int MT, int TPR, int G>
__global__ void __launch_bounds__(128, MT >= 8 ? 6 : 7)
    gemv_rot_kernel(Mat W, Acts A, int M, Epi e, NormQuant tail, int has_tail, unsigned *counter,
                    unsigned long long *trace) {
  gemv_block<MT, TPR, G, false, false, false, false, true>(W, A, M, e, tail, has_tail, counter, FastGemv{}, trace);
}

// BN_GEMV=smem: the token rows staged in shared memory by cp.async (issued after the first weight
// loads, so both round trips overlap), then read there in the rotated order. Written 2026-11-28
// night with gemv_rot_kernel, not yet run on a GPU: if L1 serves a quarter-warp's global loads a
// 128-byte line at a time (not by banks), the rotated global loads still touch 4 lines per
// quarter-warp and BN_GEMV=rot gains nothing; shared memory is served by banks, so this one gains
// either way, for a barrier and M·K bytes of L2 traffic per block. Same bits (integer sums).
template <int MT, int TPR, int G>
__global__ void __launch_bounds__(128, MT >= 8 ? 6 : 7)
    gemv_smem_kernel(Mat W, Acts A, int M, Epi e, NormQuant tail, int has_tail, unsigned *counter,
                     unsigned long long *trace) {
  gemv_block<MT, TPR, G, false, false, false, false, false, true>(W, A, M, e, tail, has_tail, counter, FastGemv{},
                                                                  trace);
}

template <int MT, int TPR, int G, bool FIN>
__global__ void __launch_bounds__(128, 6) gemv_fast_kernel(Mat W, Acts A, int M, Epi e, NormQuant tail, int has_tail,
                                                        unsigned *counter, FastGemv F) {
  gemv_block<MT, TPR, G, true, FIN>(W, A, M, e, tail, has_tail, counter, F);
}

// The fast GEMV's dynamic shared-memory limit (a per-function, per-device attribute, set at
// configure time, outside any graph capture; it only ever grows so an engine created later
// cannot shrink it).
static SmemMark g_gemv_fast_smem;

int g_gemv_variant = 0;
long g_gemv_rot_launches = 0;
long g_gemv_smem_launches = 0;

template <int MT, int TPR, int G>
static cudaError_t allow_fast_smem_mt(int bytes_per_token) {
  const int bytes = std::max(48 * 1024, std::min(g_gemv_fast_smem.get(), MT * bytes_per_token));
  return cudaFuncSetAttribute(gemv_fast_kernel<MT, TPR, G, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
}

template <int TPR, int G>
static cudaError_t allow_fast_smem(int bytes_per_token) {
  cudaError_t e = allow_fast_smem_mt<1, TPR, G>(bytes_per_token);
  if (e == cudaSuccess) e = allow_fast_smem_mt<2, TPR, G>(bytes_per_token);
  if (e == cudaSuccess) e = allow_fast_smem_mt<4, TPR, G>(bytes_per_token);
  if (e == cudaSuccess) e = allow_fast_smem_mt<8, TPR, G>(bytes_per_token);
  return e;
}

bn_status configure_gemv(int max_ld, int smem_optin) {
  const int want = std::min(kGemvMaxM * max_ld, smem_optin);
  if (want <= g_gemv_fast_smem.get()) return BN_OK;
  const int before = g_gemv_fast_smem.get();
  g_gemv_fast_smem.set(want);
  cudaError_t e = allow_fast_smem<16, 4>(max_ld);
  if (e == cudaSuccess) e = allow_fast_smem<8, 8>(max_ld);
  if (e != cudaSuccess) {
    g_gemv_fast_smem.set(before);
    cudaGetLastError();
    set_error("gemv: raising the fast kernel's shared memory to %d bytes failed: %s", want, cudaGetErrorString(e));
    return BN_ERR_UNSUPPORTED;
  }
  return BN_OK;
}

template <int MT, int TPR, int G>
static bn_status launch_one(const Mat &w, const Acts &a, int M, const Epi &e, const NormQuant &t, int ht,
                            unsigned *counter, cudaStream_t s, const FastGemv *fast, unsigned long long *trace,
                            int *blocks) {
  const int rows = 4 * (32 / TPR);
  const dim3 grid((w.n + rows - 1) / rows);
  if (blocks) *blocks = (int)grid.x;
  if (!fast) {  // has_tail 2: the tail keeps its vector in shared memory (block_norm_quant)
    const int ht2 = ht && tail_cache_fits(t.n) ? 2 : ht;
    const size_t smem = ht2 == 2 ? (size_t)t.n * 4 : 0;
    if (trace)
      return launch_k("gemv_kernel", gemv_kernel<MT, TPR, G, true>, grid, 128, smem, s, w, a, M, e, t, ht2, counter,
                      trace);
    if (g_gemv_variant == 1)
      return launch_k("gemv_kernel", gemv_kernel<MT, TPR, G, false, true>, grid, 128, smem, s, w, a, M, e, t, ht2,
                      counter, (unsigned long long *)nullptr);
    if (g_gemv_variant >= 2) {
      // BN_GEMV=smem within the default dynamic shared memory (M·K bytes: up to 4 tokens at
      // K = 6912, 8 at K = 2560; the tail's cache shares it); above it, and for rot, the rotated kernel.
      const size_t staged_smem = std::max((size_t)M * w.k, smem);
      const bool staged = g_gemv_variant == 3 && staged_smem <= (size_t)SmemMark::kDefault;
      const bn_status st = launch_k(staged ? "gemv_smem_kernel" : "gemv_rot_kernel",
                                    staged ? gemv_smem_kernel<MT, TPR, G> : gemv_rot_kernel<MT, TPR, G>, grid, 128,
                                    staged ? staged_smem : smem, s, w, a, M, e, t, ht2, counter,
                                    (unsigned long long *)nullptr);
      if (!st) ++(staged ? g_gemv_smem_launches : g_gemv_rot_launches);
      return st;
    }
    return launch_k("gemv_kernel", gemv_kernel<MT, TPR, G>, grid, 128, smem, s, w, a, M, e, t, ht2, counter,
                    (unsigned long long *)nullptr);
  }
  if (trace) {
    set_error("gemv: the timeline is traced for the exact kernel only");
    return BN_ERR_UNSUPPORTED;
  }
  if (!fast->in.x)  // the producer's last block quantized the input (BN_FAST_QUANT=tail)
    return launch_k("gemv_fast_kernel", gemv_fast_kernel<MT, TPR, G, false>, grid, 128, 0, s, w, a, M, e, t, ht, counter,
                    *fast);
  const size_t smem = (size_t)MT * a.ld;  // the quantized input rows
  if (smem > (size_t)g_gemv_fast_smem.get()) {
    set_error("gemv: fast input of %d tokens x %d bytes needs %zu bytes of shared memory; %d configured", MT, a.ld, smem,
              g_gemv_fast_smem.get());
    return BN_ERR_UNSUPPORTED;
  }
  return launch_k("gemv_fast_kernel", gemv_fast_kernel<MT, TPR, G, true>, grid, 128, smem, s, w, a, M, e, t, ht,
                  counter, *fast);
}

template <int TPR, int G>
static bn_status launch_shape(const Mat &w, const Acts &a, int M, const Epi &e, const NormQuant &t, int ht,
                              unsigned *counter, cudaStream_t s, const FastGemv *fast, unsigned long long *trace,
                              int *blocks) {
  if (M <= 1) return launch_one<1, TPR, G>(w, a, M, e, t, ht, counter, s, fast, trace, blocks);
  if (M <= 2) return launch_one<2, TPR, G>(w, a, M, e, t, ht, counter, s, fast, trace, blocks);
  if (M <= 4) return launch_one<4, TPR, G>(w, a, M, e, t, ht, counter, s, fast, trace, blocks);
  return launch_one<8, TPR, G>(w, a, M, e, t, ht, counter, s, fast, trace, blocks);
}

bn_status launch_gemv(const Mat &w, const Acts &a, int M, const Epi &e, const NormQuant *tail, unsigned *counter,
                      cudaStream_t s, const FastGemv *fast, unsigned long long *trace, int *blocks) {
  NormQuant t{};
  if (tail) t = *tail;
  const int ht = tail ? 1 : 0;
  if (fast && !fast_gemv_ok(w, a, e, tail, *fast)) return BN_ERR_INVALID_ARGUMENT;
  if (gemv_lanes_per_row(w.n) == 16) return launch_shape<16, 4>(w, a, M, e, t, ht, counter, s, fast, trace, blocks);
  return launch_shape<8, 8>(w, a, M, e, t, ht, counter, s, fast, trace, blocks);
}

}  // namespace bn
