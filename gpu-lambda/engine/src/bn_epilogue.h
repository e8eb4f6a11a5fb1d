// Matmul epilogues (host/device): what happens to y[m][n] once the exact integer dot product is
// turned into the BitLinear output. Shared by the GEMV, the GEMM and the CPU emulation, so the
// RoPE pairing, the paged-cache addressing and the gate/up pairing are tested on the CPU.
#pragma once

#include "bn_kernels.h"

namespace bn {

// Element offset of position `pos` of sequence slot `slot` in a layer's paged K or V pool.
BN_HD size_t cache_offset_at(const Epi &e, int pos, int slot) {
  const int page = e.block_table[(size_t)slot * e.max_pages + (pos >> e.page_shift)];
  const int off = pos & ((1 << e.page_shift) - 1);
  return (((size_t)page << e.page_shift) + (size_t)off) * (size_t)e.kv_dim;
}

// The same for token m.
BN_HD size_t cache_offset(const Epi &e, int m) { return cache_offset_at(e, e.pos[m], e.slot[m]); }

// q/k/v rows of the fused QKV matrix (layout in bn_model.h). For a RoPE pair only the even row
// acts, with `yp` = the odd partner's value. `pos` = e.pos[m] and `coff` = cache_offset(e, m):
// callers that finish many outputs of one token (the GEMM) look them up once per token.
BN_HD void qkv_store_at(const Epi &e, int m, int n, float y, float yp, int pos, size_t coff) {
  const int E = e.n_embd, kvd = e.kv_dim, hd = e.head_dim, half = e.n_rot / 2;
  int region, r;
  if (n < E) {
    region = 0;
    r = n;
  } else if (n < E + kvd) {
    region = 1;
    r = n - E;
  } else {
    region = 2;
    r = n - E - kvd;
  }
  if (region == 2) {
    e.vc[coff + r] = f32_to_f16(y);
    return;
  }
  const int h = r / hd, j = r - h * hd;
  float o0 = y, o1 = 0.f;
  int d0 = r, d1 = -1;
  if (j < e.n_rot) {
    if (j & 1) return;  // the even partner rotates the pair
    const float *cs = e.rope + ((size_t)pos * half + (j >> 1)) * 2;
    const float c = cs[0], s = cs[1];
    o0 = fsub(fmul(y, c), fmul(yp, s));
    o1 = fadd(fmul(y, s), fmul(yp, c));
    d0 = h * hd + (j >> 1);
    d1 = d0 + half;
  }
  if (region == 0) {
    uint16_t *q = e.q16 + (size_t)m * e.ldq;
    q[d0] = f32_to_f16(o0);
    if (d1 >= 0) q[d1] = f32_to_f16(o1);
  } else {
    uint16_t *k = e.kc + coff;
    k[d0] = f32_to_f16(o0);
    if (d1 >= 0) k[d1] = f32_to_f16(o1);
  }
}

BN_HD void qkv_store(const Epi &e, int m, int n, float y, float yp) {
  qkv_store_at(e, m, n, y, yp, e.pos[m], n < e.n_embd ? 0 : cache_offset(e, m));
}

// Applies the epilogue to y = y[m][n]; `yp` = y[m][n + 1] when n is even (pair kinds only).
BN_HD void epi_apply(const Epi &e, int m, int n, float y, float yp) {
  switch (e.kind) {
    case EPI_STORE:
      e.out[(size_t)m * e.ld + n] = y;
      break;
    case EPI_RESID: {
      float *o = e.out + (size_t)m * e.ld + n;
      *o = fadd(*o, y);
      break;
    }
    case EPI_GATEUP:
      if (!(n & 1)) e.out[(size_t)m * e.ld + (n >> 1)] = ffn_act(y, yp, e.act);
      break;
    case EPI_QKV:
      qkv_store(e, m, n, y, yp);
      break;
  }
}

}  // namespace bn
