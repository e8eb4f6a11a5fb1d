// Host/device numerics shared by the CUDA kernels and their CPU emulation (bn_emu.cpp).
//
// Everything here is plain arithmetic that must give the same bits on the GPU and on the host:
// f32 operations with round-to-nearest and no FMA contraction (the device uses __f*_rn
// intrinsics, the host build uses -ffp-contract=off), round-half-to-even, f16 conversion, dp4a,
// and the I2_S unpacking (docs/bitnet-formats.md §2.2). The same helpers run in both builds, so
// the CPU-only test checks the index and integer logic the kernels use.
#pragma once

#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#define BN_HD __host__ __device__ __forceinline__
#define BN_UNROLL _Pragma("unroll")
#else
#define BN_UNROLL
#include <cmath>
#define BN_HD inline
#endif

#if defined(__CUDA_ARCH__)
#define BN_DEVICE_CODE 1
#else
#define BN_DEVICE_CODE 0
#endif

namespace bn {

// ---- f32 arithmetic, rounded once per operation (never fused) ---------------------------------

BN_HD float fmul(float a, float b) {
#if BN_DEVICE_CODE
  return __fmul_rn(a, b);
#else
  volatile float r = a * b;  // volatile: keep the host compiler from contracting into an FMA
  return r;
#endif
}
BN_HD float fadd(float a, float b) {
#if BN_DEVICE_CODE
  return __fadd_rn(a, b);
#else
  volatile float r = a + b;
  return r;
#endif
}
BN_HD float fsub(float a, float b) {
#if BN_DEVICE_CODE
  return __fsub_rn(a, b);
#else
  volatile float r = a - b;
  return r;
#endif
}
BN_HD float fdiv(float a, float b) {
#if BN_DEVICE_CODE
  return __fdiv_rn(a, b);
#else
  volatile float r = a / b;
  return r;
#endif
}
BN_HD float fsqrt(float a) {
#if BN_DEVICE_CODE
  return __fsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}

// Round half to even (bitnet.cpp's nearest_int, the TS roundHalfEven): rintf under the default
// rounding mode.
BN_HD float rint_even(float x) {
#if BN_DEVICE_CODE
  return rintf(x);
#else
  return std::nearbyint(x);
#endif
}

BN_HD uint32_t f32_bits(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  return u;
}
BN_HD float bits_f32(uint32_t u) {
  float x;
  memcpy(&x, &u, 4);
  return x;
}

// A 4-byte-aligned u32 load (memcpy on the host: no aliasing assumptions).
BN_HD uint32_t ld32(const void *p) {
#if BN_DEVICE_CODE
  return *(const uint32_t *)p;
#else
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
#endif
}

// ---- f16 ---------------------------------------------------------------------------------------

// f32 -> f16 bits, round to nearest even; >= 65520 -> inf; NaN stays NaN (as src/util/f16.ts).
BN_HD uint16_t f32_to_f16(float x) {
#if BN_DEVICE_CODE
  return __half_as_ushort(__float2half_rn(x));
#else
  const uint32_t bits = f32_bits(x);
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const int exp = (int)((bits >> 23) & 0xffu);
  const uint32_t mant = bits & 0x7fffffu;
  if (exp == 0xff) return (uint16_t)(mant == 0 ? (sign | 0x7c00u) : (sign | 0x7e00u | (mant >> 13)));
  const int e = exp - 112;
  if (e >= 0x1f) return (uint16_t)(sign | 0x7c00u);
  if (e <= 0) {
    if (e < -10) return (uint16_t)sign;
    const uint32_t m = mant | 0x800000u;
    const int shift = 14 - e;
    uint32_t half = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u);
    const uint32_t mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1u))) half++;
    return (uint16_t)(sign | half);
  }
  uint32_t half = ((uint32_t)e << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (half & 1u))) half++;
  return (uint16_t)(sign | half);
#endif
}

BN_HD float f16_to_f32(uint16_t h) {
#if BN_DEVICE_CODE
  return __half2float(__ushort_as_half(h));
#else
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    if (mant == 0) return bits_f32(sign);
    // subnormal: mant * 2^-24, exact in f32
    const float v = (float)mant * 5.9604644775390625e-08f;
    return sign ? -v : v;
  }
  if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (mant << 13));
  return bits_f32(sign | ((exp + 112u) << 23) | (mant << 13));
#endif
}

BN_HD float f16_round(float x) { return f16_to_f32(f32_to_f16(x)); }

// ---- int8 dot products --------------------------------------------------------------------------

// Σ of 4 signed byte products + c (the dp4a instruction). The I2_S codes (0..2) fit either
// signedness, so the kernels feed raw codes and subtract S = Σq afterwards (§2.4).
BN_HD int dp4a(uint32_t a, uint32_t b, int c) {
#if BN_DEVICE_CODE
  return __dp4a((int)a, (int)b, c);
#else
  for (int i = 0; i < 4; i++) c += (int)(int8_t)(a >> (8 * i)) * (int)(int8_t)(b >> (8 * i));
  return c;
#endif
}

// ---- I2_S (docs/bitnet-formats.md §2.2) --------------------------------------------------------
//
// A row of K codes is K/4 bytes: per 128-element block, 32 bytes; byte t holds elements t
// (bits 7:6), t+32 (5:4), t+64 (3:2), t+96 (1:0). Code 0,1,2 = -1,0,+1.
// A little-endian u32 of block bytes 4w..4w+3, shifted by 6-2p and masked, holds the codes of
// elements 32p+4w .. 32p+4w+3 in byte order: one dp4a operand against activations at the same
// offsets.

BN_HD uint32_t i2s_plane(uint32_t word, int p) { return (word >> (6 - 2 * p)) & 0x03030303u; }

// The I2_S weight region of a block row handled as 16-byte "chunks": chunk c of a row is bytes
// 16c..16c+15 = block c/2, bytes 16(c%2)..; its elements sit at activation offsets
// 128*(c/2) + 32p + 16*(c%2) + 4w + {0..3}, for plane p and word w.
BN_HD int i2s_chunk_act_offset(int c, int p) { return 128 * (c >> 1) + 32 * p + 16 * (c & 1); }

// The plane that step i (0..3) of chunk c reads when a chunk's planes are taken in rotated order,
// starting at plane (c/2) % 4 (chunk_dot's shared-memory path, bn_gemv.cuh). Why: a shared-memory
// load of 16 bytes per lane is served a quarter-warp (8 lanes) at a time, and the 8 lanes of a
// row hold chunks c0..c0+7 (c0 % 8 == 0). In plane order their offsets are 32p and 32p + 16
// modulo 128: 2 of the 8 sixteen-byte bank groups, a 4-way conflict on every load. Rotated, the
// offsets modulo 128 are 32·((i + c/2) % 4) + 16·(c % 2): 8 distinct groups, no conflict. The
// dot product is a sum of integers, so any plane order gives the same bits.
BN_HD int i2s_rot_plane(int c, int i) { return (i + (c >> 1)) & 3; }

// D contribution of one 16-byte chunk (4 words) against int8 activations `q` (the whole row's
// activation vector; 4-byte aligned). Raw codes: Σ code·q (subtract S for Σ (code-1)·q).
BN_HD int i2s_chunk_dot(const uint32_t w[4], const int8_t *q, int c, int acc) {
  BN_UNROLL
  for (int p = 0; p < 4; p++) {
    const int8_t *a = q + i2s_chunk_act_offset(c, p);
    BN_UNROLL
    for (int k = 0; k < 4; k++) acc = dp4a(i2s_plane(w[k], p), ld32(a + 4 * k), acc);
  }
  return acc;
}

// ---- activation quantization (I8_S, §2.3) and the BitLinear output (§2.4) ----------------------

// s = (float)(127 / amax) with amax = max(1e-5, max|x|) in f64.
BN_HD float act_scale(float amax_f32) {
  const double amax = amax_f32 > 1e-5 ? (double)amax_f32 : 1e-5;
  return (float)(127.0 / amax);
}

BN_HD int8_t quant_one(float x, float s) {
  float r = rint_even(fmul(x, s));
  if (r != r) return 0;  // NaN input: 0, as a JS Int8Array store of NaN
  if (r > 127.f) r = 127.f;
  if (r < -128.f) r = -128.f;
  return (int8_t)(int)r;
}

struct ScaleMap {
  // Which per-tensor scale applies to output row n of a fused matrix:
  // mode 0: by range (n < b0 -> 0, n < b1 -> 1, else 2); mode 1: by parity (n & 1).
  int mode, b0, b1;
  float ws[3];  // I2_S scales
  float os[3];  // optional `<proj>.scale` tensors (1 when absent)
  int has_os;
};

BN_HD int scale_index(const ScaleMap &sm, int n) {
  if (sm.mode == 1) return n & 1;
  return n < sm.b0 ? 0 : (n < sm.b1 ? 1 : 2);
}

// y = ((float)(D - S) / s) * w_scale [* out_scale], each step rounded to f32.
BN_HD float bitlinear_out(int dms, float s, const ScaleMap &sm, int n) {
  // Selects instead of sm.ws[i]: a run-time index into a kernel parameter would go to local memory.
  const int i = scale_index(sm, n);
  const float ws = i == 0 ? sm.ws[0] : (i == 1 ? sm.ws[1] : sm.ws[2]);
  float y = fmul(fdiv((float)dms, s), ws);
  if (sm.has_os) y = fmul(y, i == 0 ? sm.os[0] : (i == 1 ? sm.os[1] : sm.os[2]));
  return y;
}

// relu²(g)·u or silu(g)·u, as reference.ts.
BN_HD float ffn_act(float g, float u, int act) {
  float a;
  if (act == 0) {
    a = g > 0.f ? fmul(g, g) : 0.f;
  } else {
#if BN_DEVICE_CODE
    a = (float)((double)g / (1.0 + exp(-(double)g)));
#else
    a = (float)((double)g / (1.0 + std::exp(-(double)g)));
#endif
  }
  return fmul(a, u);
}

// RMSNorm scale 1/sqrt(mean + eps) from the f64 sum of f32 squares.
BN_HD float rms_scale(double sumsq, int n, float eps) {
  const float mean = (float)(sumsq / (double)n);
  return fdiv(1.f, fsqrt(fadd(mean, eps)));
}

// The sampler's last step (the TS sampler's order): w[0..k) are the top-k weights in descending
// logit order. Top-p keeps the shortest prefix whose running sum reaches top_p·Σw; the pick is
// the first index whose running sum exceeds u·(the kept total), else the last kept. Shared by the
// select kernel's thread 0 and its emulation, so both sum in this one order.
BN_HD int sample_pick(const double *w, int k, double top_p, float u) {
  double Z = 0.0;
  for (int i = 0; i < k; i++) Z += w[i];
  int keep = k;
  double total = Z;
  if (top_p < 1.0) {
    const double target = top_p * Z;
    double cum = 0.0;
    for (int i = 0; i < k; i++) {
      cum += w[i];
      if (cum >= target) {
        keep = i + 1;
        break;
      }
    }
    total = cum;
  }
  const double target = (double)u * total;
  double cum = 0.0;
  int pick = keep - 1;
  for (int i = 0; i < keep; i++) {
    cum += w[i];
    if (target < cum) {
      pick = i;
      break;
    }
  }
  return pick;
}

}  // namespace bn
