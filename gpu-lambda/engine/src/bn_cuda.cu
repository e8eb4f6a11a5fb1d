// The CUDA side of the seams: CudaDevice (memory, copies, one non-blocking stream, CUDA graphs)
// and CudaOps (kernel launches). Every CUDA call goes through BN_CUDA_CHECK, which turns an error
// into a status and bn_last_error() text; nothing is printed and nothing carries on.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "bn_device.cuh"

namespace bn {

static bn_status cuda_fail(cudaError_t e, const char *what, const char *file, int line) {
  // A device-side assertion (the persistent kernels' watchdog, bn_device.cuh SpinWatch) prints its
  // text, block and thread on the process's stderr; the runtime's own string is generic.
  const char *hint = e == cudaErrorAssert
                         ? "; a kernel's device-side check failed (its text is on stderr: a persistent kernel's "
                           "grid-wide wait past the watchdog's limit names the wait)"
                         : "";
  set_error("%s failed: %s (%s) at %s:%d%s", what, cudaGetErrorName(e), cudaGetErrorString(e), file, line, hint);
  if (e == cudaErrorMemoryAllocation) return BN_ERR_OUT_OF_MEMORY;
  if (e == cudaErrorInsufficientDriver || e == cudaErrorNoDevice || e == cudaErrorInvalidDevice) return BN_ERR_NO_DEVICE;
  return BN_ERR_CUDA;
}

#define BN_CUDA_CHECK(call)                                                   \
  do {                                                                        \
    const cudaError_t bn_e_ = (call);                                         \
    if (bn_e_ != cudaSuccess) return cuda_fail(bn_e_, #call, __FILE__, __LINE__); \
  } while (0)

bool g_pdl = false;

bn_status set_pdl_early(bool early) {
  const int on = early ? 1 : 0;
  BN_CUDA_CHECK(pdl_set_early_gemv(on));
  BN_CUDA_CHECK(pdl_set_early_gemm(on));
  BN_CUDA_CHECK(pdl_set_early_attn(on));
  BN_CUDA_CHECK(pdl_set_early_attn_split(on));
  return BN_OK;
}

// The tuning knobs are environment variables read when a device is created.
static bool env_is(const char *name, const char *value) {
  const char *v = getenv(name);
  return v && strcmp(v, value) == 0;
}

bn_status check_launch(const char *what, cudaError_t e) {
  const cudaError_t last = cudaGetLastError();  // also clears a launch error already in `e`
  if (e == cudaSuccess) e = last;
  if (e != cudaSuccess) return cuda_fail(e, what, "launch", 0);
  return BN_OK;
}

// GEMM tuning: launches per timing and timings per configuration (the least is kept). The CPU
// simulation runs the same search once per configuration: its times mean nothing, its bits do.
#if defined(BN_SIM)
constexpr int kTuneReps = 1, kTuneTrials = 1;
#else
constexpr int kTuneReps = 10, kTuneTrials = 3;
#endif

class CudaOps : public Ops {
 public:
  cudaStream_t stream = nullptr;
  unsigned *counter = nullptr;  // kTickets last-block tickets (fused tails, fast numerics)
  GemmScratch gs;               // split-K buffers and tile tickets
  int sm_count = 1;
  int split_waves = 2;  // split-K target, blocks per SM (BN_GEMM_SPLIT_WAVES, 0..8)
  GemmTable tuned;      // BN_AUTOTUNE=1: per shape and token bucket (bn_tune.h)
  int head_variant = -1;  // the head GEMM's kernel as tuning chose it (-1: g_head_variant)
  unsigned long long *chain_bar = nullptr;  // the persistent chains' barrier counter + head counters (kChainSyncBytes)
  int chain_blocks_per_sm = 0;              // BN_PERSIST=ffn or layer: 2 (0: both are off)
  int chain_kind = 0;                       // BN_PERSIST: 0 ffn, 1 layer, 2 step
  // The launch configuration without tuning: the knobs (read at init; the bench sets the two
  // globals directly for its per-shape rows).
  GemmChoice gemm_default() const { return GemmChoice{g_gemm_variant, g_gemm_splitk, split_waves}; }

  bn_status embed(const EmbedParams &p, int M, const NormQuant &nq) override { return launch_embed(p, M, nq, stream); }
  bn_status gemv(const Mat &w, const Acts &a, int M, const Epi &e, const NormQuant *tail,
                 const FastGemv *fast) override {
    return launch_gemv(w, a, M, e, tail, counter, stream, fast);
  }
  bn_status gemm(const Mat &w, const Acts &a, int M, const Epi &e) override {
    GemmChoice c = gemm_default();
    tuned.find(w.n, w.k, M, &c);
    return launch_gemm(w, a, M, e, gs, sm_count, c, stream);
  }
  bn_status gemm_traced(const Mat &w, const Acts &a, int M, const Epi &e, unsigned long long *trace,
                        int *blocks) override {
    GemmChoice c = gemm_default();
    tuned.find(w.n, w.k, M, &c);
    return launch_gemm(w, a, M, e, gs, sm_count, c, stream, trace, blocks);
  }
  bn_status gemv_traced(const Mat &w, const Acts &a, int M, const Epi &e, const NormQuant *tail,
                        unsigned long long *trace, int *blocks) override {
    return launch_gemv(w, a, M, e, tail, counter, stream, nullptr, trace, blocks);
  }
  bn_status grid_sync_probe(int blocks, int threads, int rounds, unsigned *bar, int *slots, int *bad,
                            unsigned long long *ns, const NormQuant *norm, int barrier) override {
    return launch_grid_sync_probe(blocks, threads, rounds, bar, slots, bad, ns, stream, norm, barrier);
  }
  bn_status norm_quant(const NormQuant &nq, int M) override { return launch_norm_quant(nq, M, stream); }
  bn_status attention(const AttnParams &p, int M, const NormQuant *tail, const FastAttn *split) override {
    return launch_attention(p, M, tail, counter, stream, split);
  }
  bool attention_tail_batched() const override { return g_attn_token_tail != 0; }
  bool ffn_chain_on() const override { return chain_blocks_per_sm > 0 && chain_kind == 0; }
  bool layer_chain_on() const override { return chain_blocks_per_sm > 0 && chain_kind == 1; }
  bool step_chain_on() const override { return chain_blocks_per_sm > 0 && chain_kind == 2; }
  // A persistent kernel's resident cap depends on its shared memory (for the layer and the step:
  // the context, head_dim, the longer vector and what is staged), so it is asked of the driver
  // once per size.
  struct Cap {
    size_t key = ~(size_t)0;
    int blocks = 0;
    template <typename F>
    int get(size_t k, F ask) {
      if (k != key) blocks = ask(), key = k;
      return blocks;
    }
  };
  Cap ffn_cap, layer_cap, step_cap;
  static size_t layer_key(const LayerChain &c) {
    return ((size_t)c.ap.max_t << 32) ^ ((size_t)c.ap.head_dim << 20) ^ (size_t)std::max(c.f.o.n, c.f.gu.n / 2) ^
           ((size_t)(c.stage_weights != 0) << 62);
  }
  int ffn_max_blocks(const FfnChain &c) {
    return ffn_cap.get((size_t)std::max(c.o.n, c.gu.n / 2), [&] { return ffn_chain_max_blocks(sm_count, c); });
  }
  int layer_max_blocks(const LayerChain &c) {
    return layer_cap.get(layer_key(c), [&] { return layer_chain_max_blocks(sm_count, c); });
  }
  int step_max_blocks(const StepChain &c) {
    return step_cap.get(layer_key(c.first), [&] { return step_chain_max_blocks(sm_count, c); });
  }
  // The grid of a persistent launch: `want` blocks (0: chain_blocks_per_sm per SM, 2 when the
  // knob is off: the bench and checks call them anyway), at most `cap`; 0 with the error set.
  int chain_grid(int want, int cap, const char *what) const {
    const int per_sm = chain_blocks_per_sm > 0 ? chain_blocks_per_sm : 2;
    const int blocks = std::min(want > 0 ? want : per_sm * sm_count, cap);
    if (blocks < 1) set_error("%s: no block of it can be resident on this device", what);
    return std::max(blocks, 0);
  }
  bn_status ffn_chain_check(const FfnChain &c) override {
    if (const bn_status st = bn::ffn_chain_check(c)) return st;
    return chain_grid(0, ffn_max_blocks(c), "ffn chain") ? BN_OK : BN_ERR_UNSUPPORTED;
  }
  bn_status ffn_chain(const FfnChain &c, int want) override {
    const int blocks = chain_grid(want, ffn_max_blocks(c), "ffn chain");
    return blocks ? launch_ffn_chain(c, blocks, counter, chain_bar, stream) : BN_ERR_UNSUPPORTED;
  }
  // The layer's and the step's checks raise their kernels' shared-memory limits, which the
  // occupancy query needs first.
  bn_status layer_chain_check(const LayerChain &c) override {
    if (const bn_status st = bn::layer_chain_check(c)) return st;
    return chain_grid(0, layer_max_blocks(c), "layer chain") ? BN_OK : BN_ERR_UNSUPPORTED;
  }
  bn_status layer_chain(const LayerChain &c, int want) override {
    if (const bn_status st = bn::layer_chain_check(c)) return st;
    const int blocks = chain_grid(want, layer_max_blocks(c), "layer chain");
    return blocks ? launch_layer_chain(c, blocks, counter, chain_bar, stream) : BN_ERR_UNSUPPORTED;
  }
  bn_status step_chain_check(const StepChain &c) override {
    if (const bn_status st = bn::step_chain_check(c)) return st;
    return chain_grid(0, step_max_blocks(c), "step chain") ? BN_OK : BN_ERR_UNSUPPORTED;
  }
  bn_status step_chain(const StepChain &c, int want) override {
    if (const bn_status st = bn::step_chain_check(c)) return st;
    const int blocks = chain_grid(want, step_max_blocks(c), "step chain");
    return blocks ? launch_step_chain(c, blocks, counter, chain_bar, stream) : BN_ERR_UNSUPPORTED;
  }
  bn_status head(const HeadParams &p, int R, bool gemm) override {
    return launch_head(p, R, gemm, stream, head_variant);
  }
  bn_status select(const SelectParams &p, int R) override { return launch_select(p, R, stream); }
};

class CudaDevice : public Device {
 public:
  int dev = 0;
  cudaDeviceProp props{};
  CudaOps ops_;
  std::vector<cudaGraphExec_t> graphs;
  std::vector<void *> own;

  ~CudaDevice() override {
    cudaSetDevice(dev);
    if (ops_.stream) cudaStreamSynchronize(ops_.stream);
    for (cudaGraphExec_t g : graphs) cudaGraphExecDestroy(g);
    for (void *p : own) cudaFree(p);
    if (ev0) cudaEventDestroy(ev0);
    if (ev1) cudaEventDestroy(ev1);
    if (ops_.stream) cudaStreamDestroy(ops_.stream);
    cudaGetLastError();
  }

  bn_status init(int index) {
    dev = index;
    if (const bn_status st = check_knobs()) return st;
    BN_CUDA_CHECK(cudaSetDevice(dev));
    BN_CUDA_CHECK(cudaGetDeviceProperties(&props, dev));
    if (props.major < 8) {
      set_error("device %d (%s) has compute capability %d.%d; the engine needs 8.0 or newer", dev, props.name,
                props.major, props.minor);
      return BN_ERR_UNSUPPORTED;
    }
    // Programmatic dependent launch (Hopper and newer) only with BN_PDL=1 or =early: on an H200 it
    // sped up back-to-back GEMVs (2.96 against 3.74 us for the qkv shape) but the whole decode
    // step not (486 against 502 tok/s at batch 1, 2026-11-27, signalling at entry), so it is off
    // by default. BN_PDL=1 releases the next kernel after the long kernels' main loops,
    // BN_PDL=early at their entry as run 5 did (bn_device.cuh).
    const bool pdl_early = env_is("BN_PDL", "early");
    g_pdl = props.major >= 9 && (env_is("BN_PDL", "1") || pdl_early);
    if (const bn_status st = set_pdl_early(pdl_early)) return st;
    // Defaults since run 6 (H200, 2026-11-28), each measured faster there with its checks passing:
    // the 3-stage pipelined GEMM with split-K by partial tiles (batch 64: 15,390 against 12,310
    // tok/s), attention's cheaper staging (535 against 524 tok/s at batch 1) and the norm passes
    // cached in shared memory (550 against 524). The earlier kernels stay selectable.
    g_gemm_variant = env_is("BN_GEMM", "plain") ? 0 : env_is("BN_GEMM", "deep") ? 2 : 1;
    g_gemm_splitk = env_is("BN_GEMM_SPLITK", "atomics") ? 0 : env_is("BN_GEMM_SPLITK", "kernel") ? 2 : 1;
    g_attn_variant = env_is("BN_ATTN", "generic") ? 0 : env_is("BN_ATTN", "ring") ? 2 : 1;
    g_attn_ring_max_blocks = props.multiProcessorCount;  // the ring kernel runs one block per SM
    g_norm_variant = env_is("BN_NORM", "regs") ? 1 : 0;
    g_gemv_variant = env_is("BN_GEMV", "ilp") ? 1 : env_is("BN_GEMV", "rot") ? 2 : env_is("BN_GEMV", "smem") ? 3 : 0;
    g_attn_token_tail = env_is("BN_ATTN_TAIL", "1") ? 1 : 0;
    g_tail_cache = env_is("BN_TAIL_CACHE", "0") ? 0 : 1;
    // The head GEMM's kernel: BN_HEAD_MMA=plain|pipelined|wide|wide3|wide8 pins it (no tuning of it).
    g_head_variant = 0;
    for (int v = 1; v < kHeadVariants; v++)
      if (env_is("BN_HEAD_MMA", head_variant_name(v))) g_head_variant = v;
    head_pinned = getenv("BN_HEAD_MMA") != nullptr;
    // The persistent FFN chain, layer or step for decode steps of one token (k_ffn_chain.cu,
    // k_layer_chain.cu; not yet run on a GPU): BN_PERSIST=ffn, layer or step, two blocks per SM.
    ops_.chain_kind = env_is("BN_PERSIST", "layer") ? 1 : env_is("BN_PERSIST", "step") ? 2 : 0;
    ops_.chain_blocks_per_sm = env_is("BN_PERSIST", "ffn") || ops_.chain_kind > 0 ? 2 : 0;
    // GEMM split-K target (a tuning knob for the benchmarks; 2 unless set to 0..8).
    const char *sw = getenv("BN_GEMM_SPLIT_WAVES");
    if (sw && sw[0] >= '0' && sw[0] <= '8' && sw[1] == 0) ops_.split_waves = sw[0] - '0';
    // GEMM autotuning at engine creation: on by default on a GPU (run 6: batch 64 15,985 tok/s
    // against 12,310, ~1 s at creation), BN_AUTOTUNE=0 turns it off. On the CPU simulation only
    // with BN_AUTOTUNE=1 (its timings mean nothing and every candidate costs a simulated launch).
#if defined(BN_SIM)
    autotune = env_is("BN_AUTOTUNE", "1");
#else
    autotune = !env_is("BN_AUTOTUNE", "0");
#endif
    g_gemm_tuning_log.clear();
    g_gemm_tuning_mismatches = 0;
    BN_CUDA_CHECK(cudaStreamCreateWithFlags(&ops_.stream, cudaStreamNonBlocking));
    ops_.sm_count = props.multiProcessorCount;
    void *c = nullptr;
    BN_CUDA_CHECK(cudaMalloc(&c, kTickets * sizeof(unsigned)));
    own.push_back(c);
    BN_CUDA_CHECK(cudaMemset(c, 0, kTickets * sizeof(unsigned)));
    ops_.counter = (unsigned *)c;
    BN_CUDA_CHECK(cudaMalloc(&c, kChainSyncBytes));
    own.push_back(c);
    ops_.chain_bar = (unsigned long long *)c;
    return BN_OK;
  }

  bn_status alloc(void **p, size_t bytes) override {
    BN_CUDA_CHECK(cudaSetDevice(dev));
    BN_CUDA_CHECK(cudaMalloc(p, bytes));
    return BN_OK;
  }
  void release(void *p) override {
    cudaSetDevice(dev);
    cudaFree(p);
  }
  bn_status alloc_host(void **p, size_t bytes) override {
    BN_CUDA_CHECK(cudaMallocHost(p, bytes));
    return BN_OK;
  }
  void release_host(void *p) override { cudaFreeHost(p); }
  bn_status h2d(void *dst, const void *src, size_t bytes) override {
    BN_CUDA_CHECK(cudaSetDevice(dev));
    BN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, ops_.stream));
    return BN_OK;
  }
  bn_status d2h(void *dst, const void *src, size_t bytes) override {
    BN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, ops_.stream));
    return BN_OK;
  }
  bn_status d2d(void *dst, const void *src, size_t bytes) override {
    BN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, ops_.stream));
    return BN_OK;
  }
  bn_status memset0(void *p, size_t bytes) override {
    BN_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, ops_.stream));
    return BN_OK;
  }
  cudaEvent_t ev0 = nullptr, ev1 = nullptr;
  bn_status timer_start() override {
    if (!ev0) {
      BN_CUDA_CHECK(cudaEventCreate(&ev0));
      BN_CUDA_CHECK(cudaEventCreate(&ev1));
    }
    BN_CUDA_CHECK(cudaEventRecord(ev0, ops_.stream));
    return BN_OK;
  }
  bn_status timer_stop(double *ms) override {
    BN_CUDA_CHECK(cudaEventRecord(ev1, ops_.stream));
    BN_CUDA_CHECK(cudaEventSynchronize(ev1));
    float f = 0.f;
    BN_CUDA_CHECK(cudaEventElapsedTime(&f, ev0, ev1));
    *ms = f;
    return BN_OK;
  }
  bn_status sync() override {
    BN_CUDA_CHECK(cudaStreamSynchronize(ops_.stream));
    return BN_OK;
  }
  Ops &ops() override { return ops_; }
  bn_status free_memory(uint64_t *free_b, uint64_t *total_b) override {
    size_t f = 0, t = 0;
    BN_CUDA_CHECK(cudaMemGetInfo(&f, &t));
    *free_b = f;
    *total_b = t;
    return BN_OK;
  }
  void describe(char *name, size_t len, int *major, int *minor) override {
    snprintf(name, len, "%s", props.name);
    *major = props.major;
    *minor = props.minor;
  }
  bool has_graphs() override { return true; }
  bn_status begin_capture() override {
    BN_CUDA_CHECK(cudaSetDevice(dev));
    BN_CUDA_CHECK(cudaStreamBeginCapture(ops_.stream, cudaStreamCaptureModeThreadLocal));
    return BN_OK;
  }
  bn_status end_capture(int *id) override {
    cudaGraph_t g = nullptr;
    BN_CUDA_CHECK(cudaStreamEndCapture(ops_.stream, &g));
    cudaGraphExec_t ex = nullptr;
    const cudaError_t e = cudaGraphInstantiate(&ex, g, 0);
    cudaGraphDestroy(g);
    if (e != cudaSuccess) return cuda_fail(e, "cudaGraphInstantiate", __FILE__, __LINE__);
    graphs.push_back(ex);
    *id = (int)graphs.size() - 1;
    return BN_OK;
  }
  bn_status launch_graph(int id) override {
    BN_CUDA_CHECK(cudaSetDevice(dev));
    BN_CUDA_CHECK(cudaGraphLaunch(graphs[(size_t)id], ops_.stream));
    return BN_OK;
  }
  bool autotune = false;  // on unless BN_AUTOTUNE=0 (on the CPU simulation: only with BN_AUTOTUNE=1)
  bool head_pinned = false;  // BN_HEAD_MMA set: the head GEMM's kernel is not tuned
  bn_status tune_gemm(const Mat &w, int max_m) override {
    if (!autotune) return BN_OK;
    BN_CUDA_CHECK(cudaSetDevice(dev));
    const int Mb = std::min(max_m, kGemmBuckets[sizeof kGemmBuckets / sizeof kGemmBuckets[0] - 1]);
    // Random activations (any values: every configuration must give the default's bits for them).
    std::vector<int8_t> q((size_t)Mb * w.k);
    uint32_t r = 0x9e3779b9u ^ (uint32_t)(w.n * 131 + w.k);
    for (auto &v : q) {
      r = r * 1664525u + 1013904223u;
      v = (int8_t)(r >> 24);
    }
    std::vector<float> sc((size_t)Mb, 1.f / 127);
    std::vector<int32_t> sum((size_t)Mb, 0);
    void *dq = nullptr, *dsc = nullptr, *dsum = nullptr, *dout = nullptr;
    const size_t out_bytes = (size_t)Mb * w.n * 4;
    bn_status st = alloc(&dq, q.size());
    if (!st) st = alloc(&dsc, sc.size() * 4);
    if (!st) st = alloc(&dsum, sum.size() * 4);
    if (!st) st = alloc(&dout, out_bytes);
    if (!st) st = h2d(dq, q.data(), q.size());
    if (!st) st = h2d(dsc, sc.data(), sc.size() * 4);
    if (!st) st = h2d(dsum, sum.data(), sum.size() * 4);
    const Acts A{(const int8_t *)dq, (const float *)dsc, (const int32_t *)dsum, w.k};
    Epi e{};
    e.kind = EPI_STORE;
    e.out = (float *)dout;
    e.ld = w.n;
    GemmTuneIO io;
    io.splits = [&](const GemmChoice &c, int M) { return gemm_splits(w.n, w.k, M, ops_.gs, ops_.sm_count, c); };
    io.run = [&](const GemmChoice &c, int M, std::vector<float> *out) -> bn_status {
      out->assign((size_t)M * w.n, 0.f);
      bn_status s2 = memset0(dout, (size_t)M * w.n * 4);
      if (!s2) s2 = launch_gemm(w, A, M, e, ops_.gs, ops_.sm_count, c, ops_.stream);
      if (!s2) s2 = d2h(out->data(), dout, (size_t)M * w.n * 4);
      if (!s2) s2 = sync();
      return s2;
    };
    io.time = [&](const GemmChoice &c, int M, double *us) -> bn_status {
      double best = 0;
      for (int trial = 0; trial < kTuneTrials; trial++) {
        bn_status s2 = timer_start();
        for (int i = 0; i < kTuneReps && !s2; i++) s2 = launch_gemm(w, A, M, e, ops_.gs, ops_.sm_count, c, ops_.stream);
        double ms = 0;
        if (!s2) s2 = timer_stop(&ms);
        if (s2) return s2;
        const double t = 1e3 * ms / kTuneReps;
        if (trial == 0 || t < best) best = t;
      }
      *us = best;
      return BN_OK;
    };
    if (!st) st = tune_gemm_shape(w.n, w.k, max_m, ops_.gemm_default(), io, &ops_.tuned, &g_gemm_tuning_log,
                                  &g_gemm_tuning_mismatches);
    for (void *p : {dq, dsc, dsum, dout})
      if (p) release(p);
    return st;
  }
  // The head GEMM (above kGemvMaxM rows: batched decode, prefill 'all'): every kernel variant on
  // the model's own head weights at R = min(max_rows, 64) rows of random f16 hidden states; the
  // fastest whose logits equal the plain kernel's bit for bit is kept, the plain one unless another
  // is more than 3% faster (as tune_gemm_shape keeps the default). Not when BN_HEAD_MMA pins it.
  bn_status tune_head(const HeadParams &hp, int max_rows) override {
    if (!autotune || head_pinned || hp.mode != BN_HEAD_F16 || hp.type != BN_TYPE_F16 || max_rows <= kGemvMaxM)
      return BN_OK;
    BN_CUDA_CHECK(cudaSetDevice(dev));
    const int R = std::min(max_rows, 64);
    std::vector<uint16_t> h((size_t)R * hp.k);
    uint32_t r = 0x2545f491u;
    for (auto &v : h) {
      r = r * 1664525u + 1013904223u;
      v = f32_to_f16((float)((int)(r >> 20) - 2048) / 1024.f);
    }
    std::vector<int32_t> rows((size_t)R);
    for (int i = 0; i < R; i++) rows[(size_t)i] = R - 1 - i;
    const size_t n_out = (size_t)R * hp.n_vocab;
    void *dh = nullptr, *drows = nullptr, *dout = nullptr;
    bn_status st = alloc(&dh, h.size() * 2);
    if (!st) st = alloc(&drows, rows.size() * 4);
    if (!st) st = alloc(&dout, n_out * 4);
    if (!st) st = h2d(dh, h.data(), h.size() * 2);
    if (!st) st = h2d(drows, rows.data(), rows.size() * 4);
    HeadParams p = hp;
    p.h16 = (const uint16_t *)dh;
    p.ldh = hp.k;
    p.rows = (const int32_t *)drows;
    p.logits = (float *)dout;
    std::vector<float> ref(n_out), out(n_out);
    int best = 0, equal = 0, tried = 0;
    double best_us = 0, plain_us = 0;
    std::string times;
    for (int v = 0; v < kHeadVariants && !st; v++) {
      if (v > 0 && !head_pipe_available()) break;
      st = memset0(dout, n_out * 4);
      if (!st) st = launch_head(p, R, true, ops_.stream, v);
      if (!st) st = d2h((v ? out : ref).data(), dout, n_out * 4);
      if (!st) st = sync();
      if (st) break;
      if (v > 0) {
        tried++;
        if (memcmp(out.data(), ref.data(), n_out * 4) != 0) {
          g_gemm_tuning_mismatches++;
          times += std::string(", ") + head_variant_name(v) + " OTHER BITS (not used)";
          continue;
        }
        equal++;
      }
      double us = 0;
      for (int trial = 0; trial < kTuneTrials && !st; trial++) {
        st = timer_start();
        for (int i = 0; i < kTuneReps && !st; i++) st = launch_head(p, R, true, ops_.stream, v);
        double ms = 0;
        if (!st) st = timer_stop(&ms);
        const double t = 1e3 * ms / kTuneReps;
        if (trial == 0 || t < us) us = t;
      }
      if (st) break;
      char b[96];
      snprintf(b, sizeof b, "%s%s %.1f us", v ? ", " : "", head_variant_name(v), us);
      times += b;
      if (v == 0) plain_us = best_us = us;
      else if (us * 1.03 < plain_us && us < best_us) best = v, best_us = us;
    }
    if (!st) {
      ops_.head_variant = best;
      char b[160];
      snprintf(b, sizeof b, "  LM head %dx%d R=%d: %s, %.1f us; ", hp.n_vocab, hp.k, R, head_variant_name(best), best_us);
      g_gemm_tuning_log += b + times + "; " + std::to_string(equal) + "/" + std::to_string(tried) +
                           " other kernels equal\n";
    }
    for (void *q : {dh, drows, dout})
      if (q) release(q);
    return st;
  }

  bn_status configure(int max_ctx, int max_tokens, int max_n) override {
    BN_CUDA_CHECK(cudaSetDevice(dev));
    bn_status st = configure_attention(max_ctx);
    if (!st) st = configure_gemv((max_n + 15) & ~15, (int)props.sharedMemPerBlockOptin);
    if (!st) st = configure_gemm((int)props.sharedMemPerBlockOptin);
    if (!st) st = configure_head((int)props.sharedMemPerBlockOptin);
    if (st) return st;
    void *p = nullptr;
    const size_t sbytes = (size_t)max_tokens * (size_t)max_n * 4;
    BN_CUDA_CHECK(cudaMalloc(&p, sbytes));
    own.push_back(p);
    BN_CUDA_CHECK(cudaMemset(p, 0, sbytes));
    ops_.gs.sums = (int *)p;
    ops_.gs.max_tiles = 8192;
    BN_CUDA_CHECK(cudaMalloc(&p, (size_t)ops_.gs.max_tiles * 4));
    own.push_back(p);
    BN_CUDA_CHECK(cudaMemset(p, 0, (size_t)ops_.gs.max_tiles * 4));
    ops_.gs.tickets = (unsigned *)p;
    // Partial tiles: a split launch has fewer than 2 × split_waves × SMs blocks (launch_gemm), so
    // that many tiles at the largest split target (8 waves) always suffice. On a 132-SM GPU that
    // is 2,112 tiles, 34.6 MB; no initialization needed (every tile is written before it is read).
    ops_.gs.max_parts = 2 * 8 * ops_.sm_count;
    BN_CUDA_CHECK(cudaMalloc(&p, (size_t)ops_.gs.max_parts * 64 * 64 * 4));
    own.push_back(p);
    ops_.gs.parts = (int *)p;
    return BN_OK;
  }
};

bn_status make_device(int index, Device **out) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();
    set_error("no usable CUDA driver/GPU: cudaGetDeviceCount returned %d (%s: %s)", (int)e, cudaGetErrorName(e),
              cudaGetErrorString(e));
    return BN_ERR_NO_DEVICE;
  }
  if (index < 0 || index >= count) {
    set_error("CUDA device %d does not exist (%d device(s))", index, count);
    return BN_ERR_NO_DEVICE;
  }
  CudaDevice *d = new CudaDevice();
  const bn_status st = d->init(index);
  if (st) {
    delete d;
    return st;
  }
  *out = d;
  return BN_OK;
}

}  // namespace bn

extern "C" bn_status bn_query_device(int32_t device, bn_device_info *out) {
  bn::clear_error();
  if (!out) {
    bn::set_error("out is null");
    return BN_ERR_INVALID_ARGUMENT;
  }
  memset(out, 0, sizeof(*out));
  cudaRuntimeGetVersion(&out->runtime_version);
  cudaDriverGetVersion(&out->driver_version);
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();
    out->cuda_error = (int32_t)e;
    bn::set_error("no usable CUDA driver/GPU: cudaGetDeviceCount returned %d (%s: %s)", (int)e, cudaGetErrorName(e),
                  cudaGetErrorString(e));
    return BN_ERR_NO_DEVICE;
  }
  out->device_count = count;
  if (device < 0 || device >= count) {
    bn::set_error("CUDA device %d does not exist (%d device(s))", device, count);
    return BN_ERR_NO_DEVICE;
  }
  cudaDeviceProp p;
  e = cudaGetDeviceProperties(&p, device);
  if (e != cudaSuccess) {
    out->cuda_error = (int32_t)e;
    return bn::cuda_fail(e, "cudaGetDeviceProperties", __FILE__, __LINE__);
  }
  snprintf(out->name, sizeof(out->name), "%s", p.name);
  out->cc_major = p.major;
  out->cc_minor = p.minor;
  out->sm_count = p.multiProcessorCount;
  out->total_mem = p.totalGlobalMem;
  int prev = 0;
  cudaGetDevice(&prev);
  if (cudaSetDevice(device) == cudaSuccess) {
    size_t f = 0, t = 0;
    if (cudaMemGetInfo(&f, &t) == cudaSuccess) out->free_mem = f;
    cudaSetDevice(prev);
  }
  cudaGetLastError();
  return BN_OK;
}
