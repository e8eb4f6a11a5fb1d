// Self-test of the CPU simulation (bn_sim.cpp): the executor's semantics the engine's checks rely
// on, and the failures it must report instead of hanging or passing. `make sim-selftest`, then
// ../test/build/bn_sim_selftest; prints one line per check and exits with the failure count.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

#include "../src/bn_device.cuh"
#include "../src/bn_mma.h"
#include "cuda_runtime.h"

static int g_pass = 0, g_fail = 0;
static void check(bool ok, const char *name) {
  printf("[%s] sim/%s\n", ok ? "PASS" : "FAIL", name);
  (ok ? g_pass : g_fail)++;
}

template <typename... P, typename... A>
static cudaError_t launch(void (*k)(P...), dim3 grid, dim3 block, size_t smem, A... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  return cudaLaunchKernelEx(&cfg, k, ((P)args)...);
}
template <typename... P, typename... A>
static cudaError_t launch_coop(void (*k)(P...), dim3 grid, dim3 block, A... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cudaLaunchAttribute at[1];
  at[0].id = cudaLaunchAttributeCooperative;
  at[0].val.cooperative = 1;
  cfg.attrs = at;
  cfg.numAttrs = 1;
  return cudaLaunchKernelEx(&cfg, k, ((P)args)...);
}

// Each thread: its warp's sum of (block-linear index) by an xor butterfly, and its block's
// reversed index through shared memory.
__global__ void k_shuffle_shared(int *sums, int *rev) {
  BN_SHARED(int, s, [256]);
  const int i = (int)threadIdx.x, n = (int)blockDim.x;
  int v = i;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  s[i] = i;
  __syncthreads();
  sums[blockIdx.x * n + i] = v;
  rev[blockIdx.x * n + i] = s[n - 1 - i] + 1000 * (int)blockIdx.x;
}

// Threads 0..15 meet the others at a different __syncthreads: undefined in CUDA, reported here.
__global__ void k_divergent_barrier(int *out) {
  if (threadIdx.x < 16) __syncthreads();
  __syncthreads();
  out[threadIdx.x] = 1;
}

// Threads past 16 exit before the barrier: they count as arrived (as on sm_70 and newer).
__global__ void k_barrier_after_exit(int *out) {
  if (threadIdx.x >= 16) return;
  __syncthreads();
  out[threadIdx.x] = 2;
}

__global__ void k_shuffle_after_exit(int *out) {
  if (threadIdx.x >= 16) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (int)threadIdx.x, 1);
}

__global__ void k_dyn(int *out) {
  int *d = (int *)bn_sim::dyn_smem();
  d[threadIdx.x] = (int)threadIdx.x;
  __syncthreads();
  out[threadIdx.x] = d[blockDim.x - 1 - threadIdx.x];
}

// Static shared memory starts undefined in every block: keep() returns what the variable held
// and then stores v. Called twice per block, the first call sees the fill (0xcd bytes), not the
// previous block's 6, and the second sees the first's 5 (the block's own copy persists).
__device__ int keep(int v) {
  BN_SHARED(int, s);
  const int old = s;
  __syncthreads();
  if (threadIdx.x == 0) s = v;
  __syncthreads();
  return old;
}
__global__ void k_static_fresh(int *out) {
  const int a = keep(5);
  const int b = keep(6);
  if (threadIdx.x == 7) {
    out[2 * blockIdx.x] = a;
    out[2 * blockIdx.x + 1] = b;
  }
}

// Cooperative launch: the engine's grid-wide barrier (bn_device.cuh grid_barrier: waiters sleep in
// __nanosleep, where the other blocks get their turn) between a round of writes and a round of
// reads, three times. Each block also keeps its index in a static shared variable across the
// barriers, where the other blocks run: it must read back its own.
__global__ void k_coop(unsigned *bar, int *slots, int *bad) {
  BN_SHARED(int, mine);
  if (threadIdx.x == 0) mine = (int)blockIdx.x;
  for (int r = 0; r < 3; r++) {
    if (threadIdx.x == 0) slots[blockIdx.x] = 100 * r + (int)blockIdx.x;
    bn::grid_barrier(bar);
    const int o = ((int)blockIdx.x + 1 + (int)threadIdx.x) % (int)gridDim.x;  // another block's slot
    if (slots[o] != 100 * r + o || mine != (int)blockIdx.x) atomicAdd(bad, 1);
    bn::grid_barrier(bar);
  }
}
// Two blocks hand a flag back and forth: block 0 raises f[0] and waits for f[1], block 1 waits
// for f[0] and raises f[1]. Whichever runs first waits for the other, so without a cooperative
// launch it never completes (blocks run one at a time here; on a GPU nothing guarantees
// otherwise).
__global__ void k_wait_other_block(int *f) {
  if (threadIdx.x != 0) return;
  volatile int *v = f;
  if (blockIdx.x == 0) {
    v[0] = 1;
    while (v[1] == 0) __nanosleep(100);
  } else {
    while (v[0] == 0) __nanosleep(100);
    v[1] = 1;
  }
}

// A device-side assertion (what the engine's watchdog fires): thread 5 of block 1 stops there
// while its block's other threads wait at a barrier it never reaches.
__global__ void k_assert(int *out) {
  if (blockIdx.x == 1 && threadIdx.x == 5) bn_sim::device_assert("k_assert's check", __FILE__, __LINE__);
  __syncthreads();
  if (threadIdx.x == 0) out[blockIdx.x] = 1;
}

// A deliberate race: each thread writes its slot and, with no barrier, reads its neighbour's.
// Threads run in turn between barriers, so what it reads shows the order (BN_SIM_ORDER).
__global__ void k_race(int *out, int *ticket) {
  BN_SHARED(int, s, [64]);
  if (threadIdx.x == 0)
    for (int i = 0; i < 64; i++) s[i] = -1;
  __syncthreads();
  const int i = (int)threadIdx.x;
  s[i] = i;
  out[blockIdx.x * 64 + i] = s[(i + 1) % 64];
  if (i == 0) ticket[blockIdx.x] = atomicAdd(ticket + 3, 1);
}

// cp.async lands at the wait that covers it: two groups of one 16-byte copy each; the tile is read
// before any wait, after wait_group(1) (the older group only) and after wait_all.
__global__ void k_cp_async(const int *src, int *out) {
  BN_SHARED(__align__(16) int, tile, [8]);
  if (threadIdx.x != 0) return;
  for (int i = 0; i < 8; i++) tile[i] = -1;
  bn_sim::cp_async(tile, src, 16);
  bn_sim::cp_async_commit();
  bn_sim::cp_async(tile + 4, src + 4, 8);  // 8 bytes copied, 8 zero-filled
  bn_sim::cp_async_commit();
  out[0] = tile[0];
  bn_sim::cp_async_wait_group(1);
  out[1] = tile[0];
  out[2] = tile[4];
  bn_sim::cp_async_wait_all();
  out[3] = tile[4];
  out[4] = tile[5];
  out[5] = tile[6];
}

// cp.async from or to an address off 16 bytes: a fault on the GPU, an error here.
__global__ void k_cp_misaligned(const int *src, int *out, int dst_off, int src_off) {
  BN_SHARED(__align__(16) int, tile, [12]);
  if (threadIdx.x != 0) return;
  bn_sim::cp_async(tile + dst_off, src + src_off, 16);
  bn_sim::cp_async_wait_all();
  out[0] = tile[dst_off];
}

__global__ void k_count(int *c) {
  if (threadIdx.x == 0) atomicAdd(c, 1);
}

// One warp: D = A (16x32 s8) · B (32x8 u8) through mma_s8u8, fragments from bn_mma.h's layouts.
__global__ void k_mma_s8(const int8_t *A, const uint8_t *Bt, int *D) {
  const int lane = (int)threadIdx.x, g = lane >> 2, t = lane & 3;
  uint32_t a[4], b[2];
  bn::s8_a_frag(A, 32, 0, 0, g, t, a);
  b[0] = bn::ld32(Bt + g * 32 + 4 * t);
  b[1] = bn::ld32(Bt + g * 32 + 16 + 4 * t);
  int c[4] = {lane, 0, 0, 0};
  bn_sim::mma_s8u8(c, a, b);
  D[g * 8 + 2 * t] = c[0];
  D[g * 8 + 2 * t + 1] = c[1];
  D[(g + 8) * 8 + 2 * t] = c[2];
  D[(g + 8) * 8 + 2 * t + 1] = c[3];
}

// One warp: D = A (16x16 f16) · B (16x8 f16) through mma_f16.
__global__ void k_mma_f16(const uint16_t *A, const uint16_t *Bt, float *D) {
  const int lane = (int)threadIdx.x, g = lane >> 2, t = lane & 3;
  uint32_t a[4], b[2];
  bn::f16_a_frag(A, 16, 0, 0, g, t, a);
  bn::f16_b_frag(Bt, 16, 0, 0, g, t, b);
  float c[4] = {0.f, 0.f, 0.f, 0.f};
  bn_sim::mma_f16(c, a, b);
  D[g * 8 + 2 * t] = c[0];
  D[g * 8 + 2 * t + 1] = c[1];
  D[(g + 8) * 8 + 2 * t] = c[2];
  D[(g + 8) * 8 + 2 * t + 1] = c[3];
}

// --fault KIND: a kernel that writes one element past its array, after other kernels have run
// deep frames on the fiber stacks and left them. Under AddressSanitizer the run must end in the
// sanitizer's report (cuda.test.ts checks each kind): the ASan run of the checks is known to
// catch what it is there for, including on stacks that earlier blocks used.
__attribute__((noinline)) static int deep_frames(int d) {
  volatile int v[256];
  for (int i = 0; i < 256; i++) v[i] = i + d;
  return d ? deep_frames(d - 1) + v[d] : v[5];
}
__global__ void k_deep_frames(int *out) { out[threadIdx.x] = deep_frames(24); }
__global__ void k_fault_stack(int *out, int n) {  // n = 17: one past a thread's local array
  volatile int v[16];
  for (int i = 0; i < n; i++) v[i] = i;
  out[threadIdx.x] = v[3];
}
__global__ void k_fault_global(int *buf, int n) {  // n: the allocation's length in ints
  if (threadIdx.x == 0) buf[n] = 1;
}
__global__ void k_fault_shared(int *out, int n) {  // n: the dynamic shared memory's length in ints
  int *d = (int *)bn_sim::dyn_smem();
  if (threadIdx.x == 0) d[n] = 1;
  out[threadIdx.x] = 0;
}
static int run_fault(const char *kind) {
  const bool stack = !strcmp(kind, "stack"), global = !strcmp(kind, "global"), shared = !strcmp(kind, "shared");
  if (!stack && !global && !shared) {
    fprintf(stderr, "--fault takes stack, global or shared\n");
    return 2;
  }
  int *out = nullptr;
  if (cudaMalloc((void **)&out, 128 * sizeof(int)) != cudaSuccess) return 2;
  for (int r = 0; r < 3; r++) launch(k_deep_frames, dim3(4), dim3(128), 0, out);
  const bool deep_ok = cudaDeviceSynchronize() == cudaSuccess && cudaGetLastError() == cudaSuccess;
  if (deep_ok && stack) launch(k_fault_stack, dim3(2), dim3(128), 0, out, 17);
  if (deep_ok && global) launch(k_fault_global, dim3(1), dim3(32), 0, out, 128);
  if (deep_ok && shared) launch(k_fault_shared, dim3(1), dim3(32), 256 * sizeof(int), out, 256);
  cudaDeviceSynchronize();
  cudaFree(out);
  if (!deep_ok) return 2;
  printf("fault '%s' not detected\n", kind);
  return 3;
}

int main(int argc, char **argv) {
  if (argc == 3 && !strcmp(argv[1], "--fault")) return run_fault(argv[2]);
  {  // shuffles, shared memory and barriers over 2 blocks of 96 threads (3 warps)
    std::vector<int> sums(192), rev(192);
    const cudaError_t e = launch(k_shuffle_shared, dim3(2), dim3(96), 0, sums.data(), rev.data());
    bool ok = e == cudaSuccess && cudaGetLastError() == cudaSuccess;
    for (int b = 0; b < 2; b++)
      for (int i = 0; i < 96; i++) {
        int s = 0;  // the sum of the warp's indices
        for (int j = i / 32 * 32; j < i / 32 * 32 + 32; j++) s += j;
        ok = ok && sums[(size_t)(b * 96 + i)] == s && rev[(size_t)(b * 96 + i)] == 95 - i + 1000 * b;
      }
    check(ok, "shuffle_shared: xor butterflies per warp, shared memory per block, 2 blocks");
  }
  {  // a barrier that only some threads reach is a launch failure, not a hang
    std::vector<int> out(64, 0);
    launch(k_divergent_barrier, dim3(1), dim3(64), 0, out.data());
    check(cudaGetLastError() == cudaErrorLaunchFailure, "divergent __syncthreads is reported (cudaErrorLaunchFailure)");
    launch(k_barrier_after_exit, dim3(1), dim3(64), 0, out.data());
    check(cudaGetLastError() == cudaSuccess && out[0] == 2 && out[15] == 2 && out[16] == 0,
          "a barrier after some threads exited completes");
    launch(k_shuffle_after_exit, dim3(1), dim3(32), 0, out.data());
    check(cudaGetLastError() == cudaErrorLaunchFailure, "a full-warp shuffle after half the warp exited is reported");
    check(cudaGetLastError() == cudaSuccess, "the error is cleared once read");
  }
  {  // static shared memory: undefined (0xcd bytes) at each block's start, kept within the block
    std::vector<int> out(6, 0);
    launch(k_static_fresh, dim3(3), dim3(64), 0, out.data());
    const int fill = (int)0xcdcdcdcdu;
    bool ok = cudaGetLastError() == cudaSuccess;
    for (int b = 0; b < 3; b++) ok = ok && out[(size_t)(2 * b)] == fill && out[(size_t)(2 * b + 1)] == 5;
    check(ok, "static shared memory starts as 0xcd bytes in every block, not the previous block's values");
  }
  {  // cooperative launches: blocks wait for each other at a grid-wide barrier
    unsigned bar[2] = {0, 0};
    std::vector<int> slots(5, -1);
    int bad = 0;
    launch_coop(k_coop, dim3(5), dim3(64), bar, slots.data(), &bad);
    check(cudaGetLastError() == cudaSuccess && bad == 0 && bar[0] == 0 && bar[1] == 6,
          "cooperative launch: 5 blocks meet at 6 grid-wide barriers; each keeps its own static shared memory");
    launch_coop(k_coop, dim3(200), dim3(64), bar, slots.data(), &bad);
    check(cudaGetLastError() == cudaErrorCooperativeLaunchTooLarge,
          "a cooperative grid larger than the simulation holds at once is refused (cudaErrorCooperativeLaunchTooLarge)");
    int f[2] = {0, 0};
    launch(k_wait_other_block, dim3(2), dim3(32), 0, f);
    const cudaError_t e = cudaGetLastError();
    check(e == cudaErrorLaunchFailure && f[1] == 0,
          "a plain launch in which blocks wait for each other fails instead of hanging");
    f[0] = f[1] = 0;
    launch_coop(k_wait_other_block, dim3(2), dim3(32), f);
    check(cudaGetLastError() == cudaSuccess && f[0] == 1 && f[1] == 1, "the same waits complete in a cooperative launch");
  }
  {  // a device-side assertion fails the launch with cudaErrorAssert and its text; the next runs
    int out[3] = {0, 0, 0};
    launch(k_assert, dim3(3), dim3(32), 0, out);
    const cudaError_t e = cudaGetLastError();
    const bool named = strstr(cudaGetErrorString(e), "k_assert's check") != nullptr &&
                       strstr(cudaGetErrorString(e), "block (1,0,0), thread (5,0,0)") != nullptr;
    check(e == cudaErrorAssert && named && out[1] == 0,  // (which other blocks ran depends on the order)
          "a device-side assertion ends the launch with cudaErrorAssert, naming its text, block and thread");
    launch_coop(k_assert, dim3(3), dim3(32), out);
    check(cudaGetLastError() == cudaErrorAssert, "... in a cooperative launch too");
    int f[2] = {0, 0};
    launch_coop(k_wait_other_block, dim3(2), dim3(32), f);
    check(cudaGetLastError() == cudaSuccess && f[0] == 1 && f[1] == 1, "and the next launch runs");
  }
  {  // dynamic shared memory: 48 KB without the attribute, the opt-in limit with it
    std::vector<int> out(128, 0);
    check(launch(k_dyn, dim3(1), dim3(128), 64 * 1024, out.data()) == cudaErrorInvalidValue,
          "64 KB of dynamic shared memory without cudaFuncSetAttribute is refused");
    cudaGetLastError();
    check(cudaFuncSetAttribute(k_dyn, cudaFuncAttributeMaxDynamicSharedMemorySize, 300 * 1024) == cudaErrorInvalidValue,
          "an attribute over the opt-in limit (227 KB) is refused");
    cudaGetLastError();
    bool ok = cudaFuncSetAttribute(k_dyn, cudaFuncAttributeMaxDynamicSharedMemorySize, 100 * 1024) == cudaSuccess &&
              launch(k_dyn, dim3(1), dim3(128), 64 * 1024, out.data()) == cudaSuccess &&
              cudaGetLastError() == cudaSuccess;
    for (int i = 0; i < 128; i++) ok = ok && out[(size_t)i] == 127 - i;
    check(ok, "with the attribute set, 64 KB of dynamic shared memory works");
    check(launch(k_dyn, dim3(1), dim3(2048), 0, out.data()) == cudaErrorInvalidConfiguration,
          "a block of 2048 threads is refused");
    cudaGetLastError();
  }
  {  // the order of blocks and threads: first to last, or last to first with BN_SIM_ORDER=reverse
    const char *o = getenv("BN_SIM_ORDER");
    const bool rev = o && strcmp(o, "reverse") == 0;
    std::vector<int> out(3 * 64, 0), ticket(4, 0);
    launch(k_race, dim3(3), dim3(64), 0, out.data(), ticket.data());
    bool ok = cudaGetLastError() == cudaSuccess;
    for (int b = 0; b < 3; b++) {
      ok = ok && ticket[(size_t)b] == (rev ? 2 - b : b);
      for (int i = 0; i < 64; i++) {
        // forward: the neighbour has not run yet (-1), except thread 63's (thread 0); reverse: it has
        const int want = rev ? (i < 63 ? i + 1 : -1) : (i < 63 ? -1 : 0);
        ok = ok && out[(size_t)(b * 64 + i)] == want;
      }
    }
    check(ok, rev ? "BN_SIM_ORDER=reverse: blocks and threads run last to first (a race shows)"
                  : "blocks and threads run first to last (a race shows)");
  }
  {  // cp.async: nothing lands before its wait, wait_group(n) leaves the n newest groups in flight
    std::vector<int> src = {10, 11, 12, 13, 14, 15, 16, 17}, out(6, 0);
    launch(k_cp_async, dim3(1), dim3(32), 0, src.data(), out.data());
    check(cudaGetLastError() == cudaSuccess && out[0] == -1 && out[1] == 10 && out[2] == -1 && out[3] == 14 &&
              out[4] == 15 && out[5] == 0,
          "cp.async lands at the wait that covers it (wait_group(1) lands the older group; zero fill)");
  }
  {  // cp.async's 16-byte alignment, of both addresses (the source only when it reads any)
    std::vector<int> src = {10, 11, 12, 13, 14, 15, 16, 17}, out(1, 0);
    launch(k_cp_misaligned, dim3(1), dim3(32), 0, src.data(), out.data(), 1, 0);
    const cudaError_t e_dst = cudaGetLastError();
    launch(k_cp_misaligned, dim3(1), dim3(32), 0, src.data(), out.data(), 0, 1);
    const cudaError_t e_src = cudaGetLastError();
    launch(k_cp_misaligned, dim3(1), dim3(32), 0, src.data(), out.data(), 4, 4);
    check(e_dst == cudaErrorMisalignedAddress && e_src == cudaErrorMisalignedAddress &&
              cudaGetLastError() == cudaSuccess && out[0] == 14,
          "cp.async off 16-byte alignment (destination or source) is reported (cudaErrorMisalignedAddress)");
  }
  {  // graph capture records; each graph launch runs the work again
    int c = 0;
    cudaStream_t s;
    cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal);
    launch(k_count, dim3(3), dim3(32), 0, &c);
    cudaGraph_t g;
    cudaStreamEndCapture(s, &g);
    const int during = c;
    cudaGraphExec_t ex;
    cudaGraphInstantiate(&ex, g, 0);
    cudaGraphDestroy(g);
    cudaGraphLaunch(ex, s);
    cudaGraphLaunch(ex, s);
    cudaGraphExecDestroy(ex);
    check(during == 0 && c == 6, "graph capture records launches; two graph launches run them twice");
  }
  {  // mma.sync fragments against plain products
    std::vector<int8_t> A(16 * 32);
    std::vector<uint8_t> Bt(8 * 32);
    for (size_t i = 0; i < A.size(); i++) A[i] = (int8_t)((int)(i * 37 % 255) - 127);
    for (size_t i = 0; i < Bt.size(); i++) Bt[i] = (uint8_t)(i * 11 % 3);
    std::vector<int> D(16 * 8, 0);
    launch(k_mma_s8, dim3(1), dim3(32), 0, A.data(), Bt.data(), D.data());
    bool ok = cudaGetLastError() == cudaSuccess;
    for (int r = 0; r < 16; r++)
      for (int n = 0; n < 8; n++) {
        int s = r < 8 && n % 2 == 0 ? 4 * r + n / 2 : 0;  // C: each lane's c[0] (D[g][2t]) started at its lane
        for (int k = 0; k < 32; k++) s += A[(size_t)(r * 32 + k)] * Bt[(size_t)(n * 32 + k)];
        ok = ok && D[(size_t)(r * 8 + n)] == s;
      }
    check(ok, "mma m16n8k32 s8.u8: every element equals the plain product (plus C)");
    std::vector<uint16_t> Ah(16 * 16), Bh(8 * 16);
    auto f16 = [](int v) { return bn::f32_to_f16((float)v * 0.125f); };
    for (size_t i = 0; i < Ah.size(); i++) Ah[i] = f16((int)(i * 7 % 17) - 8);
    for (size_t i = 0; i < Bh.size(); i++) Bh[i] = f16((int)(i * 5 % 13) - 6);
    std::vector<float> Df(16 * 8, 0.f);
    launch(k_mma_f16, dim3(1), dim3(32), 0, Ah.data(), Bh.data(), Df.data());
    ok = cudaGetLastError() == cudaSuccess;
    for (int r = 0; r < 16; r++)
      for (int n = 0; n < 8; n++) {
        double s = 0;
        for (int k = 0; k < 16; k++)
          s += (double)bn::f16_to_f32(Ah[(size_t)(r * 16 + k)]) * (double)bn::f16_to_f32(Bh[(size_t)(n * 16 + k)]);
        ok = ok && Df[(size_t)(r * 8 + n)] == (float)s;  // small multiples of 1/64: exact
      }
    check(ok, "mma m16n8k16 f16: every element equals the plain product");
  }
  printf("== sim selftest: %d passed, %d failed\n", g_pass, g_fail);
  return g_fail;
}
