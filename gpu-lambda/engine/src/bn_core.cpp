// Engine core: see bn_core.h. Shared by the GPU build (CudaDevice) and the CPU emulation build.
#include "bn_core.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

namespace bn {

namespace {
inline size_t up16(size_t n) { return (n + 15) & ~(size_t)15; }
constexpr int kMaxGraphBucketLog2 = 9;  // graphs for 1, 2, 4, ..., 512 tokens
}  // namespace

bool fast_gemv_ok(const Mat &w, const Acts &a, const Epi &e, const NormQuant *tail, const FastGemv &f) {
  if (f.in.x ? (!f.in.stats || f.in.n != w.k || a.ld < w.k || (a.ld & 15)) : (!a.q || !a.scale || !a.sum)) {
    set_error("gemv: fast input of %d values (row stride %d) for a matrix of %d columns needs its statistics, or "
              "int8 rows to read",
              f.in.x ? f.in.n : 0, a.ld, w.k);
    return false;
  }
  if (f.out.ns.stats && (tail || (e.kind != EPI_RESID && e.kind != EPI_GATEUP) || !f.out.part_ss || !f.out.part_key ||
                         f.out.part_ld < (w.n + gemv_rows_per_block(w.n) - 1) / gemv_rows_per_block(w.n))) {
    set_error("gemv: fast statistics need a RESID or GATEUP epilogue, no exact tail, and one part per block");
    return false;
  }
  return true;
}

bool fast_attn_ok(const AttnParams &p, const FastAttn &f, int M) {
  if (M < 1 || f.splits < 1 || f.splits > kFastMaxSplits || !f.part_o || !f.part_ml) {
    set_error("split attention: splits %d must be in 1..%d with partial buffers", f.splits, kFastMaxSplits);
    return false;
  }
  if (f.so.ns.stats && (!f.so.part_ss || !f.so.part_key || f.so.part_ld < p.n_head || f.so.ns.n != p.n_head * p.head_dim)) {
    set_error("split attention: statistics need one part per head over n_head*head_dim values");
    return false;
  }
  return true;
}

Engine::~Engine() {
  if (dev_) {
    dev_->sync();
    for (void *p : allocs_) dev_->release(p);
    if (in_host_) dev_->release_host(in_host_);
    if (out_host_) dev_->release_host(out_host_);
    delete dev_;
  }
}

void *Engine::dalloc(size_t bytes, bn_status *st) {
  if (*st) return nullptr;
  void *p = nullptr;
  *st = dev_->alloc(&p, bytes < 16 ? 16 : bytes);
  if (*st) return nullptr;
  allocs_.push_back(p);
  return p;
}

// The tuning knobs (environment variables, README "tuning knobs") and the values each accepts.
// Any other value is refused where a device or an engine is created, so that a typo never
// silently leaves the default in place.
bn_status check_knobs() {
  static const struct {
    const char *name, *values;  // values: '|'-separated
  } knobs[] = {{"BN_PDL", "0|1|early"},
               {"BN_GEMM", "plain|pipelined|deep"},
               {"BN_GEMM_SPLITK", "atomics|tiles|kernel"},
               {"BN_GEMM_SPLIT_WAVES", "0|1|2|3|4|5|6|7|8"},
               {"BN_ATTN", "generic|fast|ring"},
               {"BN_ATTN_TAIL", "0|1"},
               {"BN_NORM", "plain|regs"},
               {"BN_GEMV", "plain|ilp|rot|smem"},
               {"BN_TAIL_CACHE", "0|1"},
               {"BN_AUTOTUNE", "0|1"},
               {"BN_HEAD_MMA", "plain|pipelined|wide|wide3|wide8"},
               {"BN_FAST_QUANT", "input|tail"},
               {"BN_PERSIST", "0|ffn|layer|step"}};
  for (const auto &k : knobs) {
    const char *v = getenv(k.name);
    if (!v) continue;
    const size_t n = strlen(v);
    bool ok = false;
    for (const char *at = k.values; !ok;) {
      const char *bar = strchr(at, '|');
      const size_t len = bar ? (size_t)(bar - at) : strlen(at);
      ok = len == n && strncmp(at, v, n) == 0;
      if (!bar) break;
      at = bar + 1;
    }
    if (!ok) {
      set_error("%s=%s is not a value of that knob (one of %s, or unset for the default)", k.name, v, k.values);
      return BN_ERR_INVALID_ARGUMENT;
    }
  }
  return BN_OK;
}

bn_status Engine::fail(bn_status st) {
  if (st == BN_ERR_CUDA || st == BN_ERR_OUT_OF_MEMORY) poisoned_ = true;
  return st;
}

bn_status Engine::create(const ModelTable &m, const bn_options &o, Device *dev, Engine **out) {
  Engine *e = new Engine();  // the knobs were checked by the C API before any work (check_knobs)
  e->dev_ = dev;
  e->hp_ = m.hp;
  e->opt_ = o;
  const char *fq = getenv("BN_FAST_QUANT");  // a tuning knob of the fast numerics (README)
  e->fast_quant_tail_ = fq && strcmp(fq, "tail") == 0;
  bn_options &op = e->opt_;
  if (op.max_ctx <= 0) op.max_ctx = std::min(m.hp.n_ctx, 4096);
  if (op.max_ctx > m.hp.n_ctx) op.max_ctx = m.hp.n_ctx;
  auto bad = [&](const char *what) {
    set_error("invalid option: %s", what);
    delete e;
    return BN_ERR_INVALID_ARGUMENT;
  };
  if (op.max_seqs < 1 || op.max_seqs > 4096) return bad("max_seqs must be in 1..4096");
  if (op.max_batch_tokens < 1 || op.max_batch_tokens > 8192) return bad("max_batch_tokens must be in 1..8192");
  if (op.max_logit_rows < 1) return bad("max_logit_rows must be >= 1");
  if (op.max_logit_rows > op.max_batch_tokens) op.max_logit_rows = op.max_batch_tokens;
  if (op.page_size < 16 || op.page_size > 1024 || (op.page_size & (op.page_size - 1)))
    return bad("page_size must be a power of two in 16..1024");
  if (op.head_mode != BN_HEAD_F16 && op.head_mode != BN_HEAD_INT8) return bad("head_mode must be F16 or INT8");
  if (op.gemv_max_m < 0 || op.gemv_max_m > kGemvMaxM) return bad("gemv_max_m must be in 0..8");
  if (op.numerics != BN_NUMERICS_EXACT && op.numerics != BN_NUMERICS_FAST) return bad("numerics must be EXACT or FAST");
  const int kv = m.hp.n_head_kv * m.hp.head_dim;
  const int max_n = std::max(std::max(m.hp.n_embd + 2 * kv, 2 * m.hp.n_ff), m.hp.n_embd);
  bn_status st = dev->configure(op.max_ctx, op.max_batch_tokens, max_n);
  if (!st) st = e->upload(m);
  if (!st) st = e->alloc_buffers();
  // GEMM autotuning (on the CUDA device unless BN_AUTOTUNE=0, bn_tune.h): prefill and batched decode
  // use the GEMM above gemv_max_m tokens, and every layer's matrices have layer 0's shapes.
  if (!st && op.max_batch_tokens > op.gemv_max_m && !e->layers_.empty()) {
    const LayerDev &L = e->layers_[0];
    for (const Mat *w : {&L.qkv, &L.o, &L.gateup, &L.down})
      if (!st) st = dev->tune_gemm(*w, op.max_batch_tokens);
  }
  // The persistent FFN chain (BN_PERSIST=ffn): refused here, not at the first decode step, if this
  // model's shapes cannot run it.
  if (!st && dev->ops().ffn_chain_on() && !e->layers_.empty())
    st = dev->ops().ffn_chain_check(e->ffn_chain_of(0, e->norm_point(e->x_, m.hp.n_embd, e->layers_[0].attn_norm)));
  // The persistent layer (BN_PERSIST=layer) likewise; the check also raises its shared memory for
  // this context.
  if (!st && dev->ops().layer_chain_on() && !e->layers_.empty())
    st = dev->ops().layer_chain_check(
        e->layer_chain_of(0, e->norm_point(e->x_, m.hp.n_embd, e->layers_[0].attn_norm)));
  // The persistent step (BN_PERSIST=step): its chains uploaded once, and checked.
  if (!st && dev->ops().step_chain_on() && !e->layers_.empty()) st = e->upload_step_chains();
  // The head GEMM's kernel likewise (above kGemvMaxM logits rows, F16 head).
  if (!st && op.max_logit_rows > kGemvMaxM && op.head_mode == BN_HEAD_F16) {
    HeadParams h{};
    h.mode = op.head_mode;
    h.type = e->head_type_;
    h.w = e->head_;
    h.n_vocab = m.hp.n_vocab;
    h.k = m.hp.n_embd;
    st = dev->tune_head(h, op.max_logit_rows);
  }
  if (!st) st = dev->sync();
  if (st) {
    delete e;
    return st;
  }
  *out = e;
  return BN_OK;
}

bn_status Engine::upload(const ModelTable &m) {
  const bn_hparams &hp = hp_;
  const int E = hp.n_embd, F = hp.n_ff, V = hp.n_vocab, kv = hp.n_head_kv * hp.head_dim;
  bn_status st = BN_OK;
  layers_.resize(hp.n_layer);
  for (int l = 0; l < hp.n_layer && !st; l++) {
    LayerImage im;
    if ((st = build_layer(m, l, &im))) break;
    LayerDev &L = layers_[l];
    auto mat = [&](Mat &d, const std::vector<uint8_t> &src, int n, int k, const ScaleMap &sm) {
      uint8_t *p = (uint8_t *)dalloc(src.size(), &st);
      if (!st) st = dev_->h2d(p, src.data(), src.size());
      d.w = p;
      d.n = n;
      d.k = k;
      d.sm = sm;
      weight_bytes_ += src.size();
    };
    mat(L.qkv, im.qkv, E + 2 * kv, E, im.sm_qkv);
    mat(L.o, im.o, E, E, im.sm_o);
    mat(L.gateup, im.gateup, 2 * F, E, im.sm_gateup);
    mat(L.down, im.down, E, F, im.sm_down);
    auto vec = [&](float *&d, const float *src, int n) {
      d = (float *)dalloc((size_t)n * 4, &st);
      if (!st) st = dev_->h2d(d, src, (size_t)n * 4);
      weight_bytes_ += (size_t)n * 4;
    };
    vec(L.attn_norm, im.attn_norm, E);
    vec(L.attn_sub_norm, im.attn_sub_norm, E);
    vec(L.ffn_norm, im.ffn_norm, E);
    vec(L.ffn_sub_norm, im.ffn_sub_norm, F);
    if (!st) st = dev_->sync();  // the layer image is freed when `im` goes out of scope
  }
  if (st) return st;
  auto table = [&](const TensorRef *t, void **d) {
    const size_t bytes = (size_t)V * E * (t->type == BN_TYPE_F16 ? 2 : 4);
    *d = dalloc(bytes, &st);
    if (!st) st = dev_->h2d(*d, t->data, bytes);
    weight_bytes_ += bytes;
  };
  table(m.embd, &embd_);
  embd_type_ = m.embd->type;
  if (m.head == m.embd) {
    head_ = embd_;
  } else {
    table(m.head, &head_);
  }
  head_type_ = m.head->type;
  output_norm_ = (float *)dalloc((size_t)E * 4, &st);
  if (!st) st = dev_->h2d(output_norm_, m.output_norm->data, (size_t)E * 4);
  std::vector<float> rope = rope_table(hp, opt_.max_ctx);
  rope_ = (float *)dalloc(rope.size() * 4, &st);
  if (!st) st = dev_->h2d(rope_, rope.data(), rope.size() * 4);
  if (!st) st = dev_->sync();
  if (!st && opt_.head_mode == BN_HEAD_INT8) {
    std::vector<int8_t> q((size_t)V * E);
    std::vector<float> s((size_t)V);
    quantize_head_rows(*m.head, V, E, q.data(), s.data());
    head8_ = (int8_t *)dalloc(q.size(), &st);
    head8_scale_ = (float *)dalloc(s.size() * 4, &st);
    if (!st) st = dev_->h2d(head8_, q.data(), q.size());
    if (!st) st = dev_->h2d(head8_scale_, s.data(), s.size() * 4);
    if (!st) st = dev_->sync();
    weight_bytes_ += q.size() + s.size() * 4;
  }
  return st;
}

bn_status Engine::alloc_buffers() {
  const int E = hp_.n_embd, F = hp_.n_ff, V = hp_.n_vocab, kv = hp_.n_head_kv * hp_.head_dim;
  Mmax_ = opt_.max_batch_tokens;
  Rmax_ = opt_.max_logit_rows;
  ldw_ = (int)up16((size_t)std::max(E, F));
  bn_status st = BN_OK;
  const size_t M = (size_t)Mmax_;
  x_ = (float *)dalloc(M * E * 4, &st);
  att_ = (float *)dalloc(M * E * 4, &st);
  ff_ = (float *)dalloc(M * F * 4, &st);
  h32_ = (float *)dalloc(M * E * 4, &st);
  q8_ = (int8_t *)dalloc(M * ldw_, &st);
  ascale_ = (float *)dalloc(M * 4, &st);
  asum_ = (int32_t *)dalloc(M * 4, &st);
  q16_ = (uint16_t *)dalloc(M * E * 2, &st);
  h16_ = (uint16_t *)dalloc(M * E * 2, &st);
  hq_ = (int8_t *)dalloc(M * E, &st);
  hscale_ = (float *)dalloc(M * 4, &st);
  hsum_ = (int32_t *)dalloc(M * 4, &st);
  logits_ = (float *)dalloc((size_t)Rmax_ * V * 4, &st);
  sampled_ = (int32_t *)dalloc((size_t)(Rmax_ + 1) * 4, &st);
  // The persistent layer's and step's split scores (one token: n_head x max_ctx floats).
  if (dev_->ops().layer_chain_on() || dev_->ops().step_chain_on())
    scores_ = (float *)dalloc((size_t)hp_.n_head * opt_.max_ctx * 4, &st);
  if (opt_.numerics == BN_NUMERICS_FAST) {
    const int max_n = std::max(E + 2 * kv, 2 * F);
    part_ld_ = std::max(hp_.n_head, (max_n + 7) / 8);  // one part per GEMV block (>= 8 rows) or head
    stats_ = (float *)dalloc((size_t)hp_.n_layer * 4 * kGemvMaxM * 2 * 4, &st);
    part_ss_ = (double *)dalloc((size_t)kGemvMaxM * part_ld_ * 8, &st);
    part_key_ = (uint64_t *)dalloc((size_t)kGemvMaxM * part_ld_ * 8, &st);
    const size_t heads = (size_t)kGemvMaxM * hp_.n_head * kFastMaxSplits;
    att_part_o_ = (float *)dalloc(heads * hp_.head_dim * 4, &st);
    att_part_ml_ = (float *)dalloc(heads * 2 * 4, &st);
  }
  off_pos_ = up16(M * 4);
  off_slot_ = off_pos_ + up16(M * 4);
  off_rows_ = off_slot_ + up16(M * 4);
  off_samp_ = off_rows_ + up16((size_t)Rmax_ * 4);
  in_bytes_ = off_samp_ + (size_t)Rmax_ * sizeof(SampleRow);
  in_dev_ = (uint8_t *)dalloc(in_bytes_, &st);
  if (st) return st;
  if ((st = dev_->alloc_host((void **)&in_host_, in_bytes_))) return st;
  memset(in_host_, 0, in_bytes_);
  if ((st = dev_->alloc_host((void **)&out_host_, (size_t)(Rmax_ + 1) * 4))) return st;

  // KV pool
  const int P = opt_.page_size;
  page_shift_ = 0;
  while ((1 << page_shift_) < P) page_shift_++;
  max_pages_ = (opt_.max_ctx + P - 1) / P;
  const size_t page_bytes = (size_t)2 * hp_.n_layer * P * kv * 2;
  size_t want = (size_t)opt_.max_seqs * max_pages_ + 1;
  uint64_t free_b = 0, total_b = 0;
  if ((st = dev_->free_memory(&free_b, &total_b))) return st;
  size_t cap_pages = (size_t)(free_b * 0.6) / page_bytes;
  if (opt_.kv_bytes > 0) {
    want = (size_t)(opt_.kv_bytes / page_bytes);
    cap_pages = want;
  }
  size_t pages = std::min(want, cap_pages);
  if (pages < 2) {
    set_error("not enough device memory for the KV cache: %llu bytes free, %zu bytes per page",
              (unsigned long long)free_b, page_bytes);
    return BN_ERR_OUT_OF_MEMORY;
  }
  if (pages > (size_t)INT32_MAX / 2) pages = (size_t)INT32_MAX / 2;
  n_pages_ = (int)pages;
  layer_stride_ = (size_t)n_pages_ * P * kv;
  kpool_ = (uint16_t *)dalloc(layer_stride_ * hp_.n_layer * 2, &st);
  vpool_ = (uint16_t *)dalloc(layer_stride_ * hp_.n_layer * 2, &st);
  kv_bytes_ = (uint64_t)layer_stride_ * hp_.n_layer * 4;
  if (!st) st = dev_->memset0(kpool_, layer_stride_ * hp_.n_layer * 2);
  if (!st) st = dev_->memset0(vpool_, layer_stride_ * hp_.n_layer * 2);
  seqs_.assign(opt_.max_seqs + 1, Seq());
  bt_host_.assign((size_t)(opt_.max_seqs + 1) * max_pages_, 0);  // page 0: the dummy slot's page
  bt_dev_ = (int32_t *)dalloc(bt_host_.size() * 4, &st);
  if (!st) st = dev_->h2d(bt_dev_, bt_host_.data(), bt_host_.size() * 4);
  free_pages_.clear();
  for (int p = n_pages_ - 1; p >= 1; p--) free_pages_.push_back(p);
  graph_of_bucket_.assign(kMaxGraphBucketLog2 + 1, -1);
  return st;
}

bn_status Engine::info(bn_engine_info *out) const {
  memset(out, 0, sizeof(*out));
  out->hparams = hp_;
  dev_->describe(out->device_name, sizeof(out->device_name), &out->cc_major, &out->cc_minor);
  out->weight_bytes = weight_bytes_;
  out->kv_bytes = kv_bytes_;
  out->kv_pages = n_pages_;
  out->page_size = opt_.page_size;
  out->max_seqs = opt_.max_seqs;
  out->max_ctx = opt_.max_ctx;
  out->max_batch_tokens = opt_.max_batch_tokens;
  return BN_OK;
}

// ---- sequences ------------------------------------------------------------------------------------

bn_status Engine::seq_create(int *out) {
  std::lock_guard<std::mutex> g(mu_);
  for (int s = 0; s < opt_.max_seqs; s++) {
    if (!seqs_[s].live) {
      seqs_[s] = Seq();
      seqs_[s].live = true;
      *out = s;
      return BN_OK;
    }
  }
  set_error("all %d sequence slots are in use", opt_.max_seqs);
  return BN_ERR_CAPACITY;
}

static bool valid_seq(const std::vector<Seq> &seqs, int max_seqs, int s) {
  return s >= 0 && s < max_seqs && seqs[s].live;
}

bn_status Engine::seq_free(int s) {
  std::lock_guard<std::mutex> g(mu_);
  if (!valid_seq(seqs_, opt_.max_seqs, s)) {
    set_error("sequence %d does not exist", s);
    return BN_ERR_STATE;
  }
  for (int p : seqs_[s].pages) free_pages_.push_back(p);
  seqs_[s] = Seq();
  return BN_OK;
}

bn_status Engine::seq_truncate(int s, int len) {
  std::lock_guard<std::mutex> g(mu_);
  if (!valid_seq(seqs_, opt_.max_seqs, s)) {
    set_error("sequence %d does not exist", s);
    return BN_ERR_STATE;
  }
  Seq &q = seqs_[s];
  if (len < 0 || len > q.len) {
    set_error("cannot truncate sequence %d of length %d to %d", s, q.len, len);
    return BN_ERR_INVALID_ARGUMENT;
  }
  const size_t keep = (size_t)((len + opt_.page_size - 1) >> page_shift_);
  while (q.pages.size() > keep) {
    free_pages_.push_back(q.pages.back());
    q.pages.pop_back();
  }
  q.len = len;
  return BN_OK;
}

bn_status Engine::seq_length(int s, int *out) {
  std::lock_guard<std::mutex> g(mu_);
  if (!valid_seq(seqs_, opt_.max_seqs, s)) {
    set_error("sequence %d does not exist", s);
    return BN_ERR_STATE;
  }
  *out = seqs_[s].len;
  return BN_OK;
}

// ---- the forward pass ------------------------------------------------------------------------------

// A matmul epilogue that stores (or adds, or activates) into out[m*ld + n].
static Epi epi_to(int kind, float *out, int ld, int act = 0) {
  Epi e{};
  e.kind = kind;
  e.out = out;
  e.ld = ld;
  e.act = act;
  return e;
}

// The QKV GEMV's epilogue of layer l: RoPE'd q to q16_, k/v into the layer's pages.
Epi Engine::qkv_epi(int l) const {
  const bn_hparams &hp = hp_;
  Epi eq{};
  eq.kind = EPI_QKV;
  eq.q16 = q16_;
  eq.ldq = hp.n_embd;
  eq.n_embd = hp.n_embd;
  eq.kv_dim = hp.n_head_kv * hp.head_dim;
  eq.head_dim = hp.head_dim;
  eq.n_rot = hp.n_rot;
  eq.rope = rope_;
  eq.pos = (const int32_t *)(in_dev_ + off_pos_);
  eq.slot = (const int32_t *)(in_dev_ + off_slot_);
  eq.block_table = bt_dev_;
  eq.max_pages = max_pages_;
  eq.page_shift = page_shift_;
  eq.kc = kpool_ + (size_t)l * layer_stride_;
  eq.vc = vpool_ + (size_t)l * layer_stride_;
  return eq;
}

// Attention of layer l over its pages, into att_.
AttnParams Engine::attn_params(int l) const {
  const bn_hparams &hp = hp_;
  return AttnParams{q16_, hp.n_embd, kpool_ + (size_t)l * layer_stride_, vpool_ + (size_t)l * layer_stride_,
                    (const int32_t *)(in_dev_ + off_pos_), (const int32_t *)(in_dev_ + off_slot_), bt_dev_, max_pages_,
                    page_shift_, hp.n_head, hp.n_head_kv, hp.head_dim, hp.n_head_kv * hp.head_dim,
                    1.0 / std::sqrt((double)hp.head_dim), att_, hp.n_embd, opt_.max_ctx};
}

NormQuant Engine::norm_point(const float *x, int n, const float *w) const {
  NormQuant r{};
  r.x = x;
  r.ldx = n;
  r.n = n;
  r.w = w;
  r.eps = hp_.rms_eps;
  r.q = q8_;
  r.scale = ascale_;
  r.sum = asum_;
  r.ldq = ldw_;
  return r;
}

FfnChain Engine::ffn_chain_of(int l, const NormQuant &next) const {
  const LayerDev &L = layers_[l];
  const int E = hp_.n_embd, F = hp_.n_ff;
  FfnChain c{};
  c.o = L.o;
  c.gu = L.gateup;
  c.down = L.down;
  c.a = Acts{q8_, ascale_, asum_, ldw_};
  c.eo = epi_to(EPI_RESID, x_, E);
  c.eg = epi_to(EPI_GATEUP, ff_, F, hp_.activation);
  c.ed = epi_to(EPI_RESID, x_, E);
  c.ffn = norm_point(x_, E, L.ffn_norm);
  c.fsub = norm_point(ff_, F, L.ffn_sub_norm);
  c.next = next;
  return c;
}

// output_norm of x into the head's input: int8 (INT8 head) or f16/f32 rows (F16/F32 head).
NormQuant Engine::final_norm() const {
  NormQuant r = norm_point(x_, hp_.n_embd, output_norm_);
  r.q = nullptr;
  r.scale = nullptr;
  r.sum = nullptr;
  if (opt_.head_mode == BN_HEAD_INT8) {
    r.q = hq_;
    r.scale = hscale_;
    r.sum = hsum_;
    r.ldq = hp_.n_embd;
  } else if (head_type_ == BN_TYPE_F16) {
    r.f16_out = h16_;
  } else {
    r.f32_out = h32_;
  }
  return r;
}

// The norm after layer l's down GEMV: the next layer's attn_norm, or output_norm after the last.
NormQuant Engine::next_norm(int l) const {
  return l + 1 < hp_.n_layer ? norm_point(x_, hp_.n_embd, layers_[l + 1].attn_norm) : final_norm();
}

// The persistent step's chains (BN_PERSIST=step): every layer's LayerChain, in device memory for
// the kernel and on the host (the first is the launch's shapes). Their pointers are the engine's
// fixed buffers, so they are built once.
bn_status Engine::upload_step_chains() {
  step_host_.clear();
  for (int l = 0; l < hp_.n_layer; l++) step_host_.push_back(layer_chain_of(l, next_norm(l)));
  bn_status st = BN_OK;
  const size_t bytes = step_host_.size() * sizeof(LayerChain);
  step_dev_ = (LayerChain *)dalloc(bytes, &st);
  if (!st) st = dev_->h2d(step_dev_, step_host_.data(), bytes);
  if (!st) st = dev_->sync();  // step_host_ stays alive anyway; the copy is done before any step
  if (!st) st = dev_->ops().step_chain_check(step_chain());
  return st;
}

StepChain Engine::step_chain() const { return StepChain{step_dev_, (int)step_host_.size(), step_host_[0]}; }

LayerChain Engine::layer_chain_of(int l, const NormQuant &next) const {
  LayerChain c{};
  c.qkv = layers_[l].qkv;
  c.a = Acts{q8_, ascale_, asum_, ldw_};
  c.eq = qkv_epi(l);
  c.ap = attn_params(l);
  c.sub = norm_point(att_, hp_.n_embd, layers_[l].attn_sub_norm);
  c.f = ffn_chain_of(l, next);
  c.in = norm_point(x_, hp_.n_embd, layers_[l].attn_norm);
  c.prefetch = 1;
  c.stage_norm_w = 1;
  c.stage_weights = 1;
  if (l + 1 < hp_.n_layer) c.next_qkv = layers_[l + 1].qkv;
  c.scores = scores_;
  return c;
}

bn_status Engine::run_step(int M, int R, bool do_select) {
  const bn_hparams &hp = hp_;
  const int E = hp.n_embd, F = hp.n_ff;
  Ops &ops = dev_->ops();
  const int32_t *tokens = (const int32_t *)in_dev_;
  const Acts acts{q8_, ascale_, asum_, ldw_};
  const bool small = M <= std::min(opt_.gemv_max_m, kGemvMaxM);
  auto nq = [&](const float *x, int n, const float *w) { return norm_point(x, n, w); };
  const NormQuant final_nq = final_norm();

  bn_status st;
  EmbedParams ep{embd_, embd_type_, E, tokens, x_, E};
  if ((st = ops.embed(ep, M, nq(x_, E, layers_[0].attn_norm)))) return st;
  if (small && opt_.numerics == BN_NUMERICS_FAST) {
    if ((st = run_layers_fast(M, final_nq))) return st;
    return run_head(R, do_select);
  }
  if (M == 1 && small && ops.step_chain_on()) {  // every layer in one cooperative launch
    if ((st = ops.step_chain(step_chain()))) return st;
    return run_head(R, do_select);
  }
  for (int l = 0; l < hp.n_layer; l++) {
    const LayerDev &L = layers_[l];
    if (M == 1 && small && ops.layer_chain_on()) {  // the whole layer in one cooperative launch
      if ((st = ops.layer_chain(layer_chain_of(l, next_norm(l))))) return st;
      continue;
    }
    // q, k, v (+ RoPE, + K/V into the paged cache)
    const Epi eq = qkv_epi(l);
    st = small ? ops.gemv(L.qkv, acts, M, eq, nullptr) : ops.gemm(L.qkv, acts, M, eq);
    if (st) return st;
    // attention (+ attn_sub_norm and quantization)
    AttnParams ap = attn_params(l);
    const NormQuant nq_sub = nq(att_, E, L.attn_sub_norm);
    const bool sub_tail = small || (ops.attention_tail_batched() && M <= kAttnTailTokens);
    if ((st = ops.attention(ap, M, sub_tail ? &nq_sub : nullptr))) return st;
    if (!sub_tail && (st = ops.norm_quant(nq_sub, M))) return st;
    if (M == 1 && small && ops.ffn_chain_on()) {  // o, gate/up and down in one cooperative launch
      if ((st = ops.ffn_chain(ffn_chain_of(l, next_norm(l))))) return st;
      continue;
    }
    // o_proj + residual (+ ffn_norm and quantization)
    const Epi eo = epi_to(EPI_RESID, x_, E);
    const NormQuant nq_ffn = nq(x_, E, L.ffn_norm);
    st = small ? ops.gemv(L.o, acts, M, eo, &nq_ffn) : ops.gemm(L.o, acts, M, eo);
    if (!st && !small) st = ops.norm_quant(nq_ffn, M);
    if (st) return st;
    // gate/up + activation (+ ffn_sub_norm and quantization)
    const Epi eg = epi_to(EPI_GATEUP, ff_, F, hp.activation);
    const NormQuant nq_fsub = nq(ff_, F, L.ffn_sub_norm);
    st = small ? ops.gemv(L.gateup, acts, M, eg, &nq_fsub) : ops.gemm(L.gateup, acts, M, eg);
    if (!st && !small) st = ops.norm_quant(nq_fsub, M);
    if (st) return st;
    // down + residual (+ the next layer's attn_norm, or output_norm, and quantization)
    const Epi ed = epi_to(EPI_RESID, x_, E);
    const NormQuant nq_next = next_norm(l);
    st = small ? ops.gemv(L.down, acts, M, ed, &nq_next) : ops.gemm(L.down, acts, M, ed);
    if (!st && !small) st = ops.norm_quant(nq_next, M);
    if (st) return st;
  }
  return run_head(R, do_select);
}

// The layers with fast numerics (bn_fast.h), M <= gemv_max_m: the same kernels in the same order,
// but each norm point is carried by statistics (the producer's parts, reduced by its last block)
// and the consumer GEMV quantizes its input itself; attention is split over the positions. The
// first layer's qkv reads the embedding kernel's exact quantization, and the last down GEMV runs
// the exact output_norm tail for the head.
bn_status Engine::run_layers_fast(int M, const NormQuant &final_nq) {
  const bn_hparams &hp = hp_;
  const int E = hp.n_embd, F = hp.n_ff;
  Ops &ops = dev_->ops();
  enum { kAttnIn = 0, kSub = 1, kFfn = 2, kFsub = 3 };
  auto stats = [&](int l, int point) { return stats_ + ((size_t)l * 4 + point) * kGemvMaxM * 2; };
  auto norm = [&](const float *x, int n, const float *w, float *st) { return NormStats{x, n, n, w, hp.rms_eps, st}; };
  // BN_FAST_QUANT=tail: each producer's last block also writes the int8 rows, and the consumers
  // read them as in the exact path (instead of quantizing in every block).
  const bool tailq = fast_quant_tail_;
  auto out_stats = [&](const NormStats &ns) {
    StatsOut so{};
    so.ns = ns;
    so.part_ss = part_ss_;
    so.part_key = part_key_;
    so.part_ld = part_ld_;
    if (tailq) {
      so.q = q8_;
      so.scale = ascale_;
      so.sum = asum_;
      so.ldq = ldw_;
    }
    return so;
  };
  // A GEMV fed by norm point `in`, leaving the statistics `out` (none when out.ns.stats is null).
  auto fast_io = [&](const NormStats &in, const StatsOut &out) { return FastGemv{tailq ? NormStats{} : in, out}; };
  const Acts acts{q8_, ascale_, asum_, ldw_};  // layer 0's qkv input; the row stride of the others
  const StatsOut none{};
  bn_status st;
  for (int l = 0; l < hp.n_layer; l++) {
    const LayerDev &L = layers_[l];
    const NormStats ns_in = norm(x_, E, L.attn_norm, stats(l, kAttnIn));
    const NormStats ns_sub = norm(att_, E, L.attn_sub_norm, stats(l, kSub));
    const NormStats ns_ffn = norm(x_, E, L.ffn_norm, stats(l, kFfn));
    const NormStats ns_fsub = norm(ff_, F, L.ffn_sub_norm, stats(l, kFsub));
    // q, k, v: layer 0 reads the embedding kernel's exact int8 rows
    const FastGemv f_qkv = fast_io(ns_in, none);
    if ((st = ops.gemv(L.qkv, acts, M, qkv_epi(l), nullptr, l == 0 || tailq ? nullptr : &f_qkv))) return st;
    // split attention, with the statistics of attn_sub_norm
    const FastAttn split{fast_attn_splits(hp.n_head, M), att_part_o_, att_part_ml_, out_stats(ns_sub)};
    if ((st = ops.attention(attn_params(l), M, nullptr, &split))) return st;
    // o_proj + residual, with the statistics of ffn_norm
    const Epi eo = epi_to(EPI_RESID, x_, E);
    const FastGemv f_o = fast_io(ns_sub, out_stats(ns_ffn));
    if ((st = ops.gemv(L.o, acts, M, eo, nullptr, &f_o))) return st;
    // gate/up + activation, with the statistics of ffn_sub_norm
    const Epi eg = epi_to(EPI_GATEUP, ff_, F, hp.activation);
    const FastGemv f_gu = fast_io(ns_ffn, out_stats(ns_fsub));
    if ((st = ops.gemv(L.gateup, acts, M, eg, nullptr, &f_gu))) return st;
    // down + residual, with the statistics of the next attn_norm (or the exact output_norm tail)
    const Epi ed = epi_to(EPI_RESID, x_, E);
    const bool last = l + 1 == hp.n_layer;
    const FastGemv f_d =
        fast_io(ns_fsub, last ? none : out_stats(norm(x_, E, layers_[l + 1].attn_norm, stats(l + 1, kAttnIn))));
    if ((st = ops.gemv(L.down, acts, M, ed, last ? &final_nq : nullptr, &f_d))) return st;
  }
  return BN_OK;
}

// The LM head over the R requested rows, and the GPU's token selection.
bn_status Engine::run_head(int R, bool do_select) {
  const bn_hparams &hp = hp_;
  const int E = hp.n_embd;
  Ops &ops = dev_->ops();
  const int32_t *rows = (const int32_t *)(in_dev_ + off_rows_);
  const SampleRow *samples = (const SampleRow *)(in_dev_ + off_samp_);
  bn_status st;
  if (R > 0) {
    HeadParams h{};
    h.mode = opt_.head_mode;
    h.type = head_type_;
    h.w = head_;
    h.w8 = head8_;
    h.w8_scale = head8_scale_;
    h.n_vocab = hp.n_vocab;
    h.k = E;
    h.h16 = h16_;
    h.h32 = h32_;
    h.hq = hq_;
    h.hscale = hscale_;
    h.ldh = E;
    h.rows = rows;
    h.logits = logits_;
    if ((st = ops.head(h, R, R > kGemvMaxM))) return st;
  }
  if (do_select && R > 0) {
    if ((st = dev_->memset0(sampled_ + Rmax_, 4))) return st;
    SelectParams sp{logits_, hp.n_vocab, samples, sampled_, sampled_ + Rmax_};
    if ((st = ops.select(sp, R))) return st;
  }
  return BN_OK;
}

static bn_status to_sample_row(const bn_sampling &s, SampleRow *r) {
  memset(r, 0, sizeof(*r));
  if (!(s.temperature == s.temperature) || std::isinf(s.temperature)) {
    set_error("temperature must be finite");
    return BN_ERR_INVALID_ARGUMENT;
  }
  if (!(s.repetition_penalty > 0) || std::isinf(s.repetition_penalty)) {
    set_error("repetition_penalty must be finite and > 0");
    return BN_ERR_INVALID_ARGUMENT;
  }
  if (s.n_history < 0 || s.n_history > 64 || (s.n_history > 0 && !s.history)) {
    set_error("n_history must be in 0..64 with a history array");
    return BN_ERR_INVALID_ARGUMENT;
  }
  if (s.temperature > 0) {
    if (s.top_k < 1 || s.top_k > kMaxTopK) {
      set_error("GPU sampling needs top_k in 1..%d (got %d); sample on the host from the logits instead",
                kMaxTopK, s.top_k);
      return BN_ERR_UNSUPPORTED;
    }
    if (!(s.top_p >= 0) || !(s.u >= 0 && s.u < 1)) {
      set_error("top_p must be >= 0 and u in [0, 1)");
      return BN_ERR_INVALID_ARGUMENT;
    }
  }
  r->temperature = s.temperature;
  r->top_k = s.top_k;
  r->top_p = s.top_p;
  r->penalty = s.repetition_penalty;
  r->u = s.u;
  r->n_history = s.n_history;
  for (int i = 0; i < s.n_history; i++) r->history[i] = s.history[i];
  return BN_OK;
}

bn_status Engine::forward(const bn_batch &b, const bn_sampling *sampling, int32_t *sampled_out, float *logits_out) {
  std::lock_guard<std::mutex> g(mu_);
  return forward_locked(b, sampling, sampled_out, logits_out);
}

bn_status Engine::forward_locked(const bn_batch &b, const bn_sampling *sampling, int32_t *sampled_out,
                                 float *logits_out) {
  if (poisoned_) {
    set_error("the engine hit a device error earlier and must be recreated");
    return BN_ERR_STATE;
  }
  const int M = b.n_tokens;
  if (M < 1 || M > Mmax_ || !b.seq || !b.token) {
    set_error("n_tokens %d must be in 1..%d with seq and token arrays", M, Mmax_);
    return BN_ERR_INVALID_ARGUMENT;
  }
  // Positions, rows and validation before anything changes.
  std::vector<int> extra(opt_.max_seqs, 0);
  int32_t *tok = (int32_t *)in_host_;
  int32_t *pos = (int32_t *)(in_host_ + off_pos_);
  int32_t *slot = (int32_t *)(in_host_ + off_slot_);
  int32_t *rows = (int32_t *)(in_host_ + off_rows_);
  SampleRow *samp = (SampleRow *)(in_host_ + off_samp_);
  int R = 0;
  bool decode_only = true;
  for (int i = 0; i < M; i++) {
    const int s = b.seq[i];
    if (!valid_seq(seqs_, opt_.max_seqs, s)) {
      set_error("token %d: sequence %d does not exist", i, s);
      return BN_ERR_STATE;
    }
    if (b.token[i] < 0 || b.token[i] >= hp_.n_vocab) {
      set_error("token %d: id %d is outside the vocabulary (0..%d)", i, b.token[i], hp_.n_vocab - 1);
      return BN_ERR_INVALID_ARGUMENT;
    }
    const int p = seqs_[s].len + extra[s];
    if (p >= opt_.max_ctx) {
      set_error("sequence %d is full: position %d, context %d", s, p, opt_.max_ctx);
      return BN_ERR_CAPACITY;
    }
    if (extra[s] > 0) decode_only = false;
    extra[s]++;
    const bool want = !b.want_logits || b.want_logits[i];
    if (!want) decode_only = false;
    if (want) {
      if (R >= Rmax_) {
        set_error("more than max_logit_rows (%d) logits rows requested", Rmax_);
        return BN_ERR_INVALID_ARGUMENT;
      }
      rows[R] = i;
      if (sampling) {
        bn_status st = to_sample_row(sampling[R], &samp[R]);
        if (st) return st;
      } else {
        memset(&samp[R], 0, sizeof(SampleRow));
        samp[R].penalty = 1.f;
      }
      R++;
    }
    tok[i] = b.token[i];
    pos[i] = p;
    slot[i] = s;
  }
  // Pages for the new positions (all or nothing).
  std::vector<int> grown;
  for (int s = 0; s < opt_.max_seqs; s++) {
    if (!extra[s]) continue;
    Seq &q = seqs_[s];
    const size_t need = (size_t)((q.len + extra[s] + opt_.page_size - 1) >> page_shift_);
    if (need > q.pages.size()) {
      if (need - q.pages.size() > free_pages_.size()) {
        for (int t : grown) {
          Seq &r = seqs_[t];
          const size_t keep = (size_t)((r.len + opt_.page_size - 1) >> page_shift_);
          while (r.pages.size() > keep) {
            free_pages_.push_back(r.pages.back());
            r.pages.pop_back();
          }
        }
        set_error("the KV cache is full (%d pages of %d positions)", n_pages_, opt_.page_size);
        return BN_ERR_CAPACITY;
      }
      while (q.pages.size() < need) {
        const int pg = free_pages_.back();
        free_pages_.pop_back();
        bt_host_[(size_t)s * max_pages_ + q.pages.size()] = pg;
        q.pages.push_back(pg);
      }
      grown.push_back(s);
    }
  }
  bn_status st = BN_OK;
  for (int s : grown) {
    st = dev_->h2d(bt_dev_ + (size_t)s * max_pages_, &bt_host_[(size_t)s * max_pages_], (size_t)max_pages_ * 4);
    if (st) return fail(st);
  }
  // A decode step of distinct sequences replays the CUDA graph of its batch-size bucket.
  int bucket = 0;
  while ((1 << bucket) < M) bucket++;
  const int Mb = 1 << bucket;
  const bool graph = decode_only && opt_.use_graphs && dev_->has_graphs() && bucket <= kMaxGraphBucketLog2 &&
                     Mb <= Rmax_ && Mb <= Mmax_;
  if (graph) {
    for (int i = M; i < Mb; i++) {  // padding rows: token 0 at position 0 of the dummy slot
      tok[i] = 0;
      pos[i] = 0;
      slot[i] = opt_.max_seqs;
      rows[i] = i;
      memset(&samp[i], 0, sizeof(SampleRow));
      samp[i].penalty = 1.f;
    }
    int &gid = graph_of_bucket_[bucket];
    if (gid < 0) {
      if ((st = dev_->begin_capture())) return fail(st);
      st = dev_->h2d(in_dev_, in_host_, in_bytes_);
      if (!st) st = run_step(Mb, Mb, true);
      if (!st) st = dev_->d2h(out_host_, sampled_, (size_t)(Rmax_ + 1) * 4);
      int id = -1;
      const bn_status st2 = dev_->end_capture(&id);
      if (st || st2) return fail(st ? st : st2);
      gid = id;
    }
    if ((st = dev_->launch_graph(gid))) return fail(st);
  } else {
    st = dev_->h2d(in_dev_, in_host_, in_bytes_);
    const bool do_select = sampled_out != nullptr;
    if (!st) st = run_step(M, R, do_select);
    if (!st && do_select) st = dev_->d2h(out_host_, sampled_, (size_t)(Rmax_ + 1) * 4);
  }
  if (!st) st = dev_->sync();
  if (st) return fail(st);
  last_rows_ = R;
  for (int s = 0; s < opt_.max_seqs; s++) seqs_[s].len += extra[s];
  if (logits_out && R > 0) {
    st = dev_->d2h(logits_out, logits_, (size_t)R * hp_.n_vocab * 4);
    if (!st) st = dev_->sync();
    if (st) return fail(st);
  }
  if (sampled_out) {
    if (out_host_[Rmax_]) {
      set_error("the logits contain NaN");
      return BN_ERR_NUMERIC;
    }
    memcpy(sampled_out, out_host_, (size_t)R * 4);
  }
  return BN_OK;
}

bn_status Engine::prefill(int s, const int32_t *tokens, int n, bool all, float *logits_out) {
  std::lock_guard<std::mutex> g(mu_);
  if (!valid_seq(seqs_, opt_.max_seqs, s)) {
    set_error("sequence %d does not exist", s);
    return BN_ERR_STATE;
  }
  if (n < 1 || !tokens) {
    set_error("prefill needs at least one token");
    return BN_ERR_INVALID_ARGUMENT;
  }
  const int start = seqs_[s].len;
  const int chunk = all ? std::min(Mmax_, Rmax_) : Mmax_;
  std::vector<int32_t> seqv((size_t)chunk, s);
  std::vector<uint8_t> want((size_t)chunk, 0);
  for (int off = 0; off < n; off += chunk) {
    const int c = std::min(chunk, n - off);
    const bool last = off + c == n;
    for (int i = 0; i < c; i++) want[i] = all ? 1 : (last && i == c - 1);
    bn_batch b{c, seqv.data(), tokens + off, want.data()};
    float *lo = nullptr;
    if (logits_out) lo = all ? logits_out + (size_t)off * hp_.n_vocab : (last ? logits_out : nullptr);
    const bool any = all || last;
    bn_status st = forward_locked(b, nullptr, nullptr, any ? lo : nullptr);
    if (st) {
      // Roll the sequence back to where the prefill started.
      if (!poisoned_) {
        Seq &q = seqs_[s];
        const size_t keep = (size_t)((start + opt_.page_size - 1) >> page_shift_);
        while (q.pages.size() > keep) {
          free_pages_.push_back(q.pages.back());
          q.pages.pop_back();
        }
        q.len = start;
      }
      return st;
    }
  }
  return BN_OK;
}

bn_status Engine::decode(int n, const int32_t *seqs, const int32_t *tokens, const bn_sampling *sampling,
                         int32_t *next_out, float *logits_out) {
  std::lock_guard<std::mutex> g(mu_);
  if (n < 1 || !seqs || !tokens) {
    set_error("decode needs at least one sequence");
    return BN_ERR_INVALID_ARGUMENT;
  }
  for (int i = 0; i < n; i++)
    for (int j = 0; j < i; j++)
      if (seqs[i] == seqs[j]) {
        set_error("decode: sequence %d appears twice", seqs[i]);
        return BN_ERR_INVALID_ARGUMENT;
      }
  bn_batch b{n, seqs, tokens, nullptr};
  return forward_locked(b, sampling, next_out, logits_out);
}

bn_status Engine::logits_row(int row, float *out) {
  std::lock_guard<std::mutex> g(mu_);
  if (row < 0 || row >= last_rows_) {
    set_error("logits row %d does not exist (the last forward produced %d)", row, last_rows_);
    return BN_ERR_INVALID_ARGUMENT;
  }
  bn_status st = dev_->d2h(out, logits_ + (size_t)row * hp_.n_vocab, (size_t)hp_.n_vocab * 4);
  if (!st) st = dev_->sync();
  return st ? fail(st) : BN_OK;
}

}  // namespace bn
