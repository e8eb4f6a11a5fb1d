/**
 * Kernel micro-benchmark (GOP/s, 2 ops per multiply-add, CPU time of this thread, median of 7):
 * ternary matvec/matmul straight from I2_S, TQ2_0, TQ1_0 bytes at 2560×2560 and 6912×2560, decode
 * (m = 1) and prefill (m = 16), on each kernel build; plus the Q6_K, Q8_0, Q4_0 and F16 head kernels
 * (Q6_K also for 2 and 4 tokens at once, Q8_0 and Q4_0 for 4, F16 for 2: what batched decode runs),
 * and attention over 1024 positions.
 *   node bench/micro.ts [--json] [--only NAME]   (NAME: a part of the kernel names to run, e.g. Q6_K)
 */

import { GGMLType } from '../src/gguf/ggml-types.ts';
import { Arena } from '../src/kernels/wasm/arena.ts';
import type { KernelExports } from '../src/kernels/wasm/exports.ts';
import { createMemory, instantiate, type KernelBuild, selectKernels } from '../src/kernels/wasm/loader.ts';
import { quantizeF16, quantizeQ4_0, quantizeQ6_K, quantizeQ8_0 } from '../src/quant/float-codecs.ts';
import { packI2S } from '../src/quant/i2s.ts';
import { packTL, tlImageBytes } from '../src/quant/tl.ts';
import { packTQ1_0, packTQ2_0 } from '../src/quant/tq.ts';

const cpuMs = () => {
  const c = process.cpuUsage();
  return (c.user + c.system) / 1000;
};

function time(f: () => void, reps: number): number {
  for (let i = 0; i < 3; i++) f();
  const ts: number[] = [];
  for (let r = 0; r < 7; r++) {
    const t0 = cpuMs();
    for (let i = 0; i < reps; i++) f();
    ts.push((cpuMs() - t0) / reps);
  }
  return ts.sort((a, b) => a - b)[3];
}

let seed = 7;
const rnd = () => (seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32;

export interface MicroResult {
  build: KernelBuild;
  kernel: string;
  n: number;
  k: number;
  m: number;
  ms: number;
  gops: number;
}

export function micro(builds: KernelBuild[] = ['relaxed', 'simd'], only = ''): MicroResult[] {
  const out: MicroResult[] = [];
  const want = (name: string) => name.includes(only);
  for (const build of builds) {
    let k: KernelExports;
    let a: Arena;
    try {
      const sel = selectKernels({ prefer: build });
      const mem = createMemory(64);
      a = new Arena(mem);
      k = instantiate(sel.module, mem);
      k.init_tables(a.alloc(65536 * 4));
    } catch {
      continue;
    }
    for (const [n, kk] of [
      [2560, 2560],
      [6912, 2560],
    ]) {
      const tern = Int8Array.from({ length: n * kk }, () => Math.floor(rnd() * 3) - 1);
      const q = a.alloc((kk + 16) * 16);
      {
        const qa = a.u8(q, (kk + 16) * 16);
        for (let i = 0; i < qa.length; i++) qa[i] = (rnd() * 256) | 0;
      }
      const sc = a.alloc(64);
      a.f32(sc, 16).fill(0.01);
      const sums = a.alloc(64);
      const bs = a.alloc(4 * 16 * (kk / 256 + 1));
      const y = a.alloc(4 * n * 16);
      // TL1 / TL2 tile images of the same weights (kind 1: TQ epilogue)
      for (const layout of ['tl1', 'tl2'] as const) {
        if (!want(layout.toUpperCase())) continue;
        const img = new Uint8Array(tlImageBytes(layout, n, kk, 1));
        packTL(layout, tern, n, kk, 1, 1, new Float32Array(n * Math.ceil(kk / 256)).fill(0.5), img);
        const ip = a.alloc(img.length + 1024);
        a.u8(ip, img.length).set(img);
        const L = layout === 'tl1' ? 1 : 2;
        const tb = k.tl_table_bytes(L, kk);
        const tabs = a.alloc(tb * 16);
        for (let t = 0; t < 16; t++) k.tl_tables(L, q + t * (kk + 16), kk, tabs + t * tb);
        const scr = a.alloc(256);
        for (const m of [1, 16]) {
          const ms = time(() => k.mm_tl(ip, 0, Math.ceil(n / 16), m, tabs, tb, sc, 1, y, n, 0, scr), m === 1 ? 10 : 2);
          out.push({ build, kernel: layout.toUpperCase(), n, k: kk, m, ms, gops: (2 * n * kk * m) / ms / 1e6 });
        }
      }
      for (const [name, bytes] of [
        ['I2_S', packI2S(tern, 0.5)],
        ['TQ2_0', packTQ2_0(tern, 0.5)],
        ['TQ1_0', packTQ1_0(tern, 0.5)],
      ] as const) {
        if (!want(name)) continue;
        const w = a.alloc(bytes.length + 1024);
        a.u8(w, bytes.length).set(bytes);
        for (const m of [1, 16]) {
          const f =
            name === 'I2_S'
              ? () => k.mm_i2s(w, kk, 0, n, m, q, kk + 16, sc, sums, 1, 1, y, n, 0)
              : name === 'TQ2_0'
                ? () => k.mm_tq2(w, kk, 0, n, m, q, kk + 16, sc, bs, kk / 256 + 1, 1, y, n, 0)
                : () => k.mm_tq1(w, kk, 0, n, m, q, kk + 16, sc, bs, kk / 256 + 1, 1, y, n, 0);
          const ms = time(f, m === 1 ? 10 : 2);
          out.push({ build, kernel: name, n, k: kk, m, ms, gops: (2 * n * kk * m) / ms / 1e6 });
        }
      }
    }
    // the LM heads, 16000 rows × 2560, for 1 token and for the tokens batched decode takes at once
    // (each weight unpacked once for all of them: Q6_K 2 and 4, Q8_0 and Q4_0 4, F16 2)
    const n = 16000;
    const kk = 2560;
    const x = Float32Array.from({ length: n * kk }, () => (rnd() - 0.5) * 0.3);
    const hid = a.alloc(4 * kk * 4);
    {
      const h = a.f32(hid, kk * 4);
      for (let i = 0; i < kk * 4; i++) h[i] = rnd() - 0.5;
    }
    const HP = k.head_prep_bytes(kk);
    const P = a.alloc(4 * HP);
    const y = a.alloc(16 * n);
    const scratch = a.alloc(16 * kk);
    const X = a.alloc(2 * k.head_f16m_stride(kk));
    const heads = [
      ['Q6_K head', quantizeQ6_K, [1, 2, 4]],
      ['Q8_0 head', quantizeQ8_0, [1, 4]],
      ['Q4_0 head', quantizeQ4_0, [1, 4]],
      ['F16 head', quantizeF16, [1, 2]],
    ] as const;
    for (const [name, quantize, ms_] of heads) {
      if (!want(name)) continue;
      const bytes = quantize(x);
      const w = a.alloc(bytes.length + 1024);
      a.u8(w, bytes.length).set(bytes);
      const abs = name === 'F16 head' ? a.alloc(16 * n) : 0;
      if (abs) k.row_abs_sums(GGMLType.F16, w, kk, 0, n, abs, scratch);
      for (const m of ms_) {
        const run = () => {
          for (let t = 0; t < m; t++) {
            const h = hid + 4 * kk * t;
            if (name === 'Q6_K head') k.head_prep_q8k(h, kk, P + t * HP);
            else if (name === 'F16 head') k.round_act(GGMLType.F16, h, kk, P + t * HP);
            else k.head_prep_q8_0(h, kk, P + t * HP);
          }
          if (name === 'Q6_K head') {
            if (m === 1) k.head_q6_k(w, kk, 0, n, P, 1, y, 0);
            else if (m === 2) k.head_q6_k_2(w, kk, 0, n, P, HP, y, 4 * n);
            else k.head_q6_k_4(w, kk, 0, n, P, HP, y, 4 * n);
          } else if (name === 'F16 head') {
            if (m === 1) k.head_f16(w, kk, 0, n, P, abs, 1, y, 0, scratch);
            else {
              k.head_f16m_prep(P, HP, kk, 2, X);
              k.head_f16_2(w, kk, 0, n, X, P, HP, abs, y, 4 * n, scratch);
            }
          } else if (name === 'Q8_0 head') {
            if (m === 1) k.head_q8_0(w, kk, 0, n, P, 1, y, 0);
            else k.head_q8_0_4(w, kk, 0, n, P, HP, y, 4 * n);
          } else if (m === 1) k.head_q4_0(w, kk, 0, n, P, 1, y, 0);
          else k.head_q4_0_4(w, kk, 0, n, P, HP, y, 4 * n);
        };
        const ms = time(run, 2);
        out.push({ build, kernel: name, n, k: kk, m, ms, gops: (2 * m * n * kk) / ms / 1e6 });
      }
    }
    // attention of one token over 1024 positions, 2B-4T's heads (20 query heads, 5 KV heads, 128
    // dims), one layer: n = positions, k = head dim, m = query heads; q·k and p·V multiply-adds
    if (want('attention')) {
      const headDim = 128;
      const nHead = 20;
      const kvDim = 5 * headDim;
      const nPos = 1024;
      const nBlk = nPos / 16;
      const blocks = a.alloc(4 * nBlk);
      for (let b = 0; b < nBlk; b++) {
        const blk = a.alloc(2 * 16 * kvDim * 4);
        a.u32(blocks, nBlk)[b] = blk;
        const f = a.f32(blk, 2 * 16 * kvDim);
        for (let i = 0; i < f.length; i++) f[i] = Math.fround(rnd() - 0.5);
      }
      const q = a.alloc(4 * nHead * headDim);
      const qf = a.f32(q, nHead * headDim);
      for (let i = 0; i < qf.length; i++) qf[i] = Math.fround(rnd() - 0.5);
      const att = a.alloc(4 * nHead * headDim);
      const scores = a.alloc(k.attend_scratch_bytes(nPos, headDim));
      const ms = time(
        () => k.attend(q, att, 0, nHead, headDim, 4, kvDim, nPos, blocks, 0, 1 / Math.sqrt(headDim), scores),
        5,
      );
      out.push({
        build,
        kernel: 'attention',
        n: nPos,
        k: headDim,
        m: nHead,
        ms,
        gops: (4 * nHead * headDim * nPos) / ms / 1e6,
      });
    }
  }
  return out;
}

if (import.meta.main) {
  const i = process.argv.indexOf('--only');
  const r = micro(undefined, i > 0 ? (process.argv[i + 1] ?? '') : '');
  if (process.argv.includes('--json')) console.log(JSON.stringify(r));
  else
    for (const x of r)
      console.log(
        `${x.build.padEnd(8)} ${x.kernel.padEnd(10)} ${x.n}x${x.k} m=${String(x.m).padEnd(3)} ${x.ms.toFixed(3).padStart(8)} ms ${x.gops.toFixed(1).padStart(7)} GOP/s`,
      );
}
