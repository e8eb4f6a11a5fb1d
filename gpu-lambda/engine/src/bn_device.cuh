// Device-only helpers shared by the kernels: warp reductions, the per-token RMSNorm+quantize
// block routine (the "tail" of fused kernels and the body of the norm kernels), the last-block
// ticket, and the launch declarations of every kernel (bn_launch_*), implemented one file each.
//
// Reduction orders here are mirrored step for step by the CPU emulation (bn_emu.cpp), so the
// emulation predicts the GPU's bits (f64 butterflies, f32 butterflies in the f16 head).
#pragma once

#include <assert.h>  // __assert_fail (the watchdog's device-side assertion); kept with NDEBUG
#include <cuda_runtime.h>

#include <type_traits>

#include "bn_kernels.h"

// A kernel's dynamic shared memory: `BN_DYN_SHARED(float, sc);` declares `sc` (the launch's
// dynamicSmemBytes; T may carry __align__). Under the CPU simulation (BN_SIM) it is the
// simulator's per-block buffer (128-byte aligned).
#if defined(BN_SIM)
#define BN_DYN_SHARED(T, name) T *name = (T *)bn_sim::dyn_smem()
#else
#define BN_DYN_SHARED(T, name) extern __shared__ T name[]
#endif

// A kernel's static shared memory: `BN_SHARED(double, red, [4]);` declares `__shared__ double
// red[4]` (T may carry __align__; the last argument is the array bounds, or empty). Under the CPU
// simulation it is also registered, so that every block starts with it undefined (0xcd bytes)
// instead of the previous block's values (sim/cuda_runtime.h, where a plain __shared__ does not
// compile).
#if !defined(BN_SIM)
#define BN_SHARED(T, name, ...) __shared__ T name __VA_ARGS__
#endif

namespace bn {

__device__ __forceinline__ double warp_sum_d(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_sum_f(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fadd(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ int warp_sum_i(int v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max_f(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// ---- cp.async (sm_80+): 16-byte global -> shared copies that run in the background ------------
// (The CPU simulation, BN_SIM, lands each copy only at the wait that covers it: sim/cuda_runtime.h.)
#if defined(BN_SIM)
__device__ __forceinline__ void cp_async16(void *dst, const void *src) { bn_sim::cp_async(dst, src, 16); }
__device__ __forceinline__ void cp_async16_zfill(void *dst, const void *src, int bytes) {
  bn_sim::cp_async(dst, src, bytes);
}
__device__ __forceinline__ void cp_async_commit() { bn_sim::cp_async_commit(); }
__device__ __forceinline__ void cp_async_wait_all() { bn_sim::cp_async_wait_all(); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  bn_sim::cp_async_wait_group(N);
}
#else
__device__ __forceinline__ void cp_async16(void *dst, const void *src) {
  const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(src) : "memory");
}
// Copies `bytes` (0 or 16) and zero-fills the rest of the 16 (src must still be a valid address).
__device__ __forceinline__ void cp_async16_zfill(void *dst, const void *src, int bytes) {
  const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Waits for all of this thread's copies, committed or not.
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }
// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
#endif

// Asks L2 for the line holding `a` (no register written, nothing waits): a later load of it then
// waits on L2 rather than DRAM. On the CPU simulation it reads the byte at `a`, so that
// AddressSanitizer sees every prefetched address (each must lie inside an allocation).
__device__ __forceinline__ void prefetch_l2(const void *a) {
#if defined(BN_SIM)
  (void)*(const volatile char *)a;
#else
  asm volatile("prefetch.global.L2 [%0];" ::"l"(a));
#endif
}

// Per-token RMSNorm + int8 quantization by one 128-thread block (token m). n % 128 == 0.
// Thread i handles float4 elements i, i+128, ... Reads x with ld.global.cg (L2): in a fused
// tail the values were written by other blocks of the same kernel.
//   pass 1: Σ fround(x²) in f64 per thread in order, xor butterfly per warp, warps summed in order;
//   pass 2: y = fround(fround(x·scale)·w), |y| max (exact), optional f32/f16 stores;
//   pass 3: q = quant(y, s), S = Σq (exact).
// Each pass issues its loads kNqBatch float4 at a time before using them (one L2 round trip per
// batch instead of one per element: a lone block is latency-bound); the per-thread order of the
// sums is unchanged. Every thread of the block must call it (it synchronises). Mirrored by
// bn_emu.cpp.
constexpr int kNqBatch = 4;

// float4 elements i0, i0+128, ... (N of them; zeros past n4) of src: through L2 (CG, for x written
// by other blocks of the same kernel) or the read-only path (the norm weights).
template <bool CG, int N = kNqBatch>
__device__ __forceinline__ void nq_load(float4 (&v)[N], const float *src, int i0, int n4) {
#pragma unroll
  for (int b = 0; b < N; b++) {
    const int i = i0 + b * kNormThreads;
    const float4 *a = (const float4 *)src + i;
    v[b] = i < n4 ? (CG ? __ldcg(a) : __ldg(a)) : make_float4(0.f, 0.f, 0.f, 0.f);
  }
}

// y = fround(fround(x·scale)·w) per lane.
__device__ __forceinline__ float4 nq_norm(const float4 &x, float sc, const float4 &w) {
  return make_float4(fmul(fmul(x.x, sc), w.x), fmul(fmul(x.y, sc), w.y), fmul(fmul(x.z, sc), w.z),
                     fmul(fmul(x.w, sc), w.w));
}

// Calls f(i, y) for this thread's float4 elements i (tid, tid+128, ... in order) of the normed
// vector y = nq_norm(x, sc, w), loading kNqBatch of x and w before using any.
template <typename F>
__device__ __forceinline__ void for_each_normed(const float *x, const float *w, int n4, float sc, F f) {
  for (int i0 = threadIdx.x; i0 < n4; i0 += kNqBatch * kNormThreads) {
    float4 v[kNqBatch], wv[kNqBatch];
    nq_load<true>(v, x, i0, n4);
    nq_load<false>(wv, w, i0, n4);
#pragma unroll
    for (int b = 0; b < kNqBatch; b++) {
      const int i = i0 + b * kNormThreads;
      if (i < n4) f(i, nq_norm(v[b], sc, wv[b]));
    }
  }
}

// Σ of one token's float4 x² into an f64 running sum, lane by lane (x, y, z, w).
__device__ __forceinline__ void add_sq4(double &ss, const float4 &v) {
  ss += (double)fmul(v.x, v.x);
  ss += (double)fmul(v.y, v.y);
  ss += (double)fmul(v.z, v.z);
  ss += (double)fmul(v.w, v.w);
}

// The block's total of the threads' f64 values (xor butterfly per warp, the warps in order)
// through red[kNormThreads / 32]; every thread gets it.
__device__ __forceinline__ double block_total_d(double v, double *red) {
  v = warp_sum_d(v);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  double tot = red[0];
  for (int w = 1; w < kNormThreads / 32; w++) tot += red[w];
  return tot;
}

// The same for a max of floats.
__device__ __forceinline__ float block_max_f(float v, float *red) {
  v = warp_max_f(v);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  float m = red[0];
  for (int w = 1; w < kNormThreads / 32; w++) m = fmaxf(m, red[w]);
  return m;
}

// |y| max over a float4.
__device__ __forceinline__ float amax4(const float4 &y) {
  return fmaxf(fmaxf(fabsf(y.x), fabsf(y.y)), fmaxf(fabsf(y.z), fabsf(y.w)));
}

// The optional f32/f16 copies of token m's normed float4 element i.
__device__ __forceinline__ void store_normed(const NormQuant &p, int m, int i, const float4 &y) {
  if (p.f32_out) ((float4 *)(p.f32_out + (size_t)m * p.ldx))[i] = y;
  if (p.f16_out) {
    ushort4 h;
    h.x = f32_to_f16(y.x);
    h.y = f32_to_f16(y.y);
    h.z = f32_to_f16(y.z);
    h.w = f32_to_f16(y.w);
    ((ushort4 *)(p.f16_out + (size_t)m * p.ldx))[i] = h;
  }
}

// A normed float4 quantized with s; its values are added to the thread's Σq.
__device__ __forceinline__ char4 quant4(const float4 &y, float s, int &sum) {
  char4 q;
  q.x = quant_one(y.x, s);
  q.y = quant_one(y.y, s);
  q.z = quant_one(y.z, s);
  q.w = quant_one(y.w, s);
  sum += q.x + q.y + q.z + q.w;
  return q;
}

// Quantizes token m's normed float4 element i with s into p.q and adds it to the thread's Σq.
__device__ __forceinline__ void quant_store(const NormQuant &p, int m, int i, const float4 &y, float s, int &sum) {
  ((char4 *)(p.q + (size_t)m * p.ldq))[i] = quant4(y, s, sum);
}

// Thread 0 writes token m's scale and Σq (the threads' sums: butterflies, warps in order).
__device__ __forceinline__ void finish_quant(const NormQuant &p, int m, float s, int sum, int *red) {
  sum = warp_sum_i(sum);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = sum;
  __syncthreads();
  if (threadIdx.x == 0) {
    int S = 0;
    for (int w = 0; w < kNormThreads / 32; w++) S += red[w];
    p.scale[m] = s;
    p.sum[m] = S;
  }
}

// xs (optional, 16-byte aligned shared memory of p.n floats): pass 1 copies all of the thread's x
// there with cp.async (through L2, like the loads: other blocks wrote x) in one round trip, while
// the thread's first kNqWBatch float4s of w load into registers; pass 2 overwrites xs with y, and
// pass 3 loads nothing. With n = 2560 that is one round trip for the whole norm instead of four
// (two batches of x, two of w), with n = 6912 three instead of eight: in a fused tail every round
// trip is on the decode step's critical path. Same values in the same order: the same bits.
// kNqWBatch = 5 covers n = 2560 (5 float4 per thread) and keeps the gate+up GEMV (MT 1, TPR 8, G 8)
// at 72 registers: its 864 blocks then fit one wave at 7 per SM (at 8, run 7 measured 80 registers,
// 6 blocks per SM, two waves and 11.2 against 8.6 µs). CI checks the register count (cuda.test.ts).
constexpr int kNqWBatch = 5;

// STAGED (the persistent layer and step; xs and ws required): ws (16-byte aligned shared memory of
// p.n floats) has p.w on its way there by this thread's stage_norm_w, which the persistent
// kernels issue before the grid barrier that precedes the norm (the weights do not depend on the
// data; after it only for the bench's comparison). Pass 2 then reads w from shared memory: after
// the barrier the norm waits on x's round trip alone (n = 6912: one instead of three). Same
// values in the same order: the same bits.
// STAGED = false (every other caller) compiles none of it.
// after_x (STAGED; not NoCopies): called once x's copies are committed, it issues one more
// commit group of cp.async copies that the norm does not wait for (the next GEMV's staged
// weights, bn_chain.cuh): the norm then waits with cp.async.wait_group 1.
struct NoCopies {
  __device__ void operator()() const {}
};
template <bool STAGED, typename AfterX = NoCopies>
__device__ __forceinline__ void block_norm_quant_t(const NormQuant &p, int m, float4 *xs, const float4 *ws,
                                                   AfterX after_x = AfterX()) {
  constexpr bool AX = !std::is_same<AfterX, NoCopies>::value;
  static_assert(STAGED || !AX, "after_x needs the staged norm");
  BN_SHARED(double, red_d, [kNormThreads / 32]);
  BN_SHARED(float, red_f, [kNormThreads / 32]);
  BN_SHARED(int, red_i, [kNormThreads / 32]);
  const float *x = p.x + (size_t)m * p.ldx;
  const int n4 = p.n / 4;
  double ss = 0.0;
  float sc, amax = 0.f;
  if constexpr (STAGED) {
    for (int i = threadIdx.x; i < n4; i += kNormThreads) cp_async16(xs + i, (const float4 *)x + i);
    cp_async_commit();
    // x and w: this thread's own copies, no barrier needed
    if constexpr (AX) {
      after_x();
      cp_async_wait<1>();
    } else {
      cp_async_wait_all();
    }
    for (int i = threadIdx.x; i < n4; i += kNormThreads) add_sq4(ss, xs[i]);
    sc = rms_scale(block_total_d(ss, red_d), p.n, p.eps);
    for (int i = threadIdx.x; i < n4; i += kNormThreads) {
      const float4 y = nq_norm(xs[i], sc, ws[i]);
      amax = fmaxf(amax, amax4(y));
      store_normed(p, m, i, y);
      xs[i] = y;
    }
  } else if (xs) {
    for (int i = threadIdx.x; i < n4; i += kNormThreads) cp_async16(xs + i, (const float4 *)x + i);
    cp_async_commit();
    // w beyond the first register batch (n = 6912: two more batches) goes into L2 now, so those
    // batches wait on L2 after the reductions instead of on DRAM (the norm weights are read once
    // per layer and step: by then the weight stream has evicted them).
    // One 128-byte line per thread and round, not unrolled: the fused GEMV tails must not gain
    // registers (gemv_kernel<1, 8, 8> is held at 72, cuda.test.ts).
    if (n4 > kNqWBatch * kNormThreads) {
#pragma unroll 1
      for (int l = threadIdx.x; l < (p.n + 31) / 32; l += kNormThreads) prefetch_l2(p.w + 32 * l);
    }
    float4 wv[kNqWBatch];
    nq_load<false, kNqWBatch>(wv, p.w, threadIdx.x, n4);
    cp_async_wait_all();  // this thread's own copies: no barrier needed
    for (int i = threadIdx.x; i < n4; i += kNormThreads) add_sq4(ss, xs[i]);
    sc = rms_scale(block_total_d(ss, red_d), p.n, p.eps);
    for (int i0 = threadIdx.x; i0 < n4; i0 += kNqWBatch * kNormThreads) {
      if (i0 != (int)threadIdx.x) nq_load<false, kNqWBatch>(wv, p.w, i0, n4);
#pragma unroll
      for (int b = 0; b < kNqWBatch; b++) {
        const int i = i0 + b * kNormThreads;
        if (i < n4) {
          const float4 y = nq_norm(xs[i], sc, wv[b]);
          amax = fmaxf(amax, amax4(y));
          store_normed(p, m, i, y);
          xs[i] = y;
        }
      }
    }
  } else {
    for (int i0 = threadIdx.x; i0 < n4; i0 += kNqBatch * kNormThreads) {
      float4 v[kNqBatch];
      nq_load<true>(v, x, i0, n4);
#pragma unroll
      for (int b = 0; b < kNqBatch; b++)
        if (i0 + b * kNormThreads < n4) add_sq4(ss, v[b]);
    }
    sc = rms_scale(block_total_d(ss, red_d), p.n, p.eps);
    for_each_normed(x, p.w, n4, sc, [&](int i, const float4 &y) {
      amax = fmaxf(amax, amax4(y));
      store_normed(p, m, i, y);
    });
  }
  if (p.q) {
    const float s = act_scale(block_max_f(amax, red_f));
    int sum = 0;
    if (xs) {
      for (int i = threadIdx.x; i < n4; i += kNormThreads) quant_store(p, m, i, xs[i], s, sum);
    } else {
      for_each_normed(x, p.w, n4, sc, [&](int i, const float4 &y) { quant_store(p, m, i, y, s, sum); });
    }
    finish_quant(p, m, s, sum, red_i);
  }
  __syncthreads();  // the shared partials (and xs) are reused by the next call
}

__device__ __forceinline__ void block_norm_quant(const NormQuant &p, int m, float4 *xs = nullptr) {
  block_norm_quant_t<false>(p, m, xs, nullptr);
}

// Issues this thread's cp.async copies of a norm's weights (n floats) into ws: float4 elements
// tid, tid + 128, …, the ones block_norm_quant_t<true> reads in this thread (so no barrier), one
// commit group; its cp_async_wait_all waits for them.
__device__ __forceinline__ void stage_norm_w(const float *w, int n, float4 *ws) {
  for (int i = threadIdx.x; i < n / 4; i += kNormThreads) cp_async16(ws + i, (const float4 *)w + i);
  cp_async_commit();
}

// Ticket over `total` arrivals (the grid, or a subset of it with its own counter): every block
// calls it after its stores; true in the one that arrives last (which then sees every other
// arrival's stores through L2), which also resets the counter.
__device__ __forceinline__ bool last_arrival(unsigned *counter, unsigned total) {
  BN_SHARED(bool, is_last);
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned t = atomicAdd(counter, 1u);
    is_last = t == total - 1;
    if (is_last) *counter = 0;  // no other block touches it again in this launch
  }
  __syncthreads();
  if (is_last) __threadfence();
  return is_last;
}

// Last-block ticket over the whole grid.
__device__ __forceinline__ bool last_block(unsigned *counter) {
  return last_arrival(counter, gridDim.x * gridDim.y * gridDim.z);
}

// Runs a NormQuant tail for M tokens, one after the other, with the whole (128-thread) block;
// xs as in block_norm_quant (t.n floats, reused per token).
__device__ __forceinline__ void block_tail(const NormQuant &t, int M, float4 *xs = nullptr) {
  for (int m = 0; m < M; m++) block_norm_quant(t, m, xs);
}

// The norm passes keep their vector in shared memory (the default since run 6, which timed batch 1
// at 550 against 524 tok/s without it; BN_TAIL_CACHE=0 turns it off). It adds up to 48 KB of
// dynamic shared memory to the exact GEMV's launch.
extern int g_tail_cache;
// A tail's shared-memory cache is on and fits the default dynamic shared-memory limit.
inline bool tail_cache_fits(int n) { return g_tail_cache && n > 0 && (size_t)n * 4 <= 48 * 1024; }

// ---- per-block timelines (bench only: the trace variants of the GEMM and the exact GEMV) ----------
// A traced launch writes kTraceSlots (bn_kernels.h) u64 per block (blocks in linear order x + y·X + z·X·Y), from
// thread 0: [0] %globaltimer (ns) at entry, [1] clock64 at entry, [2] clock64 after the main (K)
// loop, [3] clock64 when this block starts a reduction or tail (0: it runs none), [4] clock64 at
// its end, [5] %globaltimer at its end, [6] the SM it ran on. The untraced kernels compile none of
// it (TRACE = false): the bench measures where a launch's time goes without changing the
// production kernels' code.
__device__ __forceinline__ unsigned long long trace_gtime() {
#if defined(BN_SIM)
  return bn_sim::now_ns();
#else
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
#endif
}
__device__ __forceinline__ unsigned long long trace_clock() {
#if defined(BN_SIM)
  return bn_sim::now_ns();
#else
  return (unsigned long long)clock64();
#endif
}
__device__ __forceinline__ unsigned trace_smid() {
#if defined(BN_SIM)
  return 0;
#else
  unsigned id;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(id));
  return id;
#endif
}
template <bool TRACE>
__device__ __forceinline__ void trace_put(unsigned long long *t, int slot, unsigned long long v) {
  if (TRACE && t && threadIdx.x == 0) {
    const size_t b = blockIdx.x + (size_t)gridDim.x * (blockIdx.y + (size_t)gridDim.y * blockIdx.z);
    t[b * kTraceSlots + slot] = v;
  }
}
template <bool TRACE>
__device__ __forceinline__ void trace_begin(unsigned long long *t) {
  if (TRACE) {
    trace_put<TRACE>(t, 0, trace_gtime());
    trace_put<TRACE>(t, 1, trace_clock());
    trace_put<TRACE>(t, 3, 0);
    trace_put<TRACE>(t, 6, trace_smid());
  }
}
template <bool TRACE>
__device__ __forceinline__ void trace_end(unsigned long long *t) {
  if (TRACE) {
    trace_put<TRACE>(t, 4, trace_clock());
    trace_put<TRACE>(t, 5, trace_gtime());
  }
}

// ---- programmatic dependent launch (sm_90+, opt-in: BN_PDL=1) -----------------------------------
// With g_pdl every kernel is launched with programmatic stream serialization: the next kernel in
// the stream may start while this one runs. Each kernel therefore calls pdl_wait() before it
// reads anything an earlier kernel wrote (and before any write), then pdl_launch_dependents()
// so that the kernel after it can start its own prologue. Before pdl_wait() a kernel may only
// read immutable data (weights): the GEMV issues its first weight loads there, so they overlap
// the previous kernel's last blocks and the launch. Without g_pdl (or before sm_90) both are
// no-ops and launches are plain stream order.
extern bool g_pdl;
// GEMM kernel: 0 gemm_kernel (BN_GEMM=plain), 1 gemm_pipe_kernel with 3 stages (the default since
// run 6), 2 the same with 6 stages (BN_GEMM=deep).
extern int g_gemm_variant;
// GEMM split-K reduction: 0 atomics into a zeroed sum matrix (BN_GEMM_SPLITK=atomics), 1 partial
// tiles added by the last block (the default since run 6), 2 partial tiles added by a second
// kernel, gemm_reduce_kernel (BN_GEMM_SPLITK=kernel).
extern int g_gemm_splitk;
// Attention staging: 0 the generic copies (BN_ATTN=generic), 1 stage_rows_fast (the default since
// run 6), 2 the ring of tiles (BN_ATTN=ring: attn_ring_kernel while n_head · M <=
// g_attn_ring_max_blocks, the SM count set at device creation, else as 1). Under that same
// one-wave bound the attention kernels also release their PDL dependents at entry.
extern int g_attn_variant;
extern int g_attn_ring_max_blocks;
// BN_ATTN_TAIL=1: batched steps above gemv_max_m tokens also run attn_sub_norm as attention's
// per-token tail (Ops::attention_tail_batched) instead of a norm_quant launch.
extern int g_attn_token_tail;
extern long g_attn_tail_batched_launches;  // attention launches with a tail above kGemvMaxM tokens (the checks read it)
extern long g_attn_ring_launches;  // how many times launch_attention took the ring (the checks read it)
// Stand-alone norm kernel: 0 norm_quant_kernel (verified on an H200), 1 norm_quant_regs_kernel
// (BN_NORM=regs, the row in registers; n <= 8192).
extern int g_norm_variant;
// Exact GEMV inner loop: 0 chunk_dot (verified on an H200), 1 chunk_dot_ilp (BN_GEMV=ilp: the
// chunk's activation loads first, one partial sum per plane), 2 chunk_dot with its planes in the
// rotated order (BN_GEMV=rot, gemv_rot_kernel: no L1 bank conflict), 3 the token rows staged in
// shared memory and read in the rotated order (BN_GEMV=smem, gemv_smem_kernel); same bits.
extern int g_gemv_variant;

// A kernel's raised dynamic shared-memory limit, kept per device. Why: the attribute belongs to
// the device, so an engine created on a second GPU of the same process must raise its own; one
// process-wide high-water mark skipped that, and the second device's launches failed. get() and
// set() act on the current device (the one the engine being configured made current); devices
// past kDevices read the 48 KB default, so they always raise again.
class SmemMark {
 public:
  static constexpr int kDevices = 16, kDefault = 48 * 1024;
  SmemMark() {
    for (int &b : bytes_) b = kDefault;
  }
  int get() const {
    const int d = device();
    return d < 0 ? kDefault : bytes_[d];
  }
  void set(int bytes) {
    const int d = device();
    if (d >= 0) bytes_[d] = bytes;
  }

 private:
  static int device() {
    int d = -1;
    return cudaGetDevice(&d) == cudaSuccess && d >= 0 && d < kDevices ? d : -1;
  }
  int bytes_[kDevices];
};

// Launch-error check used by every launcher: `e` (a launch call's result) or else the last error.
bn_status check_launch(const char *what, cudaError_t e = cudaSuccess);

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// The pair every kernel runs once it may read what earlier kernels wrote.
__device__ __forceinline__ void pdl_enter() {
  pdl_wait();
  pdl_launch_dependents();
}

// Where the long kernels signal: pdl_wait() at entry and pdl_launch_dependents() once their main
// loop is done (the GEMV and GEMM after the K loop, the attention kernels after PV), so the next
// kernel's blocks start (and prefetch their weights) while this kernel runs its epilogue and
// last-block tail, and do not take SM slots from this kernel's later blocks. Run 5 (2026-11-27)
// triggered at entry (pdl_enter) everywhere and measured the decode step slower with PDL than
// without (but back-to-back GEMVs faster); BN_PDL=early keeps that placement for comparison:
// the long kernels then also signal at entry (a second signal has no effect). The short kernels
// (norm, embed, head, select) always signal at entry.
//
// The mode is a __constant__ of each .cu file with long kernels (no relocatable device code, so
// one per file), set through that file's setter when a device is created (pdl_set_early).
#define BN_PDL_MODE(setter)                                                             \
  static __constant__ int c_pdl_early = 0;                                              \
  cudaError_t setter(int on) { return cudaMemcpyToSymbol(c_pdl_early, &on, sizeof on); }
// pdl_wait(), then the signal too under BN_PDL=early (needs BN_PDL_MODE in the file).
#define BN_PDL_ENTER_LONG()                \
  do {                                     \
    pdl_wait();                            \
    if (c_pdl_early) pdl_launch_dependents(); \
  } while (0)
cudaError_t pdl_set_early_gemv(int on);
cudaError_t pdl_set_early_gemm(int on);
cudaError_t pdl_set_early_attn(int on);
cudaError_t pdl_set_early_attn_split(int on);
// All four on the current device (bn_cuda.cu; the device does it at creation from BN_PDL).
bn_status set_pdl_early(bool early);

// Launches kernel k on stream s with `at` (an attribute, or none when `on` is false) and checks
// the launch.
template <typename... P, typename... A>
bn_status launch_attr(const char *what, cudaLaunchAttribute at, bool on, void (*k)(P...), dim3 grid, dim3 block,
                      size_t smem, cudaStream_t s, A... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cfg.attrs = &at;
  cfg.numAttrs = on ? 1 : 0;
  return check_launch(what, cudaLaunchKernelEx(&cfg, k, ((P)args)...));
}

// Launches kernel k on stream s (with the PDL attribute when g_pdl) and checks the launch.
template <typename... P, typename... A>
bn_status launch_k(const char *what, void (*k)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                   A... args) {
  cudaLaunchAttribute at = {};
  at.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  at.val.programmaticStreamSerializationAllowed = 1;
  return launch_attr(what, at, g_pdl, k, grid, block, smem, s, args...);
}

// Launches kernel k as a cooperative launch (every block resident at once, so blocks may wait for
// each other: grid_barrier). A grid that cannot be resident fails with
// cudaErrorCooperativeLaunchTooLarge (the CPU simulation holds up to 8192 threads). No PDL.
template <typename... P, typename... A>
bn_status launch_coop(const char *what, void (*k)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                      A... args) {
  cudaLaunchAttribute at = {};
  at.id = cudaLaunchAttributeCooperative;
  at.val.cooperative = 1;
  return launch_attr(what, at, true, k, grid, block, smem, s, args...);
}

// ---- the grid-wide waits' watchdog ---------------------------------------------------------------
// A persistent kernel's blocks wait for each other: at grid barriers, and the split scores' heads
// for their chunks (k_layer_chain.cu). If a block never arrives (a bug, or a counter that is not
// a multiple of the block count at the launch), a GPU spins until the process is killed: a server
// hangs with its requests, a GPU run's section burns its whole time limit, and nothing says which
// wait. So every such wait polls through a SpinWatch: each 1024th poll (~0.1 ms apart; the polls
// in between cost an increment) reads %globaltimer, and a wait longer than its limit ends the
// launch with a device-side assertion that names the wait. The host sees cudaErrorAssert at its
// next check (the engine's BN_ERR_CUDA, and the engine is poisoned, as after any device fault),
// and the assertion's text, with the block and thread, is on the process's stderr.
// The kernels' waits take kSpinLimitNs: a phase between two barriers runs for microseconds (the
// longest, attention at 4096 positions, ~0.2 ms), ~100x that under compute-sanitizer. The CPU
// simulation runs blocks in turns, so its wall clock says nothing about a wait: there the limit is
// off (0) and the simulator itself fails a launch whose blocks never stop waiting (kMaxParks),
// except for an explicit limit (the watchdog's own check, k_sync.cu's probe kind 2).
#if defined(BN_SIM)
constexpr unsigned long long kSpinLimitNs = 0;
#else
constexpr unsigned long long kSpinLimitNs = 5000000000ull;  // 5 s
#endif

// Ends the launch: a device-side assertion failure with `what` as its text (cudaErrorAssert).
// __assert_fail is what CUDA's assert() calls; called directly it works in release builds too
// (NDEBUG removes assert(), not the function).
__device__ __noinline__ inline void watchdog_fire(const char *what) {
#if defined(BN_SIM)
  bn_sim::device_assert(what, __FILE__, __LINE__);
#else
  __assert_fail(what, __FILE__, __LINE__, "bn::watchdog_fire");
#endif
}

struct SpinWatch {
  unsigned long long limit_ns, t0 = 0;
  unsigned polls = 0;
  __device__ __forceinline__ explicit SpinWatch(unsigned long long limit = kSpinLimitNs) : limit_ns(limit) {}
  // One poll of a wait that has not ended yet: sleeps (on the simulation: yields to the other
  // blocks), and past the limit fires with `what`.
  __device__ __forceinline__ void poll(const char *what) {
    __nanosleep(32);
    if (limit_ns == 0 || (++polls & 1023u) != 0) return;
    const unsigned long long t = trace_gtime();
    if (polls == 1024u) t0 = t;  // the clock starts at the first check: the fast path never reads it
    else if (t - t0 > limit_ns) watchdog_fire(what);
  }
};

// ---- grid-wide barrier (cooperative launches only) ---------------------------------------------
// Every block of the grid waits until all have arrived; then each sees every write the others
// made before arriving. bar: two u32 in global memory, used by one kernel at a time: [0] the
// arrivals, 0 before the first barrier and reset by the last block to arrive at each; [1] the
// generation, advanced once per barrier (any starting value works, so a launch may reuse the words
// a previous one left). Thread 0 of each block arrives for it: it reads the
// generation before its arrival (after it, the last block may already have advanced it), and
// the waiters sleep between polls (__nanosleep: on the CPU simulation that is where the other
// blocks get their turn). Written 2026-11-28 for persistent decode kernels; its cost per barrier
// is measured by the bench (`grid barrier …` rows), not yet on a GPU.
__device__ __forceinline__ void grid_barrier(unsigned *bar) {
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned nb = gridDim.x * gridDim.y * gridDim.z;
    volatile unsigned *gen = bar + 1;
    const unsigned g = *gen;
    __threadfence();  // this block's writes, and the read of g, before its arrival
    if (atomicAdd(bar, 1u) == nb - 1) {
      atomicExch(bar, 0u);  // ready for the next barrier before anyone is released
      __threadfence();
      atomicAdd(bar + 1, 1u);
    } else {
      SpinWatch w;
      while (*gen == g) w.poll("grid_barrier: a block did not arrive within the watchdog's limit");
    }
    __threadfence();  // the others' writes before this block reads them
  }
  __syncthreads();
}

// The counting form (run 8, H200: grid_barrier took 2.1 us at one 128-thread block per SM): one
// u64 that only grows, zero (or a multiple of the grid's block count) before the launch. A block's
// arrival adds 1 and gets the count before it; its barrier ends when the count reaches the next
// multiple of the block count. So the last arrival's own add releases everyone: no reset, fence
// and second atomic after it, one atomic round trip less on the critical path. The last arrival
// knows it is last from the add's result and does not poll (since 2026-11-29: before, it read the
// counter once more, one more L2 round trip for the block that every later phase waits for; its
// fence after the add still orders the others' writes, which their fences put before their adds,
// before its reads). 64 bits: it never wraps (2^64 arrivals).
// watch_ns: the watchdog's limit (SpinWatch; the probe's watchdog check passes a short one).
__device__ __forceinline__ void grid_barrier_count(unsigned long long *count,
                                                   unsigned long long watch_ns = kSpinLimitNs) {
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned long long nb = gridDim.x * gridDim.y * gridDim.z;
    __threadfence();  // this block's writes before its arrival
    const unsigned long long before = atomicAdd(count, 1ull);
    const unsigned long long target = before - before % nb + nb;
    if (before + 1 != target) {
      volatile unsigned long long *c = count;
      SpinWatch w(watch_ns);
      while (*c < target) w.poll("grid_barrier_count: a block did not arrive within the watchdog's limit");
    }
    __threadfence();  // the others' writes before this block reads them
  }
  __syncthreads();
}

// ---- launchers (one .cu each) ---------------------------------------------------------------------
bn_status launch_embed(const EmbedParams &p, int M, const NormQuant &nq, cudaStream_t s);
// Bench and checks (k_sync.cu): grid_barrier in a cooperative launch of `blocks` blocks of
// `threads` threads, `rounds` times two barriers, with a norm per block (`norm`) or none
// (Ops::grid_sync_probe).
// barrier 0: grid_barrier (bar: its two u32); 1: grid_barrier_count (bar: the u64 counter, zeroed
// by the launch first); 2: the watchdog's check (block 0 never arrives).
bn_status launch_grid_sync_probe(int blocks, int threads, int rounds, unsigned *bar, int *slots, int *bad,
                                 unsigned long long *ns, cudaStream_t s, const NormQuant *norm, int barrier);
bn_status launch_norm_quant(const NormQuant &nq, int M, cudaStream_t s);
// The persistent FFN chain (k_ffn_chain.cu): whether the chain's shapes fit together and its
// shared memory fits; how many of its blocks can be resident on sm_count SMs (0: none); one
// cooperative launch of `blocks` blocks (counter: a last-block ticket; bar: an 8-byte barrier
// counter, zeroed by the launch).
// ffn_chain_shapes: the shapes and epilogues alone (the persistent layer checks them too).
bn_status ffn_chain_shapes(const FfnChain &c);
bn_status ffn_chain_check(const FfnChain &c);
int ffn_chain_max_blocks(int sm_count, const FfnChain &c);
bn_status launch_ffn_chain(const FfnChain &c, int blocks, unsigned *counter, unsigned long long *bar, cudaStream_t s);
// The persistent layer (k_layer_chain.cu), the same three: its check also raises the kernel's
// shared-memory limit for this device when the context needs more than 48 KB, so it comes before
// the resident cap and the launch (which does not check again: CudaOps checks once per call).
bn_status layer_chain_check(const LayerChain &c);
int layer_chain_max_blocks(int sm_count, const LayerChain &c);
bn_status launch_layer_chain(const LayerChain &c, int blocks, unsigned *counter, unsigned long long *bar,
                             cudaStream_t s);
// The persistent kernels' synchronization words (bar): the grid barrier's u64 counter, then (the
// persistent layer and step) one u32 per head for the split scores' per-head waits, zeroed by
// each launch. At most kChainMaxHeads heads.
constexpr int kChainMaxHeads = 1024;
constexpr size_t kChainSyncBytes = 8 + 4 * (size_t)kChainMaxHeads;
// The persistent step (k_layer_chain.cu), the same three.
bn_status step_chain_check(const StepChain &s);
int step_chain_max_blocks(int sm_count, const StepChain &s);
bn_status launch_step_chain(const StepChain &s, int blocks, unsigned *counter, unsigned long long *bar,
                            cudaStream_t st);
// Once per device configuration: lets the fast GEMV use kGemvMaxM x max_ld bytes of shared memory
// (capped at the device's opt-in limit).
bn_status configure_gemv(int max_ld, int smem_optin);
// trace (bench only): the exact kernel's timeline variant, kTraceSlots u64 per block; *blocks gets
// the launch's block count.
bn_status launch_gemv(const Mat &w, const Acts &a, int M, const Epi &e, const NormQuant *tail, unsigned *counter,
                      cudaStream_t s, const FastGemv *fast = nullptr, unsigned long long *trace = nullptr,
                      int *blocks = nullptr);
// Once per device configuration: lets the deep GEMM (BN_GEMM=deep, 6 stages) use its 72 KB of
// shared memory when the device's opt-in limit allows; otherwise that variant reports
// BN_ERR_UNSUPPORTED (and tuning skips it).
bn_status configure_gemm(int smem_optin);
// The split-K GEMM's device buffers (bn_cuda.cu allocates them at configure time).
struct GemmScratch {
  int *sums = nullptr;         // atomics: max_tokens × max_n int32 partial sums, zero between uses
  int *parts = nullptr;        // partial tiles (BN_GEMM_SPLITK=tiles): max_parts tiles of 64×64 int32
  unsigned *tickets = nullptr;  // one per output tile (max_tiles), zero between uses
  int max_tiles = 0, max_parts = 0;
};
// The GEMM with launch configuration `c` (bn_tune.h; the device's default, or what tuning chose).
// trace (bench only): the pipelined kernels' timeline variant, kTraceSlots u64 per block; *blocks
// gets the launch's block count.
bn_status launch_gemm(const Mat &w, const Acts &a, int M, const Epi &e, const GemmScratch &gs, int sm_count,
                      const GemmChoice &c, cudaStream_t s, unsigned long long *trace = nullptr,
                      int *blocks = nullptr);
// The K splits that launch makes.
int gemm_splits(int n, int k, int M, const GemmScratch &gs, int sm_count, const GemmChoice &c);
// The K splits of the last GEMM launched (the tests report that a check split K).
extern int g_gemm_last_split;
bn_status launch_attention(const AttnParams &p, int M, const NormQuant *tail, unsigned *counter, cudaStream_t s,
                           const FastAttn *split = nullptr);
bn_status configure_attention(int max_ctx);
// The kernels' tickets (kTickets counters, each back at 0 when its launch ends, so kernels in
// stream order share them): the GEMV's is counter[0]; the exact attention's tail tickets are
// counter[m] for token m; the fast numerics' split-KV attention (k_attn_split.cu) takes counter[1]
// for its statistics and counter[2 + m*n_head + h] for the heads' combines.
constexpr int kTickets = 4096;
static_assert(kAttnTailTokens <= kTickets, "one tail ticket per token");
bn_status launch_attention_split(const AttnParams &p, const FastAttn &f, int M, unsigned *counter, cudaStream_t s);
cudaError_t set_attention_split_smem(int bytes);
// The LM head. gemm (R > kGemvMaxM): the f16 tensor-core kernel `variant` (-1: g_head_variant;
// 0 head_mma_kernel, 1 pipelined 3 stages, 2 "wide" (32 columns per warp, 2 stages), 3 wide with
// 3 stages, 4 wide with 8 warps; all give the same bits; 1.. need configure_head to have raised
// their shared memory, else 0 runs).
bn_status launch_head(const HeadParams &p, int R, bool gemm, cudaStream_t s, int variant = -1);
// Once per device configuration: the pipelined head kernels' dynamic shared memory (up to 92 KB).
bn_status configure_head(int smem_optin);
bn_status launch_select(const SelectParams &p, int R, cudaStream_t s);


}  // namespace bn
