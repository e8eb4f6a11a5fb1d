/**
 * Op-level runners for the conformance table: the oracle (functions of src/model/reference.ts and
 * src/quant/*) and each wasm kernel build, over the same inputs.
 */
import { GGMLType } from '../../src/gguf/ggml-types.ts';
import { Arena } from '../../src/kernels/wasm/arena.ts';
import type { KernelExports } from '../../src/kernels/wasm/exports.ts';
import { KV_BT } from '../../src/kernels/wasm/exports.ts';
import { createMemory, instantiate, type KernelBuild, selectKernels } from '../../src/kernels/wasm/loader.ts';

/** One wasm instance with a scratch arena, for op-level calls. */
export class WasmOps {
  readonly k: KernelExports;
  readonly a: Arena;
  readonly build: KernelBuild;
  private readonly mark: number;
  constructor(build: KernelBuild) {
    const sel = selectKernels({ prefer: build });
    this.build = sel.build;
    const mem = createMemory(32);
    this.a = new Arena(mem);
    this.k = instantiate(sel.module, mem);
    const table = this.a.alloc(65536 * 4);
    this.k.init_tables(table);
    this.mark = this.a.used;
  }
  /** Copies bytes in (16 bytes of zero slack after them). */
  put(bytes: Uint8Array): number {
    const p = this.a.alloc(bytes.byteLength + 1024);
    this.a.u8(p, bytes.byteLength + 1024).fill(0);
    this.a.u8(p, bytes.byteLength).set(bytes);
    return p;
  }
  putF32(x: Float32Array): number {
    return this.put(new Uint8Array(x.buffer, x.byteOffset, x.byteLength));
  }
  zeros(bytes: number): number {
    const p = this.a.alloc(bytes + 64);
    this.a.u8(p, bytes + 64).fill(0);
    return p;
  }
  f32(p: number, n: number): Float32Array {
    return this.a.f32(p, n).slice();
  }
  /** Frees everything allocated after construction (a bump allocator: restart a fresh instance instead). */
  get used(): number {
    return this.a.used - this.mark;
  }
}

/** Available wasm builds (by the loader's own selection rules) and the ones refused, with reasons. */
export function wasmBuilds(): { available: KernelBuild[]; refused: { build: KernelBuild; reason: string }[] } {
  const available: KernelBuild[] = [];
  const refused: { build: KernelBuild; reason: string }[] = [];
  for (const b of ['relaxed', 'simd'] as const) {
    try {
      selectKernels({ prefer: b });
      available.push(b);
    } catch (e) {
      refused.push({ build: b, reason: (e as Error).message });
    }
  }
  return { available, refused };
}

/** Deterministic pseudo-random numbers (LCG) so every backend sees the same inputs. */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

export function gaussianVec(n: number, r: () => number, std = 1): Float32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r()) * std;
  return x;
}

export function ternaryVec(n: number, r: () => number): Int8Array {
  return Int8Array.from({ length: n }, () => Math.floor(r() * 3) - 1);
}

/** Bit-exact comparison of float arrays (NaN equals NaN, +0 differs from −0). */
export function firstDiff(a: ArrayLike<number>, b: ArrayLike<number>): string | undefined {
  if (a.length !== b.length) return `length ${a.length} vs ${b.length}`;
  for (let i = 0; i < a.length; i++) {
    if (!Object.is(a[i], b[i]) && !(Number.isNaN(a[i]) && Number.isNaN(b[i]))) return `at ${i}: ${a[i]} vs ${b[i]}`;
  }
  return undefined;
}

/** KV mirror layout helpers (attention.ts): K [kvh][d][t%16], V [t%16][kvh][d] per block and layer. */
export function kvMirror(
  ops: WasmOps,
  K: Float32Array[],
  V: Float32Array[],
  nHeadKv: number,
  headDim: number,
): { blocks: number; layerBytes: number } {
  const kvDim = nHeadKv * headDim;
  const nPos = K.length;
  const layerBytes = 2 * KV_BT * kvDim * 4;
  const nBlk = Math.ceil(nPos / KV_BT);
  const table = new Uint32Array(nBlk);
  for (let b = 0; b < nBlk; b++) {
    const p = ops.zeros(layerBytes);
    table[b] = p;
    for (let t = 0; t < KV_BT && b * KV_BT + t < nPos; t++) {
      const pos = b * KV_BT + t;
      const kf = ops.a.f32(p, KV_BT * kvDim);
      const vf = ops.a.f32(p + 4 * KV_BT * kvDim, KV_BT * kvDim);
      for (let i = 0; i < kvDim; i++) {
        kf[i * KV_BT + t] = K[pos][i];
        vf[t * kvDim + i] = V[pos][i];
      }
    }
  }
  return { blocks: ops.put(new Uint8Array(table.buffer)), layerBytes };
}

export const TYPE_NAMES: Record<number, string> = {
  [GGMLType.I2_S]: 'I2_S',
  [GGMLType.TQ2_0]: 'TQ2_0',
  [GGMLType.TQ1_0]: 'TQ1_0',
  [GGMLType.F32]: 'F32',
  [GGMLType.F16]: 'F16',
  [GGMLType.BF16]: 'BF16',
  [GGMLType.Q8_0]: 'Q8_0',
  [GGMLType.Q4_0]: 'Q4_0',
  [GGMLType.Q6_K]: 'Q6_K',
};
