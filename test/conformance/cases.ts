/**
 * The conformance table: op × type × shape, run on every wasm build against the oracle
 * (src/model/reference.ts and the codecs). Decode (m = 1) and prefill (m > 1) shapes, K that is
 * not a multiple of the block (where the type allows it) and odd N. A case a backend cannot run is
 * listed with the reason and reported as skipped, never as passed.
 */
import { GGMLType } from '../../src/gguf/ggml-types.ts';

export type Op =
  | 'act_quant'
  | 'matmul'
  | 'tl_matmul'
  | 'float_matmul'
  | 'head'
  | 'embed_row'
  | 'rmsnorm'
  | 'rope'
  | 'f16_round'
  | 'exp'
  | 'silu'
  | 'gate'
  | 'attention';

export interface Case {
  op: Op;
  type?: number;
  /** n = output rows, k = inner size, m = tokens; other fields per op. */
  shape: Record<string, number>;
  /** Extra variant label (mode, edge values...). */
  variant?: string;
}

const T = GGMLType;
const cases: Case[] = [];
const add = (c: Case) => cases.push(c);

// int8 activation quantization: any K
for (const k of [1, 7, 100, 256, 2560, 6912]) add({ op: 'act_quant', shape: { k } });
for (const v of ['zeros', 'tiny', 'huge', 'halves']) add({ op: 'act_quant', shape: { k: 300 }, variant: v });

// ternary matmuls: decode and prefill, odd N, K off the block, residual mode, out scale
const TERN = [T.I2_S, T.TQ2_0, T.TQ1_0];
for (const type of TERN) {
  for (const [n, k] of [
    [7, 256],
    [64, 512],
    [37, 768],
    [33, 1280],
    [5, 2560],
  ]) {
    for (const m of [1, 2, 5, 8]) add({ op: 'matmul', type, shape: { n, k, m } });
  }
  add({ op: 'matmul', type, shape: { n: 17, k: 384, m: 1 } }); // K % 128 == 0, K % 256 != 0
  add({ op: 'matmul', type, shape: { n: 17, k: 384, m: 3 } });
  add({ op: 'matmul', type, shape: { n: 9, k: 200, m: 1 } }); // K % 128 != 0
  add({ op: 'matmul', type, shape: { n: 19, k: 512, m: 6 }, variant: 'add' });
  add({ op: 'matmul', type, shape: { n: 19, k: 512, m: 1 }, variant: 'oscale' });
  add({ op: 'matmul', type, shape: { n: 6, k: 256, m: 1 }, variant: 'saturated' });
  // rows of 4096 and more: decode walks one row at a time (LONG_ROW_K in wasm/src/ternary.ts)
  for (const m of [1, 5]) add({ op: 'matmul', type, shape: { n: 9, k: 4096, m } });
  add({ op: 'matmul', type, shape: { n: 3, k: 6912, m: 1 } });
  if (type === T.I2_S) add({ op: 'matmul', type, shape: { n: 7, k: 4224, m: 1 } }); // K % 256 != 0 (TQ rows are whole 256-blocks)
  add({ op: 'matmul', type, shape: { n: 11, k: 4096, m: 1 }, variant: 'add' });
  add({ op: 'matmul', type, shape: { n: 11, k: 4096, m: 1 }, variant: 'oscale' });
  // prefill over several row tiles (~128 KiB of weights each, TILE_BYTES), odd rows in the last
  // tile, and tokens past the last group of 4
  add({ op: 'matmul', type, shape: { n: 301, k: 4096, m: 9 } });
  add({ op: 'matmul', type, shape: { n: 410, k: 2560, m: 10 } });
  add({ op: 'matmul', type, shape: { n: 301, k: 4096, m: 8 }, variant: 'add' });
}

// TL1 / TL2 tile images built from each ternary type (any K: the layout pads to 256-blocks)
for (const layout of ['tl1', 'tl2']) {
  for (const type of TERN) {
    for (const [n, k, m] of [
      [16, 256, 1],
      [37, 512, 1],
      [33, 768, 3],
      [5, 2560, 1],
      [19, 512, 5],
    ]) {
      add({ op: 'tl_matmul', type, shape: { n, k, m }, variant: layout });
    }
    add({ op: 'tl_matmul', type, shape: { n: 21, k: 512, m: 2 }, variant: `${layout} add` });
  }
  add({ op: 'tl_matmul', type: T.I2_S, shape: { n: 9, k: 200, m: 2 }, variant: `${layout} raw` }); // K off every block
  add({ op: 'tl_matmul', type: T.I2_S, shape: { n: 7, k: 384, m: 1 }, variant: layout });
}

// float projections (F32/F16/BF16 weights): any K
for (const type of [T.F32, T.F16, T.BF16]) {
  for (const [n, k, m] of [
    [9, 64, 1],
    [13, 100, 2],
    [8, 257, 1],
    [31, 512, 3],
  ])
    add({ op: 'float_matmul', type, shape: { n, k, m } });
}

// LM head (logits): integer heads (4-row groups plus odd tails), the bracketed F16 head with its
// exact fallback, float heads; 'zero-block' zeroes the hidden state's first 256 values (d = 0),
// 'correlated' makes every weight and activation positive (block sums far past 2^24 for Q6_K)
for (const type of [T.Q8_0, T.Q4_0, T.Q6_K, T.F16, T.F32, T.BF16]) {
  for (const [n, k] of [
    [37, 256],
    [300, 512],
    [11, 96],
    [6, 2560],
  ])
    add({ op: 'head', type, shape: { n, k } });
  add({ op: 'head', type, shape: { n: 23, k: 512 }, variant: 'zero-block' });
  add({ op: 'head', type, shape: { n: 9, k: 768 }, variant: 'correlated' });
}
// the Q6_K head for 2 and 4 tokens at once (batched decode): each token's logits as alone
for (const [n, k, m] of [
  [37, 256, 2],
  [300, 512, 4],
  [6, 2560, 4],
  [23, 512, 2],
])
  add({ op: 'head', type: T.Q6_K, shape: { n, k, m } });
add({ op: 'head', type: T.Q6_K, shape: { n: 23, k: 512, m: 4 }, variant: 'zero-block' });
add({ op: 'head', type: T.Q6_K, shape: { n: 9, k: 768, m: 4 }, variant: 'correlated' });
// the Q8_0 and Q4_0 heads for 4 tokens at once
for (const type of [T.Q8_0, T.Q4_0]) {
  for (const [n, k] of [
    [37, 256],
    [300, 512],
    [11, 96],
    [6, 2560],
  ])
    add({ op: 'head', type, shape: { n, k, m: 4 } });
  add({ op: 'head', type, shape: { n: 23, k: 512, m: 4 }, variant: 'zero-block' });
  add({ op: 'head', type, shape: { n: 9, k: 768, m: 4 }, variant: 'correlated' });
}
// the F16 head for 2 tokens at once; 'nonfinite' and 'extremes' as for one token
for (const [n, k] of [
  [37, 256],
  [300, 512],
  [11, 96],
  [6, 2560],
])
  add({ op: 'head', type: T.F16, shape: { n, k, m: 2 } });
add({ op: 'head', type: T.F16, shape: { n: 9, k: 768, m: 2 }, variant: 'correlated' });
add({ op: 'head', type: T.F16, shape: { n: 23, k: 256, m: 2 }, variant: 'forced-fallback' });
add({ op: 'head', type: T.F16, shape: { n: 13, k: 262, m: 2 }, variant: 'nonfinite' });
add({ op: 'head', type: T.F16, shape: { n: 17, k: 264, m: 2 }, variant: 'extremes' });
add({ op: 'head', type: T.F16, shape: { n: 23, k: 256 }, variant: 'forced-fallback' });
// inf, −inf and NaN f16 weights in a few rows (the kernel flags them and takes the exact path)
add({ op: 'head', type: T.F16, shape: { n: 13, k: 262 }, variant: 'nonfinite' });
// the ends of f16's range: subnormal and largest weights, activations at ±65504 and subnormal
// (the kernel meets w·2^-112 with xr·2^112, which must stay exact and finite)
add({ op: 'head', type: T.F16, shape: { n: 17, k: 264 }, variant: 'extremes' });

// embedding rows
for (const type of [T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q6_K]) {
  for (const k of [96, 256, 768]) add({ op: 'embed_row', type, shape: { k, rows: 3 } });
}

for (const n of [1, 7, 256, 2560, 6912]) add({ op: 'rmsnorm', shape: { n } });
for (const [nRot, headDim, pos] of [
  [64, 64, 0],
  [64, 64, 1],
  [128, 128, 77],
  [32, 64, 4095],
  [6, 6, 9],
])
  add({ op: 'rope', shape: { nRot, headDim, pos } });
add({ op: 'f16_round', shape: { n: 4099 }, variant: 'random' });
add({ op: 'f16_round', shape: { n: 0 }, variant: 'edges' });
add({ op: 'exp', shape: { n: 20000 } });
add({ op: 'exp', shape: { n: 0 }, variant: 'edges' });
add({ op: 'silu', shape: { n: 20000 } });
add({ op: 'silu', shape: { n: 0 }, variant: 'edges' });
add({ op: 'gate', shape: { n: 64 }, variant: 'silu-edges' });
for (const n of [7, 512, 6912]) {
  add({ op: 'gate', shape: { n }, variant: 'relu2' });
  add({ op: 'gate', shape: { n }, variant: 'silu' });
}
for (const [nHead, nHeadKv, headDim, nPos] of [
  [4, 2, 64, 1],
  [4, 2, 64, 37],
  [6, 2, 32, 16],
  [20, 5, 128, 50],
  [2, 2, 6, 5],
  [16, 16, 96, 33],
  [20, 5, 128, 300],
  [4, 2, 20, 70],
]) {
  add({ op: 'attention', shape: { nHead, nHeadKv, headDim, nPos } });
}

export const CASES: readonly Case[] = cases;

/** Why a case cannot run on the wasm kernels (any build), or undefined. */
export function unsupported(c: Case): string | undefined {
  const k = c.shape.k;
  if (c.op === 'tl_matmul' && !c.variant?.includes('raw')) {
    if (c.type === T.I2_S && k % 128 !== 0) return 'I2_S source needs K % 128 == 0';
    if ((c.type === T.TQ2_0 || c.type === T.TQ1_0) && k % 256 !== 0) return 'TQ source needs K % 256 == 0';
  }
  if (c.op === 'matmul') {
    if (c.type === T.I2_S && k % 128 !== 0)
      return 'I2_S rows are whole 128-blocks (the file format needs K % 128 == 0)';
    if ((c.type === T.TQ2_0 || c.type === T.TQ1_0) && k % 256 !== 0)
      return 'TQ1_0/TQ2_0 rows are whole 256-blocks (K % 256 == 0)';
  }
  if (c.op === 'head' || c.op === 'embed_row') {
    if (c.type === T.Q6_K && k % 256 !== 0) return 'Q6_K rows are whole 256-blocks (K % 256 == 0)';
    if ((c.type === T.Q8_0 || c.type === T.Q4_0) && k % 32 !== 0) return 'Q8_0/Q4_0 rows are whole 32-blocks';
  }
  return undefined;
}

export function caseName(c: Case): string {
  const t = c.type === undefined ? '' : ` ${typeNames[c.type] ?? c.type}`;
  const s = Object.entries(c.shape)
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
  return `${c.op}${t} ${s}${c.variant ? ` [${c.variant}]` : ''}`;
}

const typeNames: Record<number, string> = {
  [T.I2_S]: 'I2_S',
  [T.TQ2_0]: 'TQ2_0',
  [T.TQ1_0]: 'TQ1_0',
  [T.F32]: 'F32',
  [T.F16]: 'F16',
  [T.BF16]: 'BF16',
  [T.Q8_0]: 'Q8_0',
  [T.Q4_0]: 'Q4_0',
  [T.Q6_K]: 'Q6_K',
};
