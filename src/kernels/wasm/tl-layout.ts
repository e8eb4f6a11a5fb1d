/**
 * TL1 / TL2 tile images: the weight layouts of the lookup-table kernels (wasm/src/tl.ts), built from
 * any ternary tensor (I2_S, TQ2_0, TQ1_0) at load time, or by a converter. Runtime-free.
 *
 * Image = 64-byte header (little-endian u32 words) + indices + scales:
 *   0 layout (1 = TL1, 2 = TL2)  1 N (rows)  2 K  3 nb = ceil(K/256)  4 kind (0: one f32 scale per
 *   tensor, the I2_S epilogue; 1: one f16 scale per row and 256-block, the TQ epilogue)
 *   5 wscale (f32 bits, kind 0)  6 tiles = ceil(N/16)  7 groups per block (TL1 128, TL2 86)
 *   8 byte offset of the indices  9 byte offset of the scales (kind 1)
 * Weights are grouped inside 256-element blocks; elements past K, and rows past N, are zero weights.
 * Indices, for tile t (rows 16t..16t+15), block b, in order:
 *   TL1: 64 vectors of 16 bytes; vector j, byte r = p(r, 2j) | p(r, 2j+1) << 4, where group g holds
 *        elements 256b + 2g, +1 and p = 3·(w0 + 1) + (w1 + 1) ∈ 0..8.            (2 bits per weight)
 *   TL2: 86 vectors of 16 bytes; vector j, byte r = |v| | (v < 0) << 7, v = 9·w0 + 3·w1 + w2 over
 *        elements 256b + 3j, +1, +2 (group 85 holds element 256b + 255 and two zero pads). (8 bits / 3 weights)
 * Scales (kind 1): for tile t, block b: 16 f16 (row 16t + r).
 */
import { BitNetError } from '../../errors.ts';
import { GGMLType } from '../../gguf/ggml-types.ts';
import type { Linear } from '../../model/weights.ts';
import { unpackI2S } from '../../quant/i2s.ts';
import { unpackTQ1_0, unpackTQ2_0 } from '../../quant/tq.ts';
import { f32ToF16 } from '../../util/f16.ts';

export type TLLayout = 'tl1' | 'tl2';
export const TL_HEADER = 64;

/** The ternary values of a projection (−1/0/+1, row-major N×K) and its scales. */
export function ternaryOf(lin: Linear): { t: Int8Array; kind: 0 | 1; wscale: number; blockScales?: Float32Array } {
  const n = lin.k * lin.n;
  switch (lin.type) {
    case GGMLType.I2_S:
      return { t: unpackI2S(lin.bytes, n), kind: 0, wscale: lin.scale };
    case GGMLType.TQ2_0: {
      const u = unpackTQ2_0(lin.bytes, n);
      return { t: u.ternary, kind: 1, wscale: 1, blockScales: u.scales };
    }
    case GGMLType.TQ1_0: {
      const u = unpackTQ1_0(lin.bytes, n);
      return { t: u.ternary, kind: 1, wscale: 1, blockScales: u.scales };
    }
    default:
      throw BitNetError.Model('UNSUPPORTED_TENSOR_TYPE', `no TL layout for type ${lin.type}`, { type: lin.type });
  }
}

export function tlImageBytes(layout: TLLayout, n: number, k: number, kind: 0 | 1): number {
  const nb = Math.ceil(k / 256);
  const tiles = Math.ceil(n / 16);
  const perBlock = layout === 'tl1' ? 64 * 16 : 86 * 16;
  return TL_HEADER + tiles * nb * perBlock + (kind === 1 ? tiles * nb * 32 : 0);
}

/**
 * Packs a ternary N×K matrix into `out` (tlImageBytes long). For kind 1, blockScales holds the
 * per-row, per-256-block scales (N × nb, values exactly representable in f16).
 */
export function packTL(
  layout: TLLayout,
  t: Int8Array,
  n: number,
  k: number,
  kind: 0 | 1,
  wscale: number,
  blockScales: Float32Array | undefined,
  out: Uint8Array,
): void {
  const nb = Math.ceil(k / 256);
  const tiles = Math.ceil(n / 16);
  const gpb = layout === 'tl1' ? 128 : 86;
  const perBlock = layout === 'tl1' ? 64 * 16 : 86 * 16;
  const dv = new DataView(out.buffer, out.byteOffset, out.byteLength);
  const idxOff = TL_HEADER;
  const scOff = idxOff + tiles * nb * perBlock;
  const header = [layout === 'tl1' ? 1 : 2, n, k, nb, kind, 0, tiles, gpb, idxOff, scOff];
  for (let i = 0; i < header.length; i++) dv.setUint32(4 * i, header[i], true);
  dv.setFloat32(20, wscale, true);
  const w = (row: number, e: number, inBlock: number): number =>
    row < n && inBlock < 256 && e < k ? t[row * k + e] : 0;
  for (let tile = 0; tile < tiles; tile++) {
    for (let b = 0; b < nb; b++) {
      const base = idxOff + (tile * nb + b) * perBlock;
      for (let r = 0; r < 16; r++) {
        const row = tile * 16 + r;
        if (layout === 'tl1') {
          for (let j = 0; j < 64; j++) {
            const p = (g: number) => {
              const e = 256 * b + 2 * g;
              return 3 * (w(row, e, 2 * g) + 1) + (w(row, e + 1, 2 * g + 1) + 1);
            };
            out[base + 16 * j + r] = p(2 * j) | (p(2 * j + 1) << 4);
          }
        } else {
          for (let j = 0; j < 86; j++) {
            const e = 256 * b + 3 * j;
            const v = 9 * w(row, e, 3 * j) + 3 * w(row, e + 1, 3 * j + 1) + w(row, e + 2, 3 * j + 2);
            out[base + 16 * j + r] = Math.abs(v) | (v < 0 ? 0x80 : 0);
          }
        }
        if (kind === 1) {
          const s = row < n ? blockScales![row * nb + b] : 0;
          dv.setUint16(scOff + (tile * nb + b) * 32 + 2 * r, f32ToF16(s), true);
        }
      }
    }
  }
}
