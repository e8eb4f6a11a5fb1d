// Node-API addon over the CUDA engine's C API (include/bitnet_cuda.h).
//
// The TypeScript surface is declared once, in src/kernels/cuda/addon-types.ts. Errors are thrown
// as JS Errors with `code` (the bn_status name, e.g. "BN_ERR_NO_DEVICE") and `status` (its
// number); the message carries bn_last_error(). Steps that touch the GPU (forward, prefill,
// decode) run on a libuv worker thread and return Promises; the typed arrays they read and
// write are kept alive until they settle and must not be touched by JS meanwhile. Engine
// creation is synchronous (it copies the weights to the GPU once).
#include <napi.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bitnet_cuda.h"

namespace {

Napi::Error make_error(Napi::Env env, bn_status st, const std::string &msg) {
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, bn_status_name(st)));
  e.Set("status", Napi::Number::New(env, (double)st));
  return e;
}

[[noreturn]] void throw_status(Napi::Env env, bn_status st, const char *what) {
  throw make_error(env, st, std::string(what) + ": " + bn_last_error());
}

[[noreturn]] void throw_arg(Napi::Env env, const std::string &msg) {
  throw make_error(env, BN_ERR_INVALID_ARGUMENT, msg);
}

double num(const Napi::Object &o, const char *key, double dflt) {
  if (!o.Has(key)) return dflt;
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return dflt;
  if (v.IsBoolean()) return v.As<Napi::Boolean>().Value() ? 1 : 0;
  if (!v.IsNumber()) throw_arg(o.Env(), std::string(key) + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

double need_num(const Napi::Object &o, const char *key) {
  if (!o.Has(key) || !o.Get(key).IsNumber()) throw_arg(o.Env(), std::string(key) + " is required (number)");
  return o.Get(key).As<Napi::Number>().DoubleValue();
}

bn_options parse_options(const Napi::Value &v) {
  bn_options o;
  bn_options_default(&o);
  if (v.IsUndefined() || v.IsNull()) return o;
  if (!v.IsObject()) throw_arg(v.Env(), "options must be an object");
  const Napi::Object x = v.As<Napi::Object>();
  o.device = (int32_t)num(x, "device", o.device);
  o.max_seqs = (int32_t)num(x, "maxSeqs", o.max_seqs);
  o.max_batch_tokens = (int32_t)num(x, "maxBatchTokens", o.max_batch_tokens);
  o.max_logit_rows = (int32_t)num(x, "maxLogitRows", o.max_logit_rows);
  o.max_ctx = (int32_t)num(x, "maxCtx", o.max_ctx);
  o.page_size = (int32_t)num(x, "pageSize", o.page_size);
  o.kv_bytes = (uint64_t)num(x, "kvBytes", (double)o.kv_bytes);
  o.use_graphs = (int32_t)num(x, "useGraphs", o.use_graphs);
  o.gemv_max_m = (int32_t)num(x, "gemvMaxM", o.gemv_max_m);
  o.emulate = (int32_t)num(x, "emulate", o.emulate);
  if (x.Has("headMode")) {
    const std::string h = x.Get("headMode").ToString().Utf8Value();
    if (h == "f16") o.head_mode = BN_HEAD_F16;
    else if (h == "int8") o.head_mode = BN_HEAD_INT8;
    else throw_arg(v.Env(), "headMode must be 'f16' or 'int8'");
  }
  if (x.Has("numerics")) {
    const std::string n = x.Get("numerics").ToString().Utf8Value();
    if (n == "exact") o.numerics = BN_NUMERICS_EXACT;
    else if (n == "fast") o.numerics = BN_NUMERICS_FAST;
    else throw_arg(v.Env(), "numerics must be 'exact' or 'fast'");
  }
  return o;
}

template <typename T>
T *typed_data(const Napi::Value &v, size_t min_len, const char *what, size_t *len_out = nullptr) {
  if (!v.IsTypedArray()) throw_arg(v.Env(), std::string(what) + " must be a typed array");
  Napi::TypedArray ta = v.As<Napi::TypedArray>();
  const size_t n = ta.ByteLength() / sizeof(T);
  if (ta.ByteLength() % sizeof(T) != 0 || n < min_len)
    throw_arg(v.Env(), std::string(what) + " is too short (" + std::to_string(n) + " < " + std::to_string(min_len) + ")");
  if (len_out) *len_out = n;
  return (T *)((uint8_t *)ta.ArrayBuffer().Data() + ta.ByteOffset());
}

// Sampling rows: [{temperature, topK, topP, repetitionPenalty, u, history?}], or null.
struct SamplingRows {
  std::vector<bn_sampling> rows;
  std::vector<std::vector<int32_t>> hist;
  bool present = false;
};

void parse_sampling(const Napi::Value &v, size_t n, SamplingRows *out) {
  if (v.IsUndefined() || v.IsNull()) return;
  if (!v.IsArray()) throw_arg(v.Env(), "sampling must be an array of rows or null");
  Napi::Array a = v.As<Napi::Array>();
  if (a.Length() != n) throw_arg(v.Env(), "sampling needs one row per logits row");
  out->present = true;
  out->rows.resize(n);
  out->hist.resize(n);
  for (uint32_t i = 0; i < a.Length(); i++) {
    if (!a.Get(i).IsObject()) throw_arg(v.Env(), "sampling rows must be objects");
    const Napi::Object r = a.Get(i).As<Napi::Object>();
    bn_sampling &s = out->rows[i];
    s.temperature = num(r, "temperature", 0);
    s.top_k = (int32_t)num(r, "topK", 0);
    s.top_p = num(r, "topP", 1);
    s.repetition_penalty = num(r, "repetitionPenalty", 1);
    s.u = (float)num(r, "u", 0);
    if (r.Has("history") && r.Get("history").IsArray()) {
      Napi::Array h = r.Get("history").As<Napi::Array>();
      for (uint32_t j = 0; j < h.Length() && j < 64; j++) out->hist[i].push_back((int32_t)h.Get(j).As<Napi::Number>().Int32Value());
    }
  }
  for (size_t i = 0; i < n; i++) {
    out->rows[i].n_history = (int32_t)out->hist[i].size();
    out->rows[i].history = out->hist[i].data();
  }
}

class Engine;

// A GPU step on a worker thread.
class StepWorker : public Napi::AsyncWorker {
 public:
  StepWorker(Napi::Env env, Engine *eng, Napi::Object self)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), eng_(eng) {
    keep_.push_back(Napi::Persistent(self));
  }
  void keep(const Napi::Value &v) {
    if (v.IsObject()) keep_.push_back(Napi::Persistent(v.As<Napi::Object>()));
  }
  Napi::Promise promise() { return deferred_.Promise(); }
  std::function<bn_status()> run;
  const char *what = "step";

  void Execute() override;
  void OnOK() override;
  void OnError(const Napi::Error &) override;

 private:
  Napi::Promise::Deferred deferred_;
  Engine *eng_;
  std::vector<Napi::ObjectReference> keep_;
  bn_status status_ = BN_OK;
  std::string message_;
};

class Engine : public Napi::ObjectWrap<Engine> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "CudaEngine",
                       {InstanceMethod("info", &Engine::Info), InstanceMethod("createSequence", &Engine::CreateSequence),
                        InstanceMethod("freeSequence", &Engine::FreeSequence), InstanceMethod("truncate", &Engine::Truncate),
                        InstanceMethod("sequenceLength", &Engine::SequenceLength), InstanceMethod("forward", &Engine::Forward),
                        InstanceMethod("prefill", &Engine::Prefill), InstanceMethod("decode", &Engine::Decode),
                        InstanceMethod("logits", &Engine::Logits), InstanceMethod("free", &Engine::Free)});
  }

  explicit Engine(const Napi::CallbackInfo &info) : Napi::ObjectWrap<Engine>(info) {
    if (info.Length() != 1 || !info[0].IsExternal()) throw_arg(info.Env(), "CudaEngine is created by createEngine/loadEngine");
    e_ = info[0].As<Napi::External<bn_engine>>().Data();
    bn_engine_info ei;
    if (bn_engine_info_get(e_, &ei) == BN_OK) vocab_ = ei.hparams.n_vocab;
  }
  ~Engine() override {
    if (e_ && inflight_ == 0) bn_engine_free(e_);
  }

  std::atomic<int> inflight_{0};
  bn_engine *e_ = nullptr;
  int vocab_ = 0;

  bn_engine *live(Napi::Env env) {
    if (!e_) throw make_error(env, BN_ERR_STATE, "the engine was freed");
    return e_;
  }

  Napi::Value Info(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    bn_engine_info ei;
    const bn_status st = bn_engine_info_get(live(env), &ei);
    if (st) throw_status(env, st, "info");
    Napi::Object o = Napi::Object::New(env);
    o.Set("deviceName", ei.device_name);
    o.Set("ccMajor", ei.cc_major);
    o.Set("ccMinor", ei.cc_minor);
    o.Set("weightBytes", (double)ei.weight_bytes);
    o.Set("kvBytes", (double)ei.kv_bytes);
    o.Set("kvPages", ei.kv_pages);
    o.Set("pageSize", ei.page_size);
    o.Set("maxSeqs", ei.max_seqs);
    o.Set("maxCtx", ei.max_ctx);
    o.Set("maxBatchTokens", ei.max_batch_tokens);
    o.Set("nVocab", ei.hparams.n_vocab);
    return o;
  }

  Napi::Value CreateSequence(const Napi::CallbackInfo &info) {
    int32_t s = -1;
    const bn_status st = bn_seq_create(live(info.Env()), &s);
    if (st) throw_status(info.Env(), st, "createSequence");
    return Napi::Number::New(info.Env(), s);
  }
  Napi::Value FreeSequence(const Napi::CallbackInfo &info) {
    const bn_status st = bn_seq_free(live(info.Env()), info[0].As<Napi::Number>().Int32Value());
    if (st) throw_status(info.Env(), st, "freeSequence");
    return info.Env().Undefined();
  }
  Napi::Value Truncate(const Napi::CallbackInfo &info) {
    const bn_status st =
        bn_seq_truncate(live(info.Env()), info[0].As<Napi::Number>().Int32Value(), info[1].As<Napi::Number>().Int32Value());
    if (st) throw_status(info.Env(), st, "truncate");
    return info.Env().Undefined();
  }
  Napi::Value SequenceLength(const Napi::CallbackInfo &info) {
    int32_t n = 0;
    const bn_status st = bn_seq_length(live(info.Env()), info[0].As<Napi::Number>().Int32Value(), &n);
    if (st) throw_status(info.Env(), st, "sequenceLength");
    return Napi::Number::New(info.Env(), n);
  }

  // forward(seqs: Int32Array, tokens: Int32Array, want: Uint8Array | null, logitsOut: Float32Array | null,
  //         sampling: rows | null, sampledOut: Int32Array | null): Promise<void>
  Napi::Value Forward(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    bn_engine *e = live(env);
    size_t n = 0, nt = 0;
    const int32_t *seqs = typed_data<int32_t>(info[0], 1, "seqs", &n);
    const int32_t *toks = typed_data<int32_t>(info[1], 1, "tokens", &nt);
    if (n != nt) throw_arg(env, "seqs and tokens must have the same length");
    const uint8_t *want = nullptr;
    size_t rows = n;
    if (info.Length() > 2 && !info[2].IsNull() && !info[2].IsUndefined()) {
      want = typed_data<uint8_t>(info[2], n, "wantLogits");
      rows = 0;
      for (size_t i = 0; i < n; i++) rows += want[i] != 0;
    }
    float *logits = nullptr;
    if (info.Length() > 3 && !info[3].IsNull() && !info[3].IsUndefined())
      logits = typed_data<float>(info[3], rows * (size_t)vocab_, "logitsOut");
    auto samp = std::make_shared<SamplingRows>();
    if (info.Length() > 4) parse_sampling(info[4], rows, samp.get());
    int32_t *sampled = nullptr;
    if (info.Length() > 5 && !info[5].IsNull() && !info[5].IsUndefined())
      sampled = typed_data<int32_t>(info[5], rows, "sampledOut");
    StepWorker *w = new StepWorker(env, this, Value());
    for (size_t i = 0; i < info.Length() && i < 6; i++) w->keep(info[i]);
    w->what = "forward";
    w->run = [e, n, seqs, toks, want, logits, samp, sampled]() {
      const bn_batch b{(int32_t)n, seqs, toks, want};
      return bn_forward(e, &b, samp->present ? samp->rows.data() : nullptr, sampled, logits);
    };
    return queue(w);
  }

  // prefill(seq, tokens: Int32Array, logitsAll: boolean, logitsOut: Float32Array | null): Promise<void>
  Napi::Value Prefill(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    bn_engine *e = live(env);
    const int32_t seq = info[0].As<Napi::Number>().Int32Value();
    size_t n = 0;
    const int32_t *toks = typed_data<int32_t>(info[1], 1, "tokens", &n);
    const bool all = info[2].ToBoolean().Value();
    float *logits = nullptr;
    if (info.Length() > 3 && !info[3].IsNull() && !info[3].IsUndefined())
      logits = typed_data<float>(info[3], (all ? n : 1) * (size_t)vocab_, "logitsOut");
    StepWorker *w = new StepWorker(env, this, Value());
    w->keep(info[1]);
    if (info.Length() > 3) w->keep(info[3]);
    w->what = "prefill";
    w->run = [e, seq, toks, n, all, logits]() { return bn_prefill(e, seq, toks, (int32_t)n, all ? 1 : 0, logits); };
    return queue(w);
  }

  // decode(seqs: Int32Array, tokens: Int32Array, sampling: rows | null, nextOut: Int32Array | null,
  //        logitsOut: Float32Array | null): Promise<void>
  Napi::Value Decode(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    bn_engine *e = live(env);
    size_t n = 0, nt = 0;
    const int32_t *seqs = typed_data<int32_t>(info[0], 1, "seqs", &n);
    const int32_t *toks = typed_data<int32_t>(info[1], 1, "tokens", &nt);
    if (n != nt) throw_arg(env, "seqs and tokens must have the same length");
    auto samp = std::make_shared<SamplingRows>();
    if (info.Length() > 2) parse_sampling(info[2], n, samp.get());
    int32_t *next = nullptr;
    if (info.Length() > 3 && !info[3].IsNull() && !info[3].IsUndefined()) next = typed_data<int32_t>(info[3], n, "nextOut");
    float *logits = nullptr;
    if (info.Length() > 4 && !info[4].IsNull() && !info[4].IsUndefined())
      logits = typed_data<float>(info[4], n * (size_t)vocab_, "logitsOut");
    StepWorker *w = new StepWorker(env, this, Value());
    for (size_t i = 0; i < info.Length() && i < 5; i++) w->keep(info[i]);
    w->what = "decode";
    w->run = [e, n, seqs, toks, samp, next, logits]() {
      return bn_decode(e, (int32_t)n, seqs, toks, samp->present ? samp->rows.data() : nullptr, next, logits);
    };
    return queue(w);
  }

  Napi::Value Logits(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    float *out = typed_data<float>(info[1], (size_t)vocab_, "out");
    const bn_status st = bn_logits(live(env), info[0].As<Napi::Number>().Int32Value(), out);
    if (st) throw_status(env, st, "logits");
    return env.Undefined();
  }

  Napi::Value Free(const Napi::CallbackInfo &info) {
    if (inflight_ > 0) throw make_error(info.Env(), BN_ERR_STATE, "free: a step is still running");
    if (e_) bn_engine_free(e_);
    e_ = nullptr;
    return info.Env().Undefined();
  }

 private:
  Napi::Value queue(StepWorker *w) {
    inflight_++;
    Napi::Promise p = w->promise();
    w->Queue();
    return p;
  }
};

void StepWorker::Execute() {
  status_ = run();
  if (status_ != BN_OK) {
    message_ = bn_last_error();  // thread-local: read on this thread
    SetError(message_);
  }
}

void StepWorker::OnOK() {
  eng_->inflight_--;
  deferred_.Resolve(Env().Undefined());
}

void StepWorker::OnError(const Napi::Error &) {
  eng_->inflight_--;
  deferred_.Reject(make_error(Env(), status_, std::string(what) + ": " + message_).Value());
}

struct AddonData {
  Napi::FunctionReference engine_ctor;
};

Napi::Value NewEngine(Napi::Env env, bn_engine *e) {
  AddonData *d = env.GetInstanceData<AddonData>();
  return d->engine_ctor.New({Napi::External<bn_engine>::New(env, e)});
}

// createEngine({hparams, tensors: [{name, type, ne, data}], options?}): CudaEngine
Napi::Value CreateEngine(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw_arg(env, "createEngine({hparams, tensors, options})");
  const Napi::Object spec = info[0].As<Napi::Object>();
  if (!spec.Get("hparams").IsObject() || !spec.Get("tensors").IsArray()) throw_arg(env, "hparams and tensors are required");
  const Napi::Object h = spec.Get("hparams").As<Napi::Object>();
  bn_hparams hp{};
  hp.n_vocab = (int32_t)need_num(h, "nVocab");
  hp.n_ctx = (int32_t)need_num(h, "nCtx");
  hp.n_embd = (int32_t)need_num(h, "nEmbd");
  hp.n_layer = (int32_t)need_num(h, "nLayer");
  hp.n_ff = (int32_t)need_num(h, "nFF");
  hp.n_head = (int32_t)need_num(h, "nHead");
  hp.n_head_kv = (int32_t)need_num(h, "nHeadKv");
  hp.head_dim = (int32_t)need_num(h, "headDim");
  hp.n_rot = (int32_t)need_num(h, "nRot");
  hp.rope_freq_base = (float)need_num(h, "ropeFreqBase");
  hp.rms_eps = (float)need_num(h, "rmsEps");
  const std::string act = h.Has("activation") ? h.Get("activation").ToString().Utf8Value() : "relu2";
  if (act != "relu2" && act != "silu") throw_arg(env, "activation must be relu2 or silu");
  hp.activation = act == "silu" ? BN_ACT_SILU : BN_ACT_RELU2;
  const Napi::Array ts = spec.Get("tensors").As<Napi::Array>();
  std::vector<std::string> names(ts.Length());
  std::vector<bn_tensor> tensors(ts.Length());
  for (uint32_t i = 0; i < ts.Length(); i++) {
    if (!ts.Get(i).IsObject()) throw_arg(env, "tensors[] must be objects");
    const Napi::Object t = ts.Get(i).As<Napi::Object>();
    names[i] = t.Get("name").ToString().Utf8Value();
    bn_tensor &b = tensors[i];
    b.name = names[i].c_str();
    b.type = (int32_t)need_num(t, "type");
    if (!t.Get("ne").IsArray()) throw_arg(env, names[i] + ": ne must be an array");
    const Napi::Array ne = t.Get("ne").As<Napi::Array>();
    if (ne.Length() < 1 || ne.Length() > 4) throw_arg(env, names[i] + ": 1..4 dimensions");
    b.n_dims = (int32_t)ne.Length();
    for (int d = 0; d < 4; d++) b.ne[d] = d < b.n_dims ? (int64_t)ne.Get(d).As<Napi::Number>().DoubleValue() : 1;
    size_t len = 0;
    b.data = typed_data<uint8_t>(t.Get("data"), 0, (names[i] + ".data").c_str(), &len);
    b.nbytes = len;
  }
  const bn_options o = parse_options(spec.Get("options"));
  bn_engine *e = nullptr;
  const bn_status st = bn_engine_create(&hp, tensors.data(), (int32_t)tensors.size(), &o, &e);
  if (st) throw_status(env, st, "createEngine");
  return NewEngine(env, e);
}

// loadEngine(path, options?): CudaEngine (GGUF)
Napi::Value LoadEngine(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw_arg(env, "loadEngine(path, options?)");
  const std::string path = info[0].As<Napi::String>().Utf8Value();
  const bn_options o = parse_options(info.Length() > 1 ? info[1] : env.Undefined());
  bn_engine *e = nullptr;
  const bn_status st = bn_engine_load(path.c_str(), &o, &e);
  if (st) throw_status(env, st, "loadEngine");
  return NewEngine(env, e);
}

// queryDevice(index = 0): {ok, status, error, deviceCount, cudaError, driverVersion, runtimeVersion, name, ...}
Napi::Value QueryDevice(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  const int32_t idx = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : 0;
  bn_device_info d{};
  const bn_status st = bn_query_device(idx, &d);
  Napi::Object o = Napi::Object::New(env);
  o.Set("ok", st == BN_OK);
  o.Set("status", bn_status_name(st));
  o.Set("error", st == BN_OK ? "" : bn_last_error());
  o.Set("deviceCount", d.device_count);
  o.Set("cudaError", d.cuda_error);
  o.Set("driverVersion", d.driver_version);
  o.Set("runtimeVersion", d.runtime_version);
  o.Set("name", d.name);
  o.Set("ccMajor", d.cc_major);
  o.Set("ccMinor", d.cc_minor);
  o.Set("smCount", d.sm_count);
  o.Set("totalMem", (double)d.total_mem);
  o.Set("freeMem", (double)d.free_mem);
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  AddonData *d = new AddonData();
  d->engine_ctor = Napi::Persistent(Engine::Define(env));
  env.SetInstanceData(d);
  exports.Set("apiVersion", Napi::Function::New(env, [](const Napi::CallbackInfo &i) {
                return Napi::Number::New(i.Env(), bn_api_version());
              }));
  exports.Set("queryDevice", Napi::Function::New(env, QueryDevice));
  exports.Set("createEngine", Napi::Function::New(env, CreateEngine));
  exports.Set("loadEngine", Napi::Function::New(env, LoadEngine));
  return exports;
}

}  // namespace

NODE_API_MODULE(bitnet_cuda, Init)
