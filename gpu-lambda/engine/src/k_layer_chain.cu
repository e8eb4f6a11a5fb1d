// The persistent layer (BN_PERSIST=layer; LayerChain in bn_kernels.h): a decode step's whole
// layer for one token in one cooperative launch, the next step of the persistent FFN chain
// (k_ffn_chain.cu) toward one launch per step ("What to do next", item 6, gpu-lambda/RESULTS.md).
//
// Why: at batch 1 the chain still leaves two launches per layer in front of it (the QKV GEMV, then
// attention with its one-block attn_sub_norm tail) and the gaps between them. Here:
//   1. QKV rows (the previous tail's int8 row from global memory), RoPE, K/V into the pages;
//   2. grid barrier (q and this position's K/V stored); attention, head h in block h (blocks
//      b, b + gridDim.x, … when the grid has fewer blocks than heads), attn_head: the exact
//      kernel's code, so the same bits; above 64 positions with the scores split over the idle
//      blocks first (below);
//   3. grid barrier (the attention output stored); every block normalizes and quantizes it
//      itself (attn_sub_norm, block_norm_quant's order: the one-block tail's bits), then its o rows;
//   4-5. gate/up and down as in the FFN chain; the next norm stays a last-block tail.
// While the heads run, the blocks without a head or a score chunk have nothing to do but wait at
// the barrier. With `prefetch` they first ask L2 for the rest of the layer's weights
// (o, gate/up, down: 14.7 MB at the 2B-4T shapes, within the H200's 50 MB L2) and the next
// layer's QKV weights (2.5 MB), split evenly between them, so phases 3-5 and the next layer's
// QKV phase read their weights from L2 instead of DRAM; and before the QKV phase every block asks
// for its share of the context's K/V rows (0.66 MB at 256 positions), which attention reads.
// Neither weights nor past K/V rows depend on this step's data: the prefetch changes no value.
//
// Bits: the QKV rows are gemv_block's (chain_rows), attention is attn_kernel's (attn_head), the
// norms block_norm_quant's, the FFN phases the FFN chain's: every output equals the launches it
// replaces bit for bit (checked: gpu/layer-chain, gpu/model-*/persist-layer).
//
// The persistent step (BN_PERSIST=step; StepChain): every layer of a decode step in one launch,
// the phases above per layer; a later layer starts with a grid barrier and every block normalizes
// x itself (attn_norm) for its QKV rows, instead of the previous layer's last-block tail, the
// kernel's end and the next launch. output_norm (for the head) runs in the last block.
//
// Dynamic shared memory, reused by the phases: attention's scores and K/V tile
// (attn_smem_bytes(max_t, head_dim): 51 KB at max_t 4096, head_dim 128), then the chain's vector
// cache and int8 row (5 bytes per element of the longer vector), with stage_weights followed by
// the GEMVs' staged weights (kChainWStageBytes, 32 KB; bn_chain.cuh: they are copied only after a
// grid barrier that follows this block's attention, so they may share attention's part); after
// the larger of the two, the norms' weights (4 bytes per element: 27 KB at n_ff 6912; apart,
// because with stage_norm_w they land while the block may still run attention). 2B-4T shapes at
// max_t 4096: 94 KB, two blocks per SM on an H100/H200 (up to max_t ~11,000). Above 48 KB it is
// raised per device (raise_smem) up to the device's opt-in limit.
#include <algorithm>

#include "bn_attn.cuh"
#include "bn_chain.cuh"

namespace bn {

long g_layer_chain_launches = 0;
long g_step_chain_launches = 0;

// Asks L2 for this block's share of `bytes` bytes at p: the span is cut into `parts` contiguous
// pieces of whole 128-byte lines, piece `part` is this block's, its threads stride over the lines.
__device__ __forceinline__ void prefetch_share_l2(const void *p, size_t bytes, int part, int parts) {
  const size_t lines = (bytes + 127) / 128, per = (lines + parts - 1) / parts;
  const size_t l0 = (size_t)part * per, l1 = l0 + per < lines ? l0 + per : lines;
  for (size_t l = l0 + threadIdx.x; l < l1; l += blockDim.x) prefetch_l2((const char *)p + l * 128);
}

__device__ __forceinline__ size_t mat_bytes(const Mat &W) { return (size_t)W.n * (size_t)(W.k >> 2); }

// Asks L2 for this block's share of the K and V rows of positions 0..pos-1 of token 0's sequence
// (the attention phase reads them; this position's rows are written by the QKV phase). Lines
// of a row start inside the row (kv_dim · 2 bytes, a multiple of 16): nothing past the pool.
__device__ __forceinline__ void prefetch_kv_l2(const AttnParams &p, int part, int parts) {
  const int pos = p.pos[0], row_bytes = p.kv_dim * 2, lpr = (row_bytes + 127) / 128, mask = (1 << p.page_shift) - 1;
  const int32_t *bt = p.block_table + (size_t)p.slot[0] * p.max_pages;
  const long per_pool = (long)pos * lpr, total = 2 * per_pool, per = (total + parts - 1) / parts;
  const long l1 = (long)(part + 1) * per < total ? (long)(part + 1) * per : total;
  for (long i = (long)part * per + threadIdx.x; i < l1; i += blockDim.x) {
    const bool v = i >= per_pool;
    const long r = v ? i - per_pool : i;
    const int t = (int)(r / lpr), li = (int)(r - (long)t * lpr);
    const size_t row = ((size_t)__ldg(bt + (t >> p.page_shift)) << p.page_shift) + (size_t)(t & mask);
    prefetch_l2((const char *)((v ? p.vc : p.kc) + row * (size_t)p.kv_dim) + (size_t)li * 128);
  }
}

// ---- attention with the scores split over blocks (`scores` set) --------------------------------
// One block per head leaves the blocks without a head idle while its 128 threads score the
// positions 128 at a time, each score a 128-step f64 chain, and the context's K tiles arrive one
// round trip after another (runs 8-9: 9.5 us at 256 positions, 32.6 at 1024, ~30 ns per position).
// Here the scores go first: head h's positions are cut into G contiguous chunks of ~kScoreChunk
// (longer when the grid has fewer blocks per head), block (h, c) stages its chunk's K rows and
// scores them (row_score: the same values as attn_head's) into the global `scores`. Once the
// head's G chunks have counted their arrival, the head's block reads its T scores into shared
// memory and runs attn_head's softmax and PV on them: the same values, orders and bits (max is
// exact in any order; the sum and the PV chains keep their orders).
constexpr int kScoreChunk = 64;

// Chunks per head for T positions on this grid: 1 (no split) unless there are blocks to spare.
__device__ __forceinline__ int score_chunks(int T, int n_head) {
  const int per_head = (int)gridDim.x / n_head, want = (T + kScoreChunk - 1) / kScoreChunk;
  return per_head < want ? (per_head > 0 ? per_head : 1) : want;
}

// Loads head h's q (token 0) into shared f64.
__device__ __forceinline__ void load_qd(const AttnParams &p, int h, double *qd) {
  for (int d = threadIdx.x; d < p.head_dim; d += kAttnThreads)
    qd[d] = f16_to_f64(__ldcg(p.q16 + (size_t)h * p.head_dim + d));
}

// Block (h, c): the scores of chunk c of head h's T positions, into scores[h][t].
__device__ __forceinline__ void score_chunk(const AttnParams &p, float *scores, int h, int c, int G, int T, float *smem) {
  BN_SHARED(double, qd, [256]);
  const int hd = p.head_dim, kvh = h / (p.n_head / p.n_head_kv), KT = attn_tile_rows(hd), ts = attn_tile_stride(hd);
  const int L = (T + G - 1) / G, t0 = c * L, n = min(T, t0 + L) - t0;
  if (n <= 0) return;
  uint16_t *tile = (uint16_t *)smem;
  const int32_t *bt = p.block_table + (size_t)p.slot[0] * p.max_pages;
  auto stage_k = [&](int j0, int k) {
    stage_rows_fast(tile, ts, p.kc, bt, t0 + j0, k, p.page_shift, p.kv_dim, kvh * hd, hd);
  };
  stage_k(0, min(KT, n));
  load_qd(p, h, qd);
  score_range(scores + (size_t)h * p.max_t + t0, tile, ts, KT, n, qd, hd, p.scale, stage_k);
}

// Head h's softmax and PV from its T scores in `scores` (attn_head's second half).
__device__ __forceinline__ void softmax_pv(const AttnParams &p, const float *scores, int h, int T, float *sc) {
  BN_SHARED(float, wmax, [kAttnThreads / 32]);
  BN_SHARED(double, wsum, [kAttnThreads / 32]);
  const int hd = p.head_dim, kvh = h / (p.n_head / p.n_head_kv), KT = attn_tile_rows(hd), ts = attn_tile_stride(hd);
  uint16_t *tile = (uint16_t *)(sc + ((p.max_t + 3) & ~3));
  const int32_t *bt = p.block_table + (size_t)p.slot[0] * p.max_pages;
  auto stage_v = [&](int t0, int n) { stage_rows_fast(tile, ts, p.vc, bt, t0, n, p.page_shift, p.kv_dim, kvh * hd, hd); };
  stage_v(0, min(KT, T));  // lands while the scores load and the softmax runs
  float lmax = -INFINITY;
  for (int t = threadIdx.x; t < T; t += kAttnThreads) {
    const float s = __ldcg(scores + (size_t)h * p.max_t + t);  // written by other blocks: through L2
    sc[t] = s;
    lmax = fmaxf(lmax, s);
  }
  softmax_weights(sc, T, lmax, wmax, wsum);
  float acc[2] = {0.f, 0.f};
  pv_range(acc, sc, tile, ts, KT, T, hd, stage_v);
#pragma unroll
  for (int i = 0; i < 2; i++) {
    const int d = threadIdx.x + i * kAttnThreads;
    if (d < hd) p.out[(size_t)h * hd + d] = acc[i];
  }
}

// Phase 2 with split scores: the chunks, then softmax and PV per head. Not a grid barrier between
// them: each chunk's block counts its arrival on its head's counter (head_count[h], zeroed by the
// launch and growing over the step's layers: layer l's chunks bring it to (l + 1)·G), and only
// the head's block waits for its G chunks; the other blocks go on.
__device__ __forceinline__ void attention_split(const AttnParams &p, float *scores, int G, int T, float *smem,
                                                unsigned *head_count, unsigned target) {
  const int items = p.n_head * G, b = (int)blockIdx.x;
  for (int it = b; it < items; it += (int)gridDim.x) {
    if (it != b) __syncthreads();  // the previous chunk's tile is consumed
    score_chunk(p, scores, it / G, it % G, G, T, smem);
    __syncthreads();  // every thread's scores are stored
    if (threadIdx.x == 0) {
      __threadfence();  // ... and visible before the arrival
      atomicAdd(head_count + it / G, 1u);
    }
  }
  for (int h = b; h < p.n_head; h += (int)gridDim.x) {
    __syncthreads();  // this block's chunk (its tile) or previous head is done
    if (threadIdx.x == 0) {
      const volatile unsigned *c = head_count + h;
      SpinWatch w;
      while (*c < target) w.poll("persistent layer: a head's score chunks did not arrive within the watchdog's limit");
      __threadfence();  // the chunks' scores before this block reads them
    }
    __syncthreads();
    softmax_pv(p, scores, h, T, smem);
  }
}

// A phase's input: a grid barrier, then this block's norm of nq's vector into its shared row.
// The norm's weights are copied into ws (block_norm_quant_t<true>; the same bits). With `ahead`
// (c.stage_norm_w) the copies start before the barrier: the weights do not depend on the data,
// so their round trip overlaps the barrier's wait, and after the barrier only x's remains.
// Without, they start after it, beside x's (the bench's comparison: the same code otherwise).
// issue: the next GEMV's staged weights (chain_phase_staged), started once x's copies are in
// flight.
template <typename Issue>
__device__ __forceinline__ void barrier_norm(const NormQuant &nq, int8_t *q, float *qscale, int32_t *qsum, float4 *xs,
                                             float4 *ws, bool ahead, unsigned long long *bar, Issue issue) {
  if (ahead) stage_norm_w(nq.w, nq.n, ws);
  grid_barrier_count(bar);
  if (!ahead) stage_norm_w(nq.w, nq.n, ws);
  chain_norm<true>(nq, q, qscale, qsum, xs, ws, issue);
}

// One layer's phases for one token. norm_in (the persistent step, layers after the first): a
// grid barrier, then every block normalizes x itself (c.in) into its shared row for the QKV GEMV;
// else the QKV GEMV reads the int8 row a previous kernel wrote (c.a). The next norm is the
// caller's. ws: the norms' weights in shared memory. The GEMVs' staged weights
// (c.stage_weights) go to the kChainWStageBytes after the int8 row q (nmax bytes).
__device__ __forceinline__ void layer_phases(const LayerChain &c, int layer, bool norm_in, int8_t *q, float *qscale,
                                             int32_t *qsum, float4 *xs, float4 *ws, int nmax, unsigned long long *bar) {
  const FfnChain &f = c.f;
  const bool ahead = c.stage_norm_w != 0;
  uint4 *wst = c.stage_weights ? (uint4 *)(q + nmax) : nullptr;
  // A GEMV phase's `before`: the barrier, then this block's norm of nq's vector (barrier_norm).
  auto normed = [&](const NormQuant &nq) {
    return [&, p = &nq](auto issue) { barrier_norm(*p, q, qscale, qsum, xs, ws, ahead, bar, issue); };
  };
  // Every block asks L2 for its share of the context's K/V rows, which attention reads next.
  if (c.prefetch) prefetch_kv_l2(c.ap, (int)blockIdx.x, (int)gridDim.x);
  // 1. q, k, v (+ RoPE, + this position's K/V into the pages).
  if (norm_in) {
    // (the barrier: every block's x rows of the previous layer are stored)
    chain_phase_staged<true>(c.qkv, q, qsum, qscale, c.eq, normed(c.in), wst);
  } else {
    chain_phase_staged<false>(c.qkv, c.a.q, c.a.sum, c.a.scale, c.eq, [](auto issue) { issue(); }, wst);
  }
  // 2. attention: one block per head.
  grid_barrier_count(bar);  // q16 and every K/V row of this position are stored
  const int nh = c.ap.n_head, b = (int)blockIdx.x;
  if (c.prefetch && b >= nh) {  // this block has no head: the layer's later weights into L2
    const int part = b - nh, parts = (int)gridDim.x - nh;
    prefetch_share_l2(f.o.w, mat_bytes(f.o), part, parts);
    prefetch_share_l2(f.gu.w, mat_bytes(f.gu), part, parts);
    prefetch_share_l2(f.down.w, mat_bytes(f.down), part, parts);
    if (c.next_qkv.w) prefetch_share_l2(c.next_qkv.w, mat_bytes(c.next_qkv), part, parts);
    // and the norm weights of phases 3-5 and of the next layer's input (f.next: the next layer's
    // attn_norm, or output_norm), 59 KB at the 2B-4T shapes
    for (const NormQuant *nq : {&c.sub, &f.ffn, &f.fsub, &f.next})
      if (nq->w) prefetch_share_l2(nq->w, (size_t)nq->n * 4, part, parts);
  }
  // K/V tiles staged by stage_rows_fast (layer_chain_check: 128 is a multiple of head_dim / 8).
  const int T = c.ap.pos[0] + 1, G = c.scores ? score_chunks(T, nh) : 1;
  if (G > 1) {  // (G is the same in every block and layer: T, the heads and the grid are)
    attention_split(c.ap, c.scores, G, T, (float *)xs, (unsigned *)(bar + 1), (unsigned)((layer + 1) * G));
  } else {
    for (int h = b; h < nh; h += (int)gridDim.x) {
      if (h != b) __syncthreads();  // the previous head's tile and scores are consumed
      attn_head<true>(c.ap, h, 0, (float *)xs);
    }
  }
  // 3. attn_sub_norm in every block, o + residual. (The barrier: every head's output is stored,
  // and no block uses its tile any more.)
  chain_phase_staged<true>(f.o, q, qsum, qscale, f.eo, normed(c.sub), wst);
  // 4. ffn_norm, gate/up + activation. (The barrier: every block's x rows are stored.)
  chain_phase_staged<true>(f.gu, q, qsum, qscale, f.eg, normed(f.ffn), wst);
  // 5. ffn_sub_norm, down + residual. (The barrier: every block's ff values are stored, and no
  // block reads x any more.)
  chain_phase_staged<true>(f.down, q, qsum, qscale, f.ed, normed(f.fsub), wst);
}

// (128, 4) as the FFN chain's kernel (at most 128 registers; the bench runs 1, 2 and 4 per SM).
// ws_at: the norm weights' place in the dynamic shared memory (float4s).
__global__ void __launch_bounds__(128, 4) layer_chain_kernel(LayerChain c, unsigned *counter,
                                                             unsigned long long *bar, int nmax, int ws_at) {
  BN_DYN_SHARED(__align__(16) float4, xs);  // attention: scores + tile; then nmax floats + nmax int8
  BN_SHARED(float, qscale);
  BN_SHARED(int32_t, qsum);
  layer_phases(c, 0, false, (int8_t *)(xs + nmax / 4), &qscale, &qsum, xs, xs + ws_at, nmax, bar);
  if (last_block(counter)) block_norm_quant(c.f.next, 0, xs);  // the next layer's input, from x
}

// The persistent step: every layer in turn (their chains in global memory, read as the phases
// need them), then output_norm in the last block. Between layers, x's rows are only ever written
// by the thread that owns them (o and down share the row mapping) and read by the others through
// L2 (the norms' cp.async.cg), so no block reads a stale L1 line of them.
// (128, 2): the engine runs two blocks per SM; at (128, 4) ptxas capped it at 128 registers and
// spilled (12 bytes on sm_90); at 2 it takes ~150 and spills nothing (3 blocks per SM fit).
__global__ void __launch_bounds__(128, 2) step_chain_kernel(const LayerChain *layers, int n_layer, unsigned *counter,
                                                            unsigned long long *bar, int nmax, int ws_at) {
  BN_DYN_SHARED(__align__(16) float4, xs);
  BN_SHARED(float, qscale);
  BN_SHARED(int32_t, qsum);
  int8_t *q = (int8_t *)(xs + nmax / 4);
  float4 *ws = xs + ws_at;
  for (int l = 0; l < n_layer; l++) layer_phases(layers[l], l, l > 0, q, &qscale, &qsum, xs, ws, nmax, bar);
  if (last_block(counter)) block_norm_quant(layers[n_layer - 1].f.next, 0, xs);
}

// The chain's longer vector, and the launch's dynamic shared memory: attention's or the chain's
// (reused by the phases), then nmax floats of norm weights (apart: with stage_norm_w they land
// while attention still uses its part).
static int layer_nmax(const LayerChain &c) { return std::max(c.f.o.n, c.f.gu.n / 2); }
static size_t layer_ws_at(const LayerChain &c) {  // bytes, a multiple of 16
  const size_t chain = (size_t)layer_nmax(c) * 5 + (c.stage_weights ? kChainWStageBytes : 0);
  return (std::max(attn_smem_bytes(c.ap.max_t, c.ap.head_dim), chain) + 15) & ~(size_t)15;
}
static size_t layer_smem(const LayerChain &c) { return layer_ws_at(c) + (size_t)layer_nmax(c) * 4; }
static int layer_ws_arg(const LayerChain &c) { return (int)(layer_ws_at(c) / 16); }

static SmemMark g_layer_smem_max, g_step_smem_max;

// Lets `kernel` use the chain's shared memory on this device (mark: the bytes already allowed).
template <typename K>
static bn_status raise_smem(K kernel, SmemMark &mark, const LayerChain &c, const char *what) {
  const size_t bytes = layer_smem(c);
  if ((int)bytes <= mark.get()) return BN_OK;
  const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
  if (e != cudaSuccess) {
    cudaGetLastError();
    set_error("%s: %zu bytes of shared memory per block (context %d, head_dim %d, n_ff %d): %s", what, bytes,
              c.ap.max_t, c.ap.head_dim, c.f.gu.n / 2, cudaGetErrorString(e));
    return BN_ERR_UNSUPPORTED;
  }
  mark.set((int)bytes);
  return BN_OK;
}

bn_status layer_chain_check(const LayerChain &c) {
  if (const bn_status st = ffn_chain_shapes(c.f)) return st;
  const AttnParams &p = c.ap;
  const int E = c.f.o.n, kvd = p.n_head_kv * p.head_dim;
  const bool shapes = c.qkv.k == E && c.qkv.n == E + 2 * kvd && p.n_head * p.head_dim == E && p.kv_dim == kvd &&
                      p.n_head_kv > 0 && p.n_head % p.n_head_kv == 0 && c.sub.n == E && c.sub.x == p.out &&
                      p.ldo == E && c.eq.kind == EPI_QKV && c.eq.n_embd == E && c.eq.kv_dim == kvd &&
                      c.eq.head_dim == p.head_dim && p.max_t > 0;
  if (!shapes) {
    set_error("layer chain: qkv %dx%d, %d heads (%d kv) of %d and the attention output's norm (n %d) do not fit the "
              "FFN chain's n_embd %d (or the QKV epilogue is not EPI_QKV)",
              c.qkv.n, c.qkv.k, p.n_head, p.n_head_kv, p.head_dim, c.sub.n, E);
    return BN_ERR_INVALID_ARGUMENT;
  }
  // The persistent kernels stage K/V only with stage_rows_fast (one kernel variant fewer to
  // compile): each thread keeps one 16-byte column of a row, so 128 % (head_dim / 8) == 0.
  if (p.head_dim > 256 || (p.head_dim & 7) || kAttnThreads % (p.head_dim >> 3) != 0) {
    set_error("layer chain: head_dim %d (the persistent kernels take 8, 16, 32, 64, 128 or 256)", p.head_dim);
    return BN_ERR_UNSUPPORTED;
  }
  if (p.n_head > kChainMaxHeads) {
    set_error("layer chain: %d heads (at most %d: one split-score counter each)", p.n_head, kChainMaxHeads);
    return BN_ERR_UNSUPPORTED;
  }
  // Shared memory: raised for this device once (only ever up, as for attention).
  return raise_smem(layer_chain_kernel, g_layer_smem_max, c, "layer chain");
}

// The step's own additions: the input norm point of the later layers (the engine builds every
// layer's chain alike, so layer 0's is checked for all).
bn_status step_chain_check(const StepChain &s) {
  if (const bn_status st = layer_chain_check(s.first)) return st;
  if (!s.layers || s.n_layer < 1 || s.first.in.n != s.first.f.o.n || !s.first.in.x || !s.first.in.w) {
    set_error("step chain: %d layers at %p, input norm n %d (n_embd %d)", s.n_layer, (const void *)s.layers,
              s.first.in.n, s.first.f.o.n);
    return BN_ERR_INVALID_ARGUMENT;
  }
  // Its shared memory is the layer kernel's (same size), raised for this kernel too.
  return raise_smem(step_chain_kernel, g_step_smem_max, s.first, "step chain");
}

int step_chain_max_blocks(int sm_count, const StepChain &s) {
  return chain_resident_blocks(step_chain_kernel, sm_count, layer_smem(s.first));
}

// The barrier's counter and the heads' split-score counters.
static size_t layer_sync_bytes(const LayerChain &c) { return 8 + 4 * (size_t)c.ap.n_head; }

bn_status launch_step_chain(const StepChain &s, int blocks, unsigned *counter, unsigned long long *bar,
                            cudaStream_t st) {
  const bn_status e = launch_chain("step_chain_kernel", step_chain_kernel, blocks, layer_smem(s.first), bar,
                                   layer_sync_bytes(s.first), st, s.layers, s.n_layer, counter, bar,
                                   layer_nmax(s.first), layer_ws_arg(s.first));
  if (!e) g_step_chain_launches++;
  return e;
}

int layer_chain_max_blocks(int sm_count, const LayerChain &c) {
  return chain_resident_blocks(layer_chain_kernel, sm_count, layer_smem(c));
}

bn_status launch_layer_chain(const LayerChain &c, int blocks, unsigned *counter, unsigned long long *bar,
                             cudaStream_t s) {
  const bn_status st = launch_chain("layer_chain_kernel", layer_chain_kernel, blocks, layer_smem(c), bar,
                                    layer_sync_bytes(c), s, c, counter, bar, layer_nmax(c), layer_ws_arg(c));
  if (!st) g_layer_chain_launches++;
  return st;
}

}  // namespace bn
