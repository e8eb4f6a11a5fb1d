// C++ port of src/model/synth.ts (synthetic BitNet models with random weights), so the GPU
// machine (no Node) can build a 2B-4T-shaped model in memory. Same PRNG (src/generate/prng.ts:
// xoshiro128** seeded through splitmix32 with murmur3's fmix32), same per-tensor streams
// (seed, FNV-1a of the tensor name), same ternary draw, scale and norm formulas: the ternary
// codes, scales and norms are bit-identical to the TS generator; embeddings use libm's log/cos
// where V8 uses its own, so an f16 value may differ in its last bit (checked on the tiny model).
#pragma once

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "../engine/include/bitnet_cuda.h"
#include "../engine/src/bn_numerics.h"

namespace bnt {

inline uint32_t mix32(uint32_t z) {
  z = (z ^ (z >> 16)) * 0x85ebca6bu;
  z = (z ^ (z >> 13)) * 0xc2b2ae35u;
  return z ^ (z >> 16);
}

struct Xoshiro {
  uint32_t s[4];
  explicit Xoshiro(uint64_t seed) {
    const uint32_t lo = (uint32_t)seed, hi = (uint32_t)(seed >> 32);
    uint32_t x = lo ^ mix32(hi);
    for (int i = 0; i < 4; i++) {
      x += 0x9e3779b9u;
      s[i] = mix32(x);
    }
  }
  static uint32_t rotl(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }
  uint32_t next() {
    const uint32_t result = rotl(s[1] * 5u, 7) * 9u;
    const uint32_t t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }
  double next_float() { return (double)(next() >> 8) / 16777216.0; }
};

inline uint32_t fnv1a(const std::string &s) {
  uint32_t h = 0x811c9dc5u;
  for (unsigned char c : s) h = (h ^ c) * 0x01000193u;
  return h;
}

inline Xoshiro stream_for(uint32_t seed, const std::string &name) {
  return Xoshiro(((uint64_t)seed << 32) | fnv1a(name));
}

inline double gaussian(Xoshiro &r) {
  const double u = 1.0 - r.next_float();
  const double v = r.next_float();
  return std::sqrt(-2.0 * std::log(u)) * std::cos(2.0 * M_PI * v);
}

inline float synth_scale(uint32_t seed, const std::string &name, int fan_in) {
  Xoshiro r = stream_for(seed, name + "#scale");
  const size_t n = name.size();
  const bool qk = n >= 13 && (name.compare(n - 13, 13, "attn_q.weight") == 0 || name.compare(n - 13, 13, "attn_k.weight") == 0);
  const double jitter = 0.9 + 0.2 * r.next_float();
  const double v = ((qk ? 1.2 : 1.0) * jitter) / std::sqrt((2.0 * fan_in) / 3.0);
  return bn::f16_to_f32(bn::f32_to_f16((float)v));
}

// I2_S bytes (codes + the 32-byte tail holding the f32 scale) of `rows` × `k` synthetic ternary
// weights drawn from the tensor's stream.
inline std::vector<uint8_t> synth_i2s(uint32_t seed, const std::string &name, int k, int rows) {
  const size_t n = (size_t)k * rows;
  std::vector<uint8_t> out(n / 4 + 32, 0);
  Xoshiro r = stream_for(seed, name);
  for (size_t base = 0; base < n; base += 128) {
    uint8_t *blk = &out[base / 4];
    for (int j = 0; j < 128; j++) {
      const int t = (int)std::floor(((double)r.next() / 4294967296.0) * 3.0) - 1;
      blk[j & 31] |= (uint8_t)((t + 1) << (6 - 2 * (j >> 5)));
    }
  }
  const float s = synth_scale(seed, name, k);
  memcpy(&out[n / 4], &s, 4);
  return out;
}

inline std::vector<uint8_t> synth_norm(uint32_t seed, const std::string &name, int n) {
  std::vector<uint8_t> out((size_t)n * 4);
  Xoshiro r = stream_for(seed, name);
  for (int i = 0; i < n; i++) {
    const float x = (float)(0.9 + 0.2 * r.next_float());
    memcpy(&out[(size_t)i * 4], &x, 4);
  }
  return out;
}

inline std::vector<uint8_t> synth_embd_f16(uint32_t seed, int hidden, int vocab, double stddev = 0.15) {
  const size_t n = (size_t)hidden * vocab;
  std::vector<uint8_t> out(n * 2);
  Xoshiro r = stream_for(seed, "token_embd.weight");
  for (size_t i = 0; i < n; i++) {
    const uint16_t h = bn::f32_to_f16((float)(gaussian(r) * stddev));
    memcpy(&out[i * 2], &h, 2);
  }
  return out;
}

struct SynthShape {
  int hidden, layers, heads, kv_heads, ffn, vocab, ctx;
  uint32_t seed;
  float rope_base;
  int activation;  // BN_ACT_*
};

inline SynthShape shape_2b4t(uint32_t seed) { return {2560, 30, 20, 5, 6912, 128256, 4096, seed, 500000.f, BN_ACT_RELU2}; }

struct SynthModel {
  bn_hparams hp{};
  std::vector<std::string> names;
  std::vector<std::vector<uint8_t>> data;
  std::vector<bn_tensor> table;
};

// Builds every tensor (threads: one tensor per job; the embedding is one long stream).
inline void synth_model(const SynthShape &s, SynthModel *m, int threads = 0) {
  const int hd = s.hidden / s.heads, kv = hd * s.kv_heads;
  m->hp = bn_hparams{s.vocab, s.ctx, s.hidden, s.layers, s.ffn, s.heads, s.kv_heads, hd, hd, s.rope_base, 1e-5f, s.activation};
  struct Job {
    std::string name;
    int kind, k, n;  // kind 0 embd, 1 norm, 2 i2s
  };
  std::vector<Job> jobs;
  jobs.push_back({"token_embd.weight", 0, s.hidden, s.vocab});
  jobs.push_back({"output_norm.weight", 1, s.hidden, 1});
  for (int l = 0; l < s.layers; l++) {
    const std::string b = "blk." + std::to_string(l) + ".";
    jobs.push_back({b + "attn_norm.weight", 1, s.hidden, 1});
    jobs.push_back({b + "attn_q.weight", 2, s.hidden, s.hidden});
    jobs.push_back({b + "attn_k.weight", 2, s.hidden, kv});
    jobs.push_back({b + "attn_v.weight", 2, s.hidden, kv});
    jobs.push_back({b + "attn_sub_norm.weight", 1, s.hidden, 1});
    jobs.push_back({b + "attn_output.weight", 2, s.hidden, s.hidden});
    jobs.push_back({b + "ffn_norm.weight", 1, s.hidden, 1});
    jobs.push_back({b + "ffn_gate.weight", 2, s.hidden, s.ffn});
    jobs.push_back({b + "ffn_up.weight", 2, s.hidden, s.ffn});
    jobs.push_back({b + "ffn_sub_norm.weight", 1, s.ffn, 1});
    jobs.push_back({b + "ffn_down.weight", 2, s.ffn, s.hidden});
  }
  m->names.resize(jobs.size());
  m->data.resize(jobs.size());
  std::atomic<size_t> next{0};
  auto work = [&]() {
    for (size_t i; (i = next++) < jobs.size();) {
      const Job &j = jobs[i];
      m->names[i] = j.name;
      if (j.kind == 0) m->data[i] = synth_embd_f16(s.seed, j.k, j.n);
      else if (j.kind == 1) m->data[i] = synth_norm(s.seed, j.name, j.k);
      else m->data[i] = synth_i2s(s.seed, j.name, j.k, j.n);
    }
  };
  int nt = threads > 0 ? threads : (int)std::thread::hardware_concurrency();
  if (nt < 1) nt = 1;
  std::vector<std::thread> pool;
  for (int t = 0; t < nt; t++) pool.emplace_back(work);
  for (auto &t : pool) t.join();
  m->table.clear();
  for (size_t i = 0; i < jobs.size(); i++) {
    bn_tensor t{};
    t.name = m->names[i].c_str();
    t.type = jobs[i].kind == 0 ? BN_TYPE_F16 : (jobs[i].kind == 1 ? BN_TYPE_F32 : BN_TYPE_I2_S);
    t.n_dims = jobs[i].kind == 1 ? 1 : 2;
    t.ne[0] = jobs[i].k;
    t.ne[1] = jobs[i].kind == 1 ? 1 : jobs[i].n;
    t.ne[2] = t.ne[3] = 1;
    t.data = m->data[i].data();
    t.nbytes = m->data[i].size();
    m->table.push_back(t);
  }
}

}  // namespace bnt
