// Kernel parameter blocks and the two seams of the engine:
// - Ops: one method per kernel launch. CudaOps (bn_cuda.cu) launches the CUDA kernels; EmuOps
//   (bn_emu.cpp) runs a CPU emulation built from the same host/device helpers (bn_numerics.h).
// - Device: memory, copies, synchronisation and (optionally) CUDA graphs.
// The engine core (bn_core.cpp) is written once against these, so the orchestration (which
// buffer feeds which kernel, fused tails, paging, batching) runs and is tested on the CPU too.
//
// All pointers are device pointers on the GPU build and host pointers in the emulation.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "../include/bitnet_cuda.h"
#include "bn_fast.h"
#include "bn_numerics.h"
#include "bn_tune.h"

namespace bn {

// ---- kernel parameters --------------------------------------------------------------------------

// Fast numerics (bn_options.numerics = BN_NUMERICS_FAST, small decode batches only; see bn_fast.h):
// an RMSNorm is not run by one block after its producer. The producer's blocks leave per-block
// partial statistics, its last block reduces them to two scalars per token (NormStats.stats:
// the RMS scale sc and the activation scale s), and every block of the consumer GEMV
// normalizes and quantizes its input itself, into shared memory.
struct NormStats {
  const float *x;  // the vector to normalize: token m's n values at x + m*ldx (null = not used)
  int ldx, n;
  const float *w;  // the norm weight [n]
  float eps;
  float *stats;  // [M][2]: sc = rms_scale(Σx², n, eps), s = act_scale(|fround(fround(x·sc)·w)|) at the
                 // element of largest |fround(x·w)| (the exact norm's maximum but for near-ties)
};

// What a producer (GEMV with fast stats, fast attention) writes for the norm after it: per-part
// partials (part p of token m at [m*part_ld + p]), reduced by its last block into ns.stats.
struct StatsOut {
  NormStats ns;          // ns.stats == null: no statistics
  double *part_ss;       // Σ x² of the part's elements (f64, fixed order)
  uint64_t *part_key;    // max over the part of fast_key(x, w, i) (bn_fast.h)
  int part_ld;
  // Optional (BN_FAST_QUANT=tail): the last block also writes the int8 rows q (row stride ldq),
  // scale and Σq, so the consumer reads them like the exact path's instead of quantizing.
  int8_t *q;
  float *scale;
  int32_t *sum;
  int ldq;
};

// int8 activations of M tokens: token m's K values at q + m*ld (ld a multiple of 16), its scale
// s[m] = 127/amax and S[m] = Σq.
struct Acts {
  const int8_t *q;
  const float *scale;
  const int32_t *sum;
  int ld;
};

// The fast numerics' side of a GEMV (kept out of Acts/Epi so the exact kernels' parameters, and
// so their code, stay as verified). `in.x` set: the GEMV ignores Acts' q/scale/sum and quantizes
// in.x itself (row stride Acts.ld in shared memory) with the statistics in in.stats; null: it
// reads Acts (rows quantized by the producer's last block, BN_FAST_QUANT=tail).
// `out.ns.stats` set: statistics of the vector the epilogue stores (RESID: the sum; GATEUP: the
// activation), for the norm after it.
struct FastGemv {
  NormStats in;
  StatsOut out;
};

// An I2_S matrix of n rows × k columns (k % 128 == 0), rows contiguous (k/4 bytes each).
struct Mat {
  const uint8_t *w;
  int n, k;
  ScaleMap sm;
};

enum EpiKind { EPI_STORE = 0, EPI_RESID = 1, EPI_GATEUP = 2, EPI_QKV = 3 };

// What a matmul does with y[m][n] (the BitLinear output).
struct Epi {
  int kind;
  // STORE: out[m*ld + n] = y. RESID: out[m*ld + n] += y (f32 add). GATEUP: rows interleaved
  // (2i = gate i, 2i+1 = up i): out[m*ld + i] = act(g)·u.
  float *out;
  int ld;
  int act;  // BN_ACT_*
  // QKV: rows [q (RoPE pairs adjacent), k (same), v]; q -> q16, k/v -> the paged cache.
  uint16_t *q16;
  int ldq;
  int n_embd, kv_dim, head_dim, n_rot;
  const float *rope;  // [pos][n_rot/2] (cos, sin) pairs
  const int32_t *pos, *slot, *block_table;
  int max_pages, page_shift;
  uint16_t *kc, *vc;  // this layer's K and V pools: [page][slot in page][kv_dim] f16
};

// Per-token RMSNorm (f64 sum of squares) followed by int8 quantization; the "tail" of a fused
// kernel or a kernel of its own. Outputs are optional (null = not written).
struct NormQuant {
  const float *x;
  int ldx, n;
  const float *w;
  float eps;
  int8_t *q;
  float *scale;
  int32_t *sum;
  int ldq;
  float *f32_out;     // normed values, row stride ldx
  uint16_t *f16_out;  // f16 of the normed values, row stride ldx
};

struct EmbedParams {
  const void *table;  // [V][n_embd] F16 or F32
  int type;           // BN_TYPE_F16 / BN_TYPE_F32
  int n_embd;
  const int32_t *tokens;
  float *x;  // [M][n_embd]
  int ldx;
};

struct AttnParams {
  const uint16_t *q16;  // [M][ldq] (RoPE'd, f16)
  int ldq;
  const uint16_t *kc, *vc;  // this layer's pools
  const int32_t *pos, *slot, *block_table;
  int max_pages, page_shift;
  int n_head, n_head_kv, head_dim, kv_dim;
  double scale;  // 1/sqrt(head_dim) in f64 (the reference multiplies by a double)
  float *out;    // [M][ldo]
  int ldo;
  int max_t;     // scores buffer capacity (positions)
};

// Fast numerics: split-KV attention (bn_fast.h). Token m's positions are cut in `splits` ranges of
// fast_split_len(T, splits) (the last ones may be empty); each range's block leaves an
// unnormalized partial (part_o [M][n_head][splits][head_dim], part_ml [..][splits][2]: the
// range's max score and Σ exp), the last range of a head combines them, and `so` receives the
// statistics of the attention output for attn_sub_norm (one part per head).
struct FastAttn {
  int splits;
  float *part_o;
  float *part_ml;
  StatsOut so;
};

struct HeadParams {
  int mode;          // BN_HEAD_F16 (type F16 or F32) / BN_HEAD_INT8
  int type;          // head tensor type for F16 mode (BN_TYPE_F16 or BN_TYPE_F32)
  const void *w;     // [V][K]
  const int8_t *w8;  // INT8: [V][K]
  const float *w8_scale;  // INT8: per row
  int n_vocab, k;
  const uint16_t *h16;  // F16 head input rows [M][ldh]
  const float *h32;     // F32 head input rows
  const int8_t *hq;     // INT8 head input
  const float *hscale;
  int ldh;
  const int32_t *rows;  // logits row r reads hidden row rows[r]
  float *logits;        // [R][n_vocab]
};

// The head GEMM's kernel variants (k_head.cu; CUDA builds): 0 plain, 1 pipelined, 2 wide, 3 wide3,
// 4 wide8.
constexpr int kHeadVariants = 5;
extern int g_head_variant;  // BN_HEAD_MMA=pipelined|wide|wide3|wide8 (0, plain, unless set; tuning overrides)
const char *head_variant_name(int v);
bool head_pipe_available();  // configure_head succeeded: variants 1.. run as themselves
extern long g_head_pipe_launches;  // launches of variants 1.. (the checks read it)
extern long g_gemv_rot_launches;   // launches of the rotated-plane GEMV (BN_GEMV=rot, k_gemv.cu; the checks read it)
extern long g_gemv_smem_launches;  // launches of the shared-row GEMV (BN_GEMV=smem, k_gemv.cu; the checks read it)
extern long g_ffn_chain_launches;  // launches of the persistent FFN chain (k_ffn_chain.cu; the checks read it)
extern long g_layer_chain_launches;  // launches of the persistent layer (k_layer_chain.cu)
extern long g_step_chain_launches;   // launches of the persistent step (k_layer_chain.cu)

// One sampling row as the GPU reads it (mirrors bn_sampling with the history inline).
struct SampleRow {
  double temperature;
  double top_p;
  double penalty;
  int32_t top_k;
  float u;
  int32_t n_history;
  int32_t history[64];
};

struct SelectParams {
  float *logits;  // [R][n_vocab], modified in place by the repetition penalty
  int n_vocab;
  const SampleRow *rows;  // null = greedy for all
  int32_t *out;           // [R]
  int32_t *nan_flag;      // set to 1 when a NaN is seen
};

constexpr int kMaxTopK = 1024;
constexpr int kGemvTPR = 8;        // lanes per row in the emulated dp4a GEMV (any split: integer sums)
constexpr int kGemvMaxM = 8;       // tokens the GEMV can carry (one per lane of a row group)
// Lanes per row of the CUDA GEMV for an n-row matrix (k_gemv.cu), and so its rows per 128-thread
// block: the fast numerics' statistics parts are per block, and the emulation mirrors them.
BN_HD int gemv_lanes_per_row(int n) { return n < 8192 ? 16 : 8; }
BN_HD int gemv_rows_per_block(int n) { return 4 * (32 / gemv_lanes_per_row(n)); }
constexpr int kAttnThreads = 128;  // threads per attention block (4 warps)
// The most tokens whose attention() can take a NormQuant tail (one ticket per token).
constexpr int kAttnTailTokens = 4096;
constexpr int kNormThreads = 128;  // threads per token in RMSNorm+quantize (and every fused tail)

// ---- seams --------------------------------------------------------------------------------------

// A decode step's o → gate/up → down chain for one token, in one cooperative launch (the
// persistent FFN chain, k_ffn_chain.cu; BN_PERSIST=ffn): the three GEMVs with their epilogues,
// and between them, after a grid-wide barrier, every block runs the next RMSNorm + quantization
// itself into its shared memory (the one-block tail's order, so the same bits) instead of the
// last block running it for all and the next kernel being launched. `next` runs as the down
// GEMV's tail does (the last block, global outputs).
struct FfnChain {
  Mat o, gu, down;
  Acts a;               // o's input (the attention tail's int8 row, global)
  Epi eo, eg, ed;       // RESID into x, GATEUP into ff, RESID into x
  NormQuant ffn, fsub;  // x and ff normed per block (their q/scale/sum outputs are ignored)
  NormQuant next;       // the tail after down
};

// A decode step's whole layer for one token in one cooperative launch (the persistent layer,
// k_layer_chain.cu; BN_PERSIST=layer): the QKV GEMV from the previous tail's int8 row (RoPE, K/V
// into the pages); after a grid-wide barrier the attention heads (attn_kernel's code, a block per
// head); after another, every block normalizes the attention output itself (attn_sub_norm) and
// the FFN chain f follows (f.a is unused: o reads the block's own int8 row).
struct LayerChain {
  Mat qkv;
  Acts a;         // qkv's input (global)
  Epi eq;         // EPI_QKV
  AttnParams ap;  // token 0 of pos/slot; out: the attention output (= sub.x)
  NormQuant sub;  // attn_sub_norm of ap.out (its q/scale/sum outputs are ignored)
  FfnChain f;
  NormQuant in;   // the persistent step (layers after the first): attn_norm of x, normed per block
  int prefetch;   // 1: L2 prefetches (the context's K/V rows; o, gate/up, down, next_qkv and the
                  // norm weights during attention)
  // Each in-kernel norm copies its weights into shared memory: 1, before its grid barrier (their
  // round trip overlaps the wait); 0, after it, beside x's.
  int stage_norm_w;
  // 1: each GEMV phase's later row groups are copied into shared memory while its norm runs
  // (32 KB more of dynamic shared memory; bn_chain.cuh); 0: each loads after the one before.
  int stage_weights;
  Mat next_qkv;   // the next layer's QKV weights (w null: none, the last layer)
  // Split scores (k_layer_chain.cu): n_head x ap.max_t floats; null: one block per head does all.
  float *scores;
};

// A decode step's layers for one token in one cooperative launch (the persistent step,
// k_layer_chain.cu; BN_PERSIST=step): layer 0 as a LayerChain, each later layer after a grid-wide
// barrier with its input normed per block (`in`) instead of the previous layer's tail; the last
// layer's f.next (output_norm, for the head) runs in the last block.
struct StepChain {
  const LayerChain *layers;  // device memory: n_layer chains (the engine uploads them once)
  int n_layer;
  LayerChain first;          // a host copy of layers[0]: shapes and shared memory (every layer's are equal)
};

void set_error(const char *fmt, ...);  // bn_api.cpp (declared again below, with the error API)

class Ops {
 public:
  virtual ~Ops() {}
  virtual bn_status embed(const EmbedParams &p, int M, const NormQuant &nq) = 0;
  // dp4a GEMV for M <= kGemvMaxM tokens; `tail` (nullable) runs in the last block to finish;
  // `fast` (nullable): the fast numerics' input and statistics.
  virtual bn_status gemv(const Mat &w, const Acts &a, int M, const Epi &e, const NormQuant *tail,
                         const FastGemv *fast = nullptr) = 0;
  // int8 tensor-core GEMM (mma m16n8k32 s8·u8) for any M.
  virtual bn_status gemm(const Mat &w, const Acts &a, int M, const Epi &e) = 0;
  virtual bn_status norm_quant(const NormQuant &nq, int M) = 0;
  // `tail` (nullable): each token's norm runs in the last of its head blocks to finish (M <=
  // kAttnTailTokens). `split` (nullable, fast numerics): split-KV attention with statistics
  // instead of a tail.
  virtual bn_status attention(const AttnParams &p, int M, const NormQuant *tail, const FastAttn *split = nullptr) = 0;
  // Whether the engine gives attention() its attn_sub_norm as that tail also above gemv_max_m
  // tokens, instead of a norm_quant() launch after it (BN_ATTN_TAIL=1 on the CUDA device).
  virtual bool attention_tail_batched() const { return false; }
  // R logits rows; `gemm` picks the tensor-core path (F16 mode) for large R.
  virtual bn_status head(const HeadParams &p, int R, bool gemm) = 0;
  virtual bn_status select(const SelectParams &p, int R) = 0;
  // Bench only (the CUDA device): one launch of gemm() (the pipelined kernels) or of the exact
  // gemv() with each block's timeline written to `trace` (device memory, kTraceSlots u64 per
  // block, layout in bn_device.cuh); *blocks gets the launch's block count. Elsewhere
  // BN_ERR_UNSUPPORTED.
  virtual bn_status gemm_traced(const Mat &w, const Acts &a, int M, const Epi &e, unsigned long long *trace,
                                int *blocks) {
    (void)w, (void)a, (void)M, (void)e, (void)trace, (void)blocks;
    return BN_ERR_UNSUPPORTED;
  }
  virtual bn_status gemv_traced(const Mat &w, const Acts &a, int M, const Epi &e, const NormQuant *tail,
                                unsigned long long *trace, int *blocks) {
    (void)w, (void)a, (void)M, (void)e, (void)tail, (void)trace, (void)blocks;
    return BN_ERR_UNSUPPORTED;
  }
  // Bench and checks only (the CUDA device): one cooperative launch of `blocks` blocks of
  // `threads` threads that meet at 2·rounds grid-wide barriers (bn_device.cuh grid_barrier). Each
  // round every block writes its slot (slots: `blocks` ints), then every thread reads another
  // block's and counts a stale one in *bad. bar: two zeroed u32; ns[0]: block 0's %globaltimer
  // nanoseconds from the first barrier's start to the last one's end. `norm` (nullable; 128
  // threads, ldx 0): after each round's first barrier every block b also normalizes and
  // quantizes the one vector norm->x into q row b, scale[b], sum[b] (k_sync.cu). Elsewhere
  // BN_ERR_UNSUPPORTED. barrier 1: grid_barrier_count instead (bar then holds its u64 counter,
  // zeroed by the launch). barrier 2 (at least 2 blocks, no norm): the waits' watchdog check,
  // block 0 never arrives and the others' wait must end the launch with a device-side assertion
  // (cudaErrorAssert, BN_ERR_CUDA) after 20 ms; on a GPU that leaves the context unusable.
  virtual bn_status grid_sync_probe(int blocks, int threads, int rounds, unsigned *bar, int *slots, int *bad,
                                    unsigned long long *ns, const NormQuant *norm = nullptr, int barrier = 0) {
    (void)blocks, (void)threads, (void)rounds, (void)bar, (void)slots, (void)bad, (void)ns, (void)norm, (void)barrier;
    return BN_ERR_UNSUPPORTED;
  }
  // The persistent FFN chain (FfnChain) for M = 1, when ffn_chain_on(): the engine then calls it
  // instead of the o, gate/up and down gemv() calls. blocks: the grid (0: the device's setting,
  // two per SM; the bench and checks choose others), capped at what can be resident at once.
  virtual bool ffn_chain_on() const { return false; }
  virtual bn_status ffn_chain(const FfnChain &c, int blocks = 0) {
    (void)c, (void)blocks;
    set_error("the persistent FFN chain runs on the CUDA device only");
    return BN_ERR_UNSUPPORTED;
  }
  // Whether a chain of these shapes can run here (the engine asks at creation when it is on).
  virtual bn_status ffn_chain_check(const FfnChain &c) {
    (void)c;
    set_error("the persistent FFN chain runs on the CUDA device only");
    return BN_ERR_UNSUPPORTED;
  }
  // The persistent layer (LayerChain) for M = 1, when layer_chain_on(): the engine then calls it
  // instead of the QKV gemv(), attention() and the o, gate/up and down gemv() calls. blocks as
  // ffn_chain's.
  virtual bool layer_chain_on() const { return false; }
  virtual bn_status layer_chain(const LayerChain &c, int blocks = 0) {
    (void)c, (void)blocks;
    set_error("the persistent layer runs on the CUDA device only");
    return BN_ERR_UNSUPPORTED;
  }
  virtual bn_status layer_chain_check(const LayerChain &c) {
    (void)c;
    set_error("the persistent layer runs on the CUDA device only");
    return BN_ERR_UNSUPPORTED;
  }
  // The persistent step (StepChain) for M = 1, when step_chain_on(): the engine then calls it
  // instead of every layer's launches. Checked as its first layer's LayerChain.
  virtual bool step_chain_on() const { return false; }
  virtual bn_status step_chain_check(const StepChain &c) {
    (void)c;
    set_error("the persistent step runs on the CUDA device only");
    return BN_ERR_UNSUPPORTED;
  }
  virtual bn_status step_chain(const StepChain &c, int blocks = 0) {
    (void)c, (void)blocks;
    set_error("the persistent step runs on the CUDA device only");
    return BN_ERR_UNSUPPORTED;
  }
};
// u64 slots per block of a traced launch (Ops::gemm_traced / gemv_traced).
constexpr int kTraceSlots = 8;

class Device {
 public:
  virtual ~Device() {}
  virtual bn_status alloc(void **p, size_t bytes) = 0;
  virtual void release(void *p) = 0;
  virtual bn_status alloc_host(void **p, size_t bytes) = 0;  // pinned on the GPU build
  virtual void release_host(void *p) = 0;
  virtual bn_status h2d(void *dst, const void *src, size_t bytes) = 0;  // async on the stream
  virtual bn_status d2h(void *dst, const void *src, size_t bytes) = 0;  // async on the stream
  virtual bn_status d2d(void *dst, const void *src, size_t bytes) = 0;  // async on the stream
  virtual bn_status memset0(void *p, size_t bytes) = 0;
  virtual bn_status sync() = 0;
  virtual Ops &ops() = 0;
  virtual bn_status free_memory(uint64_t *free_bytes, uint64_t *total_bytes) = 0;
  virtual void describe(char *name, size_t len, int *cc_major, int *cc_minor) = 0;
  // CUDA graphs: begin_capture, then the ops and copies of one step, then end_capture(&id);
  // launch_graph(id) replays it. A device without graphs returns false from has_graphs().
  virtual bool has_graphs() = 0;
  virtual bn_status begin_capture() = 0;
  virtual bn_status end_capture(int *graph_id) = 0;
  virtual bn_status launch_graph(int graph_id) = 0;
  // Once at creation: the attention scores' shared memory (max_ctx floats) and the scratch of
  // split-K GEMMs (max_tokens × max_n int32).
  virtual bn_status configure(int max_ctx, int max_tokens, int max_n) = 0;
  // Timing for the benchmarks: device events on the GPU, a host clock in the emulation.
  virtual bn_status timer_start() = 0;
  virtual bn_status timer_stop(double *ms) = 0;  // waits for the work in between
  // GEMM autotuning (bn_tune.h): on the CUDA device unless BN_AUTOTUNE=0, picks gemm()'s launch
  // configuration for matrices of w's shape up to max_m tokens; elsewhere nothing (one GEMM).
  virtual bn_status tune_gemm(const Mat &w, int max_m) {
    (void)w;
    (void)max_m;
    return BN_OK;
  }
  // The same for the head GEMM's kernel (head() above kGemvMaxM rows, F16 head): the fastest of
  // its variants (all with the same bits) on these head weights, up to max_rows rows.
  virtual bn_status tune_head(const HeadParams &p, int max_rows) {
    (void)p;
    (void)max_rows;
    return BN_OK;
  }
};

// What the last tune_gemm calls chose, a line per shape and bucket, and how many configurations
// gave other bits than the default (0 on a correct build). Cleared when a device is created.
extern std::string g_gemm_tuning_log;
extern int g_gemm_tuning_mismatches;

// BN_ERR_INVALID_ARGUMENT (with the error set) if a tuning knob's environment variable holds a
// value that knob does not take (bn_core.cpp lists them); checked by bn_engine_create/_load before
// any work, and where the CUDA device reads them (its creation).
bn_status check_knobs();

// The CPU emulator as a Device (also available in the GPU build, for side-by-side tests).
Device *make_emu_device();

// Provided by bn_cuda.cu (GPU build) or bn_emu.cpp (CPU emulation build).
bn_status make_device(int device_index, Device **out);

// Checks a fast GEMV's arguments (fast input always; statistics only with a RESID or GATEUP
// epilogue and no exact tail); false with the error set.
bool fast_gemv_ok(const Mat &w, const Acts &a, const Epi &e, const NormQuant *tail, const FastGemv &f);

// Checks a split attention's arguments (1..kFastMaxSplits ranges, partial buffers, one
// statistics part per head); false with the error set.
bool fast_attn_ok(const AttnParams &p, const FastAttn &f, int M);

// Thread-local error text (bn_last_error).
void set_error(const char *fmt, ...);
void clear_error();

}  // namespace bn
