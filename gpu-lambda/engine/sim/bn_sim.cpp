// The CPU "device" behind sim/cuda_runtime.h: a block-serial, fiber-per-thread kernel executor and
// the runtime calls the engine makes (memory, copies, streams, events, graph capture).
//
// Execution: a launch runs its blocks one after another (x fastest, then y, then z; last to first
// under BN_SIM_ORDER=reverse). A block's threads are fibers on this OS thread. The scheduler runs
// each runnable fiber until it blocks at __syncthreads(), at a warp collective or in
// __nanosleep, then releases a barrier once every live thread of the block (or of the warp) has
// reached it. If nothing can run and no barrier can be released, the kernel has a barrier that
// some live thread never reaches: the launch fails with the states of the threads (on a GPU this
// hangs or is undefined). Threads in __nanosleep wait on something outside the block: they run
// again at the block's next turn. A cooperative launch (every block resident on a GPU) gives its
// blocks turns in order until all have ended, so they can meet at grid-wide barriers; a plain
// launch gives only the running block turns, so a block that waits for another fails the launch
// after kMaxParks turns instead of hanging.
//
// Fiber switch: a few instructions of x86-64 assembly (the callee-saved registers; the floating-
// point control state is the OS thread's, shared by all fibers, as no kernel changes it) on
// x86-64; ucontext elsewhere.
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "cuda_runtime.h"
#include "../src/bn_mma.h"

#if !defined(__x86_64__)
#include <ucontext.h>

#include <chrono>
#endif
// AddressSanitizer builds (make sim-test SIM_ASAN=1) are told about every stack switch.
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define BN_SIM_ASAN 1
#else
#define BN_SIM_ASAN 0
#endif

namespace bn_sim {

// YIELD: in __nanosleep; TRAPPED: stopped by a device-side assertion (device_assert), never resumed
enum State { RUN, WAIT_BLOCK, WAIT_WARP, YIELD, DONE, TRAPPED };

struct Thread {
  dim3 tid;
  int linear = 0;
  State state = DONE;
  unsigned warp_ops = 0;  // warp collectives this thread has passed (selects the deposit buffer)
  const char *where = nullptr;  // the __syncthreads it waits at
  unsigned char *stack = nullptr;
  size_t slot = 0;       // the index of its stack in g_stacks
  void *fake = nullptr;  // AddressSanitizer's fake stack while switched out
  // cp.async's copies (cp_async below).
  struct Copy {
    void *dst;
    const void *src;
    int bytes;
  };
  // Every copy not landed yet, oldest first; committed group i ends at group_ends[i], and the
  // copies past the last end are the open group. Both keep their capacity from block to block,
  // so a copy allocates nothing (a vector per group, moved out at each commit, allocated at every
  // commit: ~20% of an ASan run, in its allocator).
  std::vector<Copy> copies;
  std::vector<size_t> group_ends;
#if defined(__x86_64__)
  void *sp = nullptr;
#else
  ucontext_t ctx;
#endif
};

struct Warp {
  alignas(16) unsigned char buf[2][32][64];
  // The last mma.sync computed for the warp (its warp_ops count; 0 none) and every lane's result.
  unsigned mma_op = 0;
  alignas(16) unsigned char mma_out[32 * 16];
};

static Thread *g_cur = nullptr;

static std::vector<Thread> g_threads;
static std::vector<Warp> g_warps;
static std::vector<unsigned char *> g_stacks;  // one per thread slot, never moved
constexpr size_t kStack = 256 * 1024;
// AddressSanitizer builds: how many bytes below the top of each stack may still hold the poison
// (redzones) of frames that never returned. A fiber that ends has returned from every frame of
// the kernel, so only its last few remain (fiber_main, to_scheduler, switch_to: kEndFrames); one
// left mid-kernel (a failed launch) may have poisoned all of it. Unpoisoning all 256 KB at every
// block's start was a third of an ASan run's time (the shadow's memset); now only that part is.
static std::vector<size_t> g_stack_poisoned;
constexpr size_t kEndFrames = 16 * 1024;
static const std::function<void()> *g_body = nullptr;
// BN_SIM_ORDER=reverse: blocks, and a block's threads between barriers, run last to first. A
// kernel whose result depends on that order has a race (a shared or global value read in the same
// barrier interval in which another thread writes it, or one block relying on another having
// run): running the checks in both orders exposes it.
static bool reverse_order() {
  static const bool r = [] {
    const char *v = getenv("BN_SIM_ORDER");
    return v && strcmp(v, "reverse") == 0;
  }();
  return r;
}
static unsigned char *g_dyn = nullptr;
static size_t g_dyn_cap = 0;

// Frees the stacks and the shared-memory buffer at exit (a leak checker then sees none).
static struct Cleanup {
  ~Cleanup() {
    for (unsigned char *p : g_stacks) free(p);
    g_stacks.clear();
    g_stack_poisoned.clear();
    free(g_dyn);
    g_dyn = nullptr;
  }
} g_cleanup;

// Like CUDA's, the error state is per host thread.
static thread_local cudaError_t g_last = cudaSuccess;
static thread_local std::string g_msg;
// One launch (or copy) runs at a time: the executor's state above is shared. Host threads (the
// Node addon's workers) may launch concurrently; each waits for the device.
static std::mutex g_device;

static cudaError_t fail(cudaError_t e, const char *fmt, ...) {
  char b[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(b, sizeof(b), fmt, ap);
  va_end(ap);
  g_msg = b;
  fprintf(stderr, "[bn_sim] %s\n", b);
  if (g_last == cudaSuccess) g_last = e;
  return e;
}

// ---- fibers ------------------------------------------------------------------------------------------
#if defined(__x86_64__)
extern "C" void bn_sim_switch(void **save_sp, void *load_sp);
asm(R"(
  .text
  .globl bn_sim_switch
  .type bn_sim_switch, @function
bn_sim_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size bn_sim_switch, .-bn_sim_switch
)");
// The scheduler runs on the launching host thread's stack: its state is per host thread.
static thread_local void *g_sched_sp = nullptr;
static int g_nthreads = 0;
static thread_local const void *g_main_bottom = nullptr;  // that stack (AddressSanitizer builds)
static thread_local size_t g_main_size = 0;
static thread_local void *g_main_fake = nullptr;

// Switches from the running context (saving its stack pointer in *save, its sanitizer state in
// *fake; fake null: the context ends) to `to_sp` on the stack [bottom, bottom + size).
static void switch_to(void **save, void **fake, void *to_sp, const void *bottom, size_t size) {
#if BN_SIM_ASAN
  __sanitizer_start_switch_fiber(fake, bottom, size);
#else
  (void)fake;
  (void)bottom;
  (void)size;
#endif
  bn_sim_switch(save, to_sp);
#if BN_SIM_ASAN
  __sanitizer_finish_switch_fiber(*fake, nullptr, nullptr);
#endif
}

// A thread that blocks or ends switches straight to the next runnable thread of the block (one
// switch instead of two through the scheduler); the last one returns to the scheduler.
static void to_scheduler() {
  Thread *self = g_cur;
  void **fake = self->state == DONE ? nullptr : &self->fake;
  const int step = reverse_order() ? -1 : 1;
  for (int j = self->linear + step; j >= 0 && j < g_nthreads; j += step) {
    Thread &n = g_threads[(size_t)j];
    if (n.state == RUN) {
      g_cur = &n;
      threadIdx = n.tid;
      switch_to(&self->sp, fake, n.sp, n.stack, kStack);
      return;
    }
  }
  switch_to(&self->sp, fake, g_sched_sp, g_main_bottom, g_main_size);
}
static void resume(Thread &t) { switch_to(&g_sched_sp, &g_main_fake, t.sp, t.stack, kStack); }
#else
static thread_local ucontext_t g_sched_ctx;
static void to_scheduler() { swapcontext(&g_cur->ctx, &g_sched_ctx); }
static void resume(Thread &t) { swapcontext(&g_sched_ctx, &t.ctx); }
#endif

[[noreturn]] static void fiber_main() {
#if BN_SIM_ASAN && defined(__x86_64__)
  // First entry: learn the scheduler's stack from the first switch ever made (from the scheduler).
  const void *b = nullptr;
  size_t n = 0;
  __sanitizer_finish_switch_fiber(nullptr, &b, &n);
  if (!g_main_bottom) {
    g_main_bottom = b;
    g_main_size = n;
  }
#endif
  (*g_body)();
  g_cur->state = DONE;
#if BN_SIM_ASAN && defined(__x86_64__)
  {
    const uintptr_t top = (uintptr_t)(g_cur->stack + kStack), here = (uintptr_t)__builtin_frame_address(0);
    g_stack_poisoned[g_cur->slot] = std::min(kStack, (size_t)(top - here) + kEndFrames);
  }
#endif
  to_scheduler();
  abort();  // a finished fiber is never resumed
}

static void start_fiber(Thread &t, unsigned char *stack) {
#if defined(__x86_64__)
  // A frame for bn_sim_switch to "return" from: six registers, then fiber_main as the return
  // address, placed so that it starts as if called (rsp % 16 == 8).
  uintptr_t top = ((uintptr_t)(stack + kStack)) & ~(uintptr_t)15;
  uint64_t *sp = (uint64_t *)(top - 16);
  sp[0] = (uint64_t)(uintptr_t)&fiber_main;
  sp -= 6;
  for (int i = 0; i < 6; i++) sp[i] = 0;
  t.sp = sp;
#else
  getcontext(&t.ctx);
  t.ctx.uc_stack.ss_sp = stack;
  t.ctx.uc_stack.ss_size = kStack;
  t.ctx.uc_link = nullptr;
  makecontext(&t.ctx, (void (*)())fiber_main, 0);
#endif
}

// A device-side assertion (CUDA's __assert_fail): the thread stops for good and its block's launch
// fails with cudaErrorAssert and the message, as on a GPU (which also prints it).
static thread_local std::string g_assert;
void device_assert(const char *what, const char *file, unsigned line) {
  char b[512];
  snprintf(b, sizeof b, "%s:%u: block (%u,%u,%u), thread (%u,%u,%u): assertion `%s` failed", file, line, blockIdx.x,
           blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z, what);
  if (g_assert.empty()) g_assert = b;
  g_cur->state = TRAPPED;
  to_scheduler();
  abort();  // a trapped fiber is never resumed
}

void syncthreads(const char *where) {
  g_cur->where = where;
  g_cur->state = WAIT_BLOCK;
  to_scheduler();
}

void yield() {
  g_cur->state = YIELD;
  to_scheduler();
}

const unsigned char *warp_exchange(const void *mine, size_t bytes) {
  Thread &t = *g_cur;
  Warp &w = g_warps[(size_t)(t.linear >> 5)];
  unsigned char *b = &w.buf[t.warp_ops & 1][0][0];
  memcpy(b + (size_t)(t.linear & 31) * 64, mine, bytes);
  t.state = WAIT_WARP;
  to_scheduler();
  t.warp_ops++;
  return b;
}

void *dyn_smem() { return g_dyn; }

// Static shared memory (BN_SHARED): each variable and the block in which it was last filled. A
// variable is filled by the first thread of a block to reach its declaration: no thread of the
// block can have written it before that (its name is in scope only past the declaration).
// One launch runs at a time under g_device, so one map serves every host thread. A cooperative
// launch's blocks take turns; each keeps a copy of the variables it has reached while the others
// run (CoopBlock below).
struct SharedVar {
  unsigned long long block;  // the serial of the block whose values it holds
  size_t bytes;
};
static std::unordered_map<void *, SharedVar> g_shared_block;
static unsigned long long g_block_serial = 0;  // the running block's serial (unique per block run)
static unsigned long long g_serials = 0;       // serials handed out

void shared_static(void *p, size_t bytes) {
  const auto [it, fresh] = g_shared_block.try_emplace(p, SharedVar{g_block_serial, bytes});
  if (!fresh && it->second.block == g_block_serial) return;
  it->second.block = g_block_serial;
  memset(p, 0xcd, bytes);  // as the dynamic shared memory: undefined, never zero
}

static void land(const Thread::Copy &c) {
  memset(c.dst, 0, 16);
  if (c.bytes > 0) memcpy(c.dst, c.src, (size_t)c.bytes);
}
// The GPU faults (misaligned address) unless both addresses are aligned to the copy's 16 bytes; here
// the copy is dropped and the launch's error set, as a fault would leave it.
void cp_async(void *dst, const void *src, int bytes) {
  if (((uintptr_t)dst & 15) != 0 || (bytes > 0 && ((uintptr_t)src & 15) != 0)) {
    fail(cudaErrorMisalignedAddress, "cp.async with a misaligned address: dst %p, src %p (16-byte copy)", dst, src);
    return;
  }
  // Written in place: a push_back of a braced temporary went through the stack, and its 16-byte
  // reload of two 8-byte stores missed store forwarding (~9% of a plain simulation run).
  std::vector<Thread::Copy> &v = g_cur->copies;
  Thread::Copy &c = v.emplace_back();
  c.dst = dst;
  c.src = src;
  c.bytes = bytes;
}
void cp_async_commit() {
  Thread &t = *g_cur;
  t.group_ends.push_back(t.copies.size());
}
// Lands the oldest groups, in order, until at most n committed groups are pending.
void cp_async_wait_group(int n) {
  Thread &t = *g_cur;
  const size_t keep = (size_t)(n < 0 ? 0 : n);
  if (t.group_ends.size() <= keep) return;
  const size_t groups = t.group_ends.size() - keep, end = t.group_ends[groups - 1];
  for (size_t i = 0; i < end; i++) land(t.copies[i]);
  t.copies.erase(t.copies.begin(), t.copies.begin() + (long)end);
  t.group_ends.erase(t.group_ends.begin(), t.group_ends.begin() + (long)groups);
  for (size_t &e : t.group_ends) e -= end;
}
void cp_async_wait_all() {
  cp_async_commit();
  cp_async_wait_group(0);
}

// ---- mma.sync: the emulation's warp-wide instructions (bn_mma.h) ------------------------------------------
// Every lane deposits its fragments and accumulators; the first lane to resume computes the whole
// warp's result once (bn::emu_mma_*) and each lane takes its own four values.
template <typename C, typename F>
static void warp_mma(C c[4], const uint32_t a[4], const uint32_t b[2], F mma) {
  struct Frag {
    uint32_t a[4], b[2];
    C c[4];
  } mine;
  static_assert(sizeof(Frag) <= 64, "a lane's deposit is at most 64 bytes");
  memcpy(mine.a, a, sizeof(mine.a));
  memcpy(mine.b, b, sizeof(mine.b));
  memcpy(mine.c, c, sizeof(mine.c));
  const unsigned char *all = warp_exchange(&mine, sizeof(mine));
  Thread &t = *g_cur;
  Warp &w = g_warps[(size_t)(t.linear >> 5)];
  if (w.mma_op != t.warp_ops) {  // the first lane of this operation
    uint32_t A[32][4], B[32][2];
    C acc[32][4];
    for (int l = 0; l < 32; l++) {
      Frag f;
      memcpy(&f, all + (size_t)l * 64, sizeof(f));
      memcpy(A[l], f.a, sizeof(f.a));
      memcpy(B[l], f.b, sizeof(f.b));
      memcpy(acc[l], f.c, sizeof(f.c));
    }
    mma(acc, A, B);
    memcpy(w.mma_out, acc, sizeof(acc));
    w.mma_op = t.warp_ops;
  }
  memcpy(c, w.mma_out + (size_t)(t.linear & 31) * 16, 4 * sizeof(C));
}

void mma_s8u8(int c[4], const uint32_t a[4], const uint32_t b[2]) { warp_mma(c, a, b, bn::emu_mma_s8u8); }
void mma_f16(float c[4], const uint32_t a[4], const uint32_t b[2]) { warp_mma(c, a, b, bn::emu_mma_f16); }

// ---- launches --------------------------------------------------------------------------------------------------
// cudaFuncAttributeMaxDynamicSharedMemorySize per (device, kernel): as on a GPU, a function's
// attributes belong to a device, so raising a kernel's limit on device 0 leaves device 1's at
// the default.
static std::map<std::pair<int, const void *>, int> g_max_dyn;
constexpr int kDefaultDynSmem = 48 * 1024, kOptinSmem = 232448;  // H100/H200: 227 KB opt-in
// The simulated devices: BN_SIM_DEVICES (1..8, default 1). They share one memory and one
// executor; what differs per device is the function attributes (above). The current device is
// per host thread, as the CUDA runtime's.
static thread_local int g_cur_dev = 0;
static int device_count() {
  const char *v = getenv("BN_SIM_DEVICES");
  const int n = v ? atoi(v) : 1;
  return n >= 1 && n <= 8 ? n : 1;
}

cudaError_t set_max_dyn_smem(const void *kernel, int bytes) {
  if (bytes < 0 || bytes > kOptinSmem)
    return fail(cudaErrorInvalidValue, "cudaFuncSetAttribute: %d bytes of dynamic shared memory (limit %d)", bytes,
                kOptinSmem);
  std::lock_guard<std::mutex> lock(g_device);
  g_max_dyn[{g_cur_dev, kernel}] = bytes;
  return cudaSuccess;
}

static const char *state_name(State s) {
  return s == RUN         ? "running"
         : s == WAIT_BLOCK ? "__syncthreads"
         : s == WAIT_WARP  ? "warp collective"
         : s == YIELD      ? "__nanosleep"
         : s == TRAPPED    ? "assertion failed"
                           : "exited";
}

// Sets up the current block's threads (g_threads[0, nthreads)) as fibers on `stacks`.
static void start_block(int nthreads, unsigned char *const *stacks) {
  const size_t slot0 = (size_t)(stacks - g_stacks.data());
  const int nwarps = (nthreads + 31) / 32;
  for (int w = 0; w < nwarps; w++) g_warps[(size_t)w].mma_op = 0;
  for (int i = 0; i < nthreads; i++) {
    Thread &t = g_threads[(size_t)i];
    t.linear = i;
    t.tid = dim3((unsigned)i % blockDim.x, ((unsigned)i / blockDim.x) % blockDim.y,
                 (unsigned)i / (blockDim.x * blockDim.y));
    t.state = RUN;
    t.warp_ops = 0;
    t.copies.clear();  // a copy nobody waited for never lands (its block has ended)
    t.group_ends.clear();
    t.stack = stacks[i];
    t.slot = slot0 + (size_t)i;
#if BN_SIM_ASAN
    // a previous fiber's frames may have left redzones (g_stack_poisoned)
    size_t &poisoned = g_stack_poisoned[t.slot];
    ASAN_UNPOISON_MEMORY_REGION(t.stack + (kStack - poisoned), poisoned);
    poisoned = kStack;  // until this fiber ends
#endif
    start_fiber(t, t.stack);
  }
}

enum BlockRun { BLOCK_DONE, BLOCK_PARKED, BLOCK_FAILED };
// The error of the last BLOCK_FAILED (cudaErrorLaunchFailure unless an assertion).
static cudaError_t g_block_err = cudaErrorLaunchFailure;

// Runs the current block's threads until they have all exited (BLOCK_DONE), or until none can
// run and some sleep in __nanosleep, waiting on something outside the block (BLOCK_PARKED: they
// are runnable again when the block is next resumed), or a barrier cannot complete (BLOCK_FAILED,
// the launch's error set).
static BlockRun run_block(int nthreads) {
  const int nwarps = (nthreads + 31) / 32;
  g_block_err = cudaErrorLaunchFailure;
#if defined(__x86_64__)
  g_nthreads = nthreads;
#endif
  for (;;) {
    for (int k = 0; k < nthreads; k++) {
      Thread &t = g_threads[(size_t)(reverse_order() ? nthreads - 1 - k : k)];
      while (t.state == RUN) {
        g_cur = &t;
        threadIdx = t.tid;
        resume(t);
      }
    }
    g_cur = nullptr;
    int done = 0, at_block = 0, asleep = 0, trapped = 0;
    for (int i = 0; i < nthreads; i++) {
      done += g_threads[(size_t)i].state == DONE;
      at_block += g_threads[(size_t)i].state == WAIT_BLOCK;
      asleep += g_threads[(size_t)i].state == YIELD;
      trapped += g_threads[(size_t)i].state == TRAPPED;
    }
    if (trapped) {  // the launch ends here, the other threads wherever they are
      g_block_err = fail(cudaErrorAssert, "device-side assertion: %s", g_assert.c_str());
      g_assert.clear();
      return BLOCK_FAILED;
    }
    if (done == nthreads) return BLOCK_DONE;
    if (at_block + done == nthreads) {  // every live thread is at __syncthreads (exited ones count)
      const char *first = nullptr;
      for (int i = 0; i < nthreads; i++) {
        const Thread &t = g_threads[(size_t)i];
        if (t.state != WAIT_BLOCK) continue;
        if (!first) first = t.where;
        if (t.where != first && strcmp(first, t.where) != 0) {  // the same call site: the same pointer
          fail(cudaErrorLaunchFailure, "divergent __syncthreads in block (%u,%u,%u): thread %d at %s, others at %s",
               blockIdx.x, blockIdx.y, blockIdx.z, i, t.where, first);
          return BLOCK_FAILED;
        }
      }
      for (int i = 0; i < nthreads; i++)
        if (g_threads[(size_t)i].state == WAIT_BLOCK) g_threads[(size_t)i].state = RUN;
      continue;
    }
    bool released = false;
    for (int w = 0; w < nwarps; w++) {
      const int lo = 32 * w, hi = std::min(nthreads, lo + 32);
      bool all = true;
      for (int i = lo; i < hi; i++) all = all && g_threads[(size_t)i].state == WAIT_WARP;
      if (!all) continue;
      for (int i = lo + 1; i < hi; i++)
        if (g_threads[(size_t)i].warp_ops != g_threads[(size_t)lo].warp_ops) all = false;
      if (!all) continue;
      for (int i = lo; i < hi; i++) g_threads[(size_t)i].state = RUN;
      released = true;
    }
    if (released) continue;
    if (asleep > 0) {
      for (int i = 0; i < nthreads; i++)
        if (g_threads[(size_t)i].state == YIELD) g_threads[(size_t)i].state = RUN;
      return BLOCK_PARKED;
    }
    std::string st;
    for (int i = 0; i < nthreads && st.size() < 600; i++) {
      const Thread &t = g_threads[(size_t)i];
      if (i == 0 || t.state != g_threads[(size_t)i - 1].state) st += " t" + std::to_string(i) + ":" + state_name(t.state);
    }
    fail(cudaErrorLaunchFailure, "barrier that not every live thread reaches, block (%u,%u,%u) of %ux%ux%u:%s",
         blockIdx.x, blockIdx.y, blockIdx.z, gridDim.x, gridDim.y, gridDim.z, st.c_str());
    return BLOCK_FAILED;
  }
}

// A launch whose threads keep sleeping in __nanosleep without the launch ending waits for
// something that never happens (in a plain launch, typically another block: blocks run one at a
// time there, so a grid-wide wait needs a cooperative launch). After this many returns to the
// executor the launch fails instead of hanging.
constexpr long kMaxParks = 1000000;

static void ensure_stacks(size_t n) {
  while (g_stacks.size() < n) {
    g_stacks.push_back((unsigned char *)aligned_alloc(64, kStack));
    g_stack_poisoned.push_back(kStack);
  }
}

// The index of the k-th block in launch order (x fastest; last to first under reverse order).
static dim3 block_index(dim3 grid, unsigned long long k) {
  const unsigned long long n = (unsigned long long)grid.x * grid.y * grid.z;
  if (reverse_order()) k = n - 1 - k;
  return dim3((unsigned)(k % grid.x), (unsigned)(k / grid.x % grid.y), (unsigned)(k / ((unsigned long long)grid.x * grid.y)));
}

// Cooperative launches: every block is resident, and they take turns. A block runs until its
// threads have exited or all that can run sleep in __nanosleep (waiting on other blocks), then
// the next live block runs. Each block has its own threads, warps, stacks and dynamic shared
// memory; its static shared variables (BN_SHARED) are copied out when it yields its turn and
// back when it resumes, so each block sees only its own.
// A grid of at most kCoopMaxThreads threads (each a fiber with its own stack): larger grids get
// cudaErrorCooperativeLaunchTooLarge, as a GPU reports a grid that cannot be resident at once.
constexpr size_t kCoopMaxThreads = 8192;
struct CoopBlock {
  dim3 idx;
  unsigned long long serial = 0;
  std::vector<Thread> threads;
  std::vector<Warp> warps;
  unsigned char *dyn = nullptr;
  std::vector<std::pair<void *, std::vector<unsigned char>>> saved;  // its static shared values
  bool done = false;
};

static void enter_block(CoopBlock &b, int nthreads) {
  g_threads.swap(b.threads);
  g_warps.swap(b.warps);
  g_dyn = b.dyn;
  blockIdx = b.idx;
  g_block_serial = b.serial;
  for (auto &v : b.saved) {
    memcpy(v.first, v.second.data(), v.second.size());
    g_shared_block[v.first].block = b.serial;
  }
  b.saved.clear();
#if defined(__x86_64__)
  g_nthreads = nthreads;
#else
  (void)nthreads;
#endif
}
static void leave_block(CoopBlock &b) {
  for (const auto &kv : g_shared_block)
    if (kv.second.block == b.serial)
      b.saved.emplace_back(kv.first, std::vector<unsigned char>((const unsigned char *)kv.first,
                                                                (const unsigned char *)kv.first + kv.second.bytes));
  g_threads.swap(b.threads);
  g_warps.swap(b.warps);
  g_dyn = nullptr;
}

static cudaError_t execute_cooperative(dim3 grid, dim3 block, size_t dyn) {
  const size_t nthreads = (size_t)block.x * block.y * block.z;
  const unsigned long long nblocks = (unsigned long long)grid.x * grid.y * grid.z;
  ensure_stacks((size_t)nblocks * nthreads);
  unsigned char *const dyn_serial = g_dyn;  // the plain launches' buffer, put back at the end
  std::vector<CoopBlock> blocks((size_t)nblocks);
  cudaError_t err = cudaSuccess;
  for (unsigned long long k = 0; k < nblocks; k++) {
    CoopBlock &b = blocks[(size_t)k];
    b.idx = block_index(grid, k);
    b.serial = ++g_serials;
    b.threads.resize(nthreads);
    b.warps.resize((nthreads + 31) / 32);
    if (dyn) {
      void *p = nullptr;
      if (posix_memalign(&p, 128, dyn) != 0) {
        err = fail(cudaErrorMemoryAllocation, "cooperative launch: %zu bytes of shared memory per block", dyn);
        break;
      }
      b.dyn = (unsigned char *)p;
      memset(b.dyn, 0xcd, dyn);
    }
    enter_block(b, (int)nthreads);
    start_block((int)nthreads, &g_stacks[(size_t)k * nthreads]);
    leave_block(b);
  }
  long parks = 0;
  for (unsigned long long live = err == cudaSuccess ? nblocks : 0; live > 0;) {
    for (CoopBlock &b : blocks) {
      if (b.done) continue;
      enter_block(b, (int)nthreads);
      const BlockRun r = run_block((int)nthreads);
      leave_block(b);
      if (r == BLOCK_FAILED) {
        err = g_block_err;
        live = 0;
        break;
      }
      if (r == BLOCK_DONE) {
        b.done = true;
        live--;
      } else if (++parks > kMaxParks) {
        err = fail(cudaErrorLaunchFailure,
                   "cooperative launch: blocks still wait in __nanosleep after %ld turns (a grid-wide wait that "
                   "never completes)",
                   kMaxParks);
        live = 0;
        break;
      }
    }
  }
  // A failed launch leaves fibers mid-kernel: their stacks are simply reused by the next launch.
  for (CoopBlock &b : blocks) free(b.dyn);
  g_dyn = dyn_serial;
  return err;
}

static cudaError_t execute(const void *kernel, dim3 grid, dim3 block, size_t dyn, const std::function<void()> &body,
                           bool cooperative) {
  const size_t nthreads = (size_t)block.x * block.y * block.z;  // checked by launch()
  g_body = &body;
  gridDim = grid;
  blockDim = block;
  if (cooperative) {
    const cudaError_t e = execute_cooperative(grid, block, dyn);
    g_body = nullptr;
    return e;
  }
  if (g_threads.size() < nthreads) g_threads.resize(nthreads);
  ensure_stacks(nthreads);
  g_warps.resize((nthreads + 31) / 32);
  if (g_dyn_cap != dyn) {  // exactly the launch's bytes, so a sanitizer sees an overrun
    free(g_dyn);
    g_dyn = nullptr;
    g_dyn_cap = 0;
    void *p = nullptr;
    if (dyn && posix_memalign(&p, 128, dyn) == 0) {
      g_dyn = (unsigned char *)p;
      g_dyn_cap = dyn;
    }
  }
  const unsigned long long nblocks = (unsigned long long)grid.x * grid.y * grid.z;
  for (unsigned long long k = 0; k < nblocks; k++) {
    blockIdx = block_index(grid, k);
    if (g_dyn) memset(g_dyn, 0xcd, dyn);  // shared memory starts undefined: never zero
    g_block_serial = ++g_serials;         // and so does static shared memory (shared_static)
    start_block((int)nthreads, g_stacks.data());
    for (long parks = 0;;) {
      const BlockRun r = run_block((int)nthreads);
      if (r == BLOCK_DONE) break;
      if (r == BLOCK_FAILED) return g_block_err;
      if (++parks > kMaxParks)
        return fail(cudaErrorLaunchFailure,
                    "block (%u,%u,%u) still waits in __nanosleep after %ld turns: blocks run one at a time here, so a "
                    "wait for another block of the launch needs a cooperative launch",
                    blockIdx.x, blockIdx.y, blockIdx.z, kMaxParks);
    }
  }
  g_body = nullptr;
  return cudaSuccess;
}

// Graph capture: while a stream captures, work is recorded instead of run.
struct Graph {
  std::vector<std::function<cudaError_t()>> work;
};
static thread_local Graph *g_capture = nullptr;  // capture mode "thread local"

static cudaError_t submit(std::function<cudaError_t()> w) {
  if (g_capture) {
    g_capture->work.push_back(std::move(w));
    return cudaSuccess;
  }
  cudaError_t e;
  {
    std::lock_guard<std::mutex> lock(g_device);
    e = w();
  }
  if (e != cudaSuccess && g_last == cudaSuccess) g_last = e;
  return cudaSuccess;  // like a GPU, an execution error shows at the next check (cudaGetLastError)
}

cudaError_t launch(const void *kernel, dim3 grid, dim3 block, size_t dyn, std::function<void()> body, bool cooperative) {
  // Configuration errors are launch errors (returned at once), as on a GPU.
  const unsigned long long nthreads = (unsigned long long)block.x * block.y * block.z;
  if (nthreads == 0 || nthreads > 1024 || block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
      grid.y > 65535 || grid.z > 65535)
    return fail(cudaErrorInvalidConfiguration, "launch: grid %ux%ux%u, block %ux%ux%u", grid.x, grid.y, grid.z, block.x,
                block.y, block.z);
  size_t limit = (size_t)kDefaultDynSmem;
  {
    std::lock_guard<std::mutex> lock(g_device);
    const auto it = g_max_dyn.find({g_cur_dev, kernel});
    if (it != g_max_dyn.end()) limit = (size_t)it->second;
  }
  if (dyn > limit)
    return fail(cudaErrorInvalidValue, "launch: %zu bytes of dynamic shared memory, the kernel allows %zu", dyn, limit);
  const unsigned long long nblocks = (unsigned long long)grid.x * grid.y * grid.z;
  if (cooperative && nblocks * nthreads > kCoopMaxThreads)
    return fail(cudaErrorCooperativeLaunchTooLarge,
                "cooperative launch of %llu blocks x %llu threads: the simulation runs at most %zu threads at once",
                nblocks, nthreads, kCoopMaxThreads);
  return submit([=]() { return execute(kernel, grid, block, dyn, body, cooperative); });
}

}  // namespace bn_sim

dim3 threadIdx, blockIdx, blockDim, gridDim;

using namespace bn_sim;

// ---- runtime API -------------------------------------------------------------------------------------------------
const char *cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorMisalignedAddress: return "cudaErrorMisalignedAddress";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorAssert: return "cudaErrorAssert";
    case cudaErrorCooperativeLaunchTooLarge: return "cudaErrorCooperativeLaunchTooLarge";
  }
  return "cudaErrorUnknown";
}
const char *cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : g_msg.c_str(); }
cudaError_t cudaGetLastError() {
  const cudaError_t e = g_last;
  g_last = cudaSuccess;
  return e;
}
cudaError_t cudaGetDeviceCount(int *n) {
  *n = device_count();
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int *d) {
  *d = g_cur_dev;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) {
  if (d < 0 || d >= device_count()) return cudaErrorInvalidDevice;
  g_cur_dev = d;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d) {
  if (d < 0 || d >= device_count()) return cudaErrorInvalidDevice;
  memset(p, 0, sizeof(*p));
  snprintf(p->name, sizeof(p->name), "bn_sim (CPU, H100-shaped limits)");
  p->totalGlobalMem = (size_t)4 << 30;
  p->sharedMemPerBlockOptin = kOptinSmem;
  p->multiProcessorCount = 132;
  p->major = 9;
  p->minor = 0;
  return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int *v) {
  *v = 0;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int *v) {
  *v = 0;
  return cudaSuccess;
}
// Reported small so that memory-sized pools stay small on the CPU.
cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total_b) {
  *free_b = (size_t)1 << 30;
  *total_b = (size_t)4 << 30;
  return cudaSuccess;
}
cudaError_t cudaMalloc(void **p, size_t bytes) {
  // 256-byte aligned like cudaMalloc, and exactly `bytes` long, so a sanitizer sees an overrun.
  *p = nullptr;
  if (posix_memalign(p, 256, bytes ? bytes : 1) != 0 || !*p)
    return fail(cudaErrorMemoryAllocation, "cudaMalloc(%zu)", bytes);
  memset(*p, 0xff, bytes);  // device memory starts undefined: NaN floats, -1 integers
  return cudaSuccess;
}
cudaError_t cudaFree(void *p) {
  free(p);
  return cudaSuccess;
}
cudaError_t cudaMallocHost(void **p, size_t bytes) {
  *p = nullptr;
  return posix_memalign(p, 256, bytes ? bytes : 1) == 0 ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFreeHost(void *p) {
  free(p);
  return cudaSuccess;
}
cudaError_t cudaMemset(void *p, int v, size_t bytes) {
  std::lock_guard<std::mutex> lock(g_device);
  memset(p, v, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void *p, int v, size_t bytes, cudaStream_t) {
  return submit([=]() {
    memset(p, v, bytes);
    return cudaSuccess;
  });
}
cudaError_t cudaMemcpy(void *d, const void *s, size_t bytes, cudaMemcpyKind) {
  std::lock_guard<std::mutex> lock(g_device);
  memmove(d, s, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t bytes, cudaMemcpyKind, cudaStream_t) {
  return submit([=]() {
    memmove(d, s, bytes);
    return cudaSuccess;
  });
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned) {
  static char token;
  *s = (cudaStream_t)(void *)&token;
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return g_capture ? cudaErrorStreamCaptureUnsupported : cudaGetLastError(); }
cudaError_t cudaDeviceSynchronize() { return cudaStreamSynchronize(nullptr); }
cudaError_t cudaEventCreate(cudaEvent_t *e) {
  *e = (cudaEvent_t)(void *)new char(0);
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete (char *)(void *)e;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return cudaSuccess; }
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t, cudaEvent_t) {
  *ms = 0.f;  // no timing on the CPU
  return cudaSuccess;
}
cudaError_t cudaStreamBeginCapture(cudaStream_t, cudaStreamCaptureMode) {
  if (g_capture) return cudaErrorStreamCaptureUnsupported;
  g_capture = new Graph();
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t, cudaGraph_t *g) {
  if (!g_capture) return cudaErrorInvalidValue;
  *g = (cudaGraph_t)(void *)g_capture;
  g_capture = nullptr;
  return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *ex, cudaGraph_t g, unsigned long long) {
  *ex = (cudaGraphExec_t)(void *)new Graph(*(Graph *)(void *)g);
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t g) {
  delete (Graph *)(void *)g;
  return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t ex) {
  delete (Graph *)(void *)ex;
  return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t ex, cudaStream_t) {
  if (g_capture) return cudaErrorStreamCaptureUnsupported;
  std::lock_guard<std::mutex> lock(g_device);
  for (auto &w : ((Graph *)(void *)ex)->work) {
    const cudaError_t e = w();
    if (e != cudaSuccess) {
      if (g_last == cudaSuccess) g_last = e;
      break;
    }
  }
  return cudaSuccess;
}

namespace bn_sim {
unsigned long long now_ns() {
  return (unsigned long long)std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace bn_sim
