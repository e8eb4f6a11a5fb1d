// The persistent FFN chain (BN_PERSIST=ffn; FfnChain in bn_kernels.h): a decode step's o,
// gate/up and down GEMVs for one token in one cooperative launch.
//
// Why: at batch 1 each layer is five launches, and four of them end with a one-block norm tail
// that runs after every other block has finished (run 9's timelines: the o GEMV's tail 2.8 µs,
// gate+up's 4.5 µs, down's 2.6 µs after the others, each kernel then followed by a launch gap).
// Here the grid stays resident from o to down. After o's rows (RESID into x), a grid-wide barrier
// (grid_barrier_count: 1.39 µs on an H200 at 132 blocks), then every block normalizes and
// quantizes x itself into its shared memory (block_norm_quant: the one-block tail's 128-lane f64
// order, so the same int8 row, scale and Σq in every block; ~2.3 µs at n = 2560 on the H200) and
// runs its share of the gate/up rows from there; the same between gate/up and down (n = n_ff,
// ~4.6 µs). The norm after down (the next layer's attn_norm, or output_norm) stays a last-block
// tail, as the down GEMV's: its outputs go to global memory for the next kernel.
// Each phase's first weights load before its barrier and norm (they do not depend on the data).
// Estimate from runs 8–9 (not yet run on a GPU): ~23 µs for the three phases against ~29 µs for
// the three kernels with their tails and two launch gaps.
//
// Bits: the GEMV rows are gemv_block's for M = 1 (same lanes per row, chunk order, integer sums
// and epilogue), the norms block_norm_quant's; so x, ff and the next layer's int8 input equal
// the three-kernel path's bit for bit (checked: gpu/ffn-chain, gpu/model-*/persist-ffn).
//
// Grid: any number of resident blocks of 128 threads; block b runs the GEMV row groups b, b +
// gridDim.x, … of each phase (the exact GEMV's groups: 8 rows below 8192 rows, else 16).
// Dynamic shared memory: max(E, F) floats (the norms' vector cache) + max(E, F) int8 (this
// block's quantized input row), at most the 48 KB default (n_ff ≤ 9,728).
#include "bn_chain.cuh"

namespace bn {

long g_ffn_chain_launches = 0;

// (128, 4): up to four blocks per SM (the bench's largest grid); with (128) alone ptxas chose 72
// registers on sm_90 and spilled 4 bytes.
__global__ void __launch_bounds__(128, 4) ffn_chain_kernel(FfnChain c, unsigned *counter, unsigned long long *bar,
                                                           int nmax) {
  BN_DYN_SHARED(__align__(16) float4, xs);  // nmax floats, then nmax int8
  BN_SHARED(float, qscale);
  BN_SHARED(int32_t, qsum);
  int8_t *q = (int8_t *)(xs + nmax / 4);
  // o: the attention tail's int8 row from global memory (a previous kernel wrote it).
  chain_phase<false>(c.o, c.a.q, c.a.sum, c.a.scale, c.eo, [] {});
  chain_phase<true>(c.gu, q, &qsum, &qscale, c.eg, [&] {
    grid_barrier_count(bar);  // every block's x rows are stored
    chain_norm(c.ffn, q, &qscale, &qsum, xs);
  });
  chain_phase<true>(c.down, q, &qsum, &qscale, c.ed, [&] {
    grid_barrier_count(bar);  // every block's ff values are stored (and no block reads x any more)
    chain_norm(c.fsub, q, &qscale, &qsum, xs);
  });
  if (last_block(counter)) block_norm_quant(c.next, 0, xs);
}

// The longer of the chain's two vectors (its dynamic shared memory is 5 bytes per element).
static int chain_nmax(const FfnChain &c) {
  const int E = c.o.n, F = c.gu.n / 2;
  return E > F ? E : F;
}

bn_status ffn_chain_shapes(const FfnChain &c) {
  const int E = c.o.n, F = c.gu.n / 2;
  const bool shapes = c.o.k == E && c.gu.k == E && c.gu.n == 2 * F && c.down.k == F && c.down.n == E &&
                      E % 128 == 0 && F % 128 == 0 && c.ffn.n == E && c.fsub.n == F && c.next.n == E;
  const bool kinds = c.eo.kind == EPI_RESID && c.eg.kind == EPI_GATEUP && c.ed.kind == EPI_RESID;
  if (!shapes || !kinds) {
    set_error("ffn chain: shapes o %dx%d, gate/up %dx%d, down %dx%d and norms %d/%d/%d do not chain (or the epilogues "
              "are not RESID, GATEUP, RESID)",
              c.o.n, c.o.k, c.gu.n, c.gu.k, c.down.n, c.down.k, c.ffn.n, c.fsub.n, c.next.n);
    return BN_ERR_INVALID_ARGUMENT;
  }
  return BN_OK;
}

bn_status ffn_chain_check(const FfnChain &c) {
  if (const bn_status st = ffn_chain_shapes(c)) return st;
  const int F = c.gu.n / 2, nmax = chain_nmax(c);
  if ((size_t)nmax * 5 > 48 * 1024) {
    set_error("ffn chain: n_ff %d needs %d bytes of shared memory per block (at most 49152)", F, nmax * 5);
    return BN_ERR_UNSUPPORTED;
  }
  return BN_OK;
}

int ffn_chain_max_blocks(int sm_count, const FfnChain &c) {
  return chain_resident_blocks(ffn_chain_kernel, sm_count, (size_t)chain_nmax(c) * 5);
}

bn_status launch_ffn_chain(const FfnChain &c, int blocks, unsigned *counter, unsigned long long *bar,
                           cudaStream_t s) {
  if (const bn_status st = ffn_chain_check(c)) return st;
  const int nmax = chain_nmax(c);
  const bn_status st =
      launch_chain("ffn_chain_kernel", ffn_chain_kernel, blocks, (size_t)nmax * 5, bar, 8, s, c, counter, bar, nmax);
  if (!st) g_ffn_chain_launches++;
  return st;
}

}  // namespace bn
