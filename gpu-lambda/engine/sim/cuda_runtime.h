// CUDA on the CPU, for the engine's own kernel sources (the BN_SIM build; `make sim-test`).
//
// Why: the CPU emulation (bn_emu.cpp) is a second implementation of every kernel, so CI checks
// the orchestration and the numerics but never runs a line of the kernels themselves. This
// header lets g++ compile the unchanged k_*.cu and bn_cuda.cu files (it is found as
// <cuda_runtime.h> through -Isim) and run them: every block of a launch in turn (the blocks of a
// cooperative launch interleaved, so they can wait for each other), its threads as cooperative
// fibers that switch at __syncthreads(), at warp collectives (shuffles, mma) and in __nanosleep.
// The test program then runs its GPU sections (GPU vs emulation, bit for bit) on this "device".
//
// What it checks: indexing, shared-memory use, barriers (a barrier that not every live thread of
// the block or warp reaches, or that a block's threads reach at different __syncthreads calls,
// is reported as a launch error instead of hanging), launch shapes and dynamic shared-memory
// limits, last-block tickets, graph capture, cp.async waits (a copy lands only at the wait that
// covers it), and the kernels' arithmetic (host numerics: BN_DEVICE_CODE is 0, which the
// emulation already matches to the GPU's bits). Shared memory, static and dynamic, starts as 0xcd
// bytes in every block, so a read before the block's own write shows in the results.
// BN_SIM_ORDER=reverse runs blocks and threads last to first, so that a result that depends on
// their order (a race) shows; SIM_ASAN=1 (Makefile) adds AddressSanitizer.
// What it cannot check: timing, races that neither order exposes, memory ordering (fences are
// no-ops), and the hardware's own instruction semantics (dp4a, mma.sync and cp.async are computed
// from their documented semantics; mma.sync from the PTX fragment layouts in bn_mma.h).
#pragma once

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

// ---- keywords ------------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
// A kernel's static shared memory is declared with BN_SHARED(T, name, dims) (bn_device.cuh gives the
// CUDA form, `__shared__ T name dims`). Here it becomes a function static: one copy, which is the
// block's because blocks run one at a time (and every thread of the block sees it), registered
// with the executor as the declaration is reached. The first thread of each block to reach it
// fills it with the pattern the dynamic shared memory gets (0xcd bytes), so a read before the
// block's own write sees garbage, as on a GPU, not the previous block's values.
// Why a macro and not `__shared__`: the executor must know each variable's address and size, and a
// keyword in front of a declaration cannot name the variable it declares. (One linker section
// for all of them fails with GCC: inline functions' statics are COMDAT and conflict with the
// kernels' own.) A plain `__shared__` does not compile here, so none is missed.
namespace bn_sim {
void shared_static(void *p, size_t bytes);
}
#define BN_SHARED(T, name, ...) \
  static T name __VA_ARGS__;    \
  ::bn_sim::shared_static((void *)&(name), sizeof(name))
#define __shared__ use_BN_SHARED_for_static_shared_memory
#define __align__(n) __attribute__((aligned(n)))
// __constant__ variables are plain (file-static where declared so) globals; cudaMemcpyToSymbol
// below copies into them.
#define __constant__

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// The built-in index variables: plain globals, threadIdx set by the scheduler before it resumes a
// thread.
extern dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace bn_sim {
// `where`: the barrier's source location; threads of a block that meet at different __syncthreads
// calls are reported (CUDA leaves that undefined; hardware matches them by count).
void syncthreads(const char *where);
// Warp collective: every lane of the current thread's warp deposits `bytes` (<= 64) and waits
// for the others; returns the phase's deposit area, lane L's deposit at [L * 64].
const unsigned char *warp_exchange(const void *mine, size_t bytes);
void *dyn_smem();
// cp.async as the PTX ISA allows it to land at the latest: a copy (16 bytes, `bytes` of them read
// from src and the rest zero-filled) is queued in the thread's open group, commit closes the
// group, and the copies (and their source reads) happen only when a wait covers them:
// wait_group(n) completes the oldest committed groups until at most n remain, wait_all every
// copy, committed or not. A read of the tile before the wait that covers it sees the old bytes.
void cp_async(void *dst, const void *src, int bytes);
void cp_async_commit();
void cp_async_wait_group(int n);
void cp_async_wait_all();
void mma_s8u8(int c[4], const uint32_t a[4], const uint32_t b[2]);
void mma_f16(float c[4], const uint32_t a[4], const uint32_t b[2]);
// Nanoseconds of a steady clock: stands in for %globaltimer and clock64() (the bench's block
// timelines run on the simulation too; their values mean nothing there).
unsigned long long now_ns();
}  // namespace bn_sim

// ---- vector types (CUDA's sizes and alignments) ------------------------------------------------------
#define BN_SIM_VEC2(T, N, A) \
  struct alignas(A) N {      \
    T x, y;                  \
  };                         \
  inline N make_##N(T x, T y) { return N{x, y}; }
#define BN_SIM_VEC4(T, N, A) \
  struct alignas(A) N {      \
    T x, y, z, w;            \
  };                         \
  inline N make_##N(T x, T y, T z, T w) { return N{x, y, z, w}; }
BN_SIM_VEC2(float, float2, 8)
BN_SIM_VEC4(float, float4, 16)
BN_SIM_VEC2(int, int2, 8)
BN_SIM_VEC4(int, int4, 16)
BN_SIM_VEC2(unsigned, uint2, 8)
BN_SIM_VEC4(unsigned, uint4, 16)
BN_SIM_VEC4(signed char, char4, 4)
BN_SIM_VEC4(unsigned char, uchar4, 4)
BN_SIM_VEC2(unsigned short, ushort2, 4)
BN_SIM_VEC4(unsigned short, ushort4, 8)
BN_SIM_VEC2(double, double2, 16)
#undef BN_SIM_VEC2
#undef BN_SIM_VEC4

// ---- device intrinsics -----------------------------------------------------------------------------------
#define BN_SIM_STR2(x) #x
#define BN_SIM_STR(x) BN_SIM_STR2(x)
#define __syncthreads() bn_sim::syncthreads(__FILE__ ":" BN_SIM_STR(__LINE__))
inline void __threadfence() {}
inline void __threadfence_block() {}
// A thread that spins on another block's progress must call __nanosleep in its wait loop (good
// practice on a GPU too): here it yields, so that the other blocks of a cooperative launch run.
namespace bn_sim {
void yield();
}
// CUDA's device-side assertion (what assert() calls, and the engine's watchdog directly): the
// thread stops and the launch fails with cudaErrorAssert and this text.
namespace bn_sim {
void device_assert(const char *what, const char *file, unsigned line);
}
inline void __nanosleep(unsigned ns) {
  (void)ns;
  bn_sim::yield();
}
template <typename T>
inline T __ldg(const T *p) {
  return *p;
}
template <typename T>
inline T __ldcg(const T *p) {
  return *p;
}
template <typename T>
inline T __ldcs(const T *p) {
  return *p;
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  static_assert(sizeof(T) <= 8, "shuffle of more than 8 bytes");
  (void)mask;
  (void)width;
  const unsigned char *all = bn_sim::warp_exchange(&v, sizeof(T));
  T r;
  memcpy(&r, all + (size_t)(((int)(threadIdx.x & 31)) ^ lane_mask) * 64, sizeof(T));
  return r;
}
// Fibers switch only at barriers, collectives and __nanosleep, never inside these: plain
// read-modify-writes are atomic.
template <typename T>
inline T atomicAdd(T *p, T v) {
  const T old = *p;
  *p = old + v;
  return old;
}
template <typename T>
inline T atomicCAS(T *p, T compare, T v) {
  const T old = *p;
  if (old == compare) *p = v;
  return old;
}
template <typename T>
inline T atomicExch(T *p, T v) {
  const T old = *p;
  *p = v;
  return old;
}
inline int __dp4a(int a, int b, int c) {
  for (int i = 0; i < 4; i++) c += (int)(int8_t)(a >> (8 * i)) * (int)(int8_t)(b >> (8 * i));
  return c;
}
inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
inline float __fma_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline unsigned __float_as_uint(float f) {
  unsigned u;
  memcpy(&u, &f, 4);
  return u;
}
inline float __uint_as_float(unsigned u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}
// CUDA's global min/max for mixed argument types.
template <typename A, typename B>
inline typename std::common_type<A, B>::type min(A a, B b) {
  typedef typename std::common_type<A, B>::type C;
  return (C)a < (C)b ? (C)a : (C)b;
}
template <typename A, typename B>
inline typename std::common_type<A, B>::type max(A a, B b) {
  typedef typename std::common_type<A, B>::type C;
  return (C)a < (C)b ? (C)b : (C)a;
}

// ---- runtime API (the subset the engine and its test use) ------------------------------------------
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInsufficientDriver = 35,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorStreamCaptureUnsupported = 900,
  cudaErrorMisalignedAddress = 716,
  cudaErrorAssert = 710,
  cudaErrorLaunchFailure = 719,
  cudaErrorCooperativeLaunchTooLarge = 720,
};
typedef cudaError_t cudaError;
struct CUstream_st;
typedef CUstream_st *cudaStream_t;
struct CUevent_st;
typedef CUevent_st *cudaEvent_t;
struct CUgraph_st;
typedef CUgraph_st *cudaGraph_t;
struct CUgraphExec_st;
typedef CUgraphExec_st *cudaGraphExec_t;
enum cudaMemcpyKind { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
enum cudaStreamCaptureMode { cudaStreamCaptureModeGlobal, cudaStreamCaptureModeThreadLocal, cudaStreamCaptureModeRelaxed };
enum cudaLaunchAttributeID {
  cudaLaunchAttributeCooperative = 2,
  cudaLaunchAttributeProgrammaticStreamSerialization = 5
};
#define cudaStreamNonBlocking 0x01
struct cudaLaunchAttributeValue {  // a union in CUDA; each attribute reads its own field here
  int programmaticStreamSerializationAllowed;
  int cooperative;
};
struct cudaLaunchAttribute {
  cudaLaunchAttributeID id;
  cudaLaunchAttributeValue val;
};
struct cudaLaunchConfig_t {
  dim3 gridDim, blockDim;
  size_t dynamicSmemBytes;
  cudaStream_t stream;
  cudaLaunchAttribute *attrs;
  unsigned numAttrs;
};
struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  size_t sharedMemPerBlockOptin;
  int multiProcessorCount;
  int major, minor;
};

const char *cudaGetErrorName(cudaError_t e);
const char *cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetLastError();
cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaGetDevice(int *d);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d);
cudaError_t cudaRuntimeGetVersion(int *v);
cudaError_t cudaDriverGetVersion(int *v);
cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total_b);
cudaError_t cudaMalloc(void **p, size_t bytes);
cudaError_t cudaFree(void *p);
cudaError_t cudaMallocHost(void **p, size_t bytes);
cudaError_t cudaFreeHost(void *p);
cudaError_t cudaMemset(void *p, int v, size_t bytes);
cudaError_t cudaMemsetAsync(void *p, int v, size_t bytes, cudaStream_t s = nullptr);
cudaError_t cudaMemcpy(void *d, const void *s, size_t bytes, cudaMemcpyKind k);
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t bytes, cudaMemcpyKind k, cudaStream_t st = nullptr);
template <typename T>
cudaError_t cudaMemcpyToSymbol(T &symbol, const void *src, size_t bytes, size_t offset = 0) {
  if (offset + bytes > sizeof(T)) return cudaErrorInvalidValue;
  memcpy((char *)&symbol + offset, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaEventCreate(cudaEvent_t *e);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s = nullptr);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b);
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *ex, cudaGraph_t g, unsigned long long flags = 0);
cudaError_t cudaGraphDestroy(cudaGraph_t g);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t ex);
cudaError_t cudaGraphLaunch(cudaGraphExec_t ex, cudaStream_t s);

namespace bn_sim {
// cooperative: every block of the grid is resident at once (cudaLaunchAttributeCooperative), so
// blocks may wait for each other (grid-wide barriers); bn_sim.cpp runs them interleaved.
cudaError_t launch(const void *kernel, dim3 grid, dim3 block, size_t dyn_smem_bytes, std::function<void()> body,
                   bool cooperative = false);
cudaError_t set_max_dyn_smem(const void *kernel, int bytes);
}  // namespace bn_sim

template <typename K>
cudaError_t cudaFuncSetAttribute(K *kernel, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaErrorInvalidValue;
  return bn_sim::set_max_dyn_smem((const void *)kernel, value);
}

template <typename... P, typename... A>
cudaError_t cudaLaunchKernelEx(const cudaLaunchConfig_t *cfg, void (*kernel)(P...), A &&...args) {
  // The arguments are copied now, as a launch copies its parameter block.
  auto params = std::make_tuple((typename std::decay<P>::type)(args)...);
  bool coop = false;
  for (unsigned i = 0; i < cfg->numAttrs; i++)
    if (cfg->attrs[i].id == cudaLaunchAttributeCooperative) coop = cfg->attrs[i].val.cooperative != 0;
  return bn_sim::launch((const void *)kernel, cfg->gridDim, cfg->blockDim, cfg->dynamicSmemBytes,
                        [kernel, params]() { std::apply(kernel, params); }, coop);
}
