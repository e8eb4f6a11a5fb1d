// CPU emulation of the CUDA kernels (the "CPU-only" build of the engine and the test program).
//
// Each kernel is replayed with the same decomposition the GPU uses: the same chunk-to-lane
// assignment (GEMV), the same mma fragment loads (GEMM, head GEMM; the mma instructions are
// emulated from the PTX fragment layouts in bn_mma.h), the same per-lane partial sums and xor
// butterflies in f64/f32 (norms, attention, head), and the shared epilogue code. So on this
// machine the golden fixtures check the index arithmetic and the numerics the kernels use;
// only the instructions themselves (dp4a, mma, shuffles) stay unverified until a GPU run.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "bn_epilogue.h"
#include "bn_kernels.h"
#include "bn_mma.h"

namespace bn {

namespace {

template <typename T, typename F>
T butterfly(std::vector<T> v, F op) {
  for (int o = 16; o > 0; o >>= 1) {
    std::vector<T> n(32);
    for (int l = 0; l < 32; l++) n[l] = op(v[l], v[l ^ o]);
    v = n;
  }
  return v[0];
}

double add_d(double a, double b) { return a + b; }
int add_i(int a, int b) { return a + b; }
float max_f(float a, float b) { return std::fmax(a, b); }

// block_norm_quant (bn_device.cuh), thread by thread: per-thread partials over elements
// tid, tid+128, ...; an xor butterfly per warp; the warps' results combined in order.
template <typename T, typename F>
T block_reduce(const std::vector<T> &per_thread, F op) {
  T tot{};
  for (int w = 0; w < kNormThreads / 32; w++) {
    const T ws = butterfly(std::vector<T>(per_thread.begin() + 32 * w, per_thread.begin() + 32 * w + 32), op);
    tot = w == 0 ? ws : op(tot, ws);
  }
  return tot;
}

void emu_norm_quant(const NormQuant &p, int m) {
  const float *x = p.x + (size_t)m * p.ldx;
  const int n4 = p.n / 4, NT = kNormThreads;
  std::vector<double> ss(NT, 0.0);
  for (int t = 0; t < NT; t++)
    for (int i = t; i < n4; i += NT)
      for (int e = 0; e < 4; e++) ss[t] += (double)fmul(x[4 * i + e], x[4 * i + e]);
  const double tot = block_reduce(ss, add_d);
  const float sc = rms_scale(tot, p.n, p.eps);
  std::vector<float> am(NT, 0.f);
  for (int t = 0; t < NT; t++)
    for (int i = t; i < n4; i += NT)
      for (int e = 0; e < 4; e++) {
        const int k = 4 * i + e;
        const float y = fmul(fmul(x[k], sc), p.w[k]);
        am[t] = std::fmax(am[t], std::fabs(y));
        if (p.f32_out) p.f32_out[(size_t)m * p.ldx + k] = y;
        if (p.f16_out) p.f16_out[(size_t)m * p.ldx + k] = f32_to_f16(y);
      }
  if (!p.q) return;
  const float amax = block_reduce(am, max_f);
  const float s = act_scale(amax);
  std::vector<int> sums(NT, 0);
  for (int t = 0; t < NT; t++)
    for (int i = t; i < n4; i += NT)
      for (int e = 0; e < 4; e++) {
        const int k = 4 * i + e;
        const int8_t q = quant_one(fmul(fmul(x[k], sc), p.w[k]), s);
        p.q[(size_t)m * p.ldq + k] = q;
        sums[t] += q;
      }
  p.scale[m] = s;
  p.sum[m] = block_reduce(sums, add_i);
}

// ---- fast numerics (bn_fast.h, bn_fast.cuh) ---------------------------------------------------------

uint64_t max_u64(uint64_t a, uint64_t b) { return a > b ? a : b; }

// One token's int8 row q[i] = quant(fround(fround(x·sc)·w), s), i < n; returns Σq (exact in any order).
int emu_quant_row(const float *x, const float *w, int n, float sc, float s, int8_t *q) {
  int sum = 0;
  for (int i = 0; i < n; i++) {
    q[i] = quant_one(fmul(fmul(x[i], sc), w[i]), s);
    sum += q[i];
  }
  return sum;
}

// block_stats_finish: thread t sums parts t, t+128, ... in order; butterflies; warps in order.
void emu_stats_finish(const StatsOut &so, int M, int nparts) {
  for (int m = 0; m < M; m++) {
    std::vector<double> ss(kNormThreads, 0.0);
    std::vector<uint64_t> key(kNormThreads, 0);
    for (int t = 0; t < kNormThreads; t++)
      for (int p = t; p < nparts; p += kNormThreads) {
        ss[t] += so.part_ss[(size_t)m * so.part_ld + p];
        key[t] = max_u64(key[t], so.part_key[(size_t)m * so.part_ld + p]);
      }
    const double tot = block_reduce(ss, add_d);
    const uint64_t k = block_reduce(key, max_u64);
    const int i = fast_key_index(k);
    float sc, s;
    fast_finish(tot, so.ns.n, so.ns.eps, so.ns.x[(size_t)m * so.ns.ldx + i], so.ns.w[i], &sc, &s);
    so.ns.stats[2 * m] = sc;
    so.ns.stats[2 * m + 1] = s;
    if (so.q) {  // the int8 rows (BN_FAST_QUANT=tail)
      so.sum[m] = emu_quant_row(so.ns.x + (size_t)m * so.ns.ldx, so.ns.w, so.ns.n, sc, s, so.q + (size_t)m * so.ldq);
      so.scale[m] = s;
    }
  }
}

// block_quant_in: token m's int8 row (ld values, zero past n), its Σq and scale.
void emu_quant_in(const NormStats &ns, int M, int ld, std::vector<int8_t> *q, std::vector<int> *S, std::vector<float> *scale) {
  q->assign((size_t)M * ld, 0);
  S->assign((size_t)M, 0);
  scale->assign((size_t)M, 0.f);
  for (int m = 0; m < M; m++) {
    const float sc = ns.stats[2 * m], s = ns.stats[2 * m + 1];
    (*S)[m] = emu_quant_row(ns.x + (size_t)m * ns.ldx, ns.w, ns.n, sc, s, q->data() + (size_t)m * ld);
    (*scale)[m] = s;
  }
}

// The attention's scores for n positions (krow(j): the K row of the j-th, at this head's columns),
// as thread j % 128 computes them: sc[j] = f32(f32(Σ q·k in f64) · scale), the max over the warps'
// maxima, then e_j = f32(exp(sc[j] − max)) in place. Returns Σ e_j (the block order) and the max.
template <typename Row>
double emu_scores_exp(const std::vector<float> &qs, int hd, double scale, int n, Row krow, float *sc, float *mx_out) {
  const int NT = kAttnThreads, NW = NT / 32;
  std::vector<float> wmax(NW, -INFINITY);
  for (int j = 0; j < n; j++) {
    const uint16_t *kr = krow(j);
    double acc = 0.0;
    for (int d = 0; d < hd; d++) acc += (double)qs[d] * (double)f16_to_f32(kr[d]);
    sc[j] = (float)((double)(float)acc * scale);
    wmax[(j % NT) / 32] = std::fmax(wmax[(j % NT) / 32], sc[j]);
  }
  float mx = wmax[0];
  for (int w = 1; w < NW; w++) mx = std::fmax(mx, wmax[w]);
  std::vector<double> ls(NT, 0.0);
  for (int j = 0; j < n; j++) {
    sc[j] = (float)std::exp((double)sc[j] - (double)mx);
    ls[j % NT] += (double)sc[j];
  }
  *mx_out = mx;
  return block_reduce(ls, add_d);
}

uint32_t ord_key(float l) {
  uint32_t u = f32_bits(l);
  if (u == 0x80000000u) u = 0;
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

}  // namespace

class EmuOps : public Ops {
 public:
  bn_status embed(const EmbedParams &p, int M, const NormQuant &nq) override {
    for (int m = 0; m < M; m++) {
      const int tok = p.tokens[m];
      float *x = p.x + (size_t)m * p.ldx;
      for (int i = 0; i < p.n_embd; i++)
        x[i] = p.type == BN_TYPE_F16 ? f16_to_f32(((const uint16_t *)p.table)[(size_t)tok * p.n_embd + i])
                                     : ((const float *)p.table)[(size_t)tok * p.n_embd + i];
      emu_norm_quant(nq, m);
    }
    return BN_OK;
  }

  bn_status gemv(const Mat &W, const Acts &A, int M, const Epi &e, const NormQuant *tail,
                 const FastGemv *fg) override {
    if (M > kGemvMaxM) {
      set_error("gemv: M = %d > %d", M, kGemvMaxM);
      return BN_ERR_INVALID_ARGUMENT;
    }
    if (fg && !fast_gemv_ok(W, A, e, tail, *fg)) return BN_ERR_INVALID_ARGUMENT;
    const bool fast = fg && fg->in.x;  // the input quantized here from the statistics
    std::vector<int8_t> fq;
    std::vector<int> fS;
    std::vector<float> fs;
    if (fast) emu_quant_in(fg->in, M, A.ld, &fq, &fS, &fs);
    const int cpr = W.k >> 6;
    std::vector<float> y((size_t)M * W.n);
    for (int row = 0; row < W.n; row++) {
      const uint8_t *wr = W.w + (size_t)row * (W.k >> 2);
      for (int m = 0; m < M; m++) {
        const int8_t *q = fast ? fq.data() + (size_t)m * A.ld : A.q + (size_t)m * A.ld;
        int total = 0;
        for (int tx = 0; tx < kGemvTPR; tx++) {  // lane tx: chunks tx, tx+8, ...
          int a = 0;
          for (int c = tx; c < cpr; c += kGemvTPR) {
            uint32_t w[4];
            memcpy(w, wr + 16 * c, 16);
            a = i2s_chunk_dot(w, q, c, a);
          }
          total += a;
        }
        y[(size_t)m * W.n + row] = fast ? bitlinear_out(total - fS[m], fs[m], W.sm, row)
                                        : bitlinear_out(total - A.sum[m], A.scale[m], W.sm, row);
      }
    }
    for (int row = 0; row < W.n; row++)
      for (int m = 0; m < M; m++) {
        const int partner = row ^ 1;
        const float yp = partner < W.n ? y[(size_t)m * W.n + partner] : 0.f;
        epi_apply(e, m, row, y[(size_t)m * W.n + row], yp);
      }
    if (fg && fg->out.ns.stats) {
      const StatsOut &so = fg->out;
      // fast_stats_part: per block of RB rows, per token, the rows' values in row order.
      const int RB = gemv_rows_per_block(W.n), nb = (W.n + RB - 1) / RB;
      for (int b = 0; b < nb; b++)
        for (int m = 0; m < M; m++) {
          double ss = 0.0;
          uint64_t key = 0;
          for (int row = b * RB; row < (b + 1) * RB; row++) {
            double v2 = 0.0;
            uint64_t k = 0;
            if (row < W.n && (e.kind == EPI_RESID || !(row & 1))) {
              const int i = e.kind == EPI_RESID ? row : row >> 1;
              const float v = e.out[(size_t)m * e.ld + i];
              v2 = (double)fmul(v, v);
              k = fast_key(v, so.ns.w[i], i);
            }
            ss += v2;
            key = max_u64(key, k);
          }
          so.part_ss[(size_t)m * so.part_ld + b] = ss;
          so.part_key[(size_t)m * so.part_ld + b] = key;
        }
      emu_stats_finish(so, M, nb);
    }
    if (tail)
      for (int m = 0; m < M; m++) emu_norm_quant(*tail, m);
    return BN_OK;
  }

  bn_status gemm(const Mat &W, const Acts &A, int M, const Epi &e) override {
    const int AST = 144;
    std::vector<int8_t> As((size_t)64 * AST);
    const size_t rb = (size_t)W.k >> 2;
    const int kb_n = W.k >> 7;
    static int acc[4][4][2][32][4];
    for (int nb = 0; nb * 64 < W.n; nb++)
      for (int mb = 0; mb * 64 < M; mb++) {
        memset(acc, 0, sizeof(acc));
        const int m0 = mb * 64;
        for (int kb = 0; kb < kb_n; kb++) {
          for (int r = 0; r < 64; r++)
            for (int c = 0; c < 128; c++)
              As[(size_t)r * AST + c] = m0 + r < M ? A.q[(size_t)(m0 + r) * A.ld + (size_t)kb * 128 + c] : 0;
          for (int w = 0; w < 4; w++) {
            const int n0 = nb * 64 + w * 16;
            uint32_t words[32][4];
            for (int lane = 0; lane < 32; lane++) {
              const int g = lane >> 2, t = lane & 3;
              for (int j = 0; j < 2; j++) {
                const int r = n0 + 8 * j + g;
                uint32_t a = 0, b = 0;
                if (r < W.n) {
                  a = ld32(W.w + (size_t)r * rb + (size_t)kb * 32 + 4 * t);
                  b = ld32(W.w + (size_t)r * rb + (size_t)kb * 32 + 16 + 4 * t);
                }
                words[lane][2 * j] = a;
                words[lane][2 * j + 1] = b;
              }
            }
            for (int p = 0; p < 4; p++) {
              uint32_t bf[2][32][2];
              for (int lane = 0; lane < 32; lane++) {
                i2s_b_frag(words[lane][0], words[lane][1], p, bf[0][lane]);
                i2s_b_frag(words[lane][2], words[lane][3], p, bf[1][lane]);
              }
              for (int i = 0; i < 4; i++) {
                if (m0 + 16 * i >= M) continue;
                uint32_t af[32][4];
                for (int lane = 0; lane < 32; lane++)
                  s8_a_frag(As.data(), AST, 16 * i, 32 * p, lane >> 2, lane & 3, af[lane]);
                emu_mma_s8u8(acc[w][i][0], af, bf[0]);
                emu_mma_s8u8(acc[w][i][1], af, bf[1]);
              }
            }
          }
        }
        for (int w = 0; w < 4; w++)
          for (int lane = 0; lane < 32; lane++) {
            const int g = lane >> 2, t = lane & 3;
            for (int i = 0; i < 4; i++)
              for (int j = 0; j < 2; j++)
                for (int h = 0; h < 2; h++) {
                  const int m = m0 + 16 * i + g + 8 * h, n = nb * 64 + w * 16 + 8 * j + 2 * t;
                  if (m >= M || n >= W.n) continue;
                  const int d0 = acc[w][i][j][lane][2 * h], d1 = acc[w][i][j][lane][2 * h + 1];
                  const float y0 = bitlinear_out(d0 - A.sum[m], A.scale[m], W.sm, n);
                  const bool has1 = n + 1 < W.n;
                  const float y1 = has1 ? bitlinear_out(d1 - A.sum[m], A.scale[m], W.sm, n + 1) : 0.f;
                  epi_apply(e, m, n, y0, y1);
                  if (has1) epi_apply(e, m, n + 1, y1, 0.f);
                }
          }
      }
    return BN_OK;
  }

  bn_status norm_quant(const NormQuant &nq, int M) override {
    for (int m = 0; m < M; m++) emu_norm_quant(nq, m);
    return BN_OK;
  }

  bn_status attention(const AttnParams &p, int M, const NormQuant *tail, const FastAttn *split) override {
    if (split) {
      if (tail) {
        set_error("split attention (fast numerics) takes statistics, not an exact norm tail");
        return BN_ERR_INVALID_ARGUMENT;
      }
      return attention_split(p, *split, M);
    }
    const int hd = p.head_dim, P = 1 << p.page_shift, mask = P - 1;
    std::vector<float> sc((size_t)p.max_t), qs((size_t)hd);
    for (int m = 0; m < M; m++)
      for (int h = 0; h < p.n_head; h++) {
        const int kvh = h / (p.n_head / p.n_head_kv);
        const int T = p.pos[m] + 1;
        if (T > p.max_t) {
          set_error("attention: position %d beyond the scores buffer (%d)", T - 1, p.max_t);
          return BN_ERR_INVALID_ARGUMENT;
        }
        const int32_t *bt = p.block_table + (size_t)p.slot[m] * p.max_pages;
        for (int d = 0; d < hd; d++) qs[d] = f16_to_f32(p.q16[(size_t)m * p.ldq + h * hd + d]);
        float mx;
        const double tot = emu_scores_exp(
            qs, hd, p.scale, T,
            [&](int t) { return p.kc + ((size_t)bt[t >> p.page_shift] * P + (t & mask)) * p.kv_dim + kvh * hd; },
            sc.data(), &mx);
        const float inv = (float)(1.0 / tot);
        for (int t = 0; t < T; t++) sc[t] = f16_round(fmul(sc[t], inv));
        for (int d = 0; d < hd; d++) {
          float acc = 0.f;
          for (int pg = 0; pg * P < T; pg++) {
            const uint16_t *vr = p.vc + (size_t)bt[pg] * P * p.kv_dim + kvh * hd + d;
            const int tn = std::min(P, T - pg * P);
            for (int o = 0; o < tn; o++) acc = fadd(acc, fmul(sc[pg * P + o], f16_to_f32(vr[(size_t)o * p.kv_dim])));
          }
          p.out[(size_t)m * p.ldo + h * hd + d] = acc;
        }
      }
    if (tail)
      for (int m = 0; m < M; m++) emu_norm_quant(*tail, m);
    return BN_OK;
  }

  // attn_split_kernel (k_attn_split.cu), block by block.
  bn_status attention_split(const AttnParams &p, const FastAttn &f, int M) {
    const int hd = p.head_dim, S = f.splits, P = 1 << p.page_shift, mask = P - 1, NT = kAttnThreads;
    if (!fast_attn_ok(p, f, M)) return BN_ERR_INVALID_ARGUMENT;
    std::vector<float> sc((size_t)p.max_t), qs((size_t)hd);
    for (int m = 0; m < M; m++) {
      const int T = p.pos[m] + 1;
      if (T > p.max_t) {
        set_error("attention: position %d beyond the scores buffer (%d)", T - 1, p.max_t);
        return BN_ERR_INVALID_ARGUMENT;
      }
      const int C = fast_split_len(T, S);
      const int32_t *bt = p.block_table + (size_t)p.slot[m] * p.max_pages;
      auto row_of = [&](const uint16_t *pool, int t) {
        return pool + ((size_t)bt[t >> p.page_shift] * P + (t & mask)) * p.kv_dim;
      };
      for (int h = 0; h < p.n_head; h++) {
        const int kvh = h / (p.n_head / p.n_head_kv);
        const size_t head_row = (size_t)m * p.n_head + h;
        for (int d = 0; d < hd; d++) qs[d] = f16_to_f32(p.q16[(size_t)m * p.ldq + h * hd + d]);
        for (int r = 0; r < S; r++) {
          float *po = f.part_o + (head_row * S + r) * hd;
          float *pml = f.part_ml + (head_row * S + r) * 2;
          const int t_lo = r * C, n_all = std::max(0, std::min(T, t_lo + C) - t_lo);
          if (n_all == 0) {
            pml[0] = -INFINITY;
            pml[1] = 0.f;
            for (int d = 0; d < hd; d++) po[d] = 0.f;
            continue;
          }
          float mx;
          const double tot = emu_scores_exp(
              qs, hd, p.scale, n_all, [&](int j) { return row_of(p.kc, t_lo + j) + kvh * hd; }, sc.data(), &mx);
          for (int d = 0; d < hd; d++) {
            float a = 0.f;
            for (int j = 0; j < n_all; j++) a = fadd(a, fmul(sc[j], f16_to_f32(row_of(p.vc, t_lo + j)[kvh * hd + d])));
            po[d] = a;
          }
          pml[0] = mx;
          pml[1] = (float)tot;
        }
        // the combine (the head's last range)
        const float *ml0 = f.part_ml + head_row * S * 2;
        const float *o0 = f.part_o + head_row * S * hd;
        float g = -INFINITY;
        for (int r = 0; r < S; r++) g = std::fmax(g, ml0[2 * r]);
        std::vector<float> wr((size_t)S);
        double L = 0.0;
        for (int r = 0; r < S; r++) {
          wr[r] = (float)std::exp((double)ml0[2 * r] - (double)g);
          L += (double)wr[r] * (double)ml0[2 * r + 1];
        }
        std::vector<double> ss(NT, 0.0);
        std::vector<uint64_t> key(NT, 0);
        for (int d = 0; d < hd; d++) {
          double o = 0.0;
          for (int r = 0; r < S; r++) o += (double)wr[r] * (double)o0[(size_t)r * hd + d];
          const float out = (float)(o / L);
          const int e = h * hd + d;
          p.out[(size_t)m * p.ldo + e] = out;
          if (f.so.ns.stats) {
            ss[d % NT] += (double)fmul(out, out);
            key[d % NT] = max_u64(key[d % NT], fast_key(out, f.so.ns.w[e], e));
          }
        }
        if (f.so.ns.stats) {
          f.so.part_ss[(size_t)m * f.so.part_ld + h] = block_reduce(ss, add_d);
          f.so.part_key[(size_t)m * f.so.part_ld + h] = block_reduce(key, max_u64);
        }
      }
    }
    if (f.so.ns.stats) emu_stats_finish(f.so, M, p.n_head);
    return BN_OK;
  }

  bn_status head(const HeadParams &p, int R, bool gemm) override {
    const int V = p.n_vocab, K = p.k;
    if (gemm && p.mode == BN_HEAD_F16 && p.type == BN_TYPE_F16) {
      const int HS = 72;
      std::vector<uint16_t> As((size_t)64 * HS), Bs((size_t)64 * HS);
      const uint16_t *W = (const uint16_t *)p.w;
      static float acc[4][4][2][32][4];
      for (int vb = 0; vb * 64 < V; vb++)
        for (int rb = 0; rb * 64 < R; rb++) {
          memset(acc, 0, sizeof(acc));
          const int v0 = vb * 64, r0 = rb * 64;
          for (int k0 = 0; k0 < K; k0 += 64) {
            for (int r = 0; r < 64; r++)
              for (int c = 0; c < 64; c++) {
                As[(size_t)r * HS + c] = r0 + r < R ? p.h16[(size_t)p.rows[r0 + r] * p.ldh + k0 + c] : 0;
                Bs[(size_t)r * HS + c] = v0 + r < V ? W[(size_t)(v0 + r) * K + k0 + c] : 0;
              }
            for (int w = 0; w < 4; w++)
              for (int ks = 0; ks < 4; ks++) {
                uint32_t b0[32][2], b1[32][2];
                for (int lane = 0; lane < 32; lane++) {
                  f16_b_frag(Bs.data(), HS, w * 16, ks * 16, lane >> 2, lane & 3, b0[lane]);
                  f16_b_frag(Bs.data(), HS, w * 16 + 8, ks * 16, lane >> 2, lane & 3, b1[lane]);
                }
                for (int i = 0; i < 4; i++) {
                  if (r0 + 16 * i >= R) continue;
                  uint32_t a[32][4];
                  for (int lane = 0; lane < 32; lane++)
                    f16_a_frag(As.data(), HS, 16 * i, ks * 16, lane >> 2, lane & 3, a[lane]);
                  emu_mma_f16(acc[w][i][0], a, b0);
                  emu_mma_f16(acc[w][i][1], a, b1);
                }
              }
          }
          for (int w = 0; w < 4; w++)
            for (int lane = 0; lane < 32; lane++) {
              const int g = lane >> 2, t = lane & 3;
              for (int i = 0; i < 4; i++)
                for (int j = 0; j < 2; j++)
                  for (int h = 0; h < 2; h++) {
                    const int r = r0 + 16 * i + g + 8 * h, v = v0 + w * 16 + 8 * j + 2 * t;
                    if (r >= R) continue;
                    if (v < V) p.logits[(size_t)r * V + v] = acc[w][i][j][lane][2 * h];
                    if (v + 1 < V) p.logits[(size_t)r * V + v + 1] = acc[w][i][j][lane][2 * h + 1];
                  }
            }
        }
      return BN_OK;
    }
    for (int r = 0; r < R; r++) {
      const int hr = p.rows[r];
      for (int v = 0; v < V; v++) {
        if (p.mode == BN_HEAD_INT8) {
          std::vector<int> part(32, 0);
          for (int lane = 0; lane < 32; lane++)
            for (int c = lane; c < K / 16; c += 32) {
              uint32_t w[4], x[4];
              memcpy(w, p.w8 + (size_t)v * K + 16 * c, 16);
              memcpy(x, p.hq + (size_t)hr * p.ldh + 16 * c, 16);
              for (int e = 0; e < 4; e++) part[lane] = dp4a(w[e], x[e], part[lane]);
            }
          const int s = butterfly(part, add_i);
          p.logits[(size_t)r * V + v] = fdiv(fdiv((float)s, p.hscale[hr]), p.w8_scale[v]);
        } else if (p.type == BN_TYPE_F16) {
          std::vector<double> part(32, 0.0);
          const uint16_t *wr = (const uint16_t *)p.w + (size_t)v * K;
          const uint16_t *hh = p.h16 + (size_t)hr * p.ldh;
          for (int lane = 0; lane < 32; lane++)
            for (int c = lane; c < K / 8; c += 32)
              for (int e = 0; e < 8; e++)
                part[lane] += (double)f16_to_f32(hh[8 * c + e]) * (double)f16_to_f32(wr[8 * c + e]);
          p.logits[(size_t)r * V + v] = (float)butterfly(part, add_d);
        } else {
          std::vector<double> part(32, 0.0);
          const float *wr = (const float *)p.w + (size_t)v * K;
          const float *hh = p.h32 + (size_t)hr * p.ldh;
          for (int lane = 0; lane < 32; lane++)
            for (int c = lane; c < K / 4; c += 32)
              for (int e = 0; e < 4; e++) part[lane] += (double)hh[4 * c + e] * (double)wr[4 * c + e];
          p.logits[(size_t)r * V + v] = (float)butterfly(part, add_d);
        }
      }
    }
    return BN_OK;
  }

  bn_status select(const SelectParams &p, int R) override {
    const int V = p.n_vocab;
    for (int r = 0; r < R; r++) {
      float *lg = p.logits + (size_t)r * V;
      const SampleRow *row = p.rows ? p.rows + r : nullptr;
      if (row && row->penalty != 1.0) {
        for (int i = 0; i < row->n_history; i++) {
          const int id = row->history[i];
          if (id < 0 || id >= V) continue;
          bool seen = false;
          for (int j = 0; j < i; j++) seen |= row->history[j] == id;
          if (seen) continue;
          const float l = lg[id];
          lg[id] = (float)(l > 0.f ? (double)l / row->penalty : (double)l * row->penalty);
        }
      }
      bool nan = false;
      for (int v = 0; v < V; v++) nan |= lg[v] != lg[v];
      if (nan) *p.nan_flag = 1;
      const double T = row ? row->temperature : 0.0;
      if (!(T > 0.0)) {
        int best = -1;
        for (int v = 0; v < V; v++) {
          if (lg[v] != lg[v]) continue;
          if (best < 0 || lg[v] > lg[best]) best = v;
        }
        p.out[r] = best < 0 ? 0 : best;
        continue;
      }
      const int k = std::min(row->top_k, V);
      std::vector<std::pair<uint64_t, float>> c;
      c.reserve((size_t)V);
      for (int v = 0; v < V; v++)
        if (lg[v] == lg[v]) c.push_back({((uint64_t)(~ord_key(lg[v])) << 32) | (uint32_t)v, lg[v]});
      const size_t kk = std::min((size_t)k, c.size());
      std::partial_sort(c.begin(), c.begin() + (long)kk, c.end(),
                        [](const std::pair<uint64_t, float> &a, const std::pair<uint64_t, float> &b) {
                          return a.first < b.first;
                        });
      std::vector<double> w(kk);
      const double mz = (double)c[0].second / T;
      for (size_t i = 0; i < kk; i++) {
        const double z = (double)c[i].second / T;
        w[i] = std::isinf(mz) ? (mz > 0 ? (z == mz ? 1.0 : 0.0) : 1.0) : std::exp(z - mz);
      }
      const int pick = sample_pick(w.data(), (int)kk, row->top_p, row->u);
      p.out[r] = (int32_t)(c[pick].first & 0xffffffffu);
    }
    return BN_OK;
  }
};

class EmuDevice : public Device {
 public:
  EmuOps ops_;
  bn_status alloc(void **p, size_t bytes) override {
    *p = std::calloc(1, (bytes + 63) / 64 * 64);
    if (!*p) {
      set_error("host allocation of %zu bytes failed", bytes);
      return BN_ERR_OUT_OF_MEMORY;
    }
    return BN_OK;
  }
  void release(void *p) override { std::free(p); }
  bn_status alloc_host(void **p, size_t bytes) override { return alloc(p, bytes); }
  void release_host(void *p) override { std::free(p); }
  bn_status h2d(void *dst, const void *src, size_t bytes) override {
    memcpy(dst, src, bytes);
    return BN_OK;
  }
  bn_status d2h(void *dst, const void *src, size_t bytes) override {
    memcpy(dst, src, bytes);
    return BN_OK;
  }
  bn_status d2d(void *dst, const void *src, size_t bytes) override {
    memcpy(dst, src, bytes);
    return BN_OK;
  }
  bn_status memset0(void *p, size_t bytes) override {
    memset(p, 0, bytes);
    return BN_OK;
  }
  bn_status sync() override { return BN_OK; }
  std::chrono::steady_clock::time_point t0;
  bn_status timer_start() override {
    t0 = std::chrono::steady_clock::now();
    return BN_OK;
  }
  bn_status timer_stop(double *ms) override {
    *ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    return BN_OK;
  }
  Ops &ops() override { return ops_; }
  bn_status free_memory(uint64_t *f, uint64_t *t) override {
    *f = 1ull << 30;  // the emulation budgets 1 GiB for the KV cache by default (60% of this)
    *t = 1ull << 30;
    return BN_OK;
  }
  void describe(char *name, size_t len, int *major, int *minor) override {
    snprintf(name, len, "CPU emulation");
    *major = 0;
    *minor = 0;
  }
  bool has_graphs() override { return false; }
  bn_status begin_capture() override { return BN_ERR_UNSUPPORTED; }
  bn_status end_capture(int *) override { return BN_ERR_UNSUPPORTED; }
  bn_status launch_graph(int) override { return BN_ERR_UNSUPPORTED; }
  bn_status configure(int, int, int) override { return BN_OK; }
};

#if !defined(BN_WITH_CUDA)
bn_status make_device(int, Device **out) {
  *out = new EmuDevice();
  return BN_OK;
}
#endif

// For tests on a GPU build: the emulator next to the real device.
Device *make_emu_device() { return new EmuDevice(); }

}  // namespace bn

#if !defined(BN_WITH_CUDA)
extern "C" bn_status bn_query_device(int32_t, bn_device_info *out) {
  if (out) memset(out, 0, sizeof(*out));
  bn::set_error("this is the CPU emulation build of the engine (no CUDA)");
  return BN_ERR_NO_DEVICE;
}
#endif
