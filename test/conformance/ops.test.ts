/**
 * The op-level conformance table (cases.ts) on every wasm build, against the oracle. Every result
 * is compared bit for bit: integer results are exact, and the float ops reproduce the
 * reference's rounding sequence exactly (docs: src/kernels/wasm/backend.ts, wasm/src/*.ts).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { GGMLType } from '../../src/gguf/ggml-types.ts';
import type { HParams } from '../../src/model/hparams.ts';
import {
  f16Round,
  linear,
  quantizeActivations,
  ReferenceForward,
  rmsNorm,
  ropeNeox,
} from '../../src/model/reference.ts';
import type { Linear, ModelWeights } from '../../src/model/weights.ts';
import {
  dequantizeRow,
  quantizeF16,
  quantizeQ4_0,
  quantizeQ6_K,
  quantizeQ8_0,
  rowBytes,
} from '../../src/quant/float-codecs.ts';
import { packI2S } from '../../src/quant/i2s.ts';
import { packTL, ternaryOf, tlImageBytes } from '../../src/quant/tl.ts';
import { packTQ1_0, packTQ2_0 } from '../../src/quant/tq.ts';
import { CASES, type Case, caseName, unsupported } from './cases.ts';
import { firstDiff, gaussianVec, kvMirror, rng, ternaryVec, WasmOps, wasmBuilds } from './harness.ts';

const T = GGMLType;
const fround = Math.fround;
const { available, refused } = wasmBuilds();
const tally = new Map<string, { pass: number; skip: number; reasons: Set<string> }>();
const count = (build: string, op: string, what: 'pass' | 'skip', reason?: string) => {
  const key = `${build} ${op}`;
  const e = tally.get(key) ?? { pass: 0, skip: 0, reasons: new Set<string>() };
  e[what]++;
  if (reason) e.reasons.add(reason);
  tally.set(key, e);
};

// ---------------------------------------------------------------------------------------------
// Inputs shared by the oracle and the kernels
// ---------------------------------------------------------------------------------------------

function actsFor(c: Case, k: number, m: number, seed: number): Float32Array[] {
  const r = rng(seed);
  return Array.from({ length: m }, (_, t) => {
    if (c.variant === 'saturated') return new Float32Array(k).fill(-1);
    return gaussianVec(k, r, t % 2 ? 0.3 : 2);
  });
}

function ternaryWeight(type: number, n: number, k: number, seed: number, saturated = false): Linear {
  const r = rng(seed);
  const t = saturated ? new Int8Array(n * k).fill(1) : ternaryVec(n * k, r);
  const scale = 0.25 + r() * 0.5;
  // TQ scales are f16: round the scale first so every type holds the same weights
  const s = fround(scale);
  const bytes = type === T.I2_S ? packI2S(t, s) : type === T.TQ2_0 ? packTQ2_0(t, s) : packTQ1_0(t, s);
  return { name: 'w', type, ne: [k, n], bytes, k, n, scale: type === T.I2_S ? s : 1, outScale: 1 };
}

function floatWeight(type: number, n: number, k: number, seed: number, std = 0.2, positive = false): Linear {
  const r = rng(seed);
  const x = gaussianVec(n * k, r, std);
  if (positive) for (let i = 0; i < x.length; i++) x[i] = Math.abs(x[i]);
  let bytes: Uint8Array;
  if (type === T.F32) bytes = new Uint8Array(x.buffer);
  else if (type === T.F16) bytes = quantizeF16(x);
  else if (type === T.BF16) {
    const u = new Uint32Array(x.buffer);
    const o = new Uint16Array(x.length);
    for (let i = 0; i < x.length; i++) o[i] = u[i] >>> 16;
    bytes = new Uint8Array(o.buffer);
  } else if (type === T.Q8_0) bytes = quantizeQ8_0(x);
  else if (type === T.Q4_0) bytes = quantizeQ4_0(x);
  else bytes = quantizeQ6_K(x);
  return { name: 'w', type, ne: [k, n], bytes, k, n, scale: 1, outScale: 1 };
}

// ---------------------------------------------------------------------------------------------
// One evaluator per op: returns a description of the first difference, or undefined
// ---------------------------------------------------------------------------------------------

function runCase(c: Case, ops: WasmOps): string | undefined {
  const { k: K } = ops;
  const seed = 1000 + CASES.indexOf(c);
  switch (c.op) {
    case 'act_quant': {
      const k = c.shape.k;
      const r = rng(seed);
      let x = gaussianVec(k, r, 3);
      if (c.variant === 'zeros') x = new Float32Array(k);
      if (c.variant === 'tiny') x = gaussianVec(k, r, 1e-7);
      if (c.variant === 'huge') x = gaussianVec(k, r, 1e30);
      if (c.variant === 'halves') {
        // amax 127 makes s = 1, so x·s = x: exact .5 ties go to even
        x = Float32Array.from({ length: k }, (_, i) => (i === 0 ? 127 : Math.floor(r() * 200 - 100) + 0.5));
      }
      const q = new Int8Array(k);
      const ref = quantizeActivations(x, q);
      const xp = ops.putF32(x);
      const qp = ops.zeros(k + 16);
      const sp = ops.zeros(4);
      const bp = ops.zeros(4 * Math.ceil(k / 256));
      const s = K.quantize_act(xp, k, qp, sp, bp);
      if (!Object.is(s, ref.scale)) return `scale ${s} vs ${ref.scale}`;
      const d = firstDiff(new Int8Array(ops.a.memory.buffer, qp, k), q);
      if (d) return `q ${d}`;
      if (ops.a.i32(sp, 1)[0] !== ref.sum) return `sum ${ops.a.i32(sp, 1)[0]} vs ${ref.sum}`;
      for (let b = 0; b < Math.ceil(k / 256); b++) {
        let bs = 0;
        for (let i = b * 256; i < Math.min(k, b * 256 + 256); i++) bs += q[i];
        if (ops.a.i32(bp, b + 1)[b] !== bs) return `block sum ${b}`;
      }
      return undefined;
    }
    case 'matmul': {
      const { n, k, m } = c.shape;
      const w = ternaryWeight(c.type!, n, k, seed, c.variant === 'saturated');
      if (c.variant === 'oscale') w.outScale = fround(0.731);
      const xs = actsFor(c, k, m, seed + 1);
      const init = c.variant === 'add' ? gaussianVec(m * n, rng(seed + 2)) : new Float32Array(m * n);
      // oracle: per token, quantize then linear()
      const expect = new Float32Array(m * n);
      const qStride = k + 16;
      const Q = new Int8Array(m * qStride);
      const scales = new Float32Array(m);
      const sums = new Int32Array(m);
      const nb = Math.ceil(k / 256);
      const bsum = new Int32Array(m * nb);
      for (let t = 0; t < m; t++) {
        const q = Q.subarray(t * qStride, t * qStride + k);
        const a = quantizeActivations(xs[t], q);
        scales[t] = a.scale;
        sums[t] = a.sum;
        for (let i = 0; i < k; i++) bsum[t * nb + (i >> 8)] += q[i];
        const y = new Float32Array(n);
        linear(w, { q, scale: a.scale, sum: a.sum, x: xs[t] }, y, new Float32Array(2 * k));
        for (let r = 0; r < n; r++) expect[t * n + r] = c.variant === 'add' ? fround(init[t * n + r] + y[r]) : y[r];
      }
      const wp = ops.put(w.bytes);
      const qp = ops.put(new Uint8Array(Q.buffer));
      const sp = ops.putF32(scales);
      const sump = ops.put(new Uint8Array(sums.buffer));
      const bp = ops.put(new Uint8Array(bsum.buffer));
      const out = ops.putF32(init);
      const mode = c.variant === 'add' ? 1 : 0;
      // rows split in two ranges, as two threads would
      const split = Math.min(n, 4 * Math.ceil(n / 8));
      for (const [r0, r1] of [
        [0, split],
        [split, n],
      ]) {
        if (c.type === T.I2_S) K.mm_i2s(wp, k, r0, r1, m, qp, qStride, sp, sump, w.scale, w.outScale, out, n, mode);
        else if (c.type === T.TQ2_0) K.mm_tq2(wp, k, r0, r1, m, qp, qStride, sp, bp, nb, w.outScale, out, n, mode);
        else K.mm_tq1(wp, k, r0, r1, m, qp, qStride, sp, bp, nb, w.outScale, out, n, mode);
      }
      return firstDiff(ops.f32(out, m * n), expect);
    }
    case 'tl_matmul': {
      const { n, k, m } = c.shape;
      const layout = c.variant!.split(' ')[0] as 'tl1' | 'tl2';
      const raw = c.variant!.includes('raw');
      const add = c.variant!.includes('add');
      const xs = actsFor(c, k, m, seed + 1);
      const init = add ? gaussianVec(m * n, rng(seed + 2)) : new Float32Array(m * n);
      let t: Int8Array;
      let kind: 0 | 1;
      let wscale: number;
      let blockScales: Float32Array | undefined;
      let w: Linear | undefined;
      if (raw) {
        // no file type holds K = 200: the oracle is the reference's I2_S epilogue over an exact Σw·q
        t = ternaryVec(n * k, rng(seed));
        kind = 0;
        wscale = fround(0.37);
      } else {
        w = ternaryWeight(c.type!, n, k, seed);
        ({ t, kind, wscale, blockScales } = ternaryOf(w));
      }
      const expect = new Float32Array(m * n);
      const qStride = k + 16;
      const Q = new Int8Array(m * qStride);
      const scales = new Float32Array(m);
      for (let tt = 0; tt < m; tt++) {
        const q = Q.subarray(tt * qStride, tt * qStride + k);
        const a = quantizeActivations(xs[tt], q);
        scales[tt] = a.scale;
        const y = new Float32Array(n);
        if (w) linear(w, { q, scale: a.scale, sum: a.sum, x: xs[tt] }, y, new Float32Array(2 * k));
        else {
          for (let r = 0; r < n; r++) {
            let d = 0;
            for (let i = 0; i < k; i++) d += t[r * k + i] * q[i];
            y[r] = fround(fround(fround(d) / a.scale) * wscale);
          }
        }
        for (let r = 0; r < n; r++) expect[tt * n + r] = add ? fround(init[tt * n + r] + y[r]) : y[r];
      }
      const img = new Uint8Array(tlImageBytes(layout, n, k, kind));
      packTL(layout, t, n, k, kind, wscale, blockScales, img);
      const ip = ops.put(img);
      const L = layout === 'tl1' ? 1 : 2;
      const tb = K.tl_table_bytes(L, k);
      const tabs = ops.zeros(tb * m);
      const qp = ops.put(new Uint8Array(Q.buffer));
      for (let tt = 0; tt < m; tt++) K.tl_tables(L, qp + tt * qStride, k, tabs + tt * tb);
      const out = ops.putF32(init);
      const scratch = ops.zeros(256);
      const tiles = Math.ceil(n / 16);
      const split = Math.floor(tiles / 2);
      K.mm_tl(ip, 0, split, m, tabs, tb, ops.putF32(scales), 1, out, n, add ? 1 : 0, scratch);
      K.mm_tl(ip, split, tiles, m, tabs, tb, ops.putF32(scales), 1, out, n, add ? 1 : 0, scratch);
      return firstDiff(ops.f32(out, m * n), expect);
    }
    case 'float_matmul': {
      const { n, k, m } = c.shape;
      const w = floatWeight(c.type!, n, k, seed);
      const xs = actsFor(c, k, m, seed + 1);
      const wp = ops.put(w.bytes);
      const xr = ops.zeros(4 * k);
      const out = ops.zeros(4 * n);
      const scratch = ops.zeros(16 * k);
      for (let t = 0; t < m; t++) {
        const y = new Float32Array(n);
        linear(w, { q: new Int8Array(k), scale: 1, sum: 0, x: xs[t] }, y, new Float32Array(2 * k));
        const xp = ops.putF32(xs[t]);
        K.round_act(w.type, xp, k, xr);
        K.mv_exact(w.type, wp, k, 0, n, xr, 1, out, 0, scratch);
        const d = firstDiff(ops.f32(out, n), y);
        if (d) return `token ${t}: ${d}`;
      }
      return undefined;
    }
    case 'head': {
      const { n, k } = c.shape;
      const w = floatWeight(c.type!, n, k, seed, 0.15, c.variant === 'correlated');
      // token t's hidden state (several tokens: shape.m, the head kernels that take them at once)
      const hiddenOf = (t: number) => {
        const hidden = gaussianVec(k, rng(seed + 1 + 17 * t), 1 + t);
        if (c.variant === 'correlated') for (let i = 0; i < k; i++) hidden[i] = 1 + Math.abs(hidden[i]);
        if (c.variant === 'zero-block') hidden.fill(0, 256 * (t % 2), 256 * (t % 2) + 256);
        if (c.variant === 'extremes')
          for (let i = t; i < k; i += 5) hidden[i] = [65504, -65504, 6e-8, -3e-5, 1e-4][((i / 5) % 5) | 0];
        if (c.variant === 'nonfinite' && t === 0) hidden[5] = 0; // token 1 meets the +inf with a non-zero value
        return hidden;
      };
      if (c.variant === 'extremes') {
        const h = new Uint16Array(w.bytes.buffer, w.bytes.byteOffset, n * k);
        const ends = [0x0001, 0x8001, 0x03ff, 0x83ff, 0x0400, 0x8400, 0x7bff, 0xfbff, 0x0000, 0x8000];
        for (let i = 0; i < h.length; i += 3) h[i] = ends[(i / 3) % ends.length];
      }
      if (c.variant === 'nonfinite') {
        const h = new Uint16Array(w.bytes.buffer, w.bytes.byteOffset, n * k);
        h[2 * k + 5] = 0x7c00; // +inf in row 2, against a zero activation: NaN
        h[5 * k + 100] = 0xfc00; // −inf in row 5
        h[9 * k + 260] = 0x7e00; // NaN in row 9, in the tail past the last 8-column group
        h[11 * k + 7] = 0x7c00; // +inf and −inf in row 11: NaN
        h[11 * k + 200] = 0xfc00;
      }
      const hp = { nEmbd: k, nVocab: n, nFF: k, nHeadKv: 1, headDim: k, nHead: 1 } as HParams;
      const weights = {
        output: w,
        tokenEmbd: w,
        outputNorm: new Float32Array(k),
        layers: [],
      } as unknown as ModelWeights;
      const ref = new ReferenceForward(hp, weights);
      const wp = ops.put(w.bytes);
      const scratch = ops.zeros(16 * k);
      let abs = 0;
      if (c.type === T.F16) {
        abs = ops.zeros(16 * n);
        K.row_abs_sums(c.type, wp, k, 0, n, abs, scratch);
        if (c.variant === 'forced-fallback') {
          const a = ops.a.f64(abs, 2 * n);
          for (let i = 0; i < 2 * n; i++) a[i] *= 1e12; // every row's interval spans a rounding boundary
        }
      }
      if (c.shape.m) {
        // m tokens at once, each compared with the reference alone
        const m = c.shape.m;
        const hiddens = Array.from({ length: m }, (_, t) => hiddenOf(t));
        const HP = K.head_prep_bytes(k);
        const P = ops.zeros(m * HP);
        const out = ops.zeros(4 * n * m);
        if (c.type === T.Q6_K) {
          for (const [t, h] of hiddens.entries()) K.head_prep_q8k(ops.putF32(h), k, P + t * HP);
          if (m === 2) K.head_q6_k_2(wp, k, 0, n, P, HP, out, 4 * n);
          else K.head_q6_k_4(wp, k, 0, n, P, HP, out, 4 * n);
        } else if (c.type === T.Q8_0 || c.type === T.Q4_0) {
          for (const [t, h] of hiddens.entries()) K.head_prep_q8_0(ops.putF32(h), k, P + t * HP);
          if (c.type === T.Q8_0) K.head_q8_0_4(wp, k, 0, n, P, HP, out, 4 * n);
          else K.head_q4_0_4(wp, k, 0, n, P, HP, out, 4 * n);
        } else {
          for (const [t, h] of hiddens.entries()) K.round_act(c.type!, ops.putF32(h), k, P + t * HP);
          const X = ops.zeros(m * K.head_f16m_stride(k));
          K.head_f16m_prep(P, HP, k, m, X);
          K.head_f16_2(wp, k, 0, n, X, P, HP, abs, out, 4 * n, scratch);
        }
        for (let t = 0; t < m; t++) {
          const d = firstDiff(ops.f32(out + 4 * n * t, n), ref.logits(hiddens[t]));
          if (d) return `token ${t}: ${d}`;
        }
        return undefined;
      }
      const hidden = hiddenOf(0);
      const expect = ref.logits(hidden);
      const hp2 = ops.putF32(hidden);
      const P = ops.zeros(K.head_prep_bytes(k));
      const out = ops.zeros(4 * n);
      if (c.type === T.Q8_0 || c.type === T.Q4_0) {
        K.head_prep_q8_0(hp2, k, P);
        if (c.type === T.Q8_0) K.head_q8_0(wp, k, 0, n, P, 1, out, 0);
        else K.head_q4_0(wp, k, 0, n, P, 1, out, 0);
      } else if (c.type === T.Q6_K) {
        K.head_prep_q8k(hp2, k, P);
        K.head_q6_k(wp, k, 0, n, P, 1, out, 0);
      } else if (c.type === T.F16) {
        K.round_act(c.type, hp2, k, P);
        K.head_f16(wp, k, 0, n, P, abs, 1, out, 0, scratch);
      } else {
        K.round_act(c.type!, hp2, k, P);
        K.mv_exact(c.type!, wp, k, 0, n, P, 1, out, 0, scratch);
      }
      return firstDiff(ops.f32(out, n), expect);
    }
    case 'embed_row': {
      const { k, rows } = c.shape;
      const w = floatWeight(c.type!, rows, k, seed, 0.15);
      const wp = ops.put(w.bytes);
      const out = ops.zeros(4 * k);
      const rb = rowBytes(w.type, k);
      for (let r = 0; r < rows; r++) {
        const expect = new Float32Array(k);
        dequantizeRow(w, r, expect);
        K.dequant_row(w.type, wp + r * rb, k, out, 4);
        const d = firstDiff(ops.f32(out, k), expect);
        if (d) return `row ${r}: ${d}`;
      }
      return undefined;
    }
    case 'rmsnorm': {
      const { n } = c.shape;
      const r = rng(seed);
      const x = gaussianVec(n, r, 3);
      const w = Float32Array.from({ length: n }, () => 0.9 + 0.2 * r());
      const expect = new Float32Array(n);
      rmsNorm(x, w, 1e-5, expect);
      const out = ops.zeros(4 * n);
      K.rmsnorm(ops.putF32(x), ops.putF32(w), n, 1e-5, out);
      return firstDiff(ops.f32(out, n), expect);
    }
    case 'rope': {
      const { nRot, headDim, pos } = c.shape;
      const base = 500000;
      const x = gaussianVec(headDim, rng(seed), 1);
      const expect = x.slice();
      ropeNeox(expect, 0, nRot, pos, base);
      // the host's cos/sin table: the reference's f32 angle recurrence (backend.ts writeRope)
      const half = nRot / 2;
      const cs = new Float32Array(nRot);
      const thetaScale = fround(base ** (-2 / nRot));
      let theta = fround(pos);
      for (let i = 0; i < half; i++) {
        cs[i] = fround(Math.cos(theta));
        cs[half + i] = fround(Math.sin(theta));
        theta = fround(theta * thetaScale);
      }
      const xp = ops.putF32(x);
      K.rope_head(xp, nRot, ops.putF32(cs));
      return firstDiff(ops.f32(xp, headDim), expect);
    }
    case 'f16_round': {
      let x: Float32Array;
      if (c.variant === 'edges') {
        const v = [
          0,
          -0,
          1,
          -1,
          65504,
          65519.99,
          65520,
          -65520,
          1e9,
          Infinity,
          -Infinity,
          NaN,
          2 ** -14,
          2 ** -24,
          2 ** -25,
          3 * 2 ** -26,
          2 ** -26,
          1.5 * 2 ** -24,
          2.5 * 2 ** -24,
          6.1e-5,
          1 + 2 ** -11,
          1 + 3 * 2 ** -11,
          1e-30,
          -1e-30,
          2049,
          2051,
        ];
        x = Float32Array.from([...v, ...v.map((a) => -a)]);
      } else {
        const r = rng(seed);
        x = Float32Array.from({ length: c.shape.n }, () => (r() - 0.5) * 2 ** Math.floor(r() * 60 - 30));
      }
      const expect = Float32Array.from(x, f16Round);
      const xp = ops.putF32(x);
      const out = ops.zeros(4 * x.length);
      K.f16_round_vec(xp, out, x.length);
      return firstDiff(ops.f32(out, x.length), expect);
    }
    case 'exp':
    case 'silu': {
      let xs: number[];
      if (c.variant === 'edges')
        xs = [
          0,
          -0,
          1e-30,
          -700,
          700,
          -700.5,
          709.7,
          709.8,
          -745.2,
          -746,
          88.72,
          88.73,
          -103.97,
          -104,
          NaN,
          Infinity,
          -Infinity,
          20,
          -20,
          1e-8,
        ];
      else {
        const r = rng(seed);
        xs = Array.from({ length: c.shape.n }, () => fround((r() - 0.5) * (r() < 0.5 ? 20 : 200)));
      }
      for (const x of xs) {
        const g = fround(x);
        const want = c.op === 'exp' ? fround(Math.exp(x)) : fround(g / (1 + Math.exp(-g)));
        const got = c.op === 'exp' ? K.expF32(x) : K.siluF32(g);
        if (!Object.is(want, got) && !(Number.isNaN(want) && Number.isNaN(got))) return `x=${x}: ${got} vs ${want}`;
      }
      return undefined;
    }
    case 'gate': {
      const { n } = c.shape;
      const r = rng(seed);
      const gate = gaussianVec(n, r, 3);
      const up = gaussianVec(n, r, 1);
      if (c.variant === 'silu-edges') {
        const edges = [
          800,
          -800,
          700.5,
          -700.5,
          699.9,
          -699.9,
          Number.NaN,
          0,
          -0,
          1e-30,
          -1e-30,
          88.7,
          -88.7,
          104,
          -104,
          745.2,
        ];
        edges.forEach((v, i) => {
          gate[3 * i] = v;
        });
      }
      const silu = c.variant !== 'relu2';
      // the reference's FFN activation (forwardToken)
      const expect = new Float32Array(n);
      for (let i = 0; i < n; i++) {
        const g = gate[i];
        const act = !silu ? (g > 0 ? fround(g * g) : 0) : fround(g / (1 + Math.exp(-g)));
        expect[i] = fround(act * up[i]);
      }
      const out = ops.zeros(4 * n);
      K.gate_act(ops.putF32(gate), ops.putF32(up), out, n, silu ? 1 : 0);
      return firstDiff(ops.f32(out, n), expect);
    }
    case 'attention': {
      const { nHead, nHeadKv, headDim, nPos } = c.shape;
      const kvDim = nHeadKv * headDim;
      const r = rng(seed);
      const q = Float32Array.from(gaussianVec(nHead * headDim, r, 1.5), f16Round);
      const Ks = Array.from({ length: nPos }, () => Float32Array.from(gaussianVec(kvDim, r, 1.5), f16Round));
      const Vs = Array.from({ length: nPos }, () => Float32Array.from(gaussianVec(kvDim, r, 1), f16Round));
      // oracle: ReferenceForward.forwardToken's attention loop, transcribed
      const group = nHead / nHeadKv;
      const attnScale = 1 / Math.sqrt(headDim);
      const expect = new Float32Array(nHead * headDim);
      const scores = new Float32Array(nPos);
      for (let h = 0; h < nHead; h++) {
        const ko = Math.floor(h / group) * headDim;
        const qo = h * headDim;
        let max = -Infinity;
        for (let t = 0; t < nPos; t++) {
          let s = 0;
          for (let d = 0; d < headDim; d++) s += q[qo + d] * Ks[t][ko + d];
          const sc = fround(fround(s) * attnScale);
          scores[t] = sc;
          if (sc > max) max = sc;
        }
        let sum = 0;
        for (let t = 0; t < nPos; t++) {
          const e = fround(Math.exp(scores[t] - max));
          scores[t] = e;
          sum += e;
        }
        const inv = fround(1 / sum);
        for (let t = 0; t < nPos; t++) {
          const p = f16Round(fround(scores[t] * inv));
          for (let d = 0; d < headDim; d++) expect[qo + d] += p * Vs[t][ko + d];
        }
      }
      const mir = kvMirror(ops, Ks, Vs, nHeadKv, headDim);
      const out = ops.zeros(4 * nHead * headDim);
      const sc = ops.zeros(K.attend_scratch_bytes(nPos, headDim));
      const qp = ops.putF32(q);
      const split = Math.floor(nHead / 2);
      K.attend(qp, out, 0, split, headDim, group, kvDim, nPos, mir.blocks, 0, attnScale, sc);
      K.attend(qp, out, split, nHead, headDim, group, kvDim, nPos, mir.blocks, 0, attnScale, sc);
      return firstDiff(ops.f32(out, nHead * headDim), expect);
    }
  }
}

for (const r of refused) {
  describe(`wasm ${r.build}`, () => {
    it.skip(`all cases: build refused (${r.reason})`, () => {});
  });
}

for (const build of available) {
  describe(`conformance: wasm ${build}`, () => {
    let ops: WasmOps | undefined;
    let casesSinceFresh = 0;
    const fresh = () => {
      // a new instance every few cases keeps the bump-allocated test memory small
      if (!ops || casesSinceFresh++ > 40 || ops.used > 256 * 1024 * 1024) {
        ops = new WasmOps(build);
        casesSinceFresh = 0;
      }
      return ops;
    };
    for (const c of CASES) {
      const why = unsupported(c);
      if (why) {
        count(build, c.op, 'skip', why);
        it.skip(`${caseName(c)} — skipped: ${why}`, () => {});
        continue;
      }
      it(caseName(c), () => {
        const diff = runCase(c, fresh());
        expect(diff, diff).toBeUndefined();
        count(build, c.op, 'pass');
      });
    }
  });
}

afterAll(() => {
  const rows = [...tally.entries()].map(
    ([k, v]) =>
      `${k.padEnd(24)} pass ${String(v.pass).padStart(3)}  skip ${v.skip}${v.reasons.size ? `  (${[...v.reasons].join('; ')})` : ''}`,
  );
  console.log(`conformance (op × build): bit-exact against the reference\n${rows.join('\n')}`);
});
