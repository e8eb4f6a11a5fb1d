// The exact GEMV's inner pieces (k_gemv.cu), shared with the persistent FFN chain
// (k_ffn_chain.cu): one 16-byte I2_S weight chunk against the int8 activations, and a lane's group
// of G chunk loads.
#pragma once

#include "bn_device.cuh"

namespace bn {

// SH: the activations are in shared memory (fast numerics, the persistent chains), else
// read-only global memory. ROT: the chunk's planes in the rotated order (i2s_rot_plane: no bank
// conflict among a quarter-warp's 16-byte loads); always with SH. Without it, plane order: the
// default GEMV's code, verified on an H200; BN_GEMV=rot times the rotated order on global loads,
// which go through the same banked L1 data array. Same bits either way (integer sums).
template <bool SH = false, bool ROT = SH>
__device__ __forceinline__ int chunk_dot(const uint4 &w, const int8_t *q, int c, int acc) {
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int p = ROT ? i2s_rot_plane(c, i) : i;
    const uint4 *ap = (const uint4 *)(q + i2s_chunk_act_offset(c, p));
    const uint4 a = SH ? *ap : __ldg(ap);
    acc = dp4a(i2s_plane(w.x, p), a.x, acc);
    acc = dp4a(i2s_plane(w.y, p), a.y, acc);
    acc = dp4a(i2s_plane(w.z, p), a.z, acc);
    acc = dp4a(i2s_plane(w.w, p), a.w, acc);
  }
  return acc;
}

template <int G, int TPR>
__device__ __forceinline__ void load_group(uint4 (&w)[G], const uint4 *wr, int c0, int cpr) {
#pragma unroll
  for (int j = 0; j < G; j++) w[j] = c0 + j * TPR < cpr ? __ldcs(wr + c0 + j * TPR) : make_uint4(0, 0, 0, 0);
}

}  // namespace bn
