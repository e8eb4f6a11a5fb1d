// The LM head: logits[r][v] = head[v] · hidden[rows[r]].
//
// GEMV (R <= 8 rows per launch, decode): one warp per vocabulary row, 8 rows per 256-thread
// block; lane l reads 16-byte chunks l, l+32, ... of the row (streaming loads). F16 head: the
// hidden state is f16 (as the reference rounds it), every product f16·f16 is exact in f64 and
// the sums are taken in f64 (a lane's chunks in order, then an xor butterfly), so the logit is
// the reference's f64 sum rounded once to f32. F32 head: same, products exact in f64.
// INT8 mode: per-row int8 head (absmax) × per-token int8 hidden, dp4a, two f32 divisions.
//
// GEMM (R > 8, prefill 'all' and batched decode; F16 only): mma.sync m16n8k16 f16 → f32 on
// 64 rows × 64 vocabulary tiles, both operands staged in shared memory per 64-wide K slice
// (row stride 72 halves: conflict-free fragment reads). f32 accumulation inside the tensor cores:
// logits match the reference to ~1e-6 relative, not bit for bit. The pipelined variants
// (head_mma_pipe_kernel, below) give the same bits.
#include "bn_device.cuh"
#include "bn_mma.h"

namespace bn {

template <int RT>
__global__ void __launch_bounds__(256) head_f16_kernel(HeadParams p, int r0, int R) {
  pdl_enter();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int v = blockIdx.x * 8 + warp;
  if (v >= p.n_vocab) return;
  const int nc = p.k / 8;
  const uint4 *wr = (const uint4 *)((const uint16_t *)p.w + (size_t)v * p.k);
  double acc[RT];
#pragma unroll
  for (int r = 0; r < RT; r++) acc[r] = 0.0;
  for (int c = lane; c < nc; c += 32) {
    const uint4 wv = __ldcs(wr + c);
    const uint32_t ww[4] = {wv.x, wv.y, wv.z, wv.w};
#pragma unroll
    for (int r = 0; r < RT; r++) {
      if (r < R) {
        const uint4 hv = __ldg((const uint4 *)(p.h16 + (size_t)p.rows[r0 + r] * p.ldh) + c);
        const uint32_t hh[4] = {hv.x, hv.y, hv.z, hv.w};
        double a = acc[r];
#pragma unroll
        for (int e = 0; e < 4; e++) {
          // f16·f16 is exact in f64, so the fma equals the reference's add of the product.
          a = __fma_rn((double)f16_to_f32((uint16_t)(hh[e] & 0xffffu)), (double)f16_to_f32((uint16_t)(ww[e] & 0xffffu)), a);
          a = __fma_rn((double)f16_to_f32((uint16_t)(hh[e] >> 16)), (double)f16_to_f32((uint16_t)(ww[e] >> 16)), a);
        }
        acc[r] = a;
      }
    }
  }
#pragma unroll
  for (int r = 0; r < RT; r++) {
    const double s = warp_sum_d(acc[r]);
    if (lane == 0 && r < R) p.logits[(size_t)(r0 + r) * p.n_vocab + v] = (float)s;
  }
}

template <int RT>
__global__ void __launch_bounds__(256) head_f32_kernel(HeadParams p, int r0, int R) {
  pdl_enter();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int v = blockIdx.x * 8 + warp;
  if (v >= p.n_vocab) return;
  const int nc = p.k / 4;
  const float4 *wr = (const float4 *)((const float *)p.w + (size_t)v * p.k);
  double acc[RT];
#pragma unroll
  for (int r = 0; r < RT; r++) acc[r] = 0.0;
  for (int c = lane; c < nc; c += 32) {
    const float4 w = __ldcs(wr + c);
#pragma unroll
    for (int r = 0; r < RT; r++) {
      if (r < R) {
        const float4 x = __ldg((const float4 *)(p.h32 + (size_t)p.rows[r0 + r] * p.ldh) + c);
        // f32·f32 is exact in f64: the fma equals the reference's add of the product.
        acc[r] = __fma_rn((double)x.x, (double)w.x, acc[r]);
        acc[r] = __fma_rn((double)x.y, (double)w.y, acc[r]);
        acc[r] = __fma_rn((double)x.z, (double)w.z, acc[r]);
        acc[r] = __fma_rn((double)x.w, (double)w.w, acc[r]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < RT; r++) {
    const double s = warp_sum_d(acc[r]);
    if (lane == 0 && r < R) p.logits[(size_t)(r0 + r) * p.n_vocab + v] = (float)s;
  }
}

template <int RT>
__global__ void __launch_bounds__(256) head_i8_kernel(HeadParams p, int r0, int R) {
  pdl_enter();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int v = blockIdx.x * 8 + warp;
  if (v >= p.n_vocab) return;
  const int nc = p.k / 16;
  const uint4 *wr = (const uint4 *)(p.w8 + (size_t)v * p.k);
  int acc[RT];
#pragma unroll
  for (int r = 0; r < RT; r++) acc[r] = 0;
  for (int c = lane; c < nc; c += 32) {
    const uint4 w = __ldcs(wr + c);
#pragma unroll
    for (int r = 0; r < RT; r++) {
      if (r < R) {
        const uint4 x = __ldg((const uint4 *)(p.hq + (size_t)p.rows[r0 + r] * p.ldh) + c);
        int a = acc[r];
        a = dp4a(w.x, x.x, a);
        a = dp4a(w.y, x.y, a);
        a = dp4a(w.z, x.z, a);
        a = dp4a(w.w, x.w, a);
        acc[r] = a;
      }
    }
  }
  const float ws = p.w8_scale[v];
#pragma unroll
  for (int r = 0; r < RT; r++) {
    const int s = warp_sum_i(acc[r]);
    if (lane == 0 && r < R)
      p.logits[(size_t)(r0 + r) * p.n_vocab + v] = fdiv(fdiv((float)s, p.hscale[p.rows[r0 + r]]), ws);
  }
}

__device__ __forceinline__ void mma_f16(float c[4], const uint32_t a[4], const uint32_t b[2]) {
#if defined(BN_SIM)
  bn_sim::mma_f16(c, a, b);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

constexpr int HST = 72;  // shared row stride in halves

__global__ void __launch_bounds__(128) head_mma_kernel(HeadParams p, int R) {
  pdl_enter();
  BN_SHARED(__align__(16) uint16_t, As, [64 * HST]);
  BN_SHARED(__align__(16) uint16_t, Bs, [64 * HST]);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int v0 = blockIdx.x * 64, r0 = blockIdx.y * 64;
  const uint16_t *W = (const uint16_t *)p.w;
  float acc[4][2][4];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 2; j++)
#pragma unroll
      for (int q = 0; q < 4; q++) acc[i][j][q] = 0.f;
  for (int k0 = 0; k0 < p.k; k0 += 64) {
    __syncthreads();
#pragma unroll
    for (int pass = 0; pass < 4; pass++) {
      const int piece = threadIdx.x + 128 * pass, r = piece >> 3, c = piece & 7;
      uint4 a = make_uint4(0, 0, 0, 0), b = make_uint4(0, 0, 0, 0);
      if (r0 + r < R) a = __ldg((const uint4 *)(p.h16 + (size_t)p.rows[r0 + r] * p.ldh + k0 + c * 8));
      if (v0 + r < p.n_vocab) b = __ldcs((const uint4 *)(W + (size_t)(v0 + r) * p.k + k0 + c * 8));
      *(uint4 *)(As + r * HST + c * 8) = a;
      *(uint4 *)(Bs + r * HST + c * 8) = b;
    }
    __syncthreads();
#pragma unroll
    for (int ks = 0; ks < 4; ks++) {
      uint32_t b0[2], b1[2];
      f16_b_frag(Bs, HST, warp * 16, ks * 16, g, t, b0);
      f16_b_frag(Bs, HST, warp * 16 + 8, ks * 16, g, t, b1);
#pragma unroll
      for (int i = 0; i < 4; i++) {
        if (r0 + 16 * i < R) {
          uint32_t a[4];
          f16_a_frag(As, HST, 16 * i, ks * 16, g, t, a);
          mma_f16(acc[i][0], a, b0);
          mma_f16(acc[i][1], a, b1);
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 2; j++)
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const int r = r0 + 16 * i + g + 8 * h, v = v0 + warp * 16 + 8 * j + 2 * t;
        if (r < R) {
          if (v < p.n_vocab) p.logits[(size_t)r * p.n_vocab + v] = acc[i][j][2 * h];
          if (v + 1 < p.n_vocab) p.logits[(size_t)r * p.n_vocab + v + 1] = acc[i][j][2 * h + 1];
        }
      }
}

// ---- pipelined head GEMM (BN_HEAD_MMA, or chosen by the autotuning at engine creation) ---------
// Why: run 8 (H200, 2026-11-28) timed head_mma_kernel at 318 us for R = 64, where its 0.66 GB of
// weights stream in ~155 us: every 64-wide K slice waits for its loads, then for the tensor cores
// (two barriers per slice, nothing in flight meanwhile), and the four warps each read the whole
// 64-row A tile from shared memory for a 16-column B strip (10 KB of fragment reads per warp and
// slice for 8 mma). Here both operands go through an S-deep cp.async ring (slices k+1..k+S-1 in
// flight while the tensor cores work on k), and each warp owns WN vocabulary columns: WN = 32
// reads every A fragment once for 4 n8 tiles instead of 2 (3 KB per 16 mma) and halves the
// hidden rows' L2 reads (64 × 4·WN tiles); NW = 8 warps (wide8) halves them again (64 × 256).
// Same arithmetic as head_mma_kernel: each logit is one f32 accumulator fed one m16n8k16 per
// 16-wide k step in k order, so the logits are bit for bit head_mma_kernel's (checked).
// Ring: S stages of A (64 rows) and B (NW·WN rows), HST halves per row; dynamic shared memory
// (S × (64 + NW·WN) × 144 bytes: 55,296 for S = 3, WN = 16; configure_head raises the limit).
template <int S, int WN, int NW = 4>
__global__ void __launch_bounds__(NW * 32) head_mma_pipe_kernel(HeadParams p, int R) {
  static_assert(S >= 2 && (WN == 16 || WN == 32) && (NW == 4 || NW == 8), "ring depth, warp width, warps");
  constexpr int NT = NW * 32, RS = NT / 8;  // threads; rows covered by one pass of 16-byte pieces
  constexpr int BN = NW * WN, NJ = WN / 8, A_T = 64 * HST, STG = (64 + BN) * HST;
  constexpr int AP = 64 / RS, BP = BN / RS;  // 16-byte pieces per thread and slice
  BN_DYN_SHARED(__align__(16) uint16_t, ring);
  pdl_enter();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int v0 = blockIdx.x * BN, r0 = blockIdx.y * 64;
  const uint16_t *W = (const uint16_t *)p.w;
  // This thread copies pieces (row tid/8 + RS·q, 16-byte column tid%8) of every slice; the
  // hidden row of each A row is looked up once (-1: past R, zero-filled).
  const int pr = threadIdx.x >> 3, pc = (threadIdx.x & 7) * 8;
  int hrow[AP];
#pragma unroll
  for (int q = 0; q < AP; q++) hrow[q] = r0 + pr + RS * q < R ? p.rows[r0 + pr + RS * q] : -1;
  auto issue = [&](int ks, int stage) {
    uint16_t *As = ring + stage * STG, *Bs = As + A_T;
    const int k0 = ks * 64 + pc;
#pragma unroll
    for (int q = 0; q < AP; q++) {
      const bool ok = hrow[q] >= 0;
      cp_async16_zfill(As + (pr + RS * q) * HST + pc, p.h16 + (size_t)(ok ? hrow[q] : 0) * p.ldh + k0, ok ? 16 : 0);
    }
#pragma unroll
    for (int q = 0; q < BP; q++) {
      const int v = v0 + pr + RS * q;
      const bool ok = v < p.n_vocab;
      cp_async16_zfill(Bs + (pr + RS * q) * HST + pc, W + (size_t)(ok ? v : 0) * p.k + k0, ok ? 16 : 0);
    }
  };
  float acc[4][NJ][4];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < NJ; j++)
#pragma unroll
      for (int q = 0; q < 4; q++) acc[i][j][q] = 0.f;
  const int nk = p.k / 64;
#pragma unroll
  for (int st = 0; st < S - 1; st++) {
    if (st < nk) issue(st, st);
    cp_async_commit();  // one group per stage, even empty: the wait below counts groups
  }
  for (int kk = 0; kk < nk; kk++) {
    cp_async_wait<S - 2>();  // this thread's copies of slice kk have landed
    __syncthreads();         // everyone's have, and slice kk-1's stage is free
    if (kk + S - 1 < nk) issue(kk + S - 1, (kk + S - 1) % S);
    cp_async_commit();
    const uint16_t *As = ring + (kk % S) * STG, *Bs = As + A_T;
#pragma unroll
    for (int ks = 0; ks < 4; ks++) {
      uint32_t b[NJ][2];
#pragma unroll
      for (int j = 0; j < NJ; j++) f16_b_frag(Bs, HST, warp * WN + 8 * j, ks * 16, g, t, b[j]);
#pragma unroll
      for (int i = 0; i < 4; i++) {
        if (r0 + 16 * i < R) {
          uint32_t a[4];
          f16_a_frag(As, HST, 16 * i, ks * 16, g, t, a);
#pragma unroll
          for (int j = 0; j < NJ; j++) mma_f16(acc[i][j], a, b[j]);
        }
      }
    }
  }
  cp_async_wait<0>();
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < NJ; j++)
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const int r = r0 + 16 * i + g + 8 * h, v = v0 + warp * WN + 8 * j + 2 * t;
        if (r < R) {
          if (v < p.n_vocab) p.logits[(size_t)r * p.n_vocab + v] = acc[i][j][2 * h];
          if (v + 1 < p.n_vocab) p.logits[(size_t)r * p.n_vocab + v + 1] = acc[i][j][2 * h + 1];
        }
      }
}

// One pipelined variant: its dynamic shared memory, the raising of its limit, and its launch.
template <int S, int WN, int NW = 4>
struct HeadPipe {
  static constexpr int kCols = NW * WN;                        // vocabulary rows per block
  static constexpr int kSmem = S * (64 + kCols) * HST * 2;     // the ring
  static cudaError_t allow() {
    return cudaFuncSetAttribute(head_mma_pipe_kernel<S, WN, NW>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
  }
  static bn_status launch(const HeadParams &p, int R, cudaStream_t s) {
    return launch_k("head_mma_pipe_kernel", head_mma_pipe_kernel<S, WN, NW>,
                    dim3((p.n_vocab + kCols - 1) / kCols, (R + 63) / 64), NW * 32, kSmem, s, p, R);
  }
};
using HeadPipelined = HeadPipe<3, 16>;
using HeadWide = HeadPipe<2, 32>;
using HeadWide3 = HeadPipe<3, 32>;
using HeadWide8 = HeadPipe<2, 32, 8>;

int g_head_variant = 0;
long g_head_pipe_launches = 0;
static bool g_head_pipe_ok = false;

const char *head_variant_name(int v) {
  switch (v) {
    case 0: return "plain";
    case 1: return "pipelined";
    case 2: return "wide";
    case 3: return "wide3";
    case 4: return "wide8";
  }
  return "?";
}

bool head_pipe_available() { return g_head_pipe_ok; }

bn_status configure_head(int smem_optin) {
  constexpr int most = HeadWide8::kSmem;  // the largest ring
  static_assert(most >= HeadPipelined::kSmem && most >= HeadWide::kSmem && most >= HeadWide3::kSmem, "largest");
  if (most > smem_optin) return BN_OK;  // the pipelined variants stay unavailable (launch_head falls back)
  for (cudaError_t e : {HeadPipelined::allow(), HeadWide::allow(), HeadWide3::allow(), HeadWide8::allow()})
    if (e != cudaSuccess) {
      cudaGetLastError();
      set_error("head: raising the pipelined kernels' shared memory to %d bytes failed: %s", most, cudaGetErrorString(e));
      return BN_ERR_UNSUPPORTED;
    }
  g_head_pipe_ok = true;
  return BN_OK;
}

bn_status launch_head(const HeadParams &p, int R, bool gemm, cudaStream_t s, int variant) {
  if (gemm && p.mode == BN_HEAD_F16 && p.type == BN_TYPE_F16) {
    if (variant < 0) variant = g_head_variant;
    if (!g_head_pipe_ok) variant = 0;
    if (variant >= 1 && variant < kHeadVariants) g_head_pipe_launches++;
    switch (variant) {
      case 1: return HeadPipelined::launch(p, R, s);
      case 2: return HeadWide::launch(p, R, s);
      case 3: return HeadWide3::launch(p, R, s);
      case 4: return HeadWide8::launch(p, R, s);
      default:
        return launch_k("head_mma_kernel", head_mma_kernel, dim3((p.n_vocab + 63) / 64, (R + 63) / 64), 128, 0, s, p, R);
    }
  }
  const int blocks = (p.n_vocab + 7) / 8;
  for (int r0 = 0; r0 < R; r0 += 8) {
    const int n = R - r0 < 8 ? R - r0 : 8;
    bn_status st;
    if (p.mode == BN_HEAD_INT8) {
      if (n <= 1) st = launch_k("head_i8_kernel", head_i8_kernel<1>, blocks, 256, 0, s, p, r0, n);
      else if (n <= 4) st = launch_k("head_i8_kernel", head_i8_kernel<4>, blocks, 256, 0, s, p, r0, n);
      else st = launch_k("head_i8_kernel", head_i8_kernel<8>, blocks, 256, 0, s, p, r0, n);
    } else if (p.type == BN_TYPE_F16) {
      if (n <= 1) st = launch_k("head_f16_kernel", head_f16_kernel<1>, blocks, 256, 0, s, p, r0, n);
      else if (n <= 4) st = launch_k("head_f16_kernel", head_f16_kernel<4>, blocks, 256, 0, s, p, r0, n);
      else st = launch_k("head_f16_kernel", head_f16_kernel<8>, blocks, 256, 0, s, p, r0, n);
    } else {
      if (n <= 1) st = launch_k("head_f32_kernel", head_f32_kernel<1>, blocks, 256, 0, s, p, r0, n);
      else if (n <= 4) st = launch_k("head_f32_kernel", head_f32_kernel<4>, blocks, 256, 0, s, p, r0, n);
      else st = launch_k("head_f32_kernel", head_f32_kernel<8>, blocks, 256, 0, s, p, r0, n);
    }
    if (st) return st;
  }
  return BN_OK;
}

}  // namespace bn
