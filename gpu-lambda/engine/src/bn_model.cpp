// Host-side model loading: GGUF v3 parsing, hyper-parameters, tensor validation, device images.
#include "bn_model.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>

#include "bn_kernels.h"

namespace bn {

// ---------------------------------------------------------------------------------------------
// GGUF (docs/bitnet-formats.md §1)
// ---------------------------------------------------------------------------------------------

namespace {

struct Reader {
  const uint8_t *p;
  size_t n, off = 0;
  bool bad = false;
  bool need(size_t k) {
    if (bad || off + k > n || off + k < off) {
      bad = true;
      return false;
    }
    return true;
  }
  template <typename T>
  T get() {
    T v{};
    if (!need(sizeof(T))) return v;
    memcpy(&v, p + off, sizeof(T));
    off += sizeof(T);
    return v;
  }
  std::string str() {
    const uint64_t len = get<uint64_t>();
    if (len > (1u << 30) || !need((size_t)len)) {
      bad = true;
      return {};
    }
    std::string s((const char *)p + off, (size_t)len);
    off += (size_t)len;
    return s;
  }
};

const size_t kScalarSize[13] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

bool read_scalar(Reader &r, uint32_t type, double *num, std::string *s) {
  switch (type) {
    case 0: *num = r.get<uint8_t>(); return true;
    case 1: *num = r.get<int8_t>(); return true;
    case 2: *num = r.get<uint16_t>(); return true;
    case 3: *num = r.get<int16_t>(); return true;
    case 4: *num = r.get<uint32_t>(); return true;
    case 5: *num = r.get<int32_t>(); return true;
    case 6: *num = r.get<float>(); return true;
    case 7: *num = r.get<uint8_t>(); return true;
    case 8: *s = r.str(); return true;
    case 10: *num = (double)r.get<uint64_t>(); return true;
    case 11: *num = (double)r.get<int64_t>(); return true;
    case 12: *num = r.get<double>(); return true;
    default: return false;
  }
}

// Element/byte size of ggml types the engine may see in a file (for tensor extents).
bool tensor_bytes(int type, const int64_t *ne, int nd, uint64_t *bytes) {
  uint64_t n = 1;
  for (int i = 0; i < nd; i++) n *= (uint64_t)ne[i];
  switch (type) {
    case BN_TYPE_F32: *bytes = n * 4; return true;
    case BN_TYPE_F16: case 30 /*BF16*/: *bytes = n * 2; return true;
    case BN_TYPE_I2_S: *bytes = n / 4 + 32; return true;
    case 8 /*Q8_0*/: *bytes = n / 32 * 34; return true;
    case 14 /*Q6_K*/: *bytes = n / 256 * 210; return true;
    case 34 /*TQ1_0*/: *bytes = n / 256 * 54; return true;
    case 35 /*TQ2_0*/: *bytes = n / 256 * 66; return true;
    default: return false;
  }
}

}  // namespace

GgufFile::~GgufFile() {
  if (map) munmap(map, size);
}

bn_status parse_gguf_bytes(const uint8_t *data, size_t size, GgufFile *out) {
  Reader r{data, size};
  if (r.get<uint32_t>() != 0x46554747u) {
    set_error("not a GGUF file (bad magic)");
    return BN_ERR_FORMAT;
  }
  const uint32_t version = r.get<uint32_t>();
  if (version != 3 && version != 2) {
    set_error("GGUF version %u is not supported (2 or 3)", version);
    return BN_ERR_FORMAT;
  }
  const uint64_t n_tensors = r.get<uint64_t>();
  const uint64_t n_kv = r.get<uint64_t>();
  if (n_tensors > 1000000 || n_kv > 1000000) {
    set_error("GGUF header counts are implausible (%llu tensors, %llu keys)", (unsigned long long)n_tensors,
              (unsigned long long)n_kv);
    return BN_ERR_FORMAT;
  }
  uint32_t alignment = 32;
  for (uint64_t i = 0; i < n_kv && !r.bad; i++) {
    const std::string key = r.str();
    const uint32_t type = r.get<uint32_t>();
    if (type == 9) {  // array: skip (we need no array values)
      const uint32_t at = r.get<uint32_t>();
      const uint64_t count = r.get<uint64_t>();
      if (at == 8) {
        for (uint64_t j = 0; j < count && !r.bad; j++) {
          const uint64_t len = r.get<uint64_t>();
          if (!r.need((size_t)len)) break;
          r.off += (size_t)len;
        }
      } else if (at < 13 && kScalarSize[at] > 0) {
        const uint64_t bytes = count * kScalarSize[at];
        if (count > (1ull << 40) || !r.need((size_t)bytes)) break;
        r.off += (size_t)bytes;
      } else {
        set_error("GGUF key %s: unsupported array element type %u", key.c_str(), at);
        return BN_ERR_FORMAT;
      }
      continue;
    }
    double num = 0;
    std::string s;
    if (!read_scalar(r, type, &num, &s)) {
      set_error("GGUF key %s: unknown value type %u", key.c_str(), type);
      return BN_ERR_FORMAT;
    }
    if (type == 8) out->str[key] = s;
    else out->num[key] = num;
    if (key == "general.alignment") alignment = (uint32_t)num;
  }
  if (alignment == 0 || (alignment & (alignment - 1))) {
    set_error("GGUF general.alignment %u is not a power of two", alignment);
    return BN_ERR_FORMAT;
  }
  std::vector<uint64_t> offs;
  for (uint64_t i = 0; i < n_tensors && !r.bad; i++) {
    bn_tensor t{};
    out->names.push_back(r.str());
    const uint32_t nd = r.get<uint32_t>();
    if (nd < 1 || nd > 4) {
      set_error("GGUF tensor %s has %u dimensions", out->names.back().c_str(), nd);
      return BN_ERR_FORMAT;
    }
    t.n_dims = (int32_t)nd;
    for (int d = 0; d < 4; d++) t.ne[d] = 1;
    for (uint32_t d = 0; d < nd; d++) t.ne[d] = (int64_t)r.get<uint64_t>();
    t.type = (int32_t)r.get<uint32_t>();
    offs.push_back(r.get<uint64_t>());
    out->tensors.push_back(t);
  }
  if (r.bad) {
    set_error("GGUF header is truncated or malformed");
    return BN_ERR_FORMAT;
  }
  const size_t data_start = (r.off + alignment - 1) / alignment * alignment;
  for (size_t i = 0; i < out->tensors.size(); i++) {
    bn_tensor &t = out->tensors[i];
    t.name = out->names[i].c_str();
    uint64_t bytes = 0;
    if (!tensor_bytes(t.type, t.ne, t.n_dims, &bytes)) bytes = 0;  // unknown type: checked later
    const uint64_t start = data_start + offs[i];
    if (start > size || bytes > size - start) {
      set_error("GGUF tensor %s lies outside the file", t.name);
      return BN_ERR_FORMAT;
    }
    t.data = data + start;
    t.nbytes = bytes;
  }
  auto it = out->str.find("general.architecture");
  if (it == out->str.end()) {
    set_error("GGUF general.architecture is missing");
    return BN_ERR_FORMAT;
  }
  out->arch = it->second;
  return BN_OK;
}

bn_status parse_gguf(const char *path, GgufFile *out) {
  const int fd = open(path, O_RDONLY);
  if (fd < 0) {
    set_error("cannot open %s: %s", path, strerror(errno));
    return BN_ERR_IO;
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    set_error("cannot stat %s: %s", path, strerror(errno));
    close(fd);
    return BN_ERR_IO;
  }
  void *m = mmap(nullptr, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (m == MAP_FAILED) {
    set_error("cannot map %s: %s", path, strerror(errno));
    return BN_ERR_IO;
  }
  out->map = m;
  out->size = (size_t)st.st_size;
  return parse_gguf_bytes((const uint8_t *)m, out->size, out);
}

bn_status hparams_from_gguf(const GgufFile &f, bn_hparams *hp) {
  const std::string &a = f.arch;
  const bool b158 = a == "bitnet-b1.58" || a == "bitnet-25" || a == "bitnet-1.58";
  if (!b158 && a != "bitnet") {
    set_error("architecture \"%s\" is not supported (bitnet-b1.58, bitnet-25, bitnet-1.58, bitnet)", a.c_str());
    return BN_ERR_UNSUPPORTED;
  }
  auto num = [&](const char *k, double dflt, bool required, double *v) -> bool {
    auto it = f.num.find(a + "." + k);
    if (it == f.num.end()) {
      if (required) {
        set_error("required metadata %s.%s is missing", a.c_str(), k);
        return false;
      }
      *v = dflt;
      return true;
    }
    *v = it->second;
    return true;
  };
  double e, h, hk, rot, voc, base, eps, ctx, layers, ff;
  if (!num("embedding_length", 0, true, &e) || !num("attention.head_count", 0, true, &h) ||
      !num("block_count", 0, true, &layers) || !num("feed_forward_length", 0, true, &ff))
    return BN_ERR_FORMAT;
  num("attention.head_count_kv", h, false, &hk);
  num("rope.freq_base", 10000, false, &base);
  num("attention.layer_norm_rms_epsilon", 1e-5, false, &eps);
  num("context_length", 2048, false, &ctx);
  double embd_vocab = 0;
  for (const bn_tensor &t : f.tensors)
    if (strcmp(t.name, "token_embd.weight") == 0) embd_vocab = (double)t.ne[1];
  num("vocab_size", embd_vocab, false, &voc);
  if (h <= 0 || e <= 0 || fmod(e, h) != 0) {
    set_error("embedding_length %g is not a multiple of head_count %g", e, h);
    return BN_ERR_FORMAT;
  }
  num("rope.dimension_count", e / h, false, &rot);
  int act = BN_ACT_RELU2;
  if (!b158) {
    auto it = f.str.find("bitnet.hidden_activation");
    const std::string s = it == f.str.end() ? "silu" : it->second;
    if (s != "silu" && s != "relu2") {
      set_error("bitnet.hidden_activation must be silu or relu2, got %s", s.c_str());
      return BN_ERR_FORMAT;
    }
    act = s == "relu2" ? BN_ACT_RELU2 : BN_ACT_SILU;
  }
  hp->n_vocab = (int32_t)voc;
  hp->n_ctx = (int32_t)ctx;
  hp->n_embd = (int32_t)e;
  hp->n_layer = (int32_t)layers;
  hp->n_ff = (int32_t)ff;
  hp->n_head = (int32_t)h;
  hp->n_head_kv = (int32_t)hk;
  hp->head_dim = (int32_t)(e / h);
  hp->n_rot = (int32_t)rot;
  hp->rope_freq_base = (float)base;
  hp->rms_eps = (float)eps;
  hp->activation = act;
  return BN_OK;
}

// ---------------------------------------------------------------------------------------------
// Tensor table
// ---------------------------------------------------------------------------------------------

float i2s_scale(const TensorRef &t) {
  float s;
  memcpy(&s, t.data + (size_t)(t.ne[0] * t.ne[1] / 4), 4);
  return s;
}

static const char *type_name(int t) {
  switch (t) {
    case 0: return "F32";
    case 1: return "F16";
    case 8: return "Q8_0";
    case 14: return "Q6_K";
    case 30: return "BF16";
    case 34: return "TQ1_0";
    case 35: return "TQ2_0";
    case 36: return "I2_S";
    default: return "other";
  }
}

bn_status build_table(const bn_hparams &hp, const bn_tensor *tensors, int n, ModelTable *out) {
  out->hp = hp;
  const int E = hp.n_embd, F = hp.n_ff, V = hp.n_vocab;
  if (E <= 0 || F <= 0 || V <= 0 || hp.n_layer <= 0 || hp.n_head <= 0 || hp.n_head_kv <= 0 || hp.n_ctx <= 0) {
    set_error("hyper-parameters must be positive");
    return BN_ERR_INVALID_ARGUMENT;
  }
  if (E % hp.n_head || hp.n_head % hp.n_head_kv || hp.head_dim != E / hp.n_head) {
    set_error("n_embd %d, n_head %d, n_head_kv %d, head_dim %d are inconsistent", E, hp.n_head, hp.n_head_kv,
              hp.head_dim);
    return BN_ERR_INVALID_ARGUMENT;
  }
  if (hp.n_rot <= 0 || hp.n_rot > hp.head_dim || hp.n_rot % 2 || hp.head_dim % 2) {
    set_error("n_rot %d must be even and <= head_dim %d (even)", hp.n_rot, hp.head_dim);
    return BN_ERR_INVALID_ARGUMENT;
  }
  if (hp.head_dim > 256 || hp.head_dim % 8) {
    set_error("head_dim %d is not supported by the attention kernel (it needs <= 256, a multiple of 8)", hp.head_dim);
    return BN_ERR_UNSUPPORTED;
  }
  if (E % 128 || F % 128) {
    set_error("n_embd %d and n_ff %d must be multiples of 128 (I2_S blocks)", E, F);
    return BN_ERR_UNSUPPORTED;
  }
  if (!(hp.rms_eps > 0) || !(hp.rope_freq_base > 0)) {
    set_error("rms_eps and rope_freq_base must be > 0");
    return BN_ERR_INVALID_ARGUMENT;
  }
  if (hp.activation != BN_ACT_RELU2 && hp.activation != BN_ACT_SILU) {
    set_error("activation %d is not BN_ACT_RELU2 or BN_ACT_SILU", hp.activation);
    return BN_ERR_INVALID_ARGUMENT;
  }
  for (int i = 0; i < n; i++) {
    const bn_tensor &s = tensors[i];
    if (!s.name || !s.data || s.n_dims < 1 || s.n_dims > 4) {
      set_error("tensor table entry %d is malformed", i);
      return BN_ERR_INVALID_ARGUMENT;
    }
    TensorRef r;
    r.name = s.name;
    r.type = s.type;
    r.nd = s.n_dims;
    for (int d = 0; d < 4; d++) r.ne[d] = d < s.n_dims ? s.ne[d] : 1;
    r.data = (const uint8_t *)s.data;
    r.nbytes = s.nbytes;
    out->t[r.name] = r;
  }
  auto shape_is = [](const TensorRef &t, int64_t a, int64_t b) {
    return t.ne[0] == a && t.ne[1] == b && t.ne[2] == 1 && t.ne[3] == 1;
  };
  auto need = [&](const std::string &name, const TensorRef **ref) -> bn_status {
    auto it = out->t.find(name);
    if (it == out->t.end()) {
      set_error("tensor %s is missing", name.c_str());
      return BN_ERR_FORMAT;
    }
    *ref = &it->second;
    return BN_OK;
  };
  auto floatvec = [&](const std::string &name, int64_t len) -> bn_status {
    const TensorRef *t;
    bn_status st = need(name, &t);
    if (st) return st;
    if (t->type != BN_TYPE_F32) {
      set_error("tensor %s has type %s; the CUDA engine takes F32 norm vectors", name.c_str(), type_name(t->type));
      return BN_ERR_UNSUPPORTED;
    }
    if (!shape_is(*t, len, 1) || t->nbytes < (uint64_t)len * 4) {
      set_error("tensor %s has shape [%lld, %lld], expected [%lld]", name.c_str(), (long long)t->ne[0],
                (long long)t->ne[1], (long long)len);
      return BN_ERR_FORMAT;
    }
    return BN_OK;
  };
  auto embd_like = [&](const TensorRef *t) -> bn_status {
    if (t->type != BN_TYPE_F16 && t->type != BN_TYPE_F32) {
      set_error("tensor %s has type %s; the CUDA engine takes F16 or F32 embeddings/heads", t->name.c_str(),
                type_name(t->type));
      return BN_ERR_UNSUPPORTED;
    }
    if (!shape_is(*t, E, V) || t->nbytes < (uint64_t)E * V * (t->type == BN_TYPE_F16 ? 2 : 4)) {
      set_error("tensor %s has shape [%lld, %lld], expected [%d, %d]", t->name.c_str(), (long long)t->ne[0],
                (long long)t->ne[1], E, V);
      return BN_ERR_FORMAT;
    }
    return BN_OK;
  };
  bn_status st = need("token_embd.weight", &out->embd);
  if (st || (st = embd_like(out->embd))) return st;
  auto ho = out->t.find("output.weight");
  out->head = ho == out->t.end() ? out->embd : &ho->second;
  if ((st = embd_like(out->head))) return st;
  if ((st = floatvec("output_norm.weight", E))) return st;
  out->output_norm = &out->t["output_norm.weight"];
  const int kv = hp.n_head_kv * hp.head_dim;
  for (int l = 0; l < hp.n_layer; l++) {
    const std::string b = "blk." + std::to_string(l) + ".";
    if ((st = floatvec(b + "attn_norm.weight", E)) || (st = floatvec(b + "attn_sub_norm.weight", E)) ||
        (st = floatvec(b + "ffn_norm.weight", E)) || (st = floatvec(b + "ffn_sub_norm.weight", F)))
      return st;
    const struct {
      const char *p;
      int k, n;
    } projs[7] = {{"attn_q", E, E},   {"attn_k", E, kv},  {"attn_v", E, kv},  {"attn_output", E, E},
                  {"ffn_gate", E, F}, {"ffn_up", E, F}, {"ffn_down", F, E}};
    for (const auto &p : projs) {
      const TensorRef *t;
      const std::string name = b + p.p + ".weight";
      if ((st = need(name, &t))) return st;
      if (t->type != BN_TYPE_I2_S) {
        set_error("tensor %s has type %s; the CUDA engine runs I2_S projections only", name.c_str(),
                  type_name(t->type));
        return BN_ERR_UNSUPPORTED;
      }
      if (!shape_is(*t, p.k, p.n) || t->nbytes < (uint64_t)p.k * p.n / 4 + 4) {
        set_error("tensor %s has shape [%lld, %lld] (%llu bytes), expected [%d, %d]", name.c_str(),
                  (long long)t->ne[0], (long long)t->ne[1], (unsigned long long)t->nbytes, p.k, p.n);
        return BN_ERR_FORMAT;
      }
      const float s = i2s_scale(*t);
      if (!std::isfinite(s)) {
        set_error("I2_S scale of %s is not finite", name.c_str());
        return BN_ERR_FORMAT;
      }
      auto sc = out->t.find(b + p.p + ".scale");
      if (sc != out->t.end() && (sc->second.type != BN_TYPE_F32 || sc->second.nbytes < 4)) {
        set_error("tensor %s.scale must be F32 [1]", (b + p.p).c_str());
        return BN_ERR_FORMAT;
      }
    }
  }
  return BN_OK;
}

static float out_scale(const ModelTable &m, const std::string &name) {
  auto it = m.t.find(name);
  if (it == m.t.end()) return 1.f;
  float s;
  memcpy(&s, it->second.data, 4);
  return s;
}

bn_status build_layer(const ModelTable &m, int l, LayerImage *out) {
  const bn_hparams &hp = m.hp;
  const int E = hp.n_embd, F = hp.n_ff, hd = hp.head_dim, kv = hp.n_head_kv * hd, half = hp.n_rot / 2;
  const std::string b = "blk." + std::to_string(l) + ".";
  auto T = [&](const char *p) -> const TensorRef & { return m.t.at(b + p + ".weight"); };
  auto os = [&](const char *p) { return out_scale(m, b + p + ".scale"); };
  const TensorRef &q = T("attn_q"), &k = T("attn_k"), &v = T("attn_v"), &o = T("attn_output");
  const TensorRef &g = T("ffn_gate"), &u = T("ffn_up"), &d = T("ffn_down");
  // QKV with RoPE partners adjacent inside each q and k head.
  const size_t rbE = (size_t)E / 4;  // bytes per row for K = n_embd
  out->qkv.resize((size_t)(E + 2 * kv) * rbE);
  auto perm = [&](int j) { return j < hp.n_rot ? j / 2 + (j % 2) * half : j; };
  for (int r = 0; r < E; r++) {
    const int src = (r / hd) * hd + perm(r % hd);
    memcpy(&out->qkv[(size_t)r * rbE], q.data + (size_t)src * rbE, rbE);
  }
  for (int r = 0; r < kv; r++) {
    const int src = (r / hd) * hd + perm(r % hd);
    memcpy(&out->qkv[(size_t)(E + r) * rbE], k.data + (size_t)src * rbE, rbE);
  }
  memcpy(&out->qkv[(size_t)(E + kv) * rbE], v.data, (size_t)kv * rbE);
  ScaleMap sm{};
  sm.mode = 0;
  sm.b0 = E;
  sm.b1 = E + kv;
  sm.ws[0] = i2s_scale(q);
  sm.ws[1] = i2s_scale(k);
  sm.ws[2] = i2s_scale(v);
  sm.os[0] = os("attn_q");
  sm.os[1] = os("attn_k");
  sm.os[2] = os("attn_v");
  sm.has_os = sm.os[0] != 1.f || sm.os[1] != 1.f || sm.os[2] != 1.f;
  out->sm_qkv = sm;
  out->o.assign(o.data, o.data + (size_t)E * rbE);
  ScaleMap so{};
  so.mode = 0;
  so.b0 = so.b1 = 1 << 30;
  so.ws[0] = so.ws[1] = so.ws[2] = i2s_scale(o);
  so.os[0] = so.os[1] = so.os[2] = os("attn_output");
  so.has_os = so.os[0] != 1.f;
  out->sm_o = so;
  // gate/up interleaved.
  out->gateup.resize((size_t)2 * F * rbE);
  for (int i = 0; i < F; i++) {
    memcpy(&out->gateup[(size_t)(2 * i) * rbE], g.data + (size_t)i * rbE, rbE);
    memcpy(&out->gateup[(size_t)(2 * i + 1) * rbE], u.data + (size_t)i * rbE, rbE);
  }
  ScaleMap sg{};
  sg.mode = 1;
  sg.ws[0] = i2s_scale(g);
  sg.ws[1] = i2s_scale(u);
  sg.ws[2] = 1.f;
  sg.os[0] = os("ffn_gate");
  sg.os[1] = os("ffn_up");
  sg.os[2] = 1.f;
  sg.has_os = sg.os[0] != 1.f || sg.os[1] != 1.f;
  out->sm_gateup = sg;
  out->down.assign(d.data, d.data + (size_t)E * F / 4);
  ScaleMap sd{};
  sd.mode = 0;
  sd.b0 = sd.b1 = 1 << 30;
  sd.ws[0] = sd.ws[1] = sd.ws[2] = i2s_scale(d);
  sd.os[0] = sd.os[1] = sd.os[2] = os("ffn_down");
  sd.has_os = sd.os[0] != 1.f;
  out->sm_down = sd;
  auto vec = [&](const char *p) { return (const float *)m.t.at(b + p + ".weight").data; };
  out->attn_norm = vec("attn_norm");
  out->attn_sub_norm = vec("attn_sub_norm");
  out->ffn_norm = vec("ffn_norm");
  out->ffn_sub_norm = vec("ffn_sub_norm");
  return BN_OK;
}

std::vector<float> rope_table(const bn_hparams &hp, int max_ctx) {
  const int half = hp.n_rot / 2;
  std::vector<float> t((size_t)max_ctx * half * 2);
  const float theta_scale = (float)std::pow((double)hp.rope_freq_base, -2.0 / (double)hp.n_rot);
  for (int pos = 0; pos < max_ctx; pos++) {
    float theta = (float)pos;
    for (int i = 0; i < half; i++) {
      t[((size_t)pos * half + i) * 2] = (float)std::cos((double)theta);
      t[((size_t)pos * half + i) * 2 + 1] = (float)std::sin((double)theta);
      theta = fmul(theta, theta_scale);
    }
  }
  return t;
}

void quantize_head_rows(const TensorRef &head, int n_vocab, int k, int8_t *q, float *scale) {
  std::vector<float> row((size_t)k);
  for (int v = 0; v < n_vocab; v++) {
    float amax = 0.f;
    for (int i = 0; i < k; i++) {
      row[i] = head.type == BN_TYPE_F16 ? f16_to_f32(((const uint16_t *)head.data)[(size_t)v * k + i])
                                         : ((const float *)head.data)[(size_t)v * k + i];
      const float a = std::fabs(row[i]);
      if (a > amax) amax = a;
    }
    const float s = act_scale(amax);
    scale[v] = s;
    for (int i = 0; i < k; i++) q[(size_t)v * k + i] = quant_one(row[i], s);
  }
}

}  // namespace bn
