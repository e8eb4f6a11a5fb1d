// The engine core: weights on the device, the paged KV cache, sequences, batching, CUDA graphs
// per decode batch size, and the per-layer orchestration of kernels. Written against the Device
// and Ops seams (bn_kernels.h), so the CPU emulation build runs exactly this code.
#pragma once

#include <mutex>
#include <vector>

#include "bn_kernels.h"
#include "bn_model.h"

namespace bn {

struct LayerDev {
  Mat qkv, o, gateup, down;
  float *attn_norm, *attn_sub_norm, *ffn_norm, *ffn_sub_norm;
};

struct Seq {
  bool live = false;
  int len = 0;
  std::vector<int> pages;
};

class Engine {
 public:
  ~Engine();
  static bn_status create(const ModelTable &m, const bn_options &o, Device *dev, Engine **out);

  bn_status info(bn_engine_info *out) const;
  bn_status seq_create(int *out);
  bn_status seq_free(int s);
  bn_status seq_truncate(int s, int len);
  bn_status seq_length(int s, int *out);
  bn_status forward(const bn_batch &b, const bn_sampling *sampling, int32_t *sampled_out, float *logits_out);
  bn_status prefill(int s, const int32_t *tokens, int n, bool all, float *logits_out);
  bn_status decode(int n, const int32_t *seqs, const int32_t *tokens, const bn_sampling *sampling,
                   int32_t *next_out, float *logits_out);
  bn_status logits_row(int row, float *out);

 private:
  Engine() {}
  bn_status forward_locked(const bn_batch &b, const bn_sampling *sampling, int32_t *sampled_out,
                           float *logits_out);
  bn_status upload(const ModelTable &m);
  bn_status alloc_buffers();
  bn_status run_step(int M, int R, bool do_select);  // the kernels of one forward
  bn_status run_layers_fast(int M, const NormQuant &final_nq);
  bn_status run_head(int R, bool do_select);
  Epi qkv_epi(int l) const;
  // Layer l's norm point over x (n values, weights w) into the shared int8 activations.
  NormQuant norm_point(const float *x, int n, const float *w) const;
  // Layer l's persistent FFN chain (Ops::ffn_chain) for one token, with `next` after down.
  FfnChain ffn_chain_of(int l, const NormQuant &next) const;
  // Layer l's persistent layer (Ops::layer_chain) for one token, with `next` after down.
  LayerChain layer_chain_of(int l, const NormQuant &next) const;
  NormQuant final_norm() const;     // output_norm into the head's input
  NormQuant next_norm(int l) const;  // after layer l's down GEMV
  bn_status upload_step_chains();    // BN_PERSIST=step, at creation
  StepChain step_chain() const;
  AttnParams attn_params(int l) const;
  bn_status fail(bn_status st);                      // poisons on device errors
  void *dalloc(size_t bytes, bn_status *st);

  Device *dev_ = nullptr;
  bn_hparams hp_{};
  bn_options opt_{};
  std::mutex mu_;
  bool poisoned_ = false;
  std::vector<void *> allocs_;
  uint64_t weight_bytes_ = 0, kv_bytes_ = 0;

  // weights
  std::vector<LayerDev> layers_;
  void *embd_ = nullptr, *head_ = nullptr;
  int embd_type_ = 0, head_type_ = 0;
  int8_t *head8_ = nullptr;
  float *head8_scale_ = nullptr;
  float *output_norm_ = nullptr;
  float *rope_ = nullptr;

  // KV cache: [layer][page][slot][kv_dim] f16, one pool for K and one for V
  uint16_t *kpool_ = nullptr, *vpool_ = nullptr;
  int n_pages_ = 0, page_shift_ = 0, max_pages_ = 0;
  size_t layer_stride_ = 0;
  int32_t *bt_dev_ = nullptr;
  std::vector<int32_t> bt_host_;
  std::vector<int> free_pages_;
  std::vector<Seq> seqs_;  // max_seqs real slots + 1 dummy slot (padding rows of graphs)

  // activations [Mmax rows]
  int Mmax_ = 0, Rmax_ = 0, ldw_ = 0;
  std::vector<LayerChain> step_host_;  // the persistent step's chains (BN_PERSIST=step), and
  LayerChain *step_dev_ = nullptr;     // their device copy
  float *scores_ = nullptr;            // their split scores (n_head x max_ctx)
  float *x_ = nullptr, *att_ = nullptr, *ff_ = nullptr, *h32_ = nullptr, *hscale_ = nullptr;
  int8_t *q8_ = nullptr, *hq_ = nullptr;
  float *ascale_ = nullptr;
  int32_t *asum_ = nullptr, *hsum_ = nullptr;
  uint16_t *q16_ = nullptr, *h16_ = nullptr;
  float *logits_ = nullptr;
  int32_t *sampled_ = nullptr;  // [Rmax + 1]: ids, then the NaN flag

  // fast numerics (bn_fast.h; small batches only)
  float *stats_ = nullptr;      // [n_layer][4 norm points][kGemvMaxM][2]
  double *part_ss_ = nullptr;   // [kGemvMaxM][part_ld_]
  uint64_t *part_key_ = nullptr;
  int part_ld_ = 0;
  float *att_part_o_ = nullptr;   // [kGemvMaxM][n_head][kFastMaxSplits][head_dim]
  float *att_part_ml_ = nullptr;  // [kGemvMaxM][n_head][kFastMaxSplits][2]
  bool fast_quant_tail_ = false;  // BN_FAST_QUANT=tail: producers' last blocks write the int8 rows

  // inputs: one block (device + host staging) with fixed offsets
  uint8_t *in_dev_ = nullptr, *in_host_ = nullptr;
  size_t in_bytes_ = 0, off_pos_ = 0, off_slot_ = 0, off_rows_ = 0, off_samp_ = 0;
  int32_t *out_host_ = nullptr;  // [Rmax + 1]

  std::vector<int> graph_of_bucket_;  // bucket log2 -> graph id (-1 none)
  int last_rows_ = 0;
};

}  // namespace bn
