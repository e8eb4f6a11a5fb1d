// Host side of model loading: GGUF parsing, hyper-parameters, tensor-table validation, and the
// device weight image (the layouts the kernels read), built layer by layer on the host.
//
// Device layouts (all I2_S rows stay in the file's packed 128/32 layout; rows are only moved):
// - qkv:    [q rows | k rows | v rows], N = n_embd + 2*kv_dim, K = n_embd. Inside every q and k
//           head the rows are reordered so that NEOX RoPE partners sit next to each other:
//           image row j (j < n_rot) holds original dim j/2 + (j%2)*(n_rot/2); rows >= n_rot keep
//           their place. One scale per projection (ScaleMap mode 0, by range).
// - o:      as in the file, N = K = n_embd.
// - gateup: gate and up interleaved (image row 2i = gate row i, 2i+1 = up row i), N = 2*n_ff,
//           K = n_embd; scales by parity (ScaleMap mode 1).
// - down:   as in the file, N = n_embd, K = n_ff.
#pragma once

#include <stdint.h>

#include <map>
#include <string>
#include <vector>

#include "../include/bitnet_cuda.h"
#include "bn_numerics.h"

namespace bn {

struct TensorRef {
  std::string name;
  int type = 0;
  int nd = 0;
  int64_t ne[4] = {1, 1, 1, 1};
  const uint8_t *data = nullptr;
  uint64_t nbytes = 0;
};

struct LayerImage {
  std::vector<uint8_t> qkv, o, gateup, down;  // I2_S code bytes (no tails)
  ScaleMap sm_qkv, sm_o, sm_gateup, sm_down;
  const float *attn_norm, *attn_sub_norm, *ffn_norm, *ffn_sub_norm;  // into the tensor table (F32)
};

// The validated tensor table of one model.
struct ModelTable {
  bn_hparams hp;
  std::map<std::string, TensorRef> t;
  const TensorRef *embd = nullptr;
  const TensorRef *head = nullptr;  // output.weight or the tied embedding
  const TensorRef *output_norm = nullptr;
};

// Validates hyper-parameters and tensors (presence, type, shape, sizes) before anything is
// uploaded. Returns BN_OK or a status with bn_last_error set.
bn_status build_table(const bn_hparams &hp, const bn_tensor *tensors, int n, ModelTable *out);

// The image of layer l (host memory; uploaded, then dropped).
bn_status build_layer(const ModelTable &m, int l, LayerImage *out);

// NEOX RoPE (cos, sin) per position and pair, as reference.ts builds them: theta_scale =
// (float)pow(base, -2/n_rot); theta starts at (float)pos and is multiplied in f32 per pair;
// cos/sin are taken in f64 of the f32 angle and rounded to f32. [max_ctx][n_rot/2][2].
std::vector<float> rope_table(const bn_hparams &hp, int max_ctx);

// INT8 head rows: per row s = 127/max(1e-5, amax), q = quant(x, s) (the activation rules).
void quantize_head_rows(const TensorRef &head, int n_vocab, int k, int8_t *q, float *scale);

// A parsed GGUF file: metadata values we need and the tensor table, over a read-only mapping.
struct GgufFile {
  void *map = nullptr;
  size_t size = 0;
  std::string arch;
  std::map<std::string, double> num;      // numeric metadata
  std::map<std::string, std::string> str;  // string metadata
  std::vector<bn_tensor> tensors;
  std::vector<std::string> names;  // storage for tensors[i].name
  ~GgufFile();
};

bn_status parse_gguf(const char *path, GgufFile *out);
// Parses an in-memory GGUF (the bytes must outlive the result's tensor pointers).
bn_status parse_gguf_bytes(const uint8_t *data, size_t size, GgufFile *out);
bn_status hparams_from_gguf(const GgufFile &f, bn_hparams *hp);

// I2_S scale of a tensor (f32 after the n/4 code bytes).
float i2s_scale(const TensorRef &t);

}  // namespace bn
