// Reader for the BNGF golden fixtures written by scripts/gen-gpu-fixtures.ts (format described
// there: magic "BNGF", version 1, named typed n-d records).
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace bnt {

struct Rec {
  int dt = 0;  // 0 i8, 1 u8, 2 i32, 3 f32, 4 f16, 5 f64, 6 u32
  std::vector<uint32_t> dims;
  std::vector<uint8_t> data;
};

class Fixture {
 public:
  std::string path;
  std::map<std::string, Rec> recs;

  bool load(const std::string &p, std::string *err) {
    path = p;
    FILE *f = fopen(p.c_str(), "rb");
    if (!f) {
      *err = "cannot open " + p;
      return false;
    }
    std::vector<uint8_t> b;
    uint8_t buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) b.insert(b.end(), buf, buf + n);
    fclose(f);
    size_t o = 0;
    auto need = [&](size_t k) { return o + k <= b.size(); };
    auto u32 = [&]() {
      uint32_t v;
      memcpy(&v, &b[o], 4);
      o += 4;
      return v;
    };
    if (!need(12) || memcmp(b.data(), "BNGF", 4) != 0) {
      *err = p + ": not a BNGF file";
      return false;
    }
    o = 4;
    const uint32_t version = u32();
    if (version != 1) {
      *err = p + ": BNGF version " + std::to_string(version) + " (expected 1)";
      return false;
    }
    const uint32_t count = u32();
    for (uint32_t i = 0; i < count; i++) {
      if (!need(4)) break;
      const uint32_t nl = u32();
      if (!need(nl + 4)) break;
      std::string name((const char *)&b[o], nl);
      o += nl;
      Rec r;
      r.dt = b[o];
      const int nd = b[o + 1];
      o += 4;
      if (!need(4 * (size_t)nd + 8)) break;
      for (int d = 0; d < nd; d++) r.dims.push_back(u32());
      uint64_t bl;
      memcpy(&bl, &b[o], 8);
      o += 8;
      if (!need(bl)) break;
      r.data.assign(b.begin() + (long)o, b.begin() + (long)(o + bl));
      o += bl;
      recs[name] = std::move(r);
    }
    if (recs.size() != count) {
      *err = p + ": truncated";
      return false;
    }
    return true;
  }

  bool has(const std::string &name) const { return recs.count(name) > 0; }
  const Rec &rec(const std::string &name) const {
    auto it = recs.find(name);
    if (it == recs.end()) throw std::runtime_error(path + ": no record " + name);
    return it->second;
  }
  template <typename T>
  std::vector<T> get(const std::string &name) const {
    const Rec &r = rec(name);
    if (r.data.size() % sizeof(T)) throw std::runtime_error(name + ": size mismatch");
    std::vector<T> v(r.data.size() / sizeof(T));
    memcpy(v.data(), r.data.data(), r.data.size());
    return v;
  }
  uint32_t dim(const std::string &name, int i) const { return rec(name).dims.at((size_t)i); }
};

}  // namespace bnt
