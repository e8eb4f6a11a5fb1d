/**
 * Golden fixtures for the CUDA engine's test program (gpu-lambda/test/), written by the TS
 * reference (src/model/reference.ts) so that every CUDA kernel and its CPU emulation is checked
 * against the one oracle.
 *
 *   node scripts/gen-gpu-fixtures.ts           writes gpu-lambda/test/fixtures/*.bnf
 *   node scripts/gen-gpu-fixtures.ts --check   exits 1 if the committed files differ from a fresh build
 *
 * File format "BNGF" v1 (little-endian): magic "BNGF", u32 version = 1, u32 record count, then
 * per record: u32 name length, name (UTF-8), u8 dtype, u8 ndim, u16 0, u32 dims[ndim],
 * u64 byte length, the bytes. dtype: 0 i8, 1 u8, 2 i32, 3 f32, 4 f16 (u16 bits), 5 f64, 6 u32.
 *
 * Files: kernels.bnf (per-kernel cases), model-relu2.bnf and model-silu.bnf (a tiny synthetic
 * GGUF each, embedded as bytes, with token sequences and the reference logits at every position).
 * Everything is deterministic (seeded xoshiro128**), so --check is byte-exact.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRng, type Xoshiro128 } from '../src/generate/prng.ts';
import { sample } from '../src/generate/sampler.ts';
import { GGMLType } from '../src/gguf/ggml-types.ts';
import { encodeGGUF, meta } from '../src/gguf/writer.ts';
import type { HParams } from '../src/model/hparams.ts';
import { loadModel } from '../src/model/load.ts';
import {
  dotI2S,
  f16Round,
  type KVStore,
  linear,
  quantizeActivations,
  ReferenceForward,
  rmsNorm,
  ropeNeox,
} from '../src/model/reference.ts';
import { type SynthOptions, synthModel } from '../src/model/synth.ts';
import type { Linear, ModelWeights } from '../src/model/weights.ts';
import { quantizeF16 } from '../src/quant/float-codecs.ts';
import { packI2S } from '../src/quant/i2s.ts';
import { MemorySource } from '../src/sources/byte-source.ts';
import { f32ToF16 } from '../src/util/f16.ts';

const fround = Math.fround;
export const FIXTURE_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'gpu-lambda', 'test', 'fixtures');

// ---------------------------------------------------------------------------------------------
// The container
// ---------------------------------------------------------------------------------------------

const DT = { i8: 0, u8: 1, i32: 2, f32: 3, f16: 4, f64: 5, u32: 6 } as const;
type Dt = keyof typeof DT;
type Arr = Int8Array | Uint8Array | Int32Array | Float32Array | Uint16Array | Float64Array | Uint32Array;

class Archive {
  private readonly recs: { name: string; dt: Dt; dims: number[]; bytes: Uint8Array }[] = [];
  put(name: string, dt: Dt, dims: number[], data: Arr): void {
    const n = dims.reduce((a, b) => a * b, 1);
    if (n !== data.length) throw new Error(`${name}: ${data.length} values for dims [${dims}]`);
    this.recs.push({ name, dt, dims, bytes: new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice() });
  }
  f32(name: string, dims: number[], data: ArrayLike<number>): void {
    this.put(name, 'f32', dims, Float32Array.from(data));
  }
  i32(name: string, dims: number[], data: ArrayLike<number>): void {
    this.put(name, 'i32', dims, Int32Array.from(data));
  }
  f64(name: string, dims: number[], data: ArrayLike<number>): void {
    this.put(name, 'f64', dims, Float64Array.from(data));
  }
  encode(): Uint8Array {
    const enc = new TextEncoder();
    let size = 12;
    const names = this.recs.map((r) => enc.encode(r.name));
    this.recs.forEach((r, i) => {
      size += 4 + names[i].length + 4 + 4 * r.dims.length + 8 + r.bytes.length;
    });
    const out = new Uint8Array(size);
    const dv = new DataView(out.buffer);
    out.set(enc.encode('BNGF'), 0);
    dv.setUint32(4, 1, true);
    dv.setUint32(8, this.recs.length, true);
    let o = 12;
    this.recs.forEach((r, i) => {
      dv.setUint32(o, names[i].length, true);
      out.set(names[i], o + 4);
      o += 4 + names[i].length;
      dv.setUint8(o, DT[r.dt]);
      dv.setUint8(o + 1, r.dims.length);
      dv.setUint16(o + 2, 0, true);
      o += 4;
      for (const d of r.dims) {
        dv.setUint32(o, d, true);
        o += 4;
      }
      dv.setBigUint64(o, BigInt(r.bytes.length), true);
      o += 8;
      out.set(r.bytes, o);
      o += r.bytes.length;
    });
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

function gauss(rng: Xoshiro128): number {
  const u = 1 - rng.nextFloat();
  const v = rng.nextFloat();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

function randn(rng: Xoshiro128, n: number, std = 1): Float32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = gauss(rng) * std;
  return x;
}

function randTernary(rng: Xoshiro128, n: number): Int8Array {
  const t = new Int8Array(n);
  for (let i = 0; i < n; i++) t[i] = (rng.nextU32() % 3) - 1;
  return t;
}

/** A minimal f16 KV store (positions in order), as the reference's engine cache stores them. */
function denseKV(): KVStore {
  const k = new Map<string, Float32Array>();
  const v = new Map<string, Float32Array>();
  const round = (x: Float32Array) => Float32Array.from(x, f16Round);
  return {
    write: (l, p, kk, vv) => {
      k.set(`${l}:${p}`, round(kk));
      v.set(`${l}:${p}`, round(vv));
    },
    readK: (l, p, out) => out.set(k.get(`${l}:${p}`)!),
    readV: (l, p, out) => out.set(v.get(`${l}:${p}`)!),
  };
}

// ---------------------------------------------------------------------------------------------
// kernels.bnf
// ---------------------------------------------------------------------------------------------

function activationCases(a: Archive, rng: Xoshiro128): void {
  // Rows: random, all zero (the 1e-5 floor), tiny, large with exact .5 ties (amax 127 -> s = 1),
  // a huge dynamic range.
  const K = 256;
  const rows: Float32Array[] = [randn(rng, K, 0.7), new Float32Array(K), randn(rng, K, 1e-7), new Float32Array(K)];
  const ties = rows[3];
  for (let i = 0; i < K; i++) ties[i] = (i % 7) - 3 + 0.5 * (i % 2 ? 1 : -1);
  ties[0] = 127;
  const wide = randn(rng, K, 1);
  for (let i = 0; i < K; i += 17) wide[i] *= 1000;
  rows.push(wide);
  const M = rows.length;
  const x = new Float32Array(M * K);
  for (let m = 0; m < M; m++) x.set(rows[m], m * K);
  const q = new Int8Array(M * K);
  const sc: number[] = [];
  const sums: number[] = [];
  for (let m = 0; m < M; m++) {
    const r = quantizeActivations(x.subarray(m * K, (m + 1) * K), q.subarray(m * K, (m + 1) * K));
    sc.push(r.scale);
    sums.push(r.sum);
  }
  a.f32('act/x', [M, K], x);
  a.put('act/q', 'i8', [M, K], q);
  a.f32('act/scale', [M], sc);
  a.i32('act/sum', [M], sums);

  // RMSNorm (f64 sum of squares) followed by the quantization, as every BitLinear input.
  for (const [tag, n] of [
    ['norm256', 256],
    ['norm640', 640],
  ] as const) {
    const Mn = 3;
    const xn = randn(rng, Mn * n, 1.3);
    const w = new Float32Array(n);
    for (let i = 0; i < n; i++) w[i] = 0.9 + 0.2 * rng.nextFloat();
    const eps = fround(1e-5);
    const out = new Float32Array(Mn * n);
    const qn = new Int8Array(Mn * n);
    const s: number[] = [];
    const S: number[] = [];
    for (let m = 0; m < Mn; m++) {
      const o = out.subarray(m * n, (m + 1) * n);
      rmsNorm(xn.subarray(m * n, (m + 1) * n), w, eps, o);
      const r = quantizeActivations(o, qn.subarray(m * n, (m + 1) * n));
      s.push(r.scale);
      S.push(r.sum);
    }
    a.f32(`${tag}/x`, [Mn, n], xn);
    a.f32(`${tag}/w`, [n], w);
    a.f32(`${tag}/eps`, [1], [eps]);
    a.f32(`${tag}/y`, [Mn, n], out);
    a.put(`${tag}/q`, 'i8', [Mn, n], qn);
    a.f32(`${tag}/scale`, [Mn], s);
    a.i32(`${tag}/sum`, [Mn], S);
  }
}

function i2sCases(a: Archive, rng: Xoshiro128): void {
  // [N, K]: odd N (guards), K of 1..5 blocks, M = 3 tokens.
  const shapes: [number, number][] = [
    [40, 256],
    [37, 384],
    [16, 128],
    [70, 640],
  ];
  for (const [N, K] of shapes) {
    const M = 3;
    const t = randTernary(rng, N * K);
    const scale = fround(0.02 + rng.nextFloat() * 0.05);
    const bytes = packI2S(t, scale);
    const w: Linear = { name: 'w', type: GGMLType.I2_S, ne: [K, N], bytes, k: K, n: N, scale, outScale: 1 };
    const x = randn(rng, M * K, 1);
    const q = new Int8Array(M * K);
    const s: number[] = [];
    const S: number[] = [];
    const dms = new Int32Array(M * N);
    const y = new Float32Array(M * N);
    const scratch = new Float32Array(4 * K);
    for (let m = 0; m < M; m++) {
      const xm = x.subarray(m * K, (m + 1) * K);
      const qm = q.subarray(m * K, (m + 1) * K);
      const r = quantizeActivations(xm, qm);
      s.push(r.scale);
      S.push(r.sum);
      for (let n = 0; n < N; n++) dms[m * N + n] = dotI2S(bytes, (n * K) / 4, qm, K);
      linear(w, { q: qm, scale: r.scale, sum: r.sum, x: xm }, y.subarray(m * N, (m + 1) * N), scratch);
    }
    const tag = `i2s_${N}x${K}`;
    a.put(`${tag}/w`, 'u8', [bytes.length], bytes);
    a.put(`${tag}/q`, 'i8', [M, K], q);
    a.f32(`${tag}/scale`, [M], s);
    a.i32(`${tag}/sum`, [M], S);
    a.i32(`${tag}/dms`, [M, N], dms);
    a.f32(`${tag}/y`, [M, N], y);
  }
}

function ropeCases(a: Archive, rng: Xoshiro128): void {
  // Two head layouts: full rotation (n_rot = head_dim) and partial (n_rot < head_dim).
  for (const [tag, hd, nRot, base] of [
    ['rope_full', 64, 64, 500000],
    ['rope_part', 32, 16, 10000],
  ] as const) {
    const heads = 3;
    const positions = [0, 1, 7, 100, 1023];
    const P = positions.length;
    const x = randn(rng, P * heads * hd, 1);
    const y = Float32Array.from(x);
    for (let i = 0; i < P; i++)
      for (let h = 0; h < heads; h++)
        ropeNeox(y.subarray(i * heads * hd, (i + 1) * heads * hd), h * hd, nRot, positions[i], base);
    // cos/sin as ropeNeox uses them: rotate unit vectors e_i.
    const cs = new Float32Array(P * (nRot / 2) * 2);
    for (let i = 0; i < P; i++)
      for (let j = 0; j < nRot / 2; j++) {
        const e = new Float32Array(nRot);
        e[j] = 1;
        ropeNeox(e, 0, nRot, positions[i], base);
        cs[(i * (nRot / 2) + j) * 2] = e[j];
        cs[(i * (nRot / 2) + j) * 2 + 1] = e[j + nRot / 2];
      }
    a.i32(`${tag}/dims`, [4], [heads, hd, nRot, base]);
    a.i32(`${tag}/pos`, [P], positions);
    a.f32(`${tag}/x`, [P, heads * hd], x);
    a.f32(`${tag}/y`, [P, heads * hd], y);
    a.f32(`${tag}/cs`, [P, nRot / 2, 2], cs);
  }
}

/**
 * Causal attention for one query position, line for line as ReferenceForward.forwardToken
 * computes it (f16 q, f64 dot, f32 score × f64 scale, f64 softmax sum, f16 probabilities, f32
 * PV accumulation in position order).
 */
function referenceAttention(
  q: Float32Array,
  K: Float32Array[],
  V: Float32Array[],
  T: number,
  nHead: number,
  nHeadKv: number,
  headDim: number,
): Float32Array {
  const qv = Float32Array.from(q, f16Round);
  const group = nHead / nHeadKv;
  const attnScale = 1 / Math.sqrt(headDim);
  const att = new Float32Array(nHead * headDim);
  const scores = new Float32Array(T);
  for (let h = 0; h < nHead; h++) {
    const kvh = Math.floor(h / group);
    const qo = h * headDim;
    const ko = kvh * headDim;
    let max = Number.NEGATIVE_INFINITY;
    for (let t = 0; t < T; t++) {
      let s = 0;
      for (let d = 0; d < headDim; d++) s += qv[qo + d] * K[t][ko + d];
      const sc = fround(fround(s) * attnScale);
      scores[t] = sc;
      if (sc > max) max = sc;
    }
    let sum = 0;
    for (let t = 0; t < T; t++) {
      const e = fround(Math.exp(scores[t] - max));
      scores[t] = e;
      sum += e;
    }
    const inv = fround(1 / sum);
    for (let t = 0; t < T; t++) {
      const p = f16Round(fround(scores[t] * inv));
      for (let d = 0; d < headDim; d++) att[qo + d] += p * V[t][ko + d];
    }
  }
  return att;
}

function attentionCases(a: Archive, rng: Xoshiro128): void {
  for (const [tag, nHead, nHeadKv, hd, T] of [
    ['attn_a', 4, 2, 64, 9],
    ['attn_b', 6, 3, 32, 70],
  ] as const) {
    const kvDim = nHeadKv * hd;
    const K: Float32Array[] = [];
    const V: Float32Array[] = [];
    for (let t = 0; t < T; t++) {
      K.push(Float32Array.from(randn(rng, kvDim, 1.5), f16Round));
      V.push(Float32Array.from(randn(rng, kvDim, 1), f16Round));
    }
    // Queries at the last position and two earlier ones (causal: each sees 0..pos).
    const positions = [T - 1, Math.floor(T / 2), 0];
    const Q = randn(rng, positions.length * nHead * hd, 1.2);
    const out = new Float32Array(positions.length * nHead * hd);
    positions.forEach((p, i) => {
      out.set(
        referenceAttention(Q.subarray(i * nHead * hd, (i + 1) * nHead * hd), K, V, p + 1, nHead, nHeadKv, hd),
        i * nHead * hd,
      );
    });
    // K/V rows are f16 values: stored as f16 bits.
    const kf = new Uint16Array(T * kvDim);
    const vf = new Uint16Array(T * kvDim);
    for (let t = 0; t < T; t++) {
      for (let i = 0; i < kvDim; i++) {
        kf[t * kvDim + i] = f32ToF16(K[t][i]);
        vf[t * kvDim + i] = f32ToF16(V[t][i]);
      }
    }
    a.i32(`${tag}/dims`, [4], [nHead, nHeadKv, hd, T]);
    a.i32(`${tag}/pos`, [positions.length], positions);
    a.f32(`${tag}/q`, [positions.length, nHead * hd], Q);
    a.put(`${tag}/k`, 'f16', [T, kvDim], kf);
    a.put(`${tag}/v`, 'f16', [T, kvDim], vf);
    a.f32(`${tag}/out`, [positions.length, nHead * hd], out);
  }
}

function headCases(a: Archive, rng: Xoshiro128): void {
  const K = 128;
  for (const [tag, type, V] of [
    ['head', GGMLType.F16, 136],
    ['head32', GGMLType.F32, 40],
  ] as const) {
    const R = 3;
    const emb = randn(rng, V * K, 0.15);
    const bytes = type === GGMLType.F16 ? quantizeF16(emb) : new Uint8Array(emb.buffer);
    const hidden = randn(rng, R * K, 1);
    const hp: HParams = {
      arch: 'bitnet-b1.58',
      activation: 'relu2',
      nVocab: V,
      nCtx: 16,
      nEmbd: K,
      nLayer: 0,
      nFF: K,
      nHead: 1,
      nHeadKv: 1,
      headDim: K,
      nRot: K,
      ropeFreqBase: 10000,
      rmsEps: 1e-5,
    };
    const view = { name: 'token_embd.weight', type, ne: [K, V], bytes };
    const w: ModelWeights = { tokenEmbd: view, output: view, outputNorm: new Float32Array(K), layers: [] };
    const f = new ReferenceForward(hp, w);
    const logits = new Float32Array(R * V);
    for (let r = 0; r < R; r++) logits.set(f.logits(hidden.subarray(r * K, (r + 1) * K)), r * V);
    a.put(`${tag}/w`, 'u8', [bytes.length], bytes);
    a.i32(`${tag}/dims`, [2], [V, K]);
    a.f32(`${tag}/h`, [R, K], hidden);
    a.f32(`${tag}/logits`, [R, V], logits);
  }
}

function ffnCases(a: Archive, rng: Xoshiro128): void {
  const n = 256;
  const g = randn(rng, n, 2);
  const u = randn(rng, n, 1);
  g[0] = 0;
  g[1] = -0;
  const relu2 = new Float32Array(n);
  const silu = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    // As reference.ts: act = relu² (g > 0 ? fround(g·g) : 0) or fround(g / (1 + exp(−g))); f = fround(act·u).
    relu2[i] = fround((g[i] > 0 ? fround(g[i] * g[i]) : 0) * u[i]);
    silu[i] = fround(fround(g[i] / (1 + Math.exp(-g[i]))) * u[i]);
  }
  a.f32('ffn/g', [n], g);
  a.f32('ffn/u', [n], u);
  a.f32('ffn/relu2', [n], relu2);
  a.f32('ffn/silu', [n], silu);
}

function selectCases(a: Archive, rng: Xoshiro128): void {
  const V = 600;
  // [temperature, topK, topP, penalty, u, history...]
  const cases: { T: number; k: number; p: number; pen: number; u: number; hist: number[]; tie?: boolean }[] = [
    { T: 0, k: 0, p: 1, pen: 1, u: 0, hist: [] },
    { T: 0, k: 0, p: 1, pen: 1, u: 0, hist: [], tie: true },
    { T: 0, k: 0, p: 1, pen: 1.3, u: 0, hist: [-1, 5, 17, 5, 599, 600] },
    { T: 0.8, k: 40, p: 1, pen: 1, u: 0.37, hist: [] },
    { T: 1.0, k: 50, p: 0.9, pen: 1, u: 0.91, hist: [] },
    { T: 0.7, k: 1, p: 1, pen: 1, u: 0.5, hist: [] },
    { T: 1.3, k: 600, p: 0.95, pen: 1, u: 0.123, hist: [] },
    { T: 0.9, k: 20, p: 0.5, pen: 1.2, u: 0.66, hist: [3, 3, 9, 12, 400] },
    { T: 2.0, k: 300, p: 1, pen: 1, u: 0.999, hist: [] },
  ];
  const R = cases.length;
  const logits = new Float32Array(R * V);
  const params = new Float64Array(R * 5);
  const hist = new Int32Array(R * 8).fill(-2);
  const nHist = new Int32Array(R);
  const expect = new Int32Array(R);
  cases.forEach((c, r) => {
    const row = randn(rng, V, 3);
    if (c.tie) {
      let m = 0;
      for (let i = 1; i < V; i++) if (row[i] > row[m]) m = i;
      row[m + 7 < V ? m + 7 : m - 7] = row[m];
    }
    // Make the history ids strong candidates so the penalty matters.
    for (const h of c.hist) if (h >= 0 && h < V) row[h] = fround(Math.abs(row[h]) + 6);
    logits.set(row, r * V);
    params.set([c.T, c.k, c.p, c.pen, c.u], r * 5);
    c.hist.forEach((h, i) => {
      hist[r * 8 + i] = h;
    });
    nHist[r] = c.hist.length;
    expect[r] = sample(
      row,
      c.hist,
      { temperature: c.T, topK: c.k, topP: c.p, repetitionPenalty: c.pen },
      { nextFloat: () => c.u },
    );
  });
  a.f32('select/logits', [R, V], logits);
  a.f64('select/params', [R, 5], params);
  a.i32('select/hist', [R, 8], hist);
  a.i32('select/nhist', [R], nHist);
  a.i32('select/expect', [R], expect);
}

// ---------------------------------------------------------------------------------------------
// model-*.bnf
// ---------------------------------------------------------------------------------------------

export const MODEL_RELU2: SynthOptions = {
  arch: 'bitnet-b1.58',
  hidden: 128,
  layers: 2,
  heads: 4,
  kvHeads: 2,
  ffn: 128,
  vocab: 262,
  ctx: 64,
  qtype: 'i2_s',
  embdType: 'f16',
  seed: 7,
  ropeFreqBase: 500000,
};

export const MODEL_SILU: SynthOptions = {
  arch: 'bitnet',
  activation: 'silu',
  hidden: 128,
  layers: 1,
  heads: 4,
  kvHeads: 1,
  ffn: 128,
  vocab: 262,
  ctx: 64,
  qtype: 'i2_s',
  embdType: 'f16',
  seed: 11,
  ropeFreqBase: 10000,
};

async function modelArchive(o: SynthOptions, variant: 'plain' | 'silu-extras'): Promise<Archive> {
  const m = synthModel(o);
  let metadata = m.metadata;
  const tensors = m.tensors;
  if (variant === 'silu-extras') {
    // Partial RoPE (n_rot 16 of head dim 32) and an output scale tensor: the less common paths
    // of the loader and the kernels.
    const a = o.arch;
    metadata = metadata.map(([k, v]) => (k === `${a}.rope.dimension_count` ? [k, meta.u32(16)] : [k, v]));
    tensors.push({
      name: 'blk.0.ffn_down.scale',
      ne: [1],
      type: GGMLType.F32,
      data: new Uint8Array(new Float32Array([0.75]).buffer),
    });
  }
  const bytes = await encodeGGUF(metadata, tensors);
  const model = await loadModel(new MemorySource(bytes));
  const f = new ReferenceForward(model.hparams, model.weights);
  const V = model.hparams.nVocab;
  const rng = createRng(o.seed * 1000 + 1);
  const seqs = [
    Array.from({ length: 10 }, () => rng.nextU32() % (V - 3)),
    Array.from({ length: 7 }, () => rng.nextU32() % (V - 3)),
  ];
  const ar = new Archive();
  ar.put('gguf', 'u8', [bytes.length], bytes);
  seqs.forEach((ids, s) => {
    const kv = denseKV();
    const logits = new Float32Array(ids.length * V);
    for (let pos = 0; pos < ids.length; pos++) logits.set(f.logits(f.forwardToken(ids[pos], pos, kv)), pos * V);
    ar.i32(`seq${s}/tokens`, [ids.length], ids);
    ar.f32(`seq${s}/logits`, [ids.length, V], logits);
  });
  // The synthesis recipe, for the C++ generator's cross-check (same PRNG streams).
  ar.i32('synth/shape', [8], [o.hidden, o.layers, o.heads, o.kvHeads, o.ffn, o.vocab, o.ctx, o.seed]);
  return ar;
}

export async function buildFixtures(): Promise<Map<string, Uint8Array>> {
  const k = new Archive();
  const rng = createRng(20261127);
  activationCases(k, rng);
  i2sCases(k, rng);
  ropeCases(k, rng);
  attentionCases(k, rng);
  headCases(k, rng);
  ffnCases(k, rng);
  selectCases(k, rng);
  const out = new Map<string, Uint8Array>();
  out.set('kernels.bnf', k.encode());
  out.set('model-relu2.bnf', (await modelArchive(MODEL_RELU2, 'plain')).encode());
  out.set('model-silu.bnf', (await modelArchive(MODEL_SILU, 'silu-extras')).encode());
  return out;
}

async function main(): Promise<number> {
  const check = process.argv.includes('--check');
  const files = await buildFixtures();
  let bad = 0;
  for (const [name, bytes] of files) {
    const path = join(FIXTURE_DIR, name);
    if (check) {
      let old: Uint8Array | undefined;
      try {
        old = new Uint8Array(readFileSync(path));
      } catch {
        old = undefined;
      }
      const same = old !== undefined && old.length === bytes.length && old.every((b, i) => b === bytes[i]);
      if (!same) {
        console.error(`${name}: out of date (run node scripts/gen-gpu-fixtures.ts)`);
        bad++;
      }
    } else {
      writeFileSync(path, bytes);
      console.log(`${path}: ${bytes.length} bytes`);
    }
  }
  return bad ? 1 : 0;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  process.exitCode = await main();
}
