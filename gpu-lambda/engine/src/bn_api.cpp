// The C API (include/bitnet_cuda.h) over the engine core. Compiled into both builds: on the GPU
// build make_device() returns the CUDA device, in the CPU emulation build the emulator.
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>

#include "bn_core.h"

struct bn_engine {
  bn::Engine *core;
};

namespace bn {

static thread_local char g_err[1024];

void set_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(g_err, sizeof(g_err), fmt, ap);
  va_end(ap);
}
void clear_error() { g_err[0] = 0; }

}  // namespace bn

extern "C" {

const char *bn_last_error(void) { return bn::g_err; }

int32_t bn_api_version(void) { return BN_API_VERSION; }

const char *bn_status_name(bn_status s) {
  switch (s) {
    case BN_OK: return "BN_OK";
    case BN_ERR_INVALID_ARGUMENT: return "BN_ERR_INVALID_ARGUMENT";
    case BN_ERR_NO_DEVICE: return "BN_ERR_NO_DEVICE";
    case BN_ERR_CUDA: return "BN_ERR_CUDA";
    case BN_ERR_OUT_OF_MEMORY: return "BN_ERR_OUT_OF_MEMORY";
    case BN_ERR_FORMAT: return "BN_ERR_FORMAT";
    case BN_ERR_UNSUPPORTED: return "BN_ERR_UNSUPPORTED";
    case BN_ERR_IO: return "BN_ERR_IO";
    case BN_ERR_CAPACITY: return "BN_ERR_CAPACITY";
    case BN_ERR_STATE: return "BN_ERR_STATE";
    case BN_ERR_NUMERIC: return "BN_ERR_NUMERIC";
  }
  return "BN_ERR_UNKNOWN";
}

void bn_options_default(bn_options *o) {
  memset(o, 0, sizeof(*o));
  o->device = 0;
  o->max_seqs = 64;
  o->max_batch_tokens = 512;
  o->max_logit_rows = 64;
  o->max_ctx = 0;
  o->page_size = 64;
  o->kv_bytes = 0;
  o->head_mode = BN_HEAD_F16;
  o->use_graphs = 1;
  o->gemv_max_m = 4;
  o->emulate = 0;
  o->numerics = BN_NUMERICS_EXACT;
}

static bn_status create_from_table(const bn::ModelTable &table, const bn_options *opts, bn_engine **out) {
  bn_options o;
  if (opts) o = *opts;
  else bn_options_default(&o);
  bn::Device *dev = nullptr;
  bn_status st = BN_OK;
  if (o.emulate) dev = bn::make_emu_device();
  else st = bn::make_device(o.device, &dev);
  if (st) return st;
  bn::Engine *core = nullptr;
  st = bn::Engine::create(table, o, dev, &core);  // owns dev from here on (freed on failure)
  if (st) return st;
  bn_engine *e = new (std::nothrow) bn_engine;
  if (!e) {
    delete core;
    bn::set_error("out of host memory");
    return BN_ERR_OUT_OF_MEMORY;
  }
  e->core = core;
  *out = e;
  return BN_OK;
}

bn_status bn_engine_create(const bn_hparams *hp, const bn_tensor *tensors, int32_t n_tensors, const bn_options *opts,
                           bn_engine **out) {
  bn::clear_error();
  if (const bn_status st = bn::check_knobs()) return st;  // before any work on the model
  if (!hp || !tensors || n_tensors <= 0 || !out) {
    bn::set_error("bn_engine_create: hparams, tensors and out are required");
    return BN_ERR_INVALID_ARGUMENT;
  }
  *out = nullptr;
  bn::ModelTable table;
  bn_status st = bn::build_table(*hp, tensors, n_tensors, &table);
  if (st) return st;
  return create_from_table(table, opts, out);
}

bn_status bn_engine_load(const char *path, const bn_options *opts, bn_engine **out) {
  bn::clear_error();
  if (const bn_status st = bn::check_knobs()) return st;  // before the file is read
  if (!path || !out) {
    bn::set_error("bn_engine_load: path and out are required");
    return BN_ERR_INVALID_ARGUMENT;
  }
  *out = nullptr;
  FILE *f = fopen(path, "rb");
  if (!f) {
    bn::set_error("cannot open %s: %s", path, strerror(errno));
    return BN_ERR_IO;
  }
  char magic[4] = {0};
  const size_t got = fread(magic, 1, 4, f);
  fclose(f);
  if (got != 4 || memcmp(magic, "GGUF", 4) != 0) {
    bn::set_error("%s is not a GGUF file; shard packs are not defined in this repository yet", path);
    return BN_ERR_UNSUPPORTED;
  }
  std::unique_ptr<bn::GgufFile> g(new bn::GgufFile());
  bn_status st = bn::parse_gguf(path, g.get());
  if (st) return st;
  bn_hparams hp;
  if ((st = bn::hparams_from_gguf(*g, &hp))) return st;
  bn::ModelTable table;
  if ((st = bn::build_table(hp, g->tensors.data(), (int)g->tensors.size(), &table))) return st;
  return create_from_table(table, opts, out);  // weights are copied; the mapping closes here
}

bn_status bn_engine_info_get(const bn_engine *e, bn_engine_info *out) {
  bn::clear_error();
  if (!e || !out) {
    bn::set_error("engine and out are required");
    return BN_ERR_INVALID_ARGUMENT;
  }
  return e->core->info(out);
}

void bn_engine_free(bn_engine *e) {
  if (!e) return;
  delete e->core;
  delete e;
}

#define BN_ENGINE_CHECK(e)                   \
  do {                                       \
    bn::clear_error();                       \
    if (!(e)) {                              \
      bn::set_error("engine is null");       \
      return BN_ERR_INVALID_ARGUMENT;        \
    }                                        \
  } while (0)

bn_status bn_seq_create(bn_engine *e, int32_t *seq_out) {
  BN_ENGINE_CHECK(e);
  if (!seq_out) return BN_ERR_INVALID_ARGUMENT;
  int s = -1;
  bn_status st = e->core->seq_create(&s);
  if (!st) *seq_out = s;
  return st;
}

bn_status bn_seq_free(bn_engine *e, int32_t seq) {
  BN_ENGINE_CHECK(e);
  return e->core->seq_free(seq);
}

bn_status bn_seq_truncate(bn_engine *e, int32_t seq, int32_t length) {
  BN_ENGINE_CHECK(e);
  return e->core->seq_truncate(seq, length);
}

bn_status bn_seq_length(bn_engine *e, int32_t seq, int32_t *length_out) {
  BN_ENGINE_CHECK(e);
  if (!length_out) return BN_ERR_INVALID_ARGUMENT;
  int n = 0;
  bn_status st = e->core->seq_length(seq, &n);
  if (!st) *length_out = n;
  return st;
}

bn_status bn_forward(bn_engine *e, const bn_batch *batch, const bn_sampling *sampling, int32_t *sampled_out,
                     float *logits_out) {
  BN_ENGINE_CHECK(e);
  if (!batch) {
    bn::set_error("batch is null");
    return BN_ERR_INVALID_ARGUMENT;
  }
  return e->core->forward(*batch, sampling, sampled_out, logits_out);
}

bn_status bn_prefill(bn_engine *e, int32_t seq, const int32_t *tokens, int32_t n, int32_t logits_all,
                     float *logits_out) {
  BN_ENGINE_CHECK(e);
  return e->core->prefill(seq, tokens, n, logits_all != 0, logits_out);
}

bn_status bn_decode(bn_engine *e, int32_t n, const int32_t *seqs, const int32_t *tokens, const bn_sampling *sampling,
                    int32_t *next_out, float *logits_out) {
  BN_ENGINE_CHECK(e);
  return e->core->decode(n, seqs, tokens, sampling, next_out, logits_out);
}

bn_status bn_logits(bn_engine *e, int32_t row, float *out) {
  BN_ENGINE_CHECK(e);
  if (!out) return BN_ERR_INVALID_ARGUMENT;
  return e->core->logits_row(row, out);
}

}  // extern "C"
