// The exact GEMV's inner pieces (k_gemv.cu), shared with the persistent FFN chain
// (k_ffn_chain.cu): one 16-byte I2_S weight chunk against the int8 activations, and a lane's group
// of G chunk loads.
#pragma once

#include "bn_device.cuh"

namespace bn {

// SH: the activations are in shared memory (fast numerics, the persistent chains), read in the
// rotated plane order (i2s_rot_plane: no bank conflict), else read-only global memory in plane
// order (the verified default kernel's code).
template <bool SH = false>
__device__ __forceinline__ int chunk_dot(const uint4 &w, const int8_t *q, int c, int acc) {
  if constexpr (SH) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const int p = i2s_rot_plane(c, i);
      const uint4 a = *(const uint4 *)(q + i2s_chunk_act_offset(c, p));
      acc = dp4a(i2s_plane(w.x, p), a.x, acc);
      acc = dp4a(i2s_plane(w.y, p), a.y, acc);
      acc = dp4a(i2s_plane(w.z, p), a.z, acc);
      acc = dp4a(i2s_plane(w.w, p), a.w, acc);
    }
  } else {
#pragma unroll
    for (int p = 0; p < 4; p++) {
      const uint4 a = __ldg((const uint4 *)(q + i2s_chunk_act_offset(c, p)));
      acc = dp4a(i2s_plane(w.x, p), a.x, acc);
      acc = dp4a(i2s_plane(w.y, p), a.y, acc);
      acc = dp4a(i2s_plane(w.z, p), a.z, acc);
      acc = dp4a(i2s_plane(w.w, p), a.w, acc);
    }
  }
  return acc;
}

template <int G, int TPR>
__device__ __forceinline__ void load_group(uint4 (&w)[G], const uint4 *wr, int c0, int cpr) {
#pragma unroll
  for (int j = 0; j < G; j++) w[j] = c0 + j * TPR < cpr ? __ldcs(wr + c0 + j * TPR) : make_uint4(0, 0, 0, 0);
}

}  // namespace bn
