// The grid-wide barrier's probe (bench and checks): what a persistent decode kernel would pay per
// barrier, and a check that the barrier orders every block's writes before every block's reads.
//
// Why: a batch-1 decode step is ~150 short kernels (RESULTS.md, run 7's profile: per layer 5
// launches, their ramps and four single-block norm tails). A persistent kernel with every block
// resident would replace launches with grid-wide barriers, about five per layer. Whether that
// pays depends on the barrier's cost at one or two blocks per SM, which only a GPU can say.
//
// Two barriers (bn_device.cuh): grid_barrier (arrivals + generation) and grid_barrier_count (one
// growing u64), chosen per launch. Kind 2 checks the waits' watchdog (SpinWatch): block 0 never
// arrives, so the others' grid_barrier_count must end the launch with a device-side assertion
// after kProbeWatchNs instead of waiting forever.
//
// Each round: thread 0 of every block writes round·blocks + block to its slot; barrier; every
// thread reads the slot of block (b + 1 + t) mod blocks and counts a value from another round
// in *bad; barrier (so that no block writes round r + 1 while another still reads round r).
//
// With a norm (nq.n > 0, 128-thread blocks), every block also runs the whole RMSNorm +
// quantization of the one vector nq.x after the first barrier of each round, as a persistent
// kernel's blocks would each do for themselves instead of one block doing it for all (the fused
// tails today): block_norm_quant with the shared-memory cache, in the exact order, so every
// block's int8 row, scale and Σq (nq.q row b, nq.scale[b], nq.sum[b]: nq.ldx is 0, so every
// "token" b reads the same x) equal the emulation's bit for bit.
#include "bn_device.cuh"

namespace bn {

constexpr unsigned long long kProbeWatchNs = 20000000ull;  // 20 ms: kind 2's watchdog limit

__global__ void __launch_bounds__(1024) grid_sync_probe_kernel(unsigned *bar, int *slots, int *bad, int rounds,
                                                               unsigned long long *ns, NormQuant nq, int mode) {
  BN_DYN_SHARED(__align__(16) float4, xs);  // nq.n floats when there is a norm
  const int nb = (int)gridDim.x, b = (int)blockIdx.x;
  unsigned long long t0 = 0;
  if (b == 0 && threadIdx.x == 0) t0 = trace_gtime();
  int wrong = 0;
  if (mode == 2) {  // the watchdog's check: block 0 leaves, the others wait for it
    if (b != 0) grid_barrier_count((unsigned long long *)bar, kProbeWatchNs);
    return;
  }
  for (int r = 0; r < rounds; r++) {
    if (threadIdx.x == 0) *(volatile int *)&slots[b] = r * nb + b;
    if (mode) grid_barrier_count((unsigned long long *)bar);
    else grid_barrier(bar);
    if (nq.n > 0) block_norm_quant(nq, b, xs);
    const int o = (b + 1 + (int)threadIdx.x) % nb;
    if (*(volatile int *)&slots[o] != r * nb + o) wrong++;
    if (mode) grid_barrier_count((unsigned long long *)bar);
    else grid_barrier(bar);
  }
  if (wrong) atomicAdd(bad, wrong);
  if (b == 0 && threadIdx.x == 0) ns[0] = trace_gtime() - t0;
}

bn_status launch_grid_sync_probe(int blocks, int threads, int rounds, unsigned *bar, int *slots, int *bad,
                                 unsigned long long *ns, cudaStream_t s, const NormQuant *norm, int barrier) {
  if (blocks < 1 || threads < 1 || threads > 1024 || rounds < 1 || barrier < 0 || barrier > 2 ||
      (barrier == 2 && (blocks < 2 || norm))) {
    set_error("grid sync probe: %d blocks of %d threads, %d rounds, barrier %d", blocks, threads, rounds, barrier);
    return BN_ERR_INVALID_ARGUMENT;
  }
  NormQuant nq{};
  size_t smem = 0;
  if (norm) {
    nq = *norm;
    smem = (size_t)nq.n * 4;
    if (threads != kNormThreads || nq.n < 4 || (nq.n & 3) || smem > 48 * 1024 || nq.ldx != 0 || !nq.q) {
      set_error("grid sync probe: a norm needs %d threads, n a multiple of 4 up to 12288, ldx 0 and q (got %d "
                "threads, n %d, ldx %d)",
                kNormThreads, threads, nq.n, nq.ldx);
      return BN_ERR_INVALID_ARGUMENT;
    }
  }
  // The counter starts at 0 (a multiple of any block count) for every launch and graph replay.
  if (barrier >= 1)
    if (const bn_status st = check_launch("grid_sync_probe counter reset", cudaMemsetAsync(bar, 0, 8, s))) return st;
  return launch_coop("grid_sync_probe_kernel", grid_sync_probe_kernel, dim3((unsigned)blocks), dim3((unsigned)threads),
                     smem, s, bar, slots, bad, rounds, ns, nq, barrier);
}

}  // namespace bn
