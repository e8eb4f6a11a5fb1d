/**
 * TL1 / TL2 tile images: the weight layouts of the wasm lookup-table kernels (wasm/src/tl.ts), and
 * a file format of shard packs (docs/shard-pack.md, layouts `tl1` / `tl2`). Built from any ternary
 * tensor (I2_S, TQ2_0, TQ1_0) by the converter or, at load time, by the wasm backend; read back by
 * the reference forward pass (row by row) and by the kernels. Runtime-free.
 *
 * Image = 64-byte header (sixteen little-endian u32 words, 10..15 reserved, written 0) + indices
 * + scales. A weight matrix has N rows (output features) of K elements (input features).
 *   word 0 layout (1 = TL1, 2 = TL2)   1 N   2 K   3 nb = ceil(K/256) blocks per row
 *        4 kind: 0 = one f32 scale per tensor (word 5; the I2_S epilogue y = ((D−S)/s)·wscale);
 *                1 = one f16 scale per row and 256-block (the TQ2_0/TQ1_0 epilogue, blocks in order)
 *        5 wscale (f32 bits; kind 0, 1.0 for kind 1)   6 tiles = ceil(N/16)
 *        7 groups per block (TL1 128, TL2 86)   8 byte offset of the indices (64)
 *        9 byte offset of the scales = 64 + tiles·nb·(TL1 1024 | TL2 1376) (= the image length for kind 0)
 * Weights are grouped inside 256-element blocks; elements past K, and rows past N, are zero weights.
 * Indices, for tile t (rows 16t..16t+15), block b, in order (tile-major, then block):
 *   TL1: 64 vectors of 16 bytes; vector j, byte r = p(r, 2j) | p(r, 2j+1) << 4, where group g holds
 *        elements 256b + 2g, +1 and p = 3·(w0 + 1) + (w1 + 1) ∈ 0..8.            (2 bits per weight)
 *   TL2: 86 vectors of 16 bytes; vector j, byte r = |v| | (v < 0) << 7, v = 9·w0 + 3·w1 + w2 over
 *        elements 256b + 3j, +1, +2 (group 85 holds element 256b + 255 and two zero pads). (8 bits / 3 weights)
 * Scales (kind 1 only): for tile t, block b: 16 f16 (row 16t + r), 32 bytes; tile-major, then block.
 * Length: 64 + tiles·nb·(TL1 1024 | TL2 1376) + (kind 1: tiles·nb·32) bytes (tlImageBytes).
 *
 * A pack stores a TL image with the dtype of the tensor it came from: I2_S (kind 0), TQ2_0 or
 * TQ1_0 (kind 1); the numerics are that type's, bit for bit.
 */
import { BitNetError } from '../errors.ts';
import { GGMLType } from '../gguf/ggml-types.ts';
import { f16ToF32, f32ToF16 } from '../util/f16.ts';
import { i2sScale, unpackI2S } from './i2s.ts';
import { unpackTQ1_0, unpackTQ2_0 } from './tq.ts';

export type TLLayout = 'tl1' | 'tl2';
export type TLKind = 0 | 1;
export const TL_LAYOUTS: readonly TLLayout[] = ['tl1', 'tl2'];
export const TL_HEADER = 64;
/** Bytes of the indices of one (tile, block). */
const PER_BLOCK = { tl1: 64 * 16, tl2: 86 * 16 } as const;
const GROUPS = { tl1: 128, tl2: 86 } as const;

export interface TLHeader {
  layout: TLLayout;
  n: number;
  k: number;
  nb: number;
  kind: TLKind;
  wscale: number;
  tiles: number;
  groups: number;
  indexOffset: number;
  scaleOffset: number;
}

/** The image kind of a ternary tensor type (I2_S → 0, TQ2_0/TQ1_0 → 1), or undefined. */
export function tlKindOf(type: number): TLKind | undefined {
  if (type === GGMLType.I2_S) return 0;
  if (type === GGMLType.TQ2_0 || type === GGMLType.TQ1_0) return 1;
  return undefined;
}

/** The ternary values of a projection (−1/0/+1, row-major N×K) and its scales. */
export function ternaryOf(w: { type: number; bytes: Uint8Array; k: number; n: number; scale?: number }): {
  t: Int8Array;
  kind: TLKind;
  wscale: number;
  blockScales?: Float32Array;
} {
  const n = w.k * w.n;
  switch (w.type) {
    case GGMLType.I2_S:
      return { t: unpackI2S(w.bytes, n), kind: 0, wscale: w.scale ?? i2sScale(w.bytes, n) };
    case GGMLType.TQ2_0: {
      const u = unpackTQ2_0(w.bytes, n);
      return { t: u.ternary, kind: 1, wscale: 1, blockScales: u.scales };
    }
    case GGMLType.TQ1_0: {
      const u = unpackTQ1_0(w.bytes, n);
      return { t: u.ternary, kind: 1, wscale: 1, blockScales: u.scales };
    }
    default:
      throw BitNetError.Model('UNSUPPORTED_TENSOR_TYPE', `no TL layout for type ${w.type}`, { type: w.type });
  }
}

export function tlImageBytes(layout: TLLayout, n: number, k: number, kind: TLKind): number {
  const nb = Math.ceil(k / 256);
  const tiles = Math.ceil(n / 16);
  return TL_HEADER + tiles * nb * PER_BLOCK[layout] + (kind === 1 ? tiles * nb * 32 : 0);
}

/**
 * Packs a ternary N×K matrix into `out` (tlImageBytes long, zeroed). For kind 1, blockScales holds
 * the per-row, per-256-block scales (N × nb, values exactly representable in f16).
 */
export function packTL(
  layout: TLLayout,
  t: Int8Array,
  n: number,
  k: number,
  kind: TLKind,
  wscale: number,
  blockScales: Float32Array | undefined,
  out: Uint8Array,
): void {
  const nb = Math.ceil(k / 256);
  const tiles = Math.ceil(n / 16);
  const gpb = GROUPS[layout];
  const perBlock = PER_BLOCK[layout];
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

/** Packs a ternary tensor (I2_S, TQ2_0, TQ1_0 bytes) into a new TL image of its kind. */
export function packTLFrom(
  layout: TLLayout,
  w: { type: number; bytes: Uint8Array; k: number; n: number; scale?: number },
): Uint8Array {
  const { t, kind, wscale, blockScales } = ternaryOf(w);
  const out = new Uint8Array(tlImageBytes(layout, w.n, w.k, kind));
  packTL(layout, t, w.n, w.k, kind, wscale, blockScales, out);
  return out;
}

function badImage(message: string, details: Record<string, unknown>): BitNetError {
  return BitNetError.Model('TL_BAD_IMAGE', message, details);
}

/** Reads the header words (checks only that there is a header and that its layout word is known). */
export function readTLHeader(img: Uint8Array): TLHeader {
  if (img.byteLength < TL_HEADER) {
    throw badImage(`a TL image needs a ${TL_HEADER}-byte header, got ${img.byteLength} bytes`, {
      field: 'length',
      got: img.byteLength,
    });
  }
  const dv = new DataView(img.buffer, img.byteOffset, img.byteLength);
  const u = (i: number) => dv.getUint32(4 * i, true);
  const lw = u(0);
  if (lw !== 1 && lw !== 2)
    throw badImage(`TL image layout word is ${lw} (1 = TL1, 2 = TL2)`, { field: 'layout', got: lw });
  const kind = u(4);
  if (kind !== 0 && kind !== 1) throw badImage(`TL image kind is ${kind} (0 or 1)`, { field: 'kind', got: kind });
  return {
    layout: lw === 1 ? 'tl1' : 'tl2',
    n: u(1),
    k: u(2),
    nb: u(3),
    kind,
    wscale: dv.getFloat32(20, true),
    tiles: u(6),
    groups: u(7),
    indexOffset: u(8),
    scaleOffset: u(9),
  };
}

/**
 * Checks an image against what its tensor should be (layout, N, K, kind) and its length against
 * what those need; every derived header word (nb, tiles, groups, offsets) must be the one packTL
 * writes, and a kind-0 scale must be finite. Throws Model TL_BAD_IMAGE (details: field, got,
 * expected). Returns the header. The indices are not scanned here: decodeTLRow refuses invalid ones.
 */
export function validateTLImage(
  img: Uint8Array,
  expect: { layout: TLLayout; n: number; k: number; kind: TLKind },
): TLHeader {
  const want = tlImageBytes(expect.layout, expect.n, expect.k, expect.kind);
  if (img.byteLength !== want) {
    throw badImage(
      `TL image is ${img.byteLength} bytes, ${expect.layout} ${expect.n}×${expect.k} kind ${expect.kind} needs ${want}`,
      {
        field: 'length',
        got: img.byteLength,
        expected: want,
      },
    );
  }
  const h = readTLHeader(img);
  const nb = Math.ceil(expect.k / 256);
  const tiles = Math.ceil(expect.n / 16);
  const fields: [keyof TLHeader, unknown][] = [
    ['layout', expect.layout],
    ['n', expect.n],
    ['k', expect.k],
    ['nb', nb],
    ['kind', expect.kind],
    ['tiles', tiles],
    ['groups', GROUPS[expect.layout]],
    ['indexOffset', TL_HEADER],
    ['scaleOffset', TL_HEADER + tiles * nb * PER_BLOCK[expect.layout]],
  ];
  for (const [field, expected] of fields) {
    if (h[field] !== expected) {
      throw badImage(`TL image header: ${field} is ${h[field]}, expected ${expected}`, {
        field,
        got: h[field],
        expected,
      });
    }
  }
  if (h.kind === 0 && !Number.isFinite(h.wscale)) {
    throw badImage(`TL image scale is not finite (${h.wscale})`, { field: 'wscale', got: h.wscale });
  }
  return h;
}

// Decoding tables: TL1 byte → 4 weights (low nibble: elements 4j, 4j+1; high: 4j+2, 4j+3);
// TL2 byte → 3 weights (balanced ternary digits of ±(byte & 0x7f)). BAD marks invalid bytes.
const TL1_W = new Int8Array(256 * 4);
const TL1_BAD = new Uint8Array(256);
const TL2_W = new Int8Array(256 * 3);
const TL2_BAD = new Uint8Array(256);
for (let byte = 0; byte < 256; byte++) {
  const lo = byte & 15;
  const hi = byte >> 4;
  TL1_BAD[byte] = lo > 8 || hi > 8 ? 1 : 0;
  TL1_W.set([Math.floor(lo / 3) - 1, (lo % 3) - 1, Math.floor(hi / 3) - 1, (hi % 3) - 1], 4 * byte);
  const mag = byte & 0x7f;
  const v = byte & 0x80 ? -mag : mag;
  TL2_BAD[byte] = mag > 13 || byte === 0x80 ? 1 : 0;
  const w0 = Math.round(v / 9);
  const r = v - 9 * w0;
  const w1 = Math.round(r / 3);
  TL2_W.set([w0, w1, r - 3 * w1], 3 * byte);
}

function badIndex(h: TLHeader, row: number, b: number, j: number, byte: number): BitNetError {
  return badImage(
    `TL image ${h.layout}: invalid index byte 0x${byte.toString(16)} at row ${row}, block ${b}, group ${j}`,
    {
      field: 'indices',
      row,
      block: b,
      group: j,
      got: byte,
    },
  );
}

/**
 * Decodes row `row` of an image: its ternary values into out[0..nb·256) (elements past K are the
 * image's padding, zero in a valid image) and, for kind 1, its block scales into scales[0..nb).
 * An index byte that no packer writes (a TL1 nibble > 8, a TL2 magnitude > 13) is TL_BAD_IMAGE.
 */
export function decodeTLRow(img: Uint8Array, h: TLHeader, row: number, out: Int8Array, scales?: Float32Array): void {
  const tile = row >> 4;
  const r = row & 15;
  const perBlock = PER_BLOCK[h.layout];
  for (let b = 0; b < h.nb; b++) {
    const base = h.indexOffset + (tile * h.nb + b) * perBlock + r;
    const o = 256 * b;
    if (h.layout === 'tl1') {
      for (let j = 0; j < 64; j++) {
        const byte = img[base + 16 * j];
        if (TL1_BAD[byte]) throw badIndex(h, row, b, j, byte);
        const s = 4 * byte;
        const e = o + 4 * j;
        out[e] = TL1_W[s];
        out[e + 1] = TL1_W[s + 1];
        out[e + 2] = TL1_W[s + 2];
        out[e + 3] = TL1_W[s + 3];
      }
    } else {
      for (let j = 0; j < 85; j++) {
        const byte = img[base + 16 * j];
        if (TL2_BAD[byte]) throw badIndex(h, row, b, j, byte);
        const s = 3 * byte;
        const e = o + 3 * j;
        out[e] = TL2_W[s];
        out[e + 1] = TL2_W[s + 1];
        out[e + 2] = TL2_W[s + 2];
      }
      const byte = img[base + 16 * 85];
      if (TL2_BAD[byte]) throw badIndex(h, row, b, 85, byte);
      out[o + 255] = TL2_W[3 * byte];
    }
    if (scales && h.kind === 1) {
      const p = h.scaleOffset + (tile * h.nb + b) * 32 + 2 * r;
      scales[b] = f16ToF32(img[p] | (img[p + 1] << 8));
    }
  }
}

/**
 * The whole tensor back: ternary N×K (row-major), its kind, wscale and, for kind 1, the per-row,
 * per-block scales (N × nb). The image is validated first (against `expect` when given, else
 * against its own header).
 */
export function decodeTL(
  img: Uint8Array,
  expect?: { layout: TLLayout; n: number; k: number; kind: TLKind },
): { t: Int8Array; n: number; k: number; kind: TLKind; wscale: number; blockScales?: Float32Array } {
  // without an expectation, the header must at least agree with itself and with the length
  const h = validateTLImage(img, expect ?? readTLHeader(img));
  const { n, k, nb } = h;
  const t = new Int8Array(n * k);
  const row = new Int8Array(nb * 256);
  const blockScales = h.kind === 1 ? new Float32Array(n * nb) : undefined;
  for (let r = 0; r < n; r++) {
    decodeTLRow(img, h, r, row, blockScales?.subarray(r * nb, (r + 1) * nb));
    t.set(row.subarray(0, k), r * k);
  }
  return { t, n, k, kind: h.kind, wscale: h.kind === 0 ? h.wscale : 1, blockScales };
}
