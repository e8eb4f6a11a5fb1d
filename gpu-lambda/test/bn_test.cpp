// bitnet-edge CUDA engine: golden tests and benchmarks (one program).
//
//   bn_test --fixtures DIR [--cpu-only] [--out DIR] [--bench] [--quick] [--no-random] [--no-isolate]
//
// Sections (each prints [PASS]/[FAIL] lines; the exit status is the number of failures, capped):
//   host      numerics that need no device: activation quantization, RoPE table and the QKV
//             epilogue's rotation, FFN activations, the C++ synthetic generator vs the TS one;
//   kernels   every kernel through the Ops seam against the TS golden fixtures, on the CPU
//             emulation (always) and on the GPU (GPU build, without --cpu-only);
//   model     two tiny synthetic models through the C API (prefill, decode, mixed batches,
//             truncation, chunking, GEMV vs GEMM paths, errors) against the TS logits;
//   random    (GPU) kernels at 2B-4T shapes on random data, GPU against the CPU emulation;
//   bench     (GPU, --bench) copy bandwidth, GEMV per shape, decode tok/s at batch 1 (F16 and
//             INT8 heads), batched decode, prefill, on a 2B-4T-shaped model generated here.
//   profile   (GPU, --profile; --profile-only skips everything else) time of each kernel of a
//             decode step at batch 1 and 64 on that model (profile.inc); --profile-part picks one
//             table (exact1, exact64, fast1), e.g. under ncu.
// With --out DIR the results are also written to DIR/results.md (ready for RESULTS.md) and
// DIR/results.json.
//
// The GPU sections run one at a time, each in its own child process (isolate.h), so that a
// device fault, a crash or a hang in one (sticky for a CUDA context) fails that section's
// "<section>/process" check instead of everything after it. --no-isolate runs them in this
// process (under compute-sanitizer); --only A|B runs just the sections whose names contain A or B
// (e.g. --only "opt-in splitk" or --bench --only "BN_GEMM_SPLITK=tiles|bench/kernels"), --skip A|B
// all but those (CI runs a long section and the rest in two processes at once); each section's
// name is printed with its time. --isolation-selftest checks the mechanism on the CPU.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "../engine/include/bitnet_cuda.h"
#include "../engine/src/bn_epilogue.h"
#include "../engine/src/bn_kernels.h"
#include "../engine/src/bn_model.h"
#include "fixtures.h"
#include "isolate.h"
#include "synth.h"

using bn::Device;
using bnt::Fixture;

// ---------------------------------------------------------------------------------------------
// Reporting
// ---------------------------------------------------------------------------------------------

static int g_fail = 0, g_pass = 0;
static int g_emulate = 1;  // whole-model tests on the CPU emulation (0 on a GPU run)
static std::string g_md;  // markdown results

static void line(bool ok, const std::string &label, const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
#if defined(BN_SIM)
  // The kernels ran on the CPU simulation (engine/sim/), not on a GPU: say so in every label.
  const std::string name = label.compare(0, 4, "gpu/") == 0 ? "sim/" + label.substr(4) : label;
#else
  const std::string &name = label;
#endif
  printf("[%s] %s: %s\n", ok ? "PASS" : "FAIL", name.c_str(), buf);
  fflush(stdout);
  (ok ? g_pass : g_fail)++;
  const std::string md = std::string("| ") + name + " | " + (ok ? "pass" : "**FAIL**") + " | " + buf + " |\n";
  g_md += md;
  bnt::child_send(ok ? 'P' : 'F', md);  // in an isolated section's child: to the parent as well
}

// Bench rows and the results heading reported by isolated children ('R', 'H'): the parent's sink.
static std::function<void(const bnt::ChildRecord &)> g_on_bench;

// Runs a section in a child process (isolate.h): a crash, a device fault or a hang past limit_s
// (0: none) costs this section only and is a failed check "<name>/process". Returns the child's
// exit status, or -1 when it did not end cleanly. Exit status kStopAll from a child (no usable
// device) is passed on without a check of its own: the child has reported why.
constexpr int kStopAll = 10;
static std::string g_only;  // --only A|B: run only the sections whose names contain A or B
static std::string g_skip;  // --skip A|B: run only the sections whose names contain neither
// Whether `name` contains one of the |-separated parts of `list` (a part ending in '$' must end
// the name: "bench/f16 head, CUDA graph$" is the default configuration alone).
static bool names_any(const std::string &list, const std::string &name) {
  for (size_t at = 0;;) {
    const size_t bar = list.find('|', at);
    std::string part = list.substr(at, bar == std::string::npos ? std::string::npos : bar - at);
    const bool at_end = !part.empty() && part.back() == '$';
    if (at_end) part.pop_back();
    const size_t hit = part.empty() ? std::string::npos : name.rfind(part);
    if (hit != std::string::npos && (!at_end || hit + part.size() == name.size())) return true;
    if (bar == std::string::npos) return false;
    at = bar + 1;
  }
}
static bool selected(const std::string &name) {
  return (g_only.empty() || names_any(g_only, name)) && (g_skip.empty() || !names_any(g_skip, name));
}
[[maybe_unused]] static int isolated(const std::string &name, double limit_s, const std::function<int()> &fn) {
  if (!selected(name)) return 0;
  const bnt::ChildEnd end = bnt::run_child(limit_s, fn, [](const bnt::ChildRecord &r) {
    if (r.kind == 'P' || r.kind == 'F') {
      (r.kind == 'P' ? g_pass : g_fail)++;
      g_md += r.a;
    } else if (g_on_bench) {
      g_on_bench(r);
    }
  });
  if (bnt::g_isolate) printf("  (section %s: %.1f s in its own process)\n", name.c_str(), end.seconds);
  if (end.ran && !end.timed_out && end.signal == 0 && (end.exit_code == 0 || end.exit_code == kStopAll))
    return end.exit_code;
  line(false, name + "/process", "%s", end.str().c_str());
  return -1;
}

[[maybe_unused]] static void note(const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  printf("  %s\n", buf);
  fflush(stdout);
}

struct Cmp {
  size_t n = 0, exact = 0;
  double max_abs = 0, max_rel = 0;
};

static Cmp cmp_f32(const float *a, const float *b, size_t n) {
  Cmp c;
  c.n = n;
  for (size_t i = 0; i < n; i++) {
    if (memcmp(&a[i], &b[i], 4) == 0) {
      c.exact++;
      continue;
    }
    const double d = std::fabs((double)a[i] - (double)b[i]);
    const double r = d / std::max(1e-30, std::fabs((double)b[i]));
    if (!(d == d)) {
      c.max_abs = INFINITY;
      c.max_rel = INFINITY;
      continue;
    }
    c.max_abs = std::max(c.max_abs, d);
    c.max_rel = std::max(c.max_rel, r);
  }
  return c;
}

template <typename T>
static size_t count_equal(const T *a, const T *b, size_t n) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++) k += memcmp(&a[i], &b[i], sizeof(T)) == 0;
  return k;
}

static int argmax_row(const float *x, int n) {
  int b = 0;
  for (int i = 1; i < n; i++)
    if (x[i] > x[b]) b = i;
  return b;
}

// ---------------------------------------------------------------------------------------------
// Device buffers
// ---------------------------------------------------------------------------------------------

struct Bufs {
  Device &d;
  std::vector<void *> ptrs;
  bool ok = true;
  explicit Bufs(Device &dev) : d(dev) {}
  ~Bufs() {
    d.sync();
    for (void *p : ptrs) d.release(p);
  }
  void *raw(size_t bytes) {
    void *p = nullptr;
    if (d.alloc(&p, bytes ? bytes : 16)) {
      ok = false;
      return nullptr;
    }
    ptrs.push_back(p);
    d.memset0(p, bytes ? bytes : 16);
    return p;
  }
  template <typename T>
  T *zeros(size_t n) {
    return (T *)raw(n * sizeof(T));
  }
  template <typename T>
  T *up(const std::vector<T> &v) {
    T *p = zeros<T>(v.size());
    if (p && !v.empty()) d.h2d(p, v.data(), v.size() * sizeof(T));
    return p;
  }
  template <typename T>
  std::vector<T> down(const T *p, size_t n) {
    std::vector<T> v(n);
    d.d2h(v.data(), p, n * sizeof(T));
    d.sync();
    return v;
  }
};

struct Rand {
  bnt::Xoshiro r{0x5eed1234ull};
  uint32_t u32() { return r.next(); }
  float uni() { return (float)r.next_float(); }
  float normal() { return (float)bnt::gaussian(r); }
};

// I2_S bytes with uniform codes 0..2 (never 3), plus the scale tail.
static std::vector<uint8_t> rand_i2s(Rand &g, int n, int k, float scale) {
  std::vector<uint8_t> w((size_t)n * k / 4 + 32);
  for (size_t i = 0; i < (size_t)n * k / 4; i++) {
    uint8_t b = 0;
    for (int j = 0; j < 4; j++) b |= (uint8_t)((g.u32() % 3) << (2 * j));
    w[i] = b;
  }
  memcpy(&w[(size_t)n * k / 4], &scale, 4);
  return w;
}

static std::vector<uint16_t> to_f16(const std::vector<float> &x) {
  std::vector<uint16_t> h(x.size());
  for (size_t i = 0; i < x.size(); i++) h[i] = bn::f32_to_f16(x[i]);
  return h;
}

// ---------------------------------------------------------------------------------------------
// Host-only numerics
// ---------------------------------------------------------------------------------------------

static void test_host(const Fixture &k) {
  {  // activation quantization (act_scale, quant_one) as the kernels use them
    const auto x = k.get<float>("act/x");
    const auto q = k.get<int8_t>("act/q");
    const auto sc = k.get<float>("act/scale");
    const auto S = k.get<int32_t>("act/sum");
    const int M = (int)k.dim("act/x", 0), K = (int)k.dim("act/x", 1);
    size_t qok = 0, sok = 0;
    for (int m = 0; m < M; m++) {
      float amax = 0.f;
      for (int i = 0; i < K; i++) amax = std::max(amax, std::fabs(x[(size_t)m * K + i]));
      const float s = bn::act_scale(amax);
      int sum = 0;
      for (int i = 0; i < K; i++) {
        const int8_t v = bn::quant_one(x[(size_t)m * K + i], s);
        qok += v == q[(size_t)m * K + i];
        sum += v;
      }
      sok += (memcmp(&s, &sc[m], 4) == 0) && sum == S[m];
    }
    line(qok == q.size() && sok == (size_t)M, "host/act_quant", "%zu/%zu int8 values, %zu/%d scales+sums exact", qok,
         q.size(), sok, M);
  }
  {  // FFN activations
    const auto g = k.get<float>("ffn/g"), u = k.get<float>("ffn/u");
    const auto r2 = k.get<float>("ffn/relu2"), si = k.get<float>("ffn/silu");
    std::vector<float> a(g.size()), b(g.size());
    for (size_t i = 0; i < g.size(); i++) {
      a[i] = bn::ffn_act(g[i], u[i], BN_ACT_RELU2);
      b[i] = bn::ffn_act(g[i], u[i], BN_ACT_SILU);
    }
    const size_t e1 = count_equal(a.data(), r2.data(), a.size()), e2 = count_equal(b.data(), si.data(), b.size());
    line(e1 == a.size() && e2 == b.size(), "host/ffn_act", "relu2 %zu/%zu, silu %zu/%zu bit-exact", e1, a.size(), e2,
         b.size());
  }
  {  // Shared-memory bank conflicts of the GEMV's activation loads (chunk_dot, bn_gemv.cuh): for both
     // lane mappings, every load step of every quarter-warp (8 lanes, served together) of a warp,
     // the largest number of distinct 16-byte addresses that fall in one of the 8 sixteen-byte
     // bank groups (1: no conflict; lanes at one address are a broadcast). Plane order (global
     // memory path) against the rotated order that the shared-memory path uses.
    auto worst = [](int tpr, int cpr, bool rot) {
      int deg = 0;
      for (int round = 0; round * tpr < cpr; round++)
        for (int i = 0; i < 4; i++)
          for (int q0 = 0; q0 < 32; q0 += 8) {
            std::vector<std::vector<int>> group(8);
            for (int lane = q0; lane < q0 + 8; lane++) {
              const int c = round * tpr + lane % tpr;
              if (c >= cpr) continue;
              const int off = bn::i2s_chunk_act_offset(c, rot ? bn::i2s_rot_plane(c, i) : i);
              auto &g = group[(off / 16) % 8];
              if (std::find(g.begin(), g.end(), off) == g.end()) g.push_back(off);
            }
            for (const auto &g : group) deg = std::max(deg, (int)g.size());
          }
      return deg;
    };
    int rot_worst = 0, plain_worst = 0;
    for (int tpr : {8, 16})
      for (int cpr : {4, 40, 108}) {  // K = 256, 2560, 6912
        rot_worst = std::max(rot_worst, worst(tpr, cpr, true));
        plain_worst = std::max(plain_worst, worst(tpr, cpr, false));
      }
    // The rotation covers each plane once per chunk (a permutation of 0..3).
    bool perm = true;
    for (int c = 0; c < 16; c++) {
      int seen = 0;
      for (int i = 0; i < 4; i++) seen |= 1 << bn::i2s_rot_plane(c, i);
      perm = perm && seen == 15;
    }
    line(rot_worst == 1 && perm, "host/shared_banks",
         "16-byte activation loads, 8 and 16 lanes per row, K = 256/2560/6912: rotated planes %d-way (plane order "
         "%d-way); each chunk reads every plane once: %s",
         rot_worst, plain_worst, perm ? "yes" : "no");
  }
  for (const char *tag : {"rope_full", "rope_part"}) {
    const std::string t = tag;
    const auto dims = k.get<int32_t>(t + "/dims");
    const int heads = dims[0], hd = dims[1], n_rot = dims[2], base = dims[3];
    const auto pos = k.get<int32_t>(t + "/pos");
    const auto x = k.get<float>(t + "/x"), y = k.get<float>(t + "/y"), cs = k.get<float>(t + "/cs");
    bn_hparams hp{};
    hp.n_rot = n_rot;
    hp.rope_freq_base = (float)base;
    const int max_ctx = 1024 + 1;
    const std::vector<float> table = bn::rope_table(hp, max_ctx);
    const int half = n_rot / 2;
    size_t tok = 0;
    for (size_t i = 0; i < pos.size(); i++)
      for (int j = 0; j < half; j++)
        for (int c = 0; c < 2; c++)
          tok += memcmp(&table[((size_t)pos[i] * half + j) * 2 + c], &cs[(i * half + j) * 2 + c], 4) == 0;
    line(tok == cs.size(), "host/" + t + "_table", "%zu/%zu cos/sin values bit-exact (n_rot %d, base %d)", tok,
         cs.size(), n_rot, base);
    // The QKV epilogue: feed the pre-RoPE q values in the permuted row order and read q16 back.
    const int E = heads * hd, P = (int)pos.size();
    std::vector<uint16_t> q16((size_t)P * E, 0);
    bn::Epi e{};
    e.kind = bn::EPI_QKV;
    e.q16 = q16.data();
    e.ldq = E;
    e.n_embd = E;
    e.kv_dim = hd;
    e.head_dim = hd;
    e.n_rot = n_rot;
    e.rope = table.data();
    e.pos = pos.data();
    auto perm = [&](int j) { return j < n_rot ? j / 2 + (j % 2) * half : j; };
    for (int m = 0; m < P; m++)
      for (int r = 0; r < E; r += 2) {
        const int h = r / hd, j = r % hd;
        const float y0 = x[(size_t)m * E + h * hd + perm(j)], y1 = x[(size_t)m * E + h * hd + perm(j + 1)];
        bn::epi_apply(e, m, r, y0, y1);
        bn::epi_apply(e, m, r + 1, y1, 0.f);
      }
    size_t ok = 0;
    for (size_t i = 0; i < q16.size(); i++) ok += q16[i] == bn::f32_to_f16(y[i]);
    line(ok == q16.size(), "host/" + t + "_epilogue", "%zu/%zu rotated q values (as f16) exact", ok, q16.size());
  }
}

// The C++ synthetic generator against the TS one (model fixture): ternary, scales and norms
// must be identical; embeddings may differ in an f16 last bit (libm vs V8 log/cos).
// The GEMM autotuner's search (bn_tune.h) on fake launches: a configuration whose output differs
// is never chosen however fast, the fastest equal one is, the default stays unless another beats
// it by more than 3%, and the buckets cover exactly the token counts up to max_m.
static void test_tune_search() {
  using bn::GemmChoice;
  const int n = 96, k = 256;
  auto fake = [&](const GemmChoice &wrong, const GemmChoice &fast, double fast_us) {
    bn::GemmTuneIO io;
    io.splits = [](const GemmChoice &c, int) { return c.waves == 0 ? 1 : 1 + c.waves; };  // all distinct
    io.run = [=](const GemmChoice &c, int M, std::vector<float> *out) {
      out->assign((size_t)M * n, 1.5f);
      if (c == wrong) (*out)[7] = 1.5000001f;  // one value one ulp off
      return BN_OK;
    };
    io.time = [=](const GemmChoice &c, int, double *us) {
      *us = c == wrong ? 1.0 : c == fast ? fast_us : c == GemmChoice{0, 0, 2} ? 22.0 : 40.0 + c.variant + c.waves;
      return BN_OK;
    };
    return io;
  };
  const GemmChoice dflt{0, 0, 2}, wrong{1, 1, 1}, fast{1, 1, 4};
  bn::GemmTable t;
  std::string log;
  int mism = 0;
  bn_status st = bn::tune_gemm_shape(n, k, 100, dflt, fake(wrong, fast, 5.0), &t, &log, &mism);
  GemmChoice c16, c100, c128, c200;
  const bool f16 = t.find(n, k, 16, &c16), f100 = t.find(n, k, 100, &c100), f128 = t.find(n, k, 128, &c128),
             f200 = t.find(n, k, 200, &c200), other = t.find(n, k + 128, 64, &c16);
  line(!st && t.entries.size() == 4 && mism == 4 && f16 && c16 == fast && f100 && f128 && c100 == fast && !f200 &&
           !other && log.find("DIFFERS") != std::string::npos,
       "host/tune_search",
       "max_m 100: buckets 16..128 tuned (%zu), the one-ulp-off configuration rejected in each (%d), the fastest equal "
       "one chosen (%s)",
       t.entries.size(), mism, bn::gemm_choice_str(c100).c_str());
  // A candidate 2% faster than the default does not replace it; one 10% faster does.
  bn::GemmTable t2, t3;
  int m2 = 0;
  st = bn::tune_gemm_shape(n, k, 16, dflt, fake(GemmChoice{9, 9, 9}, fast, 22.0 * 0.98), &t2, &log, &m2);
  bn_status st3 = bn::tune_gemm_shape(n, k, 16, dflt, fake(GemmChoice{9, 9, 9}, fast, 22.0 * 0.90), &t3, &log, &m2);
  line(!st && !st3 && t2.entries.size() == 1 && t2.entries[0].c == dflt && t3.entries.size() == 1 &&
           t3.entries[0].c == fast && m2 == 0,
       "host/tune_keeps_default", "2%% faster: the default kept; 10%% faster: replaced");
}

// The tuning knobs refuse values they do not take (check_knobs, at device and engine creation).
static void test_knobs() {
  const bn_status none = bn::check_knobs();  // this process's own environment (none set, or valid ones)
  setenv("BN_HEAD_MMA", "wide8", 1);
  setenv("BN_GEMM_SPLIT_WAVES", "8", 1);
  setenv("BN_PERSIST", "layer", 1);
  const bn_status good = bn::check_knobs();
  unsetenv("BN_PERSIST");
  setenv("BN_HEAD_MMA", "wide9", 1);
  const bn_status typo = bn::check_knobs();
  const std::string why = typo ? bn_last_error() : "";
  unsetenv("BN_HEAD_MMA");
  setenv("BN_GEMM_SPLIT_WAVES", "", 1);
  const bn_status empty = bn::check_knobs();
  setenv("BN_GEMM_SPLIT_WAVES", "10", 1);
  const bn_status big = bn::check_knobs();
  unsetenv("BN_GEMM_SPLIT_WAVES");
  bn_options o;
  bn_options_default(&o);
  o.emulate = 1;
  setenv("BN_FAST_QUANT", "tial", 1);
  bn_engine *e = nullptr;
  const bn_status create = bn_engine_create(nullptr, nullptr, 0, &o, &e);  // refused before the model is read
  const std::string why2 = create ? bn_last_error() : "";
  unsetenv("BN_FAST_QUANT");
  if (e) bn_engine_free(e);
  line(!none && !good && typo == BN_ERR_INVALID_ARGUMENT &&
           why.find("BN_HEAD_MMA=wide9") != std::string::npos && why.find("plain|pipelined|wide|wide3|wide8") != std::string::npos &&
           empty == BN_ERR_INVALID_ARGUMENT && big == BN_ERR_INVALID_ARGUMENT && create == BN_ERR_INVALID_ARGUMENT &&
           why2.find("BN_FAST_QUANT=tial") != std::string::npos,
       "host/knobs", "valid values pass; BN_HEAD_MMA=wide9: %s \"%s\"; BN_GEMM_SPLIT_WAVES empty and 10: %s, %s; "
       "bn_engine_create with BN_FAST_QUANT=tial: %s",
       bn_status_name(typo), why.c_str(), bn_status_name(empty), bn_status_name(big), bn_status_name(create));
}

static void test_synth(const Fixture &m, const char *label) {
  const auto sh = m.get<int32_t>("synth/shape");
  const auto gguf = m.get<uint8_t>("gguf");
  bn::GgufFile g;
  if (bn::parse_gguf_bytes(gguf.data(), gguf.size(), &g)) {
    line(false, std::string("host/synth_") + label, "fixture GGUF does not parse: %s", bn_last_error());
    return;
  }
  bnt::SynthShape s{sh[0], sh[1], sh[2], sh[3], sh[4], sh[5], sh[6], (uint32_t)sh[7], 10000.f, BN_ACT_RELU2};
  bnt::SynthModel sm;
  bnt::synth_model(s, &sm, 2);
  size_t same = 0, checked = 0, embd_off = 0, embd_n = 0;
  std::string first_bad;
  for (const bn_tensor &t : sm.table) {
    const bn_tensor *f = nullptr;
    for (const bn_tensor &x : g.tensors)
      if (strcmp(x.name, t.name) == 0) f = &x;
    if (!f) continue;
    checked++;
    const size_t n = std::min((size_t)t.nbytes, (size_t)f->nbytes);
    if (t.type == BN_TYPE_I2_S) {  // codes + the scale (the 28 padding bytes are not compared)
      const size_t codes = (size_t)t.ne[0] * t.ne[1] / 4;
      if (memcmp(t.data, f->data, codes + 4) == 0) same++;
      else if (first_bad.empty()) first_bad = t.name;
    } else if (strcmp(t.name, "token_embd.weight") == 0) {
      const uint16_t *a = (const uint16_t *)t.data, *b = (const uint16_t *)f->data;
      embd_n = n / 2;
      for (size_t i = 0; i < embd_n; i++) embd_off += a[i] != b[i] && std::abs((int)a[i] - (int)b[i]) > 1;
      if (embd_off == 0) same++;
      else if (first_bad.empty()) first_bad = t.name;
    } else {
      if (memcmp(t.data, f->data, n) == 0) same++;
      else if (first_bad.empty()) first_bad = t.name;
    }
  }
  line(same == checked && checked == g.tensors.size(), std::string("host/synth_") + label,
       "%zu/%zu tensors identical to the TS generator (embedding values off by > 1 f16 ulp: %zu of %zu)%s%s", same,
       checked, embd_off, embd_n, first_bad.empty() ? "" : "; first mismatch ", first_bad.c_str());
}

// ---------------------------------------------------------------------------------------------
// Kernels through the Ops seam
// ---------------------------------------------------------------------------------------------

static void test_kernels(const Fixture &k, Device &dev, const std::string &label) {
  bn::Ops &ops = dev.ops();
  for (const char *tag : {"norm256", "norm640"}) {
    const std::string t = tag;
    Bufs b(dev);
    const int M = (int)k.dim(t + "/x", 0), n = (int)k.dim(t + "/x", 1);
    bn::NormQuant nq{};
    nq.x = b.up(k.get<float>(t + "/x"));
    nq.ldx = n;
    nq.n = n;
    nq.w = b.up(k.get<float>(t + "/w"));
    nq.eps = k.get<float>(t + "/eps")[0];
    nq.q = b.zeros<int8_t>((size_t)M * n);
    nq.scale = b.zeros<float>(M);
    nq.sum = b.zeros<int32_t>(M);
    nq.ldq = n;
    nq.f32_out = b.zeros<float>((size_t)M * n);
    const bn_status st = ops.norm_quant(nq, M);
    const auto y = b.down(nq.f32_out, (size_t)M * n);
    const auto q = b.down(nq.q, (size_t)M * n);
    const auto s = b.down(nq.scale, M);
    const auto S = b.down(nq.sum, M);
    const auto ey = k.get<float>(t + "/y");
    const auto eq = k.get<int8_t>(t + "/q");
    const auto es = k.get<float>(t + "/scale");
    const auto eS = k.get<int32_t>(t + "/sum");
    const size_t yok = count_equal(y.data(), ey.data(), y.size()), qok = count_equal(q.data(), eq.data(), q.size());
    const size_t sok = count_equal(s.data(), es.data(), s.size()), Sok = count_equal(S.data(), eS.data(), S.size());
    line(!st && yok == y.size() && qok == q.size() && sok == s.size() && Sok == S.size(), label + "/" + t,
         "normed %zu/%zu, int8 %zu/%zu, scales %zu/%d, sums %zu/%d bit-exact%s%s", yok, y.size(), qok, q.size(), sok,
         M, Sok, M, st ? "; error: " : "", st ? bn_last_error() : "");
  }
  for (const char *tag : {"i2s_40x256", "i2s_37x384", "i2s_16x128", "i2s_70x640"}) {
    const std::string t = tag;
    const int M = (int)k.dim(t + "/q", 0), K = (int)k.dim(t + "/q", 1), N = (int)k.dim(t + "/dms", 1);
    const auto wb = k.get<uint8_t>(t + "/w");
    float ws;
    memcpy(&ws, &wb[(size_t)N * K / 4], 4);
    for (int unit = 0; unit < 2; unit++)
      for (int path = 0; path < 2; path++) {
        Bufs b(dev);
        bn::Mat W{};
        W.w = b.up(wb);
        W.n = N;
        W.k = K;
        W.sm.mode = 0;
        W.sm.b0 = W.sm.b1 = 1 << 30;
        for (int i = 0; i < 3; i++) {
          W.sm.ws[i] = unit ? 1.f : ws;
          W.sm.os[i] = 1.f;
        }
        std::vector<float> sc = k.get<float>(t + "/scale");
        if (unit) std::fill(sc.begin(), sc.end(), 1.f);
        const bn::Acts A{b.up(k.get<int8_t>(t + "/q")), b.up(sc), b.up(k.get<int32_t>(t + "/sum")), K};
        bn::Epi e{};
        e.kind = bn::EPI_STORE;
        e.out = b.zeros<float>((size_t)M * N);
        e.ld = N;
        const bn_status st = path == 0 ? ops.gemv(W, A, M, e, nullptr) : ops.gemm(W, A, M, e);
        const auto y = b.down(e.out, (size_t)M * N);
        size_t ok = 0;
        if (unit) {
          const auto d = k.get<int32_t>(t + "/dms");
          for (size_t i = 0; i < y.size(); i++) ok += y[i] == (float)d[i];
        } else {
          const auto ey = k.get<float>(t + "/y");
          ok = count_equal(y.data(), ey.data(), y.size());
        }
        line(!st && ok == y.size(), label + "/" + t + (path ? "_gemm" : "_gemv") + (unit ? "_int" : "_y"),
             "%zu/%zu %s exact%s%s", ok, y.size(), unit ? "D-S accumulators" : "outputs y", st ? "; error: " : "",
             st ? bn_last_error() : "");
      }
  }
  for (const char *tag : {"attn_a", "attn_b"}) {
    const std::string t = tag;
    const auto dims = k.get<int32_t>(t + "/dims");
    const int nH = dims[0], nKV = dims[1], hd = dims[2], T = dims[3], kvd = nKV * hd;
    const auto pos = k.get<int32_t>(t + "/pos");
    const int M = (int)pos.size();
    const int page_shift = 4, P = 16, pages = (T + P - 1) / P;
    // Pages in a scrambled order (the block table is followed, not assumed contiguous).
    std::vector<int32_t> bt(pages);
    for (int i = 0; i < pages; i++) bt[i] = pages - i;  // reversed; page 0 unused
    const auto kf = k.get<uint16_t>(t + "/k"), vf = k.get<uint16_t>(t + "/v");
    std::vector<uint16_t> kc((size_t)(pages + 1) * P * kvd, 0x7e00), vc((size_t)(pages + 1) * P * kvd, 0x7e00);
    for (int tt = 0; tt < T; tt++)
      for (int i = 0; i < kvd; i++) {
        const size_t o = ((size_t)bt[tt / P] * P + tt % P) * kvd + i;
        kc[o] = kf[(size_t)tt * kvd + i];
        vc[o] = vf[(size_t)tt * kvd + i];
      }
    Bufs b(dev);
    bn::AttnParams ap{};
    ap.q16 = b.up(to_f16(k.get<float>(t + "/q")));
    ap.ldq = nH * hd;
    ap.kc = b.up(kc);
    ap.vc = b.up(vc);
    ap.pos = b.up(pos);
    ap.slot = b.up(std::vector<int32_t>((size_t)M, 0));
    ap.block_table = b.up(bt);
    ap.max_pages = pages;
    ap.page_shift = page_shift;
    ap.n_head = nH;
    ap.n_head_kv = nKV;
    ap.head_dim = hd;
    ap.kv_dim = kvd;
    ap.scale = 1.0 / std::sqrt((double)hd);
    float *out = b.zeros<float>((size_t)M * nH * hd);
    ap.out = out;
    ap.ldo = nH * hd;
    ap.max_t = T;
    const bn_status st = ops.attention(ap, M, nullptr);
    const auto y = b.down(out, (size_t)M * nH * hd);
    const auto ey = k.get<float>(t + "/out");
    const Cmp c = cmp_f32(y.data(), ey.data(), y.size());
    line(!st && c.exact == c.n, label + "/" + t, "%zu/%zu outputs bit-exact (max abs diff %.3g)%s%s", c.exact, c.n,
         c.max_abs, st ? "; error: " : "", st ? bn_last_error() : "");
  }
  for (const char *tag : {"head", "head32"}) {
    const std::string t = tag;
    const auto dims = k.get<int32_t>(t + "/dims");
    const int V = dims[0], K = dims[1];
    const auto h = k.get<float>(t + "/h");
    const int R = (int)(h.size() / K);
    const auto el = k.get<float>(t + "/logits");
    const bool f16 = t == "head";
    for (int gemm = 0; gemm < (f16 ? 2 : 1); gemm++) {
      Bufs b(dev);
      bn::HeadParams hp{};
      hp.mode = BN_HEAD_F16;
      hp.type = f16 ? BN_TYPE_F16 : BN_TYPE_F32;
      hp.w = b.up(k.get<uint8_t>(t + "/w"));
      hp.n_vocab = V;
      hp.k = K;
      if (f16) hp.h16 = b.up(to_f16(h));
      else hp.h32 = b.up(h);
      hp.ldh = K;
      hp.rows = b.up(std::vector<int32_t>{0, 1, 2});
      hp.logits = b.zeros<float>((size_t)R * V);
      const bn_status st = ops.head(hp, R, gemm != 0);
      const auto y = b.down(hp.logits, (size_t)R * V);
      const Cmp c = cmp_f32(y.data(), el.data(), y.size());
      const bool ok = gemm ? c.max_rel <= 1e-4 || c.max_abs <= 1e-5 : c.exact == c.n;
      line(!st && ok, label + "/" + t + (gemm ? "_mma" : "_gemv"), "%zu/%zu logits bit-exact, max abs %.3g, max rel %.3g%s%s",
           c.exact, c.n, c.max_abs, c.max_rel, st ? "; error: " : "", st ? bn_last_error() : "");
    }
  }
  {
    const auto lg = k.get<float>("select/logits");
    const auto prm = k.get<double>("select/params");
    const auto hist = k.get<int32_t>("select/hist");
    const auto nh = k.get<int32_t>("select/nhist");
    const auto ex = k.get<int32_t>("select/expect");
    const int R = (int)k.dim("select/logits", 0), V = (int)k.dim("select/logits", 1);
    std::vector<bn::SampleRow> rows((size_t)R);
    for (int r = 0; r < R; r++) {
      bn::SampleRow &s = rows[(size_t)r];
      memset(&s, 0, sizeof s);
      s.temperature = prm[(size_t)r * 5];
      s.top_k = (int32_t)prm[(size_t)r * 5 + 1];
      s.top_p = prm[(size_t)r * 5 + 2];
      s.penalty = prm[(size_t)r * 5 + 3];
      s.u = (float)prm[(size_t)r * 5 + 4];
      s.n_history = nh[r];
      for (int i = 0; i < nh[r]; i++) s.history[i] = hist[(size_t)r * 8 + i];
    }
    Bufs b(dev);
    bn::SelectParams sp{};
    sp.logits = b.up(lg);
    sp.n_vocab = V;
    sp.rows = b.up(rows);
    sp.out = b.zeros<int32_t>(R);
    sp.nan_flag = b.zeros<int32_t>(1);
    const bn_status st = ops.select(sp, R);
    const auto got = b.down(sp.out, R);
    const auto nan = b.down(sp.nan_flag, 1);
    std::string detail;
    int ok = 0;
    for (int r = 0; r < R; r++) {
      ok += got[r] == ex[r];
      detail += " " + std::to_string(got[r]) + (got[r] == ex[r] ? "" : "≠" + std::to_string(ex[r]));
    }
    line(!st && ok == R && nan[0] == 0, label + "/select", "%d/%d token ids equal the TS sampler's:%s", ok, R,
         detail.c_str());
  }
}

// ---------------------------------------------------------------------------------------------
// Whole model through the C API
// ---------------------------------------------------------------------------------------------

struct ModelFx {
  std::vector<uint8_t> gguf;
  bn::GgufFile g;
  bn_hparams hp{};
  std::vector<int32_t> tok[2];
  std::vector<float> lg[2];
};

static bool load_model_fx(const Fixture &f, ModelFx *m) {
  m->gguf = f.get<uint8_t>("gguf");
  if (bn::parse_gguf_bytes(m->gguf.data(), m->gguf.size(), &m->g)) return false;
  if (bn::hparams_from_gguf(m->g, &m->hp)) return false;
  for (int s = 0; s < 2; s++) {
    m->tok[s] = f.get<int32_t>("seq" + std::to_string(s) + "/tokens");
    m->lg[s] = f.get<float>("seq" + std::to_string(s) + "/logits");
  }
  return true;
}

// A chosen token `a` against the reference row: the argmax, or a near-tie within `tie`.
static bool same_choice(int a, const float *want, int V, double tie) {
  const int b = argmax_row(want, V);
  return a == b || std::fabs((double)want[a] - (double)want[b]) <= tie;
}

struct RowCheck {
  double max_abs = 0;
  double tie = 1e-4;  // an argmax may differ where the reference's top two are this close
  size_t exact = 0, n = 0;
  int argmax_bad = 0, rows = 0;
  void add(const float *got, const float *want, int V) {
    const Cmp c = cmp_f32(got, want, (size_t)V);
    max_abs = std::max(max_abs, c.max_abs);
    exact += c.exact;
    n += c.n;
    rows++;
    if (!same_choice(argmax_row(got, V), want, V, tie)) argmax_bad++;
  }
  bool ok(double tol) const { return max_abs <= tol && argmax_bad == 0; }
  std::string str() const {
    char b[256];
    snprintf(b, sizeof b, "%d rows, %zu/%zu logits bit-exact, max abs diff %.3g, argmax mismatches %d", rows, exact, n,
             max_abs, argmax_bad);
    return b;
  }
};

#define API(call)                                                                           \
  do {                                                                                      \
    const bn_status st_ = (call);                                                           \
    if (st_ != BN_OK) {                                                                     \
      line(false, name + " " #call, "%s: %s", bn_status_name(st_), bn_last_error());        \
      bn_engine_free(e);                                                                    \
      return;                                                                               \
    }                                                                                       \
  } while (0)

// Returns decode-step logits (seq0 tokens 6..9) for cross-configuration comparisons.
static void test_model(const ModelFx &mf, const std::string &name, const bn_options &o, double tol,
                       std::vector<float> *decode_rows) {
  const int V = mf.hp.n_vocab;
  bn_engine *e = nullptr;
  API(bn_engine_create(&mf.hp, mf.g.tensors.data(), (int)mf.g.tensors.size(), &o, &e));
  const auto &t0 = mf.tok[0], &t1 = mf.tok[1];
  const auto &l0 = mf.lg[0], &l1 = mf.lg[1];
  const int n0 = (int)t0.size(), n1 = (int)t1.size();
  // (a) prefill with every row's logits
  {
    int32_t s;
    API(bn_seq_create(e, &s));
    std::vector<float> out((size_t)n0 * V);
    API(bn_prefill(e, s, t0.data(), n0, 1, out.data()));
    RowCheck rc;
    rc.tie = std::max(rc.tie, tol);
    for (int i = 0; i < n0; i++) rc.add(&out[(size_t)i * V], &l0[(size_t)i * V], V);
    line(rc.ok(tol), name + "/prefill_all", "%s", rc.str().c_str());
    API(bn_seq_free(e, s));
  }
  // (b) prefill 6, then decode one token at a time (GPU argmax checked against the reference)
  {
    int32_t s;
    API(bn_seq_create(e, &s));
    std::vector<float> out((size_t)V);
    RowCheck rc;
    rc.tie = std::max(rc.tie, tol);
    API(bn_prefill(e, s, t0.data(), 6, 0, out.data()));
    rc.add(out.data(), &l0[(size_t)5 * V], V);
    int greedy_ok = 0, steps = 0;
    if (decode_rows) decode_rows->clear();
    for (int i = 6; i < n0; i++) {
      int32_t next = -1;
      API(bn_decode(e, 1, &s, &t0[(size_t)i], nullptr, &next, out.data()));
      rc.add(out.data(), &l0[(size_t)i * V], V);
      greedy_ok += same_choice(next, &l0[(size_t)i * V], V, rc.tie);
      steps++;
      if (decode_rows) decode_rows->insert(decode_rows->end(), out.begin(), out.end());
    }
    int32_t len = 0;
    API(bn_seq_length(e, s, &len));
    line(rc.ok(tol) && greedy_ok == steps && len == n0, name + "/prefill_then_decode",
         "%s; GPU greedy = reference argmax %d/%d; length %d", rc.str().c_str(), greedy_ok, steps, len);
    // (d) truncate and re-decode
    API(bn_seq_truncate(e, s, 2));
    API(bn_decode(e, 1, &s, &t0[2], nullptr, nullptr, out.data()));
    RowCheck rt;
    rt.tie = std::max(rt.tie, tol);
    rt.add(out.data(), &l0[(size_t)2 * V], V);
    line(rt.ok(tol), name + "/truncate", "%s", rt.str().c_str());
    API(bn_seq_free(e, s));
  }
  // (c) one forward mixing two prefills, then decode steps of both sequences together
  if (o.max_batch_tokens >= 7 && o.max_logit_rows >= 7) {
    int32_t a, b;
    API(bn_seq_create(e, &a));
    API(bn_seq_create(e, &b));
    const int32_t seqs[7] = {b, b, b, a, a, a, a};
    const int32_t toks[7] = {t1[0], t1[1], t1[2], t0[0], t0[1], t0[2], t0[3]};
    std::vector<float> out((size_t)7 * V);
    bn_batch batch{7, seqs, toks, nullptr};
    API(bn_forward(e, &batch, nullptr, nullptr, out.data()));
    RowCheck rc;
    rc.tie = std::max(rc.tie, tol);
    for (int i = 0; i < 3; i++) rc.add(&out[(size_t)i * V], &l1[(size_t)i * V], V);
    for (int i = 0; i < 4; i++) rc.add(&out[(size_t)(3 + i) * V], &l0[(size_t)i * V], V);
    int ia = 4, ib = 3;
    while (ia < n0 && ib < n1) {
      const int32_t ss[2] = {a, b};
      const int32_t tt[2] = {t0[(size_t)ia], t1[(size_t)ib]};
      int32_t next[2];
      API(bn_decode(e, 2, ss, tt, nullptr, next, out.data()));
      rc.add(&out[0], &l0[(size_t)ia * V], V);
      rc.add(&out[(size_t)V], &l1[(size_t)ib * V], V);
      ia++;
      ib++;
    }
    line(rc.ok(tol), name + "/mixed_batch", "%s", rc.str().c_str());
    // (e) errors come back as statuses, and leave the sequences usable
    int32_t len_before = 0, len_after = 0;
    API(bn_seq_length(e, a, &len_before));
    const int32_t bad_tok = V + 5;
    const bn_status s1 = bn_decode(e, 1, &a, &bad_tok, nullptr, nullptr, nullptr);
    const int32_t ghost = 999;
    const bn_status s2 = bn_decode(e, 1, &ghost, &t0[0], nullptr, nullptr, nullptr);
    std::vector<int32_t> longp((size_t)o.max_ctx + 8, 1);
    const bn_status s3 = bn_prefill(e, a, longp.data(), (int)longp.size(), 0, nullptr);
    API(bn_seq_length(e, a, &len_after));
    std::vector<int32_t> extra;
    bn_status s4 = BN_OK;
    for (int i = 0; i < o.max_seqs + 1 && s4 == BN_OK; i++) {
      int32_t x;
      s4 = bn_seq_create(e, &x);
      if (s4 == BN_OK) extra.push_back(x);
    }
    for (int32_t x : extra) bn_seq_free(e, x);
    const bool ok = s1 == BN_ERR_INVALID_ARGUMENT && s2 == BN_ERR_STATE && s3 == BN_ERR_CAPACITY &&
                    s4 == BN_ERR_CAPACITY && len_before == len_after;
    line(ok, name + "/errors", "bad token %s, unknown sequence %s, context overflow %s, slots exhausted %s, length kept %d=%d",
         bn_status_name(s1), bn_status_name(s2), bn_status_name(s3), bn_status_name(s4), len_before, len_after);
    API(bn_seq_free(e, a));
    API(bn_seq_free(e, b));
  }
  bn_engine_free(e);
}

static bn_options small_options() {
  bn_options o;
  bn_options_default(&o);
  o.max_seqs = 4;
  o.max_batch_tokens = 16;
  o.max_logit_rows = 16;
  o.page_size = 16;
  o.max_ctx = 64;
  o.kv_bytes = 0;
  o.emulate = g_emulate;
  return o;
}

static void test_models(const ModelFx &mf, const std::string &label) {
  std::vector<float> r_gemv, r_gemm, r_chunk;
  bn_options o = small_options();
  test_model(mf, label + "/gemv", o, 1e-4, &r_gemv);
  o.gemv_max_m = 0;
  o.page_size = 32;
  test_model(mf, label + "/gemm", o, 1e-4, &r_gemm);
  o = small_options();
  o.max_batch_tokens = 4;
  o.max_logit_rows = 4;
  o.gemv_max_m = 8;
  test_model(mf, label + "/chunked", o, 1e-4, &r_chunk);
  const bool same = r_gemv.size() == r_gemm.size() && !r_gemv.empty() &&
                    memcmp(r_gemv.data(), r_gemm.data(), r_gemv.size() * 4) == 0 &&
                    memcmp(r_gemv.data(), r_chunk.data(), r_gemv.size() * 4) == 0;
  line(same, label + "/paths_agree", "decode logits bit-identical across GEMV/GEMM paths, page sizes and chunking (%zu values)",
       r_gemv.size());
  o = small_options();
  o.head_mode = BN_HEAD_INT8;
  std::vector<float> r_i8;
  // INT8 head: approximate logits; only the argmax rows and the error bound are reported.
  bn_engine *e = nullptr;
  if (bn_engine_create(&mf.hp, mf.g.tensors.data(), (int)mf.g.tensors.size(), &o, &e) == BN_OK) {
    int32_t s;
    bn_seq_create(e, &s);
    const int n0 = (int)mf.tok[0].size(), V = mf.hp.n_vocab;
    std::vector<float> out((size_t)V);
    int agree = 0;
    double worst = 0;
    bn_status st = bn_prefill(e, s, mf.tok[0].data(), 1, 0, out.data());
    for (int i = 1; i < n0 && st == BN_OK; i++) {
      st = bn_decode(e, 1, &s, &mf.tok[0][(size_t)i], nullptr, nullptr, out.data());
      const float *ref = &mf.lg[0][(size_t)i * V];
      agree += argmax_row(out.data(), V) == argmax_row(ref, V);
      worst = std::max(worst, cmp_f32(out.data(), ref, (size_t)V).max_abs);
    }
    line(st == BN_OK, label + "/int8_head", "argmax agrees %d/%d, max abs logit error %.3g (approximate by design)", agree,
         n0 - 1, worst);
    bn_engine_free(e);
  } else {
    line(false, label + "/int8_head", "create failed: %s", bn_last_error());
  }
}

// ---------------------------------------------------------------------------------------------
// GPU-only: random big-shape checks and benchmarks (the GPU build defines BN_WITH_CUDA)
// ---------------------------------------------------------------------------------------------

#include "fast_checks.inc"

#if defined(BN_WITH_CUDA)
#include "../engine/src/bn_core.h"
#include "gpu_checks.inc"
#include "profile.inc"
#endif

// ---------------------------------------------------------------------------------------------

// The isolation itself (isolate.h), on the CPU: a child that reports and exits, one that crashes
// after a report, one that hangs past its limit, and a clean one after them. Each must leave its
// reports and, when it did not end cleanly, one failed "<name>/process" check.
static int isolation_selftest() {
  int bad = 0;
  auto expect = [&](bool ok, const char *what) {
    printf("[%s] isolation/%s\n", ok ? "PASS" : "FAIL", what);
    bad += !ok;
  };
  std::vector<bnt::ChildRecord> bench;
  g_on_bench = [&](const bnt::ChildRecord &r) { bench.push_back(r); };
  const int r1 = isolated("iso/clean", 5, [] {
    line(true, "iso/a", "from a child");
    bnt::child_send('R', "| row | 1 | |\n", "{}");
    return 0;
  });
  expect(r1 == 0 && g_pass == 1 && g_fail == 0 && g_md.find("iso/a") != std::string::npos && bench.size() == 1 &&
             bench[0].a == "| row | 1 | |\n" && bench[0].b == "{}",
         "a child's check and bench row reach the parent");
  const int r2 = isolated("iso/crash", 5, [] {
    line(false, "iso/b", "reported before the crash");
    fflush(stdout);
    abort();
    return 0;
  });
  expect(r2 == -1 && g_fail == 2 && g_md.find("iso/b") != std::string::npos &&
             g_md.find("iso/crash/process | **FAIL** | ended by signal 6") != std::string::npos,
         "a crashed child keeps its reports and adds a failed process check");
  const auto t0 = std::chrono::steady_clock::now();
  const int r3 = isolated("iso/hang", 1, [] {
    for (;;) pause();
    return 0;
  });
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  expect(r3 == -1 && g_fail == 3 && secs < 10 && g_md.find("iso/hang/process | **FAIL** | killed after its limit of 1 s") != std::string::npos,
         "a hung child is killed at its limit");
  const int r4 = isolated("iso/stop", 5, [] { return kStopAll; });
  const int r5 = isolated("iso/status", 5, [] { return 3; });
  expect(r4 == kStopAll && r5 == -1 && g_fail == 4, "exit statuses: the stop status passes, another fails the section");
#if defined(BN_WITH_CUDA)
  {  // the benchmarks' rows and heading from a child, and the parent's results.md (BenchOut)
    BenchOut B;
    // Under $TMPDIR when set (the test runner gives each file its own), else /tmp.
    const char *tmp = getenv("TMPDIR");
    std::string dir_s = std::string(tmp && *tmp ? tmp : "/tmp") + "/bn_iso_XXXXXX";
    char *dir = dir_s.data();
    const bool have_dir = mkdtemp(dir) != nullptr;
    if (have_dir) B.path = std::string(dir) + "/results.md";
    g_on_bench = [&B](const bnt::ChildRecord &r) { B.take(r); };
    isolated("iso/bench", 5, [&B] {
      B.set_heading("### heading", "a device");
      B.row("first row", "1 tok/s", ">= 2");
      B.row("second row", "2 tok/s");
      return 0;
    });
    std::string file;
    if (FILE *f = have_dir ? fopen(B.path.c_str(), "r") : nullptr) {
      char buf[4096];
      file.assign(buf, fread(buf, 1, sizeof buf, f));
      fclose(f);
      remove(B.path.c_str());
      rmdir(dir);
    }
    expect(B.heading == "### heading" && B.device == "a device" &&
               B.md == "| first row | 1 tok/s | >= 2 |\n| second row | 2 tok/s |  |\n" &&
               B.json.find("\"what\": \"second row\"") != std::string::npos && file.find("### heading") == 0 &&
               file.find("| second row | 2 tok/s |  |") != std::string::npos,
           "bench rows and heading from a child land in the parent's results.md");
  }
#endif
  g_on_bench = nullptr;
  printf("== isolation selftest: %d failed\n", bad);
  return bad;
}

int main(int argc, char **argv) {
  // Line-buffered even into a pipe (run-on-gpu.sh tees it): a section's process that crashes
  // keeps everything it printed before.
  setvbuf(stdout, nullptr, _IOLBF, 0);
  std::string dir = "gpu-lambda/test/fixtures", out_dir;
  bool cpu_only = false, bench = false, quick = false, no_random = false, profile = false, profile_only = false,
       fast_2b4t = false;
  std::string profile_part;  // --profile-part exact1|exact64|fast1: one of the three tables (for ncu runs)
  for (int i = 1; i < argc; i++) {
    const std::string a = argv[i];
    if (a == "--fixtures" && i + 1 < argc) dir = argv[++i];
    else if (a == "--out" && i + 1 < argc) out_dir = argv[++i];
    else if (a == "--cpu-only") cpu_only = true;
    else if (a == "--bench") bench = true;
#if defined(BN_WITH_CUDA)
    else if (a == "--bench-smoke") bench = g_bench_smoke = true;  // every bench path, small (gpu_checks.inc)
#endif
    else if (a == "--quick") quick = true;
    else if (a == "--no-random") no_random = true;
    else if (a == "--fast-2b4t") fast_2b4t = true;  // the fast numerics' 2B-4T shapes even with --no-random
    else if (a == "--no-isolate") bnt::g_isolate = false;  // GPU sections in this process (compute-sanitizer)
    else if (a == "--isolation-selftest") return isolation_selftest();
    else if (a == "--only" && i + 1 < argc) g_only = argv[++i];
    else if (a == "--skip" && i + 1 < argc) g_skip = argv[++i];
    else if (a == "--profile") profile = true;
    else if (a == "--profile-only") profile = profile_only = true;
    else if (a == "--profile-part" && i + 1 < argc &&
             (std::string(argv[i + 1]) == "exact1" || std::string(argv[i + 1]) == "exact64" ||
              std::string(argv[i + 1]) == "fast1"))
      profile_part = argv[++i];
    else {
      fprintf(stderr,
              "usage: %s [--fixtures DIR] [--cpu-only] [--bench] [--quick] [--no-random] [--fast-2b4t] [--no-isolate] [--only SECTION] [--skip SECTION] [--bench-smoke] [--profile | "
              "--profile-only] [--profile-part exact1|exact64|fast1] [--out DIR]\n",
              argv[0]);
      return 2;
    }
  }
#if !defined(BN_WITH_CUDA)
  cpu_only = true;
#endif
  (void)cpu_only;
  (void)bench;
  (void)quick;
  (void)no_random;
  (void)fast_2b4t;
  (void)profile;
#if defined(BN_WITH_CUDA)
  if (profile_only) {
    run_profile(out_dir, cpu_only, profile_part);
    return g_fail > 100 ? 100 : g_fail;
  }
#endif
  const auto t0 = std::chrono::steady_clock::now();
  Fixture kf, m1, m2;
  std::string err;
  if (!kf.load(dir + "/kernels.bnf", &err) || !m1.load(dir + "/model-relu2.bnf", &err) ||
      !m2.load(dir + "/model-silu.bnf", &err)) {
    fprintf(stderr, "fixtures: %s\n", err.c_str());
    return 2;
  }
  printf("== host numerics\n");
  test_host(kf);
  test_tune_search();
  test_knobs();
  test_synth(m1, "relu2");
  printf("== kernels on the CPU emulation\n");
  {
    std::unique_ptr<Device> emu(bn::make_emu_device());
    test_kernels(kf, *emu, "emu");
  }
  ModelFx mr, ms;
  if (!load_model_fx(m1, &mr) || !load_model_fx(m2, &ms)) {
    fprintf(stderr, "model fixtures: %s\n", bn_last_error());
    return 2;
  }
#if defined(BN_WITH_CUDA)
  if (!cpu_only) {
    g_emulate = 0;
    // One idle context held open while the sections' processes come and go (isolate.h).
    const bnt::Keeper keep_driver([] {
      Device *d = nullptr;  // (the process ends without freeing it)
      return bn::make_device(0, &d) == BN_OK;
    });
    if (run_gpu_sections(kf, mr, ms, bench, quick, no_random, fast_2b4t, out_dir) && profile)
      isolated("gpu/profile", section_limit(240), [&] {
        run_profile(out_dir, false, profile_part);
        return 0;
      });
  } else
#endif
  {
    printf("== whole models on the CPU emulation (C API)\n");
    test_models(mr, "emu/model-relu2");
    test_models(ms, "emu/model-silu");
    std::unique_ptr<Device> emu(bn::make_emu_device());
    test_fast_all(mr, ms, *emu, nullptr, "emu", false);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  printf("== %d passed, %d failed (%.1f s)\n", g_pass, g_fail, secs);
  if (!out_dir.empty()) {
    const std::string p = out_dir + "/checks.md";
    FILE *f = fopen(p.c_str(), "w");
    if (f) {
      fprintf(f, "| check | result | detail |\n|---|---|---|\n%s", g_md.c_str());
      fclose(f);
    }
  }
  return g_fail > 100 ? 100 : g_fail;
}
