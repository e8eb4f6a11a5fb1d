/*
 * bitnet_cuda.h: the C API of the bitnet-edge CUDA engine (BitNet b1.58, I2_S ternary weights).
 *
 * Contract
 * - Every function returns a bn_status. On failure nothing is printed: the reason is in
 *   bn_last_error() (a per-thread string), e.g. "cudaMalloc(...) failed: out of memory
 *   (engine.cu:123)". A CUDA error inside a forward pass leaves the engine "poisoned"
 *   (BN_ERR_STATE on every later call except bn_engine_free), because device state is unknown.
 * - One engine = one model on one GPU. Calls on one engine are serialised by an internal mutex;
 *   distinct engines may be used from distinct threads.
 * - Sequences are small integer handles. Each owns KV-cache pages (paged, f16) on the GPU.
 *   Tokens are appended at the sequence's current length; bn_seq_truncate rewinds it.
 * - Numerics follow docs/bitnet-formats.md §2.3-2.4 and §4.3 (bitnet.cpp's CPU path), as the
 *   TypeScript reference (src/model/reference.ts) does: per-token int8 activations, exact integer
 *   ternary dot products, y = ((D - S) / s) * w_scale in f32, RMSNorm with an f64 sum, NEOX RoPE,
 *   f16 KV, f16-rounded Q and softmax probabilities, f16 LM head (products exact, f32 sums).
 *
 * Shapes: n_embd = hidden size, kv_dim = n_head_kv * head_dim, n_ff = FFN width, V = n_vocab.
 */
#ifndef BITNET_CUDA_H
#define BITNET_CUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BN_API_VERSION 1

typedef enum bn_status {
  BN_OK = 0,
  BN_ERR_INVALID_ARGUMENT = 1, /* a bad argument (null pointer, bad handle range, bad option) */
  BN_ERR_NO_DEVICE = 2,        /* no CUDA driver, no GPU, or the device index does not exist */
  BN_ERR_CUDA = 3,             /* a CUDA runtime call or kernel launch failed */
  BN_ERR_OUT_OF_MEMORY = 4,    /* device or pinned host memory exhausted */
  BN_ERR_FORMAT = 5,           /* malformed GGUF or tensor table */
  BN_ERR_UNSUPPORTED = 6,      /* a valid model or request this engine cannot run */
  BN_ERR_IO = 7,               /* a file could not be read */
  BN_ERR_CAPACITY = 8,         /* no free sequence slot / KV page, or the context is full */
  BN_ERR_STATE = 9,            /* unknown sequence, or the engine is poisoned by an earlier error */
  BN_ERR_NUMERIC = 10          /* NaN in logits during greedy/sampled selection */
} bn_status;

/* ggml type ids used in tensor tables (docs/bitnet-formats.md §2.1). */
enum { BN_TYPE_F32 = 0, BN_TYPE_F16 = 1, BN_TYPE_I2_S = 36 };

enum { BN_ACT_RELU2 = 0, BN_ACT_SILU = 1 };

/* LM head modes. F16 is the reference numerics; INT8 re-quantizes the head rows (per-row absmax)
 * and the hidden state (per-token absmax) for half the bytes: faster, approximate logits. */
enum { BN_HEAD_F16 = 0, BN_HEAD_INT8 = 1 };

/* Numerics. EXACT reproduces the TS reference's bits (see the contract above). FAST applies to
 * small decode batches (n_tokens <= gemv_max_m): the ternary matmuls stay exact, but RMSNorm
 * statistics are reduced across blocks and attention is split over the positions and combined
 * (flash decoding), in fixed orders (deterministic). Logits then differ from the reference at
 * the level of f32 rounding (~1e-6 relative); larger batches run the exact path. */
enum { BN_NUMERICS_EXACT = 0, BN_NUMERICS_FAST = 1 };

typedef struct bn_device_info {
  int32_t device_count;    /* 0 when no driver/GPU */
  int32_t cuda_error;      /* cudaError_t of the failed probe, 0 on success (35 = driver too old/none) */
  int32_t driver_version;  /* cudaDriverGetVersion, 0 when unknown */
  int32_t runtime_version; /* cudaRuntimeGetVersion */
  char name[256];          /* device name of `device` */
  int32_t cc_major, cc_minor;
  int32_t sm_count;
  uint64_t total_mem, free_mem;
} bn_device_info;

/* Hyper-parameters (as src/model/hparams.ts reads them from GGUF metadata). */
typedef struct bn_hparams {
  int32_t n_vocab, n_ctx, n_embd, n_layer, n_ff, n_head, n_head_kv, head_dim, n_rot;
  float rope_freq_base, rms_eps;
  int32_t activation; /* BN_ACT_* */
} bn_hparams;

/* One tensor of a tensor table: GGUF name, ggml type, ne (ne[0] innermost), host bytes.
 * I2_S data is ne0*ne1/4 code bytes followed by the f32 scale (the 32-byte tail may be cut to 4). */
typedef struct bn_tensor {
  const char *name;
  int32_t type;
  int32_t n_dims;
  int64_t ne[4];
  const void *data;
  uint64_t nbytes;
} bn_tensor;

typedef struct bn_options {
  int32_t device;           /* CUDA device index (default 0) */
  int32_t max_seqs;         /* live sequences (default 64) */
  int32_t max_batch_tokens; /* tokens per forward; longer prefills are chunked (default 512) */
  int32_t max_logit_rows;   /* logits rows per forward (default 64) */
  int32_t max_ctx;          /* positions per sequence, <= n_ctx (default min(n_ctx, 4096)) */
  int32_t page_size;        /* KV positions per page, a power of two (default 64) */
  uint64_t kv_bytes;        /* KV pool bytes; 0 = enough for max_seqs * max_ctx, capped at 60% of free */
  int32_t head_mode;        /* BN_HEAD_* (default F16) */
  int32_t use_graphs;       /* capture decode steps as CUDA graphs (default 1) */
  int32_t gemv_max_m;       /* batches of <= this many tokens use the dp4a GEMV path (default 4) */
  int32_t emulate;          /* 1: run the kernels' CPU emulation instead of a GPU (tests only; slow) */
  int32_t numerics;         /* BN_NUMERICS_* (default EXACT) */
} bn_options;

typedef struct bn_engine_info {
  bn_hparams hparams;
  char device_name[256];
  int32_t cc_major, cc_minor;
  uint64_t weight_bytes; /* device bytes of weights (ternary + norms + embedding/head) */
  uint64_t kv_bytes;     /* device bytes of the KV pool */
  int32_t kv_pages, page_size, max_seqs, max_ctx, max_batch_tokens;
} bn_engine_info;

/* Sampling for one logits row. temperature <= 0: greedy (argmax, ties -> lowest id).
 * Otherwise the TS sampler's pipeline (src/generate/sampler.ts) with top_k in [1, 1024]:
 * repetition penalty over the distinct history ids, rank by (logit desc, id asc), keep top_k,
 * f64 softmax of logit/T, top_p prefix, then the first id whose cumulative weight exceeds u*W.
 * `u` is the caller's uniform draw in [0, 1) (the shared xoshiro128** stream, rng.nextFloat()). */
typedef struct bn_sampling {
  double temperature; /* f64, as the TS sampler divides by it */
  int32_t top_k;
  double top_p;
  double repetition_penalty;
  float u;
  int32_t n_history; /* <= 64 */
  const int32_t *history;
} bn_sampling;

typedef struct bn_engine bn_engine;

/* The reason for the last failure on this thread ("" when none). Valid until the next call. */
const char *bn_last_error(void);
const char *bn_status_name(bn_status s);
int32_t bn_api_version(void);

/* Probes the driver and device `device` without creating a context beyond the runtime's own.
 * With no driver: BN_ERR_NO_DEVICE, out->device_count = 0, out->cuda_error = 35 (or 100). */
bn_status bn_query_device(int32_t device, bn_device_info *out);

void bn_options_default(bn_options *opts);

/* Creates an engine from hyper-parameters and a tensor table (host memory; copied to the GPU,
 * the caller may free it afterwards). Required tensors as src/model/weights.ts: token_embd.weight,
 * output_norm.weight, [output.weight], blk.N.{attn_norm,attn_sub_norm,ffn_norm,ffn_sub_norm}.weight
 * (F32), blk.N.{attn_q,attn_k,attn_v,attn_output,ffn_gate,ffn_up,ffn_down}.weight (I2_S), and the
 * optional blk.N.<proj>.scale (F32 [1]). Embedding/head: F16 or F32. */
bn_status bn_engine_create(const bn_hparams *hp, const bn_tensor *tensors, int32_t n_tensors,
                           const bn_options *opts, bn_engine **out);

/* Loads a GGUF file (v3). Shard packs are not defined yet in this repository: BN_ERR_UNSUPPORTED. */
bn_status bn_engine_load(const char *path, const bn_options *opts, bn_engine **out);

bn_status bn_engine_info_get(const bn_engine *e, bn_engine_info *out);
void bn_engine_free(bn_engine *e);

bn_status bn_seq_create(bn_engine *e, int32_t *seq_out);
bn_status bn_seq_free(bn_engine *e, int32_t seq);
bn_status bn_seq_truncate(bn_engine *e, int32_t seq, int32_t length);
bn_status bn_seq_length(bn_engine *e, int32_t seq, int32_t *length_out);

/* A general step: n_tokens tokens, token i appended to sequence seq[i] (several tokens of one
 * sequence go in order; prefill chunks and decode tokens of many sequences may be mixed: this is
 * the continuous-batching entry point). want_logits[i] != 0 asks for token i's logits row; rows
 * come back in token order. logits_out (nullable) gets n_rows * V floats; sampled_out (nullable)
 * gets n_rows token ids chosen on the GPU with sampling[row] (NULL = greedy for all rows).
 * n_tokens <= max_batch_tokens and n_rows <= max_logit_rows. */
typedef struct bn_batch {
  int32_t n_tokens;
  const int32_t *seq;
  const int32_t *token;
  const uint8_t *want_logits; /* NULL = every token */
} bn_batch;

bn_status bn_forward(bn_engine *e, const bn_batch *batch, const bn_sampling *sampling,
                     int32_t *sampled_out, float *logits_out);

/* Prefill: appends n tokens to `seq` (chunked by max_batch_tokens). logits_out (nullable) gets
 * the last row (logits_all = 0) or all n rows (logits_all = 1). */
bn_status bn_prefill(bn_engine *e, int32_t seq, const int32_t *tokens, int32_t n, int32_t logits_all,
                     float *logits_out);

/* One decode step for n sequences (one token each, distinct sequences), replayed from a CUDA
 * graph per batch-size bucket when enabled. next_out (nullable) gets the n chosen tokens;
 * logits_out (nullable) n * V floats. */
bn_status bn_decode(bn_engine *e, int32_t n, const int32_t *seqs, const int32_t *tokens,
                    const bn_sampling *sampling, int32_t *next_out, float *logits_out);

/* Copies logits row `row` of the last forward/prefill/decode (still on the GPU) into out[V]. */
bn_status bn_logits(bn_engine *e, int32_t row, float *out);

#ifdef __cplusplus
}
#endif

#endif /* BITNET_CUDA_H */
