// Tensor-core fragment helpers (host/device), per the PTX ISA fragment layouts of
// mma.sync.aligned.m16n8k32 (s8/u8) and m16n8k16 (f16): lane = 4*g + t (g = lane>>2, t = lane&3).
//   k32 A (16x32, row): a0 = A[g][4t..4t+3], a1 = A[g+8][4t..], a2 = A[g][16+4t..], a3 = A[g+8][16+4t..]
//   k32 B (32x8, col):  b0 = B[4t..4t+3][g],  b1 = B[16+4t..16+4t+3][g]
//   k16 A (16x16, f16): a0 = A[g][2t,2t+1], a1 = A[g+8][2t..], a2 = A[g][8+2t..], a3 = A[g+8][8+2t..]
//   k16 B (16x8, f16):  b0 = B[2t,2t+1][g], b1 = B[8+2t,8+2t+1][g]
//   C/D (16x8, s32/f32): c0 = C[g][2t], c1 = C[g][2t+1], c2 = C[g+8][2t], c3 = C[g+8][2t+1]
// The CPU emulation (bn_emu.cpp) implements the instructions from these layouts, so the fragment
// loads below are checked on the host against plain matrix products.
#pragma once

#include "bn_numerics.h"

namespace bn {

// I2_S weights as the k32 B operand (u8 codes 0..2): the n8 tile's column g is weight row
// n0+g; for plane p of a 128-block (k = 32p..32p+31) its 32 bytes give b0 = word t, b1 = word
// t+4, each shifted to plane p (bytes 4t..4t+3 hold elements 4t..4t+3 of every plane).
BN_HD void i2s_b_frag(uint32_t w_t, uint32_t w_t4, int p, uint32_t b[2]) {
  b[0] = i2s_plane(w_t, p);
  b[1] = i2s_plane(w_t4, p);
}

// k32 A operand from a staged int8 tile (row stride `st` bytes): m16 tile rows r0.., k offset k0.
BN_HD void s8_a_frag(const int8_t *tile, int st, int r0, int k0, int g, int t, uint32_t a[4]) {
  a[0] = ld32(tile + (r0 + g) * st + k0 + 4 * t);
  a[1] = ld32(tile + (r0 + g + 8) * st + k0 + 4 * t);
  a[2] = ld32(tile + (r0 + g) * st + k0 + 16 + 4 * t);
  a[3] = ld32(tile + (r0 + g + 8) * st + k0 + 16 + 4 * t);
}

// k16 A operand (f16) from a staged tile of halves (row stride `st` halves).
BN_HD void f16_a_frag(const uint16_t *tile, int st, int r0, int k0, int g, int t, uint32_t a[4]) {
  a[0] = ld32(tile + (r0 + g) * st + k0 + 2 * t);
  a[1] = ld32(tile + (r0 + g + 8) * st + k0 + 2 * t);
  a[2] = ld32(tile + (r0 + g) * st + k0 + 8 + 2 * t);
  a[3] = ld32(tile + (r0 + g + 8) * st + k0 + 8 + 2 * t);
}

// k16 B operand (f16) from a staged tile whose rows are the B columns (weight rows).
BN_HD void f16_b_frag(const uint16_t *tile, int st, int n0, int k0, int g, int t, uint32_t b[2]) {
  b[0] = ld32(tile + (n0 + g) * st + k0 + 2 * t);
  b[1] = ld32(tile + (n0 + g) * st + k0 + 8 + 2 * t);
}

#if !BN_DEVICE_CODE
// The instructions themselves, warp-wide, on the host (the CPU emulation and the CPU simulation):
// lane L's fragments a[L], b[L] and accumulators c[L], per the layouts above. Integer sums are
// exact in any order; the f16 products are exact and summed in f64, then added to C once (the
// tensor core's internal order and rounding are unspecified; the head is checked with tolerances).
//
// Both gather the fragments into A (16 rows of k) and B by column (8 columns of k), so that each
// of the 16x8 outputs is a dot of two contiguous k-vectors (2.5x faster than walking B down its
// columns), then hand each lane its four. The sanitizers leave them alone: they read only the
// lanes' fragments, which the kernels' fragment loads (instrumented) have already copied out of
// device and shared memory; instrumented, emu_mma_s8u8 was 15% of an AddressSanitizer run of the
// model checks, and ~8x slower per call.
#if defined(__GNUC__)
#define BN_EMU_NO_SANITIZE __attribute__((no_sanitize("address", "alignment")))
#else
#define BN_EMU_NO_SANITIZE
#endif
BN_EMU_NO_SANITIZE inline void emu_mma_s8u8(int c[32][4], const uint32_t a[32][4], const uint32_t b[32][2]) {
  int8_t A[16][32];   // A[row][k]
  uint8_t Bc[8][32];  // B[k][col] as Bc[col][k]
  for (int lane = 0; lane < 32; lane++) {
    const int g = lane >> 2, t = lane & 3;
    // word r of a lane holds 4 consecutive k of one row, lowest byte first (little-endian)
    for (int r = 0; r < 4; r++) memcpy(&A[g + 8 * (r % 2)][4 * t + 16 * (r / 2)], &a[lane][r], 4);
    for (int r = 0; r < 2; r++) memcpy(&Bc[g][4 * t + 16 * r], &b[lane][r], 4);
  }
  int D[16][8];
  for (int row = 0; row < 16; row++)
    for (int col = 0; col < 8; col++) {
      int s = 0;
      for (int k = 0; k < 32; k++) s += (int)A[row][k] * (int)Bc[col][k];
      D[row][col] = s;
    }
  for (int lane = 0; lane < 32; lane++) {
    const int g = lane >> 2, t = lane & 3;
    for (int q = 0; q < 4; q++) c[lane][q] += D[g + 8 * (q >> 1)][2 * t + (q & 1)];
  }
}

BN_EMU_NO_SANITIZE inline void emu_mma_f16(float c[32][4], const uint32_t a[32][4], const uint32_t b[32][2]) {
  float A[16][16], Bc[8][16];  // A[row][k]; B[k][col] as Bc[col][k]
  for (int lane = 0; lane < 32; lane++) {
    const int g = lane >> 2, t = lane & 3;
    for (int r = 0; r < 4; r++)
      for (int e = 0; e < 2; e++)
        A[g + 8 * (r % 2)][2 * t + 8 * (r / 2) + e] = f16_to_f32((uint16_t)(a[lane][r] >> (16 * e)));
    for (int r = 0; r < 2; r++)
      for (int e = 0; e < 2; e++) Bc[g][2 * t + 8 * r + e] = f16_to_f32((uint16_t)(b[lane][r] >> (16 * e)));
  }
  for (int lane = 0; lane < 32; lane++) {
    const int g = lane >> 2, t = lane & 3;
    for (int q = 0; q < 4; q++) {
      const int row = g + 8 * (q >> 1), col = 2 * t + (q & 1);
      double s = 0;  // k in order: the same sum as ever
      for (int k = 0; k < 16; k++) s += (double)A[row][k] * (double)Bc[col][k];
      c[lane][q] = (float)((double)c[lane][q] + s);
    }
  }
}
#undef BN_EMU_NO_SANITIZE
#endif

}  // namespace bn
