// Ternary × int8 GEMM on tensor cores (prefill and batched decode, any M): mma.sync m16n8k32
// with s8 activations (A, row-major) and the raw I2_S codes 0..2 as u8 (B, "col" = weight rows),
// int32 accumulation (exact), D − S in the epilogue (§2.4).
//
// Tiles: a 128-thread block computes 64 tokens × 64 weight rows; warp w owns rows 16w..16w+15
// (two n8 tiles) for all four m16 tiles. Per 128-element K block the block stages the 64×128
// activation tile in shared memory (row stride 144 B: conflict-free 32-bit fragment reads), and
// each lane reads its two u32 words of each of its two weight rows straight from global memory
// (lanes t = 0..3 of a row cover its 32-byte block; the next block's words are prefetched into
// registers). One 32-byte I2_S block = 4 k-steps: plane p is one shift+mask of the same words.
//
// __launch_bounds__(128, 4): without the occupancy hint ptxas (sm_80) capped the kernel at 72
// registers and spilled; 4 blocks of 128 threads leave it up to 128.
// The 64×64 int32 result tile goes through shared memory; the epilogue then walks (even, odd)
// column pairs (RoPE and gate/up partners) with coalesced-ish stores.
// Split-K: when the tiles alone cannot fill the GPU (small N·M), blockIdx.z splits the K blocks;
// partial int32 sums go to a scratch matrix with atomicAdd (exact in any order) and the last
// block of each tile (ticket) runs the epilogue and zeroes its scratch.
// Split-K by partial tiles (the default since run 6; BN_GEMM_SPLITK=atomics for the above): each
// split block stores its 64×64 partial tile with 16-byte stores into a buffer of its own and the last
// block adds the others' (integer sums: the same bits in any order). Per tile that replaces 4,096
// atomics per split block, and the zeroing stores, with 1,024 vector stores; the last block reads
// the other tiles back two per round (16 16-byte loads per thread in flight), ⌈splits/2⌉ rounds
// instead of the atomics path's four rounds of 4-byte loads and zeroing stores. This variant also
// keeps the per-token values in registers across the K loop (below).
#include "bn_device.cuh"
#include "bn_epilogue.h"
#include "bn_mma.h"

namespace bn {

BN_PDL_MODE(pdl_set_early_gemm)

constexpr int GM = 64, GN = 64, AST = 144, CST = GN + 4;  // CST: padded result-tile stride
constexpr int kEpiBatch = 8;                              // epilogue elements in flight per thread

__device__ __forceinline__ void mma_s8u8(int c[4], const uint32_t a[4], const uint32_t b[2]) {
#if defined(BN_SIM)
  bn_sim::mma_s8u8(c, a, b);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.u8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

// One 128-element K block of a warp's tile: 4 planes × the m16 token tiles × its two n8 weight
// tiles (rows g and 8+g; words t and t+4 of each row's 32-byte I2_S block).
__device__ __forceinline__ void kblock_mma(int (&acc)[4][2][4], const int8_t *As, uint32_t w0t, uint32_t w0t4,
                                           uint32_t w1t, uint32_t w1t4, int m0, int M, int g, int t) {
#pragma unroll
  for (int p = 0; p < 4; p++) {
    uint32_t b0[2], b1[2];
    i2s_b_frag(w0t, w0t4, p, b0);
    i2s_b_frag(w1t, w1t4, p, b1);
#pragma unroll
    for (int i = 0; i < 4; i++) {
      if (m0 + 16 * i < M) {  // warp-uniform: skip m16 tiles past the last token
        uint32_t a[4];
        s8_a_frag(As, AST, 16 * i, 32 * p, g, t, a);
        mma_s8u8(acc[i][0], a, b0);
        mma_s8u8(acc[i][1], a, b1);
      }
    }
  }
}

// Per-token values of the epilogue, looked up once per tile (their loads overlap the K loop):
// S and s of the activations, and for QKV the position and the token's K/V cache offset.
struct TokTab {
  int32_t sum[GM], pos[GM];
  float scale[GM];
  size_t coff[GM];
};

// Rows [r0, r0 + rows) of the tile (gemm_reduce_kernel loads its slice only).
__device__ __forceinline__ void load_tok(TokTab &tt, const Acts &A, const Epi &e, int M, int r0 = 0, int rows = GM) {
  if ((int)threadIdx.x < rows) {
    const int ml = r0 + threadIdx.x, m = blockIdx.y * GM + ml;
    if (m < M) {
      tt.sum[ml] = A.sum[m];
      tt.scale[ml] = A.scale[m];
      if (e.kind == EPI_QKV) {
        tt.pos[ml] = e.pos[m];
        tt.coff[ml] = cache_offset(e, m);
      }
    }
  }
}

// The tiles variant's per-token values: the independent loads are issued before the K loop into
// registers and stored after it, and only the QKV cache offset's dependent block-table load is
// made there. (load_tok stores into shared memory before the first barrier, so the threads that
// load it hold every warp at that barrier for one or two memory round trips.)
struct TokRegs {
  int32_t sum = 0, pos = 0, slot = 0;
  float scale = 0.f;
};

__device__ __forceinline__ void tok_begin(TokRegs &r, const Acts &A, const Epi &e, int M) {
  const int m = blockIdx.y * GM + threadIdx.x;
  if (threadIdx.x < GM && m < M) {
    r.sum = A.sum[m];
    r.scale = A.scale[m];
    if (e.kind == EPI_QKV) {
      r.pos = e.pos[m];
      r.slot = e.slot[m];
    }
  }
}

__device__ __forceinline__ void tok_end(TokTab &tt, const TokRegs &r, const Epi &e, int M) {
  const int m = blockIdx.y * GM + threadIdx.x;
  if (threadIdx.x < GM && m < M) {
    tt.sum[threadIdx.x] = r.sum;
    tt.scale[threadIdx.x] = r.scale;
    if (e.kind == EPI_QKV) {  // from the values already loaded
      tt.pos[threadIdx.x] = r.pos;
      tt.coff[threadIdx.x] = cache_offset_at(e, r.pos, r.slot);
    }
  }
}

// Both kernels' start: the per-token values into shared memory (load_tok) or, in the tiles
// variant, into registers (tok_begin; tok_end stores them after the K loop).
template <bool TILES>
__device__ __forceinline__ void tok_start(TokTab &tt, TokRegs &tr, const Acts &A, const Epi &e, int M) {
  if (TILES)
    tok_begin(tr, A, e, M);
  else
    load_tok(tt, A, e, M);
}

// The epilogue proper over token rows [r0, r1) of the 64×64 result tile Cs, on (even, odd) column
// pairs, kEpiBatch pairs per thread at a time: consecutive threads take consecutive pairs of one
// token (coalesced stores); a residual add loads all its old values before it stores any. m0, nt0:
// the tile's first token and weight row; tt: the tile's per-token values.
__device__ __forceinline__ void gemm_epilogue(const Mat &W, int M, const Epi &e, const int *Cs, const TokTab &tt,
                                              int m0, int nt0, int r0, int r1) {
  for (int i0 = r0 * (GN / 2) + (int)threadIdx.x; i0 < r1 * (GN / 2); i0 += kEpiBatch * blockDim.x) {
    float y0[kEpiBatch], y1[kEpiBatch], old0[kEpiBatch], old1[kEpiBatch];
#pragma unroll
    for (int b = 0; b < kEpiBatch; b++) {
      const int idx = i0 + b * blockDim.x, ml = idx / (GN / 2), nl = 2 * (idx % (GN / 2));
      const int m = m0 + ml, n = nt0 + nl;
      y0[b] = y1[b] = old0[b] = old1[b] = 0.f;
      if (ml < r1 && m < M && n < W.n) {
        const int dms0 = Cs[ml * CST + nl] - tt.sum[ml], dms1 = Cs[ml * CST + nl + 1] - tt.sum[ml];
        y0[b] = bitlinear_out(dms0, tt.scale[ml], W.sm, n);
        if (n + 1 < W.n) y1[b] = bitlinear_out(dms1, tt.scale[ml], W.sm, n + 1);
        if (e.kind == EPI_RESID) {
          const float *o = e.out + (size_t)m * e.ld + n;
          old0[b] = o[0];
          if (n + 1 < W.n) old1[b] = o[1];
        }
      }
    }
#pragma unroll
    for (int b = 0; b < kEpiBatch; b++) {
      const int idx = i0 + b * blockDim.x, ml = idx / (GN / 2), nl = 2 * (idx % (GN / 2));
      const int m = m0 + ml, n = nt0 + nl;
      if (ml >= r1 || m >= M || n >= W.n) continue;
      const bool has1 = n + 1 < W.n;
      switch (e.kind) {
        case EPI_RESID: {
          float *o = e.out + (size_t)m * e.ld + n;
          o[0] = fadd(old0[b], y0[b]);
          if (has1) o[1] = fadd(old1[b], y1[b]);
          break;
        }
        case EPI_QKV:
          qkv_store_at(e, m, n, y0[b], y1[b], tt.pos[ml], tt.coff[ml]);
          if (has1) qkv_store_at(e, m, n + 1, y1[b], 0.f, tt.pos[ml], tt.coff[ml]);
          break;
        default:
          epi_apply(e, m, n, y0[b], y1[b]);
          if (has1) epi_apply(e, m, n + 1, y1[b], 0.f);
      }
    }
  }
}

// The end of both kernels: the accumulators to the result tile Cs (in shared memory, after every
// thread is done with the K loop's buffers), split-K reduction, then the epilogue proper.
// TRACE (bench only): the block's timeline marks (bn_device.cuh) into `trace`. SEP (with TILES):
// a split block only stores its partial tile; gemm_reduce_kernel adds them and runs the epilogue.
template <bool TILES, bool TRACE = false, bool SEP = false>
__device__ __forceinline__ void gemm_finish(const Mat &W, const Acts &A, int M, const Epi &e, int (&acc)[4][2][4],
                                            int *Cs, const TokTab &tt, int *scratch, unsigned *tickets,
                                            unsigned long long *trace = nullptr) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int nt0 = blockIdx.x * GN, m0 = blockIdx.y * GM;
  // Result tile to shared memory: Cs[ml][nl], C fragment rows g/g+8, columns 2t/2t+1.
  __syncthreads();
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 2; j++)
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const int ml = 16 * i + g + 8 * h, nl = warp * 16 + 8 * j + 2 * t;
        Cs[ml * CST + nl] = acc[i][j][2 * h];
        Cs[ml * CST + nl + 1] = acc[i][j][2 * h + 1];
      }
  __syncthreads();
  if (TILES && gridDim.z > 1) {
    // Split-K by partial tiles: `scratch` holds gridDim.z × tiles partial tiles of 64×64 int32,
    // [z][tile][ml][nl]; the last block keeps its own in Cs and adds the others'.
    constexpr int V4 = GM * GN / 4;  // int4 pieces per tile; piece i = row i/16, columns 4(i%16)..
    const size_t tile = (size_t)blockIdx.y * gridDim.x + blockIdx.x, tiles = (size_t)gridDim.x * gridDim.y;
    int4 *part = (int4 *)scratch;
#pragma unroll
    for (int b = 0; b < V4 / 128; b++) {
      const int i = threadIdx.x + 128 * b;
      part[((size_t)blockIdx.z * tiles + tile) * V4 + i] = *(const int4 *)(Cs + (i >> 4) * CST + 4 * (i & 15));
    }
    if (SEP) {  // the reduce kernel, launched next, adds the tiles (stream order orders the stores)
      trace_end<TRACE>(trace);
      return;
    }
    BN_SHARED(bool, is_last_t);
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
      unsigned *tk = tickets + tile;
      is_last_t = atomicAdd(tk, 1u) == gridDim.z - 1;
      if (is_last_t) *tk = 0;
    }
    __syncthreads();
    if (!is_last_t) {
      trace_end<TRACE>(trace);
      return;
    }
    trace_put<TRACE>(trace, 3, trace_clock());
    __threadfence();
    // Two other splits per round, all 16 of a thread's loads in flight before the adds.
    for (unsigned z0 = 0; z0 < gridDim.z; z0 += 2) {
      int4 v[2][V4 / 128];
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const unsigned z = z0 + h;
        const bool use = z < gridDim.z && z != blockIdx.z;
#pragma unroll
        for (int b = 0; b < V4 / 128; b++)
          v[h][b] = use ? __ldcg(part + ((size_t)z * tiles + tile) * V4 + threadIdx.x + 128 * b) : make_int4(0, 0, 0, 0);
      }
#pragma unroll
      for (int b = 0; b < V4 / 128; b++) {
        const int i = threadIdx.x + 128 * b;
        int4 *c = (int4 *)(Cs + (i >> 4) * CST + 4 * (i & 15));
        int4 x = *c;
        x.x += v[0][b].x + v[1][b].x;
        x.y += v[0][b].y + v[1][b].y;
        x.z += v[0][b].z + v[1][b].z;
        x.w += v[0][b].w + v[1][b].w;
        *c = x;
      }
    }
    __syncthreads();
  }
  if (!TILES && gridDim.z > 1) {
    // Split-K: accumulate into the scratch matrix; the tile's last block finishes it.
    for (int idx = threadIdx.x; idx < GM * GN; idx += blockDim.x) {
      const int ml = idx / GN, nl = idx % GN, m = m0 + ml, n = nt0 + nl;
      if (m < M && n < W.n) atomicAdd(scratch + (size_t)m * W.n + n, Cs[ml * CST + nl]);
    }
    BN_SHARED(bool, is_last);
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
      unsigned *tk = tickets + blockIdx.y * gridDim.x + blockIdx.x;
      is_last = atomicAdd(tk, 1u) == gridDim.z - 1;
      if (is_last) *tk = 0;
    }
    __syncthreads();
    if (!is_last) {
      trace_end<TRACE>(trace);
      return;
    }
    trace_put<TRACE>(trace, 3, trace_clock());
    __threadfence();
    // Read the sums back kEpiBatch at a time (all loads before the stores that zero them: a
    // load-store-load chain would cost one L2 round trip per element).
    for (int i0 = threadIdx.x; i0 < GM * GN; i0 += kEpiBatch * blockDim.x) {
      int v[kEpiBatch];
#pragma unroll
      for (int b = 0; b < kEpiBatch; b++) {
        const int idx = i0 + b * blockDim.x, ml = idx / GN, nl = idx % GN, m = m0 + ml, n = nt0 + nl;
        v[b] = m < M && n < W.n ? __ldcg(scratch + (size_t)m * W.n + n) : 0;
      }
#pragma unroll
      for (int b = 0; b < kEpiBatch; b++) {
        const int idx = i0 + b * blockDim.x, ml = idx / GN, nl = idx % GN, m = m0 + ml, n = nt0 + nl;
        if (m < M && n < W.n) {
          scratch[(size_t)m * W.n + n] = 0;
          Cs[ml * CST + nl] = v[b];
        }
      }
    }
    __syncthreads();
  }
  if (gridDim.z == 1) trace_put<TRACE>(trace, 3, trace_clock());
  gemm_epilogue(W, M, e, Cs, tt, m0, nt0, 0, GM);
  trace_end<TRACE>(trace);
}

template <bool TILES, bool SEP = false>
__global__ void __launch_bounds__(128, 4) gemm_kernel(Mat W, Acts A, int M, Epi e, int kb_per_split, int *scratch,
                                                   unsigned *tickets) {
  BN_SHARED(TokTab, tt);
  BN_PDL_ENTER_LONG();
  TokRegs tr;
  tok_start<TILES>(tt, tr, A, e, M);
  // Shared memory: the activation tile during the K loop, then the 64×64 int32 result tile.
  BN_SHARED(__align__(16) int8_t, smem, [GM * CST * 4]);
  int8_t *As = smem;
  int *Cs = (int *)smem;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int nt0 = blockIdx.x * GN, n0 = nt0 + warp * 16, m0 = blockIdx.y * GM;
  const int kb_n = W.k >> 7;
  const int kb0 = blockIdx.z * kb_per_split, kb1 = min(kb_n, kb0 + kb_per_split);
  const size_t rb = (size_t)W.k >> 2;
  const int r0 = n0 + g, r1 = n0 + 8 + g;
  const bool v0 = r0 < W.n, v1 = r1 < W.n;
  const uint8_t *w0p = W.w + (size_t)(v0 ? r0 : 0) * rb + 4 * t;
  const uint8_t *w1p = W.w + (size_t)(v1 ? r1 : 0) * rb + 4 * t;
  int acc[4][2][4] = {};
  uint32_t cur[4] = {0, 0, 0, 0}, nxt[4] = {0, 0, 0, 0};
  if (kb0 < kb1) {
    if (v0) {
      cur[0] = __ldg((const uint32_t *)(w0p + (size_t)kb0 * 32));
      cur[1] = __ldg((const uint32_t *)(w0p + (size_t)kb0 * 32 + 16));
    }
    if (v1) {
      cur[2] = __ldg((const uint32_t *)(w1p + (size_t)kb0 * 32));
      cur[3] = __ldg((const uint32_t *)(w1p + (size_t)kb0 * 32 + 16));
    }
  }
  for (int kb = kb0; kb < kb1; kb++) {
    __syncthreads();  // the previous activation tile is consumed
#pragma unroll
    for (int pass = 0; pass < 4; pass++) {
      const int piece = threadIdx.x + 128 * pass, r = piece >> 3, c16 = piece & 7;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (m0 + r < M) v = __ldg((const uint4 *)(A.q + (size_t)(m0 + r) * A.ld + (size_t)kb * 128 + c16 * 16));
      *(uint4 *)(As + r * AST + c16 * 16) = v;
    }
    if (kb + 1 < kb1) {
      if (v0) {
        nxt[0] = __ldg((const uint32_t *)(w0p + (size_t)(kb + 1) * 32));
        nxt[1] = __ldg((const uint32_t *)(w0p + (size_t)(kb + 1) * 32 + 16));
      }
      if (v1) {
        nxt[2] = __ldg((const uint32_t *)(w1p + (size_t)(kb + 1) * 32));
        nxt[3] = __ldg((const uint32_t *)(w1p + (size_t)(kb + 1) * 32 + 16));
      }
    }
    __syncthreads();
    kblock_mma(acc, As, cur[0], cur[1], cur[2], cur[3], m0, M, g, t);
#pragma unroll
    for (int r = 0; r < 4; r++) cur[r] = nxt[r];
  }
  pdl_launch_dependents();
  if (TILES) tok_end(tt, tr, e, M);  // read after gemm_finish's barriers
  gemm_finish<TILES, false, SEP>(W, A, M, e, acc, Cs, tt, scratch, tickets);
}

// ---- the pipelined variants (BN_GEMM=pipelined: 3 stages; BN_GEMM=deep: 6 stages) ----------------
// Same tiles, warps and fragments as gemm_kernel, but both operands go through shared memory with
// cp.async in an S-deep ring: while the tensor cores work on K block kb, the copies of blocks
// kb+1 .. kb+S-1 are in flight, so a block waits for memory once, not once per K block.
// Weight tile: 64 rows × 32 bytes at a 48-byte row stride (16-byte aligned for cp.async; the
// fragment reads of words t and t+4 of rows g are conflict-free at that stride). Rows past M or N
// are zero-filled by the copy (src-size 0), as gemm_kernel zero-fills them.
// Why a deep variant: run 6 (H200, 2026-11-28) timed the 3-stage kernel with no split at 16.5 us
// for gate+up at M = 16 and 23.4 us at M = 64, where the weights alone stream in ~2.2 us: about
// 0.8 us per K block whatever M is, the signature of a loop that waits on memory latency with
// two blocks' copies (~10 KB per SM) in flight. Six stages keep five in flight (a whole split's
// K range when K is split 4 or more ways). The ring is dynamic shared memory (S × 12,288 bytes:
// 73,728 for S = 6, above the 48 KB default; configure_gemm raises the limit).
constexpr int kGemmStages = 3, kGemmDeepStages = 6;
constexpr int WST = 48;
constexpr int A_STAGE = GM * AST, W_STAGE = GN * WST, STAGE = A_STAGE + W_STAGE;
static_assert(kGemmStages * STAGE >= GM * CST * 4, "the result tile reuses the ring");

// TRACE: the bench's timeline variant (trace: kTraceSlots u64 per block; nullptr otherwise).
template <bool TILES, int S, bool TRACE = false, bool SEP = false>
__global__ void __launch_bounds__(128, 4) gemm_pipe_kernel(Mat W, Acts A, int M, Epi e, int kb_per_split,
                                                        int *scratch, unsigned *tickets, unsigned long long *trace) {
  static_assert(S >= 3, "the wait below keeps S - 2 groups in flight");
  BN_SHARED(TokTab, tt);
  BN_DYN_SHARED(__align__(16) int8_t, ring);  // S × STAGE bytes (the launch gives them)
  trace_begin<TRACE>(trace);
  BN_PDL_ENTER_LONG();
  TokRegs tr;
  tok_start<TILES>(tt, tr, A, e, M);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int nt0 = blockIdx.x * GN, m0 = blockIdx.y * GM;
  const int kb_n = W.k >> 7;
  const int kb0 = blockIdx.z * kb_per_split, kb1 = min(kb_n, kb0 + kb_per_split);
  const size_t rb = (size_t)W.k >> 2;
  // This thread's copies of each K block: 4 activation pieces and 1 weight piece of 16 bytes.
  auto issue = [&](int kb, int stage) {
    int8_t *As = ring + stage * STAGE, *Ws = As + A_STAGE;
#pragma unroll
    for (int pass = 0; pass < 4; pass++) {
      const int piece = threadIdx.x + 128 * pass, r = piece >> 3, c16 = piece & 7;
      const bool ok = m0 + r < M;
      cp_async16_zfill(As + r * AST + c16 * 16, A.q + (size_t)(ok ? m0 + r : 0) * A.ld + (size_t)kb * 128 + c16 * 16,
                       ok ? 16 : 0);
    }
    const int row = threadIdx.x >> 1, half = threadIdx.x & 1;
    const bool ok = nt0 + row < W.n;
    cp_async16_zfill(Ws + row * WST + half * 16, W.w + (size_t)(ok ? nt0 + row : 0) * rb + (size_t)kb * 32 + half * 16,
                     ok ? 16 : 0);
  };
  int acc[4][2][4] = {};
#pragma unroll
  for (int st = 0; st < S - 1; st++) {
    if (kb0 + st < kb1) issue(kb0 + st, st);
    cp_async_commit();  // always one group per stage: the wait below counts groups
  }
  for (int kb = kb0; kb < kb1; kb++) {
    const int i = kb - kb0;
    cp_async_wait<S - 2>();  // this thread's copies of block kb have landed
    __syncthreads();         // everyone's have, and block kb-1's stage is free
    if (kb + S - 1 < kb1) issue(kb + S - 1, (i + S - 1) % S);
    cp_async_commit();
    const int8_t *As = ring + (i % S) * STAGE, *Ws = As + A_STAGE;
    const int rl0 = warp * 16 + g, rl1 = rl0 + 8;
    const uint32_t w0t = ld32(Ws + rl0 * WST + 4 * t), w0t4 = ld32(Ws + rl0 * WST + 16 + 4 * t);
    const uint32_t w1t = ld32(Ws + rl1 * WST + 4 * t), w1t4 = ld32(Ws + rl1 * WST + 16 + 4 * t);
    kblock_mma(acc, As, w0t, w0t4, w1t, w1t4, m0, M, g, t);
  }
  cp_async_wait<0>();  // no copy may land in the ring once it holds the result tile
  trace_put<TRACE>(trace, 2, trace_clock());
  pdl_launch_dependents();
  if (TILES) tok_end(tt, tr, e, M);
  gemm_finish<TILES, TRACE, SEP>(W, A, M, e, acc, (int *)ring, tt, scratch, tickets, trace);
}

// ---- split-K by a second kernel (BN_GEMM_SPLITK=kernel: GemmChoice.tiles = 2) --------------------
// Why: run 7's ncu showed the default split-K GEMM's SMs active 45% of its time: after the K loop
// only each tile's last block works (adding the other splits' partial tiles, then the epilogue),
// 60 blocks for qkv at M = 64 while the other 240 have ended. Here the split blocks only store
// their partial tiles (no ticket, no fence), and this kernel, grid (tiles x, tiles y,
// kRedSlices), adds a tile's `splits` partial tiles for 64 / kRedSlices token rows and runs the
// epilogue on them: 4 × as many blocks share that work, at the cost of one more launch. Integer
// sums: the same bits in any order.
constexpr int kRedSlices = 4, kRedRows = GM / kRedSlices;

__global__ void __launch_bounds__(128) gemm_reduce_kernel(Mat W, Acts A, int M, Epi e, int splits, const int *parts) {
  BN_SHARED(TokTab, tt);
  BN_SHARED(__align__(16) int, Cs, [GM * CST]);  // rows [r0, r1) used
  pdl_enter();
  const int nt0 = blockIdx.x * GN, m0 = blockIdx.y * GM, r0 = blockIdx.z * kRedRows, r1 = r0 + kRedRows;
  load_tok(tt, A, e, M, r0, kRedRows);
  constexpr int V4 = GM * GN / 4, P = kRedRows * GN / 4 / 128;  // int4 pieces per tile; per thread here
  const size_t tile = (size_t)blockIdx.y * gridDim.x + blockIdx.x, tiles = (size_t)gridDim.x * gridDim.y;
  const int4 *part = (const int4 *)parts;
  int4 acc[P];
#pragma unroll
  for (int b = 0; b < P; b++) acc[b] = make_int4(0, 0, 0, 0);
  for (int z0 = 0; z0 < splits; z0 += 4) {  // four splits per round: 4·P loads in flight per thread
    int4 v[4][P];
#pragma unroll
    for (int h = 0; h < 4; h++)
#pragma unroll
      for (int b = 0; b < P; b++) {
        const int z = z0 + h, i = r0 * (GN / 4) + (int)threadIdx.x + 128 * b;
        v[h][b] = z < splits ? __ldcg(part + ((size_t)z * tiles + tile) * V4 + i) : make_int4(0, 0, 0, 0);
      }
#pragma unroll
    for (int h = 0; h < 4; h++)
#pragma unroll
      for (int b = 0; b < P; b++) {
        acc[b].x += v[h][b].x;
        acc[b].y += v[h][b].y;
        acc[b].z += v[h][b].z;
        acc[b].w += v[h][b].w;
      }
  }
#pragma unroll
  for (int b = 0; b < P; b++) {
    const int i = r0 * (GN / 4) + (int)threadIdx.x + 128 * b;
    *(int4 *)(Cs + (i >> 4) * CST + 4 * (i & 15)) = acc[b];
  }
  __syncthreads();
  gemm_epilogue(W, M, e, Cs, tt, m0, nt0, r0, r1);
}

int g_gemm_variant = 1;
int g_gemm_splitk = 1;
int g_gemm_last_split = 0;
static bool g_gemm_deep_ok = false;
static int g_gemm_smem_optin = 0;

bn_status configure_gemm(int smem_optin) {
  g_gemm_smem_optin = smem_optin;
  const int bytes = kGemmDeepStages * STAGE;
  if (bytes > smem_optin) return BN_OK;  // the deep variant stays unavailable (launch_gemm says why)
  const auto attr = cudaFuncAttributeMaxDynamicSharedMemorySize;
  // Every instantiation launch_pipe makes with the deep ring: reduction by tiles or not, traced or
  // not, and the split blocks of the reduce-kernel path (SEP).
  for (cudaError_t e : {cudaFuncSetAttribute(gemm_pipe_kernel<true, kGemmDeepStages>, attr, bytes),
                        cudaFuncSetAttribute(gemm_pipe_kernel<false, kGemmDeepStages>, attr, bytes),
                        cudaFuncSetAttribute(gemm_pipe_kernel<true, kGemmDeepStages, true>, attr, bytes),
                        cudaFuncSetAttribute(gemm_pipe_kernel<false, kGemmDeepStages, true>, attr, bytes),
                        cudaFuncSetAttribute(gemm_pipe_kernel<true, kGemmDeepStages, false, true>, attr, bytes),
                        cudaFuncSetAttribute(gemm_pipe_kernel<true, kGemmDeepStages, true, true>, attr, bytes)})
    if (e != cudaSuccess) {
      cudaGetLastError();
      set_error("gemm: raising the deep kernel's shared memory to %d bytes failed: %s", bytes, cudaGetErrorString(e));
      return BN_ERR_UNSUPPORTED;
    }
  g_gemm_deep_ok = true;
  return BN_OK;
}

// The number of K splits for an n×k matrix and M tokens; per = K blocks per split.
static int gemm_split(int n, int k, int M, const GemmScratch &gs, int sm_count, int split_waves, bool tiles, int &per) {
  const int nt = (n + GN - 1) / GN, mt = (M + GM - 1) / GM;
  const int kb_n = k >> 7;
  // Split K until the blocks fill `split_waves` blocks per SM (0: never). Each split block adds its
  // 64×64 tile to the scratch with atomics, which are not free (RESULTS.md): the bench times 0, 1
  // and the default 2 (BN_GEMM_SPLIT_WAVES, read by CudaDevice). With partial tiles the split is
  // also capped by the partial-tile buffer (gs.max_parts tiles).
  int split = 1;
  const int target = split_waves * sm_count;
  if (nt * mt < target && nt * mt <= gs.max_tiles) {
    split = (target + nt * mt - 1) / (nt * mt);
    if (split > kb_n / 2) split = kb_n / 2;  // at least two K blocks per split
    if (tiles && split > gs.max_parts / (nt * mt)) split = gs.max_parts / (nt * mt);
    if (split < 1) split = 1;
  }
  per = (kb_n + split - 1) / split;
  return (kb_n + per - 1) / per;
}

int gemm_splits(int n, int k, int M, const GemmScratch &gs, int sm_count, const GemmChoice &c) {
  int per = 0;
  return gemm_split(n, k, M, gs, sm_count, c.waves, c.tiles != 0, per);
}

// The pipelined kernel with an S-stage ring, reduction by tiles or not, with or without the
// timeline; SEP: the split blocks only store their partial tiles (gemm_reduce_kernel follows).
template <int S, bool TRACE, bool SEP>
static bn_status launch_ring(const Mat &w, const Acts &a, int M, const Epi &e, const GemmScratch &gs, dim3 grid,
                             int per, bool tiles, cudaStream_t s, unsigned long long *trace) {
  constexpr size_t smem = (size_t)S * STAGE;
  if (tiles)
    return launch_k("gemm_pipe_kernel", gemm_pipe_kernel<true, S, TRACE, SEP>, grid, 128, smem, s, w, a, M, e, per,
                    gs.parts, gs.tickets, trace);
  return launch_k("gemm_pipe_kernel", gemm_pipe_kernel<false, S, TRACE>, grid, 128, smem, s, w, a, M, e, per, gs.sums,
                  gs.tickets, trace);
}

// Variant 1: 3 stages, 2: 6 stages (when the device allows its shared memory).
template <bool TRACE, bool SEP>
static bn_status launch_pipe(const Mat &w, const Acts &a, int M, const Epi &e, const GemmScratch &gs, dim3 grid,
                             int per, bool tiles, int variant, cudaStream_t s, unsigned long long *trace) {
  if (variant != 2) return launch_ring<kGemmStages, TRACE, SEP>(w, a, M, e, gs, grid, per, tiles, s, trace);
  if (!g_gemm_deep_ok) {
    set_error("gemm: the %d-stage kernel needs %d bytes of shared memory per block; the device allows %d",
              kGemmDeepStages, kGemmDeepStages * STAGE, g_gemm_smem_optin);
    return BN_ERR_UNSUPPORTED;
  }
  return launch_ring<kGemmDeepStages, TRACE, SEP>(w, a, M, e, gs, grid, per, tiles, s, trace);
}

template <bool TRACE>
static bn_status launch_any(const Mat &w, const Acts &a, int M, const Epi &e, const GemmScratch &gs, dim3 grid,
                            int per, const GemmChoice &c, cudaStream_t s, unsigned long long *trace) {
  const bool tiles = c.tiles != 0, sep = c.tiles == 2 && grid.z > 1;
  int *scratch = tiles ? gs.parts : gs.sums;
  bn_status st = BN_OK;
  if (c.variant == 0) {
    if (TRACE) {
      set_error("gemm: the timeline is traced for the pipelined kernels only");
      return BN_ERR_UNSUPPORTED;
    }
    if (sep) st = launch_k("gemm_kernel", gemm_kernel<true, true>, grid, 128, 0, s, w, a, M, e, per, scratch, gs.tickets);
    else if (tiles) st = launch_k("gemm_kernel", gemm_kernel<true>, grid, 128, 0, s, w, a, M, e, per, scratch, gs.tickets);
    else st = launch_k("gemm_kernel", gemm_kernel<false>, grid, 128, 0, s, w, a, M, e, per, scratch, gs.tickets);
  } else {
    st = sep ? launch_pipe<TRACE, true>(w, a, M, e, gs, grid, per, tiles, c.variant, s, trace)
             : launch_pipe<TRACE, false>(w, a, M, e, gs, grid, per, tiles, c.variant, s, trace);
  }
  if (st || !sep) return st;
  return launch_k("gemm_reduce_kernel", gemm_reduce_kernel, dim3(grid.x, grid.y, kRedSlices), 128, 0, s, w, a, M, e,
                  (int)grid.z, (const int *)gs.parts);
}

bn_status launch_gemm(const Mat &w, const Acts &a, int M, const Epi &e, const GemmScratch &gs, int sm_count,
                      const GemmChoice &c, cudaStream_t s, unsigned long long *trace, int *blocks) {
  const int nt = (w.n + GN - 1) / GN, mt = (M + GM - 1) / GM;
  int per = 0;  // K blocks per split (the last may have fewer)
  const int split = gemm_split(w.n, w.k, M, gs, sm_count, c.waves, c.tiles != 0, per);
  g_gemm_last_split = split;  // read by the tests, to report that a check split K
  dim3 grid(nt, mt, split);
  if (blocks) *blocks = nt * mt * split;
  if (trace) return launch_any<true>(w, a, M, e, gs, grid, per, c, s, trace);
  return launch_any<false>(w, a, M, e, gs, grid, per, c, s, nullptr);
}

}  // namespace bn
