// GEMM autotuning (the CUDA device's default since run 6; BN_AUTOTUNE=0 turns it off): for each
// weight shape and token count, the fastest GEMM launch configuration among those whose output
// has the default's bits on this device.
//
// Why it is safe to choose at run time: every configuration computes the same integer sums
// (§2.4), so the same output bits; the tuner checks that on the device, with the model's own
// weights, before it times a configuration, and one that differs is never chosen (and counted:
// on a correct build there are none). Why at all: the best kernel, reduction and split-K target
// depend on the shape, the token count and the GPU (the bench's per-shape rows), and a GPU session
// has one call to find out.
//
// This file is the search itself, plain C++ behind three callbacks (bn_cuda.cu gives the CUDA
// ones), so that the host test can drive it with fakes.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "../include/bitnet_cuda.h"

namespace bn {

// A GEMM launch configuration (k_gemm.cu): kernel 0 gemm_kernel, 1 gemm_pipe_kernel (3 stages) or
// 2 gemm_pipe_kernel with 6 stages; split-K reduction 0 atomics, 1 partial tiles added by the
// last block or 2 by gemm_reduce_kernel; split-K target `waves` blocks per SM (0: no split).
// (The device's default is {1, 1, 2} since run 6.)
struct GemmChoice {
  int variant = 0, tiles = 0, waves = 2;
  bool operator==(const GemmChoice &o) const { return variant == o.variant && tiles == o.tiles && waves == o.waves; }
};
std::string gemm_choice_str(const GemmChoice &c);

// Token counts are tuned in buckets: a GEMM of M tokens uses the choice of the smallest bucket
// >= M (over the last: the last).
constexpr int kGemmBuckets[] = {16, 32, 64, 128, 256, 512};
int gemm_bucket(int M);

// The choices made, per (n, k, bucket); a shape or bucket not tuned keeps the default.
struct GemmTable {
  struct Entry {
    int n, k, bucket;
    GemmChoice c;
  };
  std::vector<Entry> entries;
  bool find(int n, int k, int M, GemmChoice *c) const;
};

struct GemmTuneIO {
  // K splits the configuration launches at M tokens (configurations that launch the same kernel
  // with the same split and reduction are timed once).
  std::function<int(const GemmChoice &, int M)> splits;
  // One launch at M tokens; its output (M × n floats) into *out.
  std::function<bn_status(const GemmChoice &, int M, std::vector<float> *out)> run;
  // Microseconds per launch at M tokens.
  std::function<bn_status(const GemmChoice &, int M, double *us)> time;
};

// Tunes an n×k matrix for every bucket a batch of up to max_m tokens reaches: each candidate's
// output against the default's, bit for bit, then the fastest of those equal; the default is kept
// unless another is more than 3% faster. Appends a line per bucket to *log and the number of
// candidates whose output differed to *mismatches.
bn_status tune_gemm_shape(int n, int k, int max_m, const GemmChoice &dflt, const GemmTuneIO &io, GemmTable *table,
                          std::string *log, int *mismatches);

}  // namespace bn
