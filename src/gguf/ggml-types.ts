/**
 * ggml tensor type ids and their storage sizes.
 *
 * Ids 36..39 are bitnet.cpp's (I2_S, I8_S, TL1, TL2); upstream reuses 39 for MXFP4, so the
 * model loader dispatches on (type, architecture). Sizes: a block of `blockSize` elements takes
 * `typeSize` bytes. I2_S is the exception: the whole tensor is n/4 bytes of 2-bit codes plus a
 * 32-byte tail whose first 4 bytes are the f32 scale (see docs/bitnet-formats.md §2.2).
 */
import { BitNetError } from '../errors.ts';

export const GGMLType = {
  F32: 0,
  F16: 1,
  Q4_0: 2,
  Q4_1: 3,
  Q5_0: 6,
  Q5_1: 7,
  Q8_0: 8,
  Q8_1: 9,
  Q2_K: 10,
  Q3_K: 11,
  Q4_K: 12,
  Q5_K: 13,
  Q6_K: 14,
  Q8_K: 15,
  I8: 24,
  I16: 25,
  I32: 26,
  I64: 27,
  F64: 28,
  BF16: 30,
  TQ1_0: 34,
  TQ2_0: 35,
  I2_S: 36,
} as const;
export type GGMLType = (typeof GGMLType)[keyof typeof GGMLType];

interface TypeTraits {
  name: string;
  blockSize: number;
  typeSize: number;
}

const TRAITS: ReadonlyMap<number, TypeTraits> = new Map<number, TypeTraits>([
  [GGMLType.F32, { name: 'F32', blockSize: 1, typeSize: 4 }],
  [GGMLType.F16, { name: 'F16', blockSize: 1, typeSize: 2 }],
  [GGMLType.Q4_0, { name: 'Q4_0', blockSize: 32, typeSize: 18 }],
  [GGMLType.Q4_1, { name: 'Q4_1', blockSize: 32, typeSize: 20 }],
  [GGMLType.Q5_0, { name: 'Q5_0', blockSize: 32, typeSize: 22 }],
  [GGMLType.Q5_1, { name: 'Q5_1', blockSize: 32, typeSize: 24 }],
  [GGMLType.Q8_0, { name: 'Q8_0', blockSize: 32, typeSize: 34 }],
  [GGMLType.Q8_1, { name: 'Q8_1', blockSize: 32, typeSize: 36 }],
  [GGMLType.Q2_K, { name: 'Q2_K', blockSize: 256, typeSize: 84 }],
  [GGMLType.Q3_K, { name: 'Q3_K', blockSize: 256, typeSize: 110 }],
  [GGMLType.Q4_K, { name: 'Q4_K', blockSize: 256, typeSize: 144 }],
  [GGMLType.Q5_K, { name: 'Q5_K', blockSize: 256, typeSize: 176 }],
  [GGMLType.Q6_K, { name: 'Q6_K', blockSize: 256, typeSize: 210 }],
  [GGMLType.Q8_K, { name: 'Q8_K', blockSize: 256, typeSize: 292 }],
  [GGMLType.I8, { name: 'I8', blockSize: 1, typeSize: 1 }],
  [GGMLType.I16, { name: 'I16', blockSize: 1, typeSize: 2 }],
  [GGMLType.I32, { name: 'I32', blockSize: 1, typeSize: 4 }],
  [GGMLType.I64, { name: 'I64', blockSize: 1, typeSize: 8 }],
  [GGMLType.F64, { name: 'F64', blockSize: 1, typeSize: 8 }],
  [GGMLType.BF16, { name: 'BF16', blockSize: 1, typeSize: 2 }],
  [GGMLType.TQ1_0, { name: 'TQ1_0', blockSize: 256, typeSize: 54 }],
  [GGMLType.TQ2_0, { name: 'TQ2_0', blockSize: 256, typeSize: 66 }],
  // I2_S: 4 codes per byte; the per-tensor tail is added in tensorByteSize.
  [GGMLType.I2_S, { name: 'I2_S', blockSize: 128, typeSize: 32 }],
]);

/** Bytes after the packed I2_S codes: f32 scale + 28 bytes of padding. */
export const I2S_TAIL_BYTES = 32;

export function isKnownType(type: number): boolean {
  return TRAITS.has(type);
}

export function typeName(type: number): string {
  return TRAITS.get(type)?.name ?? `UNKNOWN(${type})`;
}

export function typeFromName(name: string): number | undefined {
  const upper = name.toUpperCase();
  for (const [id, t] of TRAITS) if (t.name === upper) return id;
  return undefined;
}

export function typeTraits(type: number): TypeTraits {
  const t = TRAITS.get(type);
  if (!t) throw BitNetError.Model('GGUF_UNKNOWN_TYPE', `unknown ggml tensor type ${type}`, { type });
  return t;
}

/**
 * Storage size in bytes of a tensor with dims `ne` (ne[0] innermost). Throws a typed error when
 * the innermost dimension is not a whole number of blocks.
 */
export function tensorByteSize(type: number, ne: readonly number[]): number {
  const t = typeTraits(type);
  const n = ne.reduce((a, b) => a * b, 1);
  const ne0 = ne[0] ?? 1;
  if (ne0 % t.blockSize !== 0) {
    throw BitNetError.Model(
      'GGUF_BAD_SHAPE',
      `tensor of type ${t.name} needs ne[0] (${ne0}) to be a multiple of ${t.blockSize}`,
      { type: t.name, ne: [...ne] },
    );
  }
  const bytes = (n / t.blockSize) * t.typeSize;
  return type === GGMLType.I2_S ? bytes + I2S_TAIL_BYTES : bytes;
}
