// Token selection on the GPU, one 1024-thread block per logits row (src/generate/sampler.ts):
// 1. repetition penalty over the distinct history ids (a thread per history entry; l/p or l·p in
//    f64, to f32);
// 2. temperature <= 0: argmax, ties -> lowest id;
// 3. otherwise top-k (k <= 1024): an MSB-first radix select over order-preserving u32 keys of
//    the logits finds the k-th largest key; the candidates (greater keys, plus the lowest-id ties)
//    are collected in id order, bitonic-sorted by (logit desc, id asc), weighted by
//    exp(l/T − max) in f64, cut by top-p, and the caller's uniform u picks the first candidate
//    whose cumulative weight exceeds u·W (sums in rank order; the TS sampler's order differs only
//    within f64 rounding).
// A NaN anywhere sets *nan_flag (the TS sampler throws LOGITS_NAN).
#include <math_constants.h>

#include "bn_device.cuh"

namespace bn {

constexpr int ST = 1024;

__device__ __forceinline__ uint32_t ord_key(float l) {
  uint32_t u = __float_as_uint(l);
  if (u == 0x80000000u) u = 0;  // -0 ranks with +0
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ bool better(float a, int ia, float b, int ib) { return a > b || (a == b && ia < ib); }

// The row walks below visit ids in the same order as a plain loop, but load kWalk values before
// they use the first: the loop bodies branch (NaN, ties), and ptxas does not move a global load
// above a branch, so a plain loop waited one L2 round trip per element (~125 per thread at
// V = 128256; select R=1 took 22 us in run 5).
constexpr int kWalk = 8;

// f(lg[v], v) for v = first, first + step, ... < end, in that order (step ST: the thread's strided
// ids; step 1: its chunk).
template <int STEP, typename F>
__device__ __forceinline__ void walk(const float *lg, int first, int end, F f) {
  for (int v0 = first; v0 < end; v0 += kWalk * STEP) {
    float x[kWalk];
#pragma unroll
    for (int j = 0; j < kWalk; j++) x[j] = v0 + j * STEP < end ? lg[v0 + j * STEP] : 0.f;
#pragma unroll
    for (int j = 0; j < kWalk; j++)
      if (v0 + j * STEP < end) f(x[j], v0 + j * STEP);
  }
}

__global__ void __launch_bounds__(ST, 1) select_kernel(SelectParams p) {
  pdl_enter();
  BN_SHARED(int, hist, [256]);
  BN_SHARED(int, cnt_a, [ST]);
  BN_SHARED(int, cnt_b, [ST]);
  BN_SHARED(unsigned long long, ck, [ST]);
  BN_SHARED(float, cl, [ST]);
  BN_SHARED(double, cw, [ST]);
  BN_SHARED(float, bv, [ST / 32]);
  BN_SHARED(int, bi, [ST / 32]);
  BN_SHARED(uint32_t, s_prefix);
  BN_SHARED(uint32_t, s_mask);
  BN_SHARED(int, s_krem);
  BN_SHARED(int, s_ngt);
  BN_SHARED(int, s_nan);
  const int r = blockIdx.x, tid = threadIdx.x, V = p.n_vocab;
  float *lg = p.logits + (size_t)r * V;
  const SampleRow *row = p.rows ? p.rows + r : nullptr;
  const double T = row ? row->temperature : 0.0;
  // Repetition penalty: each distinct history id once. Thread i takes history entry i and applies
  // it when no earlier entry has the same id, so the ids it changes are distinct (no race) and
  // each is changed once, as in the sampler's serial loop (which cost thread 0 up to 64 dependent
  // loads, with 64·63/2 more for the duplicate checks).
  BN_SHARED(int, s_hist, [64]);
  if (tid == 0) s_nan = 0;
  const bool penalize = row && row->penalty != 1.0;
  const int nh = penalize ? min(max(row->n_history, 0), 64) : 0;
  if (tid < nh) s_hist[tid] = row->history[tid];
  __syncthreads();
  if (tid < nh) {
    const int id = s_hist[tid];
    bool seen = false;
    for (int j = 0; j < tid; j++) seen |= s_hist[j] == id;
    if (!seen && id >= 0 && id < V) {
      const float l = lg[id];
      lg[id] = (float)(l > 0.f ? (double)l / row->penalty : (double)l * row->penalty);
    }
  }
  __syncthreads();
  bool nan = false;

  if (!(T > 0.0)) {
    float best = -CUDART_INF_F;
    int bidx = 0x7fffffff;
    walk<ST>(lg, tid, V, [&](float x, int v) {
      if (x != x) nan = true;
      else if (better(x, v, best, bidx)) {
        best = x;
        bidx = v;
      }
    });
    for (int o = 16; o > 0; o >>= 1) {
      const float ob = __shfl_xor_sync(0xffffffffu, best, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bidx, o);
      if (better(ob, oi, best, bidx)) {
        best = ob;
        bidx = oi;
      }
    }
    if ((tid & 31) == 0) {
      bv[tid >> 5] = best;
      bi[tid >> 5] = bidx;
    }
    if (nan) atomicExch(&s_nan, 1);
    __syncthreads();
    if (tid == 0) {
      for (int w = 1; w < ST / 32; w++)
        if (better(bv[w], bi[w], best, bidx)) {
          best = bv[w];
          bidx = bi[w];
        }
      p.out[r] = bidx == 0x7fffffff ? 0 : bidx;
      if (s_nan) atomicExch(p.nan_flag, 1);
    }
    return;
  }

  const int k = row->top_k < V ? row->top_k : V;
  if (tid == 0) {
    s_prefix = 0;
    s_mask = 0;
    s_krem = k;
  }
  for (int shift = 24; shift >= 0; shift -= 8) {
    if (tid < 256) hist[tid] = 0;
    __syncthreads();
    const uint32_t pre = s_prefix, msk = s_mask;
    walk<ST>(lg, tid, V, [&](float x, int) {
      if (x != x) {
        nan = true;
        return;
      }
      const uint32_t key = ord_key(x);
      if ((key & msk) == pre) atomicAdd(&hist[(key >> shift) & 255], 1);
    });
    __syncthreads();
    if (tid == 0) {
      int need = s_krem, cum = 0, sel = 0;
      for (int b = 255; b >= 0; b--) {
        if (cum + hist[b] >= need) {
          sel = b;
          need -= cum;
          break;
        }
        cum += hist[b];
      }
      s_prefix = pre | ((uint32_t)sel << shift);
      s_mask = msk | (255u << shift);
      s_krem = need;
    }
    __syncthreads();
  }
  const uint32_t K = s_prefix;
  const int keq = s_krem;
  const int chunk = (V + ST - 1) / ST, lo = tid * chunk, hi = min(V, lo + chunk);
  int ngt = 0, neq = 0;
  walk<1>(lg, lo, hi, [&](float x, int) {
    if (x != x) return;
    const uint32_t key = ord_key(x);
    ngt += key > K;
    neq += key == K;
  });
  cnt_a[tid] = ngt;
  cnt_b[tid] = neq;
  __syncthreads();
  if (tid == 0) {
    int a = 0, b = 0;
    for (int i = 0; i < ST; i++) {
      const int x = cnt_a[i], y = cnt_b[i];
      cnt_a[i] = a;
      cnt_b[i] = b;
      a += x;
      b += y;
    }
    s_ngt = a;
  }
  __syncthreads();
  int pg = cnt_a[tid], pe = cnt_b[tid];
  walk<1>(lg, lo, hi, [&](float x, int v) {
    if (x != x) return;
    const uint32_t key = ord_key(x);
    if (key > K) {
      if (pg < ST) {
        ck[pg] = ((unsigned long long)(~key) << 32) | (unsigned)v;
        cl[pg] = x;
      }
      pg++;
    } else if (key == K) {
      if (pe < keq && s_ngt + pe < ST) {
        ck[s_ngt + pe] = ((unsigned long long)(~key) << 32) | (unsigned)v;
        cl[s_ngt + pe] = x;
      }
      pe++;
    }
  });
  int P2 = 1;
  while (P2 < k) P2 <<= 1;
  for (int i = k + tid; i < P2; i += ST) ck[i] = ~0ull;
  for (int size = 2; size <= P2; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      __syncthreads();
      for (int i = tid; i < P2; i += ST) {
        const int j = i ^ stride;
        if (j > i) {
          const bool asc = (i & size) == 0;
          if ((ck[i] > ck[j]) == asc) {
            const unsigned long long tk = ck[i];
            ck[i] = ck[j];
            ck[j] = tk;
            const float tl = cl[i];
            cl[i] = cl[j];
            cl[j] = tl;
          }
        }
      }
    }
  }
  __syncthreads();
  const double mz = (double)cl[0] / T;
  for (int i = tid; i < k; i += ST) {
    const double z = (double)cl[i] / T;
    double w;
    if (mz == CUDART_INF) w = z == mz ? 1.0 : 0.0;
    else if (mz == -CUDART_INF) w = 1.0;
    else w = exp(z - mz);
    cw[i] = w;
  }
  if (nan) atomicExch(&s_nan, 1);
  __syncthreads();
  if (tid == 0) {
    const int pick = sample_pick(cw, k, row->top_p, row->u);
    p.out[r] = (int)(ck[pick] & 0xffffffffu);
    if (s_nan) atomicExch(p.nan_flag, 1);
  }
}

bn_status launch_select(const SelectParams &p, int R, cudaStream_t s) {
  return launch_k("select_kernel", select_kernel, R, ST, 0, s, p);
}

}  // namespace bn
